//! File operations on snapshots: base layers unpacked, COPY/ADD, WORKDIR, heredoc
//! files, `--link` merges, and owner names resolved as BuildKit does.

use super::*;

pub(super) fn unpack_image(shared: &Shared, image: usize) -> Result<Option<SnapshotId>, StepError> {
    let base = &shared.plan.base_images[image];
    unpack_layers(
        &shared.store,
        &shared.index,
        &base.config.rootfs.diff_ids,
        &base.layers,
        &|| shared.cancel.is_cancelled(),
    )
}

/// The snapshot chain of an image's layers, each layer unpacked once per store and
/// remembered in the index under its chain key (so builds and `kiln run` share them).
pub(super) fn unpack_layers(
    store: &Store,
    index: &CacheIndex,
    diff_ids: &[String],
    layers: &[kiln_snapshotter::Descriptor],
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<SnapshotId>, StepError> {
    let mut parent: Option<SnapshotId> = None;
    let mut parent_key: Option<CacheKey> = None;
    for (i, layer) in layers.iter().enumerate() {
        let diff_id = diff_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| layer.digest.to_string());
        let key = chain_key(parent_key.as_ref(), &diff_id);
        if let Some(snapshot) = lookup_snapshot(store, index, &key)? {
            parent = Some(snapshot);
            parent_key = Some(key);
            continue;
        }
        if cancelled() {
            return Err(StepError::Cancelled);
        }
        // The layer must be what the config's diff_id says: its snapshot is found by that
        // diff_id from now on, for every image of the store that has the layer.
        let expected = diff_ids
            .get(i)
            .and_then(|d| kiln_snapshotter::Digest::parse(d));
        let id = store.snapshot_of_blob(parent.as_ref(), &layer.digest, expected.as_ref())?;
        let value = serde_json::to_vec(&Recorded {
            snapshot: Some(id.as_str().to_owned()),
            created: now_secs(),
        })
        .map_err(|e| StepError::Internal(e.to_string()))?;
        index.put(
            &key,
            &CacheRecord {
                value,
                parts: Vec::new(),
            },
        )?;
        parent = Some(id);
        parent_key = Some(key);
    }
    Ok(parent)
}

/// A committed snapshot the index records under `key` (a pruned one is a miss).
fn lookup_snapshot(
    store: &Store,
    index: &CacheIndex,
    key: &CacheKey,
) -> Result<Option<SnapshotId>, StepError> {
    let Some(record) = index.get(key)? else {
        return Ok(None);
    };
    let Ok(recorded) = serde_json::from_slice::<Recorded>(&record.value) else {
        return Ok(None);
    };
    Ok(recorded
        .snapshot
        .and_then(|text| SnapshotId::parse(&text))
        .filter(|id| store.snapshots().is_committed(id)))
}

/// The committed snapshot holding an image's filesystem (`None`: no layers), its
/// layers unpacked as a build's `FROM` does and shared with builds: what `kiln run`
/// puts its writable layer on. Blocking.
pub fn image_snapshot(
    store: &Store,
    index_path: &std::path::Path,
    image: &StoredImage,
) -> Result<Option<SnapshotId>, StepError> {
    let index = CacheIndex::open(index_path)?;
    unpack_layers(
        store,
        &index,
        &image.config.rootfs.diff_ids,
        &image.manifest.layers,
        &|| false,
    )
}

/// Resolves `user[:group]` as BuildKit does for `--chown` and WORKDIR: numbers as they
/// are, names from the tree's `/etc/passwd` and `/etc/group`, a name not found is 0.
pub(super) fn resolve_owner(spec: &str, tree: &LayeredView) -> Result<(u32, u32), StepError> {
    // BuildKit: llb.WithUser (client/llb/fileop.go) splits at the first `:` and takes a
    // part for an id when parseUID accepts it (`root`, or an int32); readUser
    // (solver/llbsolver/ops/user_linux.go) then never fails: a name /etc/passwd lacks
    // leaves uid and gid 0, a group /etc/group lacks leaves the gid the user part gave.
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match parse_id(user) {
        Some(uid) => (uid, uid),
        None => {
            let passwd = tree.read_to_string("/etc/passwd")?.unwrap_or_default();
            id_file_entry(&passwd, user).map_or((0, 0), |f| (field_id(&f, 2), field_id(&f, 3)))
        }
    };
    if let Some(group) = group {
        match parse_id(group) {
            Some(id) => gid = id,
            None => {
                let groups = tree.read_to_string("/etc/group")?.unwrap_or_default();
                if let Some(f) = id_file_entry(&groups, group) {
                    gid = field_id(&f, 2);
                }
            }
        }
    }
    Ok((uid, gid))
}

/// llb's parseUID: `root` is 0; otherwise a decimal int32 (sign allowed), or not an id.
/// The empty string is no id either, but llb marshals an empty name as id 0.
fn parse_id(text: &str) -> Option<u32> {
    match text {
        "root" | "" => Some(0),
        // Go's int32 -> uint32 conversion keeps the bits.
        _ => text.parse::<i32>().ok().map(|id| id as u32),
    }
}

/// The first line of a passwd or group file whose name field is `name`, split at `:`
/// (moby/sys/user's ParsePasswdFilter / ParseGroupFilter: lines trimmed, blank ones
/// skipped).
fn id_file_entry<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields[0] == name)
}

/// A numeric field of such a line; missing or unparsable is 0, as `strconv.Atoi`'s
/// ignored error leaves it.
fn field_id(fields: &[&str], index: usize) -> u32 {
    fields
        .get(index)
        .and_then(|f| f.parse::<i32>().ok())
        .map_or(0, |id| id as u32)
}

pub(super) fn view_of(
    shared: &Shared,
    snapshot: Option<&SnapshotId>,
) -> Result<LayeredView, StepError> {
    Ok(LayeredView::new(match snapshot {
        Some(id) => shared.store.snapshots().layers(id)?,
        None => Vec::new(),
    }))
}

/// Runs `work` on a fresh snapshot over `parent`; commits it, or removes it on failure.
pub(super) fn on_new_snapshot(
    shared: &Shared,
    parent: Option<&SnapshotId>,
    work: impl FnOnce(&std::path::Path, &LayeredView) -> Result<(), StepError>,
) -> Result<Option<SnapshotId>, StepError> {
    let active = shared.store.snapshots().prepare(parent)?;
    let dir = shared.store.snapshots().diff_dir(&active);
    let below = shared
        .store
        .snapshots()
        .lower_layers(&active)
        .map(LayeredView::new)
        .map_err(StepError::from);
    match below.and_then(|below| work(&dir, &below)) {
        Ok(()) => Ok(Some(shared.store.snapshots().commit(active)?)),
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            Err(e)
        }
    }
}

pub(super) fn run_copy(
    shared: &Shared,
    id: VertexId,
    op: &CopyOp,
    inputs: &[Done],
) -> Result<Option<SnapshotId>, StepError> {
    let dest_view = view_of(shared, inputs[0].snapshot.as_ref())?;
    let chown = op
        .chown
        .as_deref()
        .map(|spec| resolve_owner(spec, &dest_view))
        .transpose()?;
    let excludes = if op.excludes.is_empty() {
        None
    } else {
        Some(
            kiln_parser::dockerignore::Matcher::new(&op.excludes).map_err(|e| {
                StepError::Pattern {
                    pattern: op.excludes.join(","),
                    reason: e.to_string(),
                }
            })?,
        )
    };
    let options = CopyOptions {
        chown,
        chmod: op.chmod.clone(),
        dest_is_dir: op.dest_is_dir,
        excludes,
        parents: op.parents.clone(),
        unpack: op.unpack,
    };
    let dest = if op.dest_is_dir && !op.dest.ends_with('/') {
        format!("{}/", op.dest)
    } else {
        op.dest.clone()
    };
    on_new_snapshot(shared, inputs[0].snapshot.as_ref(), |dir, below| {
        if let Some(name) = &op.context {
            let tree = shared
                .contexts
                .get(name)
                .ok_or_else(|| StepError::Internal(format!("no build context {name}")))?;
            let sources = shared
                .context_sources
                .get(&id)
                .map(|s| s.sources.clone())
                .unwrap_or_default();
            copy(
                &CopyFrom::Context(tree),
                &sources,
                &dest,
                dir,
                below,
                &options,
            )?;
        } else {
            let source_view = view_of(shared, inputs[1].snapshot.as_ref())?;
            let sources = tree_sources(&source_view, &op.sources)?;
            copy(
                &CopyFrom::Tree(&source_view),
                &sources,
                &dest,
                dir,
                below,
                &options,
            )?;
        }
        if !op.heredocs.is_empty() {
            // Made by kiln from the Dockerfile: owned by root (or --chown), never unpacked.
            let files = inputs.get(2).ok_or_else(|| {
                StepError::Internal("a COPY without its heredoc files".to_owned())
            })?;
            let files_view = view_of(shared, files.snapshot.as_ref())?;
            let options = CopyOptions {
                unpack: false,
                ..options.clone()
            };
            copy(
                &CopyFrom::Tree(&files_view),
                &op.heredocs,
                &dest,
                dir,
                below,
                &options,
            )?;
        }
        Ok(())
    })
}

/// Matches sources (globs included) in another stage's or an image's tree, as
/// [`super::keys::context_sources`] does in a context: the literal part resolved through
/// the tree's symlinks, the rest matched level by level with Go's `path.Match`.
pub(super) fn tree_sources(
    view: &LayeredView,
    patterns: &[String],
) -> Result<Vec<String>, StepError> {
    use crate::ops::wildcard;
    let mut out = Vec::new();
    for pattern in patterns {
        if !wildcard::has_wildcard(pattern) {
            // Through the tree's own symlinks (`/lib -> usr/lib`), as a chroot resolves.
            let resolved = view.resolve(&format!("/{pattern}"), true)?;
            if view.lstat(&resolved)?.is_none() && !pattern.is_empty() {
                return Err(StepError::TreeSourceNotFound {
                    path: format!("/{pattern}"),
                });
            }
            out.push(pattern.clone());
            continue;
        }
        let (prefix, rest) = wildcard::split_wildcards(pattern);
        let base = view.resolve(&format!("/{prefix}"), true)?;
        match view.lstat(&base)? {
            None if !prefix.is_empty() => {
                return Err(StepError::WildcardBaseMissing {
                    path: format!("/{prefix}"),
                });
            }
            Some(found) if !found.meta.is_dir() => continue,
            _ => {}
        }
        let base = base.trim_start_matches('/').to_owned();
        // Walk only as deep as the pattern has parts: `*` never crosses a `/`.
        let depth = rest.split('/').count();
        let mut frontier = vec![String::new()];
        for level in 0..depth {
            let mut next = Vec::new();
            let part_pattern: Vec<&str> = rest.split('/').take(level + 1).collect();
            let part_pattern = part_pattern.join("/");
            for dir in frontier {
                let full = join_rel(&base, &dir);
                let real = view.resolve(&format!("/{full}"), true)?;
                let is_dir = full.is_empty() || view.lstat(&real)?.is_some_and(|f| f.meta.is_dir());
                if !is_dir {
                    continue;
                }
                let mut names = view.read_dir(&real)?;
                names.sort();
                for name in names {
                    let path = join_rel(&dir, &name);
                    let matched = wildcard::matches(&part_pattern, &path).map_err(|reason| {
                        StepError::Pattern {
                            pattern: pattern.clone(),
                            reason,
                        }
                    })?;
                    if matched {
                        next.push(path);
                    }
                }
            }
            frontier = next;
        }
        out.extend(frontier.into_iter().map(|rel| join_rel(&base, &rel)));
    }
    Ok(out)
}

fn join_rel(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}/{rel}"),
    }
}

pub(super) fn run_mkdir(
    shared: &Shared,
    op: &MkdirOp,
    parent: Option<SnapshotId>,
) -> Result<Option<SnapshotId>, StepError> {
    let tree = view_of(shared, parent.as_ref())?;
    let owner = if op.user.is_empty() {
        (0, 0)
    } else {
        resolve_owner(&op.user, &tree)?
    };
    on_new_snapshot(shared, parent.as_ref(), |dir, below| {
        let mut layers = vec![dir.to_owned()];
        layers.extend(below.layers().iter().cloned());
        ensure_dir(dir, &LayeredView::new(layers), &op.path, owner)?;
        Ok(())
    })
}

pub(super) fn run_files(shared: &Shared, op: &FilesOp) -> Result<Option<SnapshotId>, StepError> {
    on_new_snapshot(shared, None, |dir, _| {
        for (name, content) in &op.files {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|e| io_err(&path, e))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    })
}

pub(super) fn run_merge(
    shared: &Shared,
    below: Option<SnapshotId>,
    linked: Option<SnapshotId>,
) -> Result<Option<SnapshotId>, StepError> {
    let Some(linked) = linked else {
        return Ok(below);
    };
    let active = shared.store.snapshots().prepare(below.as_ref())?;
    match shared.store.snapshots().apply_diff(&active, &linked) {
        Ok(()) => Ok(Some(shared.store.snapshots().commit(active)?)),
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            Err(e.into())
        }
    }
}
