//! Small durable-write helpers: everything the store writes goes through a temp file in
//! the store, an fsync, a rename, and an fsync of the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file in `tmp_dir`, same filesystem).
pub(crate) fn write_atomic(path: &Path, tmp_dir: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(tmp_dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_parent(path)
}

/// Like [`write_atomic`] without the fsyncs: readers see the old file or the new one,
/// but after a crash the file may be gone or empty. For files whose loss only costs work
/// (an active snapshot's metadata: one that cannot be read counts as uncommitted).
pub(crate) fn write_replace(path: &Path, tmp_dir: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(tmp_dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// fsyncs the directory holding `path`, so a rename into it survives a crash.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
