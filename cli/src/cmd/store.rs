//! Store commands: `import`, `images`, `tag`, `rmi`, `inspect`, `prune`, `du`.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use kiln_exporter::config::{History, ImageConfig, RootFs, host_architecture, rfc3339};
use kiln_exporter::image::{self, StoredImage};
use kiln_snapshotter::layer_out::{DiffSource, LayerInfo, LayerOptions, write_layer};
use kiln_snapshotter::{SnapshotterKind, Store, layer_in};

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// A root filesystem: a tar archive (plain, gzip or zstd), a directory, or `-` for a
    /// tar on stdin
    pub(crate) source: PathBuf,
    /// The image's name, e.g. `busybox` or `base:1`
    pub(crate) name: String,
    /// A Dockerfile instruction applied to the config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR), e.g. -c 'CMD ["/bin/sh"]'
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub(crate) changes: Vec<String>,
    /// A comment recorded in the image's history
    #[arg(short = 'm', long = "message")]
    pub(crate) message: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImagesArgs {
    /// Show full image ids
    #[arg(long)]
    pub(crate) no_trunc: bool,
    /// Print only image ids
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TagArgs {
    /// An image in the store (name or id)
    pub(crate) source: String,
    /// The new name
    pub(crate) target: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RmiArgs {
    /// Names to remove (the blobs go with `kiln prune`)
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// Images (name or id)
    #[arg(required = true)]
    pub(crate) images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {
    /// Also remove every snapshot and the whole build cache
    #[arg(short, long)]
    pub(crate) all: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DuArgs {}

/// The store directory: `--root`/`KILN_ROOT`, else `/var/lib/kiln` for root, else
/// `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`).
pub(crate) fn store_root(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(root) = &global.root {
        return Ok(root.clone());
    }
    if nix_is_root() {
        return Ok(PathBuf::from("/var/lib/kiln"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(data).join("kiln"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/kiln")),
        None => bail!("no store directory: set --root DIR or KILN_ROOT"),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub(crate) fn open_store(global: &GlobalArgs) -> anyhow::Result<Store> {
    let root = store_root(global)?;
    let kind = match &global.snapshotter {
        Some(name) => Some(
            SnapshotterKind::parse(name)
                .with_context(|| format!("unknown snapshotter {name:?}; use overlay or native"))?,
        ),
        None => None,
    };
    Store::open(&root, kind).with_context(|| format!("open the store at {}", root.display()))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Stores a rootfs tarball as a plain layer blob, checking that it is a tar on the way.
fn import_tar(store: &Store, input: Box<dyn Read>, name: &str) -> anyhow::Result<LayerInfo> {
    Ok(layer_in::import_layer(
        input,
        store.content(),
        layer_in::SizeLimit::default(),
        name,
    )?)
}

/// Applies `kiln import -c` changes, as `docker import --change` does.
pub(crate) fn apply_changes(config: &mut ImageConfig, changes: &[String]) -> anyhow::Result<()> {
    use kiln_parser::Kind;
    let mut state = kiln_solver::meta::StageMeta::default();
    for change in changes {
        let instruction = kiln_parser::parse_instruction(change)
            .map_err(|e| anyhow::anyhow!("{}", e.render("--change", change).trim_end()))?;
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
                    config,
                    &mut state,
                    &instruction.kind,
                    &instruction.original,
                )?;
            }
            _ => bail!(
                "--change {change:?}: {} cannot be applied by import; use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR",
                instruction.keyword.to_uppercase()
            ),
        }
    }
    Ok(())
}

pub(crate) fn import(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<ExitCode> {
    kiln_snapshotter::normalize_name(&args.name)?;
    let (arch, variant) = host_architecture();
    // SOURCE_DATE_EPOCH makes an import reproducible, as it does a build.
    let created = rfc3339(
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or_else(now_secs),
    );
    let mut config = ImageConfig {
        created: Some(created.clone()),
        architecture: arch.to_owned(),
        os: "linux".to_owned(),
        variant: variant.map(str::to_owned),
        ..ImageConfig::default()
    };
    // Changes first: a bad --change must fail before anything is written.
    apply_changes(&mut config, &args.changes)?;
    let store = open_store(global)?;
    let source = &args.source;
    let layer = if source == Path::new("-") {
        import_tar(&store, Box::new(std::io::stdin()), "stdin")?
    } else if source.is_dir() {
        write_layer(
            DiffSource::Trees {
                lower: None,
                upper: source,
            },
            store.content(),
            &LayerOptions {
                source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok()),
                ..LayerOptions::default()
            },
        )
        .with_context(|| format!("read the directory {}", source.display()))?
    } else {
        let file = std::fs::File::open(source).with_context(|| {
            format!(
                "open {}; give a tar archive, a directory or -",
                source.display()
            )
        })?;
        import_tar(&store, Box::new(file), &source.display().to_string())?
    };
    config.rootfs = RootFs {
        kind: "layers".to_owned(),
        diff_ids: vec![layer.diff_id.to_string()],
    };
    // Only the file's name: the image must not depend on where the rootfs sat on the
    // host (reproducible imports, nothing private in the history).
    let shown = source.file_name().map_or_else(
        || source.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    config.history = vec![History {
        created: Some(created),
        created_by: format!("kiln import {shown}"),
        comment: args
            .message
            .clone()
            .unwrap_or_else(|| format!("Imported from {shown}")),
        empty_layer: false,
    }];
    let stored = image::write_image(&store, &config, &[layer], BTreeMap::new())?;
    store
        .tags()
        .tag(&args.name, stored.manifest_descriptor.clone())?;
    writeln!(std::io::stdout(), "{}", stored.id)?;
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.3}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.3}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.3}kB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}

fn ago(created: Option<&str>) -> String {
    let Some(created) = created else {
        return "N/A".to_owned();
    };
    let Some(secs) = parse_rfc3339(created) else {
        return created.to_owned();
    };
    let d = (now_secs() - secs).max(0);
    match d {
        0..=59 => "Less than a minute ago".to_owned(),
        60..=3599 => format!("{} minutes ago", d / 60),
        3600..=86_399 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let time = time.split(['.', '+']).next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    Some(kiln_exporter::config::unix_seconds(y, m, day, hh, mm, ss))
}

fn image_size(image: &StoredImage) -> u64 {
    image.manifest.layers.iter().map(|l| l.size).sum()
}

pub(crate) fn images(global: &GlobalArgs, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(
            out,
            "{:<40} {:<12} {:<14} {:<22} SIZE",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
        )?;
    }
    let mut tags = store.tags().list()?;
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, descriptor) in tags {
        let image =
            image::read_image(&store, &descriptor).with_context(|| format!("read image {name}"))?;
        let id = if args.no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_owned()
        };
        if args.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let (repo, tag) = split_name(&name);
        writeln!(
            out,
            "{repo:<40} {tag:<12} {id:<14} {:<22} {}",
            ago(image.config.created.as_deref()),
            human_size(image_size(&image))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn split_name(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(c) => (&name[..slash + c], &name[slash + c + 1..]),
        None => (name, "<none>"),
    }
}

pub(crate) fn tag(global: &GlobalArgs, args: TagArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let (_, image) = image::find_image(&store, &args.source)?;
    store.tags().tag(&args.target, image.manifest_descriptor)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn rmi(global: &GlobalArgs, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let mut code = ExitCode::SUCCESS;
    for name in &args.names {
        let normalized = kiln_snapshotter::normalize_name(name)?;
        if store.tags().untag(&normalized)? {
            writeln!(std::io::stdout(), "Untagged: {normalized}")?;
        } else {
            eprintln!("error: no image named {name} in the store (see kiln images)");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

pub(crate) fn inspect(global: &GlobalArgs, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let mut all = Vec::new();
    for reference in &args.images {
        let (names, image) = image::find_image(&store, reference)?;
        all.push(serde_json::json!({
            "Id": image.id.to_string(),
            "RepoTags": names,
            "ManifestDigest": image.manifest_descriptor.digest.to_string(),
            "Size": image_size(&image),
            "Config": image.config,
            "Manifest": image.manifest,
        }));
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &all)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn prune(global: &GlobalArgs, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let Some(_gc) = store.try_lock_for_gc()? else {
        bail!(
            "a build is using the store {}; prune when it has finished",
            store.root().display()
        );
    };
    let mut keep = HashSet::new();
    for (name, descriptor) in store.tags().list()? {
        let image =
            image::read_image(&store, &descriptor).with_context(|| format!("read image {name}"))?;
        keep.extend(image::image_blobs(&image));
    }
    let mut reclaimed = 0;
    for digest in store.content().list()? {
        if !keep.contains(&digest) {
            reclaimed += store.content().delete(&digest)?;
        }
    }
    for (id, committed) in store.snapshots().list()? {
        if !committed || args.all {
            reclaimed += store.snapshots().remove(&id)?;
        }
    }
    if args.all {
        let mounts = store.root().join("cache-mounts");
        if mounts.exists() {
            reclaimed += dir_size(&mounts);
            std::fs::remove_dir_all(&mounts)
                .with_context(|| format!("remove {}", mounts.display()))?;
        }
        for name in ["cache.db", "cache.db-wal", "cache.db-shm"] {
            let path = store.root().join(name);
            if let Ok(meta) = std::fs::metadata(&path) {
                reclaimed += meta.len();
                std::fs::remove_file(&path)
                    .with_context(|| format!("remove {}", path.display()))?;
            }
        }
    }
    // Temp space of builds that were killed (owned dirs whose owner is gone).
    reclaimed += store.sweep_temp()?.stale_bytes;
    if let Ok(entries) = std::fs::read_dir(store.tmp_dir()) {
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata()
                && meta
                    .modified()
                    .is_ok_and(|m| m.elapsed().is_ok_and(|e| e.as_secs() > 3600))
            {
                reclaimed += meta.len();
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    writeln!(
        std::io::stdout(),
        "Total reclaimed space: {}",
        human_size(reclaimed)
    )?;
    Ok(ExitCode::SUCCESS)
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

pub(crate) fn du(global: &GlobalArgs, _args: DuArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let root = store.root();
    let blobs = dir_size(&root.join("content"));
    let snapshots = dir_size(&root.join("snapshots"));
    let cache: u64 = ["cache.db", "cache.db-wal"]
        .iter()
        .filter_map(|n| std::fs::metadata(root.join(n)).ok())
        .map(|m| m.len())
        .sum();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<12} {:>12}", "TYPE", "SIZE")?;
    writeln!(out, "{:<12} {:>12}", "blobs", human_size(blobs))?;
    writeln!(out, "{:<12} {:>12}", "snapshots", human_size(snapshots))?;
    writeln!(out, "{:<12} {:>12}", "cache index", human_size(cache))?;
    let temp = store.temp_usage()?;
    let temp = temp.live_bytes + temp.stale_bytes;
    writeln!(out, "{:<12} {:>12}", "temp", human_size(temp))?;
    writeln!(
        out,
        "{:<12} {:>12}",
        "total",
        human_size(blobs + snapshots + cache + temp)
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_docker() {
        assert_eq!(split_name("app:latest"), ("app", "latest"));
        assert_eq!(
            split_name("127.0.0.1:5000/app:1"),
            ("127.0.0.1:5000/app", "1")
        );
    }

    #[test]
    fn dates_round_trip() {
        for secs in [0, 1_485_449_953, 1_764_014_400] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
        }
    }
}
