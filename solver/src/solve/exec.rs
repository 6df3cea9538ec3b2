//! RUN: a prepared overlay snapshot, the sandbox, the output stream, and the mount
//! stubs removed afterwards.

use super::*;

/// The snapshotter's mounts of a rootfs as the sandbox takes them.
pub fn to_sandbox_mounts(mounts: Vec<kiln_snapshotter::Mount>) -> Vec<kiln_sandbox::Mount> {
    mounts
        .into_iter()
        .map(|m| kiln_sandbox::Mount {
            kind: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

pub(super) async fn run_exec(
    shared: Arc<Shared>,
    id: VertexId,
    exec: ExecOp,
    inputs: Vec<Done>,
) -> Result<Option<SnapshotId>, StepError> {
    let parent = inputs[0].snapshot.clone();
    let active = shared.store.snapshots().prepare(parent.as_ref())?;
    let mounts = match shared.store.snapshots().mounts(&active) {
        Ok(m) => m,
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e.into());
        }
    };
    // Preparing mounts may wait on a locked cache mount's flock: never on an async
    // worker, where a holder could not be scheduled to release it.
    let prepared = {
        let shared = Arc::clone(&shared);
        let exec = exec.clone();
        let inputs = inputs.clone();
        tokio::task::spawn_blocking(move || {
            let mut extras = Extras::default();
            let result = extras.prepare(&shared, &exec, &inputs);
            (extras, result)
        })
        .await
    };
    let mut extras = match prepared {
        Ok((extras, Ok(()))) => extras,
        Ok((mut extras, Err(e))) => {
            extras.clean_up();
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e);
        }
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            return Err(StepError::Internal(e.to_string()));
        }
    };
    let stubs = match mount_stubs(&shared, &active, &exec) {
        Ok(stubs) => stubs,
        Err(e) => {
            extras.clean_up();
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e);
        }
    };
    let mut rootfs = to_sandbox_mounts(mounts);
    rootfs.append(&mut extras.rootfs);
    let mut spec = kiln_sandbox::Spec::new(rootfs, exec.argv.clone());
    spec.env = exec.env.clone();
    spec.env.extend(shared.plan.proxy_env.iter().cloned());
    let step_only_env = extras.env.clone();
    spec.env.append(&mut extras.env);
    spec.mounts = std::mem::take(&mut extras.mounts);
    spec.cwd = exec.cwd.clone();
    spec.user = exec.user.clone();
    spec.hostname = "buildkitsandbox".to_owned();
    // `host` reaches here only through the frontend's `--allow network.host` gate.
    spec.network = match exec.network {
        NetworkMode::Default => kiln_sandbox::Network::Default,
        NetworkMode::None => kiln_sandbox::Network::None,
        NetworkMode::Host => kiln_sandbox::Network::Host,
    };
    let handle = kiln_sandbox::CancelHandle::new();
    let watcher = {
        let cancel = shared.cancel.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            handle.cancel();
        })
    };
    let failed_spec = shared.on_failed_step.as_ref().map(|_| spec.clone());
    let progress = shared.progress.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let status = kiln_sandbox::run(
            &spec,
            &mut |stream, bytes| {
                let (slot, stream) = match stream {
                    kiln_sandbox::Stream::Stdout => (0, Stream::Stdout),
                    kiln_sandbox::Stream::Stderr => (1, Stream::Stderr),
                };
                partial[slot].extend_from_slice(bytes);
                while let Some(pos) = partial[slot].iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial[slot].drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    emit_line(&progress, id, stream, text, &mut tail);
                }
            },
            &handle,
        );
        for (slot, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !partial[slot].is_empty() {
                let text = String::from_utf8_lossy(&partial[slot]).into_owned();
                emit_line(&progress, id, stream, text, &mut tail);
            }
        }
        (status, tail)
    })
    .await;
    watcher.abort();
    let (status, tail) = match outcome {
        Ok(v) => v,
        Err(e) => {
            extras.clean_up();
            let _ = shared.store.snapshots().remove(active.id());
            return Err(StepError::Internal(e.to_string()));
        }
    };
    let failed = match status {
        Ok(status) if status.success() => None,
        Ok(_) if shared.cancel.is_cancelled() => Some(StepError::Cancelled),
        Ok(status) => Some(StepError::ExitCode {
            argv: exec.argv.join(" "),
            code: status.code(),
            tail: tail.into_iter().collect(),
        }),
        Err(e) => Some(StepError::Sandbox(e)),
    };
    let mut keep = false;
    if let (Some(StepError::ExitCode { code, .. }), Some(hook), Some(spec)) =
        (&failed, shared.on_failed_step.clone(), failed_spec)
    {
        let step = FailedStep {
            label: shared.plan.graph.vertex(id).label.clone(),
            spec,
            step_only_env,
            layer: active.id().clone(),
            code: *code,
        };
        // The step's mounts (caches, binds, secrets) stay until the hook returns.
        keep = tokio::task::spawn_blocking(move || hook.0.failed(&step))
            .await
            .unwrap_or(false);
    }
    extras.clean_up();
    if let Some(error) = failed {
        if !keep {
            let _ = shared.store.snapshots().remove(active.id());
        }
        return Err(error);
    }
    remove_stubs(&shared.store.snapshots().diff_dir(&active), &stubs);
    Ok(Some(shared.store.snapshots().commit(active)?))
}

/// The paths the sandbox will create to mount things on (its own `/proc`, `/etc/hosts`
/// ... and the step's `--mount` targets, with their parents) that the tree does not
/// have yet, deepest first.
pub(super) fn mount_stubs(
    shared: &Shared,
    active: &kiln_snapshotter::Active,
    exec: &ExecOp,
) -> Result<Vec<String>, StepError> {
    let mut layers = vec![shared.store.snapshots().diff_dir(active)];
    layers.extend(shared.store.snapshots().lower_layers(active)?);
    let view = LayeredView::new(layers);
    let mut candidates: Vec<String> = kiln_sandbox::plan::CREATED_MOUNT_POINTS
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    for target in exec.mounts.iter().filter_map(|m| m.target()) {
        let mut path = crate::meta::clean_abs(target);
        while path != "/" {
            candidates.push(path.clone());
            path = match path.rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(pos) => path[..pos].to_owned(),
            };
        }
    }
    let mut stubs = Vec::new();
    for path in candidates {
        if !stubs.contains(&path) && view.lstat(&path)?.is_none() {
            stubs.push(path);
        }
    }
    stubs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    Ok(stubs)
}

/// Removes the mount stubs a step left, as BuildKit does: a path that did not exist
/// before the step and is an empty file or directory after it is the sandbox's, not the
/// step's, and must not be seen by later steps.
pub(super) fn remove_stubs(diff_dir: &std::path::Path, stubs: &[String]) {
    'stubs: for stub in stubs {
        // The step may have put a link where a parent was: every component on the way
        // must be a real directory of the diff, or the stub is left alone.
        let parts: Vec<&str> = stub.split('/').filter(|p| !p.is_empty()).collect();
        let mut host = diff_dir.to_path_buf();
        for parent in &parts[..parts.len().saturating_sub(1)] {
            host.push(parent);
            if !std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                continue 'stubs;
            }
        }
        let Some(name) = parts.last() else { continue };
        host.push(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&host);
            }
            // remove_dir only removes an empty directory: what the step put there stays.
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&host);
            }
            _ => {}
        }
    }
}

pub(super) fn emit_line(
    progress: &Progress,
    id: VertexId,
    stream: Stream,
    line: String,
    tail: &mut std::collections::VecDeque<String>,
) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.clone());
    progress.send(id, EventKind::Log { stream, line });
}
