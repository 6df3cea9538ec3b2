//! What a build is asked to do: [`BuildRequest`], the one boundary between a front end
//! (the cli, the server) and the engine. Plain data, checked when it is made, so a bad
//! value is a usage error before anything runs.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_snapshotter::layer_out::Compression;
use kiln_solver::cache_transfer::{CacheExportSpec, CacheImportSpec};
use kiln_solver::frontend::Platform;
use kiln_solver::request::{NamedContext, NetworkMode, OutputSpec, SecretSpec, SshSpec};

use crate::RegistryAccess;
use crate::context::TempContext;
use crate::error::BuildError;

/// Everything one build needs.
#[derive(Debug)]
pub struct BuildRequest {
    /// Where the build context is.
    pub context: ContextSource,
    /// Where the Dockerfile is.
    pub dockerfile: DockerfileSource,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// `--build-arg`s (the front end resolves `KEY` alone from its environment).
    pub build_args: BTreeMap<String, String>,
    /// `--label`s added to the image config.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`s added to the manifest.
    pub annotations: BTreeMap<String, String>,
    /// `-t` names.
    pub tags: Vec<String>,
    /// Where the result goes; empty means the local store.
    pub outputs: Vec<Output>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages never taken from the cache.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: resolve FROM images in the registry even when the store has them.
    pub pull: bool,
    /// `--platform`: the target platform (default: the host's).
    pub platform: Option<Platform>,
    /// `--network` for RUN steps that do not say.
    pub network: NetworkMode,
    /// `--allow` entitlements.
    pub allow: Vec<Entitlement>,
    /// `--secret`s.
    pub secrets: Vec<SecretSpec>,
    /// `--ssh` agents and keys.
    pub ssh: Vec<SshSpec>,
    /// `--build-context`s by name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--jobs`: how many RUN steps may run at once (default: twice the cores).
    pub jobs: Option<usize>,
    /// `--explain`: say, for every step that runs, why (an `Explain` progress event).
    pub explain: bool,
    /// `--on-error=shell|keep`: what to do with a failed RUN's sandbox before it is taken
    /// down (a front end's hook; see `kiln_solver::solve::OnFailedStep`).
    pub on_failed_step: Option<kiln_solver::solve::FailedStepHook>,
    /// Registry credentials and insecure registries for this build's pulls and pushes.
    pub registry: RegistryAccess,
    /// The `.dockerignore` text to apply instead of looking for one beside the
    /// Dockerfile and in the context: a thin client that filtered the context it sent
    /// names the patterns it used, so hints about ignored files stay right.
    pub dockerignore: Option<String>,
    /// `--cache-from`s, asked in order for steps the store does not have.
    pub cache_from: Vec<CacheImportSpec>,
    /// `--cache-to`s, written after the outputs.
    pub cache_to: Vec<CacheExportSpec>,
}

impl BuildRequest {
    /// A request for `context` with every other setting at its default.
    pub fn new(context: ContextSource) -> BuildRequest {
        BuildRequest {
            context,
            dockerfile: DockerfileSource::Default,
            target: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            tags: Vec::new(),
            outputs: Vec::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            pull: false,
            platform: None,
            network: NetworkMode::Default,
            allow: Vec::new(),
            secrets: Vec::new(),
            ssh: Vec::new(),
            named_contexts: BTreeMap::new(),
            jobs: None,
            explain: false,
            on_failed_step: None,
            registry: RegistryAccess::default(),
            dockerignore: None,
            cache_from: Vec::new(),
            cache_to: Vec::new(),
        }
    }

    /// `--push`, as `docker build --push`: the image is pushed and also kept in the local
    /// store under its tags (`-o type=registry` is the push alone).
    pub fn push_image(&mut self) {
        match self
            .outputs
            .iter_mut()
            .find(|o| o.kind == OutputKind::Image)
        {
            Some(image) => image.push = true,
            None => {
                let mut image = Output::new(OutputKind::Image);
                image.push = true;
                self.outputs.push(image);
            }
        }
    }
}

/// Where the build context comes from.
#[derive(Debug)]
pub enum ContextSource {
    /// A directory, read in place.
    Dir(PathBuf),
    /// A context the engine made (from a tar stream); removed when the build ends.
    Temp(TempContext),
    /// A git repository, `https://HOST/REPO.git#REF:SUBDIR`, checked out for the build.
    Git(String),
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub enum DockerfileSource {
    /// `Dockerfile` in the context (for a tar context with a lone Dockerfile: that one).
    Default,
    /// A path inside the context (`docker build -f sub/Dockerfile` with a git or tar
    /// context, or the server's `dockerfile=` parameter).
    InContext(String),
    /// A file on the machine the engine runs on.
    Path(PathBuf),
    /// The text itself (`-f -`), with the name messages show.
    Inline {
        /// Shown in messages as `NAME:LINE:COL`.
        name: String,
        /// The text.
        text: String,
    },
}

/// An `--allow` entitlement kiln grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `network.host`: RUN steps may use the host's network namespace.
    NetworkHost,
    /// `export.devices` (kiln's own): `type=local` creates the image's device nodes on
    /// the host instead of skipping them.
    ExportDevices,
    /// `export.setuid` (kiln's own): `type=local` keeps setuid/setgid bits instead of
    /// clearing them.
    ExportSetuid,
}

impl Entitlement {
    /// Parses buildx's name; `security.insecure` and unknown ones are refused.
    pub fn parse(value: &str) -> Result<Entitlement, BuildError> {
        match value {
            "network.host" => Ok(Entitlement::NetworkHost),
            "export.devices" => Ok(Entitlement::ExportDevices),
            "export.setuid" => Ok(Entitlement::ExportSetuid),
            "security.insecure" => Err(BuildError::invalid(
                "--allow security.insecure: privileged RUN steps are not supported by kiln",
                format!("remove it; kiln grants {}", Entitlement::NAMES),
            )),
            other => Err(BuildError::invalid(
                format!("--allow {other}: unknown entitlement"),
                format!("kiln grants {}", Entitlement::NAMES),
            )),
        }
    }

    /// Every entitlement's name, for messages.
    pub const NAMES: &'static str = "network.host, export.devices and export.setuid";

    /// buildx's name (kiln's for the `export.` ones).
    pub fn name(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::ExportDevices => "export.devices",
            Entitlement::ExportSetuid => "export.setuid",
        }
    }
}

/// Where one output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// The local store (`type=image`), tagged with the output's names.
    Image,
    /// A registry (`type=registry`, `--push`).
    Registry,
    /// An OCI archive or layout directory.
    Oci,
    /// A Docker archive (`docker load`).
    Docker,
    /// The filesystem as a directory.
    Local,
    /// The filesystem as a tar.
    Tar,
}

impl OutputKind {
    fn parse(name: &str) -> Option<OutputKind> {
        Some(match name {
            "image" => OutputKind::Image,
            "registry" => OutputKind::Registry,
            "oci" => OutputKind::Oci,
            "docker" => OutputKind::Docker,
            "local" => OutputKind::Local,
            "tar" => OutputKind::Tar,
            _ => return None,
        })
    }

    /// buildx's name for it.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Image => "image",
            OutputKind::Registry => "registry",
            OutputKind::Oci => "oci",
            OutputKind::Docker => "docker",
            OutputKind::Local => "local",
            OutputKind::Tar => "tar",
        }
    }
}

/// A stream an output writes to instead of a file (`dest=-`: the front end's stdout, or
/// a server's response body).
#[derive(Clone)]
pub struct Sink(Arc<Mutex<Box<dyn Write + Send>>>);

impl Sink {
    /// Wraps a writer.
    pub fn new(writer: Box<dyn Write + Send>) -> Sink {
        Sink(Arc::new(Mutex::new(writer)))
    }

    /// Runs `f` with the writer.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut dyn Write) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut **guard)
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sink")
    }
}

/// Where a file output is written.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A path (through a temp file and a rename).
    Path(PathBuf),
    /// A stream.
    Stream(Sink),
}

/// One output, typed: what `-o type=...,k=v` says once checked.
#[derive(Debug, Clone)]
pub struct Output {
    /// What kind.
    pub kind: OutputKind,
    /// Where (required for oci, docker, local and tar).
    pub dest: Option<Destination>,
    /// Names for this output (`name=`); `None`: the build's `-t` tags.
    pub names: Option<Vec<String>>,
    /// `type=image,push=true`: also push.
    pub push: bool,
    /// Layer compression for archives and pushes (BuildKit's default: gzip).
    pub compression: Compression,
    /// `force-compression=true`.
    pub force_compression: bool,
    /// `oci-mediatypes`; `None`: the kind's default (OCI, but Docker's for type=docker).
    pub oci_mediatypes: Option<bool>,
    /// `annotation.KEY=VALUE`.
    pub annotations: BTreeMap<String, String>,
    /// `tar=false` for type=oci: a layout directory rather than an archive.
    pub tar: bool,
    /// `registry.insecure=true`: plain HTTP or an untrusted certificate.
    pub insecure: bool,
    /// `merge=true` for type=local: write into a directory that is not empty.
    pub merge: bool,
}

impl Output {
    /// An output of `kind` with every attribute at its default.
    pub fn new(kind: OutputKind) -> Output {
        Output {
            kind,
            dest: None,
            names: None,
            push: false,
            compression: Compression::default_gzip(),
            force_compression: false,
            oci_mediatypes: None,
            annotations: BTreeMap::new(),
            tar: true,
            insecure: false,
            merge: false,
        }
    }

    /// Parses buildx's `-o` syntax; `dest=-` becomes `stdout` (the front end's stream).
    pub fn parse(value: &str, stdout: impl FnOnce() -> Sink) -> Result<Output, BuildError> {
        let spec = OutputSpec::parse(value).map_err(|e| {
            BuildError::invalid(e.to_string(), "see `kiln build --help` for the -o syntax")
        })?;
        Output::from_spec(&spec, stdout)
    }

    /// Checks a parsed `-o` value.
    pub fn from_spec(
        spec: &OutputSpec,
        stdout: impl FnOnce() -> Sink,
    ) -> Result<Output, BuildError> {
        let kind = OutputKind::parse(&spec.kind).ok_or_else(|| {
            BuildError::invalid(
                format!("-o type={}: unknown output type", spec.kind),
                "use image, registry, oci, docker, local or tar",
            )
        })?;
        let mut output = Output::new(kind);
        let mut compression_name = None;
        let mut level = None;
        let mut stdout = Some(stdout);
        for (key, value) in &spec.attrs {
            match key.as_str() {
                "dest" => {
                    output.dest = Some(if value == "-" {
                        if kind == OutputKind::Local {
                            return Err(BuildError::invalid(
                                "-o type=local,dest=-: a directory cannot go to stdout",
                                "use type=tar,dest=- for the filesystem as a tar stream",
                            ));
                        }
                        Destination::Stream(stdout.take().map(|f| f()).ok_or_else(|| {
                            BuildError::invalid("two outputs to dest=-", "give one a file")
                        })?)
                    } else {
                        Destination::Path(PathBuf::from(value))
                    });
                }
                "name" => {
                    output.names = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                "push" => output.push = flag(key, value)?,
                "compression" => compression_name = Some(value.clone()),
                "compression-level" => level = Some(value.clone()),
                "force-compression" => output.force_compression = flag(key, value)?,
                "oci-mediatypes" => output.oci_mediatypes = Some(flag(key, value)?),
                "tar" => output.tar = flag(key, value)?,
                "registry.insecure" => output.insecure = flag(key, value)?,
                "merge" if kind == OutputKind::Local => output.merge = flag(key, value)?,
                other if other.starts_with("annotation.") => {
                    let name = &other["annotation.".len()..];
                    output.annotations.insert(name.to_owned(), value.clone());
                }
                other => {
                    return Err(BuildError::invalid(
                        format!(
                            "-o type={},{other}={value}: kiln does not support {other}",
                            spec.kind
                        ),
                        "kiln takes dest, name, push, compression, compression-level, force-compression, oci-mediatypes, tar, registry.insecure, merge (type=local) and annotation.KEY",
                    ));
                }
            }
        }
        if let Some(name) = compression_name {
            output.compression = parse_compression(&name)?;
        }
        if let Some(level) = level {
            output.compression = with_level(output.compression, &level)?;
        }
        if matches!(
            kind,
            OutputKind::Oci | OutputKind::Docker | OutputKind::Local | OutputKind::Tar
        ) && output.dest.is_none()
        {
            return Err(BuildError::invalid(
                format!("-o type={}: no destination", spec.kind),
                "give dest=PATH (or dest=- for stdout)",
            ));
        }
        Ok(output)
    }
}

fn flag(key: &str, value: &str) -> Result<bool, BuildError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(BuildError::invalid(
            format!("-o {key}={other}: not a boolean"),
            "use true or false",
        )),
    }
}

/// Parses a compression name: `gzip`, `zstd` or `uncompressed`, on every core.
pub fn parse_compression(name: &str) -> Result<Compression, BuildError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    Ok(match name {
        "gzip" => Compression::default_gzip(),
        "zstd" => Compression::Zstd {
            level: 3,
            threads: cores,
        },
        "uncompressed" | "none" => Compression::None,
        other => {
            return Err(BuildError::invalid(
                format!("unknown compression {other:?}"),
                "use gzip, zstd or uncompressed",
            ));
        }
    })
}

fn with_level(compression: Compression, level: &str) -> Result<Compression, BuildError> {
    let bad = |range: &str| {
        BuildError::invalid(
            format!("-o compression-level={level}: not a level"),
            format!("give {range}"),
        )
    };
    Ok(match compression {
        Compression::Gzip { threads, .. } => Compression::Gzip {
            level: level
                .parse()
                .ok()
                .filter(|l| *l <= 9)
                .ok_or_else(|| bad("0 to 9"))?,
            threads,
        },
        Compression::Zstd { threads, .. } => Compression::Zstd {
            level: level
                .parse()
                .ok()
                .filter(|l| (1..=22).contains(l))
                .ok_or_else(|| bad("1 to 22"))?,
            threads,
        },
        other => other,
    })
}
