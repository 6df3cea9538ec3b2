//! Registry push and pull (the OCI distribution protocol) through oci-client.
//!
//! **Owns**: image reference parsing and docker-style normalisation ([`ImageRef`]);
//! credentials from docker's `config.json` (`auths`, `credHelpers`, `credsStore` through
//! the `docker-credential-*` protocol) and `kiln login`/`logout` ([`auth`]); transport
//! (HTTPS with the system roots plus extra CA files, plain HTTP only for loopback and
//! insecure-listed registries, Docker Hub mirrors) in [`Registry`]; push of an image's
//! blobs and manifest ([`Registry::push_image`]): HEAD, cross-repository mount, upload
//! streamed from a reader (one request, or chunked above a size), in parallel, retried
//! with backoff; pull ([`Registry::resolve`] to
//! one platform's manifest and config, [`Registry::pull_blob`] streamed and verified).
//!
//! **Refuses**: Docker schema 1 manifests; nested indexes; holding a layer in memory (blobs
//! come from readers and go to writers); deciding where pulled content is stored (the
//! caller writes to its temporary blob and commits it once `pull_blob` returns `Ok`);
//! building manifests (image assembly does that; this module sends bytes as given);
//! plain HTTP to a registry not on loopback or the insecure list. It depends on nothing
//! else in kiln: digests are [`Digest`] strings, blobs are `Read`/`AsyncWrite`.
//!
//! **Main types**: [`RegistryConfig`] (CA files, insecure hosts, mirrors, [`AuthConfig`],
//! [`RetryPolicy`], upload parallelism) -> [`Registry`] (a cheap-to-clone handle; one
//! per process, shared by parallel pulls) -> [`PushImage`] of [`BlobSource`]s in,
//! [`PushReport`] out; [`Resolved`] from `resolve`. Errors are [`Error`]; a refused
//! login reads `127.0.0.1:5000: unauthorized: check the user name and password (kiln
//! login 127.0.0.1:5000)`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_exporter::registry::Error> {
//! use kiln_exporter::registry::*;
//! let registry = Registry::new(RegistryConfig {
//!     auth: AuthConfig { docker_config: default_docker_config_path(), helper_dirs: vec![] },
//!     ..RegistryConfig::default()
//! })?;
//! // Pull: resolve for this machine's platform, then stream each layer.
//! let image = ImageRef::parse("busybox")?; // docker.io/library/busybox:latest
//! let resolved = registry.resolve(&image, &Platform::host()).await?;
//! for (digest, _size, _media_type) in resolved.layers() {
//!     let mut file = tokio::fs::File::create(format!("/tmp/{}", digest.hex())).await.map_err(|e| Error::File { path: "/tmp".into(), source: e })?;
//!     registry.pull_blob(&image, &digest, &mut file).await?;
//! }
//! // Push: the manifest bytes as assembled, the blobs as readers, two tags at once.
//! let config = BlobSource::from_bytes("application/vnd.oci.image.config.v1+json", b"{}".to_vec());
//! let push = PushImage { manifest: b"{...}".to_vec(), manifest_media_type: OCI_MANIFEST.into(), blobs: vec![config] };
//! let targets = [ImageRef::parse("127.0.0.1:5000/app:1")?, ImageRef::parse("127.0.0.1:5000/app:latest")?];
//! let report = registry.push_image(&targets, &push).await?;
//! println!("{} uploaded, manifest {}", report.uploaded(), report.manifest_digest);
//! # Ok(()) }
//! ```

pub mod auth;
mod client;
mod config;
mod digest;
mod error;
mod pull;
mod push;
mod reference;
mod retry;

pub use auth::{AuthConfig, Credential, default_docker_config_path};
pub use client::Registry;
pub use config::{RegistryConfig, RetryObserver, RetryPolicy, Retrying};
pub use digest::Digest;
pub use error::{Error, Result};
pub use kiln_image::platform::{Platform, PlatformError};
pub use pull::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Resolved};
pub use push::{BlobOpener, BlobOutcome, BlobReport, BlobSource, PushImage, PushReport};
pub use reference::{
    DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_AUTH_KEY, ImageRef, is_loopback_host,
    normalize_registry_host,
};

/// Pushes `image` under `targets` with a one-off [`Registry`] (prefer a shared one).
pub async fn push_image(
    config: &RegistryConfig,
    targets: &[ImageRef],
    image: &PushImage,
) -> Result<PushReport> {
    Registry::new(config.clone())?
        .push_image(targets, image)
        .await
}

/// Resolves `reference` for `platform` with a one-off [`Registry`] (prefer a shared one).
pub async fn resolve(
    config: &RegistryConfig,
    reference: &ImageRef,
    platform: &Platform,
) -> Result<Resolved> {
    Registry::new(config.clone())?
        .resolve(reference, platform)
        .await
}

/// Streams and verifies one blob with a one-off [`Registry`] (prefer a shared one).
pub async fn pull_blob<W>(
    config: &RegistryConfig,
    reference: &ImageRef,
    digest: &Digest,
    out: &mut W,
) -> Result<u64>
where
    W: tokio::io::AsyncWrite + Unpin + Send,
{
    Registry::new(config.clone())?
        .pull_blob(reference, digest, out)
        .await
}

/// `kiln login`: checks the credentials against `registry`, then stores them in
/// `config.auth.docker_config` (or its credential helper). Returns the file written.
pub async fn login(
    config: &RegistryConfig,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<std::path::PathBuf> {
    Registry::new(config.clone())?
        .login(registry, username, password)
        .await
}

/// `kiln logout`: forgets `registry`'s credentials; whether there were any.
pub fn logout(config: &RegistryConfig, registry: &str) -> Result<bool> {
    auth::logout(&config.auth, registry)
}
