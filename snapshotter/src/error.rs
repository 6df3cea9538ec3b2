//! The store's errors: each names the path, digest or name involved.

use std::path::PathBuf;

use crate::digest::Digest;

/// An error of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A blob is missing.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// The digest asked for.
        digest: Digest,
    },
    /// A blob's bytes do not match its digest.
    #[error(
        "blob {digest} is damaged: its content does not match its digest; remove the images that use it (kiln rmi, then kiln prune) and build or pull them again (kiln fsck lists the damaged blobs and the images that use them)"
    )]
    Corrupt {
        /// The digest.
        digest: Digest,
    },
    /// Written content did not have the digest it was supposed to have.
    #[error("content has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// What was expected.
        expected: Digest,
        /// What was written.
        actual: Digest,
    },
    /// A file of the store holds something that cannot be read as it should.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No image has this name.
    #[error("no image named {name} in the store (see kiln images)")]
    ImageNotFound {
        /// The name asked for.
        name: String,
    },
    /// A snapshot is missing.
    #[error("snapshot {id} is not in the store")]
    SnapshotNotFound {
        /// The id asked for.
        id: String,
    },
    /// A layer archive holds an entry kiln refuses to extract.
    #[error("layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// An archive expands past what an extraction may write.
    #[error("archive entry {entry:?}: {reason}")]
    TooLarge {
        /// The entry that would cross the limit.
        entry: String,
        /// The limit and the sizes involved.
        reason: String,
    },
    /// An image is in the store but one of its blobs cannot be used.
    #[error(
        "image {name} is in the store but damaged: {source}; remove it (kiln rmi {name}) and build or pull it again"
    )]
    DamagedImage {
        /// The name asked for.
        name: String,
        /// What is wrong (names the blob).
        #[source]
        source: Box<StoreError>,
    },
    /// An image name that cannot be used.
    #[error("invalid image name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Wraps an I/O error with its path; a damaged blob found by a [`crate::BlobReader`]
/// somewhere down the reader chain stays [`StoreError::Corrupt`].
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| match crate::content::damaged_blob(&source) {
        Some(digest) => StoreError::Corrupt { digest },
        None => StoreError::Io { path, source },
    }
}
