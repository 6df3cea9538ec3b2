//! Snapshot -> layer blob, memoised: exporting the same snapshot with the same options
//! twice costs a file read, not a tar walk and a compression.

use std::path::{Path, PathBuf};

use crate::Store;
use crate::error::{StoreError, io};
use crate::fsutil;
use crate::layer_out::{Compression, DiffSource, LayerInfo, LayerOptions, write_layer};
use crate::snapshots::{SnapshotId, SnapshotterKind};

fn memo_name(options: &LayerOptions) -> String {
    let compression = match options.compression {
        Compression::None => "tar".to_owned(),
        // Thread counts do not change the bytes gzp or zstd produce for a level.
        Compression::Gzip { level, .. } => format!("gzip{level}"),
        Compression::Zstd { level, .. } => format!("zstd{level}"),
    };
    let epoch = options
        .source_date_epoch
        .map(|e| format!("-epoch{e}"))
        .unwrap_or_default();
    format!("layer-{compression}{epoch}.json")
}

impl Store {
    /// A compressed copy of an uncompressed layer blob (for pushes and archives), made
    /// once per compression and remembered under `compressed/`.
    pub fn compressed_blob(
        &self,
        digest: &crate::Digest,
        compression: Compression,
    ) -> Result<LayerInfo, StoreError> {
        let name = memo_name(&LayerOptions {
            compression,
            ..LayerOptions::default()
        });
        let memo = self
            .root()
            .join("compressed")
            .join(format!("{}-{name}", digest.hex()));
        if let Some(info) = self.read_memo(&memo) {
            return Ok(info);
        }
        let mut source = self.content().open(digest)?;
        let info =
            crate::layer_out::compress_blob(&mut source, digest, self.content(), compression)?;
        self.write_memo(&memo, &info)?;
        Ok(info)
    }

    /// A remembered layer, if its blob is still there.
    fn read_memo(&self, memo: &Path) -> Option<LayerInfo> {
        let info: LayerInfo = serde_json::from_slice(&std::fs::read(memo).ok()?).ok()?;
        (self.content().size(&info.digest) == Some(info.size)).then_some(info)
    }

    fn write_memo(&self, memo: &Path, info: &LayerInfo) -> Result<(), StoreError> {
        if let Some(dir) = memo.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let bytes = serde_json::to_vec(info).map_err(|e| StoreError::Format {
            path: memo.to_owned(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(memo, &self.tmp_dir(), &bytes).map_err(io(memo))
    }

    fn memo_path(&self, id: &SnapshotId, options: &LayerOptions) -> PathBuf {
        self.root()
            .join("snapshots")
            .join(id.as_str())
            .join(memo_name(options))
    }

    /// A committed snapshot of the layer blob `digest` (in the content store) applied on
    /// `parent`, whiteouts written as this snapshotter keeps them: a base image's layer,
    /// or a layer a cache import brought. With `diff_id`, the uncompressed stream must
    /// have that digest (else nothing is committed). Nothing is left behind if the apply
    /// fails.
    pub fn snapshot_of_blob(
        &self,
        parent: Option<&SnapshotId>,
        digest: &crate::Digest,
        diff_id: Option<&crate::Digest>,
    ) -> Result<SnapshotId, StoreError> {
        let snapshots = self.snapshots();
        let active = snapshots.prepare(parent)?;
        let dir = snapshots.diff_dir(&active);
        let style = match snapshots.kind() {
            SnapshotterKind::Overlay => crate::layer_in::WhiteoutStyle::Overlay,
            SnapshotterKind::Native => crate::layer_in::WhiteoutStyle::Delete,
        };
        let applied = self.content().open(digest).and_then(|blob| {
            let options = crate::layer_in::ApplyOptions {
                diff_id: diff_id.cloned(),
                ..crate::layer_in::ApplyOptions::layer(style)
            };
            crate::layer_in::apply_with(blob, &dir, &options)
        });
        if let Err(e) = applied {
            let _ = snapshots.remove(active.id());
            return Err(e);
        }
        snapshots.commit(active)
    }

    /// Remembers `info` as the layer of snapshot `id` under `options`: for a snapshot
    /// made by extracting exactly that blob onto its parent (a cache import), so that
    /// exporting it gives back the same blob instead of a re-written tar. The blob must
    /// be in the store with its size.
    pub fn set_layer_for(
        &self,
        id: &SnapshotId,
        options: &LayerOptions,
        info: &LayerInfo,
    ) -> Result<(), StoreError> {
        if self.content().size(&info.digest) != Some(info.size) {
            return Err(StoreError::BlobNotFound {
                digest: info.digest.clone(),
            });
        }
        self.write_memo(&self.memo_path(id, options), info)
    }

    /// The layer of a committed snapshot (its changes from its parent), written once per
    /// set of options and remembered beside the snapshot.
    pub fn layer_for(
        &self,
        id: &SnapshotId,
        options: &LayerOptions,
    ) -> Result<LayerInfo, StoreError> {
        let memo = self.memo_path(id, options);
        if let Some(info) = self.read_memo(&memo) {
            return Ok(info);
        }
        let layers = self.snapshots().layers(id)?;
        let parent = self.snapshots().parent(id)?;
        let parent_tree = match (&parent, self.snapshots().kind()) {
            (Some(parent), SnapshotterKind::Native) => {
                Some(self.snapshots().layers(parent)?.remove(0))
            }
            _ => None,
        };
        let source = match self.snapshots().kind() {
            SnapshotterKind::Overlay => DiffSource::Overlay(&layers[0]),
            SnapshotterKind::Native => DiffSource::Trees {
                lower: parent_tree.as_deref(),
                upper: &layers[0],
            },
        };
        let info = write_layer(source, self.content(), options)?;
        self.write_memo(&memo, &info)?;
        Ok(info)
    }
}
