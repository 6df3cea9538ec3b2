//! Build contexts that are not a directory on disk: a tar or a lone Dockerfile on stdin,
//! a git repository, and an OCI layout named by `--build-context NAME=oci-layout://`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kiln_snapshotter::Store;

/// A context made in the store's temp dir (from stdin, or a git checkout), removed when
/// the build ends.
pub(crate) struct TempContext {
    /// What to remove at the end.
    pub(crate) dir: PathBuf,
    /// The context directory (the checkout's subdirectory, or `dir`).
    pub(crate) context: PathBuf,
    /// The Dockerfile, when stdin was one rather than a tar.
    pub(crate) dockerfile: Option<String>,
}

impl TempContext {
    /// A git repository (`URL#REF:SUBDIR`) checked out over HTTP(S).
    pub(crate) fn git(store: &Store, url: &str) -> anyhow::Result<TempContext> {
        let base = store.tmp_dir();
        std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        let checkout = base.join(format!("git-context-{}", std::process::id()));
        let source = kiln_solver::ops::git::parse(url);
        if let Err(e) = kiln_solver::ops::git::checkout(&source, &checkout, false) {
            let _ = std::fs::remove_dir_all(&checkout);
            return Err(e.into());
        }
        let Some(dir) = kiln_solver::ops::git::subdir_in(&checkout, &source.subdir) else {
            let _ = std::fs::remove_dir_all(&checkout);
            bail!(
                "{url}: the repository has no directory {} (links are not followed)",
                source.subdir
            );
        };
        Ok(TempContext {
            dir: checkout,
            context: dir,
            dockerfile: None,
        })
    }

    pub(crate) fn read(store: &Store, may_be_dockerfile: bool) -> anyhow::Result<TempContext> {
        let base = store.tmp_dir();
        std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
        let name = format!("stdin-context-{}", std::process::id());
        let dir = base.join(&name);
        let file = base.join(format!("{name}.in"));
        let mut out =
            std::fs::File::create(&file).with_context(|| format!("create {}", file.display()))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut out)
            .context("read the context from stdin")?;
        drop(out);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let context = TempContext {
            dir: dir.clone(),
            context: dir.clone(),
            dockerfile: None,
        };
        if kiln_snapshotter::layer_in::is_tar_archive(&file) {
            let input = std::fs::File::open(&file)?;
            kiln_snapshotter::layer_in::extract_archive(input, &dir, None)
                .context("extract the context tar from stdin")?;
            let _ = std::fs::remove_file(&file);
            return Ok(context);
        }
        if !may_be_dockerfile {
            bail!("stdin is not a tar archive; with -f, the context on stdin must be a tar");
        }
        let text = std::fs::read_to_string(&file)
            .context("stdin is neither a tar archive nor a UTF-8 Dockerfile")?;
        let _ = std::fs::remove_file(&file);
        let mut context = context;
        context.dockerfile = Some(text);
        Ok(context)
    }
}

impl Drop for TempContext {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies the image an OCI layout names (`PATH`, `PATH:TAG` or `PATH@DIGEST`; the only
/// image when none is named) into the store, and returns the name it is tagged with.
pub(crate) fn import_oci_layout(store: &Store, name: &str, layout: &str) -> anyhow::Result<String> {
    let (path, wanted) = match (layout.rsplit_once('@'), layout.rsplit_once(':')) {
        (Some((path, digest)), _) => (path, Some(digest.to_owned())),
        (None, Some((path, tag))) if !tag.contains('/') => (path, Some(tag.to_owned())),
        _ => (layout, None),
    };
    let dir = Path::new(path);
    let index_path = dir.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&index_path)
            .with_context(|| format!("--build-context {name}: read {}", index_path.display()))?,
    )
    .with_context(|| format!("{} is not an OCI index", index_path.display()))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = manifests
        .iter()
        .find(|m| match &wanted {
            Some(w) if w.starts_with("sha256:") => m["digest"] == w.as_str(),
            Some(w) => m["annotations"]["org.opencontainers.image.ref.name"] == w.as_str(),
            None => true,
        })
        .with_context(|| {
            format!(
                "--build-context {name}: {layout} names no image in {}",
                index_path.display()
            )
        })?;
    let manifest_digest = chosen["digest"].as_str().unwrap_or_default().to_owned();
    let blob = |digest: &str| dir.join("blobs").join(digest.replace(':', "/"));
    let copy_blob = |digest: &str| -> anyhow::Result<()> {
        let parsed = kiln_snapshotter::Digest::parse(digest)
            .with_context(|| format!("bad digest {digest} in {layout}"))?;
        if store.content().exists(&parsed) {
            return Ok(());
        }
        let mut file = std::fs::File::open(blob(digest))
            .with_context(|| format!("{layout}: blob {digest} is missing"))?;
        let mut writer = store.content().writer()?;
        std::io::copy(&mut file, &mut writer)?;
        writer.commit(Some(&parsed))?;
        Ok(())
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest))?)
            .with_context(|| format!("{layout}: manifest {manifest_digest} is not JSON"))?;
    copy_blob(&manifest_digest)?;
    copy_blob(manifest["config"]["digest"].as_str().unwrap_or_default())?;
    for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
        copy_blob(layer["digest"].as_str().unwrap_or_default())?;
    }
    let tag = format!("kiln-context/{}:latest", name.to_lowercase());
    let descriptor = kiln_snapshotter::Descriptor {
        media_type: chosen["mediaType"]
            .as_str()
            .unwrap_or(kiln_exporter::image::OCI_MANIFEST)
            .to_owned(),
        digest: kiln_snapshotter::Digest::parse(&manifest_digest)
            .with_context(|| format!("bad digest {manifest_digest}"))?,
        size: chosen["size"].as_u64().unwrap_or(0),
        annotations: BTreeMap::new(),
    };
    store.tags().tag(&tag, descriptor)?;
    Ok(tag)
}
