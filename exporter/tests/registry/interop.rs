//! Images kiln did not push: from `skopeo copy`, multi-platform indexes, Docker schema2,
//! Docker Hub names through a mirror.

use kiln_exporter::registry::{
    DOCKER_MANIFEST, Digest, ImageRef, OCI_INDEX, Platform, PushImage, Registry, RegistryConfig,
};

use crate::support::{
    DOCKER, OCI, RegistryServer, ServerOptions, TestImage, config, skopeo, tools_present,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_copied_in_by_skopeo_is_resolved_and_pulled() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 3, &[20_000, 70_000], "amd64", &OCI);
    let layout = work.path().join("layout");
    image.write_oci_layout(&layout, "v1");
    let target = format!("{}/from/skopeo:v1", server.host());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{target}"),
    ]);

    let registry = Registry::new(config()).unwrap();
    let reference = ImageRef::parse(&target).unwrap();
    let resolved = registry
        .resolve(&reference, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.config, image.config);
    assert_eq!(resolved.config_digest, Digest::of(&image.config));
    // skopeo gzips uncompressed layers on the way to a registry: the pulled blobs are
    // verified against the manifest by pull_blob, and must unpack to the tars written.
    let layers = resolved.layers();
    assert_eq!(layers.len(), image.layers.len());
    for ((digest, size, media_type), want) in layers.iter().zip(&image.layers) {
        let mut got = Vec::new();
        registry
            .pull_blob(&reference, digest, &mut got)
            .await
            .unwrap();
        assert_eq!(got.len() as u64, *size);
        let unpacked = if media_type.ends_with("gzip") {
            gunzip(&got)
        } else {
            got
        };
        assert!(
            unpacked == *want,
            "layer {digest} ({media_type}) does not unpack to the tar written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_index_resolves_to_the_host_platform() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let host_platform = Platform::host();
    let other_arch = if host_platform.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let native = TestImage::new(work.path(), 4, &[1000], &host_platform.architecture, &OCI);
    let foreign = TestImage::new(work.path(), 5, &[2000], other_arch, &OCI);
    let registry = Registry::new(config()).unwrap();
    let repo = ImageRef::parse(&format!("{}/multi/app:1", server.host())).unwrap();
    // Children first, by digest; then the index under the tag.
    for image in [&native, &foreign] {
        let by_digest = repo.with_digest(image.manifest_digest());
        registry
            .push_image(&[by_digest], &image.push_image())
            .await
            .unwrap();
    }
    let platform_json = |p: &Platform| {
        let mut v = serde_json::json!({ "os": p.os, "architecture": p.architecture });
        if let Some(variant) = &p.variant {
            v["variant"] = variant.clone().into();
        }
        v
    };
    let other_platform = Platform::parse(&format!("linux/{other_arch}")).unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": foreign.manifest_media_type, "digest": foreign.manifest_digest().to_string(), "size": foreign.manifest.len(), "platform": platform_json(&other_platform) },
            { "mediaType": native.manifest_media_type, "digest": native.manifest_digest().to_string(), "size": native.manifest.len(), "platform": platform_json(&host_platform) },
        ],
    }))
    .unwrap();
    let push = PushImage {
        manifest: index.clone(),
        manifest_media_type: OCI_INDEX.to_owned(),
        blobs: vec![],
    };
    registry
        .push_image(std::slice::from_ref(&repo), &push)
        .await
        .unwrap();

    let resolved = registry.resolve(&repo, &Platform::host()).await.unwrap();
    assert_eq!(resolved.index_digest, Some(Digest::of(&index)));
    assert_eq!(resolved.manifest_digest, native.manifest_digest());
    assert_eq!(resolved.config, native.config);
    let resolved = registry.resolve(&repo, &other_platform).await.unwrap();
    assert_eq!(resolved.manifest_digest, foreign.manifest_digest());
    let err = registry
        .resolve(&repo, &Platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no image for platform linux/s390x"),
        "{err}"
    );
    // skopeo picks the same child for this machine (its "Digest" is the index's).
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{repo}"),
    ]))
    .unwrap();
    assert_eq!(
        inspect["Digest"].as_str().unwrap(),
        Digest::of(&index).as_str()
    );
    assert_eq!(
        inspect["Layers"][0].as_str().unwrap(),
        native.layer_digests()[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_images_push_and_resolve() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 6, &[4096], "amd64", &DOCKER);
    let registry = Registry::new(config()).unwrap();
    let repo = ImageRef::parse(&format!("{}/docker/app:1", server.host())).unwrap();
    registry
        .push_image(std::slice::from_ref(&repo), &image.push_image())
        .await
        .unwrap();
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{repo}"),
    ]);
    assert_eq!(raw.as_bytes(), image.manifest.as_slice());
    let resolved = registry
        .resolve(&repo, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest_media_type, DOCKER_MANIFEST);
    assert_eq!(resolved.manifest_digest, image.manifest_digest());
}

/// `gzip -dc` (a checker on the host, not part of kiln).
fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_names_are_pulled_through_the_mirror() {
    if !tools_present() {
        return;
    }
    let mirror = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 11, &[3000], "amd64", &OCI);
    let registry = Registry::new(RegistryConfig {
        mirrors: vec![format!("http://{}", mirror.host())],
        ..config()
    })
    .unwrap();
    // Seed the mirror as a pull-through cache would hold it: library/busybox:latest.
    let seeded = ImageRef::parse(&format!("{}/library/busybox:latest", mirror.host())).unwrap();
    registry
        .push_image(&[seeded], &image.push_image())
        .await
        .unwrap();

    // `busybox` is docker.io/library/busybox:latest, served here by the mirror alone
    // (the machine has no route to Docker Hub).
    let busybox = ImageRef::parse("busybox").unwrap();
    let resolved = registry
        .resolve(&busybox, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.host, mirror.host());
    assert_eq!(resolved.reference, busybox);
    assert_eq!(resolved.manifest_digest, image.manifest_digest());
    let (digest, _, _) = resolved.layers().remove(0);
    let mut got = Vec::new();
    registry
        .pull_blob(&busybox, &digest, &mut got)
        .await
        .unwrap();
    assert!(got == image.layers[0]);
}
