//! Push: blobs the registry lacks, in parallel, then the manifest under every tag.
//!
//! Per blob: HEAD (present -> skipped); else a cross-repository mount from a repository
//! the caller or an earlier target of the same push named (201 -> mounted; a 202 — the
//! registry starting an upload instead — or any error falls back); else an upload
//! streamed from the blob's reader through oci-client's `push_blob_stream`: one request
//! (POST, PUT ?digest= with the whole body) up to `chunked_upload_above`, a chunked one
//! (POST, a PATCH per 4 MiB, PUT ?digest=) above it or after a 413. Each step is retried on 5xx, 429 and broken connections; an
//! upload restarts from byte 0 with a freshly opened reader.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::errors::OciDistributionError;

use super::client::{Endpoint, Registry};
use super::digest::Digest;
use super::error::{Error, Result};
use super::reference::ImageRef;
use super::retry::{Activity, Failure, Op, classify, retry};

/// Opens a fresh reader over a blob's bytes; called again for each retry.
pub type BlobOpener = Arc<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// Bytes per upload request (oci-client's PATCH chunk size): read this much at a time so
/// every PATCH is full.
const CHUNK: usize = 4 * 1024 * 1024;

/// One blob to push: its descriptor and a way to read it. Never holds the bytes itself
/// (except what [`BlobSource::from_bytes`] was given).
#[derive(Clone)]
pub struct BlobSource {
    /// The blob's digest (checked by the registry on upload).
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The descriptor's media type (for reports; the registry stores bytes only).
    pub media_type: String,
    /// Repositories on the target registry that may already hold the blob (e.g. the
    /// base image's), tried for a cross-repository mount before uploading.
    pub mount_from: Vec<String>,
    /// Opens the bytes.
    pub open: BlobOpener,
}

impl std::fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobSource")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .field("mount_from", &self.mount_from)
            .finish_non_exhaustive()
    }
}

impl BlobSource {
    /// A small in-memory blob (a config); its digest and size are computed.
    pub fn from_bytes(media_type: &str, bytes: Vec<u8>) -> BlobSource {
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        let bytes: Arc<[u8]> = bytes.into();
        BlobSource {
            digest,
            size,
            media_type: media_type.to_owned(),
            mount_from: Vec::new(),
            open: Arc::new(move || {
                Ok(Box::new(std::io::Cursor::new(Arc::clone(&bytes))) as Box<dyn Read + Send>)
            }),
        }
    }

    /// A blob in a file (e.g. `blobs/sha256/<hex>` of the store), with its known digest.
    pub fn from_file(
        media_type: &str,
        digest: Digest,
        size: u64,
        path: std::path::PathBuf,
    ) -> BlobSource {
        BlobSource {
            digest,
            size,
            media_type: media_type.to_owned(),
            mount_from: Vec::new(),
            open: Arc::new(move || {
                Ok(Box::new(std::fs::File::open(&path)?) as Box<dyn Read + Send>)
            }),
        }
    }
}

/// An image (or an index) to push: the manifest as it is to be stored, and the blobs it
/// references (config and layers; none for an index, whose manifests are pushed first).
#[derive(Clone, Debug)]
pub struct PushImage {
    /// The manifest bytes, exactly as their digest is to be.
    pub manifest: Vec<u8>,
    /// Its media type (`application/vnd.oci.image.manifest.v1+json`, an index, or the
    /// Docker schema2 types), sent as `Content-Type`.
    pub manifest_media_type: String,
    /// The blobs, config first by convention.
    pub blobs: Vec<BlobSource>,
}

/// What happened to one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobOutcome {
    /// The registry had it already (HEAD 200).
    Skipped,
    /// Mounted from another repository of the same registry.
    Mounted {
        /// The repository it came from.
        from: String,
    },
    /// Uploaded.
    Uploaded,
}

/// One line of a push report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobReport {
    /// The repository pushed to (`host/repo`).
    pub repository: String,
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// What was done.
    pub outcome: BlobOutcome,
    /// Tries of the deciding step (1 = no retry).
    pub attempts: u32,
}

/// The result of [`Registry::push_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// `sha256` of the manifest bytes.
    pub manifest_digest: Digest,
    /// Every reference the manifest was stored under, as pushed.
    pub references: Vec<String>,
    /// Per repository and blob, in the order of [`PushImage::blobs`].
    pub blobs: Vec<BlobReport>,
}

impl PushReport {
    /// How many blobs were uploaded (not skipped or mounted).
    pub fn uploaded(&self) -> usize {
        self.blobs
            .iter()
            .filter(|b| b.outcome == BlobOutcome::Uploaded)
            .count()
    }
}

impl Registry {
    /// Pushes `image` under every reference in `targets` (several tags, possibly several
    /// repositories; a reference with a digest pushes by digest). Blobs go up once per
    /// repository; a later repository on the same registry mounts them from the first.
    pub async fn push_image(&self, targets: &[ImageRef], image: &PushImage) -> Result<PushReport> {
        let manifest_digest = Digest::of(&image.manifest);
        let mut report = PushReport {
            manifest_digest: manifest_digest.clone(),
            references: Vec::new(),
            blobs: Vec::new(),
        };
        // Group targets by (host, repository), keeping the order given.
        let mut repos: Vec<(String, String, Vec<&ImageRef>)> = Vec::new();
        for target in targets {
            let key = (target.api_host().to_owned(), target.repository().to_owned());
            match repos
                .iter_mut()
                .find(|(h, r, _)| (h, r) == (&key.0, &key.1))
            {
                Some(entry) => entry.2.push(target),
                None => repos.push((key.0, key.1, vec![target])),
            }
        }
        // Repositories already holding the blobs, per host: mount sources for the next.
        let mut done: HashMap<String, Vec<String>> = HashMap::new();
        for (host, repository, refs) in &repos {
            let endpoint = self.endpoint(host).await?;
            let base = refs[0];
            let earlier = done.get(host).cloned().unwrap_or_default();
            let limit = self.config().max_parallel_uploads.max(1);
            // The futures are made first, then streamed: a stream that maps `&BlobSource`
            // through a closure is not `Send` for every lifetime (rustc's higher-ranked
            // auto-trait limitation), which would make every push future `!Send`.
            let pushes: Vec<_> = image
                .blobs
                .iter()
                .map(|blob| self.push_blob(&endpoint, base, blob, &earlier))
                .collect();
            let results: Vec<BlobReport> = futures_util::stream::iter(pushes)
                .buffered(limit)
                .try_collect()
                .await?;
            report.blobs.extend(results);
            for target in refs {
                self.push_manifest(&endpoint, target, image, &manifest_digest)
                    .await?;
                report.references.push(target.to_string());
            }
            done.entry(host.clone())
                .or_default()
                .push(repository.clone());
        }
        Ok(report)
    }

    async fn push_blob(
        &self,
        endpoint: &Endpoint,
        target: &ImageRef,
        blob: &BlobSource,
        earlier: &[String],
    ) -> Result<BlobReport> {
        let config = self.config();
        let reference = target.to_oci();
        let digest = blob.digest.as_str();
        let report = |outcome, attempts| BlobReport {
            repository: format!("{}/{}", target.registry(), target.repository()),
            digest: blob.digest.clone(),
            size: blob.size,
            media_type: blob.media_type.clone(),
            outcome,
            attempts,
        };
        let what = format!(
            "blob {digest} to {}/{}",
            target.registry(),
            target.repository()
        );
        let op = Op {
            registry: target.registry(),
            repository: target.repository(),
            what: &what,
        };
        let (exists, attempts) = retry(config, &format!("checking {what}"), |_| async {
            endpoint
                .oci
                .blob_exists(&reference, digest)
                .await
                .map_err(|e| classify(&op, e))
        })
        .await?;
        if exists {
            return Ok(report(BlobOutcome::Skipped, attempts));
        }
        let sources = blob
            .mount_from
            .iter()
            .chain(earlier)
            .filter(|r| r.as_str() != target.repository());
        for from in sources {
            let Ok(source) = ImageRef::from_parts(target.registry(), from, Some("latest"), None)
            else {
                continue;
            };
            // Any failure (202 = "upload instead", 404, a broken mount) falls back to upload.
            if endpoint
                .oci
                .mount_blob(&reference, &source.to_oci(), digest)
                .await
                .is_ok()
            {
                return Ok(report(BlobOutcome::Mounted { from: from.clone() }, 1));
            }
        }
        let chunked =
            std::sync::atomic::AtomicBool::new(blob.size > self.config().chunked_upload_above);
        let (chunked, reference, op) = (&chunked, &reference, &op);
        let (_, attempts) = retry(
            config,
            &format!("upload of {what}"),
            |activity| async move {
                let stream = reader_stream(blob, activity).map_err(|source| {
                    Failure::Fatal(Error::BlobSource {
                        digest: digest.to_owned(),
                        source,
                    })
                })?;
                let client = if chunked.load(Ordering::Relaxed) {
                    &endpoint.oci
                } else {
                    &endpoint.oci_single
                };
                client
                    .push_blob_stream(reference, stream, digest, Some(blob.size))
                    .await
                    .map_err(|e| match e {
                        // A local read error is not the registry's fault: do not retry it.
                        OciDistributionError::GenericError(Some(m))
                            if m.starts_with(LOCAL_READ) =>
                        {
                            Failure::Fatal(Error::BlobSource {
                                digest: digest.to_owned(),
                                source: std::io::Error::other(m[LOCAL_READ.len()..].to_owned()),
                            })
                        }
                        // Request body too large for the registry (or a proxy): go chunked.
                        OciDistributionError::ServerError { code: 413, .. }
                            if !chunked.swap(true, Ordering::Relaxed) =>
                        {
                            Failure::Transient(
                                "HTTP 413: body too large; switching to a chunked upload"
                                    .to_owned(),
                            )
                        }
                        other => classify(op, other),
                    })
            },
        )
        .await?;
        Ok(report(BlobOutcome::Uploaded, attempts))
    }

    async fn push_manifest(
        &self,
        endpoint: &Endpoint,
        target: &ImageRef,
        image: &PushImage,
        digest: &Digest,
    ) -> Result<()> {
        if let Some(pinned) = target.digest()
            && pinned != digest
        {
            return Err(Error::DigestMismatch {
                digest: pinned.to_string(),
                actual: digest.to_string(),
            });
        }
        let content_type = reqwest::header::HeaderValue::from_str(&image.manifest_media_type)
            .map_err(|_| Error::InvalidManifest {
                reference: target.to_string(),
                reason: format!(
                    "media type {:?} is not a header value",
                    image.manifest_media_type
                ),
            })?;
        let what = format!("manifest {digest} to {target}");
        let op = Op {
            registry: target.registry(),
            repository: target.repository(),
            what: &what,
        };
        let reference = target.to_oci();
        let body = bytes::Bytes::from(image.manifest.clone());
        retry(self.config(), &format!("upload of {what}"), |_| async {
            endpoint
                .oci
                .push_manifest_raw(&reference, body.clone(), content_type.clone())
                .await
                .map_err(|e| classify(&op, e))
        })
        .await?;
        Ok(())
    }
}

/// Marks read errors of local content inside the oci-client error they travel in.
const LOCAL_READ: &str = "kiln: reading local blob: ";

/// Streams a blob in `CHUNK`-sized pieces read on a blocking thread, two in flight.
fn reader_stream(
    blob: &BlobSource,
    activity: Activity,
) -> std::io::Result<
    impl futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static,
> {
    let mut reader = (blob.open)()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, OciDistributionError>>(2);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            let result = loop {
                if filled == CHUNK {
                    break Ok(filled);
                }
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(filled),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    // The receiver is gone when the upload failed: stop reading.
                    if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() || n < CHUNK {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(OciDistributionError::GenericError(Some(
                        format!("{LOCAL_READ}{e}"),
                    ))));
                    return;
                }
            }
        }
    });
    // Each piece the client takes means the one before it went out: progress.
    Ok(futures_util::stream::unfold(rx, move |mut rx| {
        activity.touch();
        async move { rx.recv().await.map(|item| (item, rx)) }
    }))
}
