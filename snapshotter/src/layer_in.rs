//! OCI layer tar -> a snapshot's diff dir, extracted safely.
//!
//! The archive may be plain, gzip or zstd (told apart by their magic bytes). Whiteouts
//! become the target's form: for an overlay diff, `.wh.NAME` becomes a character device
//! 0/0 and `.wh..wh..opq` the `trusted.overlay.opaque` mark; for a full tree (native),
//! they delete what they name. Nothing outside the target is ever touched: entries with
//! `..` or an absolute path are refused, as are hard links to anything outside, and any
//! entry whose parent path crosses a symlink (a symlink, then a file written through
//! it). Refusals name the entry. A later entry for the same path replaces an earlier one,
//! as tar does.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::SFlag;

use crate::error::{StoreError, io};
use crate::tree_copy::{self, Meta};

/// How deletions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutStyle {
    /// As overlayfs reads them (the target is an upper dir over the parent chain).
    Overlay,
    /// By deleting (the target is a full copy of the parent tree).
    Delete,
    /// Not at all: `.wh.` names are plain files (an archive `ADD` extracts, not a layer).
    Literal,
}

/// What an extraction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Opens a layer (or an archive) for reading whatever its compression: gzip, zstd,
/// bzip2, xz or none.
pub fn decompress<R: Read + 'static>(reader: R) -> Result<Box<dyn Read>, StoreError> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let magic = reader.fill_buf().map_err(io("<layer>"))?.to_vec();
    if magic.starts_with(b"BZh") {
        Ok(Box::new(bzip2::read::MultiBzDecoder::new(reader)))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(Box::new(xz4rust::XzReader::new(reader)))
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(
            zstd::stream::read::Decoder::with_buffer(reader).map_err(io("<layer>"))?,
        ))
    } else {
        Ok(Box::new(reader))
    }
}

fn refuse(entry: &str, reason: &str) -> StoreError {
    StoreError::UnsafeEntry {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The entry's path as clean relative parts, or a refusal.
fn clean_parts(raw: &str) -> Result<Vec<String>, StoreError> {
    let path = Path::new(raw);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(raw, "absolute paths are not allowed in a layer"));
            }
            Component::ParentDir => {
                return Err(refuse(raw, "`..` would leave the layer's root"));
            }
        }
    }
    Ok(parts)
}

/// `root/parts[..]`, checking that no existing parent on the way is a symlink (which
/// would make the write land wherever the link points).
fn confined(root: &Path, parts: &[String], raw: &str) -> Result<PathBuf, StoreError> {
    let mut path = root.to_owned();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        if i + 1 == parts.len() {
            break;
        }
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(
                    raw,
                    "a parent directory is a symlink; writing through it could leave the layer's root",
                ));
            }
            Ok(m) if !m.is_dir() => {
                // A file where a directory is needed: replace it, as tar does.
                fs::remove_file(&path).map_err(io(&path))?;
                fs::create_dir(&path).map_err(io(&path))?;
            }
            Ok(_) => {}
            Err(_) => fs::create_dir(&path).map_err(io(&path))?,
        }
    }
    Ok(path)
}

fn remove_any(path: &Path) -> Result<(), StoreError> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io(path)),
        Ok(_) => fs::remove_file(path).map_err(io(path)),
        Err(_) => Ok(()),
    }
}

/// Whether `path` is a tar archive (plain or compressed), judged by its content as
/// BuildKit's `ADD` does: the first 512 bytes after decompression are a valid tar header.
pub fn is_tar_archive(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let Ok(mut reader) = decompress(file) else {
        return false;
    };
    let mut block = [0u8; 512];
    if reader.read_exact(&mut block).is_err() {
        return false;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    stored == Some(computed) && block[..100].iter().any(|b| *b != 0)
}

/// Extracts an archive (`ADD app.tar.gz /dest`) into `root` with the same refusals as a
/// layer (nothing outside `root`), names taken literally, owners replaced by `owner`
/// when given.
pub fn extract_archive(
    reader: impl Read + 'static,
    root: &Path,
    owner: Option<(u32, u32)>,
) -> Result<ApplyStats, StoreError> {
    apply(reader, root, WhiteoutStyle::Literal, owner)
}

/// Extracts the layer read from `reader` into `root`.
pub fn apply_layer(
    reader: impl Read + 'static,
    root: &Path,
    style: WhiteoutStyle,
) -> Result<ApplyStats, StoreError> {
    apply(reader, root, style, None)
}

fn apply(
    reader: impl Read + 'static,
    root: &Path,
    style: WhiteoutStyle,
    owner: Option<(u32, u32)>,
) -> Result<ApplyStats, StoreError> {
    let mut archive = tar::Archive::new(decompress(reader)?);
    let mut stats = ApplyStats::default();
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(io("<layer>"))?;
    for entry in entries {
        let mut entry = entry.map_err(io("<layer>"))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts = clean_parts(&raw)?;
        let Some(name) = parts.last().cloned() else {
            continue; // the root itself
        };
        let header = entry.header().clone();
        let kind = header.entry_type();

        if name == ".wh..wh..opq" && style != WhiteoutStyle::Literal {
            let dir = confined(root, &parts[..parts.len() - 1], &raw)?;
            match dir.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(&raw, "an opaque marker inside a symlink"));
                }
                Ok(_) => {}
                Err(_) => fs::create_dir(&dir).map_err(io(&dir))?,
            }
            match style {
                WhiteoutStyle::Overlay => {
                    xattr::set(&dir, "trusted.overlay.opaque", b"y").map_err(io(&dir))?;
                }
                WhiteoutStyle::Delete | WhiteoutStyle::Literal => {
                    for child in fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
                        if !written.contains(&child.path()) {
                            remove_any(&child.path())?;
                        }
                    }
                }
            }
            continue;
        }
        if let Some(target_name) = name.strip_prefix(".wh.")
            && style != WhiteoutStyle::Literal
        {
            let mut target_parts = parts.clone();
            if let Some(last) = target_parts.last_mut() {
                *last = target_name.to_owned();
            }
            let path = confined(root, &target_parts, &raw)?;
            remove_any(&path)?;
            if style == WhiteoutStyle::Overlay {
                tree_copy::make_node(&path, SFlag::S_IFCHR, 0, 0)?;
            }
            continue;
        }

        let path = confined(root, &parts, &raw)?;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let mut meta = Meta {
            mode: header.mode().unwrap_or(0o644),
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mtime_sec: mtime,
            mtime_nsec: 0,
            xattrs: Vec::new(),
            is_symlink: false,
        };
        if let Some((uid, gid)) = owner {
            meta.uid = uid;
            meta.gid = gid;
        }
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let (Ok(key), value) = (ext.key(), ext.value_bytes()) {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        meta.xattrs.push((name.to_owned(), value.to_vec()));
                    } else if key == "mtime"
                        && let Some(t) = ext
                            .value()
                            .ok()
                            .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                    {
                        meta.mtime_sec = t;
                    }
                }
            }
        }
        match kind {
            tar::EntryType::Directory => {
                match path.symlink_metadata() {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&path).map_err(io(&path))?;
                        fs::create_dir(&path).map_err(io(&path))?;
                    }
                    Err(_) => fs::create_dir(&path).map_err(io(&path))?,
                }
                dirs.push((path.clone(), meta));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&path)?;
                let mut file = fs::File::create(&path).map_err(io(&path))?;
                stats.bytes += io::copy(&mut entry, &mut file).map_err(io(&path))?;
                drop(file);
                tree_copy::apply_meta(&path, &meta)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io(&path))?
                    .ok_or_else(|| refuse(&raw, "a symlink without a target"))?;
                remove_any(&path)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io(&path))?;
                meta.is_symlink = true;
                tree_copy::apply_meta(&path, &meta)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io(&path))?
                    .ok_or_else(|| refuse(&raw, "a hard link without a target"))?;
                let target_raw = target.to_string_lossy().into_owned();
                let target_parts = clean_parts(&target_raw)
                    .map_err(|_| refuse(&raw, "its hard-link target leaves the layer's root"))?;
                let target_path = confined(root, &target_parts, &raw)?;
                match target_path.symlink_metadata() {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(refuse(
                            &raw,
                            "its hard-link target is not a file of this layer",
                        ));
                    }
                }
                remove_any(&path)?;
                fs::hard_link(&target_path, &path).map_err(io(&path))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_any(&path)?;
                tree_copy::make_node(
                    &path,
                    flag,
                    meta.mode,
                    nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                )?;
                tree_copy::apply_meta(&path, &meta)?;
            }
            // PAX/GNU headers are consumed by the tar reader; other types carry no file.
            _ => continue,
        }
        written.insert(path);
        stats.entries += 1;
    }
    for (dir, meta) in dirs.iter().rev() {
        tree_copy::apply_meta(dir, meta)?;
    }
    Ok(stats)
}
