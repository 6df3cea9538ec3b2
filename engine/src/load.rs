//! `docker load`: images from a Docker archive (`manifest.json` with `Config`, `RepoTags`
//! and `Layers`, as `docker save` and kiln's `type=docker` write it) into the store.
//!
//! The archive is untrusted: it streams through once, each file into a blob (nothing is
//! held in memory but the small JSON files); each layer's uncompressed digest must be the
//! diff_id its config names and its entries must stay inside the root, or nothing is
//! tagged.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use kiln_exporter::config::ImageConfig;
use kiln_exporter::image::{self, StoredImage};
use kiln_snapshotter::layer_out::{Compression, LayerInfo};
use kiln_snapshotter::{Digest, HashingWriter, layer_in};

use crate::Engine;
use crate::error::EngineError;

/// The largest JSON file of an archive read into memory.
const MAX_JSON: u64 = 4 << 20;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// One file of the archive, as stored.
struct Stored {
    digest: Digest,
    size: u64,
}

fn bad(message: impl Into<String>) -> EngineError {
    EngineError::invalid(
        format!("the archive cannot be loaded: {}", message.into()),
        "give a Docker archive as `docker save` or `kiln build -o type=docker` writes it"
            .to_owned(),
    )
}

impl Engine {
    /// Loads every image of a Docker archive; returns the images with their names.
    pub fn load(&self, input: impl Read) -> Result<Vec<(StoredImage, Vec<String>)>, EngineError> {
        let store = self.store();
        let mut files: HashMap<String, Stored> = HashMap::new();
        let mut json: HashMap<String, Vec<u8>> = HashMap::new();
        let mut archive = tar::Archive::new(input);
        let entries = archive
            .entries()
            .map_err(|e| bad(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("a damaged entry: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = String::from_utf8_lossy(&entry.path_bytes())
                .trim_start_matches("./")
                .to_owned();
            if path.ends_with(".json") || path == "repositories" {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MAX_JSON + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| bad(format!("{path}: {e}")))?;
                if bytes.len() as u64 > MAX_JSON {
                    return Err(bad(format!("{path} is larger than {MAX_JSON} bytes")));
                }
                json.insert(path, bytes);
                continue;
            }
            let mut writer = store.content().writer()?;
            std::io::copy(&mut entry, &mut writer).map_err(|e| bad(format!("{path}: {e}")))?;
            let (digest, size) = writer.commit(None)?;
            files.insert(path, Stored { digest, size });
        }
        let manifest = json
            .get("manifest.json")
            .ok_or_else(|| bad("it has no manifest.json"))?;
        let manifests: Vec<ArchiveManifest> =
            serde_json::from_slice(manifest).map_err(|e| bad(format!("manifest.json: {e}")))?;
        let mut loaded = Vec::new();
        for entry in manifests {
            loaded.push(self.load_one(&entry, &files, &json)?);
        }
        Ok(loaded)
    }

    fn load_one(
        &self,
        entry: &ArchiveManifest,
        files: &HashMap<String, Stored>,
        json: &HashMap<String, Vec<u8>>,
    ) -> Result<(StoredImage, Vec<String>), EngineError> {
        let store = self.store();
        // A config is JSON, but docker ≥ 25 stores it under blobs/sha256/ with no suffix.
        let config_bytes = match json.get(&entry.config) {
            Some(bytes) => bytes.clone(),
            None => {
                let stored = files
                    .get(&entry.config)
                    .ok_or_else(|| bad(format!("the config {} is missing", entry.config)))?;
                if stored.size > MAX_JSON {
                    return Err(bad(format!("the config {} is too large", entry.config)));
                }
                store.content().read(&stored.digest)?
            }
        };
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("the config {}: {e}", entry.config)))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(bad(format!(
                "the config names {} layers, manifest.json {}",
                config.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let stored = files
                .get(path)
                .ok_or_else(|| bad(format!("the layer {path} is missing")))?;
            layers.push(self.check_layer(path, stored, diff_id)?);
        }
        let stored = image::write_image(store, &config, &layers, BTreeMap::new())?;
        let mut names = Vec::new();
        for name in entry.repo_tags.iter().flatten() {
            let name = kiln_snapshotter::normalize_name(name)
                .map_err(|e| bad(format!("the name {name}: {e}")))?;
            store
                .tags()
                .tag(&name, stored.manifest_descriptor.clone())?;
            names.push(name);
        }
        Ok((stored, names))
    }

    /// A layer blob whose uncompressed content hashes to `diff_id` and whose entries
    /// stay inside the root (extracted into a scratch directory that is then removed).
    fn check_layer(
        &self,
        path: &str,
        stored: &Stored,
        diff_id: &str,
    ) -> Result<LayerInfo, EngineError> {
        let store = self.store();
        let open = || store.content().open(&stored.digest);
        let mut plain = layer_in::decompress(open()?)?;
        let mut hasher = HashingWriter::new(std::io::sink());
        std::io::copy(&mut plain, &mut hasher).map_err(|e| bad(format!("{path}: {e}")))?;
        let (computed, _, _) = hasher.finish();
        if computed.to_string() != diff_id {
            return Err(bad(format!(
                "the layer {path} is {computed} uncompressed, but its config says {diff_id}"
            )));
        }
        let scratch = crate::context::temp_dir(store, "load-")?;
        layer_in::apply_layer(open()?, scratch.path(), layer_in::WhiteoutStyle::Overlay)
            .map_err(|e| bad(format!("the layer {path}: {e}")))?;
        let compressed = {
            let mut magic = [0u8; 4];
            let n = open()?.read(&mut magic).unwrap_or(0);
            if n >= 2 && magic[..2] == [0x1f, 0x8b] {
                Compression::default_gzip()
            } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
                Compression::Zstd {
                    level: 3,
                    threads: 0,
                }
            } else {
                Compression::None
            }
        };
        Ok(LayerInfo {
            digest: stored.digest.clone(),
            diff_id: computed,
            size: stored.size,
            media_type: compressed.media_type().to_owned(),
        })
    }
}
