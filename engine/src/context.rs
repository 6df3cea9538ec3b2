//! Build contexts that are not a directory on the engine's disk: a tar stream (or a lone
//! Dockerfile) from a client, a git repository, and an OCI layout named by
//! `--build-context NAME=oci-layout://`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_snapshotter::Store;

use crate::error::EngineError;

/// A context made in the store's owned temp space ([`Store::temp_dir`]): removed when
/// dropped (after the build), and swept if its process dies first.
#[derive(Debug)]
pub struct TempContext {
    /// Removed (with everything in it) when the context is dropped.
    _dir: kiln_snapshotter::TempDir,
    /// For a kept context: its lock, held until the build ends.
    _kept: Option<std::fs::File>,
    /// The context directory (the checkout's subdirectory, or `dir`).
    context: PathBuf,
    /// The Dockerfile, when the stream was one rather than a tar.
    dockerfile: Option<String>,
    /// For a git context: the commit's time (`SOURCE_DATE_EPOCH=context`).
    commit_time: Option<i64>,
}

impl TempContext {
    /// The context directory.
    pub fn path(&self) -> &Path {
        &self.context
    }

    /// For a git context, its commit's time (seconds since the epoch).
    pub fn commit_time(&self) -> Option<i64> {
        self.commit_time
    }

    /// The Dockerfile text, when the stream was a lone Dockerfile.
    pub fn dockerfile(&self) -> Option<&str> {
        self.dockerfile.as_deref()
    }

    /// A context from a stream (docker's `POST /build` body, `kiln build -`): a tar
    /// archive (plain or compressed) is unpacked with the refusals of a layer (no `..`,
    /// no absolute names, no links out); anything else is taken as a lone Dockerfile when
    /// `may_be_dockerfile`. More than `max_bytes` read is refused.
    pub fn from_stream(
        store: &Store,
        input: impl Read,
        max_bytes: u64,
        may_be_dockerfile: bool,
    ) -> Result<TempContext, EngineError> {
        let (dir, raw) = receive(store, input, max_bytes)?;
        TempContext::unpack(dir, raw, may_be_dockerfile)
    }

    /// A context a client sends again and again (kiln's own API, `context_key`): kept
    /// in the store between builds under `key` (64 hex digits, the client's name for it)
    /// and synced to the tar stream, so only files that changed are written — and the
    /// content memo still knows the others. When another build holds that key's
    /// directory, this build gets a fresh one instead.
    pub fn kept(
        store: &Store,
        key: &str,
        input: impl Read,
        max_bytes: u64,
    ) -> Result<TempContext, EngineError> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EngineError::invalid(
                format!("context key {key:?}: not 64 hex digits"),
                "send a blake3 or sha256 hex digest naming the client's context".to_owned(),
            ));
        }
        let (dir, raw) = receive(store, input, max_bytes)?;
        if !kiln_snapshotter::layer_in::is_tar_archive(&raw) {
            return Err(EngineError::invalid(
                "the build context is not a tar archive",
                "send a tar of the context directory".to_owned(),
            ));
        }
        // A compressed stream could expand past every bound before the extraction's own
        // disk budget is asked: only a plain tar (at most `max_bytes`) is synced.
        if !is_plain(&raw)? {
            return TempContext::unpack(dir, raw, false);
        }
        // Root's alone, like the temp dirs: a context may hold setuid files and devices
        // that must not be reachable by other users of this machine.
        let kept = store.kept_contexts_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&kept)
            .map_err(|e| EngineError::io(&kept, e))?;
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| EngineError::io(&kept, e))?;
        let lock_path = kept.join(format!("{key}.lock"));
        let lock = std::fs::File::create(&lock_path).map_err(|e| EngineError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return TempContext::unpack(dir, raw, false);
        }
        let context = kept.join(key);
        let scratch = dir.path().join("changed.tar");
        let synced = kiln_snapshotter::layer_in::sync_archive(&raw, &context, &scratch);
        let _ = std::fs::remove_file(&scratch);
        if let Err(e) = synced {
            // Half synced is no state to keep: the next build starts from nothing.
            let _ = std::fs::remove_dir_all(&context);
            return Err(match e {
                kiln_snapshotter::StoreError::UnsafeEntry { .. }
                | kiln_snapshotter::StoreError::Format { .. } => EngineError::invalid(
                    format!("the build context is not a usable tar archive: {e}"),
                    "send a tar of the context directory, with paths relative to it".to_owned(),
                ),
                other => EngineError::Store(other),
            });
        }
        let _ = std::fs::remove_file(&raw);
        Ok(TempContext {
            _dir: dir,
            _kept: Some(lock),
            context,
            dockerfile: None,
            commit_time: None,
        })
    }

    /// Unpacks a received stream into a context directory beside it.
    fn unpack(
        dir: kiln_snapshotter::TempDir,
        raw: PathBuf,
        may_be_dockerfile: bool,
    ) -> Result<TempContext, EngineError> {
        let context = dir.path().join("context");
        std::fs::create_dir(&context).map_err(|e| EngineError::io(&context, e))?;
        if kiln_snapshotter::layer_in::is_tar_archive(&raw) {
            let input = std::fs::File::open(&raw).map_err(|e| EngineError::io(&raw, e))?;
            kiln_snapshotter::layer_in::extract_archive(input, &context, None).map_err(|e| {
                EngineError::invalid(
                    format!("the build context is not a usable tar archive: {e}"),
                    "send a tar of the context directory, with paths relative to it".to_owned(),
                )
            })?;
            let _ = std::fs::remove_file(&raw);
            return Ok(TempContext {
                _dir: dir,
                _kept: None,
                context,
                dockerfile: None,
                commit_time: None,
            });
        }
        if !may_be_dockerfile {
            return Err(EngineError::invalid(
                "the build context is not a tar archive",
                "send a tar of the context directory (with -f, the context on stdin must be a tar)"
                    .to_owned(),
            ));
        }
        let text = std::fs::read(&raw).map_err(|e| EngineError::io(&raw, e))?;
        let text = String::from_utf8(text).map_err(|_| {
            EngineError::invalid(
                "the build context is neither a tar archive nor a UTF-8 Dockerfile",
                "send a tar of the context directory, or a Dockerfile".to_owned(),
            )
        })?;
        let _ = std::fs::remove_file(&raw);
        Ok(TempContext {
            _dir: dir,
            _kept: None,
            context,
            dockerfile: Some(text),
            commit_time: None,
        })
    }

    /// A git repository (`URL[?QUERY][#REF:SUBDIR]`) checked out over HTTP(S).
    pub(crate) fn git(store: &Store, url: &str) -> Result<TempContext, EngineError> {
        let dir = store.temp_dir()?;
        let checkout = dir.path().join("checkout");
        let source = kiln_solver::ops::git::parse(url).map_err(|e| {
            EngineError::invalid(
                format!("the build context {e}"),
                "write URL[?ref=REF&subdir=DIR] or URL#REF:DIR".to_owned(),
            )
        })?;
        let keep_git_dir = source.keep_git_dir.unwrap_or(false);
        let done =
            kiln_solver::ops::git::checkout(&source, &checkout, keep_git_dir).map_err(|e| {
                EngineError::invalid(
                    format!("the build context {url}: {e}"),
                    "check the URL and the ref; kiln clones over HTTP(S)".to_owned(),
                )
            })?;
        let Some(context) = kiln_solver::ops::git::subdir_in(&checkout, &source.subdir) else {
            return Err(EngineError::invalid(
                format!(
                    "{url}: the repository has no directory {} (links are not followed)",
                    source.subdir
                ),
                "name a directory of the repository after the colon".to_owned(),
            ));
        };
        Ok(TempContext {
            _dir: dir,
            _kept: None,
            context,
            dockerfile: None,
            commit_time: Some(done.time),
        })
    }
}

/// Whether a received stream is a tar as it is (not gzip, zstd, bzip2 or xz).
fn is_plain(raw: &Path) -> Result<bool, EngineError> {
    let mut magic = [0u8; 6];
    let mut file = std::fs::File::open(raw).map_err(|e| EngineError::io(raw, e))?;
    let n = file.read(&mut magic).map_err(|e| EngineError::io(raw, e))?;
    let magic = &magic[..n];
    Ok(![
        &[0x1f, 0x8b][..],
        &[0x28, 0xb5, 0x2f, 0xfd],
        b"BZh",
        &[0xfd, b'7', b'z', b'X', b'Z'],
    ]
    .iter()
    .any(|m| magic.starts_with(m)))
}

/// Copies a client's stream (at most `max_bytes`) into a file of a fresh store temp dir.
fn receive(
    store: &Store,
    input: impl Read,
    max_bytes: u64,
) -> Result<(kiln_snapshotter::TempDir, PathBuf), EngineError> {
    let dir = store.temp_dir()?;
    let raw = dir.path().join("stream");
    let file = std::fs::File::create(&raw).map_err(|e| EngineError::io(&raw, e))?;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut limited = input.take(max_bytes + 1);
    let copied = std::io::copy(&mut limited, &mut file).map_err(|e| EngineError::Io {
        path: "the context stream".into(),
        source: e,
    })?;
    if copied > max_bytes {
        return Err(EngineError::invalid(
            format!("the build context is larger than the limit of {max_bytes} bytes"),
            "leave big files out with .dockerignore, or raise the limit (kiln serve --max-context-size)".to_owned(),
        ));
    }
    file.flush().map_err(|e| EngineError::io(&raw, e))?;
    Ok((dir, raw))
}

/// Copies the image an OCI layout names (`PATH`, `PATH:TAG` or `PATH@DIGEST`; the only
/// image when none is named) into the store, and returns the name it is tagged with.
pub(crate) fn import_oci_layout(
    store: &Store,
    name: &str,
    layout: &str,
) -> Result<String, EngineError> {
    let (path, wanted) = match (layout.rsplit_once('@'), layout.rsplit_once(':')) {
        (Some((path, digest)), _) => (path, Some(digest.to_owned())),
        (None, Some((path, tag))) if !tag.contains('/') => (path, Some(tag.to_owned())),
        _ => (layout, None),
    };
    let bad = |message: String| {
        EngineError::invalid(
            format!("--build-context {name}={layout}: {message}"),
            "give an OCI layout directory (index.json, blobs/), optionally :TAG or @DIGEST"
                .to_owned(),
        )
    };
    let dir = Path::new(path);
    let index_path = dir.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(|e| EngineError::io(&index_path, e))?;
    let index: serde_json::Value = serde_json::from_slice(&index_bytes)
        .map_err(|_| bad(format!("{} is not an OCI index", index_path.display())))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = manifests
        .iter()
        .find(|m| match &wanted {
            Some(w) if w.starts_with("sha256:") => m["digest"] == w.as_str(),
            Some(w) => m["annotations"]["org.opencontainers.image.ref.name"] == w.as_str(),
            None => true,
        })
        .ok_or_else(|| bad(format!("names no image in {}", index_path.display())))?;
    let manifest_digest = chosen["digest"].as_str().unwrap_or_default().to_owned();
    let blob = |digest: &str| dir.join("blobs").join(digest.replace(':', "/"));
    let copy_blob = |digest: &str| -> Result<(), EngineError> {
        let parsed = kiln_snapshotter::Digest::parse(digest)
            .ok_or_else(|| bad(format!("bad digest {digest}")))?;
        if store.content().exists(&parsed) {
            return Ok(());
        }
        let path = blob(digest);
        let mut file = std::fs::File::open(&path).map_err(|e| EngineError::io(&path, e))?;
        let mut writer = store.content().writer()?;
        std::io::copy(&mut file, &mut writer).map_err(|e| EngineError::io(&path, e))?;
        // commit verifies the digest: a damaged layout blob never enters the store.
        writer.commit(Some(&parsed))?;
        Ok(())
    };
    let manifest_path = blob(&manifest_digest);
    let manifest_bytes =
        std::fs::read(&manifest_path).map_err(|e| EngineError::io(&manifest_path, e))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes)
        .map_err(|_| bad(format!("manifest {manifest_digest} is not JSON")))?;
    copy_blob(&manifest_digest)?;
    copy_blob(manifest["config"]["digest"].as_str().unwrap_or_default())?;
    for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
        copy_blob(layer["digest"].as_str().unwrap_or_default())?;
    }
    let tag = format!("kiln-context/{}:latest", name.to_lowercase());
    let descriptor = kiln_snapshotter::Descriptor {
        media_type: chosen["mediaType"]
            .as_str()
            .unwrap_or(kiln_image::image::OCI_MANIFEST)
            .to_owned(),
        digest: kiln_snapshotter::Digest::parse(&manifest_digest)
            .ok_or_else(|| bad(format!("bad digest {manifest_digest}")))?,
        size: chosen["size"].as_u64().unwrap_or(0),
        annotations: BTreeMap::new(),
    };
    store.tags().tag(&tag, descriptor)?;
    Ok(tag)
}
