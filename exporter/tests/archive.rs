//! Outputs (issue 7): OCI layouts and archives, Docker archives, root filesystems as a
//! directory or a tar — each read back by an independent tool (skopeo, umoci, GNU tar);
//! a test whose tool is absent says so and passes. The modules live in `tests/archive/`.

// The harness is shared by sibling modules of this one test binary.
#![allow(unreachable_pub)]

#[path = "archive/docker.rs"]
mod docker;
#[path = "archive/errors.rs"]
mod errors;
#[path = "archive/oci.rs"]
mod oci;
#[path = "archive/rootfs.rs"]
mod rootfs;
#[path = "archive/support.rs"]
mod support;
