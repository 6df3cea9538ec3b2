//! `--cache-to`: a solved plan's steps as a cache ([`cache_image`]: plain data, the
//! record and manifest bytes and the layer blobs in the store), and that cache written
//! into a layout directory ([`write_layout`]). A registry export is the engine's: it
//! pushes the same [`CacheImage`].

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use kiln_image::image::{Manifest, OCI_MANIFEST};
use kiln_snapshotter::layer_out::{LayerInfo, LayerOptions};
use kiln_snapshotter::{Descriptor, Store};

use super::TransferError;
use super::layout::{Layout, manifest_descriptor};
use super::record::{
    LAYER_MEDIA_TYPE, RECORD_MEDIA_TYPE, RECORD_VERSION, Record, StepRecord, StepResult,
};
use super::spec::CacheMode;
use crate::frontend::{LayerSource, Plan};
use crate::graph::VertexId;
use crate::ops::Op;
use crate::solve::Solved;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExported {
    /// Where, as the flag named it.
    pub location: String,
    /// Steps in the record.
    pub steps: usize,
    /// Layer blobs the cache lists.
    pub layers: usize,
    /// The size of every blob the cache lists (layers, record, manifest).
    pub total_bytes: u64,
    /// The bytes written now (blobs already there are kept).
    pub written_bytes: u64,
}

/// A cache ready to be written anywhere: the manifest and record as bytes (their
/// digests are what a reader checks) and the layers, whose blobs are in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImage {
    /// The record (the manifest's config), media type [`RECORD_MEDIA_TYPE`].
    pub record: Vec<u8>,
    /// The OCI image manifest, byte for byte as it is to be stored.
    pub manifest: Vec<u8>,
    /// The layer blobs the manifest lists, in its order; each is in the store's content.
    pub layers: Vec<LayerInfo>,
    /// Steps in the record.
    pub steps: usize,
}

impl CacheImage {
    /// The size of every blob the cache lists (layers, record, manifest).
    pub fn total_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>()
            + self.record.len() as u64
            + self.manifest.len() as u64
    }
}

/// The vertices a cache of `mode` holds, in graph order: with `min` those whose diffs are
/// the image's layers, with `max` every step that has a result (base images are not
/// steps: an importer has or pulls them itself).
fn exported_vertices(plan: &Plan, solved: &Solved, mode: CacheMode) -> Vec<VertexId> {
    let mut ids: Vec<VertexId> = match mode {
        CacheMode::Min => plan
            .layers
            .iter()
            .filter_map(|l| match l {
                LayerSource::Vertex(v) => Some(*v),
                LayerSource::Base { .. } => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect(),
        CacheMode::Max => solved.results.keys().copied().collect(),
    };
    ids.retain(|id| {
        solved.results.contains_key(id)
            && !matches!(
                plan.graph.vertex(*id).op,
                Op::Image { .. } | Op::Context { .. } | Op::Scratch
            )
    });
    ids.sort_by_key(|id| id.index());
    ids
}

/// The cache of `solved` that `mode` asks for. Blocking (a layer the image export did
/// not write is written into the store now); nothing the size of a layer is held in memory.
pub fn cache_image(
    store: &Store,
    plan: &Plan,
    solved: &Solved,
    mode: CacheMode,
) -> Result<CacheImage, TransferError> {
    let options = LayerOptions {
        source_date_epoch: plan.source_date_epoch,
        ..LayerOptions::default()
    };
    let mut steps = Vec::new();
    let mut layers: BTreeMap<String, LayerInfo> = BTreeMap::new();
    let mut layer_order: Vec<String> = Vec::new();
    for id in exported_vertices(plan, solved, mode) {
        let done = &solved.results[&id];
        let vertex = plan.graph.vertex(id);
        let inputs: Vec<_> = vertex
            .inputs
            .iter()
            .filter_map(|input| solved.results.get(input))
            .collect();
        let result = match &done.snapshot {
            None => StepResult::Nothing,
            Some(snapshot) => {
                if let Some(same) = inputs
                    .iter()
                    .find(|i| i.snapshot.as_ref() == Some(snapshot))
                {
                    StepResult::Input { key: same.key }
                } else {
                    let parent = store.snapshots().parent(snapshot)?;
                    let parent = match parent {
                        None => None,
                        Some(parent) => {
                            match inputs.iter().find(|i| i.snapshot.as_ref() == Some(&parent)) {
                                Some(input) => Some(input.key),
                                // Built on something that is not one of its inputs' results
                                // (never for kiln's ops): an importer could not rebuild it.
                                None => continue,
                            }
                        }
                    };
                    // The layer the image export wrote (memoised by the store): one
                    // blob for image and cache alike.
                    let info = store.layer_for(snapshot, &options)?;
                    if info.media_type != LAYER_MEDIA_TYPE || info.digest != info.diff_id {
                        return Err(TransferError::Record(format!(
                            "the layer of {} is {} ({}); a v1 cache carries plain tar layers",
                            plan.steps.get(&id).map_or(&vertex.label, |s| &s.label),
                            info.digest,
                            info.media_type
                        )));
                    }
                    if !layers.contains_key(info.digest.as_str()) {
                        layer_order.push(info.digest.to_string());
                        layers.insert(info.digest.to_string(), info.clone());
                    }
                    StepResult::Layer {
                        parent,
                        blob: super::record::LayerRecord {
                            digest: info.digest,
                            diff_id: info.diff_id,
                            size: info.size,
                            media_type: info.media_type,
                        },
                    }
                }
            }
        };
        steps.push(StepRecord {
            key: done.key,
            step: plan
                .steps
                .get(&id)
                .map_or_else(|| vertex.label.clone(), |s| s.label.clone()),
            created: done.created,
            result,
        });
    }
    let record = Record {
        version: RECORD_VERSION,
        source_date_epoch: plan.source_date_epoch,
        steps,
    };
    let record_bytes = record.to_bytes();
    let layers: Vec<LayerInfo> = layer_order
        .iter()
        .map(|digest| layers[digest].clone())
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: Descriptor {
            media_type: RECORD_MEDIA_TYPE.to_owned(),
            digest: kiln_snapshotter::Digest::of(&record_bytes),
            size: record_bytes.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: layers
            .iter()
            .map(|info| Descriptor {
                media_type: info.media_type.clone(),
                digest: info.digest.clone(),
                size: info.size,
                annotations: BTreeMap::new(),
            })
            .collect(),
        annotations: BTreeMap::new(),
    };
    Ok(CacheImage {
        steps: record.steps.len(),
        record: record_bytes,
        manifest: serde_json::to_vec(&manifest).expect("a manifest serialises"),
        layers,
    })
}

/// Writes `image` into the OCI layout `dir`, tagged `tag` (blobs first, `index.json`
/// last; blobs already there are kept). `location` is how the summary names it.
/// Blocking; blobs stream.
pub fn write_layout(
    store: &Store,
    image: &CacheImage,
    dir: &Path,
    tag: &str,
    location: String,
) -> Result<CacheExported, TransferError> {
    let layout = Layout::new(dir);
    layout.create()?;
    let mut written = 0;
    for info in &image.layers {
        written += layout.put_store_blob(store, &info.digest, info.size)?;
    }
    written += layout.put_bytes(&image.record)?.1;
    let (manifest_digest, n) = layout.put_bytes(&image.manifest)?;
    written += n;
    layout.tag(
        tag,
        manifest_descriptor(manifest_digest, image.manifest.len() as u64),
    )?;
    Ok(CacheExported {
        location,
        steps: image.steps,
        layers: image.layers.len(),
        total_bytes: image.total_bytes(),
        written_bytes: written,
    })
}
