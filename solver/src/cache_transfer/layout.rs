//! The cache in an OCI image layout directory (`type=local`): `oci-layout`,
//! `index.json` (the manifest tagged with `org.opencontainers.image.ref.name`) and
//! `blobs/sha256/…`.
//!
//! Writing: every file through [`write_to_file`] (a temp file beside it, fsync, rename),
//! blobs first and `index.json` last, so a reader sees the old cache or the new one;
//! blobs already there with the right size are kept (content-addressed), other tags of
//! `index.json` too. Reading: the directory is untrusted: sizes are bounded, every blob
//! is checked against its digest and size before it is used.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_image::file::write_to_file;
use kiln_image::image::{Manifest, OCI_MANIFEST};
use kiln_snapshotter::{Descriptor, Digest, Store, StoreError};
use sha2::{Digest as _, Sha256};

use super::TransferError;

/// The annotation that tags a manifest in `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The most `index.json` or a manifest may hold.
const MAX_SMALL: u64 = 4 << 20;
/// The most a record may hold.
pub(crate) const MAX_RECORD: u64 = 64 << 20;

/// A layout directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_owned(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        // A parsed Digest is `sha256:` and 64 hex digits: no path tricks.
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Whether there is a layout at all (no `index.json`: nothing exported there yet).
    pub(crate) fn exists(&self) -> bool {
        self.index_path().exists()
    }

    /// Opens a blob of the layout, refusing anything but a regular file of `size` bytes.
    pub(crate) fn open_blob(&self, digest: &Digest, size: u64) -> Result<File, TransferError> {
        let path = self.blob_path(digest);
        let bad = |reason: String| TransferError::Blob {
            digest: digest.clone(),
            reason,
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => bad("the cache does not have it".to_owned()),
            _ => bad(format!("{}: {e}", path.display())),
        })?;
        if !meta.is_file() {
            return Err(bad("it is not a regular file".to_owned()));
        }
        if meta.len() != size {
            return Err(bad(format!(
                "it has {} bytes, the cache's manifest says {size}",
                meta.len()
            )));
        }
        File::open(&path).map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// Reads a small blob whole, checking its size and digest.
    pub(crate) fn read_blob(
        &self,
        digest: &Digest,
        size: u64,
        max: u64,
    ) -> Result<Vec<u8>, TransferError> {
        if size > max {
            return Err(TransferError::Blob {
                digest: digest.clone(),
                reason: format!("it is {size} bytes; kiln reads at most {max} for it"),
            });
        }
        let mut bytes = Vec::new();
        self.open_blob(digest, size)?
            .take(size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| TransferError::Blob {
                digest: digest.clone(),
                reason: e.to_string(),
            })?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if bytes.len() as u64 != size || actual != digest.as_str() {
            return Err(TransferError::Blob {
                digest: digest.clone(),
                reason: format!("its content does not match its digest (it is {actual})"),
            });
        }
        Ok(bytes)
    }

    /// The manifest tagged `tag` in `index.json`, read and checked.
    pub(crate) fn manifest(&self, tag: &str) -> Result<Manifest, TransferError> {
        let path = self.index_path();
        let bad = |reason: String| TransferError::Layout {
            path: self.dir.clone(),
            reason,
        };
        let index = read_bounded(&path, MAX_SMALL).map_err(|e| bad(format!("index.json: {e}")))?;
        let index: serde_json::Value = serde_json::from_slice(&index)
            .map_err(|e| bad(format!("index.json is not JSON: {e}")))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = manifests
            .iter()
            .find(|m| m["annotations"][REF_NAME] == tag)
            .ok_or_else(|| {
                let tags: Vec<&str> = manifests
                    .iter()
                    .filter_map(|m| m["annotations"][REF_NAME].as_str())
                    .collect();
                bad(format!(
                    "index.json has no manifest tagged {tag:?} (its tags: {}); give tag=",
                    if tags.is_empty() {
                        "none".to_owned()
                    } else {
                        tags.join(", ")
                    }
                ))
            })?;
        let descriptor: Descriptor = serde_json::from_value(chosen.clone())
            .map_err(|e| bad(format!("index.json: the entry for {tag:?} is damaged: {e}")))?;
        let bytes = self.read_blob(&descriptor.digest, descriptor.size, MAX_SMALL)?;
        serde_json::from_slice(&bytes).map_err(|e| TransferError::Blob {
            digest: descriptor.digest.clone(),
            reason: format!("it is not an OCI image manifest: {e}"),
        })
    }

    /// Copies a store blob into the layout, unless a file of its size is there.
    /// Returns the bytes written.
    pub(crate) fn put_store_blob(
        &self,
        store: &Store,
        digest: &Digest,
        size: u64,
    ) -> Result<u64, TransferError> {
        let target = self.blob_path(digest);
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok(0);
        }
        write_to_file(&target, |out| -> Result<(), TransferError> {
            let mut blob = store.content().open(digest)?;
            if blob.len() != size {
                return Err(StoreError::Corrupt {
                    digest: digest.clone(),
                }
                .into());
            }
            // The BlobReader fails the read that reaches the end on a digest mismatch.
            io::copy(&mut blob, out).map_err(|source| {
                match kiln_snapshotter::damaged_blob(&source) {
                    Some(digest) => TransferError::Store(StoreError::Corrupt { digest }),
                    None => TransferError::Io {
                        path: target.clone(),
                        source,
                    },
                }
            })?;
            Ok(())
        })??;
        Ok(size)
    }

    /// Writes small bytes as a blob; returns its descriptor's digest and the bytes written.
    pub(crate) fn put_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), TransferError> {
        let digest = Digest::of(bytes);
        let target = self.blob_path(&digest);
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        {
            return Ok((digest, 0));
        }
        write_to_file(&target, |out| {
            out.write_all(bytes).map_err(|source| TransferError::Io {
                path: target.clone(),
                source,
            })
        })??;
        Ok((digest, bytes.len() as u64))
    }

    /// Creates the directories a layout needs.
    pub(crate) fn create(&self) -> Result<(), TransferError> {
        let blobs = self.dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|source| TransferError::Io {
            path: blobs.clone(),
            source,
        })
    }

    /// Writes `oci-layout` and tags the manifest `tag` in `index.json` (other tags kept),
    /// then fsyncs the directory: the last step of an export.
    pub(crate) fn tag(&self, tag: &str, manifest: Descriptor) -> Result<(), TransferError> {
        let layout = self.dir.join("oci-layout");
        write_to_file(&layout, |out| {
            out.write_all(OCI_LAYOUT)
                .map_err(|source| TransferError::Io {
                    path: layout.clone(),
                    source,
                })
        })??;
        let path = self.index_path();
        let mut index = match read_bounded(&path, MAX_SMALL) {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .filter(|v| v["manifests"].is_array())
                .ok_or_else(|| TransferError::Layout {
                    path: self.dir.clone(),
                    reason:
                        "index.json is not an OCI image index; remove it or choose another dest"
                            .to_owned(),
                })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [],
            }),
            Err(source) => return Err(TransferError::Io { path, source }),
        };
        let mut entry = manifest;
        entry
            .annotations
            .insert(REF_NAME.to_owned(), tag.to_owned());
        let entry = serde_json::to_value(&entry).expect("a descriptor serialises");
        if let Some(list) = index["manifests"].as_array_mut() {
            list.retain(|m| m["annotations"][REF_NAME] != tag);
            list.push(entry);
        }
        let bytes = serde_json::to_vec(&index).expect("an index serialises");
        write_to_file(&path, |out| {
            out.write_all(&bytes).map_err(|source| TransferError::Io {
                path: path.clone(),
                source,
            })
        })??;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| TransferError::Io {
                path: self.dir.clone(),
                source,
            })
    }
}

/// A manifest's descriptor as `index.json` lists it.
pub(crate) fn manifest_descriptor(digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: OCI_MANIFEST.to_owned(),
        digest,
        size,
        annotations: Default::default(),
    }
}

/// Reads a regular file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(io::Error::other(format!(
            "{} bytes; kiln reads at most {max}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}
