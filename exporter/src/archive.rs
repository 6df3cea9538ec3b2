//! Images from the store to the world, as `docker buildx build -o` writes them.
//!
//! | output | function | what it writes |
//! |---|---|---|
//! | `type=oci,dest=DIR` | [`write_oci_layout`] | an OCI image layout directory (merged into an existing one) |
//! | `type=oci,dest=FILE` | [`write_oci_archive`] | the same layout as a tar |
//! | `type=docker,dest=FILE` | [`write_docker_archive`] | `docker load`'s tar: `manifest.json` + the OCI layout |
//! | `type=local,dest=DIR` | [`write_rootfs_dir`] | the final filesystem |
//! | `type=tar,dest=FILE` | [`write_rootfs_tar`] | the final filesystem as one tar |
//!
//! The store keeps layers uncompressed; [`export_image_for_output`] makes the image an
//! output carries: layers compressed as [`ArchiveOptions`] asks (each compression made
//! once per layer and remembered by the store), OCI or Docker media types, manifest
//! annotations. The config blob is never rewritten, so the image id stays the same
//! whatever the compression or media types.
//!
//! Everything streams: a layer goes from its blob file to the output through a 1 MiB
//! buffer, however large it is (a 1 GB layer exports with under 10 MB resident; `cargo
//! bench -p kiln-exporter --bench archive`). Archives are deterministic: entries
//! sorted, mtime 0, uid/gid 0, no user names, so the same image gives the same bytes.
//! Writers take any [`Write`](std::io::Write); [`write_to_file`] gives them a file that
//! appears at its path only when complete (`DEST.tmp`, then a rename); `-` (stdout) is
//! the caller's business.
//!
//! ```no_run
//! # fn demo(store: &kiln_snapshotter::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_exporter::archive::{ArchiveOptions, write_oci_archive, write_to_file};
//! let (_names, image) = kiln_exporter::image::find_image(store, "app:1")?;
//! let options = ArchiveOptions { names: vec!["app:1".into()], ..ArchiveOptions::default() };
//! write_to_file(std::path::Path::new("app.tar"), |out| {
//!     write_oci_archive(store, &image, &options, out)
//! })?;
//! # Ok(()) }
//! ```

mod layout;
mod rootfs;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use kiln_snapshotter::layer_out::{Compression, compress_blob};
use kiln_snapshotter::{Descriptor, Digest, Store, StoreError};
use sha2::{Digest as _, Sha256};

use crate::registry::{DOCKER_MANIFEST, ImageRef};
use kiln_image::image::{Manifest, OCI_CONFIG, OCI_MANIFEST, StoredImage};

pub use layout::{write_docker_archive, write_oci_archive, write_oci_layout};
pub use rootfs::{
    LocalOptions, LocalReport, check_local_dest, write_rootfs_dir, write_rootfs_stream,
    write_rootfs_tar,
};

/// The Docker schema2 image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// A Docker schema2 gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// A Docker schema2 uncompressed layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// A zstd layer under Docker media types (containerd's name; docker ≥ 23 reads it).
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// The index annotation with the full image name (`docker.io/library/app:1`).
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The index annotation with the tag (`1`), as the OCI layout spec defines a ref name.
pub const REF_NAME_ANNOTATION: &str = kiln_snapshotter::index::REF_NAME;

/// How an image is written out.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// How layers are compressed (BuildKit's default: gzip, level 6). Layers of the store
    /// (uncompressed) always get it; layers already compressed another way (from a
    /// pulled base image) keep theirs unless [`force_compression`](Self::force_compression).
    pub compression: Compression,
    /// Recompress layers that are already compressed (`force-compression=true`).
    pub force_compression: bool,
    /// OCI media types; false gives Docker schema2 ones. zstd forces OCI media types, as
    /// in BuildKit: Docker schema2 has no zstd layer. [`write_docker_archive`] always uses
    /// Docker media types (but for zstd).
    pub oci_mediatypes: bool,
    /// Image names (`app`, `reg:5000/app:1`): the index annotations of OCI layouts and
    /// the `RepoTags` of Docker archives.
    pub names: Vec<String>,
    /// Manifest annotations (`annotation.KEY=VALUE`), over those the image already has.
    pub annotations: BTreeMap<String, String>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            compression: Compression::default_gzip(),
            force_compression: false,
            oci_mediatypes: true,
            names: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blob the image needs is not in the store.
    #[error(
        "blob {digest} of image {image} is not in the store; build or pull the image again (kiln prune removes blobs no tag refers to)"
    )]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// The image's id.
        image: Digest,
    },
    /// The destination (a file or directory) could not be written.
    #[error(
        "cannot write {path}: {source}; check that its directory exists, is writable and has space, or choose another dest"
    )]
    Dest {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The destination is refused before anything is written.
    #[error("refusing dest {path}: {reason}")]
    DestRefused {
        /// The destination as given.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Writing to the output stream failed.
    #[error(
        "writing the output failed at {entry}: {source}; check that the destination is writable and has space"
    )]
    Write {
        /// The archive entry being written.
        entry: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A layer has a media type kiln cannot export.
    #[error(
        "layer {digest} has media type {media_type}, which is not a tar, tar+gzip or tar+zstd layer; kiln cannot export it"
    )]
    UnsupportedLayer {
        /// The layer blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A layer's content is not what it should be.
    #[error("layer {digest}: {reason}")]
    BadLayer {
        /// The layer blob.
        digest: Digest,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The config and the manifest disagree on the number of layers.
    #[error(
        "image {image} is damaged: its config lists {diff_ids} layers, its manifest {layers}; build it again"
    )]
    LayerCount {
        /// The image's id.
        image: Digest,
        /// Entries of `rootfs.diff_ids`.
        diff_ids: usize,
        /// Layers of the manifest.
        layers: usize,
    },
    /// An image name that cannot go into an archive.
    #[error("invalid image name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A `type=oci` destination directory holds something that is not an OCI layout.
    #[error("{path} is not an OCI image layout ({reason}); choose a new or empty directory")]
    NotALayout {
        /// The file that is not as a layout's should be.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Manifest annotations were asked for with Docker media types.
    #[error(
        "manifest annotations need OCI media types (Docker schema2 manifests have none): use oci-mediatypes=true with type=oci or type=image, or drop the annotations"
    )]
    AnnotationsNeedOci,
}

impl ArchiveError {
    /// The error as it reads when the output went to `path`.
    fn at(self, path: &Path) -> ArchiveError {
        match self {
            ArchiveError::Write { source, .. } => ArchiveError::Dest {
                path: path.to_owned(),
                source,
            },
            other => other,
        }
    }
}

fn dest_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Dest {
        path: path.to_owned(),
        source,
    }
}

fn write_err(entry: &str) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Write {
        entry: entry.to_owned(),
        source,
    }
}

/// Turns "not in the store" into an error that names the image and says what to do.
fn missing(image: &StoredImage) -> impl Fn(StoreError) -> ArchiveError + '_ {
    move |e| match e {
        StoreError::BlobNotFound { digest } => ArchiveError::MissingBlob {
            digest,
            image: image.id.clone(),
        },
        other => ArchiveError::Store(other),
    }
}

/// [`kiln_image::file::write_to_file`] with the archive's errors: `dest` is written
/// through a temp file beside it and appears only when complete; only a regular file is
/// ever replaced.
pub fn write_to_file<T>(
    dest: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, ArchiveError>,
) -> Result<T, ArchiveError> {
    match kiln_image::file::write_to_file(dest, |out| write(out).map_err(|e| e.at(dest))) {
        Ok(written) => written,
        Err(kiln_image::file::DestError::Refused { path, reason }) => {
            Err(ArchiveError::DestRefused { path, reason })
        }
        Err(kiln_image::file::DestError::Io { path, source }) => {
            Err(ArchiveError::Dest { path, source })
        }
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    Tar,
    Gzip,
    Zstd,
}

impl LayerKind {
    fn of_media_type(media_type: &str) -> Option<LayerKind> {
        // OCI (`...tar`, `...tar+gzip`), Docker (`...tar.gzip`), nondistributable variants.
        if media_type.ends_with(".tar") {
            Some(LayerKind::Tar)
        } else if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Some(LayerKind::Gzip)
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            Some(LayerKind::Zstd)
        } else {
            None
        }
    }

    fn of_compression(compression: Compression) -> LayerKind {
        match compression {
            Compression::None => LayerKind::Tar,
            Compression::Gzip { .. } => LayerKind::Gzip,
            Compression::Zstd { .. } => LayerKind::Zstd,
        }
    }

    fn media_type(self, oci: bool) -> &'static str {
        match (self, oci) {
            (LayerKind::Tar, true) => "application/vnd.oci.image.layer.v1.tar",
            (LayerKind::Gzip, true) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (LayerKind::Zstd, true) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (LayerKind::Tar, false) => DOCKER_LAYER,
            (LayerKind::Gzip, false) => DOCKER_LAYER_GZIP,
            (LayerKind::Zstd, false) => DOCKER_LAYER_ZSTD,
        }
    }
}

/// Reads a blob for an output: counts (and, if asked, hashes) what passes, and keeps the
/// first read error so that a failure is blamed on the right side, the store or the
/// destination.
struct SourceReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    count: u64,
    failed: Option<io::Error>,
}

impl<R: Read> SourceReader<R> {
    fn new(inner: R, hash: bool) -> SourceReader<R> {
        SourceReader {
            inner,
            hasher: hash.then(Sha256::new),
            count: 0,
            failed: None,
        }
    }

    /// The digest of what was read (only for a hashing reader).
    fn digest(&self) -> Option<Digest> {
        let hex = hex::encode(self.hasher.clone()?.finalize());
        Some(Digest::parse(&format!("sha256:{hex}")).expect("sha256 hex is a valid digest"))
    }

    /// The error of a copy out of this reader: the reader's own, or the writer's.
    fn blame(&mut self, source_path: &Path, entry: &str, error: io::Error) -> ArchiveError {
        match self.failed.take() {
            Some(source) => ArchiveError::Store(match kiln_snapshotter::damaged_blob(&source) {
                Some(digest) => StoreError::Corrupt { digest },
                None => StoreError::Io {
                    path: source_path.to_owned(),
                    source,
                },
            }),
            None => write_err(entry)(error),
        }
    }
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&buf[..n]);
                }
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed.get_or_insert(e);
                Err(copy)
            }
        }
    }
}

/// How much [`append_file`] reads and writes at a time.
const CHUNK: usize = 1 << 20;

/// Appends a file entry of `size` bytes read from `reader` (which reads `source_path`).
/// The header goes through the builder, which turns long names into GNU long-name
/// entries; the bytes go straight to the output in [`CHUNK`]s (the builder's own copy
/// moves 8 KiB at a time, a third of the speed), then the padding to a 512-byte block.
/// The caller checks `reader.count` against `size`.
fn append_file<W: io::Write, R: Read>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    path: &Path,
    entry: &str,
    reader: &mut SourceReader<R>,
    source_path: &Path,
    buf: &mut Vec<u8>,
) -> Result<(), ArchiveError> {
    let size = header.entry_size().map_err(write_err(entry))?;
    // With no data to copy, the builder writes the header and no padding.
    builder
        .append_data(header, path, io::empty())
        .map_err(write_err(entry))?;
    let out = builder.get_mut();
    buf.resize(CHUNK, 0);
    let mut left = size;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => return Ok(()), // cut short: the caller sees reader.count
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(reader.blame(source_path, entry, e)),
        };
        out.write_all(&buf[..n]).map_err(write_err(entry))?;
        left -= n as u64;
    }
    let padding = (512 - size % 512) % 512;
    out.write_all(&[0; 512][..padding as usize])
        .map_err(write_err(entry))
}

fn parse_diff_id(image: &StoredImage, index: usize) -> Result<Digest, ArchiveError> {
    let text = &image.config.rootfs.diff_ids[index];
    Digest::parse(text).ok_or_else(|| ArchiveError::BadLayer {
        digest: image.manifest.layers[index].digest.clone(),
        reason: format!("its diff_id {text:?} in the image config is not a sha256 digest"),
    })
}

/// The layers with their diff_ids, checked to be as many.
fn layers_with_diff_ids(image: &StoredImage) -> Result<Vec<(&Descriptor, Digest)>, ArchiveError> {
    let layers = &image.manifest.layers;
    let diff_ids = &image.config.rootfs.diff_ids;
    if layers.len() != diff_ids.len() {
        return Err(ArchiveError::LayerCount {
            image: image.id.clone(),
            diff_ids: diff_ids.len(),
            layers: layers.len(),
        });
    }
    (0..layers.len())
        .map(|i| Ok((&layers[i], parse_diff_id(image, i)?)))
        .collect()
}

/// The uncompressed tar of a layer, in the store: the layer itself when it is a plain
/// tar, else its diff_id blob, made (verified) when absent.
fn uncompressed_layer(
    store: &Store,
    image: &StoredImage,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<Digest, ArchiveError> {
    let kind = LayerKind::of_media_type(&layer.media_type).ok_or_else(|| unsupported(layer))?;
    if kind == LayerKind::Tar {
        return Ok(layer.digest.clone());
    }
    if store.content().exists(diff_id) {
        return Ok(diff_id.clone());
    }
    let file = store
        .content()
        .open(&layer.digest)
        .map_err(missing(image))?;
    let mut reader = SourceReader::new(kiln_snapshotter::layer_in::decompress(file)?, false);
    let mut writer = store.content().writer()?;
    if let Err(e) = io::copy(&mut reader, &mut writer) {
        let damaged = reader
            .failed
            .as_ref()
            .and_then(kiln_snapshotter::damaged_blob);
        return Err(match (damaged, reader.failed) {
            (Some(digest), _) => StoreError::Corrupt { digest }.into(),
            (None, Some(e)) => ArchiveError::BadLayer {
                digest: layer.digest.clone(),
                reason: format!("cannot decompress it ({e}); pull or build the image again"),
            },
            (None, None) => StoreError::Io {
                path: store.tmp_dir(),
                source: e,
            }
            .into(),
        });
    }
    match writer.commit(Some(diff_id)) {
        Ok(_) => Ok(diff_id.clone()),
        Err(StoreError::DigestMismatch { actual, .. }) => Err(not_its_diff_id(layer, &actual)),
        Err(e) => Err(e.into()),
    }
}

fn unsupported(layer: &Descriptor) -> ArchiveError {
    ArchiveError::UnsupportedLayer {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
    }
}

fn not_its_diff_id(layer: &Descriptor, actual: &Digest) -> ArchiveError {
    ArchiveError::BadLayer {
        digest: layer.digest.clone(),
        reason: format!(
            "it decompresses to {actual}, not the diff_id the image config lists; the image is damaged, pull or build it again"
        ),
    }
}

/// The layer as the output carries it: (kind, digest, size), converted if asked.
fn output_layer(
    store: &Store,
    image: &StoredImage,
    layer: &Descriptor,
    diff_id: &Digest,
    options: &ArchiveOptions,
) -> Result<(LayerKind, Digest, u64), ArchiveError> {
    let current = LayerKind::of_media_type(&layer.media_type).ok_or_else(|| unsupported(layer))?;
    let wanted = LayerKind::of_compression(options.compression);
    // The store's plain tars always take the compression asked for; layers that came
    // compressed keep theirs unless forced (BuildKit's `force-compression`).
    let keep = if current == LayerKind::Tar {
        wanted == LayerKind::Tar
    } else {
        !options.force_compression
    };
    if keep {
        let size =
            store
                .content()
                .size(&layer.digest)
                .ok_or_else(|| ArchiveError::MissingBlob {
                    digest: layer.digest.clone(),
                    image: image.id.clone(),
                })?;
        if size != layer.size {
            return Err(ArchiveError::BadLayer {
                digest: layer.digest.clone(),
                reason: format!(
                    "the blob has {size} bytes, the manifest says {}; run kiln prune and build or pull the image again",
                    layer.size
                ),
            });
        }
        return Ok((current, layer.digest.clone(), layer.size));
    }
    let source = if current == LayerKind::Tar {
        Some(layer.digest.clone())
    } else if wanted == LayerKind::Tar || store.content().exists(diff_id) {
        Some(uncompressed_layer(store, image, layer, diff_id)?)
    } else {
        None
    };
    let info = match source {
        // From the plain tar: memoised per (layer, compression) by the store.
        Some(tar) if wanted == LayerKind::Tar => {
            let size = store
                .content()
                .size(&tar)
                .ok_or_else(|| ArchiveError::MissingBlob {
                    digest: tar.clone(),
                    image: image.id.clone(),
                })?;
            return Ok((LayerKind::Tar, tar, size));
        }
        Some(tar) => store
            .compressed_blob(&tar, options.compression)
            .map_err(missing(image))?,
        // Compressed one way, wanted another: decompress and recompress in one stream,
        // checking the result against the diff_id.
        None => {
            let file = store
                .content()
                .open(&layer.digest)
                .map_err(missing(image))?;
            let mut reader = SourceReader::new(kiln_snapshotter::layer_in::decompress(file)?, true);
            let info = compress_blob(&mut reader, diff_id, store.content(), options.compression)?;
            let actual = reader.digest().expect("a hashing reader has a digest");
            if actual != *diff_id {
                return Err(not_its_diff_id(layer, &actual));
            }
            info
        }
    };
    Ok((wanted, info.digest, info.size))
}

/// The image as an output carries it: layers compressed as `options` asks, OCI or Docker
/// media types, manifest annotations. The new manifest is written into the store; the
/// config blob (hence the image id) is the same.
pub fn export_image_for_output(
    store: &Store,
    image: &StoredImage,
    options: &ArchiveOptions,
) -> Result<StoredImage, ArchiveError> {
    let oci = options.oci_mediatypes || matches!(options.compression, Compression::Zstd { .. });
    if !oci && !options.annotations.is_empty() {
        return Err(ArchiveError::AnnotationsNeedOci);
    }
    let config = &image.manifest.config;
    if !store.content().exists(&config.digest) {
        return Err(ArchiveError::MissingBlob {
            digest: config.digest.clone(),
            image: image.id.clone(),
        });
    }
    let mut layers = Vec::new();
    for (layer, diff_id) in layers_with_diff_ids(image)? {
        let (kind, digest, size) = output_layer(store, image, layer, &diff_id, options)?;
        let annotations = if digest == layer.digest {
            layer.annotations.clone()
        } else {
            BTreeMap::new()
        };
        layers.push(Descriptor {
            media_type: kind.media_type(oci).to_owned(),
            digest,
            size,
            annotations,
        });
    }
    let (manifest_type, config_type) = if oci {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    // Docker schema2 has no annotations: the image's own are dropped, not refused.
    let mut annotations = BTreeMap::new();
    if oci {
        annotations = image.manifest.annotations.clone();
        annotations.extend(options.annotations.clone());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_owned()),
        config: Descriptor {
            media_type: config_type.to_owned(),
            digest: config.digest.clone(),
            size: config.size,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::Format {
        path: "manifest".into(),
        reason: e.to_string(),
    })?;
    let digest = store.content().write_bytes(&bytes)?;
    Ok(StoredImage {
        manifest_descriptor: Descriptor {
            media_type: manifest_type.to_owned(),
            digest,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        },
        manifest,
        config: image.config.clone(),
        id: image.id.clone(),
    })
}

/// A name as archives carry it: the full normalised name (`docker.io/library/app:1`),
/// the OCI ref name (the tag, `@sha256:...` or `tag@sha256:...`, as containerd writes
/// it) and docker's short form for `RepoTags` (`app:1`; None for a digest-only name).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArchiveName {
    full: String,
    ref_name: String,
    repo_tag: Option<String>,
}

fn archive_name(name: &str) -> Result<ArchiveName, ArchiveError> {
    let parsed = ImageRef::parse(name).map_err(|e| ArchiveError::BadName {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let ref_name = match (parsed.tag(), parsed.digest()) {
        (Some(tag), Some(digest)) => format!("{tag}@{digest}"),
        (Some(tag), None) => tag.to_owned(),
        (None, Some(digest)) => format!("@{digest}"),
        (None, None) => "latest".to_owned(),
    };
    let repository = parsed.repository();
    let short_repo = if parsed.is_docker_hub() {
        match repository.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => repository.to_owned(),
        }
    } else {
        format!("{}/{repository}", parsed.registry())
    };
    Ok(ArchiveName {
        full: parsed.to_string(),
        ref_name,
        repo_tag: parsed.tag().map(|tag| format!("{short_repo}:{tag}")),
    })
}

/// The names of `options`, parsed, each once (first occurrence kept).
fn archive_names(options: &ArchiveOptions) -> Result<Vec<ArchiveName>, ArchiveError> {
    let mut out: Vec<ArchiveName> = Vec::new();
    for name in &options.names {
        let name = archive_name(name)?;
        if !out.iter().any(|n| n.full == name.full) {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn check_name(input: &str, full: &str, ref_name: &str, repo_tag: Option<&str>) {
        let got = archive_name(input).expect("valid name");
        assert_eq!(
            got,
            ArchiveName {
                full: full.to_owned(),
                ref_name: ref_name.to_owned(),
                repo_tag: repo_tag.map(str::to_owned),
            },
            "{input}"
        );
    }

    #[test]
    fn names_as_archives_carry_them() {
        check_name(
            "app",
            "docker.io/library/app:latest",
            "latest",
            Some("app:latest"),
        );
        check_name("me/app:1", "docker.io/me/app:1", "1", Some("me/app:1"));
        check_name(
            "127.0.0.1:5000/a/b:v2",
            "127.0.0.1:5000/a/b:v2",
            "v2",
            Some("127.0.0.1:5000/a/b:v2"),
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        check_name(
            &format!("app@{digest}"),
            &format!("docker.io/library/app@{digest}"),
            &format!("@{digest}"),
            None,
        );
        assert!(matches!(
            archive_name("Bad Name"),
            Err(ArchiveError::BadName { .. })
        ));
    }

    fn check_kind(media_type: &str, expected: Option<LayerKind>) {
        assert_eq!(
            LayerKind::of_media_type(media_type),
            expected,
            "{media_type}"
        );
    }

    #[test]
    fn layer_kinds_from_media_types() {
        check_kind(
            "application/vnd.oci.image.layer.v1.tar",
            Some(LayerKind::Tar),
        );
        check_kind(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Some(LayerKind::Gzip),
        );
        check_kind(
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Some(LayerKind::Zstd),
        );
        check_kind(DOCKER_LAYER, Some(LayerKind::Tar));
        check_kind(DOCKER_LAYER_GZIP, Some(LayerKind::Gzip));
        check_kind(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(LayerKind::Gzip),
        );
        check_kind("application/vnd.oci.image.config.v1+json", None);
    }

    #[test]
    fn a_failed_write_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("out.tar");
        let err = write_to_file(&dest, |out| {
            out.write_all(b"half").map_err(write_err("x"))?;
            Err::<(), _>(ArchiveError::Write {
                entry: "x".into(),
                source: io::Error::other("disk full"),
            })
        })
        .expect_err("fails");
        assert!(
            matches!(&err, ArchiveError::Dest { path, .. } if *path == dest),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
        write_to_file(&dest, |out| out.write_all(b"whole").map_err(write_err("x")))
            .expect("writes");
        assert_eq!(std::fs::read(&dest).expect("read"), b"whole");
    }
}
