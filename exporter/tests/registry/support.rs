//! Harness for the registry tests: a real `docker-registry` on 127.0.0.1 (optionally
//! with TLS and htpasswd), test images, an OCI layout writer, skopeo, a flaky proxy.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kiln_exporter::registry::{
    BlobSource, Digest, OCI_MANIFEST, PushImage, RegistryConfig, RetryPolicy,
};
pub use kiln_testkit::registry::*;

/// A test config: fast retries, nothing from the environment.
pub fn config() -> RegistryConfig {
    RegistryConfig {
        retry: RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        },
        ..RegistryConfig::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so layers do not compress to nothing.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An uncompressed layer tar holding one file of `size` noise bytes.
pub fn layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let data = noise(seed, size);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, format!("file-{seed}.bin"), data.as_slice())
        .unwrap();
    builder.into_inner().unwrap()
}

/// A generated single-platform image, its layers also written to files.
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub layer_files: Vec<PathBuf>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    layer_media_type: String,
    config_media_type: String,
}

/// Media types for OCI or Docker schema2 images.
pub struct Flavor {
    pub manifest: &'static str,
    pub config: &'static str,
    pub layer: &'static str,
}

pub const OCI: Flavor = Flavor {
    manifest: OCI_MANIFEST,
    config: "application/vnd.oci.image.config.v1+json",
    layer: "application/vnd.oci.image.layer.v1.tar",
};

pub const DOCKER: Flavor = Flavor {
    manifest: "application/vnd.docker.distribution.manifest.v2+json",
    config: "application/vnd.docker.container.image.v1+json",
    layer: "application/vnd.docker.image.rootfs.diff.tar",
};

impl TestImage {
    pub fn new(
        dir: &Path,
        seed: u64,
        layer_sizes: &[usize],
        arch: &str,
        flavor: &Flavor,
    ) -> TestImage {
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| layer_tar(seed * 100 + i as u64, *size))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Env": [format!("SEED={seed}")] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let layer_files = layers
            .iter()
            .map(|l| {
                let path = dir.join(Digest::of(l).hex());
                std::fs::write(&path, l).unwrap();
                path
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": flavor.manifest,
            "config": { "mediaType": flavor.config, "digest": Digest::of(&config).to_string(), "size": config.len() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": flavor.layer, "digest": Digest::of(l).to_string(), "size": l.len(),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        TestImage {
            config,
            layers,
            layer_files,
            manifest,
            manifest_media_type: flavor.manifest.to_owned(),
            layer_media_type: flavor.layer.to_owned(),
            config_media_type: flavor.config.to_owned(),
        }
    }

    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|l| Digest::of(l).to_string())
            .collect()
    }

    /// The push input: config from memory, layers streamed from their files.
    pub fn push_image(&self) -> PushImage {
        let mut blobs = vec![BlobSource::from_bytes(
            &self.config_media_type,
            self.config.clone(),
        )];
        for (layer, path) in self.layers.iter().zip(&self.layer_files) {
            blobs.push(BlobSource::from_file(
                &self.layer_media_type,
                Digest::of(layer),
                layer.len() as u64,
                path.clone(),
            ));
        }
        PushImage {
            manifest: self.manifest.clone(),
            manifest_media_type: self.manifest_media_type.clone(),
            blobs,
        }
    }

    /// Writes the image as an OCI layout at `dir`, tagged `tag`.
    pub fn write_oci_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for blob in self.layers.iter().chain([&self.config, &self.manifest]) {
            std::fs::write(blobs.join(Digest::of(blob).hex()), blob).unwrap();
        }
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": self.manifest_media_type,
                "digest": self.manifest_digest().to_string(),
                "size": self.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// Runs skopeo; panics with its stderr on failure; returns stdout.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `skopeo inspect` of a plain-HTTP or untrusted-TLS registry image, parsed.
pub fn skopeo_inspect(image: &str, creds: Option<&str>) -> serde_json::Value {
    let target = format!("docker://{image}");
    let mut args = vec!["inspect", "--tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--creds", creds]);
    }
    args.push(&target);
    serde_json::from_str(&skopeo(&args)).unwrap()
}

/// Which way a [`FlakyProxy`] counts bytes before it cuts a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes sent towards the registry (uploads).
    Upload,
    /// Bytes coming back from the registry (downloads).
    Download,
}

/// A TCP proxy on 127.0.0.1 that cuts connections mid-transfer: the first `drops`
/// connections that carry more than `after` bytes in `direction` are shut down.
pub struct FlakyProxy {
    pub port: u16,
    drops_left: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Copies `from` to `to`; when `budget` is given, cuts both after `after` bytes if a
/// drop is left. Both sockets are shut down at the end so the other pump ends too.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    budget: Option<(u64, Arc<AtomicUsize>, Arc<AtomicUsize>)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Some((after, left, dropped)) = &budget
            && sent > *after
            && left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1))
                .is_ok()
        {
            dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl FlakyProxy {
    pub fn start(upstream: u16, direction: Direction, drops: usize, after: u64) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let drops_left = Arc::new(AtomicUsize::new(drops));
        let dropped = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (dl, dd, st) = (drops_left.clone(), dropped.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let budget = Some((after, dl.clone(), dd.clone()));
                let (up_budget, down_budget) = match direction {
                    Direction::Upload => (budget, None),
                    Direction::Download => (None, budget),
                };
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client2, server2, up_budget));
                std::thread::spawn(move || pump(server, client, down_budget));
            }
        });
        FlakyProxy {
            port,
            drops_left,
            dropped,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections cut so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Stops cutting connections.
    pub fn heal(&self) {
        self.drops_left.store(0, Ordering::SeqCst);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
