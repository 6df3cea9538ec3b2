//! `--cache-from` and `--cache-to` around a build: the caches are read before the solve
//! (one that is not there yet, or is damaged, is a warning: the build runs without it),
//! and written after the outputs.

use std::sync::Arc;

use kiln_snapshotter::Store;
use kiln_solver::cache_transfer::{
    CacheExportSpec, CacheExported, CacheImportSpec, ImportedCache, export_cache,
};
use kiln_solver::frontend::Plan;
use kiln_solver::solve::Solved;

use crate::error::{BuildError, EngineError};

/// Reads every `--cache-from`, in order; what cannot be used becomes a warning.
pub(crate) async fn load_imports(
    specs: &[CacheImportSpec],
    warnings: &mut Vec<String>,
) -> Result<Vec<Arc<ImportedCache>>, BuildError> {
    let mut imports = Vec::new();
    for spec in specs {
        let name = spec.location.display();
        let owned = spec.clone();
        let loaded = tokio::task::spawn_blocking(move || ImportedCache::load(&owned))
            .await
            .map_err(|e| EngineError::io("the cache import task", std::io::Error::other(e)))?;
        match loaded {
            Ok(Some(cache)) => imports.push(Arc::new(cache)),
            Ok(None) => warnings.push(format!(
                "--cache-from {name}: no cache there yet (no index.json); the build runs without it"
            )),
            Err(e) => warnings.push(format!(
                "--cache-from {name}: refused: {e}; the build runs without it"
            )),
        }
    }
    Ok(imports)
}

/// Writes every `--cache-to` (blocking: call it on a blocking thread).
pub(crate) fn export_all(
    store: &Store,
    plan: &Plan,
    solved: &Solved,
    specs: &[CacheExportSpec],
) -> Result<Vec<CacheExported>, EngineError> {
    specs
        .iter()
        .map(|spec| {
            export_cache(store, plan, solved, spec).map_err(|source| EngineError::CacheExport {
                location: spec.location.display(),
                source,
            })
        })
        .collect()
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

/// After the outputs: the imported steps per source and the `--cache-to` exports, as
/// lines for the user.
pub(crate) async fn finish(
    store: &Store,
    plan: &Arc<Plan>,
    solved: Solved,
    specs: &[CacheExportSpec],
    delivered: &mut crate::output::Delivered,
) -> Result<(), EngineError> {
    for (name, steps) in &solved.imported {
        delivered.lines.push(imported_line(name, *steps));
    }
    if specs.is_empty() {
        return Ok(());
    }
    let (store, plan, specs) = (store.clone(), Arc::clone(plan), specs.to_vec());
    let exported = tokio::task::spawn_blocking(move || export_all(&store, &plan, &solved, &specs))
        .await
        .map_err(|e| EngineError::io("the cache export task", std::io::Error::other(e)))??;
    delivered.lines.extend(exported.iter().map(exported_line));
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
