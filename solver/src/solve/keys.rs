//! Cache keys of vertices and their lookups: what a COPY from a context reads
//! (matched and digested before anything runs), and the chains of base layers.

use super::*;
use crate::ops::wildcard;

/// Matches a COPY's sources in the context (globs included) and digests what they read.
pub(super) fn context_sources(
    tree: &ContextTree,
    op: &CopyOp,
    memo: &ContentMemo,
    options: &SolveOptions,
) -> Result<ContextSources, StepError> {
    let mut sources = Vec::new();
    for source in &op.sources {
        if wildcard::has_wildcard(source) {
            // BuildKit splits the source at its first wildcard component, resolves the
            // literal part (through symlinks), and matches the rest below it with Go's
            // path.Match; a directory that matches is taken whole.
            let (prefix, rest) = wildcard::split_wildcards(source);
            let base = if prefix.is_empty() {
                String::new()
            } else {
                let resolved = follow_in_context(tree, &prefix);
                if tree.get(&resolved).is_none() {
                    return Err(StepError::WildcardBaseMissing {
                        path: format!("/{prefix}"),
                    });
                }
                resolved
            };
            let mut matched: Vec<String> = Vec::new();
            for (path, _) in tree.subtree(&base) {
                let rel = if base.is_empty() {
                    path
                } else {
                    match path.strip_prefix(&base).and_then(|r| r.strip_prefix('/')) {
                        Some(rel) => rel,
                        None => continue,
                    }
                };
                if rel.is_empty() || matched.iter().any(|m| rel.starts_with(&format!("{m}/"))) {
                    continue;
                }
                let hit = wildcard::matches(&rest, rel).map_err(|reason| StepError::Pattern {
                    pattern: source.clone(),
                    reason,
                })?;
                if hit {
                    matched.push(rel.to_owned());
                }
            }
            for rel in matched {
                sources.push(if base.is_empty() {
                    rel
                } else {
                    format!("{base}/{rel}")
                });
            }
        } else if tree.get(source).is_some() {
            sources.push(source.clone());
        } else {
            let ignored_by = options.ignore.as_ref().and_then(|m| {
                m.decide(source)
                    .ok()
                    .filter(|d| d.excluded)
                    .and_then(|d| d.line)
            });
            return Err(StepError::SourceNotFound {
                path: format!("/{source}"),
                ignored_by,
            });
        }
    }
    // A symlink named as a source is followed; its target's content is what is copied.
    let mut read: Vec<String> = Vec::new();
    for source in &sources {
        read.push(follow_in_context(tree, source));
    }
    let refs: Vec<&str> = read.iter().map(String::as_str).collect();
    let (digest, files) = tree.digest_files(&refs, memo, crate::explain::MAX_FILES)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&digest);
    for source in &sources {
        hasher.update(&(source.len() as u64).to_le_bytes());
        hasher.update(source.as_bytes());
    }
    Ok(ContextSources {
        sources,
        digest: *hasher.finalize().as_bytes(),
        files,
    })
}

pub(super) fn follow_in_context(tree: &ContextTree, path: &str) -> String {
    let mut rel = path.to_owned();
    for _ in 0..40 {
        match tree.get(&rel).map(|e| &e.kind) {
            Some(EntryKind::Symlink(target)) => {
                let target = target.to_string_lossy();
                let base = match rel.rfind('/') {
                    Some(pos) if !target.starts_with('/') => rel[..pos].to_owned(),
                    _ => String::new(),
                };
                rel = crate::meta::clean_abs(&format!("{base}/{target}"))
                    .trim_start_matches('/')
                    .to_owned();
            }
            _ => break,
        }
    }
    if tree.get(&rel).is_some() {
        rel
    } else {
        path.to_owned()
    }
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(super) fn key_for(
    shared: &Shared,
    id: VertexId,
    op: &Op,
    inputs: &[Done],
) -> (CacheKey, Vec<crate::cache_key::KeyPart>) {
    let kind = match op {
        Op::Scratch => "scratch",
        Op::Image { .. } => "image",
        Op::Context { .. } => "context",
        Op::Exec(_) => "exec",
        Op::Copy(_) => "copy",
        Op::Mkdir(_) => "mkdir",
        Op::Files(_) => "files",
        Op::Merge => "merge",
        Op::Http(_) => "http",
        Op::Git(_) => "git",
    };
    let mut builder = KeyBuilder::new(kind);
    match op {
        // An image is its content: the name it was found by (the store's first tag for
        // it, which differs between stores) changes nothing.
        Op::Image { digest, .. } => builder.part("digest", digest.as_bytes()),
        _ => builder.json("op", op),
    };
    for (i, input) in inputs.iter().enumerate() {
        // A context's key says nothing of its content: the COPY adds the digest of what
        // it reads instead, so changes elsewhere in the context do not invalidate it.
        builder.input(i, &input.key);
    }
    if let Some(sources) = shared.context_sources.get(&id) {
        builder.part("content", &sources.digest);
    }
    if let Some(remote) = shared.remote.get(&id) {
        builder.part("remote", remote.identity.as_bytes());
    }
    if let Some((commit, _)) = shared.git.get(&id) {
        builder.part("commit", commit.as_bytes());
    }
    builder.finish()
}

pub(super) fn lookup(shared: &Shared, key: &CacheKey) -> Result<Option<Done>, StepError> {
    let Some(record) = shared.index.get(key)? else {
        return Ok(None);
    };
    let Ok(recorded) = serde_json::from_slice::<Recorded>(&record.value) else {
        return Ok(None);
    };
    let snapshot = match recorded.snapshot {
        Some(text) => match SnapshotId::parse(&text) {
            // A pruned snapshot is a cache miss, never an error.
            Some(id) if shared.store.snapshots().is_committed(&id) => Some(id),
            _ => return Ok(None),
        },
        None => None,
    };
    Ok(Some(Done {
        key: *key,
        snapshot,
        created: recorded.created,
        cached: true,
    }))
}

/// The key of a base layer chain: layers unpacked once are reused by every image that
/// shares them (and by builds on top of images kiln built itself).
pub(super) fn chain_key(parent: Option<&CacheKey>, diff_id: &str) -> CacheKey {
    let mut builder = KeyBuilder::new("layer");
    if let Some(parent) = parent {
        builder.input(0, parent);
    }
    builder.part("diff_id", diff_id.as_bytes());
    builder.finish().0
}
