//! The harness: a busybox-static rootfs, a `run` that collects output, and host checks.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_sandbox::{CancelHandle, ExitStatus, Spec, Stream, bind_rootfs};

/// A busybox rootfs in a temp dir, with extra users and groups.
pub(crate) struct Rootfs {
    pub(crate) dir: tempfile::TempDir,
}

impl Rootfs {
    pub(crate) fn new() -> Rootfs {
        let dir = tempfile::Builder::new()
            .prefix("kiln-sandbox-it-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("rootfs");
        for d in ["bin", "etc", "tmp", "root", "home/alice"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
        let list = std::process::Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nbob:x:1001:100::/home/bob:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(
            root.join("etc/group"),
            "root:x:0:\nwheel:x:10:alice\nusers:x:100:\nalice:x:1000:\ndev:x:2000:alice,bob\n",
        )
        .expect("group");
        Rootfs { dir }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// A spec running `sh -c SCRIPT` on this rootfs (bind mounted).
    pub(crate) fn sh(&self, script: &str) -> Spec {
        Spec::new(
            bind_rootfs(self.path()),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        )
    }
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) out_lines: Vec<Vec<u8>>,
}

pub(crate) fn run(spec: &Spec) -> Outcome {
    run_with(spec, &CancelHandle::new(), &mut |_, _| {})
}

pub(crate) fn run_with(
    spec: &Spec,
    cancel: &CancelHandle,
    extra: &mut dyn FnMut(Stream, &[u8]),
) -> Outcome {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut out_lines = Vec::new();
    let status = kiln_sandbox::run(
        spec,
        &mut |stream, line| {
            extra(stream, line);
            match stream {
                Stream::Stdout => {
                    stdout.extend_from_slice(line);
                    out_lines.push(line.to_vec());
                }
                Stream::Stderr => stderr.extend_from_slice(line),
            }
        },
        cancel,
    )
    .unwrap_or_else(|err| panic!("run {:?}: {err}", spec.argv));
    Outcome {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        out_lines,
    }
}

/// Asserts success and returns stdout.
pub(crate) fn ok(spec: &Spec) -> String {
    let out = run(spec);
    assert_eq!(out.status, ExitStatus::Code(0), "{:?}: {out:?}", spec.argv);
    out.stdout
}

/// Host pids whose command line contains `needle`.
pub(crate) fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Our children still alive (the sandbox must leave none).
pub(crate) fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
        if after.split(' ').nth(1) == Some(me.as_str()) {
            found.push(stat);
        }
    }
    found
}

pub(crate) fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo")
}

pub(crate) fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, contents).expect("write");
}
