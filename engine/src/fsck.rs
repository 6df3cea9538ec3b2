//! `kiln fsck`: what in the store does not hold up — every blob's bytes against its
//! digest and size, every tag's manifest, config and layers present and whole, and (when
//! no build runs) snapshots left unfinished. The answer names each broken thing and the
//! images it breaks. `--repair` ([`Engine::repair`]) then removes them, so the next build
//! or pull makes them again; it waits for no build and refuses while one runs.

use std::collections::{BTreeMap, BTreeSet};

use kiln_image::image::Manifest;
use kiln_snapshotter::{Digest, StoreError};

use crate::Engine;
use crate::error::EngineError;

/// What `fsck` found; clean when every list is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// How many blobs were read.
    pub blobs: usize,
    /// How many tags were followed.
    pub tags: usize,
    /// Blobs whose bytes do not match their digest or recorded size.
    pub damaged: Vec<Digest>,
    /// Per tag, what is wrong with it (a blob it needs missing, damaged or unreadable).
    pub broken_tags: BTreeMap<String, Vec<String>>,
    /// Snapshots a killed build left uncommitted; `None` when a build was running, so
    /// they could not be told from that build's own.
    pub unfinished: Option<Vec<kiln_snapshotter::SnapshotId>>,
}

/// What [`Engine::repair`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Damaged blobs deleted.
    pub blobs: usize,
    /// Broken tags removed.
    pub tags: usize,
    /// Unfinished snapshots removed.
    pub snapshots: usize,
}

impl FsckReport {
    /// Nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty()
            && self.broken_tags.is_empty()
            && self.unfinished.as_ref().is_none_or(Vec::is_empty)
    }
}

impl Engine {
    /// Checks the store (see the module doc). Takes no lock: it only reads, and a blob a
    /// concurrent build is writing is not in the content store until it is complete.
    pub fn fsck(&self) -> Result<FsckReport, EngineError> {
        // Only with no build running is an uncommitted snapshot a leftover; the lock is
        // held just for the listing, so builds are not held up by the blob checks.
        let unfinished = match self.store().try_lock_for_gc()? {
            Some(_gc) => Some(self.unfinished_snapshots()?),
            None => None,
        };
        self.check_store(unfinished)
    }

    /// Snapshots not committed: leftovers, when the caller holds the gc lock.
    fn unfinished_snapshots(&self) -> Result<Vec<kiln_snapshotter::SnapshotId>, EngineError> {
        Ok(self
            .store()
            .snapshots()
            .list()?
            .into_iter()
            .filter(|(_, committed)| !committed)
            .map(|(id, _)| id)
            .collect())
    }

    /// The blob and tag checks, with the unfinished snapshots the caller found.
    fn check_store(
        &self,
        unfinished: Option<Vec<kiln_snapshotter::SnapshotId>>,
    ) -> Result<FsckReport, EngineError> {
        let store = self.store();
        let mut report = FsckReport::default();
        let mut damaged = BTreeSet::new();
        for digest in store.content().list()? {
            report.blobs += 1;
            match store.content().verify(&digest) {
                // Removed by a prune since the listing.
                Ok(()) | Err(StoreError::BlobNotFound { .. }) => {}
                Err(StoreError::Corrupt { .. }) => {
                    damaged.insert(digest);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut tags = store.tags().list()?;
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, descriptor) in tags {
            report.tags += 1;
            let mut problems = Vec::new();
            let blob = |digest: &Digest, what: &str, problems: &mut Vec<String>| {
                if damaged.contains(digest) {
                    problems.push(format!("its {what} {digest} is damaged"));
                    false
                } else if !store.content().exists(digest) {
                    problems.push(format!("its {what} {digest} is missing"));
                    false
                } else {
                    true
                }
            };
            if blob(&descriptor.digest, "manifest", &mut problems) {
                match store
                    .content()
                    .read(&descriptor.digest)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()))
                {
                    Ok(manifest) => {
                        blob(&manifest.config.digest, "config", &mut problems);
                        for layer in &manifest.layers {
                            if blob(&layer.digest, "layer", &mut problems)
                                && store.content().size(&layer.digest) != Some(layer.size)
                            {
                                problems.push(format!(
                                    "its layer {} has another size than its manifest says",
                                    layer.digest
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(format!(
                        "its manifest {} is not a manifest: {e}",
                        descriptor.digest
                    )),
                }
            }
            if !problems.is_empty() {
                report.broken_tags.insert(name, problems);
            }
        }
        report.damaged = damaged.into_iter().collect();
        report.unfinished = unfinished;
        Ok(report)
    }

    /// Checks the store and removes what is broken: damaged blobs, tags that need a
    /// missing or damaged blob, unfinished snapshots, and temp space of dead builds. Holds
    /// the store's gc lock, so it refuses (busy) while a build runs and no build starts
    /// meanwhile. What it removes is made again by the next build or pull that needs it.
    pub fn repair(&self) -> Result<(FsckReport, RepairReport), EngineError> {
        let store = self.store();
        // Held from the check to the last removal: no build starts in between, so
        // nothing found broken is made whole again before it is removed.
        let Some(_gc) = store.try_lock_for_gc()? else {
            return Err(EngineError::Busy {
                root: store.root().to_owned(),
            });
        };
        let found = self.check_store(Some(self.unfinished_snapshots()?))?;
        let mut repaired = RepairReport::default();
        for digest in &found.damaged {
            store.content().delete(digest)?;
            repaired.blobs += 1;
        }
        for name in found.broken_tags.keys() {
            store.tags().untag(name)?;
            repaired.tags += 1;
        }
        for id in found.unfinished.iter().flatten() {
            store.snapshots().remove(id)?;
            repaired.snapshots += 1;
        }
        store.sweep_temp()?;
        Ok((found, repaired))
    }
}
