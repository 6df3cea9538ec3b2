//! The store's images as a front end sees them: list, inspect, tag, remove, import,
//! push, pull, prune and disk usage.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_exporter::registry::{BlobReport, ImageRef, Platform, Registry};
use kiln_image::config::{History, ImageConfig, RootFs, host_architecture, rfc3339};
use kiln_image::image::{self, StoredImage};
use kiln_snapshotter::layer_out::{Compression, DiffSource, LayerInfo, LayerOptions, write_layer};
use kiln_snapshotter::{Digest, StoreError, layer_in};

use crate::error::EngineError;
use crate::{Engine, RegistryAccess};

/// One tag of the store.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    /// The normalised name (`app:latest`).
    pub name: String,
    /// The image id (config digest).
    pub id: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The config's `created`.
    pub created: Option<String>,
    /// The layers' size in bytes.
    pub size: u64,
}

/// An image found by name or id, with every name it has.
#[derive(Debug, Clone)]
pub struct FoundImage {
    /// Its names in the store.
    pub names: Vec<String>,
    /// The image.
    pub image: StoredImage,
}

/// What `kiln import` reads.
#[derive(Debug)]
pub enum ImportSource<R> {
    /// A directory: its tree becomes the layer.
    Dir(PathBuf),
    /// A tar archive (plain, gzip or zstd), with the name messages and history show.
    Tar(R, String),
}

/// `kiln import`'s settings.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The image's name.
    pub name: String,
    /// The config, already shaped by `--change`s (architecture and os filled in if empty).
    pub config: ImageConfig,
    /// The history comment.
    pub message: Option<String>,
    /// `SOURCE_DATE_EPOCH`: `created` and layer mtimes.
    pub source_date_epoch: Option<i64>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneReport {
    /// Bytes freed.
    pub reclaimed: u64,
}

/// Bytes by kind of store content.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskUsage {
    /// Blobs (layers, configs, manifests).
    pub blobs: u64,
    /// Snapshots (diff dirs).
    pub snapshots: u64,
    /// The cache index.
    pub cache_index: u64,
    /// Cache mounts.
    pub cache_mounts: u64,
    /// Temp space: of running builds, and what dead ones left for the next sweep.
    pub temp: u64,
}

impl DiskUsage {
    /// Everything.
    pub fn total(&self) -> u64 {
        self.blobs + self.snapshots + self.cache_index + self.cache_mounts + self.temp
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The registry's manifest digest.
    pub manifest_digest: String,
    /// Per blob, what happened.
    pub blobs: Vec<BlobReport>,
    /// How many blobs were uploaded.
    pub uploaded: usize,
}

/// The layers' size in bytes.
pub fn image_size(image: &StoredImage) -> u64 {
    image.manifest.layers.iter().map(|l| l.size).sum()
}

impl Engine {
    /// Every tag of the store, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        let store = self.store();
        let mut tags = store.tags().list()?;
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, descriptor) in tags {
            let image = image::read_image(store, &descriptor)?;
            out.push(ImageSummary {
                name,
                id: image.id.clone(),
                manifest_digest: descriptor.digest.clone(),
                created: image.config.created.clone(),
                size: image_size(&image),
            });
        }
        Ok(out)
    }

    /// An image by name, id prefix or manifest digest.
    pub fn find(&self, reference: &str) -> Result<FoundImage, EngineError> {
        match image::find_image(self.store(), reference) {
            Ok((names, image)) => Ok(FoundImage { names, image }),
            Err(StoreError::ImageNotFound { .. }) => Err(EngineError::NoSuchImage {
                name: reference.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the image `source` the name `target`.
    pub fn tag(&self, source: &str, target: &str) -> Result<String, EngineError> {
        let found = self.find(source)?;
        let name = kiln_snapshotter::normalize_name(target)?;
        self.store()
            .tags()
            .tag(&name, found.image.manifest_descriptor)?;
        Ok(name)
    }

    /// Removes the name (the blobs go with [`Engine::prune`]); returns the normalised
    /// name, or `NoSuchImage`.
    pub fn untag(&self, name: &str) -> Result<String, EngineError> {
        let normalized = kiln_snapshotter::normalize_name(name)?;
        if self.store().tags().untag(&normalized)? {
            Ok(normalized)
        } else {
            Err(EngineError::NoSuchImage {
                name: name.to_owned(),
            })
        }
    }

    /// `kiln import`: a root filesystem as a one-layer image.
    pub fn import<R: Read + 'static>(
        &self,
        source: ImportSource<R>,
        options: ImportOptions,
    ) -> Result<StoredImage, EngineError> {
        kiln_snapshotter::normalize_name(&options.name)?;
        let store = self.store();
        let created = rfc3339(options.source_date_epoch.unwrap_or_else(now_secs));
        let mut config = options.config;
        if config.architecture.is_empty() {
            let (arch, variant) = host_architecture();
            config.architecture = arch.to_owned();
            config.variant = variant.map(str::to_owned);
        }
        if config.os.is_empty() {
            config.os = "linux".to_owned();
        }
        config.created = Some(created.clone());
        let (layer, shown) = match source {
            ImportSource::Dir(dir) => {
                let layer = write_layer(
                    DiffSource::Trees {
                        lower: None,
                        upper: &dir,
                    },
                    store.content(),
                    &LayerOptions {
                        source_date_epoch: options.source_date_epoch,
                        ..LayerOptions::default()
                    },
                )?;
                (layer, file_name(&dir))
            }
            ImportSource::Tar(reader, name) => {
                let layer = import_tar(self, Box::new(reader), &name)?;
                (layer, file_name(Path::new(&name)))
            }
        };
        config.rootfs = RootFs {
            kind: "layers".to_owned(),
            diff_ids: vec![layer.diff_id.to_string()],
        };
        // Only the file's name: the image must not depend on where the rootfs sat on the
        // host (reproducible imports, nothing private in the history).
        config.history = vec![History {
            created: Some(created),
            created_by: format!("kiln import {shown}"),
            comment: options
                .message
                .unwrap_or_else(|| format!("Imported from {shown}")),
            empty_layer: false,
        }];
        let stored = image::write_image(store, &config, &[layer], BTreeMap::new())?;
        store
            .tags()
            .tag(&options.name, stored.manifest_descriptor.clone())?;
        Ok(stored)
    }

    /// Pushes the image `name` under that name to its registry.
    pub async fn push(
        &self,
        name: &str,
        compression: Compression,
        access: &RegistryAccess,
    ) -> Result<PushOutcome, EngineError> {
        let found = self.find(name)?;
        let target = ImageRef::parse(name).map_err(|e| {
            EngineError::invalid(
                format!("{name} is not a registry name: {e}"),
                format!("tag it first (kiln tag {name} HOST/REPO:TAG)"),
            )
        })?;
        let registry = Registry::new(self.registry_config(access))?;
        let report = kiln_exporter::transfer::push(
            self.store(),
            &registry,
            &found.image,
            std::slice::from_ref(&target),
            compression,
        )
        .await?;
        Ok(PushOutcome {
            manifest_digest: report.manifest_digest.to_string(),
            uploaded: report.uploaded(),
            blobs: report.blobs,
        })
    }

    /// Pulls `reference` for `platform` into the store, tagged with its name.
    pub async fn pull(
        &self,
        reference: &str,
        platform: &Platform,
        access: &RegistryAccess,
    ) -> Result<StoredImage, EngineError> {
        let parsed = ImageRef::parse(reference).map_err(|e| {
            EngineError::invalid(
                format!("{reference} is not an image reference: {e}"),
                "write NAME[:TAG] or HOST/REPO[:TAG]".to_owned(),
            )
        })?;
        let registry = Registry::new(self.registry_config(access))?;
        Ok(
            kiln_exporter::transfer::pull(self.store(), &registry, &parsed, platform, reference)
                .await?,
        )
    }

    /// Removes blobs no tag reaches and snapshots no cache index entry reaches (an entry
    /// keeps its snapshot and that snapshot's parents; unfinished snapshots go too), and
    /// the entries whose snapshot is gone. With `all`, every snapshot, the cache index
    /// and the cache mounts too. Refused while a build runs (it holds the store's build
    /// lock for its whole length, and prune needs the gc lock alone), so nothing a build
    /// is writing or about to record is ever removed.
    pub fn prune(&self, all: bool) -> Result<PruneReport, EngineError> {
        let store = self.store();
        let Some(_gc) = store.try_lock_for_gc()? else {
            return Err(EngineError::Busy {
                root: store.root().to_owned(),
            });
        };
        let mut keep = HashSet::new();
        for (_, descriptor) in store.tags().list()? {
            let image = image::read_image(store, &descriptor)?;
            keep.extend(image::image_blobs(&image));
        }
        let mut reclaimed = 0;
        for digest in store.content().list()? {
            if !keep.contains(&digest) {
                reclaimed += store.content().delete(&digest)?;
            }
        }
        let reachable = if all {
            HashSet::new()
        } else {
            reachable_snapshots(store)?
        };
        for (id, _) in store.snapshots().list()? {
            if !reachable.contains(&id) {
                reclaimed += store.snapshots().remove(&id)?;
            }
        }
        // Their layers (active snapshots) are gone: so are the kept failed steps.
        let failed = store.failed_steps_dir();
        if failed.exists() {
            reclaimed += dir_size(&failed);
            std::fs::remove_dir_all(&failed).map_err(|e| EngineError::io(&failed, e))?;
        }
        if all {
            let mounts = store.cache_mounts_dir();
            if mounts.exists() {
                reclaimed += dir_size(&mounts);
                std::fs::remove_dir_all(&mounts).map_err(|e| EngineError::io(&mounts, e))?;
            }
            for path in store.cache_index_files() {
                if let Ok(meta) = std::fs::metadata(&path) {
                    reclaimed += meta.len();
                    std::fs::remove_file(&path).map_err(|e| EngineError::io(&path, e))?;
                }
            }
            reclaimed += remove_kept_contexts(&store.kept_contexts_dir())?;
        }
        // Temp space of builds that were killed, in this or another process.
        reclaimed += store.sweep_temp()?.stale_bytes;
        Ok(PruneReport { reclaimed })
    }

    /// Bytes by kind (kept contexts count as temp).
    pub fn disk_usage(&self) -> DiskUsage {
        let store = self.store();
        let root = store.root();
        DiskUsage {
            blobs: dir_size(&root.join("content")),
            snapshots: dir_size(&root.join("snapshots")),
            cache_index: store
                .cache_index_files()
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum(),
            cache_mounts: dir_size(&store.cache_mounts_dir()),
            temp: dir_size(&store.kept_contexts_dir())
                + store
                    .temp_usage()
                    .map(|t| t.live_bytes + t.stale_bytes)
                    .unwrap_or(0),
        }
    }

    /// `docker save`: the images as one Docker archive.
    pub fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), EngineError> {
        let [name] = names else {
            return Err(EngineError::invalid(
                format!(
                    "{} images asked for; kiln saves one image per archive",
                    names.len()
                ),
                "save each image on its own".to_owned(),
            ));
        };
        let found = self.find(name)?;
        let options = kiln_exporter::archive::ArchiveOptions {
            oci_mediatypes: false,
            names: vec![name.clone()],
            ..kiln_exporter::archive::ArchiveOptions::default()
        };
        kiln_exporter::archive::write_docker_archive(self.store(), &found.image, &options, out)?;
        Ok(())
    }
}

/// The committed snapshots the cache index reaches: each entry's snapshot and its
/// parents. Entries whose snapshot (or a parent of it) is gone are removed on the way:
/// they are misses already, and would otherwise be kept forever. No index, nothing
/// reachable (the index is not created).
fn reachable_snapshots(
    store: &kiln_snapshotter::Store,
) -> Result<HashSet<kiln_snapshotter::SnapshotId>, EngineError> {
    let mut reachable = HashSet::new();
    let path = store.cache_index_path();
    if !path.exists() {
        return Ok(reachable);
    }
    let index = kiln_solver::cache_index::CacheIndex::open(&path)?;
    let snapshots = store.snapshots();
    for (key, value) in index.entries()? {
        let Some(id) = kiln_solver::solve::recorded_snapshot(&value) else {
            // No snapshot (a context, scratch) or a record kiln cannot read: nothing to keep.
            continue;
        };
        let mut chain = Vec::new();
        let mut current = Some(id);
        let mut whole = true;
        while let Some(id) = current {
            if reachable.contains(&id) {
                break;
            }
            if !snapshots.is_committed(&id) {
                whole = false;
                break;
            }
            current = snapshots.parent(&id)?;
            chain.push(id);
        }
        if whole {
            reachable.extend(chain);
        } else {
            index.remove(&key)?;
        }
    }
    Ok(reachable)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Stores a rootfs tarball as a plain layer blob, validating every entry while it
/// streams in (no `..`, no absolute names, no links out): a hostile archive stores nothing.
fn import_tar(engine: &Engine, input: Box<dyn Read>, name: &str) -> Result<LayerInfo, EngineError> {
    Ok(layer_in::import_layer(
        input,
        engine.store().content(),
        layer_in::SizeLimit::default(),
        name,
    )?)
}

fn dir_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.path().symlink_metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A config shaped by `kiln import -c` changes, as `docker import --change` does.
pub fn config_with_changes(changes: &[String]) -> Result<ImageConfig, EngineError> {
    use kiln_parser::Kind;
    let mut config = ImageConfig::default();
    let mut state = kiln_solver::meta::StageMeta::default();
    for change in changes {
        let instruction = kiln_parser::parse_instruction(change).map_err(|e| {
            EngineError::invalid(
                e.render("--change", change).trim_end().to_owned(),
                "give one Dockerfile instruction, e.g. -c 'CMD [\"/bin/sh\"]'".to_owned(),
            )
        })?;
        match instruction.kind {
            Kind::Cmd(_)
            | Kind::Entrypoint(_)
            | Kind::Env(_)
            | Kind::Expose(_)
            | Kind::Label(_)
            | Kind::Onbuild(_)
            | Kind::Stopsignal(_)
            | Kind::User(_)
            | Kind::Volume(_)
            | Kind::Workdir(_) => {
                kiln_solver::meta::apply(
                    &mut config,
                    &mut state,
                    &instruction.kind,
                    &instruction.original,
                )
                .map_err(|e| EngineError::invalid(format!("--change {change:?}: {e}"), None))?;
            }
            _ => {
                return Err(EngineError::invalid(
                    format!(
                        "--change {change:?}: {} cannot be applied by import",
                        instruction.keyword.to_uppercase()
                    ),
                    "use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR"
                        .to_owned(),
                ));
            }
        }
    }
    Ok(config)
}

/// Removes the kept contexts no build holds (their `.lock` can be taken); returns the
/// bytes freed.
fn remove_kept_contexts(dir: &std::path::Path) -> Result<u64, EngineError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lock") || !path.is_dir() {
            continue;
        }
        let lock_path = path.with_extension("lock");
        let Ok(lock) = std::fs::File::create(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        freed += dir_size(&path);
        // The lock file stays: removing it could let two builds lock two files of one name.
        std::fs::remove_dir_all(&path).map_err(|e| EngineError::io(&path, e))?;
    }
    Ok(freed)
}
