//! `--cache-from`: a cache read and checked, and its blobs copied into the store on
//! demand, verified.

use std::collections::{HashMap, HashSet};
use std::io;

use kiln_snapshotter::{Digest, Store};

use super::TransferError;
use super::layout::{Layout, MAX_RECORD};
use super::record::{LAYER_MEDIA_TYPE, RECORD_MEDIA_TYPE, Record, StepRecord, StepResult};
use super::spec::{CacheImportSpec, CacheLocation};
use crate::cache_key::CacheKey;

/// A cache ready to be asked for keys: its manifest and record read and checked; its
/// layer blobs are read only for the steps that hit.
#[derive(Debug)]
pub struct ImportedCache {
    name: String,
    layout: Layout,
    steps: HashMap<CacheKey, StepRecord>,
    /// The manifest's layers: a record may name no other blob.
    listed: HashSet<(Digest, u64)>,
    source_date_epoch: Option<i64>,
}

impl ImportedCache {
    /// Reads the cache `spec` names. `Ok(None)`: there is no cache there yet (no
    /// `index.json`), which a first CI run meets; the caller warns and builds without.
    pub fn load(spec: &CacheImportSpec) -> Result<Option<ImportedCache>, TransferError> {
        let CacheLocation::Local { dir, tag } = &spec.location;
        let layout = Layout::new(dir);
        if !layout.exists() {
            return Ok(None);
        }
        let manifest = layout.manifest(tag)?;
        if manifest.config.media_type != RECORD_MEDIA_TYPE {
            return Err(TransferError::Layout {
                path: layout.dir().to_owned(),
                reason: format!(
                    "the manifest tagged {tag:?} is not a kiln cache (its config is {}; kiln reads only {RECORD_MEDIA_TYPE}, not BuildKit's cache)",
                    manifest.config.media_type
                ),
            });
        }
        let bytes = layout.read_blob(&manifest.config.digest, manifest.config.size, MAX_RECORD)?;
        let record = Record::parse(&bytes).map_err(|reason| TransferError::Blob {
            digest: manifest.config.digest.clone(),
            reason,
        })?;
        let mut steps = HashMap::new();
        for step in record.steps {
            steps.entry(step.key).or_insert(step);
        }
        Ok(Some(ImportedCache {
            name: spec.location.display(),
            layout,
            steps,
            listed: manifest
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect(),
            source_date_epoch: record.source_date_epoch,
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
    /// then makes sure the store has the blob: copied from the cache through a store
    /// writer whose commit verifies the digest (and the size, checked first).
    pub fn fetch_layer(&self, step: &StepRecord, store: &Store) -> Result<(), TransferError> {
        let StepResult::Layer { blob: layer, .. } = &step.result else {
            return Ok(());
        };
        let bad = |reason: String| TransferError::Blob {
            digest: layer.digest.clone(),
            reason,
        };
        if layer.media_type != LAYER_MEDIA_TYPE {
            return Err(bad(format!(
                "its media type is {}; a v1 cache carries {LAYER_MEDIA_TYPE} layers",
                layer.media_type
            )));
        }
        if layer.diff_id != layer.digest {
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
        let mut file = self.layout.open_blob(&layer.digest, layer.size)?;
        let mut writer = store.content().writer()?;
        let copied = io::copy(&mut file, &mut writer).map_err(|e| bad(e.to_string()))?;
        if copied != layer.size {
            return Err(bad(format!(
                "{copied} bytes were read, the manifest says {}",
                layer.size
            )));
        }
        writer
            .commit(Some(&layer.digest))
            .map_err(|e| bad(format!("its content does not match its digest ({e})")))?;
        Ok(())
    }
}
