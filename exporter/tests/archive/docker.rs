//! `type=docker`: `docker load`'s tar, read back by skopeo's docker-archive transport.

use kiln_exporter::archive::{ArchiveOptions, write_docker_archive, write_to_file};
use kiln_snapshotter::layer_out::Compression;

use crate::support::{
    Fixture, describe, expected_tree, have, run, skopeo_inspect, tar_entries, umoci_unpack,
};

#[test]
fn docker_archive_is_read_by_skopeo_and_copies_to_oci() {
    let test = "docker_archive_is_read_by_skopeo_and_copies_to_oci";
    if !have("skopeo", test) || !have("umoci", test) {
        return;
    }
    let fx = Fixture::new(Compression::None);
    let options = ArchiveOptions {
        names: vec!["kiln-test/app:v1".into(), "localhost:5000/other".into()],
        ..ArchiveOptions::default()
    };
    let dest = fx.path("docker.tar");
    let exported = write_to_file(&dest, |out| {
        write_docker_archive(&fx.store, &fx.image, &options, out)
    })
    .unwrap();
    assert_eq!(exported.id, fx.image.id);
    assert_eq!(
        exported.manifest_descriptor.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );

    // manifest.json as docker load reads it.
    let entries = tar_entries(&dest);
    let manifest: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let image = &manifest[0];
    assert_eq!(
        image["RepoTags"],
        serde_json::json!(["kiln-test/app:v1", "localhost:5000/other:latest"])
    );
    let config_path = image["Config"].as_str().unwrap();
    assert_eq!(config_path, format!("blobs/sha256/{}", fx.image.id.hex()));
    assert!(entries.contains_key(config_path));
    for layer in image["Layers"].as_array().unwrap() {
        assert!(entries.contains_key(layer.as_str().unwrap()), "{layer}");
    }
    for name in ["index.json", "oci-layout"] {
        assert!(entries.contains_key(name), "{name}");
    }
    let manifest_path = format!("blobs/sha256/{}", exported.manifest_descriptor.digest.hex());
    let stored: serde_json::Value = serde_json::from_slice(&entries[&manifest_path]).unwrap();
    for layer in stored["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }

    // skopeo serves docker-archive layers uncompressed: it lists the diff_ids.
    let inspect = skopeo_inspect(&format!("docker-archive:{}", dest.display()), false);
    assert_eq!(
        inspect["Layers"],
        serde_json::json!(fx.image.config.rootfs.diff_ids),
        "{inspect:#}"
    );
    let raw = skopeo_inspect(&format!("docker-archive:{}", dest.display()), true);
    assert_eq!(
        raw["config"]["digest"],
        fx.image.id.as_str(),
        "the image id survives: {raw:#}"
    );

    let copy = fx.path("copy");
    run(
        "skopeo",
        &[
            "copy",
            "--insecure-policy",
            &format!("docker-archive:{}", dest.display()),
            &format!("oci:{}:x", copy.display()),
        ],
    );
    let rootfs = umoci_unpack(&copy, "x", &fx.path("bundle"));
    assert_eq!(describe(&rootfs), expected_tree());
}

#[test]
fn docker_archive_refuses_annotations_it_cannot_carry() {
    let fx = Fixture::new(Compression::None);
    let options = ArchiveOptions {
        annotations: [("org.example".to_owned(), "x".to_owned())].into(),
        ..ArchiveOptions::default()
    };
    let err = write_docker_archive(&fx.store, &fx.image, &options, std::io::sink())
        .expect_err("annotations need OCI media types");
    assert!(err.to_string().contains("oci-mediatypes=true"), "{err}");
}
