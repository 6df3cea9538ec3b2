//! `kiln fsck`: what in the store does not hold up. Read-only: every blob's bytes against
//! its digest and size, and every tag's manifest, config and layers present and whole.
//! The answer names each broken thing and the images it breaks, so the user knows what to
//! remove and rebuild or pull again.

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
}

impl FsckReport {
    /// Nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.broken_tags.is_empty()
    }
}

impl Engine {
    /// Checks the store (see the module doc). Takes no lock: it only reads, and a blob a
    /// concurrent build is writing is not in the content store until it is complete.
    pub fn fsck(&self) -> Result<FsckReport, EngineError> {
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
        Ok(report)
    }
}
