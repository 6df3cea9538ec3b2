//! The harness: a fresh directory and store per test, a `kiln` command whose failures show
//! everything, and the shared fixtures (a busybox rootfs, the conformance data).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One test's world: a temp dir holding a context dir and a store (`--root`).
pub struct Kiln {
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new() -> Kiln {
        Kiln {
            dir: tempfile::Builder::new()
                .prefix("kiln-it-")
                .tempdir()
                .expect("create a temp dir for the test"),
        }
    }

    /// The store this test's commands use.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the test's dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parents) inside the test's dir and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    /// `kiln --root ROOT` with the test's dir as working directory.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(kiln_bin());
        cmd.current_dir(self.dir.path())
            .arg("--root")
            .arg(self.root());
        cmd.env_remove("KILN_ROOT").env("NO_COLOR", "1");
        cmd
    }

    /// Runs `kiln ARGS` and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(out.status.success(), "{}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kiln ARGS` and asserts failure, returning stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(
            !out.status.success(),
            "expected failure\n{}",
            describe(args, &out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

pub fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("start kiln")
}

pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "kiln {}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `../shared/conformance` beside the repository, when it is there.
pub fn conformance_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/conformance is absent");
        None
    }
}

/// True when running as root; otherwise prints why the calling test is skipped.
pub fn is_root(test: &str) -> bool {
    // The effective uid, without unsafe code: tests forbid it like the rest of kiln.
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

/// Makes a busybox-static root filesystem under `dir` (`/bin/busybox --install -s`
/// done by hand: a symlink per applet), or None with a printed reason.
pub fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        eprintln!("skipped: /bin/busybox is absent (apt-get install busybox-static)");
        return None;
    }
    let out = Command::new(busybox).arg("--list").output().ok()?;
    let root = dir.to_path_buf();
    for sub in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(sub)).ok()?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).ok()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).ok()?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .ok()?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").ok()?;
    Some(root)
}
