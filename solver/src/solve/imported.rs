//! Results from `--cache-from` caches: a key the store does not have is asked of each
//! cache in order; a hit's layer is copied into the store (verified), extracted onto the
//! input the record names, committed and recorded, as if the step had run here. A hit
//! that cannot be used is refused with a warning naming the step; the next cache is
//! asked, and in the end the step runs.

use kiln_snapshotter::layer_out::LayerOptions;

use super::*;
use crate::cache_key::KeyPart;
use crate::cache_transfer::TransferError;
use crate::cache_transfer::record::{StepRecord, StepResult};

/// The step's result from the first cache that has `key` and whose record holds up,
/// with the cache's name.
pub(super) async fn from_imports(
    shared: &Arc<Shared>,
    key: &CacheKey,
    parts: &[KeyPart],
    inputs: &[Done],
    label: &str,
) -> Result<Option<(Done, String)>, StepError> {
    for (n, source) in shared.imports.iter().enumerate() {
        let Some(step) = source.step(key) else {
            continue;
        };
        // The record is checked against the step's inputs before its blob is fetched.
        let fetched = match check_inputs(step, inputs) {
            Ok(()) => source.fetch_layer(step, &shared.store).await,
            Err(e) => Err(e),
        };
        let made = match fetched {
            Ok(()) => {
                let (shared2, source2, step2) =
                    (Arc::clone(shared), Arc::clone(source), step.clone());
                let inputs2 = inputs.to_vec();
                blocking(move || Ok(materialize(&shared2, &source2, &step2, &inputs2))).await?
            }
            Err(e) => Err(e),
        };
        let snapshot = match made {
            Ok(snapshot) => snapshot,
            Err(reason) => {
                shared
                    .warnings
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(format!(
                        "{label}: not taken from the cache {}: {reason}",
                        source.name()
                    ));
                continue;
            }
        };
        let recorded = Recorded {
            snapshot: snapshot.as_ref().map(|s| s.as_str().to_owned()),
            created: step.created,
        };
        let value =
            serde_json::to_vec(&recorded).map_err(|e| StepError::Internal(e.to_string()))?;
        shared.index.put(
            key,
            &CacheRecord {
                value,
                parts: parts.to_vec(),
            },
        )?;
        if let Some(count) = shared
            .hits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_mut(n)
        {
            *count += 1;
        }
        return Ok(Some((
            Done {
                key: *key,
                snapshot,
                created: step.created,
                cached: true,
            },
            source.name().to_owned(),
        )));
    }
    Ok(None)
}

/// Refuses a record that builds a step on something that is not one of its inputs.
fn check_inputs(step: &StepRecord, inputs: &[Done]) -> Result<(), TransferError> {
    let named = match &step.result {
        StepResult::Nothing => None,
        StepResult::Input { key } => Some(key),
        StepResult::Layer { parent, .. } => parent.as_ref(),
    };
    match named {
        Some(key) if !inputs.iter().any(|i| i.key == *key) => Err(TransferError::Record(format!(
            "its record builds it on {}, which is not one of the step's inputs",
            &key.to_hex()[..16]
        ))),
        _ => Ok(()),
    }
}

/// Makes the snapshot a step record describes, on the step's own inputs (its layer's
/// blob already fetched into the store).
fn materialize(
    shared: &Shared,
    source: &ImportedCache,
    step: &StepRecord,
    inputs: &[Done],
) -> Result<Option<SnapshotId>, TransferError> {
    let input = |key: &CacheKey| {
        inputs.iter().find(|i| i.key == *key).ok_or_else(|| {
            TransferError::Record(format!(
                "its record builds it on {}, which is not one of the step's inputs",
                &key.to_hex()[..16]
            ))
        })
    };
    match &step.result {
        StepResult::Nothing => Ok(None),
        StepResult::Input { key } => Ok(input(key)?.snapshot.clone()),
        StepResult::Layer {
            parent,
            blob: layer,
        } => {
            let parent = match parent {
                None => None,
                Some(key) => Some(input(key)?.snapshot.clone().ok_or_else(|| {
                    TransferError::Record(
                        "its record puts its layer on an input that has no filesystem".to_owned(),
                    )
                })?),
            };
            let id = shared.store.snapshot_of_blob(
                parent.as_ref(),
                &layer.digest,
                Some(&layer.diff_id),
            )?;
            // The snapshot is that blob on its parent: exporting it gives the blob back,
            // so the image is the one the exporting machine made.
            let options = LayerOptions {
                source_date_epoch: source.source_date_epoch(),
                ..LayerOptions::default()
            };
            let info = LayerInfo {
                digest: layer.digest.clone(),
                diff_id: layer.diff_id.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
            };
            shared.store.set_layer_for(&id, &options, &info)?;
            Ok(Some(id))
        }
    }
}

/// Steps taken from each cache, by name.
pub(super) fn imported_counts(shared: &Shared) -> Vec<(String, usize)> {
    let hits = shared
        .hits
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shared
        .imports
        .iter()
        .zip(hits.iter())
        .map(|(source, n)| (source.name().to_owned(), *n))
        .collect()
}
