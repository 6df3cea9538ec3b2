//! `--cache-from` and `--cache-to` around a build: the caches are read before the solve
//! (one that is not there yet, or is damaged, is a warning: the build runs without it),
//! and written after the outputs.
//!
//! The registry I/O of `type=registry` is here, not in the solver: the solver gives a
//! [`CacheImage`] (manifest and record bytes, layers in the store) and takes an
//! [`ImportedCache`] made from a fetched manifest and record, whose layers
//! [`RegistryBlobs`] fetches into the store when a step hits. A registry that cannot be
//! reached is an error naming the ref (before anything runs for `--cache-from`, at
//! export for `--cache-to`) unless `ignore-error=true` makes it a warning; a tag the
//! registry does not have yet (a first CI run) is a warning.

use std::sync::Arc;

use kiln_exporter::registry::{
    self, BlobOutcome, BlobSource, ImageRef, OCI_MANIFEST, Platform, PushImage, Registry,
    RegistryConfig,
};
use kiln_exporter::transfer::{TransferError as PushError, pull_blob_into_store, store_blob};
use kiln_image::image::Manifest;
use kiln_snapshotter::{Digest, Store};
use kiln_solver::cache_transfer::{
    CacheBlobs, CacheExportSpec, CacheExported, CacheImage, CacheImportSpec, CacheLocation,
    FetchFuture, ImportedCache, RECORD_MEDIA_TYPE, TransferError, cache_image, write_layout,
};
use kiln_solver::frontend::Plan;
use kiln_solver::solve::Solved;

use crate::error::{BuildError, EngineError};

/// The layer blobs of a registry cache, pulled when a step hits.
struct RegistryBlobs {
    registry: Registry,
    reference: ImageRef,
}

impl std::fmt::Debug for RegistryBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBlobs")
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl CacheBlobs for RegistryBlobs {
    fn fetch<'a>(&'a self, digest: &'a Digest, size: u64, store: &'a Store) -> FetchFuture<'a> {
        Box::pin(async move {
            pull_blob_into_store(store, &self.registry, &self.reference, digest, size)
                .await
                .map_err(|e| TransferError::Fetch(e.to_string()))
        })
    }
}

/// A registry cache's `ref=`, parsed with docker's normalisation.
fn parse_ref(flag: &str, reference: &str) -> Result<ImageRef, EngineError> {
    ImageRef::parse(reference).map_err(|e| {
        EngineError::invalid(
            format!("--{flag} ref={reference} is not a registry reference: {e}"),
            "name the cache HOST/REPO:TAG".to_owned(),
        )
    })
}

/// Checks every registry cache's reference, before anything runs.
pub(crate) fn check_refs(
    from: &[CacheImportSpec],
    to: &[CacheExportSpec],
) -> Result<(), EngineError> {
    let from = from.iter().map(|s| ("cache-from", &s.location));
    let to = to.iter().map(|s| ("cache-to", &s.location));
    for (flag, location) in from.chain(to) {
        if let CacheLocation::Registry { reference, .. } = location {
            parse_ref(flag, reference)?;
        }
    }
    Ok(())
}

/// The reference and the registry client of a registry cache (its host added to the
/// insecure list for `registry.insecure=true`).
fn registry_for(
    flag: &str,
    reference: &str,
    insecure: bool,
    config: &RegistryConfig,
) -> Result<(ImageRef, Registry), EngineError> {
    let parsed = parse_ref(flag, reference)?;
    let mut config = config.clone();
    if insecure {
        config
            .insecure_registries
            .push(parsed.registry().to_owned());
    }
    Ok((parsed, Registry::new(config)?))
}

/// Reads every `--cache-from`, in order; what cannot be used becomes a warning, except
/// a registry that cannot be reached without `ignore-error=true`.
pub(crate) async fn load_imports(
    specs: &[CacheImportSpec],
    registry: &RegistryConfig,
    warnings: &mut Vec<String>,
) -> Result<Vec<Arc<ImportedCache>>, BuildError> {
    let mut imports = Vec::new();
    for spec in specs {
        let name = spec.location.display();
        let loaded = match &spec.location {
            CacheLocation::Local { dir, tag } => {
                let (dir, tag, name) = (dir.clone(), tag.clone(), name.clone());
                tokio::task::spawn_blocking(move || ImportedCache::load_layout(&dir, &tag, name))
                    .await
                    .map_err(|e| {
                        EngineError::io("the cache import task", std::io::Error::other(e))
                    })?
            }
            CacheLocation::Registry {
                reference,
                insecure,
            } => {
                let (parsed, client) = registry_for("cache-from", reference, *insecure, registry)?;
                match client.resolve(&parsed, &Platform::host()).await {
                    Err(registry::Error::ManifestNotFound { .. }) => Ok(None),
                    Err(source) if spec.ignore_error => {
                        warnings.push(format!(
                            "--cache-from {name}: {source}; ignore-error=true: the build runs without it"
                        ));
                        continue;
                    }
                    Err(source) => {
                        return Err(EngineError::CacheRegistry {
                            flag: "cache-from",
                            location: name,
                            source: source.into(),
                        }
                        .into());
                    }
                    Ok(resolved) => from_registry(name.clone(), resolved, client, parsed).map(Some),
                }
            }
            // The parser refuses it: an inline cache is read from its image's reference.
            CacheLocation::Inline => Err(TransferError::Record(
                "type=inline is for --cache-to; give the image's reference".to_owned(),
            )),
        };
        match loaded {
            Ok(Some(cache)) => imports.push(Arc::new(cache)),
            Ok(None) => warnings.push(format!(
                "--cache-from {name}: no cache there yet ({}); the build runs without it",
                match spec.location {
                    CacheLocation::Local { .. } => "no index.json",
                    CacheLocation::Registry { .. } | CacheLocation::Inline => {
                        "the registry has no such manifest"
                    }
                }
            )),
            Err(e) => warnings.push(format!(
                "--cache-from {name}: refused: {e}; the build runs without it"
            )),
        }
    }
    Ok(imports)
}

/// A cache from a resolved registry manifest: the manifest as served (its digest
/// verified by the client), the record its config (verified, bounded by the client).
fn from_registry(
    name: String,
    resolved: registry::Resolved,
    registry: Registry,
    reference: ImageRef,
) -> Result<ImportedCache, TransferError> {
    let manifest: Manifest =
        serde_json::from_slice(&resolved.manifest_bytes).map_err(|e| TransferError::Blob {
            digest: resolved.manifest_digest.clone(),
            reason: format!("it is not an OCI image manifest: {e}"),
        })?;
    if manifest.config.media_type != RECORD_MEDIA_TYPE {
        // An image (for this platform, when it is an index): its inline cache.
        let blobs = Box::new(RegistryBlobs {
            registry,
            reference,
        });
        return ImportedCache::from_image(name, &manifest, &resolved.config, blobs)?.ok_or_else(
            || {
                TransferError::Record(
                    "it is an image without kiln's inline cache (build it with --cache-to type=inline), not a kiln cache".to_owned(),
                )
            },
        );
    }
    if resolved.index_digest.is_some() {
        return Err(TransferError::Record(format!(
            "it is an image index, not a kiln cache (a kiln cache is one manifest whose config is {RECORD_MEDIA_TYPE})"
        )));
    }
    ImportedCache::from_manifest(
        name,
        &manifest,
        &resolved.config,
        Box::new(RegistryBlobs {
            registry,
            reference,
        }),
    )
}

/// `--cache-to type=inline`: the image with the cache record of its own steps in its
/// config (`kiln.cache.v1`, base64, as BuildKit's `moby.buildkit.cache.v0`), so the image
/// pushed is its own cache. Blocking. Returns the image and the steps the record holds.
pub(crate) fn with_inline_cache(
    store: &Store,
    plan: &Plan,
    solved: &Solved,
    image: kiln_image::image::StoredImage,
) -> Result<(kiln_image::image::StoredImage, usize), EngineError> {
    let failed = |source: TransferError| EngineError::CacheExport {
        location: "type=inline".to_owned(),
        source,
    };
    let cache = cache_image(
        store,
        plan,
        solved,
        kiln_solver::cache_transfer::CacheMode::Min,
    )
    .map_err(failed)?;
    let mut config = image.config.clone();
    config.inline_cache = Some(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &cache.record,
    ));
    let layers: Vec<kiln_snapshotter::layer_out::LayerInfo> = image
        .manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            Ok(kiln_snapshotter::layer_out::LayerInfo {
                digest: layer.digest.clone(),
                diff_id: Digest::parse(diff_id).ok_or_else(|| {
                    EngineError::invalid(
                        format!("the image's diff_id {diff_id} is not a digest"),
                        "rebuild the image".to_owned(),
                    )
                })?,
                size: layer.size,
                media_type: layer.media_type.clone(),
            })
        })
        .collect::<Result<_, EngineError>>()?;
    let image = kiln_image::image::write_image(
        store,
        &config,
        &layers,
        image.manifest.annotations.clone(),
    )?;
    Ok((image, cache.steps))
}

/// Writes one `--cache-to`: the cache image made (blocking, on a blocking thread), then
/// written into a layout or pushed.
async fn export_one(
    store: &Store,
    plan: &Arc<Plan>,
    solved: &Arc<Solved>,
    spec: &CacheExportSpec,
    registry: &RegistryConfig,
) -> Result<CacheExported, EngineError> {
    let location = spec.location.display();
    let failed = |source: TransferError| EngineError::CacheExport {
        location: location.clone(),
        source,
    };
    let (store2, plan2, solved2, mode) = (
        store.clone(),
        Arc::clone(plan),
        Arc::clone(solved),
        spec.mode,
    );
    let image = tokio::task::spawn_blocking(move || cache_image(&store2, &plan2, &solved2, mode))
        .await
        .map_err(|e| EngineError::io("the cache export task", std::io::Error::other(e)))?
        .map_err(failed)?;
    match &spec.location {
        CacheLocation::Local { dir, tag } => {
            let (store, dir, tag, location) =
                (store.clone(), dir.clone(), tag.clone(), location.clone());
            tokio::task::spawn_blocking(move || write_layout(&store, &image, &dir, &tag, location))
                .await
                .map_err(|e| EngineError::io("the cache export task", std::io::Error::other(e)))?
                .map_err(failed)
        }
        CacheLocation::Inline => Err(EngineError::invalid(
            "an inline cache is written into the image, not exported after it".to_owned(),
            "this is kiln's bug: report it".to_owned(),
        )),
        CacheLocation::Registry {
            reference,
            insecure,
        } => {
            let (parsed, client) = registry_for("cache-to", reference, *insecure, registry)?;
            push(store, &client, &parsed, &image, &location)
                .await
                .map_err(|source| EngineError::CacheRegistry {
                    flag: "cache-to",
                    location: location.clone(),
                    source,
                })
        }
    }
}

/// Pushes a cache image: HEAD before each blob (what the registry has is not sent
/// again), the layers streamed from the store's verifying reader, the manifest last.
async fn push(
    store: &Store,
    registry: &Registry,
    reference: &ImageRef,
    image: &CacheImage,
    location: &str,
) -> Result<CacheExported, PushError> {
    let mut blobs = vec![BlobSource::from_bytes(
        RECORD_MEDIA_TYPE,
        image.record.clone(),
    )];
    for layer in &image.layers {
        blobs.push(store_blob(
            store,
            &layer.media_type,
            &layer.digest,
            layer.size,
        )?);
    }
    let push = PushImage {
        manifest: image.manifest.clone(),
        manifest_media_type: OCI_MANIFEST.to_owned(),
        blobs,
    };
    let report = registry
        .push_image(std::slice::from_ref(reference), &push)
        .await?;
    let uploaded: u64 = report
        .blobs
        .iter()
        .filter(|b| b.outcome == BlobOutcome::Uploaded)
        .map(|b| b.size)
        .sum();
    Ok(CacheExported {
        location: location.to_owned(),
        steps: image.steps,
        layers: image.layers.len(),
        total_bytes: image.total_bytes(),
        written_bytes: uploaded,
    })
}

/// The line a front end shows for an export.
pub(crate) fn exported_line(exported: &CacheExported) -> String {
    format!(
        "Exported the cache to {}: {} steps, {} layers, {} ({} written)",
        exported.location,
        exported.steps,
        exported.layers,
        size(exported.total_bytes),
        size(exported.written_bytes)
    )
}

/// Bytes as people read them: `512 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`.
fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

/// The line a front end shows for a source that gave steps.
pub(crate) fn imported_line(name: &str, steps: usize) -> String {
    format!("Imported {steps} steps from the cache {name}")
}

/// After the outputs: the imported steps per source and the `--cache-to` exports, one
/// after the other, as lines for the user; an export that fails is the build's error,
/// or a warning with `ignore-error=true`.
pub(crate) async fn finish(
    store: &Store,
    plan: &Arc<Plan>,
    solved: Solved,
    specs: &[CacheExportSpec],
    registry: &RegistryConfig,
    delivered: &mut crate::output::Delivered,
    warnings: &mut Vec<String>,
) -> Result<(), EngineError> {
    for (name, steps) in &solved.imported {
        delivered.lines.push(imported_line(name, *steps));
    }
    let solved = Arc::new(solved);
    // An inline cache is already in the image (see `with_inline_cache`).
    for spec in specs.iter().filter(|s| s.location != CacheLocation::Inline) {
        match export_one(store, plan, &solved, spec, registry).await {
            Ok(exported) => delivered.lines.push(exported_line(&exported)),
            Err(e) if spec.ignore_error => {
                warnings.push(format!(
                    "{e}; ignore-error=true: the build succeeds without it"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: u64, expected: &str) {
        assert_eq!(size(bytes), expected);
    }

    #[test]
    fn sizes() {
        check(0, "0 B");
        check(999, "999 B");
        check(12_345, "12.3 kB");
        check(4_500_000, "4.5 MB");
        check(1_200_000_000, "1.2 GB");
    }
}
