//! Escape attempts: each must fail.

use kiln_sandbox::ExitStatus;

use crate::support::{Rootfs, run, write};

pub(crate) const TESTS: &[crate::Test] = &[
    ("mount_and_unshare_fail", mount_and_unshare_fail),
    ("module_loading_fails", module_loading_fails),
    ("sysrq_trigger_is_read_only", sysrq_trigger_is_read_only),
    ("host_root_is_unreachable", host_root_is_unreachable),
];

fn fails(rootfs: &Rootfs, script: &str, expected_message: &str) {
    let out = run(&rootfs.sh(script));
    assert_ne!(
        out.status,
        ExitStatus::Code(0),
        "{script} must fail: {out:?}"
    );
    assert!(
        out.stderr.contains(expected_message),
        "{script}: expected {expected_message:?} in {out:?}"
    );
}

fn mount_and_unshare_fail() {
    let rootfs = Rootfs::new();
    fails(
        &rootfs,
        "mkdir -p /mnt; mount -t tmpfs none /mnt",
        "ermission denied",
    );
    fails(&rootfs, "mount --bind /bin /tmp", "ermission denied");
    fails(&rootfs, "unshare -m true", "not permitted");
    fails(&rootfs, "unshare -U true", "not permitted");
    fails(&rootfs, "umount /proc", "not permitted");
}

fn module_loading_fails() {
    let rootfs = Rootfs::new();
    fails(
        &rootfs,
        "echo junk > /tmp/m.ko; insmod /tmp/m.ko",
        "not permitted",
    );
}

fn sysrq_trigger_is_read_only() {
    let rootfs = Rootfs::new();
    // `h` only prints help to the kernel log, in case the write ever got through.
    if std::path::Path::new("/proc/sysrq-trigger").exists() {
        fails(
            &rootfs,
            "echo h > /proc/sysrq-trigger",
            "Read-only file system",
        );
    } else {
        eprint!("(this kernel has no /proc/sysrq-trigger; checking /proc/sys instead) ");
    }
    fails(
        &rootfs,
        "echo 1 > /proc/sys/kernel/ns_last_pid",
        "Read-only file system",
    );
}

fn host_root_is_unreachable() {
    let rootfs = Rootfs::new();
    let marker = format!("/tmp/kiln-escape-marker-{}", std::process::id());
    write(std::path::Path::new(&marker), "host\n");
    let name = marker.trim_start_matches("/tmp/");
    for script in [
        format!("cat /../../..{marker}"),
        format!("cat /proc/1/root/../../..{marker}"),
        format!("cd /proc/1/root && cd ../../.. && cat .{marker}"),
        format!("mkdir -p /jail && chroot /jail /bin/true; cd /; cat ../..{marker}"),
        format!("ls -a /proc/1/root/tmp /tmp | grep {name}"),
        "ls /proc/1/root/work /proc/1/root/proc/1/root/work".to_owned(),
    ] {
        let out = run(&rootfs.sh(&script));
        assert_ne!(out.status, ExitStatus::Code(0), "{script}: {out:?}");
        assert!(!out.stdout.contains("host"), "{script}: {out:?}");
    }
    let _ = std::fs::remove_file(&marker);
}
