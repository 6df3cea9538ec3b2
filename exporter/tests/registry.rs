//! Registry push/pull against a real `docker-registry` on 127.0.0.1 (issue 7).
//! Each test starts its own registry on a free port and stops it on drop; the modules
//! live in `tests/registry/`.

// The harness is shared by sibling modules of this one test binary.
#![allow(unreachable_pub)]

#[path = "registry/auth_tls.rs"]
mod auth_tls;
#[path = "registry/flaky.rs"]
mod flaky;
#[path = "registry/interop.rs"]
mod interop;
#[path = "registry/push_pull.rs"]
mod push_pull;
#[path = "registry/support.rs"]
mod support;
