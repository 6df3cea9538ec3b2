//! Push and pull of a 200 MB single-layer image to a local docker-registry: kiln vs
//! `skopeo copy` of the same image. Run: `cargo bench -p kiln-exporter --bench push`.
//! Size in MB with `KILN_BENCH_MB` (default 200).
//!
//! The layer is a tar of pseudo-random bytes wrapped as gzip with stored blocks (`pigz
//! -0`), so that skopeo, which gzips uncompressed layers on their way to a registry,
//! sends the same bytes as kiln: the figures compare transfer, not compression.

#![allow(unreachable_pub, dead_code, clippy::print_stdout)]

#[path = "../tests/registry/support.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use kiln_exporter::registry::{
    BlobSource, Digest, ImageRef, OCI_MANIFEST, Platform, PushImage, Registry,
};
use support::{RegistryServer, ServerOptions, config, layer_tar};

const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

struct Image {
    push: PushImage,
    layer_digest: Digest,
    layer_size: u64,
}

fn build_image(dir: &Path, megabytes: usize) -> Image {
    let tar = layer_tar(42, megabytes * 1_000_000);
    let diff_id = Digest::of(&tar);
    let tar_path = dir.join("layer.tar");
    std::fs::write(&tar_path, &tar).unwrap();
    drop(tar);
    let gz_path = dir.join("layer.tar.gz");
    let status = Command::new("pigz")
        .args(["-0", "-n", "-c"])
        .arg(&tar_path)
        .stdout(std::fs::File::create(&gz_path).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "pigz failed");
    let gz = std::fs::read(&gz_path).unwrap();
    let layer_digest = Digest::of(&gz);
    let layer_size = gz.len() as u64;
    drop(gz);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": CONFIG, "digest": Digest::of(&config).to_string(), "size": config.len() },
        "layers": [{ "mediaType": LAYER_GZIP, "digest": layer_digest.to_string(), "size": layer_size }],
    }))
    .unwrap();
    // The same image as an OCI layout, for skopeo.
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::hard_link(&gz_path, blobs.join(layer_digest.hex())).unwrap();
    std::fs::write(blobs.join(Digest::of(&config).hex()), &config).unwrap();
    std::fs::write(blobs.join(Digest::of(&manifest).hex()), &manifest).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": Digest::of(&manifest).to_string(), "size": manifest.len(),
        "annotations": { "org.opencontainers.image.ref.name": "bench" } }] });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let push = PushImage {
        manifest,
        manifest_media_type: OCI_MANIFEST.to_owned(),
        blobs: vec![
            BlobSource::from_bytes(CONFIG, config),
            BlobSource::from_file(LAYER_GZIP, layer_digest.clone(), layer_size, gz_path),
        ],
    };
    Image {
        push,
        layer_digest,
        layer_size,
    }
}

fn report(what: &str, bytes: u64, seconds: f64) {
    println!(
        "{what:<48} {seconds:>7.2} s  {:>8.1} MB/s",
        bytes as f64 / 1e6 / seconds
    );
}

fn skopeo_copy(src: &str, dest: &str) -> f64 {
    let start = Instant::now();
    let status = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            src,
            dest,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy {src} {dest} failed");
    start.elapsed().as_secs_f64()
}

fn main() {
    if !support::tools_present() || !Path::new("/usr/bin/pigz").exists() {
        println!("skipping push bench: docker-registry, skopeo, openssl or pigz missing");
        return;
    }
    let megabytes: usize = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let work = tempfile::tempdir().unwrap();
    let image = build_image(work.path(), megabytes);
    let bytes = image.layer_size;
    println!(
        "image: 1 layer of {:.1} MB ({})",
        bytes as f64 / 1e6,
        image.layer_digest
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // kiln and skopeo each get a fresh registry so neither mounts the other's blobs.
    let kiln_server = RegistryServer::start(ServerOptions::default());
    let skopeo_server = RegistryServer::start(ServerOptions::default());
    let registry = Registry::new(config()).unwrap();
    let target = ImageRef::parse(&format!("{}/bench/app:1", kiln_server.host())).unwrap();

    runtime.block_on(async {
        let start = Instant::now();
        let cold = registry
            .push_image(std::slice::from_ref(&target), &image.push)
            .await
            .unwrap();
        report(
            "kiln push, cold (2 blobs uploaded)",
            bytes,
            start.elapsed().as_secs_f64(),
        );
        assert_eq!(cold.uploaded(), 2);
        let start = Instant::now();
        let warm = registry
            .push_image(std::slice::from_ref(&target), &image.push)
            .await
            .unwrap();
        let warm_s = start.elapsed().as_secs_f64();
        assert_eq!(warm.uploaded(), 0);
        println!(
            "{:<48} {warm_s:>7.3} s  (nothing uploaded)",
            "kiln push, warm"
        );
    });

    let layout = format!("oci:{}:bench", work.path().join("layout").display());
    let dest = format!("docker://{}/bench/app:1", skopeo_server.host());
    report(
        "skopeo copy oci: -> registry, cold",
        bytes,
        skopeo_copy(&layout, &dest),
    );
    let warm = skopeo_copy(&layout, &dest);
    println!(
        "{:<48} {warm:>7.3} s  (nothing uploaded)",
        "skopeo copy oci: -> registry, warm"
    );

    runtime.block_on(async {
        let pulled = work.path().join("pulled.blob");
        let start = Instant::now();
        let resolved = registry
            .resolve(&target, &Platform::parse("linux/amd64").unwrap())
            .await
            .unwrap();
        let (digest, _, _) = resolved.layers().remove(0);
        let mut file = tokio::fs::File::create(&pulled).await.unwrap();
        let n = registry
            .pull_blob(&target, &digest, &mut file)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut file).await.unwrap();
        report(
            "kiln pull (resolve + verified layer to file)",
            n,
            start.elapsed().as_secs_f64(),
        );
    });
    let out = work.path().join("skopeo-pull");
    let src = format!("docker://{}/bench/app:1", kiln_server.host());
    report(
        "skopeo copy registry -> oci:",
        bytes,
        skopeo_copy(&src, &format!("oci:{}:x", out.display())),
    );
}
