//! Sources from the network: `ADD URL` (keyed by checksum, validators or content)
//! and git repositories (keyed by commit).

use super::*;

/// Finds what identifies an `ADD URL` now: its `--checksum`, else the server's
/// validators, else (a server that sends none) the digest of a download made now and
/// kept for the step.
pub(super) async fn remote_identity(store: &Store, op: &HttpOp) -> Result<Remote, StepError> {
    if let Some(checksum) = &op.checksum {
        return Ok(Remote {
            identity: format!("checksum={checksum}"),
            fetched: None,
        });
    }
    let http_err = |e: http::HttpError| StepError::Download(e.to_string());
    if let Some(validators) = http::validators(&op.url).await.map_err(http_err)? {
        return Ok(Remote {
            identity: validators,
            fetched: None,
        });
    }
    let dir = store.tmp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let path = dir.join(format!(
        "download-{}",
        &blake3::hash(format!("{}{:?}", op.url, SystemTime::now()).as_bytes()).to_hex()[..16]
    ));
    let fetched = http::fetch(&op.url, &path).await.map_err(http_err)?;
    Ok(Remote {
        identity: format!("content={}", fetched.digest),
        fetched: Some((path, fetched)),
    })
}

pub(super) async fn run_http(
    shared: &Shared,
    id: VertexId,
    op: &HttpOp,
) -> Result<Option<SnapshotId>, StepError> {
    let active = shared.store.snapshots().prepare(None)?;
    let path = shared.store.snapshots().diff_dir(&active).join(&op.name);
    let result = async {
        let fetched = match shared.remote.get(&id).and_then(|r| r.fetched.clone()) {
            Some((temp, fetched)) => {
                std::fs::rename(&temp, &path).map_err(|e| io_err(&path, e))?;
                fetched
            }
            None => http::fetch(&op.url, &path)
                .await
                .map_err(|e| StepError::Download(e.to_string()))?,
        };
        if let Some(expected) = &op.checksum
            && *expected != fetched.digest
        {
            return Err(StepError::Download(format!(
                "{}: checksum mismatch: expected {expected}, the download is {}",
                op.url, fetched.digest
            )));
        }
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| io_err(&path, e))?;
        let time =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(fetched.modified.max(0) as u64);
        std::fs::File::open(&path)
            .and_then(|f| f.set_modified(time))
            .map_err(|e| io_err(&path, e))?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(Some(shared.store.snapshots().commit(active)?)),
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            Err(e)
        }
    }
}

/// Clones a git source into the store's temp dir (on a blocking thread: gitoxide's
/// transport is blocking) and returns its commit and where the checkout is.
pub(super) async fn git_checkout(
    store: &Store,
    op: &crate::ops::GitOp,
) -> Result<(String, PathBuf), StepError> {
    let dir = store.tmp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let dest = dir.join(format!(
        "git-{}",
        &blake3::hash(format!("{}{:?}", op.source.url, SystemTime::now()).as_bytes()).to_hex()
            [..16]
    ));
    let source = op.source.clone();
    let keep = op.keep_git_dir;
    let target = dest.clone();
    let commit = blocking(move || {
        crate::ops::git::checkout(&source, &target, keep)
            .map(|done| done.commit)
            .map_err(|e| StepError::Download(e.to_string()))
    })
    .await;
    match commit {
        Ok(commit) => {
            if let Some(expected) = &op.checksum
                && !commit.starts_with(expected.trim_start_matches("sha1:"))
            {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(StepError::Download(format!(
                    "git {}: expected checksum to match {expected}, got {commit}; pin the commit the ref is at, or drop the checksum",
                    op.source.url
                )));
            }
            Ok((commit, dest))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dest);
            Err(e)
        }
    }
}

pub(super) fn run_git(
    shared: &Shared,
    id: VertexId,
    op: &crate::ops::GitOp,
) -> Result<Option<SnapshotId>, StepError> {
    let (_, checkout) = shared
        .git
        .get(&id)
        .ok_or_else(|| StepError::Internal("a git source was not checked out".to_owned()))?;
    let from = crate::ops::git::subdir_in(checkout, &op.source.subdir).ok_or_else(|| {
        StepError::SourceNotFound {
            path: format!(
                "{}#:{} (a directory of the repository, not a link)",
                op.source.url, op.source.subdir
            ),
            ignored_by: None,
        }
    })?;
    on_new_snapshot(shared, None, |dir, _| {
        for entry in std::fs::read_dir(&from).map_err(|e| io_err(&from, e))? {
            let entry = entry.map_err(|e| io_err(&from, e))?;
            let target = dir.join(entry.file_name());
            std::fs::rename(entry.path(), &target).map_err(|e| io_err(&target, e))?;
        }
        Ok(())
    })
}
