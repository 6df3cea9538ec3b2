//! Git sources (`ADD https://host/repo.git#ref:subdir`, a git URL as the build context):
//! a shallow clone over HTTP(S) with gitoxide, never a git binary.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::Serialize;

/// A git source as BuildKit spells it: `URL[?QUERY][#REF[:SUBDIR]]`, the query one of
/// `ref=`, `tag=`, `branch=`, `subdir=`, `checksum=` (or `commit=`), `keep-git-dir=`,
/// `submodules=`, `mtime=` (dockerfile frontend 1.17+, `dfgitutil/git_ref.go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitSource {
    /// The repository, without its query and fragment.
    pub url: String,
    /// A branch or tag (`refs/tags/X` for `?tag=X`, `refs/heads/X` for `?branch=X`);
    /// none: the remote's default branch.
    pub reference: Option<String>,
    /// The directory inside the repository that is the result (empty: all of it).
    pub subdir: String,
    /// `?checksum=`: a prefix of the commit the ref must resolve to.
    pub checksum: Option<String>,
    /// `?keep-git-dir=`.
    pub keep_git_dir: Option<bool>,
    /// `?submodules=false`: the checkout is wanted without submodules.
    pub without_submodules: bool,
    /// `?mtime=commit`: every file gets the commit's time (for a build context).
    pub mtime_commit: bool,
}

/// A git URL kiln cannot use as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("git URL {url}: {reason}")]
pub struct GitUrlError {
    /// The URL as written.
    pub url: String,
    /// What is wrong, and what to write instead.
    pub reason: String,
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
/// a local path, so nothing outside the context can be read by naming it `x.git`. An
/// HTTP(S) URL is one when its path (before `?` and `#`) ends in `.git`, as BuildKit's
/// `ParseGitRef` says.
pub fn is_git_url(text: &str) -> bool {
    let base = text.split('#').next().unwrap_or(text);
    let base = base.split('?').next().unwrap_or(base);
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

/// Splits `URL[?QUERY][#REF[:SUBDIR]]` with BuildKit's rules for the query: each key at
/// most once, `tag=` and `branch=` made full ref names, a `ref`/`subdir` given twice
/// must agree, unknown keys refused.
pub fn parse(text: &str) -> Result<GitSource, GitUrlError> {
    let fail = |reason: String| GitUrlError {
        url: text.to_owned(),
        reason,
    };
    let (before, fragment) = text.split_once('#').unwrap_or((text, ""));
    let (url, query) = before.split_once('?').unwrap_or((before, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    let mut source = GitSource {
        url: url.to_owned(),
        reference: (!reference.is_empty()).then(|| reference.to_owned()),
        subdir: clean_subdir(subdir),
        checksum: None,
        keep_git_dir: None,
        without_submodules: false,
        mtime_commit: false,
    };
    let mut seen = std::collections::BTreeSet::new();
    let (mut tag, mut branch) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        if !seen.insert(key.clone()) {
            return Err(fail(format!("query {key:?} has multiple values")));
        }
        let flag = |value: &str| match value {
            "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            other => Err(fail(format!("invalid {key} value: {other:?}"))),
        };
        if value.is_empty()
            && !matches!(
                key.as_str(),
                "submodules" | "keep-git-dir" | "fetch-by-commit"
            )
        {
            return Err(fail(format!("query {key:?} has no value")));
        }
        match key.as_str() {
            "ref" => agree(&mut source.reference, value, "ref").map_err(fail)?,
            "tag" => tag = Some(value),
            "branch" => branch = Some(value),
            "subdir" => {
                let value = clean_subdir(&value);
                if !source.subdir.is_empty() && source.subdir != value {
                    return Err(fail(format!(
                        "subdir conflicts: {:?} vs {value:?}",
                        source.subdir
                    )));
                }
                source.subdir = value;
            }
            "checksum" | "commit" => {
                if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(fail(format!(
                        "invalid checksum {value}, expected hex commit hash"
                    )));
                }
                source.checksum = Some(value.to_ascii_lowercase());
            }
            "keep-git-dir" => source.keep_git_dir = Some(flag(&value)?),
            "submodules" => {
                if flag(&value)? {
                    return Err(fail(
                        "kiln does not fetch submodules yet; write ?submodules=false to build without them".to_owned(),
                    ));
                }
                source.without_submodules = true;
            }
            "mtime" => match value.as_str() {
                "checkout" => source.mtime_commit = false,
                "commit" => source.mtime_commit = true,
                other => {
                    return Err(fail(format!(
                        "invalid mtime value: {other:?} (must be \"checkout\" or \"commit\")"
                    )));
                }
            },
            "fetch-by-commit" => {
                return Err(fail(
                    "kiln does not fetch by commit yet; name a branch or tag (with ?checksum= to pin the commit)".to_owned(),
                ));
            }
            other => return Err(fail(format!("unexpected query {other:?}"))),
        }
    }
    if let Some(tag) = tag {
        let full = if tag.starts_with("refs/tags/") {
            tag
        } else {
            format!("refs/tags/{tag}")
        };
        agree(&mut source.reference, full, "ref").map_err(fail)?;
    }
    if let Some(branch) = branch {
        if query_has(query, "tag") {
            return Err(fail("branch conflicts with tag".to_owned()));
        }
        let full = if branch.starts_with("refs/heads/") {
            branch
        } else {
            format!("refs/heads/{branch}")
        };
        agree(&mut source.reference, full, "ref").map_err(fail)?;
    }
    Ok(source)
}

/// Sets `slot` to `value`, or fails when it already holds another one.
fn agree(slot: &mut Option<String>, value: String, what: &str) -> Result<(), String> {
    match slot {
        Some(old) if *old != value => Err(format!("{what} conflicts: {old:?} vs {value:?}")),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn query_has(query: &str, key: &str) -> bool {
    query
        .split('&')
        .any(|p| decode(p.split_once('=').map_or(p, |(k, _)| k)) == key)
}

/// `path.Join("/", subdir)` without the leading `/`, as BuildKit cleans a subdir.
fn clean_subdir(subdir: &str) -> String {
    crate::meta::clean_abs(subdir)
        .trim_start_matches('/')
        .to_owned()
}

/// A query word as Go's `url.ParseQuery` reads it: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a checkout gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The commit checked out (hex).
    pub commit: String,
    /// Its committer time, seconds since the epoch (BuildKit's SOURCE_DATE_EPOCH of a git
    /// context).
    pub time: i64,
}

/// Clones `source` (depth 1) into `dest`, which must not exist, and returns the commit
/// checked out, verified against `source.checksum`. Without `keep_git_dir` the `.git`
/// directory is removed, as BuildKit does. A repository with submodules is refused
/// unless `?submodules=false` says to build without them: kiln does not fetch them.
pub fn checkout(source: &GitSource, dest: &Path, keep_git_dir: bool) -> Result<Checkout, GitError> {
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
    let head = repo
        .head_commit()
        .map_err(|e| fail(format!("no commit checked out: {e}")))?;
    let commit = head.id.to_string();
    let time = head
        .time()
        .map_err(|e| fail(format!("the commit has no readable time: {e}")))?
        .seconds;
    drop(head);
    drop(repo);
    if let Some(expected) = &source.checksum
        && !commit.starts_with(expected.as_str())
    {
        return Err(fail(format!(
            "expected checksum to match {expected}, got {commit}; pin the commit the ref is at, or drop the checksum"
        )));
    }
    if !source.without_submodules && dest.join(".gitmodules").exists() {
        return Err(fail(
            "the repository has submodules, which kiln does not fetch yet; add ?submodules=false to the URL to build without them".to_owned(),
        ));
    }
    if source.mtime_commit {
        set_mtimes(dest, time)
            .map_err(|e| fail(format!("set the commit time on the files: {e}")))?;
    }
    if !keep_git_dir {
        let git_dir = dest.join(".git");
        std::fs::remove_dir_all(&git_dir)
            .map_err(|e| fail(format!("remove {}: {e}", git_dir.display())))?;
    }
    Ok(Checkout { commit, time })
}

/// Every file and directory under `dir` (links excepted: std cannot set their times) gets
/// modification time `seconds`, as BuildKit's `?mtime=commit`.
fn set_mtimes(dir: &Path, seconds: i64) -> std::io::Result<()> {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
    let times = std::fs::FileTimes::new()
        .set_modified(when)
        .set_accessed(when);
    let mut dirs = vec![dir.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
                all.push(entry.path());
            } else if kind.is_file() {
                all.push(entry.path());
            }
        }
    }
    // Children first, so setting a file does not move its directory's time again.
    all.push(dir.to_path_buf());
    for path in all.iter().rev() {
        std::fs::File::open(path)?.set_times(times)?;
    }
    Ok(())
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
        let s = parse("https://h/r.git#v1:sub/dir/").unwrap();
        assert_eq!(s.url, "https://h/r.git");
        assert_eq!(s.reference.as_deref(), Some("v1"));
        assert_eq!(s.subdir, "sub/dir");
        let s = parse("https://h/r.git").unwrap();
        assert_eq!((s.reference, s.subdir.as_str()), (None, ""));
        assert!(!is_git_url("/abs/repo.git") && !is_git_url("../up.git"));
    }

    /// The query form, with `dfgitutil/git_ref.go`'s rules and messages.
    #[test]
    fn query_form() {
        assert!(is_git_url("https://h/r.git?ref=v1"));
        assert!(!is_git_url("https://h/file.tar.gz?x=r.git"));
        let s = parse("https://h/r.git?tag=v1&subdir=/a/b/&checksum=ABC12&keep-git-dir").unwrap();
        assert_eq!(s.url, "https://h/r.git");
        assert_eq!(s.reference.as_deref(), Some("refs/tags/v1"));
        assert_eq!(s.subdir, "a/b");
        assert_eq!(s.checksum.as_deref(), Some("abc12"));
        assert_eq!(s.keep_git_dir, Some(true));
        let s = parse("https://h/r.git?branch=main&submodules=false&mtime=commit").unwrap();
        assert_eq!(s.reference.as_deref(), Some("refs/heads/main"));
        assert!(s.without_submodules && s.mtime_commit);
        let s = parse("https://h/r.git?ref=v1#v1:sub").unwrap();
        assert_eq!(
            (s.reference.as_deref(), s.subdir.as_str()),
            (Some("v1"), "sub")
        );
        assert_eq!(
            parse("https://h/r.git?ref=a%2Fb+c")
                .unwrap()
                .reference
                .as_deref(),
            Some("a/b c")
        );
        let err = |text: &str| parse(text).unwrap_err().reason;
        assert_eq!(
            err("https://h/r.git?ref=v1#v2"),
            "ref conflicts: \"v2\" vs \"v1\""
        );
        assert_eq!(
            err("https://h/r.git?subdir=a#:b"),
            "subdir conflicts: \"b\" vs \"a\""
        );
        assert_eq!(
            err("https://h/r.git?tag=v1&branch=main"),
            "branch conflicts with tag"
        );
        assert_eq!(
            err("https://h/r.git?ref=a&ref=b"),
            "query \"ref\" has multiple values"
        );
        assert_eq!(err("https://h/r.git?ref="), "query \"ref\" has no value");
        assert_eq!(err("https://h/r.git?depth=1"), "unexpected query \"depth\"");
        assert_eq!(
            err("https://h/r.git?keep-git-dir=maybe"),
            "invalid keep-git-dir value: \"maybe\""
        );
        assert!(err("https://h/r.git?checksum=xyz").contains("expected hex commit hash"));
        assert!(err("https://h/r.git?mtime=now").contains("must be \"checkout\" or \"commit\""));
        assert!(err("https://h/r.git?submodules=true").contains("?submodules=false"));
        assert!(err("https://h/r.git?fetch-by-commit").contains("not fetch by commit"));
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
