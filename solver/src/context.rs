//! The build context, read in place: a scan of its files (minus `.dockerignore`d ones)
//! and content digests of the parts a step reads.
//!
//! A file's digest covers its path (relative to what is copied), type, mode, symlink
//! target and bytes — never its times, and never its owner: a COPY from the context makes
//! every file `0:0` (or `--chown`'s owner, which is in the op), so the owner changes no
//! result, and it is the most machine-specific of all (the CI runner's user). A fresh
//! clone of the same tree, by any user, in any directory, or a `touch` of every file,
//! still hits the cache, on this machine or another. Hashing bytes is the only expensive part;
//! it is memoised by the file's stat identity (dev, inode, size, mtime, ctime) in the
//! cache index, so an unchanged 100k-file context is stat'ed, not read.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_parser::dockerignore::{Matcher, ParentMatches};
use rayon::prelude::*;

use crate::cache_index::{CacheIndex, FileStamp, IndexError};

/// An error reading the context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A file or directory of the context could not be read.
    #[error("reading the build context at {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path leaves the context (`..` above its root).
    #[error(
        "{path}: the path is outside the build context; only files under the context directory can be used"
    )]
    OutsideContext {
        /// The path as given.
        path: String,
    },
    /// A path names nothing in the context (or only ignored files).
    #[error("{path}: not found in the build context")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A `.dockerignore` pattern is invalid.
    #[error(transparent)]
    Ignore(#[from] kiln_parser::dockerignore::Error),
    /// The stat memo could not be used.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// What kind of file an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, with its target as written.
    Symlink(PathBuf),
    /// A device, fifo or socket: copied as what it is, hashed by its metadata only.
    Special,
}

/// One file of the context, as `lstat` saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The kind of file.
    pub kind: EntryKind,
    /// Permission and type bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Identity for the content memo.
    pub stamp: FileStamp,
}

/// Context files by path, each with a prefix of its content's digest (hex).
pub type FileDigests = BTreeMap<String, String>;

/// The context's files at one moment, excluded ones left out. Paths are relative,
/// `/`-separated, without a leading `./`; the root itself is `""`.
#[derive(Debug)]
pub struct ContextTree {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl ContextTree {
    /// Walks `root` without following symlinks, leaving out every path `ignore` (the
    /// `.dockerignore` patterns) excludes. An excluded directory is still walked, because
    /// a later `!` pattern may bring back something inside it; its own entry is kept only
    /// if something inside survives. Each directory's per-pattern results are passed to
    /// its children, so no file re-matches its parents.
    pub fn scan(root: &Path, ignore: &Matcher) -> Result<ContextTree, ContextError> {
        let io = |path: &Path, source| ContextError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::symlink_metadata(root).map_err(|e| io(root, e))?;
        let mut entries = BTreeMap::new();
        entries.insert(String::new(), entry_from(&meta, None));
        let mut stack = vec![(root.to_owned(), String::new(), ParentMatches::default())];
        while let Some((dir, rel_dir, parent)) = stack.pop() {
            let read = fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
            for item in read {
                let item = item.map_err(|e| io(&dir, e))?;
                let name = item.file_name();
                let Some(name) = name.to_str() else {
                    // Docker contexts are UTF-8 paths; a name that is not cannot be
                    // named in a Dockerfile either, so it is left out.
                    continue;
                };
                let rel = if rel_dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{rel_dir}/{name}")
                };
                let path = item.path();
                let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
                let is_dir = meta.is_dir();
                let target = if meta.file_type().is_symlink() {
                    Some(fs::read_link(&path).map_err(|e| io(&path, e))?)
                } else {
                    None
                };
                let (decision, here) = if ignore.is_empty() {
                    (false, ParentMatches::default())
                } else {
                    let (decision, here) = ignore.decide_with_parent(&rel, &parent)?;
                    (decision.excluded, here)
                };
                if is_dir {
                    stack.push((path, rel.clone(), here));
                }
                if !decision {
                    entries.insert(rel, entry_from(&meta, target));
                }
            }
        }
        // Keep the directories that lead to kept entries, even if they were excluded
        // themselves: the files inside must still be reachable by path.
        let kept: Vec<String> = entries.keys().cloned().collect();
        for rel in kept {
            let mut parent = rel.as_str();
            while let Some(pos) = parent.rfind('/') {
                parent = &parent[..pos];
                if entries.contains_key(parent) {
                    break;
                }
                let path = root.join(parent);
                let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
                entries.insert(parent.to_owned(), entry_from(&meta, None));
            }
        }
        Ok(ContextTree {
            root: root.to_owned(),
            entries,
        })
    }

    /// The directory the tree was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The entry at a cleaned relative path.
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(rel)
    }

    /// Every entry, in path order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// `rel` and everything below it: `rel` first, then its descendants in path order.
    pub fn subtree<'a>(
        &'a self,
        rel: &'a str,
    ) -> Box<dyn Iterator<Item = (&'a str, &'a Entry)> + 'a> {
        if rel.is_empty() {
            return Box::new(self.entries());
        }
        // "a/" sorts after "a-x" and "a.txt", so the descendants are one range of their own.
        let prefix = format!("{rel}/");
        let this = self
            .entries
            .get_key_value(rel)
            .map(|(k, v)| (k.as_str(), v));
        let below = self
            .entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.as_str(), v));
        Box::new(this.into_iter().chain(below))
    }

    /// The digest of what copying `sources` (cleaned relative paths, each a file, link
    /// or directory of the tree) would read. Names inside a directory are hashed relative
    /// to that directory, so the digest does not change when the tree moves.
    pub fn digest(&self, sources: &[&str], memo: &ContentMemo) -> Result<[u8; 32], ContextError> {
        Ok(self.digest_files(sources, memo, 0)?.0)
    }

    /// [`ContextTree::digest`], and each file's path with a prefix of its content's digest
    /// when there are at most `keep` of them (for `--explain`).
    pub fn digest_files(
        &self,
        sources: &[&str],
        memo: &ContentMemo,
        keep: usize,
    ) -> Result<([u8; 32], Option<FileDigests>), ContextError> {
        let mut files = Vec::new();
        for source in sources {
            if self.get(source).is_none() {
                return Err(ContextError::NotFound {
                    path: (*source).to_owned(),
                });
            }
            for (rel, entry) in self.subtree(source) {
                files.push((*source, rel, entry));
            }
        }
        let contents: Vec<Option<[u8; 32]>> = files
            .par_iter()
            .map(|(_, rel, entry)| match entry.kind {
                EntryKind::File => memo.content(&self.root.join(rel), &entry.stamp).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let mut hasher = blake3::Hasher::new();
        let count = contents.iter().filter(|c| c.is_some()).count();
        let mut kept = (count <= keep).then(BTreeMap::new);
        for ((source, rel, entry), content) in files.iter().zip(contents) {
            let name = rel.strip_prefix(source).unwrap_or(rel);
            hash_header(&mut hasher, source, name, entry);
            if let Some(content) = content {
                hasher.update(&content);
                if let Some(kept) = &mut kept {
                    let hex = blake3::Hash::from_bytes(content).to_hex();
                    kept.insert((*rel).to_owned(), hex[..12].to_owned());
                }
            }
        }
        Ok((*hasher.finalize().as_bytes(), kept))
    }
}

fn hash_header(hasher: &mut blake3::Hasher, source: &str, name: &str, entry: &Entry) {
    for field in [source.as_bytes(), name.as_bytes()] {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    let kind: u8 = match entry.kind {
        EntryKind::File => b'f',
        EntryKind::Dir => b'd',
        EntryKind::Symlink(_) => b'l',
        EntryKind::Special => b's',
    };
    hasher.update(&[kind]);
    hasher.update(&entry.mode.to_le_bytes());
    if let EntryKind::Symlink(target) = &entry.kind {
        let target = target.as_os_str().as_encoded_bytes();
        hasher.update(&(target.len() as u64).to_le_bytes());
        hasher.update(target);
    }
}

fn entry_from(meta: &fs::Metadata, target: Option<PathBuf>) -> Entry {
    let kind = if let Some(target) = target {
        EntryKind::Symlink(target)
    } else if meta.is_dir() {
        EntryKind::Dir
    } else if meta.is_file() {
        EntryKind::File
    } else {
        EntryKind::Special
    };
    Entry {
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        stamp: FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        },
    }
}

/// Content hashes of files, memoised by stat identity: loaded from the cache index once
/// per build, new ones written back in one transaction by [`ContentMemo::save`].
pub struct ContentMemo<'a> {
    index: Option<&'a CacheIndex>,
    known: HashMap<(u64, u64), (FileStamp, [u8; 32])>,
    fresh: std::sync::Mutex<Vec<(FileStamp, [u8; 32])>>,
}

impl<'a> ContentMemo<'a> {
    /// A memo backed by the cache index (loads every remembered stamp at once: one query
    /// instead of one per file).
    pub fn load(index: &'a CacheIndex) -> Result<ContentMemo<'a>, ContextError> {
        let known = index
            .memo_all()?
            .into_iter()
            .map(|(stamp, digest)| ((stamp.dev, stamp.ino), (stamp, digest)))
            .collect();
        Ok(ContentMemo {
            index: Some(index),
            known,
            fresh: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A memo that remembers nothing (tests, one-off hashing).
    pub fn empty() -> ContentMemo<'static> {
        ContentMemo {
            index: None,
            known: HashMap::new(),
            fresh: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The blake3 of the file's bytes: from the memo when the stamp is unchanged.
    pub fn content(&self, path: &Path, stamp: &FileStamp) -> Result<[u8; 32], ContextError> {
        if let Some((known, digest)) = self.known.get(&(stamp.dev, stamp.ino))
            && known == stamp
        {
            return Ok(*digest);
        }
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_mmap(path)
            .map_err(|source| ContextError::Io {
                path: path.to_owned(),
                source,
            })?;
        let digest = *hasher.finalize().as_bytes();
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*stamp, digest));
        Ok(digest)
    }

    /// How many files had to be read (not found in the memo) so far.
    pub fn misses(&self) -> usize {
        self.fresh.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Writes the newly hashed files back to the index.
    pub fn save(&self) -> Result<(), ContextError> {
        if let Some(index) = self.index {
            let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()));
            index.memo_put_all(&fresh)?;
        }
        Ok(())
    }
}

/// Cleans a path as the Dockerfile names it (relative to the context root, `/` meaning
/// the root): removes `.` and empty parts, resolves `..`, and refuses to climb above the
/// root. Returns `""` for the root itself.
pub fn clean_context_path(path: &str) -> Result<String, ContextError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ContextError::OutsideContext {
                        path: path.to_owned(),
                    });
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, contents) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            fs::write(full, contents).expect("write");
        }
        dir
    }

    fn no_excludes() -> Matcher {
        Matcher::default()
    }

    fn digest(dir: &Path, sources: &[&str]) -> [u8; 32] {
        let t = ContextTree::scan(dir, &no_excludes()).expect("scan");
        t.digest(sources, &ContentMemo::empty()).expect("digest")
    }

    #[test]
    fn scan_lists_files_and_keeps_parents_of_reincluded_files() {
        let dir = tree(&[("a.txt", "a"), ("docs/x.md", "x"), ("docs/keep.md", "k")]);
        let ignore = Matcher::new(&["docs", "!docs/keep.md"]).expect("patterns");
        let t = ContextTree::scan(dir.path(), &ignore).expect("scan");
        let names: Vec<&str> = t.entries().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["", "a.txt", "docs", "docs/keep.md"]);
    }

    #[test]
    fn digest_ignores_times_but_not_content_mode_or_names() {
        let dir = tree(&[("src/a", "1"), ("src/b", "2")]);
        let before = digest(dir.path(), &["src"]);
        // Touching changes mtime only.
        let f = fs::File::options()
            .write(true)
            .open(dir.path().join("src/a"))
            .expect("open");
        f.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .expect("touch");
        assert_eq!(digest(dir.path(), &["src"]), before);
        fs::write(dir.path().join("src/a"), "changed").expect("write");
        let changed = digest(dir.path(), &["src"]);
        assert_ne!(changed, before);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path().join("src/a"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert_ne!(digest(dir.path(), &["src"]), changed);
        fs::rename(dir.path().join("src/b"), dir.path().join("src/c")).expect("rename");
        assert_ne!(digest(dir.path(), &["src"]), changed);
    }

    #[test]
    fn digest_covers_only_the_selected_sources() {
        let dir = tree(&[("a/x", "1"), ("a.txt", "2"), ("b", "3")]);
        let a = digest(dir.path(), &["a"]);
        let t = ContextTree::scan(dir.path(), &no_excludes()).expect("scan");
        let under_a: Vec<&str> = t.subtree("a").map(|(k, _)| k).collect();
        assert_eq!(under_a, vec!["a", "a/x"]);
        fs::write(dir.path().join("b"), "other").expect("write");
        fs::write(dir.path().join("a.txt"), "other").expect("write");
        assert_eq!(digest(dir.path(), &["a"]), a);
    }

    #[test]
    fn digest_does_not_depend_on_the_owner() {
        // The CI runner's user owns its checkout; a COPY makes every file 0:0 anyway.
        if !fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tree(&[("src/a", "1")]);
        let before = digest(dir.path(), &["src"]);
        for path in ["src", "src/a"] {
            std::os::unix::fs::lchown(dir.path().join(path), Some(1234), Some(5678))
                .expect("chown");
        }
        assert_eq!(digest(dir.path(), &["src"]), before);
    }

    #[test]
    fn digest_of_a_tree_does_not_depend_on_where_it_is() {
        let one = tree(&[("x/f", "1")]);
        let two = tree(&[("x/f", "1")]);
        assert_eq!(digest(one.path(), &["x"]), digest(two.path(), &["x"]));
    }

    #[test]
    fn symlinks_are_hashed_by_target() {
        let dir = tree(&[("f", "1")]);
        symlink("f", dir.path().join("l")).expect("symlink");
        let before = digest(dir.path(), &["l"]);
        fs::remove_file(dir.path().join("l")).expect("rm");
        symlink("g", dir.path().join("l")).expect("symlink");
        assert_ne!(digest(dir.path(), &["l"]), before);
    }

    #[test]
    fn memo_spares_rereading_unchanged_files() {
        let dir = tree(&[("a", "1"), ("b", "2")]);
        let store = tempfile::tempdir().expect("tempdir");
        let index = CacheIndex::open(&store.path().join("cache.db")).expect("index");
        let t = ContextTree::scan(dir.path(), &no_excludes()).expect("scan");
        let first = ContentMemo::load(&index).expect("memo");
        let d1 = t.digest(&[""], &first).expect("digest");
        assert_eq!(first.misses(), 2);
        first.save().expect("save");
        let second = ContentMemo::load(&index).expect("memo");
        assert_eq!(t.digest(&[""], &second).expect("digest"), d1);
        assert_eq!(second.misses(), 0);
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tree(&[("a", "1")]);
        let t = ContextTree::scan(dir.path(), &no_excludes()).expect("scan");
        let err = t
            .digest(&["nope"], &ContentMemo::empty())
            .expect_err("missing");
        assert_eq!(err.to_string(), "nope: not found in the build context");
    }

    fn check(input: &str, expected: Result<&str, ()>) {
        assert_eq!(
            clean_context_path(input).map_err(|_| ()),
            expected.map(str::to_owned),
            "{input}"
        );
    }

    #[test]
    fn clean_context_paths() {
        check("a/b", Ok("a/b"));
        check("./a//b/", Ok("a/b"));
        check("/a/../b", Ok("b"));
        check(".", Ok(""));
        check("/", Ok(""));
        check("../etc/passwd", Err(()));
        check("a/../../x", Err(()));
    }
}
