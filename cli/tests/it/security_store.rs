//! Issue #17, items 3-8 and 13: what an image, an archive or a damaged store can do to
//! the host through outputs, imports and the store's own bytes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Kiln, is_root};

/// Makes a tar with python's tarfile (an independent writer). `script` adds members to
/// `t`, a `tarfile.TarFile` open for writing.
fn make_tar(path: &Path, script: &str) {
    let program = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w')\n\
         def add(name, data=b'x', **kw):\n    i = tarfile.TarInfo(name); i.size = len(data)\n    for k, v in kw.items(): setattr(i, k, v)\n    t.addfile(i, io.BytesIO(data))\n\
         def node(name, **kw):\n    i = tarfile.TarInfo(name)\n    for k, v in kw.items(): setattr(i, k, v)\n    t.addfile(i)\n{script}\nt.close()\n",
        path.to_str().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&program)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A context whose Dockerfile ADDs `evil.tar` (made by `script`) onto scratch.
fn add_tar_context(k: &Kiln, script: &str) -> PathBuf {
    k.write("ctx/Dockerfile", "FROM scratch\nADD evil.tar /\n");
    make_tar(&k.path("ctx/evil.tar"), script);
    k.path("ctx")
}

fn build(k: &Kiln, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build", "ctx", "--progress=plain"];
    args.extend_from_slice(extra);
    crate::support::run(k.cmd().args(&args))
}

const DEVICE_AND_SETUID: &str = "import tarfile as T\n\
node('mem', type=T.CHRTYPE, devmajor=1, devminor=1, mode=0o666)\n\
add('su', b'#!/bin/sh\\n', mode=0o4755, uid=0, gid=0)\n\
add('plain', b'hello', mode=0o644)\n";

#[test]
fn local_export_skips_devices_and_clears_setuid_and_says_so() {
    if !is_root("security_store") {
        return eprintln!("skipped: needs root to be able to create devices");
    }
    let k = Kiln::new();
    add_tar_context(&k, DEVICE_AND_SETUID);
    let dest = k.path("out");
    let out = build(&k, &["-o", &format!("type=local,dest={}", dest.display())]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !dest.join("mem").exists() && dest.join("mem").symlink_metadata().is_err(),
        "the device was created"
    );
    let su = std::fs::metadata(dest.join("su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o755, "setuid kept");
    assert_eq!(std::fs::read(dest.join("plain")).unwrap(), b"hello");
    assert!(all.contains("mem: device node 1:1 not created"), "{all}");
    assert!(all.contains("su: setuid/setgid dropped"), "{all}");
    assert!(all.contains("--allow export.devices"), "{all}");
    assert!(all.contains("--allow export.setuid"), "{all}");

    // Asked for by name, they are written as the image has them.
    let dest = k.path("out-allowed");
    let out = build(
        &k,
        &[
            "-o",
            &format!("type=local,dest={}", dest.display()),
            "--allow",
            "export.devices",
            "--allow",
            "export.setuid",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mem = std::fs::symlink_metadata(dest.join("mem")).unwrap();
    assert_eq!(
        mem.mode() & libc_s_ifmt(),
        0o020000,
        "not a character device"
    );
    assert_eq!(mem.rdev(), libc_makedev(1, 1));
    let su = std::fs::metadata(dest.join("su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
}

fn libc_makedev(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

#[test]
fn local_export_refuses_root_and_non_empty_dirs_unless_merging() {
    let k = Kiln::new();
    add_tar_context(&k, "add('plain', b'hello')");
    let out = build(&k, &["-o", "type=local,dest=/"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing dest /") && err.contains("root directory"),
        "{err}"
    );

    let dest = k.path("full");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("mine"), "keep").unwrap();
    let spec = format!("type=local,dest={}", dest.display());
    let out = build(&k, &["-o", &spec]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert!(!dest.join("plain").exists());
    let out = build(&k, &["-o", &format!("{spec},merge=true")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dest.join("plain")).unwrap(), b"hello");
    assert_eq!(std::fs::read(dest.join("mine")).unwrap(), b"keep");
}

#[test]
fn local_export_never_writes_through_a_symlink_in_dest() {
    let k = Kiln::new();
    add_tar_context(
        &k,
        "import tarfile as T\nnode('etc', type=T.DIRTYPE, mode=0o755)\nadd('etc/pwned', b'x')\nadd('link', b'y')",
    );
    let outside = k.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), "safe").unwrap();
    let dest = k.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("etc")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), dest.join("link")).unwrap();
    let out = build(
        &k,
        &[
            "-o",
            &format!("type=local,dest={},merge=true", dest.display()),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symlink"), "{err}");
    assert!(
        !outside.join("pwned").exists(),
        "written through dest's symlink"
    );
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"safe");
    assert!(
        dest.join("link")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn file_outputs_replace_only_regular_files_and_dash_is_stdout() {
    let k = Kiln::new();
    add_tar_context(&k, "add('plain', b'hello')");
    let target = k.write("target", "precious");
    let link = k.path("link.tar");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut cases: Vec<PathBuf> = vec![link.clone()];
    if is_root("security_store") {
        let dev = k.path("null");
        let st = Command::new("mknod")
            .arg(&dev)
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(st.success());
        cases.push(dev);
    }
    for dest in &cases {
        for kind in ["tar", "oci", "docker"] {
            let out = build(&k, &["-o", &format!("type={kind},dest={}", dest.display())]);
            assert!(!out.status.success(), "type={kind} dest={}", dest.display());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("refusing dest"), "{err}");
        }
    }
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    if is_root("security_store") {
        let dev = std::fs::symlink_metadata(k.path("null")).unwrap();
        assert_eq!(
            dev.mode() & libc_s_ifmt(),
            0o020000,
            "the device is still a device"
        );
    }
    // dest=- writes to stdout, a regular file is replaced.
    let out = build(&k, &["-o", "type=tar,dest=-"]);
    assert!(out.status.success());
    assert!(out.stdout.len() >= 1024 && out.stdout.windows(5).any(|w| w == b"hello"));
    let file = k.write("out.tar", "old");
    let out = build(&k, &["-o", &format!("type=tar,dest={}", file.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&file).unwrap().len() >= 1024);
}

fn libc_s_ifmt() -> u32 {
    0o170000
}

/// The blob files of the store that hold `needle`.
fn blobs_with(k: &Kiln, needle: &[u8]) -> Vec<PathBuf> {
    std::fs::read_dir(k.root().join("content/blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

fn flip(path: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_in_a_layer_blob_is_found_by_from_and_by_exports() {
    let k = Kiln::new();
    add_tar_context(&k, "add('data', b'the original content of the layer')");
    let out = build(&k, &["-t", "base"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer = blobs_with(&k, b"the original content");
    assert_eq!(layer.len(), 1, "one layer blob holds the file");
    let hex = layer[0].file_name().unwrap().to_str().unwrap().to_owned();
    let clean = k.ok(&["fsck"]);
    assert!(clean.contains("the store is clean"), "{clean}");
    flip(&layer[0], b"original");
    let out = crate::support::run(k.cmd().arg("fsck"));
    assert_eq!(out.status.code(), Some(1), "fsck of a damaged store");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("damaged blob sha256:{hex}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("base:latest: its layer sha256:{hex} is damaged")),
        "{report}"
    );

    k.write("ctx2/Dockerfile", "FROM base\nCOPY Dockerfile /x\n");
    let out = crate::support::run(k.cmd().args([
        "build",
        "ctx2",
        "--progress=plain",
        "-o",
        &format!("type=local,dest={}", k.path("fs").display()),
    ]));
    assert!(!out.status.success(), "built on a damaged layer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&hex) && err.contains("damaged"), "{err}");

    for kind in ["oci", "docker", "tar"] {
        let dest = k.path(&format!("x-{kind}.tar"));
        let mut cmd = k.cmd();
        // An export of the damaged image (rebuilt from cache, so nothing reads it first).
        let out = crate::support::run(cmd.args([
            "build",
            "ctx",
            "--progress=plain",
            "-o",
            &format!("type={kind},dest={}", dest.display()),
        ]));
        assert!(
            !out.status.success(),
            "type={kind} exported a damaged layer"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&hex) && err.contains("damaged"),
            "type={kind}: {err}"
        );
        assert!(!dest.exists());
    }

    // A snapshot a killed build left behind is reported too (no build runs now).
    let leftover = k.root().join("snapshots/deadbeef0000");
    std::fs::create_dir_all(leftover.join("fs")).unwrap();
    let listed =
        String::from_utf8_lossy(&crate::support::run(k.cmd().arg("fsck")).stdout).into_owned();
    // --repair removes the damaged blob and the tag that needs it; then the store is
    // clean and the image is built again from its context.
    let out = crate::support::run(k.cmd().args(["fsck", "--repair"]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("removed 1 damaged blobs, 1 broken tags"),
        "{said}\n{listed}"
    );
    assert!(!layer[0].exists());
    let clean = k.ok(&["fsck"]);
    assert!(clean.contains("the store is clean"), "{clean}");
    assert!(!k.ok(&["images"]).contains("base"));
    let out = build(&k, &["-t", "base"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(blobs_with(&k, b"the original content").len(), 1);
    k.ok(&["fsck"]);
}

#[test]
fn a_flipped_byte_in_a_layer_blob_is_not_pushed() {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), "the original content of the layer").unwrap();
    k.ok(&["import", src.to_str().unwrap(), "local:1"]);
    let layer = blobs_with(&k, b"the original content");
    assert_eq!(layer.len(), 1, "one layer blob holds the file");
    let hex = layer[0].file_name().unwrap().to_str().unwrap().to_owned();
    flip(&layer[0], b"original");

    // Both as the store keeps it (the tar, gzipped on the way) and uncompressed.
    for (tag, compression) in [("gz", None), ("raw", Some("--compression=uncompressed"))] {
        let target = format!("{}/kiln/damaged:{tag}", server.host());
        k.ok(&["tag", "local:1", &target]);
        let mut args = vec!["push", target.as_str()];
        args.extend(compression);
        let out = crate::support::run(k.cmd().args(&args));
        assert!(!out.status.success(), "pushed a damaged layer ({tag})");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&hex) && err.contains("damaged"),
            "{tag}: {err}"
        );
        // The registry has no manifest under the tag, and no blob holds the flipped bytes.
        let manifest = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!(
                "http://{}/v2/kiln/damaged/manifests/{tag}",
                server.host()
            ))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&manifest.stdout), "404", "{tag}");
    }
    assert!(
        !server.log().contains("PUT /v2/kiln/damaged/manifests"),
        "a manifest was uploaded:\n{}",
        server.log()
    );
}

#[test]
fn a_damaged_config_makes_from_fail_without_pulling() {
    let k = Kiln::new();
    add_tar_context(&k, "add('data', b'x')");
    let out = build(&k, &["-t", "base"]);
    assert!(out.status.success());
    let config = blobs_with(&k, b"\"rootfs\"");
    assert_eq!(config.len(), 1);
    let hex = config[0].file_name().unwrap().to_str().unwrap().to_owned();
    flip(&config[0], b"rootfs");
    k.write("ctx2/Dockerfile", "FROM base\n");
    let out = crate::support::run(k.cmd().args(["build", "ctx2", "--progress=plain"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&hex) && err.contains("damaged"), "{err}");
    assert!(!err.contains("pulling"), "it tried a pull: {err}");
}

#[test]
fn import_refuses_hostile_archives_and_stores_nothing() {
    let cases = [
        ("dotdot", "add('../escape')", "`..`"),
        ("absolute", "add('/etc/evil')", "absolute"),
        (
            "symlink",
            "import tarfile as T\nnode('l', type=T.SYMTYPE, linkname='/etc')\nadd('l/passwd')",
            "symlink",
        ),
        (
            "hardlink",
            "import tarfile as T\nnode('h', type=T.LNKTYPE, linkname='../../etc/shadow')",
            "hard-link",
        ),
    ];
    for (name, script, says) in cases {
        let k = Kiln::new();
        let tar = k.path(&format!("{name}.tar"));
        make_tar(&tar, script);
        k.ok(&["images"]);
        let before = blob_count(&k);
        let err = k.fails(&["import", tar.to_str().unwrap(), "evil:1"]);
        assert!(err.contains(says), "{name}: {err}");
        assert_eq!(blob_count(&k), before, "{name}: a blob entered the store");
        assert!(!k.ok(&["images"]).contains("evil"), "{name}");
    }
}

fn blob_count(k: &Kiln) -> usize {
    std::fs::read_dir(k.root().join("content/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_gzip_bomb_is_refused_before_the_disk_fills() {
    if !is_root("security_store") {
        return eprintln!("skipped: needs root to mount a small tmpfs as the store");
    }
    let k = Kiln::new();
    k.write("ctx/Dockerfile", "FROM scratch\nADD bomb.tar.gz /\n");
    let program = format!(
        "import tarfile\nclass Z:\n    def read(self, n): return bytes(n)\n\
         t = tarfile.open({:?}, 'w:gz', compresslevel=1)\ni = tarfile.TarInfo('zeros'); i.size = 256 << 20\nt.addfile(i, Z())\nt.close()\n",
        k.path("ctx/bomb.tar.gz").to_str().unwrap()
    );
    assert!(
        Command::new("python3")
            .arg("-c")
            .arg(&program)
            .status()
            .unwrap()
            .success()
    );
    let root = k.root();
    std::fs::create_dir_all(&root).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=128m", "tmpfs"])
            .arg(&root)
            .status()
            .unwrap()
            .success()
    );
    let out = build(&k, &[]);
    let _ = Command::new("umount").arg(&root).status();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bomb.tar.gz") && err.contains("decompression bomb") && err.contains("free"),
        "{err}"
    );
}

#[test]
fn temp_space_of_a_dead_build_is_counted_by_du_and_swept() {
    let k = Kiln::new();
    add_tar_context(&k, "add('data', b'x')");
    let out = build(&k, &[]);
    assert!(out.status.success());
    // What a build killed while committing leaves: an owned dir, its lock released.
    let dead = k.root().join("tmp/own-dead1");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".owner"), "").unwrap();
    std::fs::write(dead.join(".tmpABCD"), vec![0u8; 3 << 20]).unwrap();
    let du = k.ok(&["du"]);
    let line = du
        .lines()
        .find(|l| l.starts_with("temp"))
        .unwrap_or_else(|| panic!("{du}"));
    assert!(
        line.contains("MB") || line.contains("MiB") || line.contains("3."),
        "{du}"
    );
    // The next build sweeps it.
    let out = build(&k, &[]);
    assert!(out.status.success());
    assert!(
        !dead.exists(),
        "the next build left the dead build's temp space"
    );
    // And prune does too.
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".owner"), "").unwrap();
    k.ok(&["prune"]);
    assert!(!dead.exists(), "prune left the dead build's temp space");
}
