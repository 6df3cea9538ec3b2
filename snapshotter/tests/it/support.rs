//! Tree descriptions to compare filesystems, and mounting overlayfs for ground truth.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// `path -> "kind mode uid:gid size hash|target"` for every entry under `root`.
pub(crate) fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let m = entry.path().symlink_metadata().expect("lstat");
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(entry.path())
                    .expect("readlink")
                    .display()
            )
        } else if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_file() {
            let bytes = std::fs::read(entry.path()).expect("read");
            format!(
                "file {} {}",
                bytes.len(),
                hex::encode(&Sha256::digest(&bytes)[..8])
            )
        } else if ft.is_char_device() {
            format!("char {}", m.rdev())
        } else {
            "other".to_owned()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(rel, format!("{what} {mode:o} {}:{}", m.uid(), m.gid()));
    }
    out
}

/// Mounts an overlay of `lowers` (top first) with `upper` read-only at `target` and
/// returns a guard that unmounts it. Test-only: kiln itself mounts only in the sandbox.
pub(crate) struct OverlayMount {
    target: std::path::PathBuf,
}

impl OverlayMount {
    pub(crate) fn new(lowers: &[&Path], target: &Path) -> OverlayMount {
        std::fs::create_dir_all(target).expect("mkdir target");
        let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},redirect_dir=off,metacopy=off,index=off",
                lowerdir.join(":")
            ))
            .arg(target)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount overlay");
        OverlayMount {
            target: target.to_owned(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}
