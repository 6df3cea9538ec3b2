//! `kiln debug run`: the sandbox end to end through the binary, which is its own helper.

use std::path::{Path, PathBuf};

use crate::support::{Kiln, run};

/// A busybox rootfs inside the test's dir, or `None` (with the reason printed) when this
/// machine cannot run sandboxes.
fn busybox_rootfs(kiln: &Kiln) -> Option<PathBuf> {
    if !nix_is_root() {
        eprintln!("skipping: the sandbox needs root");
        return None;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox (busybox-static) is missing");
        return None;
    }
    let root = kiln.path("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir bin");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "id", "cat", "hostname", "pwd", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    kiln.write(
        "rootfs/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    );
    kiln.write(
        "rootfs/etc/group",
        "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n",
    );
    Some(root)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn debug_run_prints_output_and_passes_the_exit_code() {
    let kiln = Kiln::new();
    let Some(root) = busybox_rootfs(&kiln) else {
        return;
    };
    let root = root.to_string_lossy().into_owned();
    let out = kiln.ok(&[
        "debug",
        "run",
        &root,
        "--",
        "sh",
        "-c",
        "echo $$; hostname; echo err >&2",
    ]);
    assert_eq!(out, "1\nkiln\n");
    let out = run(kiln
        .cmd()
        .args(["debug", "run", &root, "--", "sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3));
    let out = run(kiln
        .cmd()
        .args(["debug", "run", &root, "--", "no-such-command"]));
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn debug_run_flags() {
    let kiln = Kiln::new();
    let Some(root) = busybox_rootfs(&kiln) else {
        return;
    };
    let root = root.to_string_lossy().into_owned();
    let secret = kiln.write("token", "s3cret");
    let secret_mount = format!(
        "type=secret,source={},target=/run/secrets/t,mode=0444",
        secret.display()
    );
    let out = kiln.ok(&[
        "debug",
        "run",
        &root,
        "--user",
        "alice",
        "--env",
        "FOO=bar",
        "--cwd",
        "/work/x",
        "--hostname",
        "h1",
        "--network",
        "none",
        "--mount",
        "type=tmpfs,target=/scratch",
        "--mount",
        &secret_mount,
        "--",
        "sh",
        "-c",
        "id; echo $FOO; pwd; hostname; cat /run/secrets/t; ls /scratch",
    ]);
    assert_eq!(
        out,
        "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)\nbar\n/work/x\nh1\ns3cret"
    );
    let err = kiln.fails(&["debug", "run", &root, "--network", "bridge", "--", "true"]);
    assert!(err.contains("unknown --network"), "{err}");
}
