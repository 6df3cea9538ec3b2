//! The one error type of the registry module.
//!
//! Every variant names what it was about (a registry host, a reference, a digest, a
//! path) so that `kiln` can print it as it is, and says what to do when there is
//! something to do.

use std::path::PathBuf;

/// Result of the registry module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to a registry or reading credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image name that docker would not accept either.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest that is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {input:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest {
        /// The text given.
        input: String,
    },
    /// A platform that is not `os/arch[/variant]`.
    #[error(transparent)]
    InvalidPlatform(#[from] kiln_image::platform::PlatformError),
    /// The registry refused the credentials (or asked for some and had none).
    #[error("{registry}: unauthorized: check the user name and password (kiln login {registry})")]
    Unauthorized {
        /// The registry host (`host[:port]`).
        registry: String,
    },
    /// The credentials were accepted but do not allow this operation.
    #[error("{registry}: access to {repository} denied: {message}")]
    Denied {
        /// The registry host.
        registry: String,
        /// The repository asked for.
        repository: String,
        /// What the registry said.
        message: String,
    },
    /// The registry cannot be reached (DNS, TCP, TLS).
    #[error("{registry}: cannot connect: {reason}")]
    Connect {
        /// The registry host.
        registry: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// A docker config file (or a kiln CA bundle) could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A docker config file is not the JSON docker writes.
    #[error("{path}: invalid docker config: {reason}")]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA bundle holds no usable certificate.
    #[error("{path}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")]
    CaBundle {
        /// The file.
        path: PathBuf,
    },
    /// A `docker-credential-<helper>` failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        /// The helper's name (after `docker-credential-`).
        helper: String,
        /// The registry asked for.
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// The reference names nothing in the registry.
    #[error("{reference}: manifest unknown")]
    ManifestNotFound {
        /// The reference asked for.
        reference: String,
    },
    /// An index or manifest list without an entry for the requested platform.
    #[error("{reference}: no image for platform {platform} (the index has: {available})")]
    NoMatchingPlatform {
        /// The reference asked for.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// The platforms the index offers, comma separated.
        available: String,
    },
    /// A manifest kiln cannot use (schema 1, an unknown media type, broken JSON).
    #[error("{reference}: unusable manifest: {reason}")]
    InvalidManifest {
        /// The reference (or digest) the manifest came from.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Content whose sha256 is not the digest it was asked for by.
    #[error("{digest}: content digest mismatch: got {actual}")]
    DigestMismatch {
        /// The digest asked for.
        digest: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Reading a local blob to upload failed.
    #[error("{digest}: reading the blob to upload: {source}")]
    BlobSource {
        /// The blob.
        digest: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing a pulled blob to the caller's writer failed.
    #[error("{digest}: writing the pulled blob: {source}")]
    BlobSink {
        /// The blob.
        digest: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A transient failure (5xx, 429, broken connection) that did not go away.
    #[error("{what}: giving up after {attempts} attempts; last error: {cause}")]
    RetriesExhausted {
        /// The operation, naming the blob or manifest and the reference.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error, with its causes.
        cause: String,
    },
    /// Any other refusal by the registry (4xx other than 401/403/404/429).
    #[error("{what}: {reason}")]
    Registry {
        /// The operation, naming the blob or manifest and the reference.
        what: String,
        /// What the registry (or the protocol layer) said.
        reason: String,
    },
    /// Plain HTTP was needed but the registry is not allowed to use it.
    #[error(
        "{registry}: the registry does not speak HTTPS and is not insecure; list it in insecure registries (--insecure-registry {registry}) to allow plain HTTP"
    )]
    HttpNotAllowed {
        /// The registry host.
        registry: String,
    },
}

/// Renders an error with its `source()` chain, `a: b: c`, for the `reason` fields.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // reqwest repeats its cause in its own message at times; do not print it twice.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}
