//! The final filesystem of an image: `type=local` (a directory, the layers extracted in
//! order) and `type=tar` (the same tree as one tar).
//!
//! The tar is made without extracting anything: a first pass reads every layer's
//! headers (seeking over file data) and works out the final tree — later entries
//! replace earlier ones, `.wh.NAME` deletes, `.wh..wh..opq` empties a directory of what
//! lower layers put there — keeping for each file only where its bytes are (layer,
//! offset). A second pass writes that tree in path order, copying each file's bytes
//! straight from its layer blob. Memory grows with the number of entries, never with
//! their size; no root privileges are needed to keep owners and devices. Files that were
//! hard links stay hard links when they share their bytes in the final tree; a link
//! whose target was deleted or replaced becomes a copy of the data it linked to.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use std::collections::HashSet;
use std::path::PathBuf;

use kiln_snapshotter::layer_in::{ApplyOptions, Changed, WhiteoutStyle, apply_with};
use kiln_snapshotter::{BlobReader, Digest, Store, StoreError};

use super::{
    ArchiveError, LayerKind, SourceReader, append_file, dest_err, layers_with_diff_ids, missing,
    uncompressed_layer, unsupported, write_err,
};
use kiln_image::image::StoredImage;

/// How `type=local` writes onto the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalOptions {
    /// Write into a directory that is not empty (never `/`). Its symlinks are never
    /// replaced or written through: an image entry at or below one is an error.
    pub merge: bool,
    /// Create the image's character and block devices (else skipped and reported).
    pub devices: bool,
    /// Keep setuid/setgid bits on files (else cleared and reported).
    pub setuid: bool,
}

/// What `type=local` did not write as the image has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalReport {
    /// Entries skipped or changed, per layer in order (a path may repeat when several
    /// layers have it); print them with `Display`.
    pub changed: Vec<Changed>,
}

/// `type=local,dest=DIR`: extracts the image's layers in order into `dir` (created if
/// needed), deletions applied as deletions.
///
/// The host is protected from the image: `/` is refused, so is a directory that is not
/// empty unless [`LocalOptions::merge`]; device nodes are skipped and setuid/setgid bits
/// cleared unless the options allow them (the report lists each); nothing is written
/// through or over a symlink that was in `dir` before (nor, as in any extraction,
/// through one the image made).
pub fn write_rootfs_dir(
    store: &Store,
    image: &StoredImage,
    dir: &Path,
    options: &LocalOptions,
) -> Result<LocalReport, ArchiveError> {
    let (root, protected) = local_dest(dir, options)?;
    let apply = local_apply(options, &protected);
    let mut report = LocalReport::default();
    for layer in &image.manifest.layers {
        LayerKind::of_media_type(&layer.media_type).ok_or_else(|| unsupported(layer))?;
        let blob = store
            .content()
            .open(&layer.digest)
            .map_err(missing(image))?;
        report
            .changed
            .extend(apply_with(blob, &root, &apply)?.changed);
    }
    Ok(report)
}

/// `type=local` from a filesystem already merged into one tar stream (what `type=tar`
/// writes; `kiln --host` receives it from the server): the same protections as
/// [`write_rootfs_dir`].
pub fn write_rootfs_stream(
    input: impl io::Read + 'static,
    dir: &Path,
    options: &LocalOptions,
) -> Result<LocalReport, ArchiveError> {
    let (root, protected) = local_dest(dir, options)?;
    let apply = local_apply(options, &protected);
    Ok(LocalReport {
        changed: apply_with(input, &root, &apply)?.changed,
    })
}

/// Checks (and creates) a `type=local` destination as the output will, before anything
/// is built: `/`, a non-directory, or a non-empty directory without `merge` are refused.
pub fn check_local_dest(dir: &Path, options: &LocalOptions) -> Result<(), ArchiveError> {
    local_dest(dir, options).map(drop)
}

/// The destination of a `type=local` output, checked and created: its canonical path and,
/// when merging into a directory that is not empty, the symlinks it already has.
fn local_dest(
    dir: &Path,
    options: &LocalOptions,
) -> Result<(PathBuf, HashSet<PathBuf>), ArchiveError> {
    let refuse = |reason: String| ArchiveError::DestRefused {
        path: dir.to_owned(),
        reason,
    };
    match fs::symlink_metadata(dir) {
        Ok(_) => {
            let real = fs::canonicalize(dir).map_err(dest_err(dir))?;
            if real == Path::new("/") {
                return Err(refuse(
                    "it is the host's root directory; type=local writes the image's files there, choose an empty directory".to_owned(),
                ));
            }
            if !real.is_dir() {
                return Err(refuse("it exists and is not a directory".to_owned()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(dest_err(dir)(e)),
    }
    fs::create_dir_all(dir).map_err(dest_err(dir))?;
    let root = fs::canonicalize(dir).map_err(dest_err(dir))?;
    let non_empty = fs::read_dir(&root).map_err(dest_err(dir))?.next().is_some();
    let mut protected = HashSet::new();
    if non_empty {
        if !options.merge {
            return Err(refuse(
                "it is not empty; choose an empty or new directory, or ask to merge into it (merge=true)".to_owned(),
            ));
        }
        for entry in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .min_depth(1)
        {
            let entry = entry.map_err(|e| dest_err(dir)(e.into()))?;
            if entry.path_is_symlink() {
                protected.insert(PathBuf::from(entry.path()));
            }
        }
    }
    Ok((root, protected))
}

fn local_apply<'a>(options: &LocalOptions, protected: &'a HashSet<PathBuf>) -> ApplyOptions<'a> {
    ApplyOptions {
        devices: options.devices,
        setuid: options.setuid,
        protected: Some(protected),
        ..ApplyOptions::layer(WhiteoutStyle::Delete)
    }
}

/// A tree key: the path's components joined by NUL, so that the map's order is a
/// depth-first walk (`a`, `a/b`, `a.txt`) and a subtree is one range.
type Key = Vec<u8>;

/// Where a file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DataRef {
    layer: usize,
    offset: u64,
    size: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(DataRef),
    Symlink(Vec<u8>),
    /// Character or block device, or fifo: (type, major, minor).
    Special(tar::EntryType, u32, u32),
}

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
    /// The layer that put the entry there (opaque directories hide lower ones only).
    layer: usize,
}

impl Node {
    fn implicit_dir(layer: usize) -> Node {
        Node {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
            layer,
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// The clean key of an entry path, or why it is refused (as extraction refuses it).
fn key_of(raw: &[u8]) -> Result<Key, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute paths are not allowed in a layer");
    }
    let mut key = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err("`..` would leave the layer's root"),
            _ if part.contains(&0) => return Err("a NUL byte in a path"),
            _ => {}
        }
        if !key.is_empty() {
            key.push(0);
        }
        key.extend_from_slice(part);
    }
    Ok(key)
}

/// (parent key, last component).
fn split_last(key: &[u8]) -> (&[u8], &[u8]) {
    match key.iter().rposition(|b| *b == 0) {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (&[], key),
    }
}

fn child(parent: &[u8], name: &[u8]) -> Key {
    let mut key = parent.to_vec();
    if !key.is_empty() {
        key.push(0);
    }
    key.extend_from_slice(name);
    key
}

fn display(key: &[u8]) -> String {
    let path: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
    String::from_utf8_lossy(&path).into_owned()
}

/// The final tree, built layer by layer.
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<Key, Node>,
}

impl Tree {
    /// Removes everything under `key` (not `key` itself) put there by layers below
    /// `below` (all layers when None).
    fn remove_children(&mut self, key: &[u8], below: Option<usize>) {
        let hidden = |n: &Node| below.is_none_or(|layer| n.layer < layer);
        let doomed: Vec<Key> = if key.is_empty() {
            // The root's children: every node.
            self.nodes
                .iter()
                .filter(|(_, n)| hidden(n))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            let (mut lo, mut hi) = (key.to_vec(), key.to_vec());
            lo.push(0);
            hi.push(1);
            self.nodes
                .range(lo..hi)
                .filter(|(_, n)| hidden(n))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    fn remove(&mut self, key: &[u8]) {
        self.nodes.remove(key);
        self.remove_children(key, None);
    }

    fn insert(&mut self, key: Key, node: Node) -> Result<(), &'static str> {
        // A symlink on the way is refused, as extraction refuses to write through one;
        // a file on the way is replaced by a directory, as tar does.
        for (i, b) in key.iter().enumerate() {
            if *b != 0 {
                continue;
            }
            match self.nodes.get(&key[..i]) {
                Some(n) if matches!(n.kind, Kind::Symlink(_)) => {
                    return Err("a parent directory is a symlink");
                }
                Some(n) if !n.is_dir() => {
                    self.nodes.remove(&key[..i]);
                }
                _ => {}
            }
        }
        if !node.is_dir() && self.nodes.get(&key).is_some_and(Node::is_dir) {
            self.remove_children(&key, None);
        }
        self.nodes.insert(key, node);
        Ok(())
    }

    /// Adds the directories that entries imply but no layer lists.
    fn add_implicit_dirs(&mut self) {
        let keys: Vec<Key> = self.nodes.keys().cloned().collect();
        for key in keys {
            let mut parent = split_last(&key).0;
            while !parent.is_empty() && !self.nodes.contains_key(parent) {
                self.nodes
                    .insert(parent.to_vec(), Node::implicit_dir(usize::MAX));
                parent = split_last(parent).0;
            }
        }
    }
}

/// The header fields of an entry, PAX records included.
fn node_of(entry: &mut tar::Entry<'_, impl Read>, kind: Kind, layer: usize) -> Node {
    let header = entry.header();
    let mut node = Node {
        kind,
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        uid: header.uid().unwrap_or(0),
        gid: header.gid().unwrap_or(0),
        mtime: header.mtime().unwrap_or(0),
        xattrs: Vec::new(),
        layer,
    };
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                node.xattrs
                    .push((name.to_owned(), ext.value_bytes().to_vec()));
            } else if key == "mtime"
                && let Some(t) = ext
                    .value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
            {
                node.mtime = t.max(0) as u64;
            }
        }
    }
    node
}

/// Reads layer `index` (a plain tar at `blob`) into `tree`.
/// Reads the headers of one layer into `tree`, reading the blob through (not seeking
/// over file data) so that its digest is checked; a damaged blob is reported as such
/// even when the damage made the tar unreadable.
fn read_layer(
    tree: &mut Tree,
    index: usize,
    blob: BlobReader,
    layer_digest: &Digest,
) -> Result<(), ArchiveError> {
    let mut reader = BufReader::with_capacity(1 << 16, blob);
    let result = read_headers(tree, index, &mut reader, layer_digest);
    let tail = reader.into_inner().finish();
    match (result, tail) {
        (_, Err(corrupt @ StoreError::Corrupt { .. })) => Err(corrupt.into()),
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn read_headers(
    tree: &mut Tree,
    index: usize,
    reader: &mut BufReader<BlobReader>,
    layer_digest: &Digest,
) -> Result<(), ArchiveError> {
    let bad = |reason: String| ArchiveError::BadLayer {
        digest: layer_digest.clone(),
        reason,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("cannot read it as a tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read it as a tar: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let refuse = |reason: &str| {
            bad(format!(
                "entry {:?}: {reason}",
                String::from_utf8_lossy(&raw)
            ))
        };
        let key = key_of(&raw).map_err(refuse)?;
        if key.is_empty() {
            continue; // the root itself
        }
        let (parent, name) = split_last(&key);
        if name == b".wh..wh..opq" {
            tree.remove_children(parent, Some(index));
            if !parent.is_empty() && !tree.nodes.contains_key(parent) {
                tree.insert(parent.to_vec(), Node::implicit_dir(index))
                    .map_err(refuse)?;
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(b".wh.") {
            tree.remove(&child(parent, target));
            continue;
        }
        let entry_type = entry.header().entry_type();
        let kind = match entry_type {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File(DataRef {
                layer: index,
                offset: entry.raw_file_position(),
                size: entry.size(),
            }),
            tar::EntryType::Symlink => Kind::Symlink(
                entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("a symlink without a target"))?
                    .into_owned(),
            ),
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("a hard link without a target"))?;
                let target = key_of(&target).map_err(refuse)?;
                // A link is its target's inode: same bytes, same metadata.
                match tree.nodes.get(&target) {
                    Some(n) if !n.is_dir() => {
                        let mut node = n.clone();
                        node.layer = index;
                        tree.insert(key, node).map_err(refuse)?;
                        continue;
                    }
                    _ => {
                        return Err(refuse(
                            "its hard-link target is not a file of this layer or one below",
                        ));
                    }
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                Kind::Special(
                    entry_type,
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                )
            }
            tar::EntryType::GNUSparse => {
                return Err(refuse(
                    "a sparse file, which type=tar cannot copy yet; use type=local",
                ));
            }
            // Global PAX headers and other types carry no file.
            _ => continue,
        };
        let node = node_of(&mut entry, kind, index);
        tree.insert(key, node).map_err(refuse)?;
    }
    Ok(())
}

/// `type=tar,dest=FILE`: the image's final filesystem as one tar, streamed to `out`:
/// entries in path order, owners, modes, mtimes, xattrs and devices as the layers have
/// them. Layers that are compressed in the store are first stored uncompressed (their
/// diff_id blob), since the copy seeks in them.
pub fn write_rootfs_tar(
    store: &Store,
    image: &StoredImage,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut tree = Tree::default();
    let mut sources = Vec::new();
    for (index, (layer, diff_id)) in layers_with_diff_ids(image)?.into_iter().enumerate() {
        let tar = uncompressed_layer(store, image, layer, &diff_id)?;
        let blob = store.content().open(&tar).map_err(missing(image))?;
        read_layer(&mut tree, index, blob, &layer.digest)?;
        sources.push((tar, layer.digest.clone()));
    }
    tree.add_implicit_dirs();

    // Verified by the first pass; the copy seeks, so it reads the files directly.
    let files = sources
        .iter()
        .map(|(tar, _)| {
            let path = store.content().path(tar);
            File::open(&path).map_err(|source| ArchiveError::Store(StoreError::Io { path, source }))
        })
        .collect::<Result<Vec<File>, _>>()?;
    let mut builder = tar::Builder::new(out);
    let mut buf = Vec::new();
    // The first path written for each file's bytes: later ones are hard links to it.
    let mut written: HashMap<DataRef, Vec<u8>> = HashMap::new();
    for (key, node) in &tree.nodes {
        let path: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
        let name = display(key);
        let mut header = tar::Header::new_ustar();
        header.set_mode(node.mode);
        header.set_uid(node.uid);
        header.set_gid(node.gid);
        header.set_mtime(node.mtime);
        header.set_size(0);
        if let Kind::File(data) = &node.kind
            && let Some(first) = written.get(data)
        {
            header.set_entry_type(tar::EntryType::Link);
            builder
                .append_link(&mut header, os(&path), os(first))
                .map_err(write_err(&name))?;
            continue;
        }
        if !node.xattrs.is_empty() && !matches!(node.kind, Kind::Symlink(_)) {
            let records: Vec<(String, &[u8])> = node
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(write_err(&name))?;
        }
        match &node.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                let mut dir = path.clone();
                dir.push(b'/');
                builder
                    .append_data(&mut header, os(&dir), io::empty())
                    .map_err(write_err(&name))?;
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                builder
                    .append_link(&mut header, os(&path), os(target))
                    .map_err(write_err(&name))?;
            }
            Kind::Special(kind, major, minor) => {
                header.set_entry_type(*kind);
                header
                    .set_device_major(*major)
                    .and_then(|()| header.set_device_minor(*minor))
                    .map_err(write_err(&name))?;
                builder
                    .append_data(&mut header, os(&path), io::empty())
                    .map_err(write_err(&name))?;
            }
            Kind::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.size);
                let (tar, layer_digest) = &sources[data.layer];
                let mut file = &files[data.layer];
                let blob_path = store.content().path(tar);
                file.seek(SeekFrom::Start(data.offset)).map_err(|source| {
                    kiln_snapshotter::StoreError::Io {
                        path: blob_path.clone(),
                        source,
                    }
                })?;
                let mut reader = SourceReader::new(file.take(data.size), false);
                append_file(
                    &mut builder,
                    &mut header,
                    os(&path),
                    &name,
                    &mut reader,
                    &blob_path,
                    &mut buf,
                )?;
                if reader.count != data.size {
                    return Err(ArchiveError::BadLayer {
                        digest: layer_digest.clone(),
                        reason: format!(
                            "entry {name:?} is cut short; the blob is damaged, run kiln prune and build or pull the image again"
                        ),
                    });
                }
                written.insert(*data, path);
            }
        }
    }
    builder
        .into_inner()
        .map_err(write_err("the end of the archive"))?
        .flush()
        .map_err(write_err("the end of the archive"))
}

fn os(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: Kind, layer: usize) -> Node {
        Node {
            kind,
            ..Node::implicit_dir(layer)
        }
    }

    fn file(layer: usize, offset: u64) -> Kind {
        Kind::File(DataRef {
            layer,
            offset,
            size: 1,
        })
    }

    /// Applies `(layer, path, kind)` steps — a path ending in `.wh.X` deletes, `.wh..wh..opq`
    /// empties — and compares the final paths.
    fn check(steps: &[(usize, &str, Option<Kind>)], expected: &[&str]) {
        let mut tree = Tree::default();
        for (layer, path, kind) in steps {
            let key = key_of(path.as_bytes()).expect("clean path");
            let (parent, name) = split_last(&key);
            if name == b".wh..wh..opq" {
                tree.remove_children(parent, Some(*layer));
            } else if let Some(target) = name.strip_prefix(b".wh.") {
                tree.remove(&child(parent, target));
            } else {
                let kind = kind.clone().expect("an entry has a kind");
                tree.insert(key, node(kind, *layer)).expect("insert");
            }
        }
        tree.add_implicit_dirs();
        let got: Vec<String> = tree.nodes.keys().map(|k| display(k)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn later_layers_replace_delete_and_hide() {
        // Depth-first order: `a/b` before `a.txt`.
        check(
            &[(0, "a.txt", Some(file(0, 1))), (0, "a/b", Some(file(0, 2)))],
            &["a", "a/b", "a.txt"],
        );
        // A whiteout deletes a whole directory.
        check(
            &[
                (0, "d/", Some(Kind::Dir)),
                (0, "d/x", Some(file(0, 1))),
                (0, "keep", Some(file(0, 2))),
                (1, "./.wh.d", None),
            ],
            &["keep"],
        );
        // An opaque directory hides what lower layers put there, not its own layer's.
        check(
            &[
                (0, "d/", Some(Kind::Dir)),
                (0, "d/old", Some(file(0, 1))),
                (1, "d/", Some(Kind::Dir)),
                (1, "d/-new", Some(file(1, 1))),
                (1, "d/.wh..wh..opq", None),
            ],
            &["d", "d/-new"],
        );
        // A file replacing a directory takes its children with it; a directory replacing
        // a file on the way is implied.
        check(
            &[
                (0, "x/", Some(Kind::Dir)),
                (0, "x/y", Some(file(0, 1))),
                (1, "x", Some(file(1, 1))),
                (2, "f", Some(file(2, 1))),
                (3, "f/g", Some(file(3, 1))),
            ],
            &["f", "f/g", "x"],
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(key_of(b"/etc/passwd").is_err());
        assert!(key_of(b"a/../../x").is_err());
        assert_eq!(key_of(b"./a//b/").expect("clean"), b"a\0b".to_vec());
        let mut tree = Tree::default();
        tree.insert(b"l".to_vec(), node(Kind::Symlink(b"/".to_vec()), 0))
            .expect("symlink");
        assert!(tree.insert(b"l\0x".to_vec(), node(file(1, 1), 1)).is_err());
    }
}
