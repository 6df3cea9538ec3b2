//! Diff -> OCI layer tar, streamed into the content store in one pass.
//!
//! Input is a diff in overlay form (an upper dir: whiteouts are char devices 0/0, opaque
//! directories carry `trusted.overlay.opaque` or `user.overlay.opaque`), a pair of full
//! trees (native snapshots: what changed from `lower` to `upper`), or a whole tree (an
//! import). Output follows the OCI layer spec: deletions as `.wh.NAME`, opaque
//! directories as `.wh..wh..opq`, hard links as links, xattrs as PAX records only where
//! there are some; entries sorted; no atime or ctime; mtimes clamped to
//! `source_date_epoch` when given. The tar's sha256 (the diff_id) and, when compressed,
//! the compressed blob's sha256 (the digest) are computed while the bytes stream through;
//! nothing is held in memory.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::content::{BlobWriter, ContentStore};
use crate::digest::{Digest, HashingWriter};
use crate::error::{StoreError, io};
use crate::tree_copy::xattrs_of;

/// How to compress a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`): the local store's form.
    None,
    /// gzip at `level` (0-9) on `threads` threads (1 = single-threaded zlib-rs).
    Gzip {
        /// Compression level, 0-9.
        level: u32,
        /// Threads; more than one compresses blocks in parallel (pigz-style).
        threads: usize,
    },
    /// zstd at `level` on `threads` workers.
    Zstd {
        /// Compression level, 1-22.
        level: i32,
        /// Worker threads (0 = single-threaded).
        threads: u32,
    },
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// gzip at level 6 on every core: the default for archives and pushes.
    pub fn default_gzip() -> Compression {
        Compression::Gzip {
            level: 6,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// What the layer is made from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// An overlay upper dir: it holds exactly the changes.
    Overlay(&'a Path),
    /// Two full trees: the changes from `lower` (none: empty) to `upper`.
    Trees {
        /// The tree before.
        lower: Option<&'a Path>,
        /// The tree after.
        upper: &'a Path,
    },
}

/// Options for writing a layer.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// How to compress.
    pub compression: Compression,
    /// Clamp every mtime to at most this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::None,
            source_date_epoch: None,
        }
    }
}

/// A written layer blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerInfo {
    /// The blob's digest (of the compressed bytes).
    pub digest: Digest,
    /// The uncompressed tar's digest.
    pub diff_id: Digest,
    /// The blob's size.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
}

/// One entry of the layer, before it is written.
enum Item {
    /// A file, dir, link, device or fifo taken from `host`.
    Path { host: PathBuf },
    /// `.wh.NAME`.
    Whiteout,
    /// `.wh..wh..opq` inside a directory.
    Opaque,
}

/// Writes the layer for `source` into `content` and returns its digests.
pub fn write_layer(
    source: DiffSource<'_>,
    content: &ContentStore,
    options: &LayerOptions,
) -> Result<LayerInfo, StoreError> {
    let items = match source {
        DiffSource::Overlay(upper) => overlay_items(upper)?,
        DiffSource::Trees { lower, upper } => tree_items(lower, upper)?,
    };
    let blob = content.writer()?;
    let tmp_err = |source: io::Error| StoreError::Io {
        path: PathBuf::from("<layer>"),
        source,
    };
    match options.compression {
        Compression::None => {
            // The blob's own digest is the diff_id: hash the bytes once, not twice.
            let blob = write_tar(&items, blob, options)?;
            let (digest, size) = blob.commit(None)?;
            Ok(LayerInfo {
                diff_id: digest.clone(),
                digest,
                size,
                media_type: options.compression.media_type().to_owned(),
            })
        }
        Compression::Gzip { level, threads } => {
            let level = gzp::Compression::new(level.min(9));
            let gz: Box<dyn gzp::ZWriter<BlobWriter>> = if threads > 1 {
                gzp::ZBuilder::<gzp::deflate::Gzip, BlobWriter>::new()
                    .num_threads(threads)
                    .compression_level(level)
                    .from_writer(blob)
            } else {
                gzp::ZBuilder::<gzp::deflate::Gzip, BlobWriter>::new()
                    .num_threads(1)
                    .compression_level(level)
                    .from_writer(blob)
            };
            let hashing = write_tar(&items, HashingWriter::new(gz), options)?;
            let (diff_id, _, mut gz) = hashing.finish();
            let blob = gz
                .finish()
                .map_err(|e| tmp_err(io::Error::other(e.to_string())))?;
            let (digest, size) = blob.commit(None)?;
            Ok(LayerInfo {
                digest,
                diff_id,
                size,
                media_type: options.compression.media_type().to_owned(),
            })
        }
        Compression::Zstd { level, threads } => {
            let mut encoder = zstd::stream::write::Encoder::new(blob, level).map_err(tmp_err)?;
            if threads > 0 {
                encoder.multithread(threads).map_err(tmp_err)?;
            }
            let hashing = write_tar(&items, HashingWriter::new(encoder), options)?;
            let (diff_id, _, encoder) = hashing.finish();
            let blob = encoder.finish().map_err(tmp_err)?;
            let (digest, size) = blob.commit(None)?;
            Ok(LayerInfo {
                digest,
                diff_id,
                size,
                media_type: options.compression.media_type().to_owned(),
            })
        }
    }
}

/// Compresses an existing uncompressed tar (`diff_id` is its digest) into a new blob.
pub fn compress_blob(
    source: &mut dyn io::Read,
    diff_id: &Digest,
    content: &ContentStore,
    compression: Compression,
) -> Result<LayerInfo, StoreError> {
    let blob = content.writer()?;
    let err = |source: io::Error| StoreError::Io {
        path: PathBuf::from(diff_id.as_str()),
        source,
    };
    let blob = match compression {
        Compression::None => {
            let mut blob = blob;
            io::copy(source, &mut blob).map_err(err)?;
            blob
        }
        Compression::Gzip { level, threads } => {
            let mut gz = gzp::ZBuilder::<gzp::deflate::Gzip, BlobWriter>::new()
                .num_threads(threads.max(1))
                .compression_level(gzp::Compression::new(level.min(9)))
                .from_writer(blob);
            io::copy(source, &mut gz).map_err(err)?;
            gz.finish()
                .map_err(|e| err(io::Error::other(e.to_string())))?
        }
        Compression::Zstd { level, threads } => {
            let mut encoder = zstd::stream::write::Encoder::new(blob, level).map_err(err)?;
            if threads > 0 {
                encoder.multithread(threads).map_err(err)?;
            }
            io::copy(source, &mut encoder).map_err(err)?;
            encoder.finish().map_err(err)?
        }
    };
    let (digest, size) = blob.commit(None)?;
    Ok(LayerInfo {
        digest,
        diff_id: diff_id.clone(),
        size,
        media_type: compression.media_type().to_owned(),
    })
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|n| matches!(xattr::get(path, n), Ok(Some(v)) if v == b"y"))
}

/// Every entry of an upper dir, sorted by path.
fn overlay_items(upper: &Path) -> Result<BTreeMap<String, Item>, StoreError> {
    let mut items = BTreeMap::new();
    for entry in walkdir::WalkDir::new(upper)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| StoreError::Io {
            path: upper.to_owned(),
            source: e.into(),
        })?;
        let rel = relative(upper, entry.path());
        let m = entry.path().symlink_metadata().map_err(io(entry.path()))?;
        if is_whiteout(&m) {
            items.insert(whiteout_name(&rel), Item::Whiteout);
            continue;
        }
        if m.is_dir() && is_opaque(entry.path()) {
            items.insert(format!("{rel}/.wh..wh..opq"), Item::Opaque);
        }
        items.insert(
            rel,
            Item::Path {
                host: entry.path().to_owned(),
            },
        );
    }
    Ok(items)
}

/// What changed from `lower` to `upper` (two full trees), sorted by path.
fn tree_items(lower: Option<&Path>, upper: &Path) -> Result<BTreeMap<String, Item>, StoreError> {
    let mut items = BTreeMap::new();
    for entry in walkdir::WalkDir::new(upper)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| StoreError::Io {
            path: upper.to_owned(),
            source: e.into(),
        })?;
        let rel = relative(upper, entry.path());
        let m = entry.path().symlink_metadata().map_err(io(entry.path()))?;
        let changed = match lower.map(|l| l.join(&rel)) {
            None => true,
            Some(before) => match before.symlink_metadata() {
                Err(_) => true,
                Ok(b) => differs(&before, &b, entry.path(), &m),
            },
        };
        if changed {
            // The directories on the way must be in the layer too.
            let mut parent = rel.as_str();
            while let Some(pos) = parent.rfind('/') {
                parent = &parent[..pos];
                items
                    .entry(parent.to_owned())
                    .or_insert_with(|| Item::Path {
                        host: upper.join(parent),
                    });
            }
            items.insert(
                rel,
                Item::Path {
                    host: entry.path().to_owned(),
                },
            );
        }
    }
    if let Some(lower) = lower {
        let mut walker = walkdir::WalkDir::new(lower)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter();
        while let Some(entry) = walker.next() {
            let entry = entry.map_err(|e| StoreError::Io {
                path: lower.to_owned(),
                source: e.into(),
            })?;
            let rel = relative(lower, entry.path());
            if upper.join(&rel).symlink_metadata().is_err() {
                items.insert(whiteout_name(&rel), Item::Whiteout);
                if entry.file_type().is_dir() {
                    // One whiteout deletes the whole directory.
                    walker.skip_current_dir();
                }
            }
        }
    }
    Ok(items)
}

fn differs(a_path: &Path, a: &fs::Metadata, b_path: &Path, b: &fs::Metadata) -> bool {
    if a.file_type() != b.file_type()
        || a.mode() != b.mode()
        || a.uid() != b.uid()
        || a.gid() != b.gid()
        || a.rdev() != b.rdev()
    {
        return true;
    }
    if a.is_dir() {
        return xattrs_of(a_path) != xattrs_of(b_path);
    }
    if a.file_type().is_symlink() {
        return fs::read_link(a_path).ok() != fs::read_link(b_path).ok();
    }
    a.len() != b.len()
        || a.mtime() != b.mtime()
        || a.mtime_nsec() != b.mtime_nsec()
        || xattrs_of(a_path) != xattrs_of(b_path)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn whiteout_name(rel: &str) -> String {
    match rel.rfind('/') {
        Some(pos) => format!("{}/.wh.{}", &rel[..pos], &rel[pos + 1..]),
        None => format!(".wh.{rel}"),
    }
}

fn write_tar<W: Write>(
    items: &BTreeMap<String, Item>,
    out: W,
    options: &LayerOptions,
) -> Result<W, StoreError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let clamp = |t: i64| -> u64 {
        let t = t.max(0);
        match options.source_date_epoch {
            Some(epoch) => t.min(epoch.max(0)) as u64,
            None => t as u64,
        }
    };
    let err = |path: &str| {
        let path = PathBuf::from(path);
        move |source: io::Error| StoreError::Io { path, source }
    };
    for (rel, item) in items {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match item {
            Item::Whiteout | Item::Opaque => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(0);
                builder
                    .append_data(&mut header, rel, io::empty())
                    .map_err(err(rel))?;
            }
            Item::Path { host } => {
                let m = host.symlink_metadata().map_err(io(host))?;
                let ft = m.file_type();
                header.set_uid(u64::from(m.uid()));
                header.set_gid(u64::from(m.gid()));
                header.set_mode(m.mode() & 0o7777);
                header.set_mtime(clamp(m.mtime()));
                let xattrs = if ft.is_symlink() {
                    Vec::new()
                } else {
                    xattrs_of(host)
                };
                if !xattrs.is_empty() {
                    let records: Vec<(String, Vec<u8>)> = xattrs
                        .iter()
                        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
                        .collect();
                    builder
                        .append_pax_extensions(
                            records.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                        )
                        .map_err(err(rel))?;
                }
                if ft.is_dir() {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{rel}/"), io::empty())
                        .map_err(err(rel))?;
                } else if ft.is_symlink() {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    let target = fs::read_link(host).map_err(io(host))?;
                    builder
                        .append_link(&mut header, rel, target)
                        .map_err(err(rel))?;
                } else if ft.is_file() {
                    if m.nlink() > 1 {
                        if let Some(first) = links.get(&(m.dev(), m.ino())) {
                            header.set_entry_type(tar::EntryType::Link);
                            header.set_size(0);
                            builder
                                .append_link(&mut header, rel, first)
                                .map_err(err(rel))?;
                            continue;
                        }
                        links.insert((m.dev(), m.ino()), rel.clone());
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(m.len());
                    let file = fs::File::open(host).map_err(io(host))?;
                    builder
                        .append_data(&mut header, rel, file)
                        .map_err(err(rel))?;
                } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                    header.set_entry_type(if ft.is_char_device() {
                        tar::EntryType::Char
                    } else if ft.is_block_device() {
                        tar::EntryType::Block
                    } else {
                        tar::EntryType::Fifo
                    });
                    header.set_size(0);
                    let rdev = m.rdev();
                    header
                        .set_device_major(nix::sys::stat::major(rdev) as u32)
                        .map_err(err(rel))?;
                    header
                        .set_device_minor(nix::sys::stat::minor(rdev) as u32)
                        .map_err(err(rel))?;
                    builder
                        .append_data(&mut header, rel, io::empty())
                        .map_err(err(rel))?;
                }
                // Sockets are not content: left out.
            }
        }
    }
    builder.into_inner().map_err(err("<end of layer>"))
}
