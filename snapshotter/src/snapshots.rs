//! Snapshots: filesystem states, each a diff dir plus its parent chain.
//!
//! The model is containerd's. [`Snapshots::prepare`] makes an *active* snapshot on top of
//! a committed parent (or of nothing); a process may change it through the mounts that
//! [`Snapshots::mounts`] returns as data, and file operations may write into
//! [`Snapshots::diff_dir`] directly. [`Snapshots::commit`] turns it into a committed,
//! immutable snapshot, which can be a parent in turn; an active snapshot never becomes
//! committed any other way, and a committed one never changes. [`Snapshots::remove`]
//! drops either.
//!
//! Two kinds share this API and one test suite:
//!
//! | kind | diff dir holds | mounts | used when |
//! |---|---|---|---|
//! | `overlay` | only the changes (overlayfs upper dir: whiteouts are char devices 0/0, opaque dirs carry `trusted.overlay.opaque=y`) | one overlay: the parent chain as `lowerdir`, the diff as `upperdir` | the kernel has overlayfs and kiln is root (the default) |
//! | `native` | the whole tree (prepare copies the parent's) | one bind mount | no overlayfs; `--snapshotter native` |
//!
//! Overlay chains can be deeper than one page of mount options allows; ids are short
//! (12 hex digits) and the sandbox passes the lower dirs one by one (`lowerdir+`) to the
//! new mount API, so depth is not limited by the option length.
//!
//! On disk: `snapshots/<id>/fs` (the diff dir), `snapshots/<id>/work` (overlay's work
//! dir), `snapshots/<id>/meta.json` (parent, state). A crash leaves at worst an active
//! snapshot that nothing refers to; `kiln prune` removes it.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{StoreError, io};
use crate::fsutil;
use crate::tree_copy;

/// Which snapshotter a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotterKind {
    /// overlayfs: diffs are upper dirs.
    Overlay,
    /// Copies: every snapshot is a full tree.
    Native,
}

impl SnapshotterKind {
    /// overlay when this kernel has overlayfs and we may mount it (root), native otherwise.
    pub fn detect() -> SnapshotterKind {
        let has_overlay = fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.trim_end().ends_with("overlay")))
            .unwrap_or(false);
        if has_overlay && nix::unistd::geteuid().is_root() {
            SnapshotterKind::Overlay
        } else {
            SnapshotterKind::Native
        }
    }

    /// Parses `overlay` or `native`.
    pub fn parse(text: &str) -> Option<SnapshotterKind> {
        match text {
            "overlay" | "overlayfs" => Some(SnapshotterKind::Overlay),
            "native" => Some(SnapshotterKind::Native),
            _ => None,
        }
    }
}

/// A snapshot's id: 12 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// Parses an id as written by [`SnapshotId::as_str`].
    pub fn parse(text: &str) -> Option<SnapshotId> {
        (text.len() == 12 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SnapshotId(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mount, as data: producers return a list, the sandbox performs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay`, `bind`, `tmpfs` ...
    pub kind: String,
    /// Source: a path, or the filesystem's name.
    pub source: String,
    /// Where, relative to the rootfs (`/` for the rootfs itself).
    pub target: String,
    /// Options; for overlay, `lowerdir=` holds the lower dirs top first, `:`-separated.
    pub options: Vec<String>,
}

/// An active snapshot: prepared, not yet committed.
#[derive(Debug)]
pub struct Active {
    id: SnapshotId,
    parent: Option<SnapshotId>,
}

impl Active {
    /// The snapshot's id.
    pub fn id(&self) -> &SnapshotId {
        &self.id
    }

    /// The parent it was prepared on.
    pub fn parent(&self) -> Option<&SnapshotId> {
        self.parent.as_ref()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    parent: Option<SnapshotId>,
    committed: bool,
    kind: SnapshotterKind,
}

/// The snapshots of a store.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    tmp: PathBuf,
    kind: SnapshotterKind,
}

impl Snapshots {
    pub(crate) fn new(dir: &Path, tmp: &Path, kind: SnapshotterKind) -> Snapshots {
        Snapshots {
            dir: dir.to_owned(),
            tmp: tmp.to_owned(),
            kind,
        }
    }

    /// Which kind this is.
    pub fn kind(&self) -> SnapshotterKind {
        self.kind
    }

    fn path(&self, id: &SnapshotId) -> PathBuf {
        self.dir.join(&id.0)
    }

    fn meta(&self, id: &SnapshotId) -> Result<Meta, StoreError> {
        let path = self.path(id).join("meta.json");
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::SnapshotNotFound { id: id.0.clone() },
            _ => StoreError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Format {
            path,
            reason: e.to_string(),
        })
    }

    fn write_meta(&self, id: &SnapshotId, meta: &Meta) -> Result<(), StoreError> {
        let path = self.path(id).join("meta.json");
        let bytes = serde_json::to_vec(meta).map_err(|e| StoreError::Format {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Only a commit must survive a crash; an active snapshot whose metadata is lost
        // reads as uncommitted, which is what it is.
        if meta.committed {
            fsutil::write_atomic(&path, &self.tmp, &bytes).map_err(io(&path))
        } else {
            fsutil::write_replace(&path, &self.tmp, &bytes).map_err(io(&path))
        }
    }

    /// Makes an active snapshot on `parent` (a committed one) or on nothing.
    pub fn prepare(&self, parent: Option<&SnapshotId>) -> Result<Active, StoreError> {
        if let Some(parent) = parent
            && !self.meta(parent)?.committed
        {
            return Err(StoreError::Format {
                path: self.path(parent),
                reason: "a parent must be a committed snapshot".to_owned(),
            });
        }
        let id = self.new_id()?;
        let dir = self.path(&id);
        let fs_dir = dir.join("fs");
        fs::create_dir_all(&fs_dir).map_err(io(&fs_dir))?;
        match self.kind {
            SnapshotterKind::Overlay => {
                fs::create_dir_all(dir.join("work")).map_err(io(dir.join("work")))?;
            }
            SnapshotterKind::Native => {
                if let Some(parent) = parent {
                    tree_copy::copy_tree(&self.path(parent).join("fs"), &fs_dir)?;
                }
            }
        }
        self.write_meta(
            &id,
            &Meta {
                parent: parent.cloned(),
                committed: false,
                kind: self.kind,
            },
        )?;
        Ok(Active {
            id,
            parent: parent.cloned(),
        })
    }

    fn new_id(&self) -> Result<SnapshotId, StoreError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        loop {
            let mut bytes = [0u8; 6];
            getrandom(&mut bytes);
            let id = SnapshotId(hex::encode(bytes));
            // create_dir fails if another process took the same id: try another.
            match fs::create_dir(self.path(&id)) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(StoreError::Io {
                        path: self.path(&id),
                        source,
                    });
                }
            }
        }
    }

    /// Where changes to an active snapshot are written directly by file operations.
    pub fn diff_dir(&self, active: &Active) -> PathBuf {
        self.path(&active.id).join("fs")
    }

    /// The diff dirs of a committed snapshot's chain, top first: what a reader stacks.
    /// (A native snapshot is a whole tree: its chain is itself.)
    pub fn layers(&self, id: &SnapshotId) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = vec![self.path(id).join("fs")];
        if self.kind == SnapshotterKind::Native {
            return Ok(out);
        }
        let mut current = self.meta(id)?.parent;
        while let Some(parent) = current {
            out.push(self.path(&parent).join("fs"));
            current = self.meta(&parent)?.parent;
        }
        Ok(out)
    }

    /// The diff dirs below an active snapshot (its parent's chain), top first.
    pub fn lower_layers(&self, active: &Active) -> Result<Vec<PathBuf>, StoreError> {
        match (&active.parent, self.kind) {
            (Some(parent), SnapshotterKind::Overlay) => self.layers(parent),
            _ => Ok(Vec::new()),
        }
    }

    /// How to mount an active snapshot as a rootfs.
    pub fn mounts(&self, active: &Active) -> Result<Vec<Mount>, StoreError> {
        let dir = self.path(&active.id);
        let upper = dir.join("fs").to_string_lossy().into_owned();
        let lowers = self.lower_layers(active)?;
        if lowers.is_empty() {
            return Ok(vec![Mount {
                kind: "bind".to_owned(),
                source: upper,
                target: "/".to_owned(),
                options: vec!["rbind".to_owned(), "rw".to_owned()],
            }]);
        }
        let lowerdir: Vec<String> = lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        Ok(vec![Mount {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: "/".to_owned(),
            options: vec![
                format!("lowerdir={}", lowerdir.join(":")),
                format!("upperdir={upper}"),
                format!("workdir={}", dir.join("work").display()),
                // The upper dir must be a self-contained diff: no redirects, no metacopy.
                "redirect_dir=off".to_owned(),
                "metacopy=off".to_owned(),
                "index=off".to_owned(),
            ],
        }])
    }

    /// Copies the changes a committed snapshot made (its own diff) into an active one, as
    /// if they had been made there: what `COPY --link` needs to put a layer built on
    /// nothing on top of any parent. The copy keeps owners, modes, times and xattrs, so
    /// the active snapshot's layer is byte for byte the same as the source's.
    pub fn apply_diff(&self, active: &Active, from: &SnapshotId) -> Result<(), StoreError> {
        let source = self.path(from).join("fs");
        let target = self.diff_dir(active);
        tree_copy::copy_tree_into(&source, &target, true)
    }

    /// Makes an active snapshot committed (immutable) and returns its id.
    pub fn commit(&self, active: Active) -> Result<SnapshotId, StoreError> {
        let work = self.path(&active.id).join("work");
        if work.exists() {
            // overlayfs leaves its work dir behind; it is not part of the snapshot.
            let _ = fs::remove_dir_all(&work);
        }
        self.write_meta(
            &active.id,
            &Meta {
                parent: active.parent.clone(),
                committed: true,
                kind: self.kind,
            },
        )?;
        Ok(active.id)
    }

    /// The parent of a snapshot.
    pub fn parent(&self, id: &SnapshotId) -> Result<Option<SnapshotId>, StoreError> {
        Ok(self.meta(id)?.parent)
    }

    /// Whether the snapshot exists and is committed.
    pub fn is_committed(&self, id: &SnapshotId) -> bool {
        self.meta(id).is_ok_and(|m| m.committed)
    }

    /// Removes a snapshot (active or committed); returns the bytes freed.
    pub fn remove(&self, id: &SnapshotId) -> Result<u64, StoreError> {
        let dir = self.path(id);
        let size = tree_copy::disk_usage(&dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(StoreError::Io { path: dir, source }),
        }
    }

    /// Every snapshot id, with whether it is committed.
    pub fn list(&self) -> Result<Vec<(SnapshotId, bool)>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if let Some(id) = entry.file_name().to_str().and_then(SnapshotId::parse) {
                let committed = self.meta(&id).is_ok_and(|m| m.committed);
                out.push((id, committed));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Random bytes from the kernel, for ids that two processes will not pick alike.
fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = fs::File::open("/dev/urandom")
        && f.read_exact(buf).is_ok()
    {
        return;
    }
    // No /dev/urandom: time and pid still make collisions unlikely, and create_dir
    // catches the rest.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id());
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed >> ((i * 8) % 128)) as u8;
    }
}
