//! The harness: a fresh directory and store per test, a `kiln` command whose failures show
//! everything, and the shared fixtures (a busybox rootfs, the conformance data).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// One test's world: a temp dir holding a context dir and a store (`--root`).
pub(crate) struct Kiln {
    pub(crate) dir: tempfile::TempDir,
}

impl Kiln {
    pub(crate) fn new() -> Kiln {
        Kiln {
            dir: tempfile::Builder::new()
                .prefix("kiln-it-")
                .tempdir()
                .expect("create a temp dir for the test"),
        }
    }

    /// The store this test's commands use.
    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the test's dir.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parents) inside the test's dir and returns its path.
    pub(crate) fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    /// `kiln --root ROOT` with the test's dir as working directory.
    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = Command::new(kiln_bin());
        cmd.current_dir(self.dir.path())
            .arg("--root")
            .arg(self.root());
        cmd.env_remove("KILN_ROOT").env("NO_COLOR", "1");
        cmd
    }

    /// Runs `kiln ARGS` and asserts success, returning stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(out.status.success(), "{}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `kiln ARGS` and asserts failure, returning stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(
            !out.status.success(),
            "expected failure\n{}",
            describe(args, &out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

pub(crate) fn kiln_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("start kiln")
}

pub(crate) fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "kiln {}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `../shared/conformance` beside the repository, when it is there.
pub(crate) fn conformance_dir() -> Option<PathBuf> {
    kiln_testkit::conformance_dir(env!("CARGO_MANIFEST_DIR"))
}

#[allow(unused_imports)]
pub(crate) use kiln_testkit::is_root;
#[allow(unused_imports)]
pub(crate) use kiln_testkit::rootfs::busybox as busybox_rootfs;

/// Small digest helpers for tests.
pub(crate) mod describe {
    /// The lowercase hex sha256 of `bytes`.
    pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

/// The filesystem of image `name` in the test's store: its layer blobs applied in order
/// into a temp dir, whiteouts honoured.
pub(crate) fn image_tree(k: &Kiln, name: &str) -> tempfile::TempDir {
    let text = k.ok(&["inspect", name]);
    let value: serde_json::Value = serde_json::from_str(&text).expect("inspect prints JSON");
    let value = if value.is_array() {
        value[0].clone()
    } else {
        value
    };
    let dir = tempfile::tempdir().expect("temp dir");
    for layer in value["Manifest"]["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("digest");
        let blob = k
            .root()
            .join("content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let file = std::fs::File::open(&blob).expect("open layer blob");
        kiln_snapshotter::layer_in::apply_layer(
            file,
            dir.path(),
            kiln_snapshotter::layer_in::WhiteoutStyle::Delete,
        )
        .expect("apply layer");
    }
    dir
}

/// A test world with `busybox:latest` imported into its store; None (the test skips,
/// saying why) when not root, since builds run RUN steps in namespaces.
pub(crate) fn world() -> Option<Kiln> {
    if !is_root("kiln build runs RUN steps in namespaces") {
        return None;
    }
    let k = Kiln::new();
    let rootfs = busybox_rootfs(&k.path("rootfs"))?;
    k.ok(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
    Some(k)
}

/// Every entry below `root`: kind, mode, owner and content (or symlink target).
pub(crate) fn describe_tree(root: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .display()
            .to_string();
        let meta = entry.path().symlink_metadata().expect("lstat");
        let what = if meta.file_type().is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(entry.path())
                    .expect("readlink")
                    .display()
            )
        } else if meta.is_dir() {
            format!(
                "dir {:04o} {}:{}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            )
        } else {
            format!(
                "file {:04o} {}:{} {}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid(),
                String::from_utf8_lossy(&std::fs::read(entry.path()).expect("read"))
            )
        };
        out.insert(rel, what);
    }
    out
}
