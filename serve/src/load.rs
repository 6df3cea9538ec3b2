//! `POST /images/load`: a Docker archive (what `docker save` writes, classic or with an
//! OCI layout inside) streamed into the store. Every file of the archive goes straight
//! into a blob (hashed on the way, never extracted to a path), then `manifest.json` says
//! which blobs are configs and layers; a layer whose digest is not the config's diff_id
//! is refused, so what is tagged is what the archive's config promised.
//!
//! This belongs in the engine beside `save`; it lives here until the engine has it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use kiln_exporter::image::{Manifest, OCI_CONFIG, OCI_MANIFEST};
use kiln_snapshotter::layer_out::Compression;
use kiln_snapshotter::{Descriptor, Digest, Store};
use serde::Deserialize;

use crate::engine_calls::CallError;

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

fn bad(message: impl Into<String>) -> CallError {
    CallError::Invalid(format!("POST /images/load: {}", message.into()))
}

fn normal(path: &str) -> String {
    path.trim_start_matches("./").to_owned()
}

/// The media type of a layer blob whose uncompressed content must hash to `diff_id`:
/// a plain tar (its digest is the diff_id), or gzip / zstd of one.
fn layer_media_type(store: &Store, digest: &Digest, diff_id: &str) -> Result<&'static str, String> {
    if digest.as_str() == diff_id {
        return Ok(Compression::None.media_type());
    }
    let mut file = store.content().open(digest).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    let media_type = match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => {
            return Err(format!(
                "its digest is {digest}, but the config says {diff_id}"
            ));
        }
    };
    let file = store.content().open(digest).map_err(|e| e.to_string())?;
    let mut plain = kiln_snapshotter::layer_in::decompress(file).map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::default();
    std::io::copy(&mut plain, &mut HashWriter(&mut hasher)).map_err(|e| e.to_string())?;
    let actual = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    if actual != diff_id {
        return Err(format!(
            "uncompressed it is {actual}, but the config says {diff_id}"
        ));
    }
    Ok(media_type)
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Loads every image of the archive; returns the lines docker prints
/// (`Loaded image: NAME`, or `Loaded image ID: sha256:...` for an untagged one).
pub(crate) fn load(store: &Store, input: &mut dyn Read) -> Result<Vec<String>, CallError> {
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
    for image in images {
        let (config_digest, config_size) = blob(&image.config)?;
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
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: OCI_CONFIG.to_owned(),
                digest: config_digest.clone(),
                size: config_size,
                annotations: BTreeMap::new(),
            },
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| CallError::Failed(format!("write the manifest: {e}")))?;
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
            store.tags().tag(&name, descriptor.clone())?;
            loaded.push(format!("Loaded image: {tag}"));
        }
    }
    Ok(loaded)
}
