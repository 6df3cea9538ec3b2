//! A registry reached through a proxy that cuts connections mid-upload.

use std::time::Duration;

use kiln_exporter::registry::{
    Digest, Error, ImageRef, Platform, Registry, RegistryConfig, RetryPolicy,
};

use crate::support::{
    Direction, FlakyProxy, OCI, RegistryServer, ServerOptions, TestImage, config, skopeo_inspect,
    tools_present,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_retried_after_a_dropped_connection() {
    retried_push(RegistryConfig::default().chunked_upload_above).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_push_is_retried_after_a_dropped_connection() {
    retried_push(1 << 20).await;
}

async fn retried_push(chunked_upload_above: u64) {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    // Cut the first connection that has sent 1 MiB: that is inside a layer's PATCH.
    let proxy = FlakyProxy::start(server.port, Direction::Upload, 1, 1 << 20);
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 8, &[6_000_000], "amd64", &OCI);
    let registry = Registry::new(RegistryConfig {
        chunked_upload_above,
        ..config()
    })
    .unwrap();
    let via_proxy = ImageRef::parse(&format!("127.0.0.1:{}/flaky/app:1", proxy.port)).unwrap();

    let report = registry
        .push_image(std::slice::from_ref(&via_proxy), &image.push_image())
        .await
        .unwrap();
    assert_eq!(proxy.dropped(), 1, "the proxy did not cut an upload");
    assert!(report.blobs.iter().any(|b| b.attempts > 1), "{report:#?}");
    // The image is complete in the registry itself.
    let inspect = skopeo_inspect(&format!("{}/flaky/app:1", server.host()), None);
    let layers: Vec<String> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers, image.layer_digests());
    let resolved = registry
        .resolve(&via_proxy, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest_digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_gives_up_with_a_clear_error_naming_the_blob() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let proxy = FlakyProxy::start(server.port, Direction::Upload, usize::MAX, 1 << 20);
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 9, &[3_000_000], "amd64", &OCI);
    let registry = Registry::new(RegistryConfig {
        retry: RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
        ..config()
    })
    .unwrap();
    let via_proxy = ImageRef::parse(&format!("127.0.0.1:{}/flaky/app:1", proxy.port)).unwrap();
    let err = registry
        .push_image(std::slice::from_ref(&via_proxy), &image.push_image())
        .await
        .unwrap_err();
    let layer = image.layer_digests().remove(0);
    let Error::RetriesExhausted { what, attempts, .. } = &err else {
        panic!("expected RetriesExhausted, got {err:?}");
    };
    assert_eq!(*attempts, 3);
    assert!(what.contains(&layer), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("giving up after 3 attempts; last error:"),
        "{text}"
    );
    proxy.heal();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_resumes_after_a_dropped_connection() {
    if !tools_present() {
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let work = tempfile::tempdir().unwrap();
    let image = TestImage::new(work.path(), 10, &[4_000_000], "amd64", &OCI);
    let registry = Registry::new(config()).unwrap();
    let direct = ImageRef::parse(&format!("{}/flaky/pull:1", server.host())).unwrap();
    registry
        .push_image(std::slice::from_ref(&direct), &image.push_image())
        .await
        .unwrap();
    // Cut the first reply longer than 1 MiB: the layer download.
    let proxy = FlakyProxy::start(server.port, Direction::Download, 1, 1 << 20);
    let via_proxy = ImageRef::parse(&format!("127.0.0.1:{}/flaky/pull:1", proxy.port)).unwrap();
    let layer = &image.layer_digests()[0];
    let mut got = Vec::new();
    let n = registry
        .pull_blob(&via_proxy, &Digest::parse(layer).unwrap(), &mut got)
        .await
        .unwrap();
    assert_eq!(n as usize, image.layers[0].len());
    assert!(got == image.layers[0]);
    assert_eq!(proxy.dropped(), 1);
}
