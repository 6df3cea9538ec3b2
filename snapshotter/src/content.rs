//! The content store: blobs addressed by their sha256 under `content/blobs/sha256/`.
//!
//! A blob becomes visible only when it is complete and verified: [`BlobWriter`] streams
//! into a temp file under the store's `tmp/`, hashing as it goes, and
//! [`BlobWriter::commit`] checks the digest (and the expected one, if given), fsyncs,
//! renames into place and fsyncs the directory. Writing a blob that exists is a no-op
//! commit, so two builds producing the same layer do not race. The temp file lives in an
//! owned temp dir ([`crate::temp`]), so a writer killed half-way leaves nothing that the
//! next build or `kiln prune` does not sweep.
//!
//! Nothing read from the store is trusted either: [`ContentStore::open`] gives a
//! [`BlobReader`], which hashes while it streams and fails the read that reaches the end
//! of a blob whose bytes do not match its digest ([`StoreError::Corrupt`], naming the
//! blob). Every consumer (layer extraction, archive outputs, recompression, push) reads
//! through it; [`damaged_blob`] finds that error again inside an `io::Error`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};
use crate::error::StoreError;
use crate::fsutil;
use crate::temp::{TempDir, TempSpace};

/// The blob area of a store.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    tmp: Arc<TempSpace>,
}

impl ContentStore {
    pub(crate) fn new(content: &Path, tmp: Arc<TempSpace>) -> ContentStore {
        ContentStore {
            blobs: content.join("blobs/sha256"),
            tmp,
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

    /// Opens the blob for reading, verified as it streams: the read that reaches its end
    /// fails if the bytes do not match the digest (see [`BlobReader`]).
    pub fn open(&self, digest: &Digest) -> Result<BlobReader, StoreError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound {
                digest: digest.clone(),
            },
            _ => StoreError::Io {
                path: path.clone(),
                source,
            },
        })?;
        let len = file.metadata().map_err(crate::error::io(&path))?.len();
        Ok(BlobReader {
            file,
            path,
            digest: digest.clone(),
            hasher: Sha256::new(),
            count: 0,
            len,
            verified: false,
        })
    }

    /// Reads a small blob (a manifest or config) whole, verified.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        self.open(digest)?
            .read_to_end(&mut bytes)
            .map_err(crate::error::io(self.path(digest)))?;
        Ok(bytes)
    }

    /// Reads the whole blob and checks it against its digest.
    pub fn verify(&self, digest: &Digest) -> Result<(), StoreError> {
        let mut reader = self.open(digest)?;
        io::copy(&mut reader, &mut io::sink()).map_err(crate::error::io(self.path(digest)))?;
        Ok(())
    }

    /// Starts writing a blob.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let space = self.tmp.shared()?;
        let file =
            tempfile::NamedTempFile::new_in(space.path()).map_err(|source| StoreError::Io {
                path: space.path().to_owned(),
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
            _space: space,
        })
    }

    /// Writes a small blob at once and returns its digest.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(|source| StoreError::Io {
            path: self.tmp.root().to_owned(),
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
    /// The owned temp dir the file is in, alive while the writer is.
    _space: Arc<TempDir>,
}

/// A blob being read, hashed as it streams.
///
/// The read that reaches the end of the file returns an `io::Error` of kind
/// `InvalidData` wrapping [`StoreError::Corrupt`] when the bytes read do not have the
/// blob's digest; [`damaged_blob`] gets the digest back out of such an error. A reader
/// that stops early verifies nothing: [`BlobReader::finish`] reads the rest and checks.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    path: PathBuf,
    digest: Digest,
    hasher: Sha256,
    count: u64,
    len: u64,
    verified: bool,
}

impl BlobReader {
    /// The blob's size on disk.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads whatever is left and checks the whole blob against its digest.
    pub fn finish(mut self) -> Result<(), StoreError> {
        io::copy(&mut self, &mut io::sink()).map_err(crate::error::io(&self.path))?;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.count += n as u64;
            return Ok(n);
        }
        if buf.is_empty() || self.verified {
            return Ok(0);
        }
        let actual = hex::encode(self.hasher.clone().finalize());
        if actual != self.digest.hex() {
            return Err(damaged(&self.digest));
        }
        self.verified = true;
        Ok(0)
    }
}

/// The `io::Error` a [`BlobReader`] returns for a damaged blob.
fn damaged(digest: &Digest) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        StoreError::Corrupt {
            digest: digest.clone(),
        },
    )
}

/// The damaged blob an `io::Error` (from a [`BlobReader`], however deep in a chain of
/// readers) is about, if it is about one.
pub fn damaged_blob(error: &io::Error) -> Option<Digest> {
    let mut inner: &(dyn std::error::Error + 'static) = error.get_ref()?;
    loop {
        if let Some(StoreError::Corrupt { digest }) = inner.downcast_ref::<StoreError>() {
            return Some(digest.clone());
        }
        if let Some(io_error) = inner.downcast_ref::<io::Error>() {
            inner = io_error.get_ref()?;
            continue;
        }
        inner = inner.source()?;
    }
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
        let s = ContentStore::new(
            &dir.path().join("content"),
            TempSpace::new(&dir.path().join("tmp")),
        );
        (dir, s)
    }

    /// Files under `tmp/` but the owner locks of owned temp dirs.
    fn temp_files(root: &Path) -> usize {
        walkdir::WalkDir::new(root.join("tmp"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.file_name() != ".owner")
            .count()
    }

    #[test]
    fn a_flipped_byte_is_found_when_the_blob_is_read() {
        let (_dir, s) = store();
        let d = s.write_bytes(b"some layer bytes").expect("write");
        fs::write(s.path(&d), b"some layer bytEs").expect("damage");
        let err = s.read(&d).expect_err("damaged");
        assert!(
            matches!(&err, StoreError::Corrupt { digest } if *digest == d),
            "{err}"
        );
        assert!(err.to_string().contains(d.as_str()), "{err}");
        // Through any reader chain the damage is still recognisable.
        let mut reader = io::BufReader::new(s.open(&d).expect("open"));
        let io_err = io::copy(&mut reader, &mut io::sink()).expect_err("damaged");
        assert_eq!(damaged_blob(&io_err), Some(d.clone()));
        assert!(s.verify(&d).is_err());
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
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[test]
    fn a_dropped_writer_leaves_nothing() {
        let (dir, s) = store();
        let mut w = s.writer().expect("writer");
        w.write_all(b"half").expect("write");
        drop(w);
        assert!(s.list().expect("list").is_empty());
        assert_eq!(temp_files(dir.path()), 0);
    }
}
