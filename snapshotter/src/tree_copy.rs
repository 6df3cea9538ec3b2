//! Copying a whole tree with everything a layer records (owners, modes, times, xattrs,
//! hard links, devices), and applying such metadata to one path. The native snapshotter
//! copies parents with it; layer extraction uses the metadata part.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{StoreError, io};

/// Metadata to put on a path.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime_sec: i64,
    pub(crate) mtime_nsec: i64,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
    pub(crate) is_symlink: bool,
}

/// Sets owner, then mode (chown clears setuid bits), xattrs and mtime, never following a
/// symlink at `path`.
pub(crate) fn apply_meta(path: &Path, meta: &Meta) -> Result<(), StoreError> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).map_err(io(path))?;
    if !meta.is_symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777))
            .map_err(io(path))?;
        for (name, value) in &meta.xattrs {
            xattr::set(path, name, value).map_err(io(path))?;
        }
    }
    set_mtime(path, meta.mtime_sec, meta.mtime_nsec)
}

pub(crate) fn set_mtime(path: &Path, sec: i64, nsec: i64) -> Result<(), StoreError> {
    let time = TimeSpec::new(sec, nsec);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Makes a device node or fifo.
pub(crate) fn make_node(path: &Path, kind: SFlag, mode: u32, rdev: u64) -> Result<(), StoreError> {
    mknod(path, kind, Mode::from_bits_truncate(mode & 0o7777), rdev).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// The xattrs of `path` (not following a symlink), except overlayfs's own.
pub(crate) fn xattrs_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(path, &name) {
            out.push((name, value));
        }
    }
    out.sort();
    out
}

fn meta_of(path: &Path, m: &fs::Metadata) -> Meta {
    Meta {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime_sec: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
        xattrs: xattrs_of(path),
        is_symlink: m.file_type().is_symlink(),
    }
}

/// Copies the tree at `from` into the (existing, empty) directory `to`.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    copy_tree_into(from, to, false)
}

/// Copies `from` over `to`, which may already hold files: a directory that exists takes
/// the copied one's metadata, anything else in the way is replaced.
pub(crate) fn copy_tree_into(from: &Path, to: &Path, overwrite: bool) -> Result<(), StoreError> {
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| StoreError::Io {
            path: from.to_owned(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let dest = to.join(rel);
        let m = entry.path().symlink_metadata().map_err(io(entry.path()))?;
        let ft = m.file_type();
        if overwrite && let Ok(existing) = dest.symlink_metadata() {
            if existing.is_dir() && ft.is_dir() {
                dirs.push((dest, meta_of(entry.path(), &m)));
                continue;
            }
            if existing.is_dir() {
                fs::remove_dir_all(&dest).map_err(io(&dest))?;
            } else {
                fs::remove_file(&dest).map_err(io(&dest))?;
            }
        }
        if ft.is_dir() {
            fs::create_dir(&dest).map_err(io(&dest))?;
            dirs.push((dest, meta_of(entry.path(), &m)));
            continue;
        }
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &dest).map_err(io(&dest))?;
                continue;
            }
            links.insert((m.dev(), m.ino()), dest.clone());
        }
        if ft.is_symlink() {
            let target = fs::read_link(entry.path()).map_err(io(entry.path()))?;
            std::os::unix::fs::symlink(target, &dest).map_err(io(&dest))?;
        } else if ft.is_file() {
            fs::copy(entry.path(), &dest).map_err(io(&dest))?;
        } else if ft.is_char_device() {
            make_node(&dest, SFlag::S_IFCHR, m.mode(), m.rdev())?;
        } else if ft.is_block_device() {
            make_node(&dest, SFlag::S_IFBLK, m.mode(), m.rdev())?;
        } else if ft.is_fifo() {
            make_node(&dest, SFlag::S_IFIFO, m.mode(), 0)?;
        } else {
            // Sockets are not content.
            continue;
        }
        apply_meta(&dest, &meta_of(entry.path(), &m))?;
    }
    // Directories last and deepest first, so writing their children does not change
    // the times just set.
    for (dest, meta) in dirs.iter().rev() {
        apply_meta(dest, meta)?;
    }
    let root_meta = from.symlink_metadata().map_err(io(from))?;
    apply_meta(to, &meta_of(from, &root_meta))
}

/// Bytes used by the files under `dir` (each hard-linked file once).
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.path().symlink_metadata().ok())
        .filter(|m| m.is_file() && seen.insert((m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum()
}
