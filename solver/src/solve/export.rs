//! The result's layers, config and manifest, with history times as BuildKit writes
//! them.

use super::*;

/// Writes the result's layers, config and manifest into the store (nothing is tagged).
pub fn export_image(
    store: &Store,
    index_path: &std::path::Path,
    plan: &Plan,
    solved: &Solved,
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<StoredImage, SolveError> {
    let fail = |e: StepError| SolveError::bare(e);
    let mut layers: Vec<LayerInfo> = Vec::new();
    let mut created: Vec<Option<i64>> = Vec::new();
    let mut chain: Vec<(CacheKey, Option<SnapshotId>)> = Vec::new();
    let mut parent_key: Option<CacheKey> = None;
    for source in &plan.layers {
        match *source {
            LayerSource::Base { image, layer } => {
                let base = &plan.base_images[image];
                let descriptor = &base.layers[layer];
                let diff_id = base
                    .config
                    .rootfs
                    .diff_ids
                    .get(layer)
                    .cloned()
                    .unwrap_or_else(|| descriptor.digest.to_string());
                layers.push(LayerInfo {
                    digest: descriptor.digest.clone(),
                    diff_id: kiln_snapshotter::Digest::parse(&diff_id)
                        .unwrap_or_else(|| descriptor.digest.clone()),
                    size: descriptor.size,
                    media_type: descriptor.media_type.clone(),
                });
                created.push(None);
                let key = chain_key(parent_key.as_ref(), &diff_id);
                chain.push((key, None));
                parent_key = Some(key);
            }
            LayerSource::Vertex(vertex) => {
                let done = solved.results.get(&vertex).ok_or_else(|| {
                    fail(StepError::Internal(
                        "a layer's step has no result".to_owned(),
                    ))
                })?;
                let snapshot = done.snapshot.as_ref().ok_or_else(|| {
                    fail(StepError::Internal(
                        "a layer's step has no snapshot".to_owned(),
                    ))
                })?;
                // A RUN's mount stubs were removed when it ended (remove_stubs): what
                // is left in its diff is the step's own, parents of mount targets included.
                let options = LayerOptions {
                    source_date_epoch: plan.source_date_epoch,
                    ..LayerOptions::default()
                };
                let info = match store.layer_for(snapshot, &options) {
                    Ok(info) => info,
                    Err(source) => {
                        // The step stays unrecorded: a rebuild runs it again rather than
                        // take a result whose layer could not be written (a full disk
                        // would otherwise fail every rebuild the same way). Its snapshot
                        // is left to `kiln prune`: another build may stand on it.
                        if let Ok(index) = CacheIndex::open(index_path) {
                            let _ = index.remove(&done.key);
                        }
                        return Err(SolveError::at(
                            plan,
                            vertex,
                            StepError::Layer {
                                store: std::path::absolute(store.root())
                                    .unwrap_or_else(|_| store.root().to_owned()),
                                source,
                            },
                        ));
                    }
                };
                let key = chain_key(parent_key.as_ref(), info.diff_id.as_str());
                chain.push((key, Some(snapshot.clone())));
                parent_key = Some(key);
                layers.push(info);
                created.push(Some(done.created));
            }
        }
    }
    let mut image = plan.image.clone();
    image.rootfs = RootFs {
        kind: "layers".to_owned(),
        diff_ids: layers.iter().map(|l| l.diff_id.to_string()).collect(),
    };
    fill_history_times(&mut image.history, &created, plan.source_date_epoch);
    image.created = image.history.last().and_then(|h| h.created.clone());
    let stored = write_image(store, &image, &layers, annotations).map_err(|e| fail(e.into()))?;
    // Remember which snapshot holds each built layer's chain, so a later FROM of this
    // image reuses the snapshots instead of unpacking its layers again. Only a chain
    // whose whole prefix is known can be recorded this way.
    if let Ok(index) = CacheIndex::open(index_path) {
        for (key, snapshot) in chain {
            if let Some(snapshot) = snapshot {
                let value = serde_json::to_vec(&Recorded {
                    snapshot: Some(snapshot.as_str().to_owned()),
                    created: now_secs(),
                })
                .unwrap_or_default();
                let _ = index.put(
                    &key,
                    &CacheRecord {
                        value,
                        parts: Vec::new(),
                    },
                );
            }
        }
    }
    Ok(stored)
}

/// BuildKit's history timestamps: a layer entry gets its layer's creation time; a run of
/// metadata entries takes the time of the layer after it (the first run) or before it
/// (later runs); with `SOURCE_DATE_EPOCH`, every new entry is the epoch.
pub(super) fn fill_history_times(
    history: &mut [History],
    layer_times: &[Option<i64>],
    epoch: Option<i64>,
) {
    let mut layer = 0;
    let mut times: Vec<Option<i64>> = Vec::with_capacity(history.len());
    for entry in history.iter() {
        if entry.empty_layer {
            times.push(None);
        } else {
            times.push(layer_times.get(layer).copied().flatten());
            layer += 1;
        }
    }
    let missing: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, h)| h.created.is_none())
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Some(epoch) = epoch {
        for i in missing {
            history[i].created = Some(rfc3339(epoch));
        }
        return;
    }
    let first_missing = missing[0];
    let mut current = times[first_missing..]
        .iter()
        .flatten()
        .next()
        .copied()
        .or_else(|| times.iter().flatten().last().copied())
        .unwrap_or_else(now_secs);
    let mut seen_missing = false;
    for (i, entry) in history.iter_mut().enumerate() {
        if entry.created.is_some() {
            continue;
        }
        match times[i] {
            Some(t) => {
                entry.created = Some(rfc3339(t));
                if seen_missing {
                    current = t;
                }
            }
            None => {
                seen_missing = true;
                entry.created = Some(rfc3339(current));
            }
        }
    }
}
