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

/// Whether `text` names a remote git repository: a URL with a scheme (or `git@`), never
/// a local path, so nothing outside the context can be read by naming it `x.git`.
pub fn is_git_url(text: &str) -> bool {
    let base = text.split('#').next().unwrap_or(text);
    let remote = ["https://", "http://"].iter().any(|s| text.starts_with(s));
    text.starts_with("git@")
        || text.starts_with("git://")
        || text.starts_with("ssh://")
        || (remote && (base.ends_with(".git") || base.ends_with(".git/")))
}

/// The directory `subdir` names inside `checkout`, walked one component at a time
/// without following symlinks: a repository can hold a link to anywhere on the host,
/// and its target must never be read or moved.
pub fn subdir_in(checkout: &Path, subdir: &str) -> Option<std::path::PathBuf> {
    let mut dir = checkout.to_path_buf();
    for part in subdir.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return None;
        }
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => return None,
        }
    }
    Some(dir)
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
        assert!(!is_git_url("/abs/repo.git") && !is_git_url("../up.git"));
    }

    #[test]
    fn subdirs_never_follow_links() {
        let dir = std::env::temp_dir().join(format!("kiln-git-subdir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real/inner")).unwrap();
        let _ = std::os::unix::fs::symlink("/etc", dir.join("link"));
        assert_eq!(subdir_in(&dir, "real/inner"), Some(dir.join("real/inner")));
        assert_eq!(subdir_in(&dir, "link"), None);
        assert_eq!(subdir_in(&dir, "real/../link"), None);
        assert_eq!(subdir_in(&dir, "missing"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
