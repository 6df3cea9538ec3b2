//! Harness for the archive tests: a two-layer image built in a temp store with kiln's
//! own layer writer, tree descriptions to compare filesystems, and the checkers
//! (skopeo, umoci, tar) run as real processes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_image::config::{ContainerConfig, ImageConfig, RootFs};
use kiln_image::image::{StoredImage, write_image};
use kiln_snapshotter::Store;
use kiln_snapshotter::layer_out::{Compression, DiffSource, LayerOptions, write_layer};

/// Every mtime in the test layers is clamped to this, so that two fixtures built from
/// the same trees have the same layers.
const EPOCH: i64 = 1_700_000_000;

/// A store holding one image of two layers: the first makes a small tree (files, an
/// executable, a symlink, a hard link, nested and empty directories), the second
/// deletes a file and a directory (whiteouts) and adds a file.
pub struct Fixture {
    pub store: Store,
    pub image: StoredImage,
    /// A scratch directory for outputs.
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Layers written with `compression` (None: as kiln's store keeps them; gzip: as a
    /// pulled base image has them).
    pub fn new(compression: Compression) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), None).unwrap();
        let l1 = dir.path().join("l1");
        for d in ["bin", "etc", "data/sub", "var/empty"] {
            fs::create_dir_all(l1.join(d)).unwrap();
        }
        fs::write(l1.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
        fs::set_permissions(l1.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(l1.join("etc/hello.txt"), "hello\n").unwrap();
        fs::write(l1.join("etc/gone.txt"), "bye\n").unwrap();
        fs::write(l1.join("data/sub/deep.txt"), "deep\n").unwrap();
        fs::set_permissions(
            l1.join("data/sub/deep.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        // Sorts after data/sub/deep.txt: the layer stores it as a hard link to it.
        fs::hard_link(l1.join("data/sub/deep.txt"), l1.join("data/zz-hard")).unwrap();
        std::os::unix::fs::symlink("etc/hello.txt", l1.join("link")).unwrap();

        let l2 = dir.path().join("l2");
        run(
            "cp",
            &["-a", &l1.display().to_string(), &l2.display().to_string()],
        );
        fs::remove_file(l2.join("etc/gone.txt")).unwrap();
        // The hard link's target goes; the link must keep the bytes.
        fs::remove_dir_all(l2.join("data/sub")).unwrap();
        fs::write(l2.join("etc/new.txt"), "new\n").unwrap();

        let options = LayerOptions {
            compression,
            source_date_epoch: Some(EPOCH),
        };
        let first = write_layer(
            DiffSource::Trees {
                lower: None,
                upper: &l1,
            },
            store.content(),
            &options,
        )
        .unwrap();
        let second = write_layer(
            DiffSource::Trees {
                lower: Some(&l1),
                upper: &l2,
            },
            store.content(),
            &options,
        )
        .unwrap();
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ContainerConfig {
                cmd: Some(vec!["/bin/tool".into()]),
                ..ContainerConfig::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![first.diff_id.to_string(), second.diff_id.to_string()],
            },
            ..ImageConfig::default()
        };
        let image = write_image(&store, &config, &[first, second], BTreeMap::new()).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        Fixture {
            store,
            image,
            out,
            _dir: dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

/// The image's final tree, as [`describe`] shows it.
pub fn expected_tree() -> BTreeMap<String, String> {
    [
        ("bin", "dir 755"),
        ("bin/tool", "file 755 \"#!/bin/sh\\necho tool\\n\""),
        ("data", "dir 755"),
        ("data/zz-hard", "file 600 \"deep\\n\""),
        ("etc", "dir 755"),
        ("etc/hello.txt", "file 644 \"hello\\n\""),
        ("etc/new.txt", "file 644 \"new\\n\""),
        ("link", "symlink etc/hello.txt"),
        ("var", "dir 755"),
        ("var/empty", "dir 755"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `path -> "kind mode content"` for everything under `root` (owners must be root).
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    describe_with(root, false)
}

/// [`describe`] plus the mtime of files, to compare two extractions of the same image.
pub fn describe_with_mtimes(root: &Path) -> BTreeMap<String, String> {
    describe_with(root, true)
}

fn describe_with(root: &Path, mtimes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let m = path.symlink_metadata().unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{rel} is not owned by root");
            let what = if m.file_type().is_symlink() {
                format!("symlink {}", fs::read_link(&path).unwrap().display())
            } else if m.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                let content = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
                let mtime = if mtimes {
                    format!(" mtime {}", m.mtime())
                } else {
                    String::new()
                };
                format!("file {:o} {content:?}{mtime}", m.mode() & 0o7777)
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Whether `tool` runs here; otherwise prints why `test` is skipped.
pub fn have(tool: &str, test: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipped {test}: {tool} is not installed");
    }
    found
}

/// Runs a command; panics with its stderr on failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `skopeo inspect [--raw] IMAGE`, parsed.
pub fn skopeo_inspect(image: &str, raw: bool) -> serde_json::Value {
    let mut args = vec!["inspect"];
    if raw {
        args.push("--raw");
    }
    args.push(image);
    serde_json::from_str(&run("skopeo", &args)).unwrap()
}

/// `umoci unpack --image LAYOUT:TAG` into a fresh bundle; returns its rootfs.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.display()),
            &bundle.display().to_string(),
        ],
    );
    bundle.join("rootfs")
}

/// The sha256 of what `zstd -dc FILE` prints (the diff_id of a zstd layer).
pub fn zstd_diff_id(path: &Path) -> String {
    use sha2::Digest as _;
    let out = Command::new("zstd")
        .args(["-dc", &path.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zstd -dc {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout)))
}

/// The entries of a tar archive file: name -> bytes (directories: empty).
pub fn tar_entries(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        out.insert(name, bytes);
    }
    out
}

/// A writer that fails once `limit` bytes have been written, as a full disk does.
pub struct FullDisk {
    pub limit: usize,
    pub written: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() > self.limit {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
