//! Failures name what failed and leave no half-written destination.

use kiln_exporter::archive::{
    ArchiveError, ArchiveOptions, write_oci_archive, write_oci_layout, write_rootfs_dir,
    write_rootfs_tar, write_to_file,
};
use kiln_snapshotter::Digest;
use kiln_snapshotter::layer_out::Compression;

use crate::support::{Fixture, FullDisk};

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_unwritable_dest_is_named_and_nothing_is_left() {
    let fx = Fixture::new(Compression::None);
    // A regular file where a directory should be: fails even for root.
    std::fs::write(fx.path("not-a-dir"), "x").unwrap();
    let dest = fx.path("not-a-dir/image.tar");
    let err = write_to_file(&dest, |out| {
        write_oci_archive(&fx.store, &fx.image, &ArchiveOptions::default(), out)
    })
    .expect_err("cannot create a file under a file");
    assert!(
        matches!(&err, ArchiveError::Dest { path, .. } if *path == dest),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&dest.display().to_string()), "{message}");
    assert!(message.contains("choose another dest"), "{message}");

    let err = write_oci_layout(
        &fx.store,
        &fx.image,
        &ArchiveOptions::default(),
        &fx.path("not-a-dir"),
    )
    .expect_err("a layout directory cannot be a file");
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    let err = write_rootfs_dir(
        &fx.store,
        &fx.image,
        &fx.path("not-a-dir"),
        &Default::default(),
    )
    .expect_err("a rootfs directory cannot be a file");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    assert_eq!(files_in(&fx.out), ["not-a-dir"]);
}

#[test]
fn an_unknown_blob_is_named_and_nothing_is_left() {
    let fx = Fixture::new(Compression::None);
    let mut image = fx.image.clone();
    let unknown = Digest::of(b"not in the store");
    image.manifest.layers[1].digest = unknown.clone();
    for (name, result) in [
        (
            "oci.tar",
            write_to_file(&fx.path("oci.tar"), |out| {
                write_oci_archive(&fx.store, &image, &ArchiveOptions::default(), out).map(drop)
            }),
        ),
        (
            "rootfs.tar",
            write_to_file(&fx.path("rootfs.tar"), |out| {
                write_rootfs_tar(&fx.store, &image, out)
            }),
        ),
    ] {
        let err = result.expect_err("the blob is missing");
        assert!(
            matches!(&err, ArchiveError::MissingBlob { digest, .. } if *digest == unknown),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(unknown.as_str()), "{err}");
        assert!(err.to_string().contains("pull the image again"), "{err}");
    }
    assert_eq!(files_in(&fx.out), Vec::<String>::new());
}

#[test]
fn a_full_disk_names_the_entry_being_written() {
    let fx = Fixture::new(Compression::None);
    let mut out = FullDisk {
        limit: 4096,
        written: 0,
    };
    let err = write_oci_archive(&fx.store, &fx.image, &ArchiveOptions::default(), &mut out)
        .expect_err("the disk is full");
    match &err {
        ArchiveError::Write { entry, .. } => assert!(entry.starts_with("blobs/"), "{err}"),
        other => panic!("expected a write error, got {other}"),
    }
    let mut out = FullDisk {
        limit: 4096,
        written: 0,
    };
    let err = write_rootfs_tar(&fx.store, &fx.image, &mut out).expect_err("the disk is full");
    assert!(matches!(err, ArchiveError::Write { .. }), "{err}");
}
