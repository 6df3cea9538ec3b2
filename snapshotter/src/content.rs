//! The content store: blobs addressed by their sha256 under `content/blobs/sha256/`.
//!
//! A blob becomes visible only when it is complete and verified: [`BlobWriter`] streams
//! into a temp file under the store's `tmp/`, hashing as it goes, and
//! [`BlobWriter::commit`] checks the digest (and the expected one, if given), fsyncs,
//! renames into place and fsyncs the directory. Writing a blob that exists is a no-op
//! commit, so two builds producing the same layer do not race.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::StoreError;
use crate::fsutil;

/// The blob area of a store.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl ContentStore {
    pub(crate) fn new(content: &Path, tmp: &Path) -> ContentStore {
        ContentStore {
            blobs: content.join("blobs/sha256"),
            tmp: tmp.to_owned(),
        }
    }

    /// Where the blob lives (it may not exist).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The blob's size, when present.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Opens the blob for reading.
    pub fn open(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.path(digest);
        File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound {
                digest: digest.clone(),
            },
            _ => StoreError::Io { path, source },
        })
    }

    /// Reads a small blob (a manifest or config) whole.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut self.open(digest)?, &mut bytes).map_err(|source| {
            StoreError::Io {
                path: self.path(digest),
                source,
            }
        })?;
        if Digest::of(&bytes) != *digest {
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
            });
        }
        Ok(bytes)
    }

    /// Starts writing a blob.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        fs::create_dir_all(&self.tmp).map_err(|source| StoreError::Io {
            path: self.tmp.clone(),
            source,
        })?;
        let file = tempfile::NamedTempFile::new_in(&self.tmp).map_err(|source| StoreError::Io {
            path: self.tmp.clone(),
            source,
        })?;
        let handle = file.reopen().map_err(|source| StoreError::Io {
            path: file.path().to_owned(),
            source,
        })?;
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, handle)),
            temp: file,
            blobs: self.blobs.clone(),
        })
    }

    /// Writes a small blob at once and returns its digest.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(|source| StoreError::Io {
            path: self.tmp.clone(),
            source,
        })?;
        Ok(w.commit(None)?.0)
    }

    /// Every blob's digest.
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let entries = match fs::read_dir(&self.blobs) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.blobs.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")))
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob; returns the bytes freed.
    pub fn delete(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.path(digest);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

/// A blob being written; invisible until [`BlobWriter::commit`].
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<File>>,
    temp: tempfile::NamedTempFile,
    blobs: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Verifies, fsyncs and renames the blob into place; returns its digest and size.
    /// With `expected`, a different digest is an error and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        let (digest, size, buffered) = self.inner.finish();
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let file = buffered.into_inner().map_err(|e| StoreError::Io {
            path: self.temp.path().to_owned(),
            source: e.into_error(),
        })?;
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let target = self.blobs.join(digest.hex());
        if target.is_file() {
            return Ok((digest, size));
        }
        file.sync_all().map_err(io_err(self.temp.path()))?;
        fs::create_dir_all(&self.blobs).map_err(io_err(&self.blobs))?;
        self.temp.persist(&target).map_err(|e| StoreError::Io {
            path: target.clone(),
            source: e.error,
        })?;
        fsutil::sync_parent(&target).map_err(io_err(&target))?;
        Ok((digest, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ContentStore::new(&dir.path().join("content"), &dir.path().join("tmp"));
        (dir, s)
    }

    #[test]
    fn write_read_list_delete() {
        let (_dir, s) = store();
        let d = s.write_bytes(b"{}").expect("write");
        assert_eq!(d, Digest::of(b"{}"));
        assert_eq!(s.read(&d).expect("read"), b"{}");
        assert_eq!(s.list().expect("list"), vec![d.clone()]);
        // Writing it again is a no-op.
        assert_eq!(s.write_bytes(b"{}").expect("write again"), d);
        assert_eq!(s.delete(&d).expect("delete"), 2);
        assert!(!s.exists(&d));
    }

    #[test]
    fn a_wrong_expected_digest_stores_nothing() {
        let (dir, s) = store();
        let mut w = s.writer().expect("writer");
        w.write_all(b"data").expect("write");
        let err = w.commit(Some(&Digest::of(b"other"))).expect_err("mismatch");
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(s.list().expect("list").is_empty());
        // The temp file is gone too.
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn a_dropped_writer_leaves_nothing() {
        let (dir, s) = store();
        let mut w = s.writer().expect("writer");
        w.write_all(b"half").expect("write");
        drop(w);
        assert!(s.list().expect("list").is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }
}
