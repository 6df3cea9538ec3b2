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
//!
//! An `ADD` of a local archive ([`extract_add_archive`]) reads names as BuildKit does,
//! as if chrooted at the destination ([`EntryNames::Chroot`]): `..` stops at the root,
//! absolute names and symlinks (the archive's and the tree's below) resolve inside it.
//! Nothing outside the root is written there either; what cannot resolve (a symlink
//! loop, a file where a directory is needed) is refused, naming the entry.
//!
//! Hostile archives are bounded too ([`SizeLimit`]): by default an extraction stops
//! before it would leave less than 5% (at most 1 GiB) of the target's filesystem free,
//! so a decompression bomb fails with a message instead of filling the disk. An
//! extraction reads its input to the end even after the tar's end-of-archive blocks, so
//! a store blob ([`crate::BlobReader`]) is always verified; when an extraction fails on a
//! damaged blob the error says the blob is damaged, not that its tar is odd.
//!
//! [`import_layer`] stores an archive as a layer blob, checking every entry with the same
//! rules while it streams in ([`Validator`]), so nothing a later extraction would refuse
//! enters the store.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::SFlag;

use crate::content::{BlobReader, ContentStore};
use crate::error::{StoreError, io};
use crate::layer_out::{Compression, LayerInfo};
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
    /// Entries not written as the archive has them ([`ApplyOptions`] said so), in
    /// archive order, for the caller to report.
    pub changed: Vec<Changed>,
}

/// An entry written differently from the archive, or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The entry's path in the archive.
    pub path: String,
    /// What was done.
    pub change: Change,
}

/// What was done to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A character or block device, not created.
    DeviceSkipped {
        /// Its major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
    /// A file with the setuid or setgid bit: written with `mode` instead.
    SpecialBitsCleared {
        /// The mode in the archive.
        from: u32,
        /// The mode written.
        to: u32,
    },
}

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.change {
            Change::DeviceSkipped { major, minor } => {
                write!(f, "{}: device node {major}:{minor} not created", self.path)
            }
            Change::SpecialBitsCleared { from, to } => write!(
                f,
                "{}: setuid/setgid dropped (mode {from:04o} written as {to:04o})",
                self.path
            ),
        }
    }
}

/// How much an extraction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    /// At most this many bytes of file content in all (`None`: no fixed cap).
    pub max_bytes: Option<u64>,
    /// How much of the target's filesystem must stay free.
    pub keep_free: KeepFree,
}

impl Default for SizeLimit {
    /// No fixed cap; stop before the disk is nearly full ([`KeepFree::Auto`]). A fixed
    /// cap would refuse real images (multi-GB layers exist) while a bomb that fits the
    /// disk costs only disk space, freed by removing the build's snapshot.
    fn default() -> Self {
        SizeLimit {
            max_bytes: None,
            keep_free: KeepFree::Auto,
        }
    }
}

/// The free space an extraction must leave on the target's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepFree {
    /// 5% of the filesystem's size, at most 1 GiB.
    Auto,
    /// This many bytes.
    Bytes(u64),
    /// No check (the filesystem's own `ENOSPC` is the limit).
    Off,
}

/// How an extraction writes what it reads.
#[derive(Debug, Clone)]
pub struct ApplyOptions<'a> {
    /// How deletions are written.
    pub style: WhiteoutStyle,
    /// Owners replaced by this `(uid, gid)` when given.
    pub owner: Option<(u32, u32)>,
    /// The bound on what is written.
    pub limit: SizeLimit,
    /// Create character and block devices (else skipped and listed in
    /// [`ApplyStats::changed`]).
    pub devices: bool,
    /// Keep setuid and setgid bits on files (else cleared and listed). Directories keep
    /// their setgid bit, which only decides the group of new files.
    pub setuid: bool,
    /// Paths under the target that were symlinks before the extraction started (a
    /// directory the caller merges into): an entry that would replace one is refused,
    /// as is one below it.
    pub protected: Option<&'a HashSet<PathBuf>>,
    /// Entry names as BuildKit's `ADD` reads them ([`extract_add_archive`]), not as a
    /// layer's.
    pub names: EntryNames<'a>,
    /// The digest the uncompressed archive must have (a layer's diff_id): checked after
    /// the whole stream is read, a mismatch is [`StoreError::Format`].
    pub diff_id: Option<crate::Digest>,
}

/// How entry names are resolved.
#[derive(Clone, Copy, Default)]
pub enum EntryNames<'a> {
    /// A layer's: `..`, absolute names and writes through symlinks are refused.
    #[default]
    Layer,
    /// As moby's `chrootarchive.Untar` does with the target as the root directory:
    /// names are cleaned, `..` stops at the root, an absolute name starts there, and
    /// symlinks on the way (the archive's own, or those of the tree below, looked up in
    /// the given [`Below`]) are followed inside the root; missing parents are made
    /// `0755` and owned by root.
    Chroot(Option<&'a dyn Below>),
}

impl std::fmt::Debug for EntryNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryNames::Layer => f.write_str("Layer"),
            EntryNames::Chroot(below) => write!(f, "Chroot(below: {})", below.is_some()),
        }
    }
}

/// What a tree under the extraction's target has at a path (the layers below the diff
/// dir an `ADD` extracts into), so names resolve as they would on the merged tree.
pub trait Below {
    /// What is at `rel` (relative to the target, `/`-separated, no symlinks in it).
    fn lookup(&self, rel: &str) -> Result<BelowEntry, StoreError>;
    /// Makes `rel` in the target a directory with the metadata of the one below (what
    /// overlayfs's copy-up does), before something is written in it.
    fn copy_up_dir(&self, rel: &str) -> Result<(), StoreError>;
}

/// An entry of a [`Below`] tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BelowEntry {
    /// Nothing there.
    Missing,
    /// A directory.
    Dir,
    /// A symlink, with its target.
    Symlink(PathBuf),
    /// Anything else.
    Other,
}

impl ApplyOptions<'_> {
    /// A layer, as the store unpacks it: everything kept (the result is a snapshot, seen
    /// only inside the sandbox), bounded by the default [`SizeLimit`].
    pub fn layer(style: WhiteoutStyle) -> ApplyOptions<'static> {
        ApplyOptions {
            style,
            owner: None,
            limit: SizeLimit::default(),
            devices: true,
            setuid: true,
            protected: None,
            names: EntryNames::Layer,
            diff_id: None,
        }
    }
}

/// Keeps an extraction inside its [`SizeLimit`].
struct Budget<'a> {
    limit: SizeLimit,
    /// The filesystem checked for free space.
    target: &'a Path,
    written: u64,
    /// Free bytes at the last look, and what was written since.
    free_at_check: Option<u64>,
    since_check: u64,
    reserve: u64,
}

/// How much is written between two looks at the free space, at most.
const CHECK_EVERY: u64 = 64 << 20;

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl<'a> Budget<'a> {
    fn new(limit: SizeLimit, target: &'a Path) -> Budget<'a> {
        Budget {
            limit,
            target,
            written: 0,
            free_at_check: None,
            since_check: 0,
            reserve: 0,
        }
    }

    fn look(&mut self) -> Result<u64, StoreError> {
        let stat = nix::sys::statvfs::statvfs(self.target)
            .map_err(|e| io(self.target)(io::Error::from(e)))?;
        let block = stat.fragment_size();
        let free = stat.blocks_available().saturating_mul(block);
        self.reserve = match self.limit.keep_free {
            KeepFree::Auto => (stat.blocks().saturating_mul(block) / 20).min(1 << 30),
            KeepFree::Bytes(n) => n,
            KeepFree::Off => 0,
        };
        self.free_at_check = Some(free);
        self.since_check = 0;
        Ok(free)
    }

    /// Accounts for `size` more bytes for `entry`, or refuses them.
    fn take(&mut self, entry: &str, size: u64) -> Result<(), StoreError> {
        let total = self.written.saturating_add(size);
        if let Some(max) = self.limit.max_bytes
            && total > max
        {
            return Err(StoreError::TooLarge {
                entry: entry.to_owned(),
                reason: format!(
                    "the archive expands to more than the limit of {} ({} with this entry); it may be a decompression bomb",
                    human(max),
                    human(total)
                ),
            });
        }
        if self.limit.keep_free != KeepFree::Off {
            let estimate = match self.free_at_check {
                Some(free) if self.since_check.saturating_add(size) < CHECK_EVERY => {
                    free.saturating_sub(self.since_check)
                }
                _ => self.look()?,
            };
            if estimate.saturating_sub(size) < self.reserve {
                // Look again before refusing: others may have freed space.
                let free = self.look()?;
                if free.saturating_sub(size) < self.reserve {
                    return Err(StoreError::TooLarge {
                        entry: entry.to_owned(),
                        reason: format!(
                            "extracting it would leave less than {} free on the filesystem of {} ({} free, {} extracted so far); the archive may be a decompression bomb, or the disk needs space",
                            human(self.reserve),
                            self.target.display(),
                            human(free),
                            human(self.written)
                        ),
                    });
                }
            }
        }
        self.written = total;
        self.since_check = self.since_check.saturating_add(size);
        Ok(())
    }
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
/// when given, bounded by the default [`SizeLimit`].
pub fn extract_archive(
    reader: impl Read + 'static,
    root: &Path,
    owner: Option<(u32, u32)>,
) -> Result<ApplyStats, StoreError> {
    let options = ApplyOptions {
        owner,
        ..ApplyOptions::layer(WhiteoutStyle::Literal)
    };
    apply_with(reader, root, &options)
}

/// Extracts a local archive for `ADD` into `root` (its destination in the new diff dir)
/// as BuildKit does (`solver/llbsolver/file/unpack.go`: moby's `chrootarchive.Untar`
/// with `ChownOpts` only for `--chown`): names resolved as in a chroot at `root`
/// ([`EntryNames::Chroot`], through `below`), the archive's owners kept unless `owner`
/// is given (missing parents are root's either way), modes (setuid included), mtimes,
/// hard links, xattrs and devices as the archive has them.
pub fn extract_add_archive(
    reader: impl Read + 'static,
    root: &Path,
    owner: Option<(u32, u32)>,
    below: Option<&dyn Below>,
) -> Result<ApplyStats, StoreError> {
    let options = ApplyOptions {
        owner,
        names: EntryNames::Chroot(below),
        ..ApplyOptions::layer(WhiteoutStyle::Literal)
    };
    apply_with(reader, root, &options)
}

/// An entry name cleaned as `filepath.Join("/", filepath.Clean(name))` would: `.` and
/// empty parts dropped, `..` removing the part before it and nothing at the root.
fn chroot_parts(raw: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other.to_owned()),
        }
    }
    parts
}

/// The host path of the directory `parts` names inside a chroot at `root`, following
/// symlinks (the target's, else `below`'s) without ever leaving `root`. Missing
/// directories are made (`0755`, root's) when `create`, else are an error.
fn chroot_dir(
    root: &Path,
    parts: &[String],
    raw: &str,
    below: Option<&dyn Below>,
    create: bool,
) -> Result<PathBuf, StoreError> {
    enum Found {
        Dir,
        Link(PathBuf),
        Other,
        Missing,
    }
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: std::collections::VecDeque<String> = parts.iter().cloned().collect();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let rel = if resolved.is_empty() {
            part.clone()
        } else {
            format!("{}/{part}", resolved.join("/"))
        };
        let host = root.join(&rel);
        let found = match host.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                Found::Link(fs::read_link(&host).map_err(io(&host))?)
            }
            Ok(m) if m.is_dir() => Found::Dir,
            Ok(_) => Found::Other,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match below {
                None => Found::Missing,
                Some(below) => match below.lookup(&rel)? {
                    BelowEntry::Dir => {
                        below.copy_up_dir(&rel)?;
                        Found::Dir
                    }
                    BelowEntry::Symlink(target) => Found::Link(target),
                    BelowEntry::Other => Found::Other,
                    BelowEntry::Missing => Found::Missing,
                },
            },
            Err(e) => return Err(io(&host)(e)),
        };
        match found {
            Found::Dir => resolved.push(part),
            Found::Link(target) => {
                hops += 1;
                if hops > 255 {
                    return Err(refuse(raw, "too many levels of symbolic links"));
                }
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for p in target.rsplit('/') {
                    pending.push_front(p.to_owned());
                }
            }
            Found::Other => return Err(refuse(raw, "a parent path is not a directory")),
            Found::Missing if create => {
                fs::create_dir(&host).map_err(io(&host))?;
                std::os::unix::fs::lchown(&host, Some(0), Some(0)).map_err(io(&host))?;
                fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(io(&host))?;
                resolved.push(part);
            }
            Found::Missing => {
                return Err(refuse(
                    raw,
                    &format!("its hard-link target's directory /{rel} does not exist"),
                ));
            }
        }
    }
    Ok(root.join(resolved.join("/")))
}

/// Extracts the layer read from `reader` into `root`, bounded by the default
/// [`SizeLimit`].
pub fn apply_layer(
    reader: impl Read + 'static,
    root: &Path,
    style: WhiteoutStyle,
) -> Result<ApplyStats, StoreError> {
    apply_with(reader, root, &ApplyOptions::layer(style))
}

/// Extracts the archive read from `reader` into `root` as `options` say. The input is
/// read to its end; a store blob that turns out damaged fails the extraction with
/// [`StoreError::Corrupt`], whatever else went wrong on the way.
pub fn apply_with<R: Read + 'static>(
    reader: R,
    root: &Path,
    options: &ApplyOptions<'_>,
) -> Result<ApplyStats, StoreError> {
    let is_blob = (&reader as &dyn std::any::Any).is::<BlobReader>();
    let mut reader = Shared(std::rc::Rc::new(std::cell::RefCell::new(reader)));
    let result = apply_entries(Shared(std::rc::Rc::clone(&reader.0)), root, options);
    // Whatever follows the tar's end (end blocks, padding) is part of the blob: reading it
    // is what lets a BlobReader check the digest. After a failure, only a blob of the
    // store is read on (to tell damage from a bad archive); other inputs may be long.
    if (result.is_ok() || is_blob)
        && let Err(e) = io::copy(&mut reader, &mut io::sink())
    {
        let tail = io("<layer>")(e);
        return match (result, tail) {
            (_, corrupt @ StoreError::Corrupt { .. }) => Err(corrupt),
            (Err(first), _) => Err(first),
            (Ok(_), tail) => Err(tail),
        };
    }
    result
}

/// One reader, read by the tar walk and then by the drain that follows it.
struct Shared<R>(std::rc::Rc<std::cell::RefCell<R>>);

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

fn apply_entries<R: Read + 'static>(
    reader: Shared<R>,
    root: &Path,
    options: &ApplyOptions<'_>,
) -> Result<ApplyStats, StoreError> {
    let style = options.style;
    let owner = options.owner;
    let mut budget = Budget::new(options.limit, root);
    let mut uncompressed = crate::digest::HashingReader::new(decompress(reader)?);
    let mut archive = tar::Archive::new(&mut uncompressed);
    let mut stats = ApplyStats::default();
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(io("<layer>"))?;
    for entry in entries {
        let mut entry = entry.map_err(io("<layer>"))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts = match options.names {
            EntryNames::Layer => clean_parts(&raw)?,
            EntryNames::Chroot(_) => chroot_parts(&raw),
        };
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

        let path = match options.names {
            EntryNames::Layer => confined(root, &parts, &raw)?,
            EntryNames::Chroot(below) => {
                chroot_dir(root, &parts[..parts.len() - 1], &raw, below, true)?.join(&name)
            }
        };
        if let Some(protected) = options.protected
            && path
                .ancestors()
                .take_while(|p| p.starts_with(root) && *p != root)
                .any(|p| protected.contains(p))
        {
            return Err(refuse(
                &raw,
                "the destination has a symlink there; kiln never replaces or writes through a symlink it did not create",
            ));
        }
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
                budget.take(&raw, header.size().unwrap_or(0))?;
                if !options.setuid && meta.mode & 0o6000 != 0 {
                    let to = meta.mode & !0o6000;
                    stats.changed.push(Changed {
                        path: raw.clone(),
                        change: Change::SpecialBitsCleared {
                            from: meta.mode & 0o7777,
                            to: to & 0o7777,
                        },
                    });
                    meta.mode = to;
                }
                remove_any(&path)?;
                // create_new: never follows a symlink put there after the removal.
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io(&path))?;
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
                let target_path = match options.names {
                    EntryNames::Layer => {
                        let target_parts = clean_parts(&target_raw).map_err(|_| {
                            refuse(&raw, "its hard-link target leaves the layer's root")
                        })?;
                        confined(root, &target_parts, &raw)?
                    }
                    EntryNames::Chroot(below) => {
                        let target_parts = chroot_parts(&target_raw);
                        let Some((last, dir)) = target_parts.split_last() else {
                            return Err(refuse(&raw, "its hard-link target is the root"));
                        };
                        chroot_dir(root, dir, &raw, below, false)?.join(last)
                    }
                };
                let target_meta = match target_path.symlink_metadata() {
                    Ok(m) if !m.is_dir() => m,
                    _ => {
                        return Err(refuse(
                            &raw,
                            "its hard-link target is not a file of this layer",
                        ));
                    }
                };
                remove_any(&path)?;
                fs::hard_link(&target_path, &path).map_err(io(&path))?;
                if let EntryNames::Chroot(_) = options.names {
                    // moby's createTarFile chowns, chmods and times the link's path too
                    // (the inode it shares), from the link's own header.
                    meta.is_symlink = target_meta.file_type().is_symlink();
                    tree_copy::apply_meta(&path, &meta)?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                if !options.devices && kind != tar::EntryType::Fifo {
                    stats.changed.push(Changed {
                        path: raw.clone(),
                        change: Change::DeviceSkipped { major, minor },
                    });
                    continue;
                }
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
    if let Some(expected) = &options.diff_id {
        // What follows the tar's end blocks is part of the uncompressed stream too.
        io::copy(&mut uncompressed, &mut io::sink()).map_err(io("<layer>"))?;
        let got = uncompressed.digest();
        if got != *expected {
            return Err(StoreError::Format {
                path: "<layer>".into(),
                reason: format!(
                    "its uncompressed content is {got}, its image's config says {expected} (a diff_id that does not describe it: the image or cache is damaged or forged)"
                ),
            });
        }
    }
    for (dir, meta) in dirs.iter().rev() {
        // A later entry may have replaced the directory, or a parent of it, with a symlink
        // (to anywhere on the host): its metadata then belongs to nothing any more.
        if is_directory_below(root, dir) {
            tree_copy::apply_meta(dir, meta)?;
        }
    }
    Ok(stats)
}

/// Whether `path` is `root` or below it through real directories only: every component
/// after `root` checked with lstat, none a symlink. Nothing else writes into the tree
/// while an archive is applied, so the answer holds until the metadata is set.
fn is_directory_below(root: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    for part in rest.components() {
        let std::path::Component::Normal(name) = part else {
            return false;
        };
        at.push(name);
        match at.symlink_metadata() {
            Ok(meta) if meta.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// Checks an archive's entries as they stream past, with the rules extraction applies,
/// without writing anything: no absolute names, no `..`, nothing below a symlink of
/// the archive, hard links only to files the archive has before them. Refusals are
/// [`StoreError::UnsafeEntry`], naming the entry.
#[derive(Debug, Default)]
pub struct Validator {
    symlinks: HashSet<Vec<String>>,
    files: HashSet<Vec<String>>,
}

impl Validator {
    /// Checks an archive entry as it comes from the reader; returns its raw name.
    pub fn check_entry<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<String, StoreError> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        self.check(&raw, entry.header().entry_type(), link.as_deref())?;
        Ok(raw)
    }

    /// Checks one entry (its raw name, type and, for links, raw target).
    pub fn check(
        &mut self,
        raw: &str,
        kind: tar::EntryType,
        link: Option<&str>,
    ) -> Result<(), StoreError> {
        let parts = clean_parts(raw)?;
        self.no_symlink_above(&parts, raw)?;
        match kind {
            tar::EntryType::Symlink => {
                if link.is_none_or(str::is_empty) {
                    return Err(refuse(raw, "a symlink without a target"));
                }
                self.files.remove(&parts);
                self.symlinks.insert(parts);
            }
            tar::EntryType::Link => {
                let target = link.ok_or_else(|| refuse(raw, "a hard link without a target"))?;
                let target_parts = clean_parts(target)
                    .map_err(|_| refuse(raw, "its hard-link target leaves the layer's root"))?;
                if !self.files.contains(&target_parts) {
                    return Err(refuse(
                        raw,
                        "its hard-link target is not a file of this layer",
                    ));
                }
                self.symlinks.remove(&parts);
                self.files.insert(parts);
            }
            tar::EntryType::Directory => {
                self.symlinks.remove(&parts);
                self.files.remove(&parts);
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => {
                self.symlinks.remove(&parts);
                self.files.insert(parts);
            }
        }
        Ok(())
    }

    fn no_symlink_above(&self, parts: &[String], raw: &str) -> Result<(), StoreError> {
        for end in 1..parts.len() {
            if self.symlinks.contains(&parts[..end]) {
                return Err(refuse(
                    raw,
                    "a parent directory is a symlink; writing through it could leave the layer's root",
                ));
            }
        }
        Ok(())
    }
}

/// Stores the archive read from `reader` (plain or compressed) as an uncompressed layer
/// blob (`kiln import`), checking every entry with [`Validator`] while it streams in and
/// bounding it by `limit` (free space is that of the store's filesystem). Nothing is
/// stored unless the whole archive is a tar whose entries extraction would accept.
/// `name` names the input in errors.
pub fn import_layer(
    reader: impl Read + 'static,
    content: &ContentStore,
    limit: SizeLimit,
    name: &str,
) -> Result<LayerInfo, StoreError> {
    struct Tee<'a, R> {
        inner: R,
        copy: &'a mut crate::BlobWriter,
    }
    impl<R: Read> Read for Tee<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            io::Write::write_all(self.copy, &buf[..n])?;
            Ok(n)
        }
    }
    let bad = |reason: String| StoreError::Format {
        path: PathBuf::from(name),
        reason,
    };
    let plain = decompress(reader)?;
    let mut blob = content.writer()?;
    let target = content.path(&crate::Digest::of(b""));
    let store_dir = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(store_dir).map_err(io(store_dir))?;
    let mut budget = Budget::new(limit, store_dir);
    {
        let mut tee = Tee {
            inner: plain,
            copy: &mut blob,
        };
        let mut validator = Validator::default();
        let mut archive = tar::Archive::new(&mut tee);
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("a damaged tar entry: {e}")))?;
            let raw = validator.check_entry(&entry)?;
            budget.take(&raw, entry.size())?;
            io::copy(&mut entry, &mut io::sink())
                .map_err(|e| bad(format!("entry {raw:?} is cut short: {e}")))?;
        }
        // Whatever follows the last entry (end blocks, padding) belongs to the tar too.
        io::copy(&mut tee, &mut io::sink()).map_err(io(name))?;
    }
    let (digest, size) = blob.commit(None)?;
    Ok(LayerInfo {
        diff_id: digest.clone(),
        digest,
        size,
        media_type: Compression::None.media_type().to_owned(),
    })
}

/// What [`sync_archive`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries the directory already held exactly (left untouched).
    pub kept: usize,
    /// Entries written.
    pub written: usize,
    /// Paths removed because the archive no longer has them (or has another kind).
    pub removed: usize,
}

/// What kind an archive entry is, for comparing it with what a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncKind {
    Dir,
    File,
    Symlink,
    Other,
}

impl SyncKind {
    fn of_entry(kind: tar::EntryType) -> Option<SyncKind> {
        match kind {
            tar::EntryType::Directory => Some(SyncKind::Dir),
            tar::EntryType::Regular | tar::EntryType::Continuous => Some(SyncKind::File),
            tar::EntryType::Symlink => Some(SyncKind::Symlink),
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => None,
            _ => Some(SyncKind::Other),
        }
    }

    fn of_meta(meta: &fs::Metadata) -> SyncKind {
        let ft = meta.file_type();
        if ft.is_dir() {
            SyncKind::Dir
        } else if ft.is_file() {
            SyncKind::File
        } else if ft.is_symlink() {
            SyncKind::Symlink
        } else {
            SyncKind::Other
        }
    }
}

/// `root/parts`, only if every parent below `root` is a real directory (nothing is
/// created, no symlink is followed).
fn existing_below(root: &Path, parts: &[String]) -> Option<PathBuf> {
    let mut path = root.to_owned();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        if i + 1 < parts.len() && !path.symlink_metadata().ok()?.is_dir() {
            return None;
        }
    }
    Some(path)
}

/// Whether the regular file at `path` is exactly the entry: kind, size, permission bits,
/// owner, mtime as extraction sets it (whole seconds) and every byte. Reads the entry
/// to its end either way.
fn file_matches(path: &Path, entry: &mut tar::Entry<'_, impl Read>) -> io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let header = entry.header();
    // A field that does not parse (blank, as some writers leave uid and gid) is not
    // compared: the entry is written, as the extraction reads it.
    let (Ok(size), Ok(mode), Ok(uid), Ok(gid), Ok(mtime)) = (
        header.size(),
        header.mode().map(|m| m & 0o7777),
        header.uid(),
        header.gid(),
        header.mtime(),
    ) else {
        return Ok(false);
    };
    let Ok(meta) = path.symlink_metadata() else {
        return Ok(false);
    };
    // A file still sharing its inode (hard links from an earlier archive) is rewritten:
    // a fresh extraction would not share it.
    if !meta.file_type().is_file()
        || meta.nlink() != 1
        || meta.len() != size
        || meta.mode() & 0o7777 != mode
        || u64::from(meta.uid()) != uid
        || u64::from(meta.gid()) != gid
        || meta.mtime() != mtime as i64
        || meta.mtime_nsec() != 0
    {
        return Ok(false);
    }
    let mut file = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // Context files are mostly small: buffers sized to the file, at most 64 KiB each.
    let chunk = (size as usize).clamp(1, 64 << 10);
    let mut want = vec![0u8; chunk];
    let mut have = vec![0u8; chunk];
    loop {
        let n = entry.read(&mut want)?;
        if n == 0 {
            // The file must end here too.
            return Ok(file.read(&mut have[..1])? == 0);
        }
        if file.read_exact(&mut have[..n]).is_err() || want[..n] != have[..n] {
            return Ok(false);
        }
    }
}

/// Calls `f` for each entry of the archive read from `reader` that names a path below its
/// root: the entry, its raw name, its kind and its cleaned components (PAX and long-name
/// headers, and the root itself, are passed over).
fn for_each_path(
    reader: Box<dyn Read>,
    archive: &Path,
    mut f: impl FnMut(
        &mut tar::Entry<'_, Box<dyn Read>>,
        &str,
        SyncKind,
        Vec<String>,
    ) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::Format {
        path: archive.to_owned(),
        reason,
    };
    let mut tar = tar::Archive::new(reader);
    for entry in tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("a damaged tar entry: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(kind) = SyncKind::of_entry(entry.header().entry_type()) else {
            continue;
        };
        let parts = clean_parts(&raw)?;
        if !parts.is_empty() {
            f(&mut entry, &raw, kind, parts)?;
        }
    }
    Ok(())
}

/// Makes `root` hold exactly the entries of the archive at `archive` (plain or
/// compressed), writing only what differs: a kept build context that a client sends
/// again. Files whose bytes and metadata already match are not touched, so their inode,
/// times and the content memo keyed by them stay valid; what the archive no longer names
/// is removed. Every write goes through [`extract_archive`] (its refusals included),
/// from a copy of the changed entries at `scratch`; an archive with hard links or PAX
/// records is extracted whole after the removals.
pub fn sync_archive(archive: &Path, root: &Path, scratch: &Path) -> Result<SyncStats, StoreError> {
    use std::collections::BTreeMap;
    let bad = |reason: String| StoreError::Format {
        path: archive.to_owned(),
        reason,
    };
    let open = || -> Result<Box<dyn Read>, StoreError> {
        decompress(fs::File::open(archive).map_err(io(archive))?)
    };
    fs::create_dir_all(root).map_err(io(root))?;
    // Pass 1: what the archive names (checked), and whether entries can be copied as is.
    let mut names: BTreeMap<Vec<String>, SyncKind> = BTreeMap::new();
    let mut whole = false;
    {
        let mut validator = Validator::default();
        let mut tar = tar::Archive::new(open()?);
        for entry in tar
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?
        {
            let mut entry = entry.map_err(|e| bad(format!("a damaged tar entry: {e}")))?;
            let raw = validator.check_entry(&entry)?;
            let kind = entry.header().entry_type();
            let Some(sync_kind) = SyncKind::of_entry(kind) else {
                continue;
            };
            let parts = clean_parts(&raw)?;
            if parts.is_empty() {
                continue;
            }
            whole |= kind == tar::EntryType::Link
                || sync_kind == SyncKind::Other
                || entry.pax_extensions().ok().flatten().is_some();
            // A path named twice (a file, then a directory of that name) is extracted
            // whole: copying only the entries that differ could drop the later one.
            whole |= names.insert(parts, sync_kind).is_some();
        }
    }
    // Remove what the archive does not name, or names as another kind (so no stale
    // symlink stands where the archive has a directory), deepest first.
    let mut stats = SyncStats::default();
    let mut extra = Vec::new();
    for item in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .contents_first(true)
    {
        let item = item.map_err(|e| bad(format!("read {}: {e}", root.display())))?;
        let Ok(rel) = item.path().strip_prefix(root) else {
            continue;
        };
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let on_disk = item
            .path()
            .symlink_metadata()
            .map(|m| SyncKind::of_meta(&m))
            .map_err(io(item.path()))?;
        if names.get(&parts) != Some(&on_disk) {
            extra.push((item.path().to_owned(), on_disk));
        }
    }
    for (path, kind) in extra {
        let removed = match kind {
            SyncKind::Dir => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match removed {
            Ok(()) => stats.removed += 1,
            // Inside a directory removed before it (contents-first order lists children
            // of a directory that is itself extra).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    if whole {
        let applied = extract_archive(fs::File::open(archive).map_err(io(archive))?, root, None)?;
        stats.written = applied.entries as usize;
        return Ok(stats);
    }
    // Pass 2: which files and symlinks differ from what `root` holds (reading a file's
    // bytes to compare consumes them, so copying waits for pass 3).
    let mut differ: HashSet<Vec<String>> = HashSet::new();
    for_each_path(open()?, archive, |entry, _, kind, parts| {
        let target = existing_below(root, &parts);
        let same = match (kind, &target) {
            (SyncKind::File, Some(path)) => file_matches(path, entry).map_err(io(path))?,
            (SyncKind::Symlink, Some(path)) => {
                use std::os::unix::fs::MetadataExt;
                let header = entry.header();
                let owner = (header.uid().ok(), header.gid().ok());
                let link = entry.link_name().ok().flatten().map(|l| l.into_owned());
                fs::read_link(path).ok() == link
                    && path.symlink_metadata().is_ok_and(|m| {
                        owner == (Some(u64::from(m.uid())), Some(u64::from(m.gid())))
                    })
            }
            // Nothing there yet: written.
            (SyncKind::File | SyncKind::Symlink, None) => false,
            // Directories are always copied (below); nothing else gets here.
            (SyncKind::Dir | SyncKind::Other, _) => return Ok(()),
        };
        if same {
            stats.kept += 1;
        } else {
            differ.insert(parts);
        }
        Ok(())
    })?;
    // Pass 3: the entries that differ, and every directory (their mode, owner and time
    // are cheap to set and are what a fresh extraction gives), into `scratch`.
    {
        let out = fs::File::create(scratch).map_err(io(scratch))?;
        let mut changed = tar::Builder::new(io::BufWriter::new(out));
        let write = |e: io::Error| io(scratch)(e);
        for_each_path(open()?, archive, |entry, raw, kind, parts| {
            let name = parts.join("/");
            let mut header = entry.header().clone();
            match kind {
                SyncKind::Dir => {
                    // A directory's header may carry a size whose bytes tar skips; the
                    // copy has none.
                    header.set_size(0);
                    changed
                        .append_data(&mut header, &name, io::empty())
                        .map_err(write)?;
                }
                SyncKind::File if differ.contains(&parts) => {
                    stats.written += 1;
                    changed
                        .append_data(&mut header, &name, entry)
                        .map_err(write)?;
                }
                SyncKind::Symlink if differ.contains(&parts) => {
                    stats.written += 1;
                    let link = entry
                        .link_name()
                        .map_err(|e| bad(format!("{raw}: {e}")))?
                        .map(|l| l.into_owned())
                        .unwrap_or_default();
                    header.set_size(0);
                    changed
                        .append_link(&mut header, &name, &link)
                        .map_err(write)?;
                }
                _ => {}
            }
            Ok(())
        })?;
        changed
            .into_inner()
            .and_then(|mut w| io::Write::flush(&mut w))
            .map_err(io(scratch))?;
    }
    extract_archive(fs::File::open(scratch).map_err(io(scratch))?, root, None)?;
    Ok(stats)
}
