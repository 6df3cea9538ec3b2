//! Tags: `content/index.json`, the OCI layout's index, one manifest descriptor per name
//! with the name in the `org.opencontainers.image.ref.name` annotation — so that
//! `skopeo inspect oci:ROOT/content:app:latest` and `umoci` find images by the names
//! kiln shows.
//!
//! Names are stored as the user wrote them, with `:latest` added when there is no tag
//! (`app` -> `app:latest`, `127.0.0.1:5000/app` -> `127.0.0.1:5000/app:latest`).
//! Every change is a read-modify-write of the whole file under an exclusive lock on
//! `locks/index.lock`, written atomically, so two kiln processes never lose a tag.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{StoreError, io};
use crate::fsutil;

/// The annotation that carries a tag in an OCI layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI descriptor, as the index stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The referenced blob's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Annotations (the tag lives here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// The tag index of a store.
#[derive(Debug, Clone)]
pub struct TagIndex {
    path: PathBuf,
    lock: PathBuf,
    tmp: PathBuf,
}

/// Adds `:latest` when `name` has neither tag nor digest, and checks it is a valid name.
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    let bad = |reason: &str| StoreError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    let (repo, rest) = match name.split_once('@') {
        Some((repo, digest)) => {
            Digest::parse(digest).ok_or_else(|| bad("the part after @ is not a sha256 digest"))?;
            (repo, None)
        }
        None => {
            let last_slash = name.rfind('/').map_or(0, |i| i + 1);
            match name[last_slash..].rfind(':') {
                Some(colon) => (
                    &name[..last_slash + colon],
                    Some(&name[last_slash + colon + 1..]),
                ),
                None => (name, None),
            }
        }
    };
    let parts: Vec<&str> = repo.split('/').collect();
    // The first part is a registry host only if more parts follow and it looks like one.
    let has_host = parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    let repo_ok = !repo.is_empty()
        && parts.iter().enumerate().all(|(i, part)| {
            if i == 0 && has_host {
                is_domain(part)
            } else {
                is_path_component(part)
            }
        });
    if !repo_ok {
        return Err(bad(
            "each part between '/' is lowercase letters and digits, joined by '.', '_', '__' or '-' (e.g. app or registry:5000/team/app); '..' and names starting with '.' are not names",
        ));
    }
    if let Some(tag) = rest {
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !tag_ok {
            return Err(bad("a tag is up to 128 letters, digits, '.', '_' and '-'"));
        }
        return Ok(name.to_owned());
    }
    if name.contains('@') {
        return Ok(name.to_owned());
    }
    Ok(format!("{name}:latest"))
}

/// distribution/reference's path component: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // A run of [a-z0-9]+.
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator: '.', '_', '__' or '-'+, then another run.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// distribution/reference's domain: dot-separated `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
/// labels, then an optional `:PORT` of digits.
fn is_domain(part: &str) -> bool {
    let (host, port) = match part.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (part, None),
    };
    let label_ok = |label: &str| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

impl TagIndex {
    pub(crate) fn new(
        content: &std::path::Path,
        locks: &std::path::Path,
        tmp: &std::path::Path,
    ) -> TagIndex {
        TagIndex {
            path: content.join("index.json"),
            lock: locks.join("index.lock"),
            tmp: tmp.to_owned(),
        }
    }

    fn read(&self) -> Result<IndexFile, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Format {
                path: self.path.clone(),
                reason: format!("not an OCI index: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IndexFile {
                schema_version: 2,
                media_type: Some(oci_index_media_type()),
                manifests: Vec::new(),
            }),
            Err(source) => Err(StoreError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Runs `change` on the index under the lock and writes the result atomically.
    fn update<T>(&self, change: impl FnOnce(&mut Vec<Descriptor>) -> T) -> Result<T, StoreError> {
        if let Some(dir) = self.lock.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io(&self.lock))?;
        lock.lock().map_err(io(&self.lock))?;
        let mut index = self.read()?;
        let out = change(&mut index.manifests);
        index.media_type = Some(oci_index_media_type());
        let bytes = serde_json::to_vec(&index).map_err(|e| StoreError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(&self.path, &self.tmp, &bytes).map_err(io(&self.path))?;
        // The lock is released when `lock` is dropped, after the rename is durable.
        drop(lock);
        Ok(out)
    }

    /// Points `name` at the manifest `descriptor` (replacing what it named before).
    pub fn tag(&self, name: &str, mut descriptor: Descriptor) -> Result<(), StoreError> {
        let name = normalize_name(name)?;
        descriptor
            .annotations
            .insert(REF_NAME.to_owned(), name.clone());
        self.update(|manifests| {
            manifests.retain(|d| d.annotations.get(REF_NAME) != Some(&name));
            manifests.push(descriptor);
        })
    }

    /// Removes `name`; returns whether it was there.
    pub fn untag(&self, name: &str) -> Result<bool, StoreError> {
        let name = normalize_name(name)?;
        self.update(|manifests| {
            let before = manifests.len();
            manifests.retain(|d| d.annotations.get(REF_NAME) != Some(&name));
            manifests.len() != before
        })
    }

    /// Every tagged manifest, as (name, descriptor).
    pub fn list(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        Ok(self
            .read()?
            .manifests
            .into_iter()
            .filter_map(|d| d.annotations.get(REF_NAME).cloned().map(|n| (n, d)))
            .collect())
    }

    /// The manifest a name points at.
    pub fn get(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let name = normalize_name(name)?;
        Ok(self
            .list()?
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d))
    }
}

fn oci_index_media_type() -> String {
    "application/vnd.oci.image.index.v1+json".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, ()>) {
        assert_eq!(
            normalize_name(input).map_err(|_| ()),
            expected.map(str::to_owned),
            "{input}"
        );
    }

    #[test]
    fn names() {
        check("app", Ok("app:latest"));
        check("app:1.0", Ok("app:1.0"));
        check(
            "127.0.0.1:5000/team/app",
            Ok("127.0.0.1:5000/team/app:latest"),
        );
        check("localhost:5000/app:dev", Ok("localhost:5000/app:dev"));
        check(
            &format!("app@sha256:{}", "a".repeat(64)),
            Ok(&format!("app@sha256:{}", "a".repeat(64))),
        );
        check("App", Err(()));
        check("app:", Err(()));
        check("app:-x", Err(()));
        check("", Err(()));
        check("a//b", Err(()));
    }

    #[test]
    fn names_follow_the_distribution_reference_grammar() {
        // Issue 17, item 14: these were accepted as tags.
        for bad in [
            "../../x",
            "..",
            ".hidden",
            "x:../../y",
            "a/../b",
            "a/.b",
            "a.",
            "-a",
            "a-",
            "a___b",
            "reg.io:/a",
            "reg.io:5x/a",
            "-reg.io/a",
        ] {
            check(bad, Err(()));
        }
        for good in [
            "a.b",
            "a_b",
            "a__b",
            "a--b",
            "a-b/c.d_e",
            "Reg.IO:5000/a",
            "my-reg/a",
        ] {
            assert!(normalize_name(good).is_ok(), "{good}");
        }
        let err = normalize_name("../../x").expect_err("path");
        assert!(
            err.to_string().contains("'..' and names starting with '.'"),
            "{err}"
        );
    }

    #[test]
    fn tag_untag_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = TagIndex::new(
            &dir.path().join("content"),
            &dir.path().join("locks"),
            &dir.path().join("tmp"),
        );
        fs::create_dir_all(dir.path().join("content")).expect("mkdir");
        let d = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::of(b"m"),
            size: 1,
            annotations: BTreeMap::new(),
        };
        index.tag("app", d.clone()).expect("tag");
        index.tag("app:2", d.clone()).expect("tag");
        index.tag("app", d.clone()).expect("retag");
        let names: Vec<String> = index
            .list()
            .expect("list")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["app:2", "app:latest"]);
        assert!(index.get("app").expect("get").is_some());
        assert!(index.untag("app:latest").expect("untag"));
        assert!(!index.untag("app:latest").expect("untag again"));
        assert_eq!(index.list().expect("list").len(), 1);
    }
}
