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

/// A failed RUN kept by `kiln build --on-error=keep`, for `kiln debug shell ID`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeptStep {
    /// The step, as progress labelled it.
    pub label: String,
    /// Its exit code.
    pub code: i32,
    /// The sandbox it ran in, less what did not outlive the build (secrets, ssh sockets,
    /// variables set for the step only); its rootfs is the step's writable layer as the
    /// command left it.
    pub spec: kiln_sandbox::Spec,
    /// What of the step's sandbox is not kept, said for the user.
    pub dropped: Vec<String>,
}

fn kept_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Engine {
    /// Keeps a failed RUN's state (`--on-error=keep`): its writable layer stays (the
    /// solver leaves it when the hook says so) and its sandbox's description is written
    /// under the store. Returns the id `kiln debug shell` takes.
    pub fn keep_failed_step(
        &self,
        step: &kiln_solver::solve::FailedStep,
    ) -> Result<String, EngineError> {
        let mut spec = step.spec.clone();
        let mut dropped = Vec::new();
        spec.env.retain(|var| {
            let name = var.split_once('=').map_or(var.as_str(), |(k, _)| k);
            let why = if step.step_only_env.contains(var) {
                Some("set for the step only")
            } else if kiln_parser::lint::looks_secret(name) {
                Some("its name marks a secret")
            } else if kiln_solver::frontend::is_proxy(name) {
                Some("a proxy setting, which may hold credentials")
            } else {
                None
            };
            if let Some(why) = why {
                dropped.push(format!("the variable {name} ({why})"));
            }
            why.is_none()
        });
        spec.mounts.retain(|m| match m {
            kiln_sandbox::ExtraMount::Secret { target, .. } => {
                dropped.push(format!("the secret at {target}"));
                false
            }
            _ => true,
        });
        spec.timeout = None;
        let kept = KeptStep {
            label: step.label.clone(),
            code: step.code,
            spec,
            dropped,
        };
        let dir = self.store().failed_steps_dir();
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let id = step.layer.as_str().to_owned();
        let path = dir.join(format!("{id}.json"));
        let bytes =
            serde_json::to_vec_pretty(&kept).map_err(|e| EngineError::io(&path, e.into()))?;
        // Only root reads it: the step's environment and mounts are described there.
        kiln_image::file::write_to_file_with_mode(&path, 0o600, |out| {
            std::io::Write::write_all(out, &bytes)
        })
        .map_err(|e| EngineError::io(&path, std::io::Error::other(e.to_string())))?
        .map_err(|e| EngineError::io(&path, e))?;
        Ok(id)
    }

    /// A kept failed step, with the store held for builds (so prune waits) while the
    /// returned lock lives. Mounts whose sources are gone since (a bind's temporary
    /// upper dir, an ssh socket) are left out and said in `dropped`.
    pub fn kept_step(&self, id: &str) -> Result<(KeptStep, StoreLock), EngineError> {
        let store = self.store();
        let lock = store.lock_for_build()?;
        let path = store.failed_steps_dir().join(format!("{id}.json"));
        let missing = || {
            EngineError::invalid(
                format!("no kept failed step {id:?} in the store"),
                "kiln build --on-error=keep prints the id; kiln prune removes kept steps"
                    .to_owned(),
            )
        };
        if !kept_id_ok(id) {
            return Err(missing());
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let mut kept: KeptStep = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::io(&path, std::io::Error::other(e)))?;
        let layer = SnapshotId::parse(id).ok_or_else(missing)?;
        if !store
            .snapshots()
            .list()?
            .iter()
            .any(|(s, committed)| *s == layer && !committed)
        {
            return Err(missing());
        }
        let exists = |p: &str| std::path::Path::new(p).exists();
        let mut dropped = Vec::new();
        kept.spec.rootfs.retain(|m| {
            let paths: Vec<&str> = m
                .options
                .iter()
                .filter_map(|o| o.split_once('='))
                .filter(|(k, _)| matches!(*k, "lowerdir" | "upperdir" | "workdir"))
                .flat_map(|(_, v)| v.split(':'))
                .chain((m.kind == "bind").then_some(m.source.as_str()))
                .collect();
            let ok = paths.iter().all(|p| exists(p));
            if !ok {
                dropped.push(format!("the mount at {} (its source is gone)", m.target));
            }
            ok || m.target == "/"
        });
        kept.spec.mounts.retain(|m| match m {
            kiln_sandbox::ExtraMount::Bind { source, target, .. } if !source.exists() => {
                dropped.push(format!("the mount at {target} (its source is gone)"));
                false
            }
            _ => true,
        });
        kept.dropped.extend(dropped);
        Ok((kept, lock))
    }
}
