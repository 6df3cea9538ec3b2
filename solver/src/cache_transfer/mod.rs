//! The build cache between machines: `--cache-to` writes the results of a build's steps
//! as a cache (an OCI image manifest whose config is kiln's [`record::Record`] and whose
//! layers are the steps' diffs), `--cache-from` reads one and lets the solver take a
//! step's result from it instead of running the step. The format is in `docs/cache.md`.
//!
//! - [`spec`]: the flags' values ([`CacheExportSpec`], [`CacheImportSpec`]).
//! - [`record`]: the record format, versioned.
//! - [`cache_image`]: a solved plan's steps (mode min or max) as a [`CacheImage`] (plain
//!   data: manifest and record bytes, layer blobs in the store); [`write_layout`] writes it
//!   into a layout directory. A registry push of it is the engine's (`engine/src/cache.rs`).
//! - [`ImportedCache`]: a cache read and checked (manifest, record); the solver asks it for
//!   a key and it gives the record and the verified blobs (see `solve/imported.rs`), which
//!   a [`CacheBlobs`] fetches: a layout's files here, a registry's blobs in the engine.
//!
//! The solver does no network I/O for a cache: it gives and takes plain data.
//!
//! A cache from outside is untrusted input: every blob is checked against its digest and
//! size before use, a layer goes through the same extraction as a pulled image's, and a
//! step whose record is wrong is refused with a warning naming it and runs instead.
//! What no check can tell is whether a layer is what its key's step would have made:
//! importing a cache trusts whoever wrote it for that, as pulling an image trusts its
//! publisher.

mod export;
mod import;
mod layout;
pub mod record;
pub mod spec;

use std::path::PathBuf;

use kiln_snapshotter::{Digest, StoreError};

pub use export::{CacheExported, CacheImage, cache_image, write_layout};
pub use import::{CacheBlobs, FetchFuture, ImportedCache};
pub use record::RECORD_MEDIA_TYPE;
pub use spec::{CacheExportSpec, CacheImportSpec, CacheLocation, CacheMode};

/// What went wrong moving a cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A layout directory cannot be used.
    #[error("the cache at {path} cannot be used: {reason}")]
    Layout {
        /// The directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A blob of a cache is missing, damaged or not what its manifest says.
    #[error("blob {digest}: {reason}")]
    Blob {
        /// The blob.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// The record does not describe a step's result usably.
    #[error("{0}")]
    Record(String),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}; check that it exists, is writable and has space")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing into the layout failed.
    #[error(transparent)]
    Write(#[from] kiln_image::file::DestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Whatever fetches a cache's blobs (a registry, for the engine) failed.
    #[error("{0}")]
    Fetch(String),
}
