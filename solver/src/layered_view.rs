//! A read-only view of a root filesystem made of diff dirs stacked as overlayfs stacks
//! them, read without mounting anything.
//!
//! File operations (COPY, WORKDIR) write straight into the new snapshot's diff dir, but
//! must see the tree below it: whether the destination exists, where a symlink on the
//! way points, which uid `--chown=app` means in `/etc/passwd`. This module answers those
//! questions from the diff dirs themselves, with overlayfs's rules: the top layer wins;
//! a character device 0/0 is a whiteout that deletes the name below it; a directory
//! marked opaque (`trusted.overlay.opaque` or `user.overlay.opaque` = `y`) hides
//! everything below it; a non-directory hides whatever is below its path.
//!
//! Paths are absolute inside the view (`/etc/passwd`); symlinks are resolved as a chroot
//! would, so no path can lead outside the view.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many symlinks one resolution may follow, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// An error resolving a path in the view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// A diff dir could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The host path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Too many symlinks on the way (a loop).
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
}

/// One entry found in the view: the host path of the layer file that provides it.
#[derive(Debug)]
pub struct Found {
    /// Where the entry's data lives on the host.
    pub host_path: PathBuf,
    /// Its metadata (`lstat`).
    pub meta: Metadata,
    /// Which layer provides it (0 = top).
    pub layer: usize,
}

/// Layers stacked top first, like overlayfs's `upperdir` then `lowerdir` list.
#[derive(Debug, Clone)]
pub struct LayeredView {
    layers: Vec<PathBuf>,
}

impl LayeredView {
    /// A view of `layers`, the top (newest) first.
    pub fn new(layers: Vec<PathBuf>) -> LayeredView {
        LayeredView { layers }
    }

    /// The layers, top first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// `lstat` of a path whose parents contain no symlinks (see [`LayeredView::resolve`]).
    pub fn lstat(&self, path: &str) -> Result<Option<Found>, ViewError> {
        let parts = split(path);
        for (index, layer) in self.layers.iter().enumerate() {
            let mut hides_below = false;
            let mut host = layer.clone();
            for (depth, part) in parts.iter().enumerate() {
                host.push(part);
                let Some(meta) = lstat_host(&host)? else {
                    break;
                };
                if is_whiteout(&meta) {
                    return Ok(None);
                }
                let last = depth + 1 == parts.len();
                if last {
                    return Ok(Some(Found {
                        host_path: host,
                        meta,
                        layer: index,
                    }));
                }
                if !meta.is_dir() {
                    // A file where a parent directory should be: the path does not exist.
                    return Ok(None);
                }
                if is_opaque(&host) {
                    hides_below = true;
                }
            }
            if parts.is_empty()
                && let Some(meta) = lstat_host(layer)?
            {
                return Ok(Some(Found {
                    host_path: layer.clone(),
                    meta,
                    layer: index,
                }));
            }
            if hides_below {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// The names in a directory (whose path contains no symlinks), merged across layers,
    /// sorted.
    pub fn read_dir(&self, path: &str) -> Result<Vec<String>, ViewError> {
        let parts = split(path);
        let mut names: BTreeMap<String, bool> = BTreeMap::new();
        for layer in &self.layers {
            // Walk down to the directory in this layer, noting whether it or a parent is
            // opaque (then nothing below this layer counts) or deleted.
            let mut host = layer.clone();
            let mut present = true;
            let mut hides_below = false;
            for part in &parts {
                host.push(part);
                match lstat_host(&host)? {
                    None => {
                        present = false;
                        break;
                    }
                    Some(meta) if is_whiteout(&meta) || !meta.is_dir() => {
                        return Ok(visible(names));
                    }
                    Some(_) => hides_below |= is_opaque(&host),
                }
            }
            if present {
                let entries = fs::read_dir(&host).map_err(|source| ViewError::Io {
                    path: host.clone(),
                    source,
                })?;
                for entry in entries {
                    let entry = entry.map_err(|source| ViewError::Io {
                        path: host.clone(),
                        source,
                    })?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if names.contains_key(&name) {
                        continue;
                    }
                    let meta = entry.metadata().map_err(|source| ViewError::Io {
                        path: entry.path(),
                        source,
                    })?;
                    names.insert(name, !is_whiteout(&meta));
                }
            }
            if hides_below {
                break;
            }
        }
        Ok(visible(names))
    }

    /// Resolves `path` to a symlink-free absolute path inside the view, following
    /// symlinks as a chroot would (absolute targets start again at the view's root, `..`
    /// stops at the root). With `follow_last` false, a symlink in the last position is
    /// kept, as `lstat` keeps it. The result need not exist.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, ViewError> {
        let mut todo: Vec<String> = split(path).into_iter().rev().map(str::to_owned).collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(part);
            let is_last = todo.is_empty();
            if is_last && !follow_last {
                break;
            }
            let current = format!("/{}", done.join("/"));
            let Some(found) = self.lstat(&current)? else {
                continue;
            };
            if !found.meta.file_type().is_symlink() {
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(ViewError::SymlinkLoop {
                    path: path.to_owned(),
                });
            }
            let target = fs::read_link(&found.host_path).map_err(|source| ViewError::Io {
                path: found.host_path.clone(),
                source,
            })?;
            let target = target.to_string_lossy().into_owned();
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(split(&target).into_iter().rev().map(str::to_owned));
        }
        Ok(format!("/{}", done.join("/")))
    }

    /// Reads a whole small file (e.g. `/etc/passwd`), following symlinks; `None` when absent.
    pub fn read_to_string(&self, path: &str) -> Result<Option<String>, ViewError> {
        let resolved = self.resolve(path, true)?;
        let Some(found) = self.lstat(&resolved)? else {
            return Ok(None);
        };
        if !found.meta.is_file() {
            return Ok(None);
        }
        fs::read_to_string(&found.host_path)
            .map(Some)
            .map_err(|source| ViewError::Io {
                path: found.host_path,
                source,
            })
    }
}

fn visible(names: BTreeMap<String, bool>) -> Vec<String> {
    names
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| name)
        .collect()
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty()).collect()
}

fn lstat_host(path: &Path) -> Result<Option<Metadata>, ViewError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(ViewError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// overlayfs's whiteout: a character device with device number 0/0.
pub fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// overlayfs's opaque directory mark, as root writes it or in a user namespace.
pub fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Stack {
        _dir: tempfile::TempDir,
        layers: Vec<PathBuf>,
    }

    /// Layers given bottom first, as a Dockerfile builds them.
    fn stack(layers: &[&[(&str, &str)]]) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = Vec::new();
        for (i, files) in layers.iter().enumerate() {
            let root = dir.path().join(format!("l{i}"));
            fs::create_dir_all(&root).expect("mkdir");
            for (path, what) in *files {
                let full = root.join(path.trim_start_matches('/'));
                fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
                if let Some(target) = what.strip_prefix("->") {
                    symlink(target, &full).expect("symlink");
                } else if *what == "dir" {
                    fs::create_dir_all(&full).expect("mkdir");
                } else if *what == "whiteout" {
                    let status = std::process::Command::new("mknod")
                        .arg(&full)
                        .args(["c", "0", "0"])
                        .status()
                        .expect("mknod");
                    assert!(status.success());
                } else if *what == "opaque" {
                    fs::create_dir_all(&full).expect("mkdir");
                    xattr::set(&full, "trusted.overlay.opaque", b"y").expect("xattr");
                } else {
                    fs::write(&full, what).expect("write");
                }
            }
            paths.push(root);
        }
        paths.reverse();
        Stack {
            _dir: dir,
            layers: paths,
        }
    }

    fn view(s: &Stack) -> LayeredView {
        LayeredView::new(s.layers.clone())
    }

    fn is_root() -> bool {
        fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }

    #[test]
    fn upper_layers_win_and_parents_merge() {
        let s = stack(&[
            &[("/etc/passwd", "old"), ("/etc/group", "g")],
            &[("/etc/passwd", "new"), ("/app/x", "1")],
        ]);
        let v = view(&s);
        assert_eq!(
            v.read_to_string("/etc/passwd").expect("read"),
            Some("new".into())
        );
        assert_eq!(
            v.read_to_string("/etc/group").expect("read"),
            Some("g".into())
        );
        assert_eq!(v.read_dir("/etc").expect("ls"), vec!["group", "passwd"]);
        assert_eq!(v.read_dir("/").expect("ls"), vec!["app", "etc"]);
        assert!(v.lstat("/nope").expect("lstat").is_none());
    }

    #[test]
    fn whiteouts_and_opaque_dirs_hide_what_is_below() {
        if !is_root() {
            eprintln!("skipped: mknod of a whiteout and trusted.* xattrs need root");
            return;
        }
        let s = stack(&[
            &[
                ("/a/1", "1"),
                ("/a/2", "2"),
                ("/b/1", "1"),
                ("/c", "c"),
                ("/d/e/f", "f"),
            ],
            &[
                ("/a/1", "whiteout"),
                ("/b", "opaque"),
                ("/b/3", "3"),
                ("/c", "whiteout"),
                ("/d", "opaque"),
            ],
        ]);
        let v = view(&s);
        assert_eq!(v.read_dir("/a").expect("ls"), vec!["2"]);
        assert_eq!(v.read_dir("/b").expect("ls"), vec!["3"]);
        assert_eq!(v.read_dir("/").expect("ls"), vec!["a", "b", "d"]);
        assert!(v.read_dir("/d/e").expect("ls").is_empty());
        assert!(v.lstat("/d/e/f").expect("lstat").is_none());
        assert!(v.lstat("/a/1").expect("lstat").is_none());
        assert!(v.lstat("/b/1").expect("lstat").is_none());
        assert!(v.lstat("/c").expect("lstat").is_none());
    }

    #[test]
    fn a_file_hides_a_directory_below() {
        let s = stack(&[&[("/x/y", "1")], &[("/x", "now a file")]]);
        let v = view(&s);
        assert!(v.lstat("/x/y").expect("lstat").is_none());
        assert_eq!(
            v.read_to_string("/x").expect("read"),
            Some("now a file".into())
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let s = stack(&[
            &[("/usr/lib/f", "data"), ("/lib", "->usr/lib")],
            &[
                ("/abs", "->/usr/lib/f"),
                ("/escape", "->../../../../etc"),
                ("/loop", "->loop"),
            ],
        ]);
        let v = view(&s);
        assert_eq!(v.resolve("/lib/f", true).expect("resolve"), "/usr/lib/f");
        assert_eq!(v.resolve("/abs", true).expect("resolve"), "/usr/lib/f");
        assert_eq!(v.resolve("/abs", false).expect("resolve"), "/abs");
        // `..` stops at the view's root: the host's /etc is unreachable.
        assert_eq!(
            v.resolve("/escape/passwd", true).expect("resolve"),
            "/etc/passwd"
        );
        assert_eq!(
            v.resolve("/lib/../new/dir", true).expect("resolve"),
            "/usr/new/dir"
        );
        assert!(matches!(
            v.resolve("/loop", true),
            Err(ViewError::SymlinkLoop { .. })
        ));
        assert_eq!(
            v.read_to_string("/lib/f").expect("read"),
            Some("data".into())
        );
    }
}
