//! Git sources (`ADD https://host/repo.git#ref:subdir`, a git URL as the build context):
//! a shallow clone over HTTP(S) with gitoxide, never a git binary.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

/// A git source as BuildKit spells it: `URL[#REF[:SUBDIR]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitSource {
    /// The repository.
    pub url: String,
    /// A branch or tag (none: the remote's default branch).
    pub reference: Option<String>,
    /// The directory inside the repository that is the result (empty: all of it).
    pub subdir: String,
}

/// A clone that failed.
#[derive(Debug, thiserror::Error)]
#[error("git {url}: {reason}")]
pub struct GitError {
    /// The repository.
    pub url: String,
    /// What went wrong, and what to do.
    pub reason: String,
}

/// Whether `text` names a git repository rather than a file to download.
pub fn is_git_url(text: &str) -> bool {
    let base = text.split('#').next().unwrap_or(text);
    text.starts_with("git@")
        || text.starts_with("git://")
        || base.ends_with(".git")
        || base.ends_with(".git/")
}

/// Splits `URL#REF:SUBDIR`.
pub fn parse(text: &str) -> GitSource {
    let (url, fragment) = text.split_once('#').unwrap_or((text, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    GitSource {
        url: url.to_owned(),
        reference: (!reference.is_empty()).then(|| reference.to_owned()),
        subdir: subdir.trim_matches('/').to_owned(),
    }
}

/// Clones `source` (depth 1) into `dest`, which must not exist, and returns the commit
/// checked out. Without `keep_git_dir` the `.git` directory is removed, as BuildKit does.
pub fn checkout(source: &GitSource, dest: &Path, keep_git_dir: bool) -> Result<String, GitError> {
    let fail = |reason: String| GitError {
        url: source.url.clone(),
        reason,
    };
    // reqwest's TLS needs a process-wide provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let interrupt = AtomicBool::new(false);
    let depth = NonZeroU32::new(1).unwrap_or(NonZeroU32::MIN);
    let mut prepare = gix::prepare_clone(source.url.as_str(), dest)
        .map_err(|e| fail(format!("{e}; check the URL")))?
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth));
    if let Some(reference) = &source.reference {
        prepare = prepare
            .with_ref_name(Some(reference.as_str()))
            .map_err(|e| fail(format!("bad ref {reference:?}: {e}")))?;
    }
    let (mut worktree, _) = prepare
        .fetch_then_checkout(gix::progress::Discard, &interrupt)
        .map_err(|e| {
            fail(format!(
                "fetch failed: {e}; check the URL, the ref and the network"
            ))
        })?;
    let (repo, _) = worktree
        .main_worktree(gix::progress::Discard, &interrupt)
        .map_err(|e| fail(format!("checkout failed: {e}")))?;
    let commit = repo
        .head_id()
        .map_err(|e| fail(format!("no commit checked out: {e}")))?
        .to_string();
    drop(repo);
    if !keep_git_dir {
        let git_dir = dest.join(".git");
        std::fs::remove_dir_all(&git_dir)
            .map_err(|e| fail(format!("remove {}: {e}", git_dir.display())))?;
    }
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_fragments() {
        assert!(is_git_url(
            "https://github.com/moby/buildkit.git#v0.12:docs"
        ));
        assert!(is_git_url("git@github.com:moby/buildkit.git"));
        assert!(!is_git_url("https://example.com/file.tar.gz"));
        let s = parse("https://h/r.git#v1:sub/dir/");
        assert_eq!(s.url, "https://h/r.git");
        assert_eq!(s.reference.as_deref(), Some("v1"));
        assert_eq!(s.subdir, "sub/dir");
        let s = parse("https://h/r.git");
        assert_eq!((s.reference, s.subdir.as_str()), (None, ""));
    }
}
