//! Test support shared by kiln's crates: real peers (a registry server), base root
//! filesystems, and the checks that decide whether a test can run here.
//!
//! Only tests depend on this crate. Everything here panics on failure, with the output
//! of the tool that failed, because a failing fixture is a failing test.
#![allow(missing_docs, clippy::unwrap_used)]

pub mod inputs;
pub mod registry;
pub mod rootfs;

/// True when running as root; otherwise prints why the calling test is skipped.
pub fn is_root(test: &str) -> bool {
    // The effective uid, from /proc: kiln's crates forbid the unsafe geteuid call.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid == "0" {
        true
    } else {
        eprintln!("skipped {test}: needs root");
        false
    }
}

/// `../shared/conformance` beside the repository (`manifest_dir` is the calling crate's
/// `CARGO_MANIFEST_DIR`), or None with a printed reason.
pub fn conformance_dir(manifest_dir: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(manifest_dir).join("../../shared/conformance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/conformance is absent");
        None
    }
}
