//! Owned temp space under the store's `tmp/`.
//!
//! Every temp path of a build lives in a directory that a live owner holds: a
//! [`TempDir`] is `tmp/own-XXXX/` with an `.owner` file inside that its guard keeps
//! `flock`ed for as long as it lives. The lock is the only test of life: a kiln process
//! that was killed (or a server whose build panicked) releases its locks with its file
//! descriptors, so [`sweep`] can tell a temp dir whose owner is gone from one in use,
//! across any number of kiln processes sharing the store, with no pid files and no age
//! guesses. The directory is made under `.new-XXXX`, locked, then renamed to `own-XXXX`:
//! a sweeper never sees an `own-` directory without its lock taken.
//!
//! Dropping a [`TempDir`] removes it. [`sweep`] removes what dead owners left: `own-`
//! directories whose lock is free, `.new-` directories older than an hour (a creation
//! interrupted by a kill), and `.tmp` files older than an hour (the unowned temp files of
//! older kiln versions and of the small atomic writes).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{StoreError, io};

/// The name of the lock file inside an owned temp dir.
const OWNER: &str = ".owner";
/// The prefix of owned temp dirs.
const OWNED: &str = "own-";
/// The prefix of temp dirs being created.
const NEW: &str = ".new-";
/// How old an unowned entry must be before a sweep removes it.
const UNOWNED_AGE: Duration = Duration::from_secs(3600);

/// A fresh directory under the store's `tmp/`, owned by this guard: removed when the guard
/// is dropped, and by [`crate::Store::sweep_temp`] if its owner dies first.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    _owner: File,
}

impl TempDir {
    /// Creates one under `tmp`.
    pub(crate) fn new_in(tmp: &Path) -> Result<TempDir, StoreError> {
        fs::create_dir_all(tmp).map_err(io(tmp))?;
        let fresh = tempfile::Builder::new()
            .prefix(NEW)
            .tempdir_in(tmp)
            .map_err(io(tmp))?;
        let owner_path = fresh.path().join(OWNER);
        let owner = File::create(&owner_path).map_err(io(&owner_path))?;
        owner.lock().map_err(io(&owner_path))?;
        let name = fresh
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(NEW))
            .unwrap_or("x")
            .to_owned();
        let path = tmp.join(format!("{OWNED}{name}"));
        let staged = fresh.keep();
        fs::rename(&staged, &path).map_err(io(&path))?;
        Ok(TempDir {
            path,
            _owner: owner,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: what remains is swept once the lock is released.
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The temp space of one opened store: the store's `tmp/`, and one owned dir made on
/// first use and shared by the store's blob writers.
#[derive(Debug)]
pub(crate) struct TempSpace {
    root: PathBuf,
    shared: Mutex<Option<Arc<TempDir>>>,
}

impl TempSpace {
    pub(crate) fn new(root: &Path) -> Arc<TempSpace> {
        Arc::new(TempSpace {
            root: root.to_owned(),
            shared: Mutex::new(None),
        })
    }

    /// The store's `tmp/`.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The owned dir shared by this store's writers (made on first use). The returned
    /// `Arc` keeps it alive while a writer uses it.
    pub(crate) fn shared(&self) -> Result<Arc<TempDir>, StoreError> {
        let mut slot = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = slot.as_ref()
            && dir.path.is_dir()
        {
            return Ok(Arc::clone(dir));
        }
        let dir = Arc::new(TempDir::new_in(&self.root)?);
        *slot = Some(Arc::clone(&dir));
        Ok(dir)
    }
}

/// What a sweep found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TempUsage {
    /// Bytes in temp space whose owner is alive (or that is too young to judge).
    pub live_bytes: u64,
    /// Bytes removed (or, for [`usage`], removable) because their owner is gone.
    pub stale_bytes: u64,
}

fn size_of(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.path().symlink_metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn old(meta: &fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > UNOWNED_AGE)
}

/// Whether the entry at `path` (a direct child of `tmp/`) belongs to nobody alive. The
/// returned lock (if any) must be held while the entry is removed.
fn stale(path: &Path, name: &str, meta: &fs::Metadata) -> (bool, Option<File>) {
    if name.starts_with(OWNED) && meta.is_dir() {
        return match File::open(path.join(OWNER)) {
            Ok(owner) => match owner.try_lock() {
                Ok(()) => (true, Some(owner)),
                Err(_) => (false, None),
            },
            // An owned dir without its owner file is a removal cut short.
            Err(e) if e.kind() == io::ErrorKind::NotFound => (true, None),
            Err(_) => (false, None),
        };
    }
    if name.starts_with(NEW) && meta.is_dir() {
        return (old(meta), None);
    }
    if name.starts_with(".tmp") && !meta.is_dir() {
        return (old(meta), None);
    }
    // Anything else is another owner's business (named paths of callers that do not use
    // owned space yet).
    (false, None)
}

/// Walks `tmp`; removes stale entries when `remove`, and says how many bytes are where.
pub(crate) fn sweep(tmp: &Path, remove: bool) -> Result<TempUsage, StoreError> {
    let entries = match fs::read_dir(tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TempUsage::default()),
        Err(e) => return Err(io(tmp)(e)),
    };
    let mut usage = TempUsage::default();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        let bytes = if meta.is_dir() {
            size_of(&path)
        } else {
            meta.len()
        };
        let (is_stale, _lock) = stale(&path, &name, &meta);
        if !is_stale {
            usage.live_bytes += bytes;
            continue;
        }
        usage.stale_bytes += bytes;
        if remove {
            // Best effort: a sweep must never fail the build that runs it, and a racing
            // sweeper (or the owner's own clean-up) may be removing the same entry.
            let _ = if meta.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
    Ok(usage)
}
