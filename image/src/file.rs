//! The one way kiln writes a file the user named on the host (an archive output, a
//! cache layout's blobs and index): through a temp file beside it, fsynced, renamed over
//! it only when complete — and only ever over a regular file.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

/// Why `dest` could not be written (the writer's own errors come back separately).
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// The destination is refused before anything is written.
    #[error("refusing dest {path}: {reason}")]
    Refused {
        /// The destination as given.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// The file system failed.
    #[error(
        "cannot write {path}: {source}; check that its directory exists, is writable and has space, or choose another dest"
    )]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DestError + '_ {
    move |source| DestError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes the file `dest` through a temp file beside it: `write` gets a buffered file,
/// and `dest` appears (by rename) only when `write` succeeded and the file is complete
/// and fsynced. On any failure nothing is left behind. The outer error is the file's,
/// the inner `write`'s own.
///
/// Only a regular file is ever replaced: a `dest` that exists as anything else (a
/// symlink, a device such as `/dev/stdout` or `/dev/full`, a directory, a fifo) is
/// refused before anything is written, so an output can never turn a host device or a
/// link into a file. Standard output is the caller's: pass its writer instead.
pub fn write_to_file<T, E>(
    dest: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<Result<T, E>, DestError> {
    write_to_file_with_mode(dest, 0o644, write)
}

/// [`write_to_file`] with the file's permission bits: `0o600` for what only its owner
/// may read.
pub fn write_to_file_with_mode<T, E>(
    dest: &Path,
    mode: u32,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<Result<T, E>, DestError> {
    let refuse = |reason: &str| DestError::Refused {
        path: dest.to_owned(),
        reason: reason.to_owned(),
    };
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(refuse(
                "it is a symlink; kiln replaces only regular files (give the real path, or dest=- for standard output)",
            ));
        }
        Ok(meta) if meta.is_dir() => {
            return Err(refuse("it is a directory; give a file name"));
        }
        Ok(_) => {
            return Err(refuse(
                "it exists and is not a regular file (a device, fifo or socket); kiln replaces only regular files (dest=- writes to standard output)",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dest)(e)),
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(dest.file_name().unwrap_or(dest.as_os_str()));
    prefix.push(".");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err(dest))?;
    // 0644 as File::create would make it, or the caller's mode (the temp file starts
    // private, so nothing is readable before it is set).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .map_err(io_err(dest))?;
    let file = tmp.reopen().map_err(io_err(dest))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let value = match write(&mut out) {
        Ok(value) => value,
        // Dropping `tmp` removes it.
        Err(e) => return Ok(Err(e)),
    };
    let file = out.into_inner().map_err(|e| DestError::Io {
        path: dest.to_owned(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(dest))?;
    drop(file);
    // Checked again just before the rename: only a regular file (or nothing) is replaced.
    match std::fs::symlink_metadata(dest) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(refuse(
                "it was replaced by something that is not a regular file while the output was written",
            ));
        }
        _ => {}
    }
    tmp.persist(dest).map_err(|e| io_err(dest)(e.error))?;
    Ok(Ok(value))
}
