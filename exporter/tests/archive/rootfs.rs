//! `type=local` and `type=tar`: the image's final filesystem.

use kiln_exporter::archive::{write_rootfs_dir, write_rootfs_tar, write_to_file};
use kiln_snapshotter::layer_out::Compression;

use crate::support::{Fixture, describe, describe_with_mtimes, expected_tree, have, run};

#[test]
fn local_output_is_the_final_tree() {
    let fx = Fixture::new(Compression::None);
    let dir = fx.path("rootfs");
    write_rootfs_dir(&fx.store, &fx.image, &dir, &Default::default()).unwrap();
    assert_eq!(describe(&dir), expected_tree());
}

/// The tar lists the final tree in path order and extracts to what `type=local` writes,
/// mtimes included; for layers stored uncompressed and gzip alike.
#[test]
fn tar_output_is_the_local_tree_as_one_tar() {
    if !have("tar", "tar_output_is_the_local_tree_as_one_tar") {
        return;
    }
    for compression in [
        Compression::None,
        Compression::Gzip {
            level: 6,
            threads: 1,
        },
    ] {
        let fx = Fixture::new(compression);
        let dest = fx.path("rootfs.tar");
        write_to_file(&dest, |out| write_rootfs_tar(&fx.store, &fx.image, out)).unwrap();

        let listed: Vec<String> = run("tar", &["-tf", &dest.display().to_string()])
            .lines()
            .map(|l| l.trim_end_matches('/').to_owned())
            .collect();
        let expected: Vec<String> = expected_tree().into_keys().collect();
        assert_eq!(listed, expected, "{compression:?}");

        let extracted = fx.path("extracted");
        std::fs::create_dir(&extracted).unwrap();
        run(
            "tar",
            &[
                "-xpf",
                &dest.display().to_string(),
                "-C",
                &extracted.display().to_string(),
            ],
        );
        let local = fx.path("local");
        write_rootfs_dir(&fx.store, &fx.image, &local, &Default::default()).unwrap();
        assert_eq!(describe(&extracted), expected_tree(), "{compression:?}");
        assert_eq!(
            describe_with_mtimes(&extracted),
            describe_with_mtimes(&local),
            "{compression:?}"
        );
    }
}
