//! Overhead of a sandboxed `/bin/true` (median of 200) with each network (host, none,
//! default: the default's extra over none is the network setup per RUN) against
//! `unshare -fmpiu --mount-proc chroot ROOT /bin/true` on the same rootfs.
//! This binary is its own sandbox helper, like the integration tests.
//!
//! As root it measures the root sandbox; run as another user (or with `KILN_ROOTLESS=1`)
//! it measures the rootless one, in a user namespace, against `unshare -r` likewise.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use kiln_sandbox::userns::UserNamespace;
use kiln_sandbox::{CancelHandle, Network, Spec, bind_rootfs};

const RUNS: usize = 200;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> ExitCode {
    if let Some(code) = kiln_sandbox::helper::run_if_requested() {
        return code;
    }
    let mode = match UserNamespace::detect() {
        None => "root".to_owned(),
        Some(ns) => format!(
            "rootless, {}",
            match ns.map_helpers {
                Some(_) => "subordinate ids mapped by newuidmap",
                None => "own ids mapped",
            }
        ),
    };
    let rootless = mode != "root";
    let Ok(dir) = tempfile::tempdir() else {
        eprintln!("cannot create a temp dir");
        return ExitCode::FAILURE;
    };
    let root = dir.path().join("rootfs");
    let made = std::fs::create_dir_all(root.join("bin"))
        .and_then(|()| std::fs::create_dir_all(root.join("proc")))
        .and_then(|()| std::fs::copy("/bin/busybox", root.join("bin/busybox")).map(drop))
        .and_then(|()| std::os::unix::fs::symlink("busybox", root.join("bin/true")))
        .and_then(|()| std::os::unix::fs::symlink("busybox", root.join("bin/sh")));
    if let Err(err) = made {
        eprintln!("cannot build the rootfs: {err}");
        return ExitCode::FAILURE;
    }
    let cancel = CancelHandle::new();
    // The network rows: `host` (no network namespace), `none` (own namespace, `lo`),
    // `default` (own namespace; as root a veth pair, nftables NAT and a lease, rootless
    // slirp4netns). default - none is the per-RUN cost of the network setup.
    let mut rows = Vec::new();
    for network in [Network::Host, Network::None, Network::Default] {
        let mut spec = Spec::new(bind_rootfs(&root), vec!["/bin/true".into()]);
        spec.network = network;
        let mut samples = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            match kiln_sandbox::run(&spec, &mut |_, _| {}, &cancel) {
                Ok(status) if status.success() => samples.push(start.elapsed()),
                other => {
                    eprintln!("sandboxed /bin/true ({network:?} network) failed: {other:?}");
                    return ExitCode::FAILURE;
                }
            }
        }
        rows.push((network, median(samples)));
    }
    let mut theirs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        let status = Command::new("unshare")
            .args(if rootless { &["-r"][..] } else { &[] })
            .args(["-fmpiu", "--mount-proc", "chroot"])
            .arg(&root)
            .arg("/bin/true")
            .status();
        match status {
            Ok(s) if s.success() => theirs.push(start.elapsed()),
            other => {
                eprintln!("unshare failed: {other:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    let theirs = median(theirs);
    for (network, ours) in &rows {
        eprintln!(
            "sandboxed /bin/true ({mode}, network {network:?}), median of {RUNS}: {:.2} ms (target <= 10 ms)",
            ours.as_secs_f64() * 1e3
        );
    }
    let none = rows[1].1.as_secs_f64() * 1e3;
    let default = rows[2].1.as_secs_f64() * 1e3;
    eprintln!(
        "default network setup per RUN (default - none): {:.2} ms (target <= 5 ms)",
        default - none
    );
    eprintln!(
        "unshare {}-fmpiu --mount-proc chroot, median of {RUNS}: {:.2} ms",
        if rootless { "-r " } else { "" },
        theirs.as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}
