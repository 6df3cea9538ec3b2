//! `--cache-from`: a cache read and checked, and its blobs brought into the store on
//! demand, verified. Where the blobs come from is a [`CacheBlobs`]: a layout directory
//! here ([`ImportedCache::load_layout`]), a registry in the engine (which fetches the
//! manifest and record and gives them to [`ImportedCache::from_manifest`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;

use kiln_image::image::Manifest;
use kiln_snapshotter::{Digest, Store};

use super::TransferError;
use super::layout::{Layout, MAX_RECORD};
use super::record::{LAYER_MEDIA_TYPE, RECORD_MEDIA_TYPE, Record, StepRecord, StepResult};
use crate::cache_key::CacheKey;

/// Where a cache's layer blobs are fetched from. [`fetch`](CacheBlobs::fetch) must put
/// the blob into the store through a [`kiln_snapshotter::BlobWriter`] whose commit
/// verifies `digest`, and refuse a blob that is not `size` bytes: what it reads is
/// untrusted.
pub trait CacheBlobs: Send + Sync + std::fmt::Debug {
    /// Brings blob `digest` of `size` bytes into `store`, verified.
    fn fetch<'a>(&'a self, digest: &'a Digest, size: u64, store: &'a Store) -> FetchFuture<'a>;
}

/// What [`CacheBlobs::fetch`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<(), TransferError>> + Send + 'a>>;

/// The blobs of a layout directory.
#[derive(Debug)]
struct LayoutBlobs(Layout);

impl CacheBlobs for LayoutBlobs {
    fn fetch<'a>(&'a self, digest: &'a Digest, size: u64, store: &'a Store) -> FetchFuture<'a> {
        let (layout, digest, store) = (self.0.clone(), digest.clone(), store.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || copy_layout_blob(&layout, &digest, size, &store))
                .await
                .map_err(|e| TransferError::Record(format!("the blob copy task failed: {e}")))?
        })
    }
}

/// Copies a layout's blob into the store through a writer whose commit verifies it.
fn copy_layout_blob(
    layout: &Layout,
    digest: &Digest,
    size: u64,
    store: &Store,
) -> Result<(), TransferError> {
    let bad = |reason: String| TransferError::Blob {
        digest: digest.clone(),
        reason,
    };
    let mut file = layout.open_blob(digest, size)?;
    let mut writer = store.content().writer()?;
    let copied = io::copy(&mut file, &mut writer).map_err(|e| bad(e.to_string()))?;
    if copied != size {
        return Err(bad(format!(
            "{copied} bytes were read, the manifest says {size}"
        )));
    }
    writer
        .commit(Some(digest))
        .map_err(|e| bad(format!("its content does not match its digest ({e})")))?;
    Ok(())
}

/// A cache ready to be asked for keys: its manifest and record read and checked; its
/// layer blobs are read only for the steps that hit.
#[derive(Debug)]
pub struct ImportedCache {
    name: String,
    blobs: Box<dyn CacheBlobs>,
    steps: HashMap<CacheKey, StepRecord>,
    /// The manifest's layers: a record may name no other blob.
    listed: HashSet<(Digest, u64)>,
    source_date_epoch: Option<i64>,
    /// An image's inline cache: its layers are the image's, compressed as pushed.
    inline: bool,
}

/// The layer media types an image's inline cache may name (its layers as pushed).
const IMAGE_LAYER_TYPES: &[&str] = &[
    LAYER_MEDIA_TYPE,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

impl ImportedCache {
    /// Reads the cache tagged `tag` in the layout `dir`; `name` is how messages name
    /// it. `Ok(None)`: there is no cache there yet (no `index.json`), which a first CI
    /// run meets; the caller warns and builds without.
    pub fn load_layout(
        dir: &Path,
        tag: &str,
        name: String,
    ) -> Result<Option<ImportedCache>, TransferError> {
        let layout = Layout::new(dir);
        if !layout.exists() {
            return Ok(None);
        }
        let manifest = layout.manifest(tag)?;
        if manifest.config.media_type != RECORD_MEDIA_TYPE {
            return Err(TransferError::Layout {
                path: layout.dir().to_owned(),
                reason: not_kiln(tag, &manifest),
            });
        }
        let bytes = layout.read_blob(&manifest.config.digest, manifest.config.size, MAX_RECORD)?;
        ImportedCache::from_manifest(name, &manifest, &bytes, Box::new(LayoutBlobs(layout)))
            .map(Some)
    }

    /// A cache from its manifest and record, fetched by the caller (the engine, from a
    /// registry); `blobs` fetches its layers when a step hits. The record is checked
    /// against the manifest's config descriptor (media type, size, digest) before it is
    /// parsed.
    pub fn from_manifest(
        name: String,
        manifest: &Manifest,
        record: &[u8],
        blobs: Box<dyn CacheBlobs>,
    ) -> Result<ImportedCache, TransferError> {
        let config = &manifest.config;
        if config.media_type != RECORD_MEDIA_TYPE {
            return Err(TransferError::Record(not_kiln("", manifest)));
        }
        if record.len() as u64 != config.size || Digest::of(record) != config.digest {
            return Err(TransferError::Blob {
                digest: config.digest.clone(),
                reason: format!(
                    "the record does not match its descriptor (it has {} bytes, digest {})",
                    record.len(),
                    Digest::of(record)
                ),
            });
        }
        let record = Record::parse(record).map_err(|reason| TransferError::Blob {
            digest: config.digest.clone(),
            reason,
        })?;
        let mut steps = HashMap::new();
        for step in record.steps {
            steps.entry(step.key).or_insert(step);
        }
        Ok(ImportedCache {
            name,
            blobs,
            steps,
            listed: listed(manifest),
            source_date_epoch: record.source_date_epoch,
            inline: false,
        })
    }

    /// The inline cache of an image (`--cache-to type=inline`): the record in its config
    /// (`kiln.cache.v1`), whose layers are found among the image's by their diff_id, so a
    /// hit fetches the layer as the image was pushed. `Ok(None)`: the image has no inline
    /// cache. `config` must be the blob the manifest names (the caller verified it).
    pub fn from_image(
        name: String,
        manifest: &Manifest,
        config: &[u8],
        blobs: Box<dyn CacheBlobs>,
    ) -> Result<Option<ImportedCache>, TransferError> {
        let bad = |reason: String| TransferError::Blob {
            digest: manifest.config.digest.clone(),
            reason,
        };
        let image: kiln_image::config::ImageConfig = serde_json::from_slice(config)
            .map_err(|e| bad(format!("it is not an image config: {e}")))?;
        let Some(encoded) = image.inline_cache else {
            return Ok(None);
        };
        if encoded.len() as u64 > MAX_RECORD.div_ceil(3) * 4 {
            return Err(bad("its inline cache is larger than kiln reads".to_owned()));
        }
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &encoded)
            .map_err(|e| bad(format!("its inline cache is not base64: {e}")))?;
        let record = Record::parse(&bytes).map_err(bad)?;
        if image.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "the config lists {} layers, the manifest {}",
                image.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        // The image's layers by diff_id: a record's layer is one of them, as pushed.
        let pushed: HashMap<&str, &kiln_snapshotter::Descriptor> = image
            .rootfs
            .diff_ids
            .iter()
            .map(String::as_str)
            .zip(&manifest.layers)
            .collect();
        let mut steps = HashMap::new();
        for mut step in record.steps {
            if let StepResult::Layer { blob, .. } = &mut step.result {
                // Only a layer of the image itself, as its config pairs it with its
                // diff_id (which the extraction then checks): anything else is left out.
                let Some(layer) = pushed.get(blob.diff_id.as_str()) else {
                    continue;
                };
                blob.digest = layer.digest.clone();
                blob.size = layer.size;
                blob.media_type = layer.media_type.clone();
            }
            steps.entry(step.key).or_insert(step);
        }
        Ok(Some(ImportedCache {
            name,
            blobs,
            steps,
            listed: listed(manifest),
            source_date_epoch: record.source_date_epoch,
            inline: true,
        }))
    }

    /// How progress and warnings name the cache.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many steps it has.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether it has no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The `SOURCE_DATE_EPOCH` its layers were written with.
    pub fn source_date_epoch(&self) -> Option<i64> {
        self.source_date_epoch
    }

    /// The record of the step with `key`, when the cache has it.
    pub fn step(&self, key: &CacheKey) -> Option<&StepRecord> {
        self.steps.get(key)
    }

    /// Checks that a step's layer is one kiln can use and that the manifest lists it,
    /// then makes sure the store has the blob: fetched from the cache through a store
    /// writer whose commit verifies the digest (and the size).
    pub async fn fetch_layer(&self, step: &StepRecord, store: &Store) -> Result<(), TransferError> {
        let StepResult::Layer { blob: layer, .. } = &step.result else {
            return Ok(());
        };
        let bad = |reason: String| TransferError::Blob {
            digest: layer.digest.clone(),
            reason,
        };
        if self.inline {
            // An image's layers, as pushed: compressed or not; extraction checks the
            // content, and the blob is verified against the manifest's digest.
            if !IMAGE_LAYER_TYPES.contains(&layer.media_type.as_str()) {
                return Err(bad(format!(
                    "its media type is {}, not an image layer kiln reads",
                    layer.media_type
                )));
            }
        } else if layer.media_type != LAYER_MEDIA_TYPE {
            return Err(bad(format!(
                "its media type is {}; a v1 cache carries {LAYER_MEDIA_TYPE} layers",
                layer.media_type
            )));
        }
        if !self.inline && layer.diff_id != layer.digest {
            return Err(bad(format!(
                "the record gives it the diff_id {}; a plain tar's diff_id is its digest",
                layer.diff_id
            )));
        }
        if !self.listed.contains(&(layer.digest.clone(), layer.size)) {
            return Err(bad(
                "the record names it, but the cache's manifest does not list it (with that size)"
                    .to_owned(),
            ));
        }
        if store.content().size(&layer.digest) == Some(layer.size) {
            return Ok(());
        }
        self.blobs.fetch(&layer.digest, layer.size, store).await
    }
}

/// The blobs a manifest lists: a record may name no other.
fn listed(manifest: &Manifest) -> HashSet<(Digest, u64)> {
    manifest
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect()
}

/// Why a manifest is refused: its config is not kiln's record.
fn not_kiln(tag: &str, manifest: &Manifest) -> String {
    let which = if tag.is_empty() {
        "the manifest".to_owned()
    } else {
        format!("the manifest tagged {tag:?}")
    };
    format!(
        "{which} is not a kiln cache (its config is {}; kiln reads only {RECORD_MEDIA_TYPE}, not BuildKit's cache)",
        manifest.config.media_type
    )
}
