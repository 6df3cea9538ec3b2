//! Push a generated image, check it with skopeo, push again, pull it back, mount it.

use kiln_exporter::registry::{BlobOutcome, Digest, ImageRef, Platform, Registry, RegistryConfig};

use crate::support::{
    OCI, RegistryServer, ServerOptions, TestImage, config, skopeo, skopeo_inspect, tools_present,
};

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_inspect_repush_pull_and_mount() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 1, &[300_000, 5_000_000], "amd64", &OCI);
    let registry = Registry::new(config()).unwrap();
    let host = server.host();
    let targets = [
        ImageRef::parse(&format!("{host}/kiln/app:1")).unwrap(),
        ImageRef::parse(&format!("{host}/kiln/app:latest")).unwrap(),
    ];

    // First push: everything is uploaded, both tags point at the manifest.
    let report = registry
        .push_image(&targets, &image.push_image())
        .await
        .unwrap();
    assert_eq!(report.manifest_digest, image.manifest_digest());
    assert_eq!(report.uploaded(), 3, "{report:#?}");
    assert_eq!(
        report.references,
        vec![targets[0].to_string(), targets[1].to_string()]
    );

    // skopeo agrees on the layers and the manifest digest, for both tags.
    for tag in ["1", "latest"] {
        let inspect = skopeo_inspect(&format!("{host}/kiln/app:{tag}"), None);
        let layers: Vec<String> = inspect["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(layers, image.layer_digests());
        assert_eq!(
            inspect["Digest"].as_str().unwrap(),
            image.manifest_digest().as_str()
        );
        assert_eq!(inspect["Architecture"].as_str().unwrap(), "amd64");
    }
    // ... and can copy it out.
    let copy = work.path().join("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/kiln/app:1"),
        &format!("oci:{}:x", copy.display()),
    ]);
    let copied = skopeo(&["inspect", &format!("oci:{}:x", copy.display())]);
    assert!(copied.contains("\"amd64\""), "{copied}");

    // Second push: nothing to upload.
    let again = registry
        .push_image(&targets[..1], &image.push_image())
        .await
        .unwrap();
    assert_eq!(again.uploaded(), 0, "{again:#?}");
    assert!(
        again
            .blobs
            .iter()
            .all(|b| b.outcome == BlobOutcome::Skipped)
    );

    // Pull back: same manifest, config and layer bytes.
    let resolved = registry.resolve(&targets[0], &amd64()).await.unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest_digest());
    assert_eq!(resolved.manifest_bytes, image.manifest);
    assert_eq!(resolved.config, image.config);
    assert_eq!(resolved.index_digest, None);
    let layers = resolved.layers();
    assert_eq!(layers.len(), 2);
    for ((digest, size, _), want) in layers.iter().zip(&image.layers) {
        let mut got = Vec::new();
        let n = registry
            .pull_blob(&targets[0], digest, &mut got)
            .await
            .unwrap();
        assert_eq!(n, *size);
        assert!(got == *want, "layer {digest} differs");
    }

    // A pull pinned by digest resolves to the same image.
    let pinned = targets[0].with_digest(image.manifest_digest());
    assert_eq!(
        registry
            .resolve(&pinned, &amd64())
            .await
            .unwrap()
            .manifest_digest,
        image.manifest_digest()
    );

    // Another repository on the same registry: blobs are mounted, not uploaded.
    let other = ImageRef::parse(&format!("{host}/other/app:1")).unwrap();
    let mut push = image.push_image();
    for blob in &mut push.blobs {
        blob.mount_from = vec!["kiln/app".to_owned()];
    }
    let mounted = registry
        .push_image(std::slice::from_ref(&other), &push)
        .await
        .unwrap();
    assert_eq!(mounted.uploaded(), 0, "{mounted:#?}");
    assert!(
        mounted.blobs.iter().all(|b| b.outcome
            == BlobOutcome::Mounted {
                from: "kiln/app".into()
            }),
        "{mounted:#?}"
    );
    skopeo_inspect(&format!("{host}/other/app:1"), None);

    // Large blobs go up chunked (a PATCH per 4 MiB); the result is the same image.
    let chunked = Registry::new(RegistryConfig {
        chunked_upload_above: 1 << 20,
        ..config()
    })
    .unwrap();
    let target = ImageRef::parse(&format!("{host}/chunked/app:1")).unwrap();
    let report = chunked
        .push_image(std::slice::from_ref(&target), &image.push_image())
        .await
        .unwrap();
    assert_eq!(report.uploaded(), 3, "{report:#?}");
    let inspect = skopeo_inspect(&target.to_string(), None);
    assert_eq!(
        inspect["Digest"].as_str().unwrap(),
        image.manifest_digest().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_a_missing_tag_or_a_corrupt_blob_fails_clearly() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 2, &[10_000], "amd64", &OCI);
    let registry = Registry::new(config()).unwrap();
    let target = ImageRef::parse(&format!("{}/kiln/small:1", server.host())).unwrap();
    registry
        .push_image(std::slice::from_ref(&target), &image.push_image())
        .await
        .unwrap();

    let missing = target.with_tag("nope").unwrap();
    let err = registry.resolve(&missing, &amd64()).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{missing}: manifest unknown"));

    // Asking for a blob by a digest it does not have fails, and writes nothing.
    let absent = Digest::of(b"not pushed");
    let mut got = Vec::new();
    let err = registry
        .pull_blob(&target, &absent, &mut got)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(absent.as_str()), "{err}");
    assert!(got.is_empty());

    // A blob corrupted on the registry's disk is caught by the sha256 check.
    let layer = Digest::of(&image.layers[0]);
    let data = server
        .dir
        .path()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&layer.hex()[..2])
        .join(layer.hex())
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let mut got = Vec::new();
    let err = registry
        .pull_blob(&target, &layer, &mut got)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("content digest mismatch"), "{err}");
}
