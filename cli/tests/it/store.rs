//! `kiln import`, `images`, `tag`, `rmi`, `inspect`, `prune`, `du`, end to end, with
//! skopeo and umoci reading the store as independent checkers.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Kiln, busybox_rootfs, describe, is_root};

/// `path -> kind mode uid:gid size/target` of a tree (hashes left to the size check:
/// busybox is one binary and links).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.expect("walk");
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .display()
            .to_string();
        let m = entry.path().symlink_metadata().expect("lstat");
        let what = if m.file_type().is_symlink() {
            format!(
                "-> {}",
                std::fs::read_link(entry.path()).expect("link").display()
            )
        } else if m.is_dir() {
            format!("dir {:o}", m.mode() & 0o7777)
        } else {
            format!("file {:o} {}", m.mode() & 0o7777, m.len())
        };
        out.insert(rel, format!("{what} {}:{}", m.uid(), m.gid()));
    }
    out
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

#[test]
fn imported_busybox_is_listed_and_readable_by_skopeo_and_umoci() {
    if !is_root("imported_busybox_is_listed_and_readable_by_skopeo_and_umoci")
        || !have("skopeo")
        || !have("umoci")
    {
        return;
    }
    let k = Kiln::new();
    let Some(rootfs) = busybox_rootfs(&k.path("rootfs")) else {
        return;
    };
    let id = k.ok(&[
        "import",
        rootfs.to_str().expect("utf8"),
        "busybox",
        "-c",
        "CMD [\"/bin/sh\"]",
        "-c",
        "ENV PATH=/bin",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let images = k.ok(&["images"]);
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("busybox") && l.contains("latest")),
        "{images}"
    );

    let layout = format!("oci:{}/content:busybox:latest", k.root().display());
    let out = Command::new("skopeo")
        .args(["inspect", &layout])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Env"][0], "PATH=/bin");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(1));

    let bundle = k.path("bundle");
    let out = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}/content:busybox:latest", k.root().display()),
        ])
        .arg(&bundle)
        .output()
        .expect("umoci");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&bundle.join("rootfs")), tree(&rootfs));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["process"]["args"][0], "/bin/sh");

    let inspected = k.ok(&["inspect", "busybox"]);
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("json");
    assert_eq!(inspected[0]["Id"], id.trim());
    assert_eq!(inspected[0]["Config"]["config"]["Cmd"][0], "/bin/sh");
}

#[test]
fn tarballs_import_plain_gzip_and_from_stdin() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    std::fs::write(src.join("etc/hello"), "world").expect("write");
    let plain = k.path("root.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&plain)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    let gz = k.path("root.tar.gz");
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("gzip -c {} > {}", plain.display(), gz.display()),
        ])
        .status()
        .expect("gzip");
    assert!(status.success());
    k.ok(&["import", plain.to_str().expect("utf8"), "plain:1"]);
    k.ok(&["import", gz.to_str().expect("utf8"), "gz:1"]);
    let mut child = k
        .cmd()
        .args(["import", "-", "stdin:1"])
        .stdin(std::fs::File::open(&gz).expect("open"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(child.wait().expect("wait").success());
    let a: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "plain:1"])).expect("json");
    let b: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "gz:1"])).expect("json");
    let c: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", "stdin:1"])).expect("json");
    // The same tar, stored uncompressed: the same layer.
    let diff = |v: &serde_json::Value| v[0]["Config"]["rootfs"]["diff_ids"][0].clone();
    assert_eq!(diff(&a), diff(&b));
    assert_eq!(diff(&b), diff(&c));
}

#[test]
fn tag_rmi_prune_and_du() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("f"), "data").expect("write");
    k.ok(&["import", src.to_str().expect("utf8"), "one"]);
    k.ok(&["tag", "one", "two:2"]);
    let images = k.ok(&["images"]);
    assert!(images.contains("two") && images.contains("one"), "{images}");
    assert_eq!(k.ok(&["rmi", "one"]), "Untagged: one:latest\n");
    let err = k.fails(&["rmi", "one"]);
    assert!(err.contains("no image named one"), "{err}");
    // two:2 still holds the blobs.
    assert!(k.ok(&["prune"]).starts_with("Total reclaimed space: 0B"));
    k.ok(&["rmi", "two:2"]);
    let pruned = k.ok(&["prune"]);
    assert!(!pruned.starts_with("Total reclaimed space: 0B"), "{pruned}");
    assert!(k.ok(&["images", "-q"]).is_empty());
    assert!(k.ok(&["du"]).contains("blobs"));
}

#[test]
fn bad_input_is_refused_and_stores_nothing() {
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let not_tar = k.write("notes.txt", "this is not a tar archive, just some text that is long enough to fill a block or so ....................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................");
    let err = k.fails(&["import", not_tar.to_str().expect("utf8"), "x"]);
    assert!(err.contains("tar"), "{err}");
    let err = k.fails(&["import", src.to_str().expect("utf8"), "Bad Name"]);
    assert!(err.contains("invalid image name"), "{err}");
    let err = k.fails(&["import", src.to_str().expect("utf8"), "x", "-c", "RUN make"]);
    assert!(err.contains("cannot be applied by import"), "{err}");
    let err = k.fails(&[
        "import",
        src.to_str().expect("utf8"),
        "x",
        "-c",
        "EXPOSE http",
    ]);
    assert!(err.contains("invalid port"), "{err}");
    let err = k.fails(&[
        "import",
        src.to_str().expect("utf8"),
        "x",
        "-c",
        "CMD [\"a\", [1]]",
    ]);
    assert!(err.contains("--change:1:1"), "{err}");
    let err = k.fails(&["inspect", "nothing"]);
    assert!(err.contains("no image named nothing"), "{err}");
    assert!(k.ok(&["images", "-q"]).is_empty());
}

#[test]
fn a_killed_import_leaves_a_readable_store_and_a_retry_completes() {
    let k = Kiln::new();
    // A big enough tree that the import is still running when it is killed.
    let src = k.path("big");
    std::fs::create_dir_all(&src).expect("mkdir");
    let chunk = vec![7u8; 1 << 20];
    for i in 0..200 {
        std::fs::write(src.join(format!("f{i}")), &chunk).expect("write");
    }
    k.ok(&["import", k.path("big").to_str().expect("utf8"), "before"]);
    let mut child = k
        .cmd()
        .args(["import", src.to_str().expect("utf8"), "victim"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill it while a blob is being written: as soon as a temp file shows up.
    let tmp = k.root().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let busy = std::fs::read_dir(&tmp)
            .map(|d| d.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)))
            .unwrap_or(false);
        if busy || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the import finished before it could be killed"
    );
    let images = k.ok(&["images"]);
    assert!(images.contains("before"), "{images}");
    assert!(!images.contains("victim"), "{images}");
    k.ok(&["import", src.to_str().expect("utf8"), "victim"]);
    assert!(k.ok(&["images"]).contains("victim"));
    // Nothing half-written is visible: every blob matches its digest.
    for entry in std::fs::read_dir(k.root().join("content/blobs/sha256")).expect("blobs") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let digest = describe::sha256_hex(&bytes);
        assert_eq!(path.file_name().expect("name").to_string_lossy(), digest);
    }
}

#[test]
fn two_concurrent_imports_into_one_store_both_land() {
    let k = Kiln::new();
    let mut children = Vec::new();
    for i in 0..2 {
        let src = k.path(&format!("src{i}"));
        std::fs::create_dir_all(&src).expect("mkdir");
        for j in 0..200 {
            std::fs::write(src.join(format!("f{j}")), format!("{i}-{j}")).expect("write");
        }
        children.push(
            k.cmd()
                .args(["import", src.to_str().expect("utf8"), &format!("img{i}")])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn"),
        );
    }
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let images = k.ok(&["images"]);
    assert!(
        images.contains("img0") && images.contains("img1"),
        "{images}"
    );
}

/// A Docker archive (`docker save`'s classic layout) of images given as (tag, layer tar).
fn docker_archive(images: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut builder = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let add = |builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, bytes).unwrap();
    };
    for (i, (tag, layer)) in images.iter().enumerate() {
        let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(layer)));
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = serde_json::to_vec(&config).unwrap();
        add(&mut builder, &format!("config{i}.json"), &config);
        add(&mut builder, &format!("layer{i}/layer.tar"), layer);
        manifest.push(serde_json::json!({
            "Config": format!("config{i}.json"),
            "RepoTags": [tag],
            "Layers": [format!("layer{i}/layer.tar")],
        }));
    }
    add(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    builder.into_inner().unwrap()
}

/// A layer with one regular file whose name is written raw (the tar crate refuses `..`).
fn layer_with_name(name: &str) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(4);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    let mut block = [0u8; 512];
    block[..4].copy_from_slice(b"evil");
    out.extend_from_slice(&block);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn save_then_load_round_trips_and_a_hostile_archive_tags_nothing() {
    let Some(a) = store_with_busybox() else {
        return;
    };
    a.ok(&["save", "busybox:latest", "-o", "bb.tar"]);
    let id = |k: &Kiln| {
        let v: serde_json::Value =
            serde_json::from_str(&k.ok(&["inspect", "busybox:latest"])).unwrap();
        v[0]["Id"].clone()
    };
    let b = Kiln::new();
    let archive = a.path("bb.tar");
    let loaded = b.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded.trim(), "Loaded image: busybox:latest");
    assert_eq!(id(&a), id(&b), "the loaded image is not the saved one");
    b.ok(&["fsck"]);
    // Stdin works too, and the archive is what docker save writes: skopeo reads it.
    let mut child = b
        .cmd()
        .arg("load")
        .stdin(std::fs::File::open(&archive).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    if have("skopeo") {
        let out = Command::new("skopeo")
            .args(["inspect", &format!("docker-archive:{}", archive.display())])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A layer escaping with `..`: refused, naming the entry; the good image of the same
    // archive is not tagged either.
    let good = layer_with_name("fine.txt");
    let evil = docker_archive(&[("good:1", good), ("evil:1", layer_with_name("../escape"))]);
    let c = Kiln::new();
    let path = c.write("evil.tar", &evil);
    let err = c.fails(&["load", "-i", path.to_str().unwrap()]);
    assert!(err.contains("../escape"), "{err}");
    let images = c.ok(&["images"]);
    assert!(
        !images.contains("good") && !images.contains("evil"),
        "{images}"
    );
    // A layer that is not its config's diff_id: refused.
    let mut lying = docker_archive(&[("liar:1", layer_with_name("a.txt"))]);
    let at = lying.windows(4).position(|w| w == b"evil").unwrap();
    lying[at] = b'E';
    let path = c.write("liar.tar", &lying);
    let err = c.fails(&["load", "-i", path.to_str().unwrap()]);
    assert!(err.contains("the config says"), "{err}");
    // Not an archive at all, and no input on a terminal-less stdin that is empty.
    let path = c.write("junk.tar", b"junk");
    let err = c.fails(&["load", "-i", path.to_str().unwrap()]);
    assert!(err.contains("the archive to load"), "{err}");
    let err = c.fails(&["save", "nosuch:1", "-o", "x.tar"]);
    assert!(err.contains("nosuch"), "{err}");
    assert!(!c.path("x.tar").exists());
}

fn store_with_busybox() -> Option<Kiln> {
    let k = Kiln::new();
    let rootfs = busybox_rootfs(&k.path("rootfs"))?;
    k.ok(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
    Some(k)
}
