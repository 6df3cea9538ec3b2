//! Store commands: `import`, `load`, `save`, `images`, `tag`, `rmi`, `inspect`, `prune`,
//! `du`, `fsck`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use kiln_engine::{Engine, EngineConfig, ImportOptions, ImportSource};
use kiln_snapshotter::{SnapshotterKind, Store};

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
pub(crate) struct LoadArgs {
    /// The archive (what `docker save` writes) [default: stdin]
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SaveArgs {
    /// The image (name or id)
    pub(crate) name: String,
    /// Where the archive goes [default: stdout, unless it is a terminal]
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
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

#[derive(Debug, clap::Args)]
pub(crate) struct FsckArgs {
    /// Remove what is broken (damaged blobs, tags that need them, unfinished snapshots),
    /// so the next build or pull makes it again; refused while a build runs
    #[arg(long)]
    pub(crate) repair: bool,
}

/// The store directory: `--root`/`KILN_ROOT`, else `/var/lib/kiln` for root, else
/// `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`).
pub(crate) fn store_root(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(root) = &global.root {
        if root.exists() && !root.is_dir() {
            bail!(
                "--root {}: not a directory; give the store's directory (it is created if missing)",
                root.display()
            );
        }
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

fn snapshotter_kind(global: &GlobalArgs) -> anyhow::Result<Option<SnapshotterKind>> {
    match &global.snapshotter {
        Some(name) => Ok(Some(SnapshotterKind::parse(name).with_context(|| {
            format!("unknown snapshotter {name:?}; use overlay or native")
        })?)),
        None => Ok(None),
    }
}

pub(crate) fn open_store(global: &GlobalArgs) -> anyhow::Result<Store> {
    let root = store_root(global)?;
    Store::open(&root, snapshotter_kind(global)?)
        .with_context(|| format!("open the store at {}", root.display()))
}

pub(crate) fn open_engine(global: &GlobalArgs) -> anyhow::Result<Engine> {
    let root = store_root(global)?;
    let config = EngineConfig {
        snapshotter: snapshotter_kind(global)?,
        registry: crate::cmd::registry::registry_config(&[])?,
    };
    Engine::open(&root, config).with_context(|| format!("open the store at {}", root.display()))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
}

pub(crate) fn import(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<ExitCode> {
    kiln_snapshotter::normalize_name(&args.name)?;
    // Changes first: a bad --change must fail before anything is written.
    let config = kiln_engine::config_with_changes(&args.changes)?;
    let engine = open_engine(global)?;
    let source = &args.source;
    let source: ImportSource<Box<dyn Read>> = if source == Path::new("-") {
        ImportSource::Tar(Box::new(std::io::stdin()), "stdin".to_owned())
    } else if source.is_dir() {
        ImportSource::Dir(source.clone())
    } else {
        let file = std::fs::File::open(source).with_context(|| {
            format!(
                "open {}; give a tar archive, a directory or -",
                source.display()
            )
        })?;
        ImportSource::Tar(Box::new(file), source.display().to_string())
    };
    let stored = engine.import(
        source,
        ImportOptions {
            name: args.name.clone(),
            config,
            message: args.message.clone(),
            source_date_epoch: source_date_epoch(),
        },
    )?;
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
    Some(kiln_image::config::unix_seconds(y, m, day, hh, mm, ss))
}

pub(crate) fn images(global: &GlobalArgs, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let engine = open_engine(global)?;
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(
            out,
            "{:<40} {:<12} {:<14} {:<22} SIZE",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
        )?;
    }
    for image in engine.images()? {
        let id = if args.no_trunc {
            image.id.to_string()
        } else {
            image.id.short().to_owned()
        };
        if args.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        let (repo, tag) = split_name(&image.name);
        writeln!(
            out,
            "{repo:<40} {tag:<12} {id:<14} {:<22} {}",
            ago(image.created.as_deref()),
            human_size(image.size)
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
    open_engine(global)?.tag(&args.source, &args.target)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn rmi(global: &GlobalArgs, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let engine = open_engine(global)?;
    let mut code = ExitCode::SUCCESS;
    for name in &args.names {
        match engine.untag(name) {
            Ok(normalized) => writeln!(std::io::stdout(), "Untagged: {normalized}")?,
            Err(kiln_engine::EngineError::NoSuchImage { .. }) => {
                eprintln!("error: no image named {name} in the store (see kiln images)");
                code = ExitCode::FAILURE;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}

pub(crate) fn inspect(global: &GlobalArgs, args: InspectArgs) -> anyhow::Result<ExitCode> {
    let engine = open_engine(global)?;
    let mut all = Vec::new();
    for reference in &args.images {
        let found = engine.find(reference)?;
        let image = &found.image;
        all.push(serde_json::json!({
            "Id": image.id.to_string(),
            "RepoTags": found.names,
            "ManifestDigest": image.manifest_descriptor.digest.to_string(),
            "Size": kiln_engine::image_size(image),
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
    let report = open_engine(global)?.prune(args.all)?;
    writeln!(
        std::io::stdout(),
        "Total reclaimed space: {}",
        human_size(report.reclaimed)
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn du(global: &GlobalArgs, _args: DuArgs) -> anyhow::Result<ExitCode> {
    let usage = open_engine(global)?.disk_usage();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<12} {:>12}", "TYPE", "SIZE")?;
    writeln!(out, "{:<12} {:>12}", "blobs", human_size(usage.blobs))?;
    writeln!(
        out,
        "{:<12} {:>12}",
        "snapshots",
        human_size(usage.snapshots)
    )?;
    writeln!(
        out,
        "{:<12} {:>12}",
        "cache index",
        human_size(usage.cache_index)
    )?;
    writeln!(
        out,
        "{:<12} {:>12}",
        "cache mounts",
        human_size(usage.cache_mounts)
    )?;
    writeln!(out, "{:<12} {:>12}", "temp", human_size(usage.temp))?;
    writeln!(out, "{:<12} {:>12}", "total", human_size(usage.total()))?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln load`: the images of a Docker archive into the store, as `docker load`.
pub(crate) fn load(global: &GlobalArgs, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let engine = open_engine(global)?;
    let mut input: Box<dyn Read> = match &args.input {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("open {}; give a docker save archive", path.display()))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("kiln load reads the archive from stdin: give -i FILE or redirect it");
            }
            Box::new(std::io::stdin().lock())
        }
    };
    for line in engine.load(&mut input)? {
        writeln!(std::io::stdout(), "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln save`: one image as a Docker archive (`docker load` reads it).
pub(crate) fn save(global: &GlobalArgs, args: SaveArgs) -> anyhow::Result<ExitCode> {
    let engine = open_engine(global)?;
    let names = [args.name.clone()];
    engine.find(&args.name)?;
    match &args.output {
        Some(path) => {
            // Through a temp file and a rename, as every file output: a failed save leaves
            // nothing at the path.
            let mut failed = None;
            let written = kiln_exporter::archive::write_to_file(path, |file| {
                engine.save(&names, file).map_err(|e| {
                    let refused = kiln_exporter::archive::ArchiveError::DestRefused {
                        path: path.clone(),
                        reason: e.to_string(),
                    };
                    failed = Some(e);
                    refused
                })
            });
            if let Some(e) = failed {
                return Err(e.into());
            }
            written?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!(
                    "kiln save will not write an archive to a terminal: give -o FILE or redirect stdout"
                );
            }
            let mut out = std::io::stdout().lock();
            engine.save(&names, &mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln fsck`: one line per problem, a summary, and exit 1 unless the store is clean.
pub(crate) fn fsck(global: &GlobalArgs, args: FsckArgs) -> anyhow::Result<ExitCode> {
    let engine = open_engine(global)?;
    let (report, repaired) = if args.repair {
        let (report, repaired) = engine.repair()?;
        (report, Some(repaired))
    } else {
        (engine.fsck()?, None)
    };
    let mut out = std::io::stdout().lock();
    for digest in &report.damaged {
        writeln!(
            out,
            "damaged blob {digest}: its content does not match its digest"
        )?;
    }
    for (name, problems) in &report.broken_tags {
        for problem in problems {
            writeln!(out, "{name}: {problem}")?;
        }
    }
    for id in report.unfinished.iter().flatten() {
        writeln!(
            out,
            "unfinished snapshot {id}: left by a build that did not end"
        )?;
    }
    let checked = format!("{} blobs and {} tags checked", report.blobs, report.tags);
    let snapshots_note = if report.unfinished.is_none() {
        " (a build is running: unfinished snapshots not checked)"
    } else {
        ""
    };
    if report.is_clean() {
        writeln!(out, "{checked}: the store is clean{snapshots_note}")?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(repaired) = repaired {
        writeln!(
            out,
            "{checked}: removed {} damaged blobs, {} broken tags and {} unfinished snapshots; \
             build or pull those images again",
            repaired.blobs, repaired.tags, repaired.snapshots
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{checked}: damaged blobs {}, broken tags {}, unfinished snapshots {}{snapshots_note}; \
         kiln fsck --repair removes them (then build or pull those images again)",
        report.damaged.len(),
        report.broken_tags.len(),
        report.unfinished.as_ref().map_or(0, Vec::len),
    )?;
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::config::rfc3339;

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
