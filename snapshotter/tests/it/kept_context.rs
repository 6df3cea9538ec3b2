//! `layer_in::sync_archive`: a kept context directory made to hold exactly an archive,
//! rewriting only what changed — and never writing outside it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_snapshotter::layer_in::sync_archive;

use crate::support::describe;

/// A tar of `(name, content)` files (`None`: a directory, `Some("->x")`: a symlink to x),
/// every file with mtime 1_700_000_000 and mode 0644, as a client would send them.
fn tar_of(path: &Path, entries: &[(&str, Option<&str>)]) {
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        match content {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, name, std::io::empty())
                    .unwrap();
            }
            Some(text) if text.starts_with("->") => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, name, &text[2..]).unwrap();
            }
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(text.len() as u64);
                builder
                    .append_data(&mut header, name, text.as_bytes())
                    .unwrap();
            }
        }
    }
    builder.finish().unwrap();
}

#[test]
fn a_second_sync_rewrites_only_what_changed_and_removes_what_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, root, scratch) = (
        dir.path().join("ctx.tar"),
        dir.path().join("kept"),
        dir.path().join("scratch.tar"),
    );
    tar_of(
        &archive,
        &[
            ("src", None),
            ("src/a.txt", Some("aaaa")),
            ("src/b.txt", Some("bbbb")),
            ("gone.txt", Some("old")),
            ("link", Some("->src/a.txt")),
            ("becomes-dir", Some("file")),
        ],
    );
    let first = sync_archive(&archive, &root, &scratch).unwrap();
    assert_eq!(first.kept, 0);
    // What the content memo keys on: unchanged files keep inode and change time.
    let stamp = |p: &str| {
        let m = fs::metadata(root.join(p)).unwrap();
        (m.ino(), m.ctime(), m.ctime_nsec())
    };
    let (a_before, b_before) = (stamp("src/a.txt"), stamp("src/b.txt"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    // b changes in content only (same size, same mtime): the bytes decide.
    tar_of(
        &archive,
        &[
            ("src", None),
            ("src/a.txt", Some("aaaa")),
            ("src/b.txt", Some("BBBB")),
            ("link", Some("->src/a.txt")),
            ("becomes-dir", None),
            ("becomes-dir/x", Some("x")),
        ],
    );
    let second = sync_archive(&archive, &root, &scratch).unwrap();
    assert_eq!(second.kept, 2, "{second:?}");
    assert_eq!(
        stamp("src/a.txt"),
        a_before,
        "an unchanged file was touched"
    );
    assert_ne!(
        stamp("src/b.txt"),
        b_before,
        "a changed file kept its stamp"
    );
    let tree = describe(&root);
    assert_eq!(
        tree.keys().cloned().collect::<Vec<_>>(),
        [
            "becomes-dir",
            "becomes-dir/x",
            "link",
            "src",
            "src/a.txt",
            "src/b.txt"
        ]
    );
    assert_eq!(fs::read_to_string(root.join("src/b.txt")).unwrap(), "BBBB");
    assert!(!root.join("gone.txt").exists());
}

#[test]
fn a_symlink_left_by_an_earlier_sync_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let (archive, root, scratch) = (
        dir.path().join("ctx.tar"),
        dir.path().join("kept"),
        dir.path().join("scratch.tar"),
    );
    let target = format!("->{}", outside.display());
    tar_of(&archive, &[("a", Some(&target))]);
    sync_archive(&archive, &root, &scratch).unwrap();
    assert!(fs::symlink_metadata(root.join("a")).unwrap().is_symlink());
    // Now `a` is a directory with a file: the stale link goes, nothing lands outside.
    tar_of(&archive, &[("a", None), ("a/planted", Some("x"))]);
    sync_archive(&archive, &root, &scratch).unwrap();
    assert!(fs::symlink_metadata(root.join("a")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(root.join("a/planted")).unwrap(), "x");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the link"
    );
    // An archive that escapes is refused before anything is removed or written.
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..9].copy_from_slice(b"../escape");
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o644);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 1024]);
    fs::write(&archive, bytes).unwrap();
    assert!(sync_archive(&archive, &root, &scratch).is_err());
    assert!(
        root.join("a/planted").exists(),
        "a refused archive changed the directory"
    );
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn repeated_paths_and_sized_directory_headers_sync_as_a_fresh_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, root, scratch) = (
        dir.path().join("ctx.tar"),
        dir.path().join("kept"),
        dir.path().join("scratch.tar"),
    );
    // `d` a file, then a directory of that name holding `x`; a directory header that
    // carries a size (its bytes are skipped by readers) before a file.
    let write = |archive: &Path| {
        let mut builder = tar::Builder::new(fs::File::create(archive).unwrap());
        let mut file = |name: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_size(body.len() as u64);
            builder.append_data(&mut h, name, body).unwrap();
        };
        file("d", b"first a file");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_path("d").unwrap();
        h.set_size(0);
        h.set_cksum();
        builder.append(&h, std::io::empty()).unwrap();
        h.set_path("s").unwrap();
        h.set_size(512);
        h.set_cksum();
        builder.append(&h, &[b'#'; 512][..]).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_entry_type(tar::EntryType::Regular);
        f.set_mode(0o644);
        f.set_mtime(1_700_000_000);
        f.set_size(2);
        builder.append_data(&mut f, "d/x", &b"x\n"[..]).unwrap();
        builder.append_data(&mut f, "s/y", &b"y\n"[..]).unwrap();
        builder.finish().unwrap();
    };
    write(&archive);
    for _ in 0..2 {
        sync_archive(&archive, &root, &scratch).unwrap();
        assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
        assert_eq!(fs::read_to_string(root.join("d/x")).unwrap(), "x\n");
        assert_eq!(fs::read_to_string(root.join("s/y")).unwrap(), "y\n");
    }
    // Without the repeated path, the second sync copies only what differs — the sized
    // directory header included — and the result is still the archive.
    let plain = dir.path().join("plain.tar");
    {
        let mut builder = tar::Builder::new(fs::File::create(&plain).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_path("s").unwrap();
        h.set_size(512);
        h.set_cksum();
        builder.append(&h, &[b'#'; 512][..]).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_entry_type(tar::EntryType::Regular);
        f.set_mode(0o644);
        f.set_uid(0);
        f.set_gid(0);
        f.set_mtime(1_700_000_000);
        f.set_size(2);
        builder.append_data(&mut f, "s/y", &b"Y\n"[..]).unwrap();
        builder.append_data(&mut f, "s/z", &b"z\n"[..]).unwrap();
        builder.finish().unwrap();
    }
    let root2 = dir.path().join("kept2");
    sync_archive(&plain, &root2, &scratch).unwrap();
    fs::write(root2.join("s/z"), "Z\n").unwrap();
    let stats = sync_archive(&plain, &root2, &scratch).unwrap();
    assert_eq!((stats.kept, stats.written), (1, 1), "{stats:?}");
    assert_eq!(fs::read_to_string(root2.join("s/y")).unwrap(), "Y\n");
    assert_eq!(fs::read_to_string(root2.join("s/z")).unwrap(), "z\n");
}
