//! Archives that try to write outside the target are refused, naming the entry, and
//! nothing outside is touched.

use std::path::Path;

use kiln_snapshotter::StoreError;
use kiln_snapshotter::layer_in::{WhiteoutStyle, apply_layer};

fn header(path_bytes: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Raw bytes: the tar crate's set_path would refuse `..` itself.
    let name = &mut h.as_gnu_mut().expect("gnu header").name;
    name[..path_bytes.len()].copy_from_slice(path_bytes);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

/// (path, type, data, link target) of one raw entry.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a [u8]>);

fn archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data, link) in entries {
        let mut h = header(path, *kind, data.len() as u64);
        if let Some(link) = link {
            h.as_gnu_mut().expect("gnu").linkname[..link.len()].copy_from_slice(link);
            h.set_cksum();
        }
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn check_refused(bytes: Vec<u8>, fragment: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("target");
    std::fs::create_dir_all(&target).expect("mkdir");
    let err = apply_layer(std::io::Cursor::new(bytes), &target, WhiteoutStyle::Delete)
        .expect_err("must refuse");
    match &err {
        StoreError::UnsafeEntry { entry, .. } => assert!(entry.contains(fragment), "{err}"),
        other => panic!("unexpected error {other}"),
    }
    // Nothing escaped: the temp dir holds only the target, and the host is untouched.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["target"]);
    assert!(!Path::new("/tmp/kiln-escaped").exists());
}

#[test]
fn dot_dot_is_refused() {
    check_refused(
        archive(&[(b"../escaped", tar::EntryType::Regular, b"x", None)]),
        "../escaped",
    );
    check_refused(
        archive(&[(b"a/../../escaped", tar::EntryType::Regular, b"x", None)]),
        "escaped",
    );
}

#[test]
fn absolute_paths_are_refused() {
    check_refused(
        archive(&[(b"/tmp/kiln-escaped", tar::EntryType::Regular, b"x", None)]),
        "/tmp/kiln-escaped",
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    check_refused(
        archive(&[
            (b"link", tar::EntryType::Symlink, b"", Some(b"/tmp")),
            (b"link/kiln-escaped", tar::EntryType::Regular, b"x", None),
        ]),
        "link/kiln-escaped",
    );
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    check_refused(
        archive(&[(
            b"passwd",
            tar::EntryType::Link,
            b"",
            Some(b"../../../../etc/passwd"),
        )]),
        "passwd",
    );
    check_refused(
        archive(&[(b"passwd", tar::EntryType::Link, b"", Some(b"/etc/passwd"))]),
        "passwd",
    );
}

#[test]
fn duplicates_take_the_later_entry_and_links_inside_work() {
    let bytes = archive(&[
        (b"dir/file", tar::EntryType::Regular, b"first", None),
        (b"dir/file", tar::EntryType::Regular, b"second", None),
        (b"dir/hard", tar::EntryType::Link, b"", Some(b"dir/file")),
        (
            b"dir/soft",
            tar::EntryType::Symlink,
            b"",
            Some(b"/etc/passwd"),
        ),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    apply_layer(
        std::io::Cursor::new(bytes),
        tmp.path(),
        WhiteoutStyle::Delete,
    )
    .expect("apply");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("dir/file")).expect("read"),
        "second"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("dir/hard")).expect("read"),
        "second"
    );
    // An absolute symlink is fine as content: it is only followed inside the image.
    assert_eq!(
        std::fs::read_link(tmp.path().join("dir/soft")).expect("readlink"),
        Path::new("/etc/passwd")
    );
}

/// `ADD`'s extraction (moby's chrootarchive semantics): names that climb, absolute
/// names and symlinks out of the root all land inside it; nothing outside is written.
#[test]
fn add_extraction_keeps_everything_inside_the_root() {
    use kiln_snapshotter::layer_in::extract_add_archive;
    let tmp = tempfile::tempdir().expect("tempdir");
    let target = tmp.path().join("target");
    std::fs::create_dir_all(&target).expect("mkdir");
    let bytes = archive(&[
        (b"../../up", tar::EntryType::Regular, b"up", None),
        (b"/tmp/kiln-escaped", tar::EntryType::Regular, b"abs", None),
        (b"out", tar::EntryType::Symlink, b"", Some(b"../../../..")),
        (b"out/through-up", tar::EntryType::Regular, b"t", None),
        (b"etc", tar::EntryType::Symlink, b"", Some(b"/tmp")),
        (b"etc/through-abs", tar::EntryType::Regular, b"a", None),
        (b"hard", tar::EntryType::Link, b"", Some(b"../../../up")),
    ]);
    extract_add_archive(std::io::Cursor::new(bytes), &target, None, None).expect("extract");
    let read = |p: &str| std::fs::read_to_string(target.join(p)).expect(p);
    assert_eq!(read("up"), "up");
    assert_eq!(read("tmp/kiln-escaped"), "abs");
    assert_eq!(read("through-up"), "t");
    assert_eq!(read("tmp/through-abs"), "a");
    assert_eq!(read("hard"), "up");
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["target"]);
    assert!(!Path::new("/tmp/kiln-escaped").exists());
    assert!(!Path::new("/tmp/through-abs").exists());
}

/// What chrootarchive would fail on fails, naming the entry: a symlink loop on the way,
/// a hard link to nothing, a file where a directory is needed.
#[test]
fn add_extraction_refuses_loops_and_missing_link_targets() {
    use kiln_snapshotter::layer_in::extract_add_archive;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            archive(&[
                (b"loop", tar::EntryType::Symlink, b"", Some(b"loop")),
                (b"loop/x", tar::EntryType::Regular, b"x", None),
            ]),
            "too many levels of symbolic links",
        ),
        (
            archive(&[(b"hard", tar::EntryType::Link, b"", Some(b"nowhere/file"))]),
            "nowhere",
        ),
        (
            archive(&[
                (b"file", tar::EntryType::Regular, b"x", None),
                (b"file/below", tar::EntryType::Regular, b"y", None),
            ]),
            "not a directory",
        ),
    ];
    for (bytes, want) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = extract_add_archive(std::io::Cursor::new(bytes), tmp.path(), None, None)
            .expect_err("must fail");
        assert!(err.to_string().contains(want), "{err}");
    }
}

/// A directory's metadata is applied after its contents; a later entry of the archive that
/// replaces the directory (or one of its parents) with a symlink to the host must not turn
/// that late chmod/chown into one of a host file (`d/` mode 06777, then `d -> HOST`).
#[test]
fn a_directory_replaced_by_a_symlink_keeps_the_host_untouched() {
    use kiln_snapshotter::layer_in::extract_add_archive;
    use std::os::unix::fs::PermissionsExt;
    let dir_entry = |path: &'static [u8]| {
        let mut h = header(path, tar::EntryType::Directory, 0);
        h.set_mode(0o6777);
        h.set_cksum();
        h
    };
    for (layer, parent) in [(true, false), (true, true), (false, false), (false, true)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let host = tmp.path().join("host");
        std::fs::create_dir_all(host.join("etc")).expect("mkdir");
        std::fs::write(host.join("secret"), "s").expect("write");
        for p in [host.join("secret"), host.join("etc")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let target = tmp.path().join("target");
        std::fs::create_dir_all(&target).expect("mkdir");
        let link_to = if parent {
            host.to_str().expect("utf8").to_owned()
        } else {
            host.join("secret").to_str().expect("utf8").to_owned()
        };
        let mut b = tar::Builder::new(Vec::new());
        let (dir, link): (&[u8], &[u8]) = if parent {
            (b"a/etc", b"a")
        } else {
            (b"d", b"d")
        };
        if parent {
            b.append(&dir_entry(b"a"), &b""[..]).expect("append");
        }
        b.append(&dir_entry(dir), &b""[..]).expect("append");
        let mut h = header(link, tar::EntryType::Symlink, 0);
        h.as_gnu_mut().expect("gnu").linkname[..link_to.len()].copy_from_slice(link_to.as_bytes());
        h.set_cksum();
        b.append(&h, &b""[..]).expect("append");
        let bytes = b.into_inner().expect("tar");
        // Layers refuse nothing here (a symlink may replace a directory); ADD neither.
        let _ = if layer {
            apply_layer(std::io::Cursor::new(bytes), &target, WhiteoutStyle::Delete).map(|_| ())
        } else {
            extract_add_archive(std::io::Cursor::new(bytes), &target, None, None).map(|_| ())
        };
        for p in [host.join("secret"), host.join("etc")] {
            let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o7777;
            assert_eq!(
                mode,
                0o700,
                "{} changed (layer {layer}, parent {parent})",
                p.display()
            );
        }
    }
}

/// A layer whose uncompressed content is not its diff_id is refused and leaves nothing
/// committed: its snapshot would be found by that diff_id for every image of the store.
#[test]
fn a_layer_that_is_not_its_diff_id_is_refused() {
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = kiln_snapshotter::Store::open(store_dir.path(), None).expect("store");
    let bytes = archive(&[(b"file", tar::EntryType::Regular, b"forged", None)]);
    let digest = store.content().write_bytes(&bytes).expect("blob");
    let claimed = kiln_snapshotter::Digest::of(b"what debian's layer would be");
    let err = store
        .snapshot_of_blob(None, &digest, Some(&claimed))
        .expect_err("a forged diff_id is refused");
    assert!(err.to_string().contains("diff_id"), "{err}");
    // The true diff_id (a plain tar's is its digest) is taken.
    store
        .snapshot_of_blob(None, &digest, Some(&digest))
        .expect("the true diff_id is taken");
}
