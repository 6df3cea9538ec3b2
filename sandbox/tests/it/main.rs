//! Integration tests of the sandbox, as root on a busybox-static rootfs made per test;
//! the `rootless_*` tests run it as unprivileged users through `setpriv`.
//!
//! `harness = false`: this binary is also the sandbox helper (`Spec::helper_exe` is
//! `/proc/self/exe`), so `main` hands over to `helper::run_if_requested` first, and the
//! remote side of a run as another user (`as_user::run_if_requested`) next; then it runs
//! the tests one after another and checks the host's mount table and process list after
//! them all.

mod as_user;
mod basics;
mod isolation;
mod lab;
mod mounts;
mod network;
mod rootless;
mod support;

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

type Test = (&'static str, fn());

fn main() -> ExitCode {
    if let Some(code) = kiln_sandbox::helper::run_if_requested() {
        return code;
    }
    if let Some(code) = as_user::run_if_requested() {
        return code;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the sandbox tests: they need root (namespaces, mounts)");
        return ExitCode::SUCCESS;
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipping the sandbox tests: /bin/busybox (busybox-static) is missing");
        return ExitCode::SUCCESS;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: Vec<Test> = [
        basics::TESTS,
        mounts::TESTS,
        isolation::TESTS,
        network::TESTS,
        rootless::TESTS,
    ]
    .concat();
    let before = support::mountinfo();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        eprint!("test {name} ... ");
        match std::panic::catch_unwind(AssertUnwindSafe(test)) {
            Ok(()) => eprintln!("ok"),
            Err(_) => {
                eprintln!("FAILED");
                failed.push(name);
            }
        }
    }
    // After the whole suite: nothing mounted on the host, no sandbox process left.
    let after = support::mountinfo();
    if before != after {
        eprintln!(
            "FAILED: the host's mount table changed:\n--- before\n{before}\n--- after\n{after}"
        );
        failed.push("mountinfo unchanged");
    }
    let children = support::children();
    if !children.is_empty() {
        eprintln!("FAILED: processes left behind: {children:#?}");
        failed.push("no process left");
    }
    eprintln!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len().min(ran),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failures: {failed:?}");
        ExitCode::FAILURE
    }
}
