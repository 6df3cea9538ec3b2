//! `kiln run`'s side in the engine: an image's filesystem (its layers unpacked as a
//! build's `FROM` does, shared with builds) with a writable layer on top, as mount data.
//! The engine neither mounts nor forks: the front end hands the mounts to the sandbox.

use kiln_snapshotter::{Active, SnapshotId, StoreLock};

use crate::{Engine, EngineError, FoundImage};

/// The root filesystem of one run: the image's layers and a writable layer (an active
/// snapshot) on top. The store is held for builds while it lives, so `kiln prune`
/// waits for the run; finish it with [`Engine::finish_run`].
#[derive(Debug)]
pub struct RunRootfs {
    /// The image.
    pub image: FoundImage,
    /// The rootfs as mount data (overlay of the image's layers under the writable one,
    /// or the native snapshotter's copy).
    pub mounts: Vec<kiln_snapshotter::Mount>,
    layer: Active,
    _lock: StoreLock,
}

impl RunRootfs {
    /// The writable layer's id (what `kiln run` prints for a kept layer).
    pub fn layer_id(&self) -> &SnapshotId {
        self.layer.id()
    }
}

impl Engine {
    /// The root filesystem for running image `reference`: its layers unpacked (once per
    /// store) and a fresh writable layer. Blocking.
    pub fn prepare_run(&self, reference: &str) -> Result<RunRootfs, EngineError> {
        let store = self.store();
        let lock = store.lock_for_build()?;
        let image = self.find(reference)?;
        let parent =
            kiln_solver::solve::image_snapshot(store, &store.cache_index_path(), &image.image)
                .map_err(EngineError::Unpack)?;
        let layer = store.snapshots().prepare(parent.as_ref())?;
        let mounts = match store.snapshots().mounts(&layer) {
            Ok(mounts) => mounts,
            Err(e) => {
                let _ = store.snapshots().remove(layer.id());
                return Err(e.into());
            }
        };
        Ok(RunRootfs {
            image,
            mounts,
            layer,
            _lock: lock,
        })
    }

    /// Ends a run: its writable layer removed, or with `keep` left in the store as an
    /// uncommitted snapshot (`kiln prune` removes it) and its id and directory returned.
    pub fn finish_run(
        &self,
        run: RunRootfs,
        keep: bool,
    ) -> Result<Option<(SnapshotId, std::path::PathBuf)>, EngineError> {
        let snapshots = self.store().snapshots();
        if keep {
            let dir = snapshots.diff_dir(&run.layer);
            return Ok(Some((run.layer.id().clone(), dir)));
        }
        snapshots.remove(run.layer.id())?;
        Ok(None)
    }
}
