//! `docker load`: a Docker archive (what `docker save` writes, classic or with an OCI
//! layout inside) streamed into the store, for `kiln load` and the server's
//! `POST /images/load`. Every file of the archive goes straight into a blob (hashed on
//! the way, never extracted to a path), then `manifest.json` says which blobs are
//! configs and layers. Each layer is read once more, uncompressed: it must hash to the
//! config's diff_id, and its entries must pass the checks of extraction (no `..`, no
//! absolute names, nothing below a symlink, hard links only to earlier files), so what
//! is tagged is what the config promised and nothing unusable enters the store.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use kiln_image::image::{Manifest, OCI_MANIFEST};
use kiln_snapshotter::layer_out::Compression;
use kiln_snapshotter::{Descriptor, Digest, Store};
use serde::Deserialize;

use crate::error::EngineError;

/// The metadata files of an archive, read into memory; everything else is a blob.
const METADATA: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];
/// Their largest total size.
const MAX_METADATA: u64 = 16 << 20;

#[derive(Deserialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigHead {
    rootfs: RootFs,
}

fn bad(message: impl Into<String>) -> EngineError {
    EngineError::invalid(
        format!("the archive to load: {}", message.into()),
        "give what docker save (or kiln save) writes".to_owned(),
    )
}

fn normal(path: &str) -> String {
    path.trim_start_matches("./").to_owned()
}

/// The media type of a layer blob whose uncompressed content must hash to `diff_id`
/// (a plain tar, or gzip / zstd of one) and whose entries must be safe to extract.
fn layer_media_type(store: &Store, digest: &Digest, diff_id: &str) -> Result<&'static str, String> {
    let mut file = store.content().open(digest).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    let media_type = match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => Compression::None.media_type(),
    };
    let file = store.content().open(digest).map_err(|e| e.to_string())?;
    let plain = kiln_snapshotter::layer_in::decompress(file).map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::default();
    let mut hashed = HashingReader {
        inner: plain,
        hasher: &mut hasher,
    };
    {
        let mut validator = kiln_snapshotter::layer_in::Validator::default();
        let mut archive = tar::Archive::new(&mut hashed);
        let entries = archive
            .entries()
            .map_err(|e| format!("not a tar archive: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("a damaged tar entry: {e}"))?;
            let raw = validator.check_entry(&entry).map_err(|e| e.to_string())?;
            std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| format!("entry {raw:?} is cut short: {e}"))?;
        }
    }
    // What follows the last entry (end blocks, padding) is part of the diff too.
    std::io::copy(&mut hashed, &mut std::io::sink()).map_err(|e| e.to_string())?;
    let actual = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    if actual != diff_id {
        return Err(format!(
            "uncompressed it is {actual}, but the config says {diff_id}"
        ));
    }
    Ok(media_type)
}

/// Hashes what is read through it.
struct HashingReader<'a, R> {
    inner: R,
    hasher: &'a mut sha2::Sha256,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(self.hasher, &buf[..n]);
        Ok(n)
    }
}

impl crate::Engine {
    /// Loads every image of a Docker archive (`docker load`); returns the lines docker
    /// prints (`Loaded image: NAME`, or `Loaded image ID: sha256:...` for an untagged one).
    /// A refused archive tags nothing; blobs it left are unreferenced, for `prune`.
    pub fn load(&self, input: &mut dyn Read) -> Result<Vec<String>, EngineError> {
        load(self.store(), input)
    }
}

fn load(store: &Store, input: &mut dyn Read) -> Result<Vec<String>, EngineError> {
    let mut archive = tar::Archive::new(input);
    let mut blobs: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut metadata: HashMap<String, Vec<u8>> = HashMap::new();
    let mut metadata_size = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("a damaged tar entry: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = normal(
            &entry
                .path()
                .map_err(|e| bad(format!("an entry name that is not a path: {e}")))?
                .to_string_lossy(),
        );
        if METADATA.contains(&path.as_str()) {
            metadata_size += entry.size();
            if metadata_size > MAX_METADATA {
                return Err(bad("the archive's metadata files are larger than 16 MiB"));
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| bad(format!("{path}: {e}")))?;
            metadata.insert(path, bytes);
            continue;
        }
        let mut writer = store.content().writer()?;
        std::io::copy(&mut entry, &mut writer).map_err(|e| bad(format!("{path}: {e}")))?;
        let (digest, size) = writer.commit(None)?;
        blobs.insert(path, (digest, size));
    }
    let manifest = metadata
        .get("manifest.json")
        .ok_or_else(|| bad("no manifest.json in the archive: give what docker save writes"))?;
    let images: Vec<ArchiveEntry> = serde_json::from_slice(manifest).map_err(|e| {
        bad(format!(
            "manifest.json is not a docker archive manifest: {e}"
        ))
    })?;
    let blob = |path: &str| {
        blobs.get(&normal(path)).cloned().ok_or_else(|| {
            bad(format!(
                "manifest.json names {path}, which the archive lacks"
            ))
        })
    };
    let mut loaded = Vec::new();
    let mut to_tag = Vec::new();
    for image in images {
        let (config_digest, config_size) = blob(&image.config)?;
        // A config is small JSON; a huge "config" would be read whole into memory.
        if config_size > MAX_METADATA {
            return Err(bad(format!(
                "{}: {config_size} bytes is too large for an image config",
                image.config
            )));
        }
        let config_bytes = store.content().read(&config_digest)?;
        let config: ConfigHead = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("{}: not an image config: {e}", image.config)))?;
        if config.rootfs.diff_ids.len() != image.layers.len() {
            return Err(bad(format!(
                "{}: the config lists {} layers, manifest.json {}",
                image.config,
                config.rootfs.diff_ids.len(),
                image.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in image.layers.iter().zip(&config.rootfs.diff_ids) {
            let (digest, size) = blob(path)?;
            let media_type = layer_media_type(store, &digest, diff_id)
                .map_err(|why| bad(format!("layer {path}: {why}")))?;
            layers.push(Descriptor {
                media_type: media_type.to_owned(),
                digest,
                size,
                annotations: BTreeMap::new(),
            });
        }
        // The manifest is kiln's own; the config is the archive's bytes, so the image id
        // is the one docker showed.
        let manifest = Manifest::oci(
            (config_digest.clone(), config_size),
            layers,
            BTreeMap::new(),
        );
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| EngineError::io("the image manifest", std::io::Error::other(e)))?;
        let digest = store.content().write_bytes(&bytes)?;
        let descriptor = Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        };
        let tags = image.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            loaded.push(format!("Loaded image ID: {config_digest}"));
        }
        for tag in tags {
            let name = kiln_snapshotter::normalize_name(&tag)
                .map_err(|e| bad(format!("RepoTags {tag}: {e}")))?;
            to_tag.push((name, descriptor.clone()));
            loaded.push(format!("Loaded image: {tag}"));
        }
    }
    // Only once every image of the archive passed: a refused archive tags nothing.
    for (name, descriptor) in to_tag {
        store.tags().tag(&name, descriptor)?;
    }
    Ok(loaded)
}
