//! Pull: resolve a reference to one image manifest and its config, and stream blobs
//! with sha256 verification.
//!
//! `resolve` fetches the manifest (OCI or Docker schema2) by tag or digest; an index or
//! manifest list is narrowed to the requested platform, the best match winning (see
//! [`Platform`]). The config blob is small and comes back in memory. `pull_blob` streams
//! a blob into the caller's writer, hashing as it goes; after a broken connection it
//! resumes with a `Range` request (or skips what it already has when the registry
//! ignores ranges). A digest mismatch is an error: the caller must drop what was written
//! (it writes to a temporary blob that only a successful verify commits).

use futures_util::StreamExt as _;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use serde::Deserialize;
use sha2::Digest as _;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::client::{Endpoint, Registry};
use super::digest::Digest;
use super::error::{Error, Result};
use super::reference::ImageRef;
use super::retry::{Activity, Failure, Op, backoff, classify, retry, watched};
use kiln_image::platform::Platform;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

const ACCEPT: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// A config larger than this is not an image config (they are a few KiB).
const MAX_CONFIG: usize = 16 * 1024 * 1024;

/// One image, resolved for one platform.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The reference asked for.
    pub reference: ImageRef,
    /// The registry host it came from (a mirror's, for Docker Hub images pulled through one).
    pub host: String,
    /// The index or manifest list the tag pointed to, if it was one.
    pub index_digest: Option<Digest>,
    /// The image manifest's digest: the identity of the image (cache keys use it).
    pub manifest_digest: Digest,
    /// The image manifest's media type (OCI or Docker schema2).
    pub manifest_media_type: String,
    /// The image manifest, byte for byte as served.
    pub manifest_bytes: Vec<u8>,
    /// The image manifest, parsed.
    pub manifest: oci_spec::image::ImageManifest,
    /// The config blob's digest.
    pub config_digest: Digest,
    /// The config blob (verified).
    pub config: Vec<u8>,
}

impl Resolved {
    /// The layers to pull: digest, size and media type, bottom first.
    pub fn layers(&self) -> Vec<(Digest, u64, String)> {
        self.manifest
            .layers()
            .iter()
            .filter_map(|d| {
                Some((
                    Digest::parse(d.digest().as_ref())?,
                    d.size(),
                    d.media_type().to_string(),
                ))
            })
            .collect()
    }
}

/// The fields kiln reads to tell manifests from indexes and to pick a platform; both
/// OCI and Docker spell them the same way.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl Registry {
    /// Resolves `reference` to the image for `platform`: manifest, its digest, config.
    /// Docker Hub images try the configured mirrors first.
    pub async fn resolve(&self, reference: &ImageRef, platform: &Platform) -> Result<Resolved> {
        let mut last = None;
        for (host, candidate) in self.candidates(reference) {
            let is_last = host == reference.api_host();
            match self
                .resolve_on(&host, reference, &candidate, platform)
                .await
            {
                Ok(resolved) => return Ok(resolved),
                // A mirror that fails is skipped, as docker does; the origin's error counts.
                Err(e) if !is_last => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::ManifestNotFound {
            reference: reference.to_string(),
        }))
    }

    async fn resolve_on(
        &self,
        host: &str,
        asked: &ImageRef,
        reference: &ImageRef,
        platform: &Platform,
    ) -> Result<Resolved> {
        let endpoint = self.endpoint(host).await?;
        let (bytes, digest) = self.fetch_manifest(&endpoint, reference).await?;
        let probe = parse_probe(reference, &bytes)?;
        let (index_digest, bytes, digest, probe) = if probe.manifests.is_some() {
            let chosen = choose(reference, &probe, platform)?;
            let pinned = reference.with_digest(chosen);
            let (child, child_digest) = self.fetch_manifest(&endpoint, &pinned).await?;
            let child_probe = parse_probe(&pinned, &child)?;
            if child_probe.manifests.is_some() {
                return Err(Error::InvalidManifest {
                    reference: pinned.to_string(),
                    reason: "an index inside an index is not supported".to_owned(),
                });
            }
            (Some(digest), child, child_digest, child_probe)
        } else {
            (None, bytes, digest, probe)
        };
        let media_type = probe
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.to_owned());
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
                reference: format!("{reference}@{digest}"),
                reason: e.to_string(),
            })?;
        let config_digest = super::digest::parse(manifest.config().digest().as_ref())?;
        let mut config = Vec::new();
        if manifest.config().size() > MAX_CONFIG as u64 {
            return Err(Error::InvalidManifest {
                reference: format!("{reference}@{digest}"),
                reason: format!("config of {} bytes is too large", manifest.config().size()),
            });
        }
        self.pull_blob_from(&endpoint, reference, &config_digest, &mut config)
            .await?;
        Ok(Resolved {
            reference: asked.clone(),
            host: host.to_owned(),
            index_digest,
            manifest_digest: digest,
            manifest_media_type: media_type,
            manifest_bytes: bytes,
            manifest,
            config_digest,
            config,
        })
    }

    /// GET the manifest by tag or digest; returns the bytes and their verified digest.
    async fn fetch_manifest(
        &self,
        endpoint: &Endpoint,
        reference: &ImageRef,
    ) -> Result<(Vec<u8>, Digest)> {
        let what = format!("manifest of {reference}");
        let op = Op {
            registry: reference.registry(),
            repository: reference.repository(),
            what: &what,
        };
        let oci_ref = reference.to_oci();
        let ((body, _), _) = retry(self.config(), &format!("fetching {what}"), |_| async {
            endpoint
                .oci
                .pull_manifest_raw(&oci_ref, &endpoint.auth, ACCEPT)
                .await
                .map_err(|e| match e {
                    e if is_not_found(&e) => Failure::Fatal(Error::ManifestNotFound {
                        reference: reference.to_string(),
                    }),
                    e => classify(&op, e),
                })
        })
        .await?;
        let digest = Digest::of(&body);
        if let Some(pinned) = reference.digest()
            && *pinned != digest
        {
            return Err(Error::DigestMismatch {
                digest: pinned.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok((body.to_vec(), digest))
    }

    /// Streams blob `digest` of `reference`'s repository into `out`, verifying its
    /// sha256; returns the byte count. Docker Hub blobs try the mirrors first.
    pub async fn pull_blob<W>(
        &self,
        reference: &ImageRef,
        digest: &Digest,
        out: &mut W,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let mut sink = Sink::new(out);
        let mut last = None;
        for (host, candidate) in self.candidates(reference) {
            let endpoint = match self.endpoint(&host).await {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match self
                .stream_blob(&endpoint, &candidate, digest, &mut sink)
                .await
            {
                Ok(()) => return sink.finish(digest),
                // Bytes already written stay valid: the next host resumes after them.
                Err(e @ (Error::BlobSink { .. } | Error::DigestMismatch { .. })) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Registry {
            what: format!("blob {digest} of {reference}"),
            reason: "no registry host to pull from".to_owned(),
        }))
    }

    /// `pull_blob` on one endpoint into a `Vec` (configs).
    async fn pull_blob_from(
        &self,
        endpoint: &Endpoint,
        reference: &ImageRef,
        digest: &Digest,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut sink = Sink::new(out);
        self.stream_blob(endpoint, reference, digest, &mut sink)
            .await?;
        sink.finish(digest).map(|_| ())
    }

    async fn stream_blob<W>(
        &self,
        endpoint: &Endpoint,
        reference: &ImageRef,
        digest: &Digest,
        sink: &mut Sink<'_, W>,
    ) -> Result<()>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let what = format!(
            "blob {digest} of {}/{}",
            reference.registry(),
            reference.repository()
        );
        let op = Op {
            registry: reference.registry(),
            repository: reference.repository(),
            what: &what,
        };
        let oci_ref = reference.to_oci();
        let descriptor = OciDescriptor {
            digest: digest.to_string(),
            ..OciDescriptor::default()
        };
        // A hand-written retry loop: each try appends to the same sink.
        let config = self.config();
        let attempts = config.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            let activity = Activity::new();
            sink.activity = activity.clone();
            let once = self.stream_once(endpoint, &oci_ref, &descriptor, &op, digest, sink);
            let cause = match watched(config.stall_timeout, &activity, once).await {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(cause)) => cause,
            };
            if attempt >= attempts {
                return Err(Error::RetriesExhausted {
                    what: format!("download of {what}"),
                    attempts,
                    cause,
                });
            }
            backoff(config, &format!("download of {what}"), attempt, &cause).await;
            attempt += 1;
        }
    }

    /// One try of a blob download, resuming after what the sink already holds.
    async fn stream_once<W>(
        &self,
        endpoint: &Endpoint,
        oci_ref: &oci_client::Reference,
        descriptor: &OciDescriptor,
        op: &Op<'_>,
        digest: &Digest,
        sink: &mut Sink<'_, W>,
    ) -> Result<(), Failure>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let offset = sink.written;
        let (stream, mut skip) = if offset == 0 {
            let stream = endpoint
                .oci
                .pull_blob_stream(oci_ref, descriptor)
                .await
                .map_err(|e| classify(op, e))?;
            (stream, 0)
        } else {
            match endpoint
                .oci
                .pull_blob_stream_partial(oci_ref, descriptor, offset, None)
                .await
                .map_err(|e| classify(op, e))?
            {
                oci_client::client::BlobResponse::Partial(stream) => (stream, 0),
                // The registry ignored the range: drop what we already have.
                oci_client::client::BlobResponse::Full(stream) => (stream, offset),
            }
        };
        let mut stream = stream.stream;
        while let Some(chunk) = stream.next().await {
            sink.activity.touch();
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client's verifying stream saw every byte the sink saw: same verdict.
                Err(e) if e.to_string().contains("Invalid digest") => {
                    return Err(Failure::Fatal(Error::DigestMismatch {
                        digest: digest.to_string(),
                        actual: Digest::from_hasher(sink.hasher.clone()).to_string(),
                    }));
                }
                Err(e) => return Err(Failure::Transient(super::error::chain(&e))),
            };
            if skip > 0 {
                let n = skip.min(chunk.len() as u64) as usize;
                let _ = chunk.split_to(n);
                skip -= n as u64;
            }
            sink.write(&chunk, digest).await.map_err(Failure::Fatal)?;
        }
        Ok(())
    }
}

/// The caller's writer plus the running hash and byte count, kept across retries.
struct Sink<'a, W> {
    out: &'a mut W,
    hasher: sha2::Sha256,
    written: u64,
    /// The current try's progress, touched as bytes arrive.
    activity: Activity,
}

impl<'a, W: AsyncWrite + Unpin + Send> Sink<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Sink {
            out,
            hasher: sha2::Sha256::new(),
            written: 0,
            activity: Activity::new(),
        }
    }

    async fn write(&mut self, chunk: &[u8], digest: &Digest) -> Result<()> {
        self.hasher.update(chunk);
        self.out
            .write_all(chunk)
            .await
            .map_err(|source| Error::BlobSink {
                digest: digest.to_string(),
                source,
            })?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn finish(self, digest: &Digest) -> Result<u64> {
        let actual = Digest::from_hasher(self.hasher);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                digest: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(self.written)
    }
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// Parses the distinguishing fields and refuses what kiln cannot use.
fn parse_probe(reference: &ImageRef, bytes: &[u8]) -> Result<Probe> {
    let bad = |reason: String| Error::InvalidManifest {
        reference: reference.to_string(),
        reason,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if probe.schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {} (Docker schema 1 images are not supported; re-push the image with a current client)",
            probe.schema_version
        )));
    }
    match probe.media_type.as_deref() {
        None | Some(OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST) => {}
        Some(other) => return Err(bad(format!("unsupported media type {other}"))),
    }
    if probe.manifests.is_none() && probe.layers.is_none() {
        return Err(bad(
            "neither an image manifest (layers) nor an index (manifests)".to_owned(),
        ));
    }
    Ok(probe)
}

/// Picks the index entry that fits `platform` best; the first of equals wins.
fn choose(reference: &ImageRef, index: &Probe, platform: &Platform) -> Result<Digest> {
    let entries = index.manifests.as_deref().unwrap_or_default();
    let mut best: Option<(u8, &IndexEntry)> = None;
    for entry in entries {
        // Attestation manifests (BuildKit's "unknown/unknown") and nested indexes are skipped.
        if matches!(
            entry.media_type.as_deref(),
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST)
        ) {
            continue;
        }
        let Some(p) = &entry.platform else { continue };
        let candidate = Platform {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone().filter(|v| !v.is_empty()),
        };
        if let Some(score) = platform.score(&candidate)
            && best.is_none_or(|(b, _)| score > b)
        {
            best = Some((score, entry));
        }
    }
    match best {
        Some((_, entry)) => super::digest::parse(&entry.digest),
        None => Err(Error::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: platform.to_string(),
            available: entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
                    _ => format!("{}/{}", p.os, p.architecture),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(index_json: &str, platform: &str, expected: Result<char, &str>) {
        let reference = ImageRef::parse("r.io/x").unwrap();
        let probe = parse_probe(&reference, index_json.as_bytes()).unwrap();
        let got = choose(&reference, &probe, &Platform::parse(platform).unwrap());
        match (got, expected) {
            (Ok(d), Ok(c)) => assert_eq!(d.hex().chars().next(), Some(c), "{platform}"),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{e}"),
            (got, want) => panic!("{platform}: got {got:?}, want {want:?}"),
        }
    }

    fn entry(c: char, platform: &str) -> String {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":1,"platform":{platform}}}"#,
            c.to_string().repeat(64)
        )
    }

    #[test]
    fn picks_the_requested_platform() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{},{}]}}"#,
            entry('a', r#"{"os":"linux","architecture":"amd64"}"#),
            entry('b', r#"{"os":"linux","architecture":"arm","variant":"v6"}"#),
            entry('c', r#"{"os":"linux","architecture":"arm","variant":"v7"}"#),
            entry('d', r#"{"os":"unknown","architecture":"unknown"}"#),
        );
        check(&index, "linux/amd64", Ok('a'));
        check(&index, "linux/arm/v7", Ok('c'));
        check(&index, "linux/arm", Ok('c'));
        check(&index, "linux/arm/v6", Ok('b'));
        check(
            &index,
            "linux/s390x",
            Err("linux/amd64, linux/arm/v6, linux/arm/v7, unknown/unknown"),
        );
    }

    #[test]
    fn refuses_schema1() {
        let reference = ImageRef::parse("r.io/x").unwrap();
        let err = parse_probe(&reference, br#"{"schemaVersion":1,"fsLayers":[]}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("schema 1"), "{err}");
    }
}
