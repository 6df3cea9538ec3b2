//! COPY: files from the context or from another stage's tree into a new diff dir.
//!
//! The rules are BuildKit's (and `docker cp`'s): a directory source copies its contents,
//! not itself; a file goes into the destination when that is a directory (or ends with
//! `/`), else it becomes the destination; missing parents are created. Several sources
//! are copied one after the other to the same destination, as BuildKit's one copy action
//! per source does: without a trailing `/` a later file replaces an earlier one. Files from the context become root's (`0:0`) unless `--chown` says
//! otherwise; files from another stage or image keep their owner. Modes and mtimes are
//! kept unless `--chmod` says otherwise; symlinks are copied as links, except a source
//! that is itself a symlink, which is followed, as BuildKit does.
//!
//! `ADD` extracts a local tar archive instead of copying it, as BuildKit's chrootarchive
//! does ([`kiln_snapshotter::layer_in::extract_add_archive`]): the archive's names resolve
//! inside the destination, through the symlinks and directories of the tree below.
//!
//! The destination is the diff dir of the new snapshot; the tree below it is read through
//! a [`LayeredView`], so a destination directory that exists below is first copied up
//! (its metadata only), exactly as overlayfs would do it.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_parser::dockerignore::Matcher;

use crate::context::{ContextTree, EntryKind};
use crate::layered_view::{LayeredView, ViewError};
use crate::ops::chmod::Chmod;

/// An error copying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A source does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// The source as named.
        path: String,
    },
    /// Writing the destination or reading a source failed.
    #[error("{path}: {source}")]
    Io {
        /// The host path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Resolving a path in a tree failed.
    #[error(transparent)]
    View(#[from] ViewError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where files are copied from.
pub enum CopyFrom<'a> {
    /// The build context (files become `0:0` unless `--chown`).
    Context(&'a ContextTree),
    /// Another stage's or an image's tree (owners are kept unless `--chown`).
    Tree(&'a LayeredView),
}

/// How to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown`, resolved to numbers.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`, for every copied file and directory.
    pub chmod: Option<Chmod>,
    /// The destination is a directory to copy into (it ends with `/`; several sources
    /// do not make it one).
    pub dest_is_dir: bool,
    /// `--exclude` patterns, matched against paths relative to each copied directory.
    pub excludes: Option<Matcher>,
    /// `--parents`: the pivots (path prefixes not recreated under the destination); a
    /// source's path below its longest matching pivot is kept.
    pub parents: Option<Vec<String>>,
    /// `ADD`: extract a source that is a tar archive into the destination.
    pub unpack: bool,
}

/// One entry of a source tree, wherever it lives.
struct SourceEntry {
    host: PathBuf,
    meta: fs::Metadata,
}

impl CopyFrom<'_> {
    /// `path` is relative to the source root, cleaned; follows a symlink at `path` itself.
    fn top(&self, path: &str) -> Result<(String, SourceEntry), CopyError> {
        match self {
            CopyFrom::Context(tree) => {
                let mut rel = path.to_owned();
                for _ in 0..40 {
                    let entry = tree.get(&rel).ok_or_else(|| CopyError::NotFound {
                        path: path.to_owned(),
                    })?;
                    match &entry.kind {
                        EntryKind::Symlink(target) => {
                            let target = target.to_string_lossy();
                            let base = match rel.rfind('/') {
                                Some(pos) if !target.starts_with('/') => &rel[..pos],
                                _ => "",
                            };
                            // A link that climbs out of the context resolves at its root,
                            // like a chroot: nothing outside is ever read.
                            rel = clean_confined(&format!("{base}/{target}"));
                        }
                        _ => break,
                    }
                }
                let host = tree.root().join(&rel);
                let meta = fs::symlink_metadata(&host).map_err(io_err(&host))?;
                Ok((rel, SourceEntry { host, meta }))
            }
            CopyFrom::Tree(view) => {
                let resolved = view.resolve(&format!("/{path}"), true)?;
                let found = view.lstat(&resolved)?.ok_or_else(|| CopyError::NotFound {
                    path: path.to_owned(),
                })?;
                Ok((
                    resolved.trim_start_matches('/').to_owned(),
                    SourceEntry {
                        host: found.host_path,
                        meta: found.meta,
                    },
                ))
            }
        }
    }

    fn children(&self, rel: &str) -> Result<Vec<(String, SourceEntry)>, CopyError> {
        let names: Vec<String> = match self {
            CopyFrom::Context(tree) => tree
                .subtree(rel)
                .skip(1)
                .filter_map(|(path, _)| {
                    let name = if rel.is_empty() {
                        path
                    } else {
                        &path[rel.len() + 1..]
                    };
                    (!name.contains('/')).then(|| name.to_owned())
                })
                .collect(),
            CopyFrom::Tree(view) => view.read_dir(&format!("/{rel}"))?,
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let entry = match self {
                CopyFrom::Context(tree) => {
                    let host = tree.root().join(&child);
                    let meta = fs::symlink_metadata(&host).map_err(io_err(&host))?;
                    SourceEntry { host, meta }
                }
                CopyFrom::Tree(view) => {
                    let found =
                        view.lstat(&format!("/{child}"))?
                            .ok_or_else(|| CopyError::NotFound {
                                path: child.clone(),
                            })?;
                    SourceEntry {
                        host: found.host_path,
                        meta: found.meta,
                    }
                }
            };
            out.push((name, entry));
        }
        Ok(out)
    }

    fn keeps_owner(&self) -> bool {
        matches!(self, CopyFrom::Tree(_))
    }
}

/// Copies `sources` (cleaned paths relative to the source root, already glob-expanded)
/// to `dest` (an absolute path in the image) inside `diff_dir`, the new snapshot's diff;
/// `below` views the tree under it (the parent snapshot).
pub fn copy(
    from: &CopyFrom<'_>,
    sources: &[String],
    dest: &str,
    diff_dir: &Path,
    below: &LayeredView,
    options: &CopyOptions,
) -> Result<(), CopyError> {
    let mut layers = vec![diff_dir.to_owned()];
    layers.extend(below.layers().iter().cloned());
    let view = LayeredView::new(layers);
    // Only a trailing `/` (or an existing directory, below) makes the destination a
    // directory: BuildKit copies several sources one after the other to the same path,
    // so without one the last file replaces the one before (moby/buildkit#1853).
    let into_dir = options.dest_is_dir || dest.ends_with('/');
    let created_owner = options.chown.unwrap_or((0, 0));
    for source in sources {
        let (rel, entry) = from.top(source)?;
        if let Some(excludes) = &options.excludes
            && excludes.matches(source).unwrap_or(false)
        {
            continue;
        }
        // --parents: the source's own path (below its pivot) is recreated under dest.
        let (dest, into_dir) = match &options.parents {
            Some(pivots) => {
                let below = pivots
                    .iter()
                    .filter(|p| {
                        p.is_empty() || source == *p || source.starts_with(&format!("{p}/"))
                    })
                    .max_by_key(|p| p.len())
                    .map_or(source.as_str(), |p| {
                        source[p.len()..].trim_start_matches('/')
                    });
                (format!("{}/{below}", dest.trim_end_matches('/')), false)
            }
            None => (dest.to_owned(), into_dir),
        };
        let dest_resolved = view.resolve(&dest, true)?;
        let dest_is_existing_dir = view
            .lstat(&dest_resolved)?
            .is_some_and(|found| found.meta.is_dir());
        if entry.meta.is_dir() {
            ensure_dir(diff_dir, &view, &dest_resolved, created_owner)?;
            copy_children(from, &rel, &rel, diff_dir, &dest_resolved, options)?;
        } else if options.unpack
            && entry.meta.is_file()
            && kiln_snapshotter::layer_in::is_tar_archive(&entry.host)
        {
            ensure_dir(diff_dir, &view, &dest_resolved, created_owner)?;
            let file = fs::File::open(&entry.host).map_err(io_err(&entry.host))?;
            let root = host_path(diff_dir, &dest_resolved);
            let below_dest = BelowDest {
                diff_dir,
                view: &view,
                dest: &dest_resolved,
            };
            kiln_snapshotter::layer_in::extract_add_archive(
                file,
                &root,
                options.chown,
                Some(&below_dest),
            )
            .map_err(|e| CopyError::Io {
                path: PathBuf::from(&source),
                source: io::Error::other(e.to_string()),
            })?;
        } else {
            let target = if into_dir || dest_is_existing_dir {
                let name = rel.rsplit('/').next().unwrap_or(&rel);
                ensure_dir(diff_dir, &view, &dest_resolved, created_owner)?;
                format!("{}/{name}", dest_resolved.trim_end_matches('/'))
            } else {
                let parent = match dest_resolved.rfind('/') {
                    Some(0) | None => "/",
                    Some(pos) => &dest_resolved[..pos],
                };
                ensure_dir(diff_dir, &view, parent, created_owner)?;
                dest_resolved.clone()
            };
            copy_entry(from, &entry, diff_dir, &target, options)?;
        }
    }
    Ok(())
}

/// The tree an `ADD` extracts over, seen from its destination: the archive's names
/// resolve through its symlinks and directories as they would on the merged tree.
struct BelowDest<'a> {
    diff_dir: &'a Path,
    /// The diff dir over the parent snapshot.
    view: &'a LayeredView,
    /// The destination, resolved, absolute in the image.
    dest: &'a str,
}

impl BelowDest<'_> {
    fn image_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dest.trim_end_matches('/'))
    }
}

impl kiln_snapshotter::layer_in::Below for BelowDest<'_> {
    fn lookup(
        &self,
        rel: &str,
    ) -> Result<kiln_snapshotter::layer_in::BelowEntry, kiln_snapshotter::StoreError> {
        use kiln_snapshotter::layer_in::BelowEntry;
        let path = self.image_path(rel);
        let found = self
            .view
            .lstat(&path)
            .map_err(|e| view_store_error(&path, e))?;
        Ok(match found {
            None => BelowEntry::Missing,
            Some(found) if found.meta.is_dir() => BelowEntry::Dir,
            Some(found) if found.meta.file_type().is_symlink() => {
                BelowEntry::Symlink(fs::read_link(&found.host_path).map_err(|e| {
                    view_store_error(
                        &path,
                        ViewError::Io {
                            path: found.host_path.clone(),
                            source: e,
                        },
                    )
                })?)
            }
            Some(_) => BelowEntry::Other,
        })
    }

    fn copy_up_dir(&self, rel: &str) -> Result<(), kiln_snapshotter::StoreError> {
        let path = self.image_path(rel);
        ensure_dir(self.diff_dir, self.view, &path, (0, 0)).map_err(|e| {
            kiln_snapshotter::StoreError::Io {
                path: PathBuf::from(&path),
                source: io::Error::other(e.to_string()),
            }
        })
    }
}

fn view_store_error(path: &str, e: ViewError) -> kiln_snapshotter::StoreError {
    kiln_snapshotter::StoreError::Io {
        path: PathBuf::from(path),
        source: io::Error::other(e.to_string()),
    }
}

fn copy_children(
    from: &CopyFrom<'_>,
    top: &str,
    rel: &str,
    diff_dir: &Path,
    dest: &str,
    options: &CopyOptions,
) -> Result<(), CopyError> {
    for (name, entry) in from.children(rel)? {
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if let Some(excludes) = &options.excludes {
            let inside = child_rel
                .strip_prefix(top)
                .map_or(child_rel.as_str(), |r| r.trim_start_matches('/'));
            if excludes.matches(inside).unwrap_or(false) {
                continue;
            }
        }
        let child_dest = format!("{}/{name}", dest.trim_end_matches('/'));
        if entry.meta.is_dir() {
            let host = host_path(diff_dir, &child_dest);
            replace_with_dir(&host)?;
            copy_children(from, top, &child_rel, diff_dir, &child_dest, options)?;
            apply_meta(from, &entry, &host, options)?;
        } else {
            copy_entry(from, &entry, diff_dir, &child_dest, options)?;
        }
    }
    Ok(())
}

fn copy_entry(
    from: &CopyFrom<'_>,
    entry: &SourceEntry,
    diff_dir: &Path,
    dest: &str,
    options: &CopyOptions,
) -> Result<(), CopyError> {
    let host = host_path(diff_dir, dest);
    remove_existing(&host)?;
    let kind = entry.meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(&entry.host).map_err(io_err(&entry.host))?;
        std::os::unix::fs::symlink(&target, &host).map_err(io_err(&host))?;
    } else if kind.is_file() {
        // fs::copy uses copy_file_range/reflinks where the filesystem has them and
        // streams otherwise; it never holds the file in memory.
        fs::copy(&entry.host, &host).map_err(io_err(&host))?;
    } else {
        // Devices, fifos and sockets in a context are not copied, as BuildKit skips them.
        return Ok(());
    }
    apply_meta(from, entry, &host, options)
}

fn apply_meta(
    from: &CopyFrom<'_>,
    entry: &SourceEntry,
    host: &Path,
    options: &CopyOptions,
) -> Result<(), CopyError> {
    let (uid, gid) = match options.chown {
        Some(owner) => owner,
        None if from.keeps_owner() => (entry.meta.uid(), entry.meta.gid()),
        None => (0, 0),
    };
    std::os::unix::fs::lchown(host, Some(uid), Some(gid)).map_err(io_err(host))?;
    if entry.meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = match &options.chmod {
        Some(chmod) => chmod.apply(entry.meta.mode(), entry.meta.is_dir()) & 0o7777,
        None => entry.meta.mode() & 0o7777,
    };
    // chown clears setuid/setgid bits, so the mode is set after it.
    fs::set_permissions(host, fs::Permissions::from_mode(mode)).map_err(io_err(host))?;
    if let CopyFrom::Tree(_) = from {
        copy_xattrs(&entry.host, host)?;
    }
    let modified = entry.meta.modified().map_err(io_err(&entry.host))?;
    let file = fs::File::open(host).map_err(io_err(host))?;
    file.set_modified(modified).map_err(io_err(host))
}

fn copy_xattrs(from: &Path, to: &Path) -> Result<(), CopyError> {
    let names = match xattr::list(from) {
        Ok(names) => names,
        // A filesystem without xattrs has none to copy.
        Err(_) => return Ok(()),
    };
    for name in names {
        let text = name.to_string_lossy();
        if text.starts_with("trusted.overlay.") || text.starts_with("user.overlay.") {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(from, &name) {
            xattr::set(to, &name, &value).map_err(io_err(to))?;
        }
    }
    Ok(())
}

/// Makes `dir` (absolute in the image) a directory in the diff dir, creating missing
/// parents. A directory that exists below is copied up with its metadata; a new one
/// gets mode 0755 and `owner`.
pub fn ensure_dir(
    diff_dir: &Path,
    view: &LayeredView,
    dir: &str,
    owner: (u32, u32),
) -> Result<(), CopyError> {
    let mut current = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        current.push('/');
        current.push_str(part);
        let host = host_path(diff_dir, &current);
        if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let below = view.lstat(&current)?;
        replace_with_dir(&host)?;
        match below {
            Some(found) if found.meta.is_dir() && found.layer > 0 => {
                std::os::unix::fs::lchown(&host, Some(found.meta.uid()), Some(found.meta.gid()))
                    .map_err(io_err(&host))?;
                fs::set_permissions(
                    &host,
                    fs::Permissions::from_mode(found.meta.mode() & 0o7777),
                )
                .map_err(io_err(&host))?;
                let modified = found.meta.modified().map_err(io_err(&found.host_path))?;
                let file = fs::File::open(&host).map_err(io_err(&host))?;
                file.set_modified(modified).map_err(io_err(&host))?;
            }
            _ => {
                std::os::unix::fs::lchown(&host, Some(owner.0), Some(owner.1))
                    .map_err(io_err(&host))?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                    .map_err(io_err(&host))?;
            }
        }
    }
    Ok(())
}

fn replace_with_dir(host: &Path) -> Result<(), CopyError> {
    match fs::symlink_metadata(host) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(host).map_err(io_err(host))?,
        Err(_) => {}
    }
    fs::create_dir(host).map_err(io_err(host))
}

fn remove_existing(host: &Path) -> Result<(), CopyError> {
    match fs::symlink_metadata(host) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(host).map_err(io_err(host)),
        Ok(_) => fs::remove_file(host).map_err(io_err(host)),
        Err(_) => Ok(()),
    }
}

fn host_path(diff_dir: &Path, path: &str) -> PathBuf {
    // `path` comes from LayeredView::resolve: absolute, no `..`, no symlinks.
    diff_dir.join(path.trim_start_matches('/'))
}

fn clean_confined(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    use super::*;

    /// The tree under `dir` as `path -> "d 755 0:0" | "f 644 0:0 contents" | "l -> target"`.
    fn listing(dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for entry in walkdir(dir) {
            let rel = entry
                .strip_prefix(dir)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&entry).expect("lstat");
            let desc = if meta.file_type().is_symlink() {
                format!(
                    "l -> {}",
                    fs::read_link(&entry).expect("readlink").display()
                )
            } else if meta.is_dir() {
                format!("d {:o} {}:{}", meta.mode() & 0o7777, meta.uid(), meta.gid())
            } else {
                format!(
                    "f {:o} {}:{} {}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                    fs::read_to_string(&entry).expect("read")
                )
            };
            out.insert(rel, desc);
        }
        out
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).expect("readdir") {
            let path = entry.expect("entry").path();
            if fs::symlink_metadata(&path).expect("lstat").is_dir() {
                out.extend(walkdir(&path));
            }
            out.push(path);
        }
        out
    }

    struct World {
        _tmp: tempfile::TempDir,
        context: PathBuf,
        below: PathBuf,
        diff: PathBuf,
    }

    fn world() -> World {
        let tmp = tempfile::tempdir().expect("tempdir");
        let context = tmp.path().join("context");
        let below = tmp.path().join("below");
        let diff = tmp.path().join("diff");
        for d in [&context, &below, &diff] {
            fs::create_dir_all(d).expect("mkdir");
        }
        World {
            _tmp: tmp,
            context,
            below,
            diff,
        }
    }

    fn write(root: &Path, rel: &str, contents: &str, mode: u32) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, contents).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn copy_from_context(w: &World, sources: &[&str], dest: &str, options: CopyOptions) {
        let tree = ContextTree::scan(&w.context, &Default::default()).expect("scan");
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        copy(
            &CopyFrom::Context(&tree),
            &sources,
            dest,
            &w.diff,
            &LayeredView::new(vec![w.below.clone()]),
            &options,
        )
        .expect("copy");
    }

    fn check(w: &World, expected: &[(&str, &str)]) {
        let want: BTreeMap<String, String> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(listing(&w.diff), want);
    }

    fn is_root() -> bool {
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }

    #[test]
    fn a_directory_source_copies_its_contents() {
        if !is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let w = world();
        write(&w.context, "src/a.txt", "a", 0o644);
        write(&w.context, "src/sub/run.sh", "#!", 0o755);
        copy_from_context(&w, &["src"], "/app", CopyOptions::default());
        check(
            &w,
            &[
                ("app", "d 755 0:0"),
                ("app/a.txt", "f 644 0:0 a"),
                ("app/sub", "d 755 0:0"),
                ("app/sub/run.sh", "f 755 0:0 #!"),
            ],
        );
    }

    #[test]
    fn a_file_goes_into_a_directory_or_becomes_the_destination() {
        if !is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let w = world();
        write(&w.context, "f", "x", 0o600);
        fs::create_dir_all(w.below.join("existing")).expect("mkdir");
        copy_from_context(&w, &["f"], "/existing", CopyOptions::default());
        copy_from_context(&w, &["f"], "/new/", CopyOptions::default());
        copy_from_context(&w, &["f"], "/renamed", CopyOptions::default());
        check(
            &w,
            &[
                ("existing", "d 755 0:0"),
                ("existing/f", "f 600 0:0 x"),
                ("new", "d 755 0:0"),
                ("new/f", "f 600 0:0 x"),
                ("renamed", "f 600 0:0 x"),
            ],
        );
    }

    #[test]
    fn chown_and_chmod_apply_to_everything_copied() {
        if !is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let w = world();
        write(&w.context, "d/x", "1", 0o644);
        copy_from_context(
            &w,
            &["d"],
            "/out",
            CopyOptions {
                chown: Some((1000, 1001)),
                chmod: Some(Chmod::Bits(0o700)),
                ..CopyOptions::default()
            },
        );
        check(
            &w,
            &[("out", "d 755 1000:1001"), ("out/x", "f 700 1000:1001 1")],
        );
    }

    #[test]
    fn destination_symlinks_resolve_inside_the_image() {
        if !is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let w = world();
        write(&w.context, "f", "x", 0o644);
        fs::create_dir_all(w.below.join("real")).expect("mkdir");
        symlink("/real", w.below.join("link")).expect("symlink");
        // A link pointing far above the root stays inside the image.
        symlink("../../../../../../tmp", w.below.join("up")).expect("symlink");
        copy_from_context(&w, &["f"], "/link/", CopyOptions::default());
        copy_from_context(&w, &["f"], "/up/", CopyOptions::default());
        check(
            &w,
            &[
                ("real", "d 755 0:0"),
                ("real/f", "f 644 0:0 x"),
                ("tmp", "d 755 0:0"),
                ("tmp/f", "f 644 0:0 x"),
            ],
        );
    }

    #[test]
    fn a_symlink_source_is_followed_but_links_inside_a_directory_are_kept() {
        if !is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let w = world();
        write(&w.context, "real", "data", 0o644);
        symlink("real", w.context.join("link")).expect("symlink");
        fs::create_dir_all(w.context.join("d")).expect("mkdir");
        symlink("../real", w.context.join("d/l")).expect("symlink");
        symlink("/etc/passwd", w.context.join("escape")).expect("symlink");
        copy_from_context(&w, &["link"], "/copied", CopyOptions::default());
        copy_from_context(&w, &["d"], "/d", CopyOptions::default());
        // An absolute link is resolved inside the context, never on the host.
        let tree = ContextTree::scan(&w.context, &Default::default()).expect("scan");
        let err = copy(
            &CopyFrom::Context(&tree),
            &["escape".to_owned()],
            "/x",
            &w.diff,
            &LayeredView::new(vec![w.below.clone()]),
            &CopyOptions::default(),
        )
        .expect_err("must not read /etc/passwd of the host");
        assert!(matches!(err, CopyError::NotFound { .. }), "{err}");
        check(
            &w,
            &[
                ("copied", "f 644 0:0 data"),
                ("d", "d 755 0:0"),
                ("d/l", "l -> ../real"),
            ],
        );
    }

    #[test]
    fn copies_from_a_tree_keep_owners() {
        if !is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let w = world();
        let stage = w.context.join("stage");
        write(&stage, "app/bin", "elf", 0o755);
        std::os::unix::fs::lchown(stage.join("app/bin"), Some(500), Some(600)).expect("chown");
        let view = LayeredView::new(vec![stage]);
        copy(
            &CopyFrom::Tree(&view),
            &["app/bin".to_owned()],
            "/usr/local/bin/",
            &w.diff,
            &LayeredView::new(vec![w.below.clone()]),
            &CopyOptions::default(),
        )
        .expect("copy");
        check(
            &w,
            &[
                ("usr", "d 755 0:0"),
                ("usr/local", "d 755 0:0"),
                ("usr/local/bin", "d 755 0:0"),
                ("usr/local/bin/bin", "f 755 500:600 elf"),
            ],
        );
    }
}
