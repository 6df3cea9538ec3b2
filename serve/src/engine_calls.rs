//! Every call the server makes into the build engine, in one place: the handlers see
//! only [`Backend`] and the plain types here, so the engine's API can move without the
//! HTTP code moving with it.
//!
//! INTERIM: `kiln-engine` has not landed on main yet. The store operations below use the
//! libraries under it directly (the same calls the engine makes), and
//! [`Backend::build`] answers that builds are not wired. When the engine lands this file
//! becomes thin calls into it (branch h-serve-engine has that version).
#![allow(dead_code)] // INTERIM: the engine's version uses every variant and field.

use std::io::{Read, Write};
use std::path::PathBuf;

use kiln_exporter::image::{self, StoredImage};
use kiln_exporter::registry::{ImageRef, Platform, Registry, RegistryConfig};
use kiln_snapshotter::layer_out::Compression;
use kiln_snapshotter::{Digest, Store, StoreError};
use kiln_solver::cancel::Cancel;
use kiln_solver::progress::Progress;

use crate::build_params::BuildParams;
use crate::credentials::Given;

fn no_credentials_yet(credentials: &Given) -> Result<(), CallError> {
    if credentials.is_empty() {
        Ok(())
    } else {
        Err(CallError::Invalid(
            "registry credentials sent with the request need kiln-engine, which has not landed yet"
                .to_owned(),
        ))
    }
}

/// The engine as the server uses it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Backend {
    store: Store,
    registry: RegistryConfig,
}

/// Why a call failed, sorted the way an HTTP answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No such image (404).
    NotFound(String),
    /// The request is wrong (400); the message says what to change.
    Invalid(String),
    /// The store is busy (409).
    Busy(String),
    /// The engine or a peer failed (500).
    Failed(String),
}

impl CallError {
    pub(crate) fn message(&self) -> &str {
        match self {
            CallError::NotFound(m)
            | CallError::Invalid(m)
            | CallError::Busy(m)
            | CallError::Failed(m) => m,
        }
    }
}

impl From<StoreError> for CallError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ImageNotFound { name } => {
                CallError::NotFound(format!("No such image: {name}"))
            }
            StoreError::BadName { .. } => CallError::Invalid(e.to_string()),
            other => CallError::Failed(other.to_string()),
        }
    }
}

/// One tag of the store.
#[derive(Debug, Clone)]
pub(crate) struct ImageSummary {
    pub(crate) name: String,
    pub(crate) id: Digest,
    pub(crate) manifest_digest: Digest,
    pub(crate) created: Option<String>,
    pub(crate) size: u64,
}

/// An image and every name it has.
#[derive(Debug, Clone)]
pub(crate) struct FoundImage {
    pub(crate) names: Vec<String>,
    pub(crate) image: StoredImage,
}

/// Bytes by kind of store content.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DiskUsage {
    pub(crate) blobs: u64,
    pub(crate) snapshots: u64,
    pub(crate) cache_index: u64,
    pub(crate) cache_mounts: u64,
}

/// A context unpacked for one build; removed when dropped.
#[derive(Debug)]
pub(crate) struct TempContext {
    dir: PathBuf,
}

impl Drop for TempContext {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a build's context comes from.
#[derive(Debug)]
pub(crate) enum BuildContext {
    /// Unpacked from the request body.
    Temp(TempContext),
    /// `remote=`: a git repository.
    Git(String),
}

/// A finished build.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) id: Digest,
    pub(crate) tags: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// A build that did not finish.
#[derive(Debug, Clone)]
pub(crate) struct BuildFailed {
    /// The whole text a user sees (Dockerfile excerpt, hint, output tail).
    pub(crate) rendered: String,
}

impl Backend {
    /// A backend over `store`, with the registry settings the cli read.
    pub fn new(store: Store, registry: RegistryConfig) -> Backend {
        Backend { store, registry }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.store.root().to_owned()
    }

    pub(crate) fn snapshotter_name(&self) -> String {
        format!("{:?}", self.store.snapshots().kind()).to_lowercase()
    }

    pub(crate) fn images(&self) -> Result<Vec<ImageSummary>, CallError> {
        let mut tags = self.store.tags().list()?;
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, descriptor) in tags {
            let image = image::read_image(&self.store, &descriptor)?;
            out.push(ImageSummary {
                name,
                id: image.id.clone(),
                manifest_digest: descriptor.digest.clone(),
                created: image.config.created.clone(),
                size: image.manifest.layers.iter().map(|l| l.size).sum(),
            });
        }
        Ok(out)
    }

    pub(crate) fn find(&self, reference: &str) -> Result<FoundImage, CallError> {
        let (names, image) = image::find_image(&self.store, reference)?;
        Ok(FoundImage { names, image })
    }

    pub(crate) fn tag(&self, source: &str, target: &str) -> Result<String, CallError> {
        let found = self.find(source)?;
        let name = kiln_snapshotter::normalize_name(target)?;
        self.store
            .tags()
            .tag(&name, found.image.manifest_descriptor)?;
        Ok(name)
    }

    pub(crate) fn untag(&self, name: &str) -> Result<String, CallError> {
        let normalized = kiln_snapshotter::normalize_name(name)?;
        if self.store.tags().untag(&normalized)? {
            Ok(normalized)
        } else {
            Err(CallError::NotFound(format!("No such image: {name}")))
        }
    }

    /// Pushes `name` to its registry; the manifest digest the registry stored.
    pub(crate) async fn push(&self, name: &str, credentials: Given) -> Result<String, CallError> {
        no_credentials_yet(&credentials)?;
        // The transfer's future is not `Send` (a higher-ranked lifetime in the
        // exporter's upload stream), so it runs on a blocking thread of its own.
        let backend = self.clone();
        let name = name.to_owned();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || handle.block_on(backend.push_here(&name)))
            .await
            .map_err(|e| CallError::Failed(format!("the push task failed: {e}")))?
    }

    async fn push_here(&self, name: &str) -> Result<String, CallError> {
        let found = self.find(name)?;
        let target = ImageRef::parse(name)
            .map_err(|e| CallError::Invalid(format!("{name} is not a registry name: {e}")))?;
        let registry =
            Registry::new(self.registry.clone()).map_err(|e| CallError::Failed(e.to_string()))?;
        let report = kiln_exporter::transfer::push(
            &self.store,
            &registry,
            &found.image,
            std::slice::from_ref(&target),
            Compression::default_gzip(),
        )
        .await
        .map_err(|e| CallError::Failed(e.to_string()))?;
        Ok(report.manifest_digest.to_string())
    }

    pub(crate) async fn pull(
        &self,
        reference: &str,
        platform: &Platform,
        credentials: Given,
    ) -> Result<StoredImage, CallError> {
        no_credentials_yet(&credentials)?;
        let parsed = ImageRef::parse(reference).map_err(|e| {
            CallError::Invalid(format!("{reference} is not an image reference: {e}"))
        })?;
        let registry =
            Registry::new(self.registry.clone()).map_err(|e| CallError::Failed(e.to_string()))?;
        kiln_exporter::transfer::pull(&self.store, &registry, &parsed, platform, reference)
            .await
            .map_err(|e| CallError::Failed(e.to_string()))
    }

    pub(crate) fn prune(&self, _all: bool) -> Result<u64, CallError> {
        Err(CallError::Failed(
            "build cache pruning through kiln serve needs kiln-engine, which has not landed yet"
                .to_owned(),
        ))
    }

    pub(crate) fn disk_usage(&self) -> DiskUsage {
        DiskUsage::default()
    }

    pub(crate) fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), CallError> {
        let [name] = names else {
            return Err(CallError::Invalid(format!(
                "{} images asked for; kiln saves one image per archive",
                names.len()
            )));
        };
        let found = self.find(name)?;
        let options = kiln_exporter::archive::ArchiveOptions {
            oci_mediatypes: false,
            names: vec![name.clone()],
            ..kiln_exporter::archive::ArchiveOptions::default()
        };
        kiln_exporter::archive::write_docker_archive(&self.store, &found.image, &options, out)
            .map_err(|e| CallError::Failed(e.to_string()))?;
        Ok(())
    }

    pub(crate) fn load(&self, input: &mut dyn Read) -> Result<Vec<String>, CallError> {
        crate::load::load(&self.store, input)
    }

    pub(crate) fn context_from_stream(
        &self,
        input: impl Read + 'static,
        max_bytes: u64,
    ) -> Result<TempContext, CallError> {
        let base = self.store.tmp_dir();
        std::fs::create_dir_all(&base).map_err(|e| CallError::Failed(e.to_string()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("serve-context-{nanos:x}"));
        std::fs::create_dir(&dir).map_err(|e| CallError::Failed(e.to_string()))?;
        let context = TempContext { dir: dir.clone() };
        kiln_snapshotter::layer_in::extract_archive(input.take(max_bytes + 1), &dir, None)
            .map_err(|e| {
                CallError::Invalid(format!(
                    "the build context is not a usable tar archive: {e}"
                ))
            })?;
        Ok(context)
    }

    pub(crate) async fn build(
        &self,
        _params: &BuildParams,
        _context: BuildContext,
        _credentials: Given,
        _progress: Progress,
        _cancel: Cancel,
    ) -> Result<Built, BuildFailed> {
        Err(BuildFailed {
            rendered:
                "error: builds through kiln serve need kiln-engine, which has not landed yet\n"
                    .to_owned(),
        })
    }
}
