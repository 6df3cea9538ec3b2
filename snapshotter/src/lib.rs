//! kiln's on-disk store: content-addressed blobs, tags, snapshots, and the conversions
//! between filesystem diffs and layer tars.
//!
//! Layout under the store root (`--root`):
//!
//! ```text
//! content/        an OCI image layout (oci-layout, index.json, blobs/sha256/...)
//! snapshots/<id>/ fs (the diff dir), work (overlay), meta.json
//! tmp/            temp space: own-XXXX/ dirs, each held by a live owner (see temp)
//! locks/          lock files for read-modify-write updates
//! ```
//!
//! - [`Store`] opens a root and hands out its parts.
//! - [`ContentStore`] / [`BlobWriter`]: blobs, written streaming and verified.
//! - [`TagIndex`]: names -> manifests in `content/index.json`.
//! - [`Snapshots`]: prepare / mounts / commit / remove, overlay or native.
//! - [`layer_out::write_layer`] and [`layer_in::apply_layer`]: diff <-> layer tar.
//!
//! It refuses to follow paths out of a root, to keep a blob whose bytes do not match its
//! digest, and to leave a half-written file where a reader could see it.
//!
//! ```no_run
//! # fn demo() -> Result<(), kiln_snapshotter::StoreError> {
//! use kiln_snapshotter::{Store, layer_out::{DiffSource, LayerOptions, write_layer}};
//! let store = Store::open(std::path::Path::new("/var/lib/kiln"), None)?;
//! let active = store.snapshots().prepare(None)?;
//! std::fs::write(store.snapshots().diff_dir(&active).join("hello"), "hi").unwrap();
//! let id = store.snapshots().commit(active)?;
//! let layer = write_layer(DiffSource::Overlay(&store.snapshots().layers(&id)?[0]),
//!                         store.content(), &LayerOptions::default())?;
//! println!("{} {}", layer.digest, layer.diff_id);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod content;
pub mod digest;
mod error;
mod export;
mod fsutil;
pub mod index;
pub mod layer_in;
pub mod layer_out;
pub mod snapshots;
pub mod temp;
mod tree_copy;

use std::path::{Path, PathBuf};

pub use content::{BlobReader, BlobWriter, ContentStore, damaged_blob};
pub use digest::{Digest, HashingWriter};
pub use error::StoreError;
pub use index::{Descriptor, TagIndex, normalize_name};
pub use snapshots::{Active, Mount, SnapshotId, Snapshots, SnapshotterKind};
pub use temp::{TempDir, TempUsage};

/// An opened store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    content: ContentStore,
    tags: TagIndex,
    snapshots: Snapshots,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, with the given snapshotter or the
    /// one this machine supports best.
    pub fn open(root: &Path, kind: Option<SnapshotterKind>) -> Result<Store, StoreError> {
        let content_dir = root.join("content");
        let tmp = root.join("tmp");
        let locks = root.join("locks");
        for dir in [&content_dir, &tmp, &locks, &root.join("snapshots")] {
            std::fs::create_dir_all(dir).map_err(error::io(dir))?;
        }
        let layout = content_dir.join("oci-layout");
        if !layout.exists() {
            fsutil::write_atomic(&layout, &tmp, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(error::io(&layout))?;
        }
        let kind = kind.unwrap_or_else(SnapshotterKind::detect);
        Ok(Store {
            root: root.to_owned(),
            content: ContentStore::new(&content_dir, temp::TempSpace::new(&tmp)),
            tags: TagIndex::new(&content_dir, &locks, &tmp),
            snapshots: Snapshots::new(&root.join("snapshots"), &tmp, kind),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blobs.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The tags.
    pub fn tags(&self) -> &TagIndex {
        &self.tags
    }

    /// The snapshots.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The store's `tmp/` (same filesystem as everything else). Paths made directly in it
    /// belong to nobody: prefer [`Store::temp_dir`], whose leftovers are swept.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The build cache index (an SQLite database the solver owns the schema of).
    pub fn cache_index_path(&self) -> PathBuf {
        self.root.join("cache.db")
    }

    /// The cache index with SQLite's write-ahead log and shared-memory files: what
    /// `prune --all` removes and `du` counts.
    pub fn cache_index_files(&self) -> Vec<PathBuf> {
        ["cache.db", "cache.db-wal", "cache.db-shm"]
            .iter()
            .map(|name| self.root.join(name))
            .collect()
    }

    /// Where `RUN --mount=type=cache` directories live, one per cache id.
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.root.join("cache-mounts")
    }

    /// Where `kiln serve` keeps the build contexts clients send again and again (one
    /// directory per client context key, with a `.lock` beside it held while a build
    /// uses it): a rebuild rewrites only the files that changed. `prune --all` removes
    /// them.
    pub fn kept_contexts_dir(&self) -> PathBuf {
        self.root.join("contexts")
    }

    /// Where `kiln build --on-error=keep` describes each failed step it kept (one JSON
    /// file per step, named after the step's writable layer, an active snapshot);
    /// `prune` removes them with the layers.
    pub fn failed_steps_dir(&self) -> PathBuf {
        self.root.join("failed-steps")
    }

    /// Where the full log of each build is kept.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// A fresh temp directory in the store, owned by the returned guard: removed when
    /// the guard drops, and by [`Store::sweep_temp`] (any process's) once the process
    /// holding the guard is gone. The one place temp paths come from: blob writers,
    /// downloads, contexts, sockets.
    pub fn temp_dir(&self) -> Result<TempDir, StoreError> {
        TempDir::new_in(&self.tmp_dir())
    }

    /// Removes temp space whose owner is gone (a build killed half-way, in this or any
    /// other kiln process); what live owners hold is left alone. Returns the bytes
    /// removed ([`TempUsage::stale_bytes`]) and those still in use. Run by
    /// [`Store::lock_for_build`] and meant for `kiln prune`.
    pub fn sweep_temp(&self) -> Result<TempUsage, StoreError> {
        temp::sweep(&self.tmp_dir(), true)
    }

    /// The bytes in temp space, in use and left by dead owners (for `kiln du`).
    pub fn temp_usage(&self) -> Result<TempUsage, StoreError> {
        temp::sweep(&self.tmp_dir(), false)
    }

    /// Reads every blob and returns those whose bytes do not match their digest.
    pub fn damaged_blobs(&self) -> Result<Vec<Digest>, StoreError> {
        let mut damaged = Vec::new();
        for digest in self.content.list()? {
            match self.content.verify(&digest) {
                Ok(()) | Err(StoreError::BlobNotFound { .. }) => {}
                Err(StoreError::Corrupt { .. }) => damaged.push(digest),
                Err(e) => return Err(e),
            }
        }
        Ok(damaged)
    }

    fn gc_lock_file(&self) -> Result<std::fs::File, StoreError> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir).map_err(error::io(&dir))?;
        let path = dir.join("gc.lock");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error::io(&path))
    }

    /// Held by a build for as long as it runs: garbage collection waits for every build,
    /// so it never removes a snapshot a build is still writing. Builds share it. Taking
    /// it first sweeps the temp space that dead builds left ([`Store::sweep_temp`]).
    pub fn lock_for_build(&self) -> Result<StoreLock, StoreError> {
        let file = self.gc_lock_file()?;
        file.lock_shared()
            .map_err(error::io(self.root.join("locks/gc.lock")))?;
        self.sweep_temp()?;
        Ok(StoreLock(file))
    }

    /// The lock garbage collection needs, or `None` while a build holds the store.
    pub fn try_lock_for_gc(&self) -> Result<Option<StoreLock>, StoreError> {
        let file = self.gc_lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(error::io(self.root.join("locks/gc.lock"))(e))
            }
        }
    }
}

/// A lock on the store, released when dropped.
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code)] std::fs::File);
