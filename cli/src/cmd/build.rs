//! `kiln build`: the flags of `docker buildx build`, turned into a `BuildRequest`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use kiln_solver::request::{
    self, BuildRequest, DockerfileSource, NetworkMode, OutputSpec, SecretSpec, SshSpec,
};

use crate::progress::ProgressMode;

/// Build an image from a Dockerfile and a context
#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The build context: a directory, or `-` for a tar (or a lone Dockerfile) on stdin
    #[arg(value_name = "PATH", default_value = ".")]
    pub(crate) context: String,

    /// Name and optionally a tag (`name:tag`); may be given several times
    #[arg(short = 't', long = "tag", value_name = "NAME", help_heading = "Image")]
    pub(crate) tags: Vec<String>,
    /// The Dockerfile [default: PATH/Dockerfile]; `-` reads it from stdin
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        help_heading = "Image"
    )]
    pub(crate) file: Option<String>,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]", help_heading = "Image")]
    pub(crate) build_args: Vec<String>,
    /// The stage to build
    #[arg(long, value_name = "STAGE", help_heading = "Image")]
    pub(crate) target: Option<String>,
    /// Target platform(s), e.g. `linux/amd64`
    #[arg(
        long,
        value_name = "PLATFORM",
        value_delimiter = ',',
        help_heading = "Image"
    )]
    pub(crate) platform: Vec<String>,
    /// Add a label to the image (`KEY=VALUE`)
    #[arg(long = "label", value_name = "KEY=VALUE", help_heading = "Image")]
    pub(crate) labels: Vec<String>,
    /// Add an annotation to the image manifest (`KEY=VALUE`)
    #[arg(long = "annotation", value_name = "KEY=VALUE", help_heading = "Image")]
    pub(crate) annotations: Vec<String>,

    /// Do not use the cache
    #[arg(long, help_heading = "Cache")]
    pub(crate) no_cache: bool,
    /// Do not use the cache for these stages
    #[arg(
        long,
        value_name = "STAGE",
        value_delimiter = ',',
        help_heading = "Cache"
    )]
    pub(crate) no_cache_filter: Vec<String>,
    /// Always look base images up again
    #[arg(long, help_heading = "Cache")]
    pub(crate) pull: bool,

    /// Output destination (`type=image|registry|oci|docker|local|tar,dest=...`)
    #[arg(
        short = 'o',
        long = "output",
        value_name = "SPEC",
        help_heading = "Output"
    )]
    pub(crate) outputs: Vec<String>,
    /// Push the image (`--output type=registry`)
    #[arg(long, help_heading = "Output")]
    pub(crate) push: bool,
    /// Load the image into the local store (kiln always does; accepted for docker compatibility)
    #[arg(long, help_heading = "Output")]
    pub(crate) load: bool,
    /// Write the image id to this file
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub(crate) iidfile: Option<PathBuf>,
    /// Write build results (digests, names) as JSON to this file
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub(crate) metadata_file: Option<PathBuf>,
    /// Print only the image id
    #[arg(short = 'q', long, help_heading = "Output")]
    pub(crate) quiet: bool,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto", help_heading = "Output")]
    pub(crate) progress: ProgressMode,

    /// Secret to expose to RUN --mount=type=secret (`id=X,src=FILE` or `id=X,env=VAR`)
    #[arg(long = "secret", value_name = "SPEC", help_heading = "Build")]
    pub(crate) secrets: Vec<String>,
    /// SSH agent socket or keys to expose to RUN --mount=type=ssh (`default|ID[=SOCKET|KEY,...]`)
    #[arg(long = "ssh", value_name = "SPEC", help_heading = "Build")]
    pub(crate) ssh: Vec<String>,
    /// Extra named context (`NAME=DIR`, `NAME=docker-image://REF`, `NAME=oci-layout://PATH`)
    #[arg(
        long = "build-context",
        value_name = "NAME=VALUE",
        help_heading = "Build"
    )]
    pub(crate) build_contexts: Vec<String>,
    /// Network for RUN steps: default, none or host
    #[arg(
        long,
        value_name = "MODE",
        default_value = "default",
        help_heading = "Build"
    )]
    pub(crate) network: String,
    /// Extra privileges, e.g. `security.insecure`, `network.host`
    #[arg(long = "allow", value_name = "ENTITLEMENT", help_heading = "Build")]
    pub(crate) allow: Vec<String>,
    /// How many RUN steps may run at once [default: the number of cores]
    #[arg(long, value_name = "N", help_heading = "Build")]
    pub(crate) jobs: Option<usize>,
    /// Import build cache (not supported yet: reported and ignored)
    #[arg(long = "cache-from", value_name = "SPEC", help_heading = "Cache")]
    pub(crate) cache_from: Vec<String>,
    /// Export build cache (not supported yet: reported and ignored)
    #[arg(long = "cache-to", value_name = "SPEC", help_heading = "Cache")]
    pub(crate) cache_to: Vec<String>,
}

/// Turns the flags into a request; reads the Dockerfile. Usage errors come out here.
pub(crate) fn request(args: &BuildArgs) -> anyhow::Result<BuildRequest> {
    let env = |key: &str| std::env::var(key).ok();
    if args.context == "-" {
        bail!("a context on stdin (`kiln build -`) is not supported yet; pass a directory");
    }
    let context = PathBuf::from(&args.context);
    if !context.is_dir() {
        bail!(
            "the build context {} is not a directory; pass the folder that holds the files the Dockerfile copies",
            context.display()
        );
    }
    let dockerfile = match args.file.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the Dockerfile from stdin")?;
            DockerfileSource {
                name: "Dockerfile".to_owned(),
                text,
                path: None,
            }
        }
        file => {
            let path = match file {
                Some(f) => PathBuf::from(f),
                None => context.join("Dockerfile"),
            };
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "read the Dockerfile {}; name another one with -f FILE",
                    path.display()
                )
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".to_owned());
            DockerfileSource {
                name,
                text,
                path: Some(path),
            }
        }
    };
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| OutputSpec::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    if args.push {
        outputs.push(OutputSpec::parse("type=registry")?);
    }
    Ok(BuildRequest {
        context,
        dockerfile,
        build_args: pairs("build-arg", &args.build_args, &env)?,
        target: args.target.clone(),
        platforms: args.platform.clone(),
        tags: args.tags.clone(),
        outputs,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        secrets: args
            .secrets
            .iter()
            .map(|s| SecretSpec::parse(s))
            .collect::<Result<_, _>>()?,
        ssh: args
            .ssh
            .iter()
            .map(|s| SshSpec::parse(s))
            .collect::<Result<_, _>>()?,
        named_contexts: args
            .build_contexts
            .iter()
            .map(|c| request::parse_build_context(c))
            .collect::<Result<_, _>>()?,
        labels: pairs("label", &args.labels, &|_| None)?,
        annotations: pairs("annotation", &args.annotations, &|_| None)?,
        network: NetworkMode::parse(&args.network)?,
        allow: args.allow.clone(),
        jobs: args.jobs,
    })
}

fn pairs(
    flag: &'static str,
    values: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for value in values {
        if let Some((k, v)) = request::parse_key_value(flag, value, lookup)? {
            out.insert(k, v);
        }
    }
    Ok(out)
}
