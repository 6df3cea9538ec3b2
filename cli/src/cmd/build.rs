//! `kiln build`: the flags become a `kiln_engine::BuildRequest`; the engine builds;
//! this module renders progress, errors and the summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use kiln_engine::{
    BuildError, BuildRequest, ContextSource, DockerfileSource, Engine, Entitlement, Output, Sink,
};
use kiln_solver::cache_transfer::{CacheExportSpec, CacheImportSpec};
use kiln_solver::cancel::Cancel;
use kiln_solver::frontend;
use kiln_solver::progress::Progress;
use kiln_solver::request::{
    NetworkMode, SecretSpec, SshSpec, parse_build_context, parse_key_value,
};

use crate::args::GlobalArgs;
use crate::progress::{self, BuildLog, Mode, Paint, Tally};

/// The most `kiln build -` reads from stdin as a context.
const MAX_STDIN_CONTEXT: u64 = 64 << 30;

#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The build context: a directory, or `-` for a tar archive (or a lone Dockerfile)
    /// on stdin
    #[arg(value_name = "PATH | -")]
    pub(crate) context: PathBuf,

    /// Name of the Dockerfile [default: PATH/Dockerfile]; `-` reads it from stdin
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        help_heading = "Input"
    )]
    pub(crate) file: Option<PathBuf>,
    /// The stage to build [default: the last one]
    #[arg(long, value_name = "STAGE", help_heading = "Input")]
    pub(crate) target: Option<String>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE", help_heading = "Input")]
    pub(crate) build_args: Vec<String>,
    /// An extra named context: NAME=DIR, NAME=docker-image://REF or
    /// NAME=oci-layout://PATH[:TAG] (repeatable)
    #[arg(
        long = "build-context",
        value_name = "NAME=VALUE",
        help_heading = "Input"
    )]
    pub(crate) build_context: Vec<String>,
    /// A secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR] (repeatable)
    #[arg(long, value_name = "id=ID,src=FILE", help_heading = "Input")]
    pub(crate) secret: Vec<String>,
    /// An ssh agent for RUN --mount=type=ssh: default|ID[=SOCKET|KEYFILE,...] (repeatable);
    /// key files are served by an agent kiln runs for the build
    #[arg(long, value_name = "ID[=SOCKET]", help_heading = "Input")]
    pub(crate) ssh: Vec<String>,

    /// Name and optionally a tag (name:tag); repeatable
    #[arg(
        short = 't',
        long = "tag",
        value_name = "NAME",
        help_heading = "Output"
    )]
    pub(crate) tags: Vec<String>,
    /// Where the result goes: type=image|registry|oci|docker|local|tar[,dest=...]
    #[arg(
        short = 'o',
        long = "output",
        value_name = "SPEC",
        help_heading = "Output"
    )]
    pub(crate) output: Vec<String>,
    /// Push the image to its registry and keep it in the local store, as docker build --push (--output type=registry pushes only)
    #[arg(long, help_heading = "Output")]
    pub(crate) push: bool,
    /// Accepted for docker compatibility: kiln's images are always in its local store
    #[arg(long, help_heading = "Output")]
    pub(crate) load: bool,
    /// Set a label on the image (KEY=VALUE; repeatable)
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Output")]
    pub(crate) label: Vec<String>,
    /// Add an annotation to the manifest (KEY=VALUE; repeatable)
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Output")]
    pub(crate) annotation: Vec<String>,
    /// Write the image id to this file
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub(crate) iidfile: Option<PathBuf>,
    /// Write the build result's metadata (digests, names) as JSON to this file
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub(crate) metadata_file: Option<PathBuf>,

    /// Do not use the cache
    #[arg(long, help_heading = "Cache")]
    pub(crate) no_cache: bool,
    /// Do not use the cache for these stages (repeatable)
    #[arg(long, value_name = "STAGE", help_heading = "Cache")]
    pub(crate) no_cache_filter: Vec<String>,
    /// Resolve FROM images in the registry even when the store has them
    #[arg(long, help_heading = "Cache")]
    pub(crate) pull: bool,
    /// Take steps from a cache another build exported: type=local,src=DIR[,tag=TAG]
    /// (repeatable, tried in order)
    #[arg(long, value_name = "SPEC", help_heading = "Cache")]
    pub(crate) cache_from: Vec<String>,
    /// Export the build's steps as a cache: type=local,dest=DIR[,mode=min|max][,tag=TAG]
    /// (an OCI layout; mode=max includes every stage)
    #[arg(long, value_name = "SPEC", help_heading = "Cache")]
    pub(crate) cache_to: Vec<String>,

    /// The target platform, e.g. linux/amd64 (only the host's can run RUN steps)
    #[arg(long, value_name = "PLATFORM", help_heading = "Build environment")]
    pub(crate) platform: Option<String>,
    /// Network for RUN steps: default (own namespace, NAT), none, or host (needs --allow
    /// network.host)
    #[arg(
        long,
        value_name = "MODE",
        default_value = "default",
        help_heading = "Build environment"
    )]
    pub(crate) network: String,
    /// Allow an extra privilege: network.host
    #[arg(long, value_name = "ENTITLEMENT", help_heading = "Build environment")]
    pub(crate) allow: Vec<String>,
    /// How many RUN steps may run at once [default: twice the number of cores]
    #[arg(long, value_name = "N", help_heading = "Build environment")]
    pub(crate) jobs: Option<usize>,

    /// Progress output: auto, tty, plain, rawjson or quiet
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "auto",
        help_heading = "Feedback"
    )]
    pub(crate) progress: String,
    /// Print only the image id
    #[arg(short = 'q', long, help_heading = "Feedback")]
    pub(crate) quiet: bool,
    /// Run the build checks (lint rules) and stop, without building
    #[arg(long, help_heading = "Feedback")]
    pub(crate) check: bool,
    /// Say, for every step that runs, why it was not taken from the cache (compared with
    /// the last build of the same Dockerfile and target; `kiln explain` repeats it later)
    #[arg(long, help_heading = "Feedback")]
    pub(crate) explain: bool,
    /// Instead of building, call a function of the frontend, as buildx does:
    /// outline (the build args, secrets and ssh ids the target uses), targets (the
    /// stages), check (the build checks, as --check) or build; `,format=json` for JSON
    #[arg(long, value_name = "NAME[,format=json]", help_heading = "Feedback")]
    pub(crate) call: Option<String>,
    /// Build, then rebuild whenever the Dockerfile or a file the build reads changes,
    /// showing only the steps that ran again and why (--explain); Ctrl-C stops
    #[arg(long, help_heading = "Feedback")]
    pub(crate) watch: bool,
    /// With --watch: run CMD [ARGS...] after each successful build, the image id in
    /// $KILN_IMAGE; not through a shell (give sh -c '...' for one). Takes the rest of
    /// the command line, so it comes last
    #[arg(
        long,
        value_name = "CMD",
        num_args = 1..,
        allow_hyphen_values = true,
        requires = "watch",
        help_heading = "Feedback"
    )]
    pub(crate) exec: Vec<String>,
    /// When a RUN fails: fail (the default), shell (an interactive shell in its sandbox,
    /// as the command left it; leaving it ends the build) or keep (its state kept for
    /// `kiln debug shell ID`); with shell or keep, kiln exits with the RUN's exit code
    #[arg(long, value_enum, default_value_t, value_name = "MODE")]
    pub(crate) on_error: crate::cmd::run::OnError,
}

/// A failure already shown to the user; the process exits 1.
#[derive(Debug)]
pub(crate) struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the build failed")
    }
}

impl std::error::Error for Reported {}

fn pairs(flag: &str, values: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for value in values {
        let (k, v) = value
            .split_once('=')
            .with_context(|| format!("--{flag} {value:?}: write KEY=VALUE"))?;
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// The flags as a request (the context is set by the caller).
pub(crate) fn request(args: &BuildArgs, context: ContextSource) -> anyhow::Result<BuildRequest> {
    let mut request = BuildRequest::new(context);
    for spec in &args.cache_from {
        request.cache_from.push(CacheImportSpec::parse(spec)?);
    }
    for spec in &args.cache_to {
        request.cache_to.push(CacheExportSpec::parse(spec)?);
    }
    let env = |k: &str| std::env::var(k).ok();
    // As buildx does: SOURCE_DATE_EPOCH in the environment is a build arg unless given.
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        request
            .build_args
            .insert("SOURCE_DATE_EPOCH".to_owned(), epoch);
    }
    for arg in &args.build_args {
        if let Some((k, v)) = parse_key_value("build-arg", arg, &env)? {
            request.build_args.insert(k, v);
        }
    }
    request.target = args.target.clone();
    request.annotations = pairs("annotation", &args.annotation)?;
    request.labels = pairs("label", &args.label)?;
    request.tags = args.tags.clone();
    let mut stdout = Some(|| Sink::new(Box::new(std::io::stdout())));
    for value in &args.output {
        let sink = stdout.take();
        let output = Output::parse(value, || match sink {
            Some(make) => make(),
            None => Sink::new(Box::new(std::io::sink())),
        })
        .map_err(|e| anyhow::anyhow!("{}", e.render().trim_start_matches("error: ").trim_end()))?;
        request.outputs.push(output);
    }
    if args.push {
        request.push_image();
    }
    request.no_cache = args.no_cache;
    request.no_cache_filter = args.no_cache_filter.clone();
    request.pull = args.pull;
    request.platform = match &args.platform {
        Some(text) => Some(frontend::parse_platform(text).with_context(|| {
            format!("--platform {text:?}: write OS/ARCH[/VARIANT], e.g. linux/amd64")
        })?),
        None => None,
    };
    request.network = NetworkMode::parse(&args.network)?;
    request.secrets = args
        .secret
        .iter()
        .map(|s| SecretSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    request.ssh = args
        .ssh
        .iter()
        .map(|s| SshSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    for entitlement in &args.allow {
        request
            .allow
            .push(Entitlement::parse(entitlement).map_err(|e| {
                anyhow::anyhow!("{}", e.render().trim_start_matches("error: ").trim_end())
            })?);
    }
    for value in &args.build_context {
        let (name, context) = parse_build_context(value)?;
        request.named_contexts.insert(name, context);
    }
    request.jobs = args.jobs;
    request.explain = args.explain;
    Ok(request)
}

/// The context and the Dockerfile as the flags name them: a directory, `-` (a tar or a
/// lone Dockerfile on stdin) or a git URL; `-f -` reads the Dockerfile from stdin.
fn sources(engine: &Engine, args: &BuildArgs) -> anyhow::Result<(ContextSource, DockerfileSource)> {
    let context_text = args.context.to_string_lossy().into_owned();
    let is_git = kiln_solver::ops::git::is_git_url(&context_text);
    if context_text.contains("://") && !is_git {
        bail!(
            "the build context {context_text} is a URL kiln cannot build from: give a directory, - for a tar on stdin, or a git repository (https://HOST/REPO.git#REF:DIR)"
        );
    }
    let dockerfile = match &args.file {
        None => DockerfileSource::Default,
        Some(path) if path == Path::new("-") => {
            if context_text == "-" {
                bail!("the context and the Dockerfile cannot both come from stdin");
            }
            let text = kiln_solver::input_file::read_dockerfile_from(std::io::stdin().lock())
                .map_err(|e| anyhow::anyhow!("{}", e.render("-").trim_end()))?;
            DockerfileSource::Inline {
                name: "Dockerfile".to_owned(),
                text,
            }
        }
        // With a git context, -f names a file inside the checkout, as docker build does.
        Some(path) if is_git => DockerfileSource::InContext(path.to_string_lossy().into_owned()),
        Some(path) => DockerfileSource::Path(path.clone()),
    };
    let context = if context_text == "-" {
        ContextSource::Temp(
            engine
                .context_from_stream(
                    std::io::stdin().lock(),
                    MAX_STDIN_CONTEXT,
                    args.file.is_none(),
                )
                .context("read the context from stdin")?,
        )
    } else if is_git {
        ContextSource::Git(context_text)
    } else {
        ContextSource::Dir(args.context.clone())
    };
    Ok((context, dockerfile))
}

/// Prints an error the engine rendered; the process then exits 1.
pub(crate) fn report(e: &BuildError, log: Option<BuildLog>) -> anyhow::Error {
    let text = e.render();
    eprint!("{text}");
    if let Some(log) = log {
        log.finish(&text);
    }
    Reported.into()
}

pub(crate) fn build(
    global: &GlobalArgs,
    host: Option<&str>,
    args: BuildArgs,
) -> anyhow::Result<ExitCode> {
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        Mode::parse(&args.progress).with_context(|| {
            format!(
                "unknown --progress {:?}: use auto, plain, rawjson or quiet",
                args.progress
            )
        })?
    };
    if args.watch {
        return crate::cmd::watch::watch(global, host, args, mode);
    }
    let call = crate::cmd::call::for_build(&args)?;
    args.on_error.check(host.filter(|_| call.is_none()))?;
    // `--check` and `--call` build nothing: they run here, whatever --host says (the
    // Dockerfile and the .dockerignore are this machine's; base images are looked up
    // in its store).
    if let Some(host) = host.filter(|_| call.is_none()) {
        return crate::cmd::remote::build(global, host, args, mode);
    }
    let engine = crate::cmd::store::open_engine(global)?;
    let (context, dockerfile) = sources(&engine, &args)?;
    let mut request = request(&args, context)?;
    request.dockerfile = dockerfile;
    let (hook, kept) = crate::cmd::run::failed_step_hook(args.on_error, &engine);
    request.on_failed_step = hook;
    let runtime = crate::cmd::registry::runtime()?;
    if let Some(call) = call {
        return crate::cmd::call::run(&engine, &runtime, request, call);
    }
    // An output written to stdout owns it; the id then goes only to stderr.
    let stdout_taken = request
        .outputs
        .iter()
        .any(|o| matches!(o.dest, Some(kiln_engine::Destination::Stream(_))));
    let started = std::time::Instant::now();
    let cancel = Cancel::new();
    let log = BuildLog::create(&engine.store().logs_dir());
    let (built, rendered, signal) = runtime.block_on(async {
        let (sender, events) = Progress::channel();
        let renderer = tokio::spawn(progress::render(mode, events, log));
        let mut signals = crate::interrupt::Signals::catch();
        let interrupt = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let signal = signals.next().await;
                cancel.cancel();
                signal
            })
        };
        let built = engine.build(request, sender, cancel.clone()).await;
        let signal = if interrupt.is_finished() {
            interrupt.await.ok()
        } else {
            interrupt.abort();
            None
        };
        (built, renderer.await.ok(), signal)
    });
    let (tally, log) = match rendered {
        Some((tally, log)) => (tally, Some(log)),
        None => (Tally::default(), None),
    };
    let outcome = match built {
        Ok(outcome) => outcome,
        Err(e) => {
            let reported = report(&e, log);
            // Cancelled by a signal: the sandboxes and temp space are gone by now.
            if let Some(signal) = signal {
                return Err(crate::interrupt::Interrupted(signal).into());
            }
            return match crate::cmd::run::print_kept(&kept) {
                Some(code) => Ok(code),
                None => Err(reported),
            };
        }
    };
    let finished = Finished::of(&outcome);
    finish(&args, mode, &finished, tally, log, started, stdout_taken)
}

/// What a finished build shows, built here or by a server.
pub(crate) struct Finished {
    pub(crate) id: String,
    pub(crate) layers: usize,
    pub(crate) size: u64,
    /// What the outputs did.
    pub(crate) lines: Vec<String>,
    pub(crate) warnings: Vec<String>,
    /// The build checks' findings, rendered.
    pub(crate) findings: Vec<String>,
    pub(crate) metadata: serde_json::Value,
}

impl Finished {
    /// What a build of this process shows.
    pub(crate) fn of(outcome: &kiln_engine::BuildOutcome) -> Finished {
        Finished {
            id: outcome.image.id.to_string(),
            layers: outcome.image.manifest.layers.len(),
            size: kiln_engine::image_size(&outcome.image),
            lines: outcome.delivered.lines.clone(),
            warnings: outcome.warnings.clone(),
            findings: outcome.rendered_findings(),
            metadata: outcome.metadata.clone(),
        }
    }
}

/// The end of a successful build: `--iidfile`, `--metadata-file`, the summary, the
/// findings and the id on stdout (unless an output owns stdout).
pub(crate) fn finish(
    args: &BuildArgs,
    mode: Mode,
    finished: &Finished,
    tally: Tally,
    log: Option<BuildLog>,
    started: std::time::Instant,
    stdout_taken: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &finished.id)
            .with_context(|| format!("write --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let text = serde_json::to_string_pretty(&finished.metadata)?;
        std::fs::write(path, text)
            .with_context(|| format!("write --metadata-file {}", path.display()))?;
    }
    let summary = format!(
        "Built {} in {:.1}s: {} steps run, {} cached; {} layers, {:.1} MB",
        finished.id,
        started.elapsed().as_secs_f64(),
        tally.ran,
        tally.cached,
        finished.layers,
        finished.size as f64 / 1e6
    );
    let lines = &finished.lines;
    if let Some(log) = log {
        log.finish(&format!("\n{summary}\n{}\n", lines.join("\n")));
    }
    if mode != Mode::Quiet {
        let mut err = std::io::stderr().lock();
        for warning in &finished.warnings {
            writeln!(err, "warning: {warning}")?;
        }
        writeln!(err)?;
        writeln!(err, "{}", Paint::for_stderr().green(&summary))?;
        for line in lines {
            writeln!(err, "{line}")?;
        }
        if !finished.findings.is_empty() {
            writeln!(
                err,
                "\n{} build check warning(s) (kiln check shows them alone):",
                finished.findings.len()
            )?;
            for finding in &finished.findings {
                write!(err, "{finding}")?;
            }
        }
    }
    if !stdout_taken {
        writeln!(std::io::stdout(), "{}", finished.id)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {}

/// `kiln logs`: the last build's whole log, every step's output unclipped.
/// `kiln explain`: the reasons the last build's steps ran.
pub(crate) fn explain(global: &GlobalArgs, _args: LogsArgs) -> anyhow::Result<ExitCode> {
    let engine = crate::cmd::store::open_engine(global)?;
    let lines = engine.last_explained()?.with_context(|| {
        format!(
            "no build has run with the store {}",
            engine.store().root().display()
        )
    })?;
    let mut out = std::io::stdout().lock();
    if lines.is_empty() {
        writeln!(out, "every step of the last build came from the cache")?;
    }
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logs(global: &GlobalArgs, _args: LogsArgs) -> anyhow::Result<ExitCode> {
    let store = crate::cmd::store::open_store(global)?;
    let path = progress::last_log(&store.logs_dir())
        .with_context(|| format!("no build has run with the store {}", store.root().display()))?;
    let mut file = std::fs::File::open(&path)
        .with_context(|| format!("open the build log {}", path.display()))?;
    std::io::copy(&mut file, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
