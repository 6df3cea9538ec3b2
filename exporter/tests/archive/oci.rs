//! `type=oci`: the layout directory and its tar, read back by skopeo and umoci.

use kiln_exporter::archive::{
    ArchiveOptions, export_image_for_output, write_oci_archive, write_oci_layout, write_to_file,
};
use kiln_snapshotter::layer_out::Compression;

use crate::support::{
    Fixture, describe, expected_tree, have, skopeo_inspect, tar_entries, umoci_unpack, zstd_diff_id,
};

const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn named(names: &[&str]) -> ArchiveOptions {
    ArchiveOptions {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        ..ArchiveOptions::default()
    }
}

fn layer_digests(image: &kiln_image::image::StoredImage) -> Vec<String> {
    image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect()
}

#[test]
fn oci_archive_is_read_by_skopeo_with_the_layers_written() {
    if !have(
        "skopeo",
        "oci_archive_is_read_by_skopeo_with_the_layers_written",
    ) {
        return;
    }
    let fx = Fixture::new(Compression::None);
    let dest = fx.path("image.tar");
    let exported = write_to_file(&dest, |out| {
        write_oci_archive(&fx.store, &fx.image, &named(&["kiln-test/app:v1"]), out)
    })
    .unwrap();
    assert_eq!(exported.id, fx.image.id, "the image id must not change");
    assert!(
        exported
            .manifest
            .layers
            .iter()
            .all(|l| l.media_type == OCI_GZIP)
    );

    let inspect = skopeo_inspect(&format!("oci-archive:{}", dest.display()), false);
    assert_eq!(
        inspect["Digest"],
        exported.manifest_descriptor.digest.as_str()
    );
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(layer_digests(&exported)),
        "{inspect:#}"
    );

    // BuildKit's annotations in index.json: the full name and the tag.
    let entries = tar_entries(&dest);
    let index: serde_json::Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/kiln-test/app:v1"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(entries["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
    let names: Vec<&String> = entries.keys().collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn oci_layout_dir_is_read_by_skopeo_and_unpacked_by_umoci() {
    let test = "oci_layout_dir_is_read_by_skopeo_and_unpacked_by_umoci";
    if !have("skopeo", test) || !have("umoci", test) {
        return;
    }
    let fx = Fixture::new(Compression::None);
    let layout = fx.path("layout");
    let exported =
        write_oci_layout(&fx.store, &fx.image, &named(&["kiln-test/app:v1"]), &layout).unwrap();
    let inspect = skopeo_inspect(&format!("oci:{}:v1", layout.display()), false);
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(layer_digests(&exported))
    );

    let rootfs = umoci_unpack(&layout, "v1", &fx.path("bundle"));
    assert_eq!(describe(&rootfs), expected_tree());

    // A second export into the same directory adds its name and keeps the first; the
    // same name again replaces its entry rather than adding one.
    let zstd = ArchiveOptions {
        compression: Compression::Zstd {
            level: 3,
            threads: 0,
        },
        ..named(&["kiln-test/app:v2"])
    };
    write_oci_layout(&fx.store, &fx.image, &zstd, &layout).unwrap();
    write_oci_layout(&fx.store, &fx.image, &named(&["kiln-test/app:v1"]), &layout).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let refs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(refs, ["v2", "v1"]);
    skopeo_inspect(&format!("oci:{}:v2", layout.display()), false);
    skopeo_inspect(&format!("oci:{}:v1", layout.display()), false);
}

/// umoci 0.4 cannot read zstd layers: the `zstd` tool checks each blob against its
/// diff_id, skopeo the layout.
#[test]
fn zstd_gives_zstd_media_types_even_when_docker_types_are_asked() {
    let test = "zstd_gives_zstd_media_types_even_when_docker_types_are_asked";
    if !have("skopeo", test) || !have("zstd", test) {
        return;
    }
    let fx = Fixture::new(Compression::None);
    let options = ArchiveOptions {
        compression: Compression::Zstd {
            level: 3,
            threads: 2,
        },
        oci_mediatypes: false,
        ..named(&["app:zstd"])
    };
    let layout = fx.path("layout");
    let exported = write_oci_layout(&fx.store, &fx.image, &options, &layout).unwrap();
    assert_eq!(exported.id, fx.image.id);
    let raw = skopeo_inspect(&format!("oci:{}:zstd", layout.display()), true);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = raw["layers"].as_array().unwrap();
    for (layer, diff_id) in layers.iter().zip(&fx.image.config.rootfs.diff_ids) {
        assert_eq!(layer["mediaType"], OCI_ZSTD);
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        assert_eq!(
            zstd_diff_id(&layout.join("blobs/sha256").join(hex)),
            *diff_id
        );
    }
}

/// skopeo 1.9 reads only OCI manifests out of an OCI layout: the Docker media types are
/// checked in the archive's own files, and skopeo reads the same image as a Docker
/// archive (docker.rs).
#[test]
fn docker_media_types_when_oci_mediatypes_is_false() {
    let fx = Fixture::new(Compression::None);
    let options = ArchiveOptions {
        oci_mediatypes: false,
        ..named(&["app:docker"])
    };
    let dest = fx.path("image.tar");
    let exported = write_to_file(&dest, |out| {
        write_oci_archive(&fx.store, &fx.image, &options, out)
    })
    .unwrap();
    assert_eq!(exported.id, fx.image.id);
    let entries = tar_entries(&dest);
    let index: serde_json::Value = serde_json::from_slice(&entries["index.json"]).unwrap();
    let descriptor = &index["manifests"][0];
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let hex = descriptor["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&entries[&format!("blobs/sha256/{hex}")]).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    assert!(manifest.get("annotations").is_none());
}

#[test]
fn compressed_base_layers_keep_their_compression_unless_forced() {
    let test = "compressed_base_layers_keep_their_compression_unless_forced";
    if !have("zstd", test) {
        return;
    }
    // Layers stored gzip, as a pulled base image has them.
    let fx = Fixture::new(Compression::Gzip {
        level: 6,
        threads: 1,
    });
    let zstd = ArchiveOptions {
        compression: Compression::Zstd {
            level: 3,
            threads: 0,
        },
        ..named(&["app:forced"])
    };
    let kept = export_image_for_output(&fx.store, &fx.image, &zstd).unwrap();
    assert_eq!(layer_digests(&kept), layer_digests(&fx.image));
    assert!(
        kept.manifest
            .layers
            .iter()
            .all(|l| l.media_type == OCI_GZIP)
    );

    let forced = ArchiveOptions {
        force_compression: true,
        ..zstd.clone()
    };
    let layout = fx.path("layout");
    let converted = write_oci_layout(&fx.store, &fx.image, &forced, &layout).unwrap();
    assert_eq!(converted.manifest.config, kept.manifest.config);
    for (layer, diff_id) in converted
        .manifest
        .layers
        .iter()
        .zip(&fx.image.config.rootfs.diff_ids)
    {
        assert_eq!(layer.media_type, OCI_ZSTD);
        let blob = layout.join("blobs/sha256").join(layer.digest.hex());
        assert_eq!(zstd_diff_id(&blob), *diff_id);
    }

    // Forced to uncompressed: the layer blobs are the diff_ids.
    let plain = ArchiveOptions {
        compression: Compression::None,
        force_compression: true,
        ..ArchiveOptions::default()
    };
    let plain = export_image_for_output(&fx.store, &fx.image, &plain).unwrap();
    assert_eq!(layer_digests(&plain), fx.image.config.rootfs.diff_ids);
    assert_eq!(plain.id, fx.image.id);
}

#[test]
fn the_same_image_exported_twice_is_byte_identical() {
    // Two stores built from the same trees: nothing is shared but the inputs.
    let a = Fixture::new(Compression::None);
    let b = Fixture::new(Compression::None);
    assert_eq!(a.image.manifest_descriptor, b.image.manifest_descriptor);
    let options = ArchiveOptions {
        annotations: [("org.example".to_owned(), "yes".to_owned())].into(),
        ..named(&["kiln-test/app:v1", "localhost:5000/other:2"])
    };
    let docker_options = ArchiveOptions {
        annotations: Default::default(),
        ..options.clone()
    };
    for (fx, name) in [(&a, "a"), (&b, "b")] {
        write_to_file(&fx.path("oci.tar"), |out| {
            write_oci_archive(&fx.store, &fx.image, &options, out)
        })
        .unwrap();
        write_to_file(&fx.path("docker.tar"), |out| {
            kiln_exporter::archive::write_docker_archive(&fx.store, &fx.image, &docker_options, out)
        })
        .unwrap();
        write_to_file(&fx.path("rootfs.tar"), |out| {
            kiln_exporter::archive::write_rootfs_tar(&fx.store, &fx.image, out)
        })
        .unwrap();
        eprintln!("exported from store {name}");
    }
    // And once more from the first store, where the compressed layers are memoised.
    write_to_file(&a.path("oci-again.tar"), |out| {
        write_oci_archive(&a.store, &a.image, &options, out)
    })
    .unwrap();
    for file in ["oci.tar", "docker.tar", "rootfs.tar"] {
        let left = std::fs::read(a.path(file)).unwrap();
        let right = std::fs::read(b.path(file)).unwrap();
        assert!(left == right, "{file} differs between two exports");
    }
    assert!(
        std::fs::read(a.path("oci.tar")).unwrap()
            == std::fs::read(a.path("oci-again.tar")).unwrap()
    );
    // Fixed headers: mtime 0, root, no user names.
    let mut archive = tar::Archive::new(std::fs::File::open(a.path("oci.tar")).unwrap());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        assert_eq!(header.username().unwrap(), Some(""));
    }
}
