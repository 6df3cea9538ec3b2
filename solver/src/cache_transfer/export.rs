//! `--cache-to`: a solved plan's steps as a cache.

use std::collections::{BTreeMap, HashSet};

use kiln_image::image::{Manifest, OCI_MANIFEST};
use kiln_snapshotter::layer_out::{LayerInfo, LayerOptions};
use kiln_snapshotter::{Descriptor, Store};

use super::TransferError;
use super::layout::{Layout, manifest_descriptor};
use super::record::{
    LAYER_MEDIA_TYPE, RECORD_MEDIA_TYPE, RECORD_VERSION, Record, StepRecord, StepResult,
};
use super::spec::{CacheExportSpec, CacheLocation, CacheMode};
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

/// Writes the cache of `solved` that `spec` asks for. Blocking (layers are read and
/// written); blobs stream, nothing the size of a layer is held in memory.
pub fn export_cache(
    store: &Store,
    plan: &Plan,
    solved: &Solved,
    spec: &CacheExportSpec,
) -> Result<CacheExported, TransferError> {
    let CacheLocation::Local { dir, tag } = &spec.location;
    let options = LayerOptions {
        source_date_epoch: plan.source_date_epoch,
        ..LayerOptions::default()
    };
    let mut steps = Vec::new();
    let mut layers: BTreeMap<String, LayerInfo> = BTreeMap::new();
    let mut layer_order: Vec<String> = Vec::new();
    for id in exported_vertices(plan, solved, spec.mode) {
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
    let layout = Layout::new(dir);
    layout.create()?;
    let mut written = 0;
    let mut total = 0;
    let mut descriptors = Vec::new();
    for digest in &layer_order {
        let info = &layers[digest];
        written += layout.put_store_blob(store, &info.digest, info.size)?;
        total += info.size;
        descriptors.push(Descriptor {
            media_type: info.media_type.clone(),
            digest: info.digest.clone(),
            size: info.size,
            annotations: BTreeMap::new(),
        });
    }
    let record_bytes = record.to_bytes();
    let (record_digest, n) = layout.put_bytes(&record_bytes)?;
    written += n;
    total += record_bytes.len() as u64;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: Descriptor {
            media_type: RECORD_MEDIA_TYPE.to_owned(),
            digest: record_digest,
            size: record_bytes.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: descriptors,
        annotations: BTreeMap::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let (manifest_digest, n) = layout.put_bytes(&manifest_bytes)?;
    written += n;
    total += manifest_bytes.len() as u64;
    layout.tag(
        tag,
        manifest_descriptor(manifest_digest, manifest_bytes.len() as u64),
    )?;
    Ok(CacheExported {
        location: spec.location.display(),
        steps: record.steps.len(),
        layers: layer_order.len(),
        total_bytes: total,
        written_bytes: written,
    })
}
