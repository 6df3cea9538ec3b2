//! The shared snapshotter suite: the same changes through overlay and native must give a
//! layer that, applied onto the parent, yields exactly the changed tree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_snapshotter::layer_in::{WhiteoutStyle, apply_layer};
use kiln_snapshotter::layer_out::{Compression, DiffSource, LayerOptions, write_layer};
use kiln_snapshotter::{SnapshotterKind, Store};

use crate::support::{OverlayMount, describe};

fn base(dir: &Path) {
    for d in ["etc", "app/old", "keep", "data/sub"] {
        fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    fs::write(dir.join("etc/config"), "v1").expect("write");
    fs::write(dir.join("app/old/a.txt"), "a").expect("write");
    fs::write(dir.join("app/old/b.txt"), "b").expect("write");
    fs::write(dir.join("keep/run.sh"), "#!/bin/sh").expect("write");
    fs::write(dir.join("data/sub/x"), "x").expect("write");
    fs::write(dir.join("remove-me"), "bye").expect("write");
    fs::write(dir.join("rename-me"), "moving").expect("write");
    std::os::unix::fs::symlink("etc/config", dir.join("link")).expect("symlink");
}

/// What a RUN step might do: delete, replace a directory wholesale, rename, chmod, add.
fn change(view: &Path) {
    fs::remove_file(view.join("remove-me")).expect("rm");
    fs::remove_dir_all(view.join("data")).expect("rm -r");
    fs::create_dir_all(view.join("data")).expect("mkdir");
    fs::write(view.join("data/new"), "fresh").expect("write");
    fs::rename(view.join("rename-me"), view.join("renamed")).expect("mv");
    fs::set_permissions(view.join("keep/run.sh"), fs::Permissions::from_mode(0o755))
        .expect("chmod");
    fs::write(view.join("etc/config"), "v2").expect("write");
    fs::hard_link(view.join("renamed"), view.join("hardlink")).expect("ln");
    fs::create_dir_all(view.join("app/old")).expect("mkdir");
    fs::remove_dir_all(view.join("app/old")).expect("rm -r");
}

fn suite(kind: SnapshotterKind, compression: Compression) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&tmp.path().join("root"), Some(kind)).expect("open");
    let snaps = store.snapshots();

    let first = snaps.prepare(None).expect("prepare");
    base(&snaps.diff_dir(&first));
    let parent = snaps.commit(first).expect("commit");
    let parent_tree = describe(&snaps.layers(&parent).expect("layers")[0]);

    let child = snaps.prepare(Some(&parent)).expect("prepare child");
    // The truth: the tree the process saw after its changes.
    let expected = match kind {
        SnapshotterKind::Overlay => {
            let mounts = snaps.mounts(&child).expect("mounts");
            assert_eq!(mounts[0].kind, "overlay");
            let merged = tmp.path().join("merged");
            fs::create_dir_all(&merged).expect("mkdir");
            let status = std::process::Command::new("mount")
                .args([
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    &mounts[0].options.join(","),
                ])
                .arg(&merged)
                .status()
                .expect("mount");
            assert!(status.success());
            change(&merged);
            let tree = describe(&merged);
            let _ = std::process::Command::new("umount").arg(&merged).status();
            tree
        }
        SnapshotterKind::Native => {
            let view = snaps.diff_dir(&child);
            assert_eq!(
                describe(&view),
                parent_tree,
                "native prepare copies the parent"
            );
            change(&view);
            describe(&view)
        }
    };
    let child = snaps.commit(child).expect("commit child");
    let layers = snaps.layers(&child).expect("layers");

    // Reading the committed chain as overlayfs would gives the same tree.
    if kind == SnapshotterKind::Overlay {
        let merged = tmp.path().join("merged-ro");
        let lowers: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
        let _mount = OverlayMount::new(&lowers, &merged);
        assert_eq!(
            describe(&merged),
            expected,
            "the committed chain reads back"
        );
    }

    let source = match kind {
        SnapshotterKind::Overlay => DiffSource::Overlay(&layers[0]),
        SnapshotterKind::Native => DiffSource::Trees {
            lower: Some(&snaps.layers(&parent).expect("parent")[0]),
            upper: &layers[0],
        },
    };
    let options = LayerOptions {
        compression,
        ..LayerOptions::default()
    };
    let layer = write_layer(source, store.content(), &options).expect("write layer");
    if compression == Compression::None {
        assert_eq!(layer.digest, layer.diff_id);
    } else {
        assert_ne!(layer.digest, layer.diff_id);
    }
    assert_eq!(store.content().size(&layer.digest), Some(layer.size));

    // Independent check of the tar's entries with GNU tar.
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(store.content().path(&layer.digest))
        .output()
        .expect("tar -t");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == ".wh.remove-me"), "{listing}");
    assert!(listing.lines().any(|l| l == ".wh.rename-me"), "{listing}");

    // Applying the layer onto a copy of the parent yields the changed tree.
    let target = tmp.path().join("applied");
    fs::create_dir_all(&target).expect("mkdir");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!(
            "{}/.",
            snaps.layers(&parent).expect("parent")[0].display()
        ))
        .arg(&target)
        .status()
        .expect("cp");
    assert!(status.success());
    let blob = store.content().open(&layer.digest).expect("open blob");
    apply_layer(blob, &target, WhiteoutStyle::Delete).expect("apply");
    assert_eq!(describe(&target), expected);
}

#[test]
fn overlay_layers_round_trip() {
    if !kiln_testkit::is_root("overlay_layers_round_trip") {
        return;
    }
    suite(SnapshotterKind::Overlay, Compression::None);
    suite(
        SnapshotterKind::Overlay,
        Compression::Gzip {
            level: 6,
            threads: 2,
        },
    );
}

#[test]
fn native_layers_round_trip() {
    if !kiln_testkit::is_root("native_layers_round_trip (chown of copied trees)") {
        return;
    }
    suite(SnapshotterKind::Native, Compression::None);
    suite(
        SnapshotterKind::Native,
        Compression::Zstd {
            level: 3,
            threads: 2,
        },
    );
}

#[test]
fn layers_are_deterministic_and_clamped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("d")).expect("mkdir");
    fs::write(tree.join("d/f"), "x").expect("write");
    let a = Store::open(&tmp.path().join("a"), Some(SnapshotterKind::Native)).expect("open");
    let b = Store::open(&tmp.path().join("b"), Some(SnapshotterKind::Native)).expect("open");
    let options = LayerOptions {
        source_date_epoch: Some(0),
        ..LayerOptions::default()
    };
    let la = write_layer(
        DiffSource::Trees {
            lower: None,
            upper: &tree,
        },
        a.content(),
        &options,
    )
    .expect("a");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(tree.join("d/f"), "x").expect("rewrite, new mtime");
    let lb = write_layer(
        DiffSource::Trees {
            lower: None,
            upper: &tree,
        },
        b.content(),
        &options,
    )
    .expect("b");
    assert_eq!(la.diff_id, lb.diff_id, "same content and epoch, same layer");
}

#[test]
fn deep_overlay_chains_have_short_paths() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(&tmp.path().join("root"), Some(SnapshotterKind::Overlay)).expect("open");
    let snaps = store.snapshots();
    let mut parent = None;
    for i in 0..100 {
        let active = snaps.prepare(parent.as_ref()).expect("prepare");
        fs::write(snaps.diff_dir(&active).join(format!("f{i}")), "x").expect("write");
        parent = Some(snaps.commit(active).expect("commit"));
    }
    let top = parent.expect("chain");
    assert_eq!(snaps.layers(&top).expect("layers").len(), 100);
    let active = snaps.prepare(Some(&top)).expect("prepare");
    let mounts = snaps.mounts(&active).expect("mounts");
    assert_eq!(mounts[0].options[0].matches(':').count(), 99);
}

#[test]
fn exporting_a_snapshot_twice_reuses_the_blob() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&tmp.path().join("root"), Some(SnapshotterKind::Native)).expect("open");
    let snaps = store.snapshots();
    let active = snaps.prepare(None).expect("prepare");
    fs::write(snaps.diff_dir(&active).join("f"), "data").expect("write");
    let id = snaps.commit(active).expect("commit");
    let options = LayerOptions::default();
    let first = store.layer_for(&id, &options).expect("export");
    // Remove write permission from the diff: a second export must not read it again.
    let memo = tmp.path().join("root/snapshots").join(id.as_str());
    assert!(fs::read_dir(&memo).expect("ls").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with("layer-tar")
    }));
    fs::remove_file(snaps.layers(&id).expect("layers")[0].join("f")).expect("rm");
    let second = store.layer_for(&id, &options).expect("export again");
    assert_eq!(first, second);
    // A different compression is a different blob.
    let gz = store
        .layer_for(
            &id,
            &LayerOptions {
                compression: Compression::Gzip {
                    level: 6,
                    threads: 1,
                },
                ..LayerOptions::default()
            },
        )
        .expect("gzip");
    assert_ne!(gz.digest, first.digest);
}
