//! `kiln build`: flags -> lowering -> solve -> image in the store, with progress.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use kiln_exporter::image::find_image;
use kiln_parser::dockerignore::{self, Matcher};
use kiln_snapshotter::Store;
use kiln_solver::cancel::Cancel;
use kiln_solver::context::ContextTree;
use kiln_solver::frontend::{self, BaseImage, LowerOptions, NamedSource, Platform};
use kiln_solver::ops::Op;
use kiln_solver::progress::Progress;
use kiln_solver::request::{
    NamedContext, NetworkMode, SecretSpec, SshSpec, parse_build_context, parse_key_value,
};
use kiln_solver::solve::{self, SolveError, SolveOptions, StepError};

use crate::args::GlobalArgs;
use crate::cmd::context::{TempContext, import_oci_layout};
use crate::cmd::output;
use crate::progress::{self, BuildLog, Mode, Paint, Tally};

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
    /// Push the image to its registry (same as --output type=registry)
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
    /// External cache sources (accepted; not supported yet: kiln's cache is its store)
    #[arg(long, value_name = "SPEC", help_heading = "Cache")]
    pub(crate) cache_from: Vec<String>,
    /// External cache destinations (accepted; not supported yet)
    #[arg(long, value_name = "SPEC", help_heading = "Cache")]
    pub(crate) cache_to: Vec<String>,

    /// The target platform, e.g. linux/amd64 (only the host's can run RUN steps)
    #[arg(long, value_name = "PLATFORM", help_heading = "Build environment")]
    pub(crate) platform: Option<String>,
    /// Network for RUN steps: default or none
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

struct Dockerfile {
    name: String,
    text: String,
    path: Option<PathBuf>,
}

fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<Dockerfile> {
    match &args.file {
        Some(path) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the Dockerfile from stdin")?;
            Ok(Dockerfile {
                name: "Dockerfile".to_owned(),
                text,
                path: None,
            })
        }
        given => {
            let path = given
                .clone()
                .unwrap_or_else(|| args.context.join("Dockerfile"));
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "read the Dockerfile {}; give its path with -f FILE",
                    path.display()
                )
            })?;
            let name = given
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "Dockerfile".to_owned());
            Ok(Dockerfile {
                name,
                text,
                path: Some(path),
            })
        }
    }
}

/// The `.dockerignore` that applies: `<Dockerfile>.dockerignore` beside the Dockerfile
/// first, then the context's `.dockerignore`.
pub(crate) fn ignore_for(context: &Path, dockerfile: Option<&Path>) -> anyhow::Result<Matcher> {
    let mut candidates = Vec::new();
    if let Some(path) = dockerfile
        && let (Some(dir), Some(name)) = (path.parent(), path.file_name())
    {
        candidates.push(dir.join(format!("{}.dockerignore", name.to_string_lossy())));
    }
    candidates.push(context.join(".dockerignore"));
    for candidate in candidates {
        match std::fs::read_to_string(&candidate) {
            Ok(text) => {
                return Matcher::from_lines(&dockerignore::read_ignore_lines(&text))
                    .with_context(|| candidate.display().to_string());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", candidate.display())),
        }
    }
    Ok(Matcher::default())
}

fn base_image(store: &Store, reference: &str) -> Result<Option<BaseImage>, String> {
    let (names, image) = match find_image(store, reference) {
        Ok(found) => found,
        Err(kiln_snapshotter::StoreError::ImageNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    Ok(Some(BaseImage {
        reference: names
            .first()
            .cloned()
            .unwrap_or_else(|| reference.to_owned()),
        digest: image.manifest_descriptor.digest.to_string(),
        config: image.config,
        layers: image.manifest.layers,
    }))
}

fn pull_base(
    store: &Store,
    runtime: &tokio::runtime::Runtime,
    reference: &str,
    platform: &Platform,
) -> Result<BaseImage, String> {
    use kiln_exporter::registry::{ImageRef, Registry};
    let image_ref = ImageRef::parse(reference).map_err(|e| e.to_string())?;
    let wanted = platform.clone();
    let config = crate::cmd::registry::registry_config(&[]).map_err(|e| format!("{e:#}"))?;
    runtime
        .block_on(async {
            let registry = Registry::new(config)?;
            kiln_exporter::transfer::pull(store, &registry, &image_ref, &wanted, reference).await
        })
        .map_err(|e| format!("{reference}: not in the local store, and pulling it failed: {e}"))?;
    base_image(store, reference)?
        .ok_or_else(|| format!("{reference}: pulled, but not found in the store afterwards"))
}

pub(crate) fn build(global: &GlobalArgs, args: BuildArgs) -> anyhow::Result<ExitCode> {
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
    let mut build_args = BTreeMap::new();
    let env = |k: &str| std::env::var(k).ok();
    // As buildx does: SOURCE_DATE_EPOCH in the environment is a build arg unless given.
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        build_args.insert("SOURCE_DATE_EPOCH".to_owned(), epoch);
    }
    for arg in &args.build_args {
        if let Some((k, v)) = parse_key_value("build-arg", arg, &env)? {
            build_args.insert(k, v);
        }
    }
    for spec in args.cache_from.iter().chain(&args.cache_to) {
        eprintln!(
            "warning: --cache-from/--cache-to {spec}: external caches are not supported by kiln yet; the local store's cache is used"
        );
    }
    let mut annotations = BTreeMap::new();
    for annotation in &args.annotation {
        let (k, v) = annotation
            .split_once('=')
            .with_context(|| format!("--annotation {annotation:?}: write KEY=VALUE"))?;
        annotations.insert(k.to_owned(), v.to_owned());
    }
    let mut labels = BTreeMap::new();
    for label in &args.label {
        let (k, v) = label
            .split_once('=')
            .with_context(|| format!("--label {label:?}: write KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    for tag in &args.tags {
        kiln_snapshotter::normalize_name(tag).with_context(|| format!("-t {tag}"))?;
    }
    let outputs = output::parse_outputs(&args.output, args.push)?;
    let platform = match &args.platform {
        Some(text) => Some(frontend::parse_platform(text).with_context(|| {
            format!("--platform {text:?}: write OS/ARCH[/VARIANT], e.g. linux/amd64")
        })?),
        None => None,
    };
    let network = NetworkMode::parse(&args.network)?;
    let secrets = args
        .secret
        .iter()
        .map(|s| SecretSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let ssh = args
        .ssh
        .iter()
        .map(|s| SshSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    for entitlement in &args.allow {
        if entitlement != "network.host" {
            bail!(
                "--allow {entitlement}: kiln grants only network.host (security.insecure is not supported)"
            );
        }
    }
    let context_text = args.context.to_string_lossy().into_owned();
    let is_git = kiln_solver::ops::git::is_git_url(&context_text);
    if context_text.contains("://") && !is_git {
        bail!(
            "the build context {context_text} is a URL kiln cannot build from: give a directory, - for a tar on stdin, or a git repository (https://HOST/REPO.git#REF:DIR)"
        );
    }
    let store = crate::cmd::store::open_store(global)?;
    let _building = store.lock_for_build()?;
    // `-`: a tar archive on stdin becomes the context; anything else is the Dockerfile,
    // with an empty context (docker build - < Dockerfile).
    let stdin_context = if context_text == "-" {
        Some(TempContext::read(&store, args.file.is_none())?)
    } else if is_git {
        Some(TempContext::git(&store, &context_text)?)
    } else {
        if !args.context.is_dir() {
            bail!(
                "the build context {} is not a directory; give the directory to build from (or - for a tar on stdin)",
                args.context.display()
            );
        }
        None
    };
    let mut args = args;
    if let Some(temp) = &stdin_context {
        args.context = temp.context.clone();
        // -f names a file inside the checkout, as docker build does for git contexts.
        if is_git && let Some(file) = &args.file {
            args.file = Some(temp.context.join(file));
        }
    }
    let mut named = BTreeMap::new();
    for value in &args.build_context {
        let (name, context) = parse_build_context(value)?;
        named.insert(name, context);
    }
    let dockerfile = match stdin_context.as_ref().and_then(|s| s.dockerfile.clone()) {
        Some(text) => Dockerfile {
            name: "Dockerfile".to_owned(),
            text,
            path: None,
        },
        None => read_dockerfile(&args)?,
    };
    let parsed = match kiln_parser::parse(&dockerfile.text) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprint!("{}", e.render(&dockerfile.name, &dockerfile.text));
            return Err(Reported.into());
        }
    };
    // The build checks: --check runs only them; otherwise they are warnings shown after
    // the build, and `# check=error=true` findings stop it before anything runs.
    let lint_findings = crate::cmd::check::findings(
        &parsed,
        &dockerfile.text,
        &build_args,
        args.target.as_deref(),
        Some(ignore_for(&args.context, dockerfile.path.as_deref())?),
        Some(&store),
    );
    if args.check || kiln_parser::lint::violation(&lint_findings).is_some() {
        crate::cmd::check::print(&lint_findings, &dockerfile.name, &dockerfile.text);
        if let Some(message) = kiln_parser::lint::violation(&lint_findings) {
            eprintln!("error: {message}");
            return Err(Reported.into());
        }
        eprintln!("Check complete: {} finding(s)", lint_findings.len());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(syntax) = &parsed.directives.syntax {
        // kiln is its own Dockerfile frontend: the directive is noted, never fetched.
        let image = syntax.split(['@', ':']).next().unwrap_or_default();
        if !matches!(image, "docker/dockerfile" | "docker.io/docker/dockerfile") {
            eprintln!(
                "warning: # syntax={syntax} asks for another frontend; kiln builds the file with its own Dockerfile frontend"
            );
        }
    }
    let runtime = crate::cmd::registry::runtime()?;
    let mut named_contexts = BTreeMap::new();
    let mut context_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    context_dirs.insert("context".to_owned(), args.context.clone());
    for (name, context) in &named {
        let source = match context {
            NamedContext::Dir(dir) => {
                if !dir.is_dir() {
                    bail!("--build-context {name}={}: not a directory", dir.display());
                }
                context_dirs.insert(name.clone(), dir.clone());
                NamedSource::Dir
            }
            NamedContext::Image(reference) => NamedSource::Image(reference.clone()),
            NamedContext::OciLayout(layout) => {
                NamedSource::Image(import_oci_layout(&store, name, layout)?)
            }
            NamedContext::Url(url) => bail!(
                "--build-context {name}={url}: git and https contexts are not supported by kiln yet; clone or download it and pass the directory"
            ),
        };
        named_contexts.insert(name.clone(), source);
    }
    let options = LowerOptions {
        build_args,
        target: args.target.clone(),
        platform: platform.clone(),
        labels,
        network,
        allow: args.allow.clone(),
        named_contexts,
    };
    let pull = args.pull;
    let mut resolve = |reference: &str, wanted: &Platform| -> Result<BaseImage, String> {
        let local = if pull {
            None
        } else {
            base_image(&store, reference)?
        };
        match local {
            Some(image) if image.config.architecture == wanted.architecture => Ok(image),
            Some(image) => pull_base(&store, &runtime, reference, wanted).map_err(|e| {
                format!(
                    "the store has {reference} for linux/{} only, and {} is needed: {e}",
                    image.config.architecture, wanted
                )
            }),
            None => pull_base(&store, &runtime, reference, wanted),
        }
    };
    let plan = match frontend::lower(&parsed, &options, &mut resolve) {
        Ok(plan) => plan,
        Err(e) => {
            let text = match e.span {
                Some(span) => kiln_parser::excerpt(
                    &dockerfile.name,
                    &dockerfile.text,
                    &span,
                    &e.message,
                    e.hint.as_deref(),
                ),
                None => {
                    let mut text = format!("error: {}\n", e.message);
                    if let Some(hint) = &e.hint {
                        text.push_str(&format!("  = hint: {hint}\n"));
                    }
                    text
                }
            };
            eprint!("{text}");
            return Err(Reported.into());
        }
    };
    for arg in &plan.unused_args {
        eprintln!("warning: build argument {arg:?} was given but no ARG in the build uses it");
    }
    let plan = Arc::new(plan);
    let needed_contexts: Vec<String> = plan
        .graph
        .needed_for(&[plan.target])
        .iter()
        .filter_map(|&v| match &plan.graph.vertex(v).op {
            Op::Context { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let ignore = ignore_for(&args.context, dockerfile.path.as_deref())?;
    let mut contexts = HashMap::new();
    for name in needed_contexts {
        let Some(dir) = context_dirs.get(&name) else {
            continue;
        };
        let matcher = if name == "context" {
            ignore.clone()
        } else {
            ignore_for(dir, None)?
        };
        let tree = ContextTree::scan(dir, &matcher)
            .with_context(|| format!("read the build context {}", dir.display()))?;
        contexts.insert(name, Arc::new(tree));
    }
    let solve_options = SolveOptions {
        no_cache: args.no_cache,
        no_cache_stages: args.no_cache_filter.clone(),
        jobs: args.jobs.unwrap_or(0),
        ignore: Some(ignore),
        secrets,
        ssh,
    };
    let index_path = store.root().join("cache.db");
    let started = std::time::Instant::now();
    let cancel = Cancel::new();
    let log = BuildLog::create(store.root());
    let outcome = runtime.block_on(async {
        let (sender, events) = Progress::channel();
        let renderer = tokio::spawn(progress::render(mode, events, log));
        let interrupt = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            })
        };
        let solved = solve::solve(
            Arc::clone(&plan),
            store.clone(),
            index_path.clone(),
            contexts,
            &solve_options,
            sender,
            cancel.clone(),
        )
        .await;
        interrupt.abort();
        let rendered = renderer.await.ok();
        (solved, rendered)
    });
    let (solved, rendered) = outcome;
    let (tally, log) = match rendered {
        Some((tally, log)) => (tally, Some(log)),
        None => (Tally::default(), None),
    };
    let fail = |e: &SolveError, log: Option<BuildLog>| {
        let text = failure_text(e, &dockerfile);
        eprint!("{text}");
        if let Some(log) = log {
            log.finish(&text);
        }
    };
    let solved = match solved {
        Ok(solved) => solved,
        Err(e) => {
            fail(&e, log);
            return Err(Reported.into());
        }
    };
    let image = match solve::export_image(&store, &index_path, &plan, &solved, annotations.clone())
    {
        Ok(image) => image,
        Err(e) => {
            fail(&e, log);
            return Err(Reported.into());
        }
    };
    let delivered = output::deliver(&store, &image, &outputs, &args.tags, &annotations)?;
    if let Some(path) = &args.iidfile {
        std::fs::write(path, image.id.as_str())
            .with_context(|| format!("write --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        output::write_metadata(path, &image, &delivered)?;
    }
    let size: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    let summary = format!(
        "Built {} in {:.1}s: {} steps run, {} cached; {} layers, {:.1} MB",
        image.id,
        started.elapsed().as_secs_f64(),
        tally.ran,
        tally.cached,
        image.manifest.layers.len(),
        size as f64 / 1e6
    );
    if let Some(log) = log {
        log.finish(&format!("\n{summary}\n{}\n", delivered.lines.join("\n")));
    }
    // An output written to stdout owns it; the id then goes only to stderr.
    let stdout_taken = outputs
        .iter()
        .any(|o| o.attrs.get("dest").is_some_and(|d| d == "-"));
    if mode != Mode::Quiet {
        let mut err = std::io::stderr().lock();
        writeln!(err)?;
        writeln!(err, "{}", Paint::for_stderr().green(&summary))?;
        for line in &delivered.lines {
            writeln!(err, "{line}")?;
        }
    }
    if !lint_findings.is_empty() && mode != Mode::Quiet {
        eprintln!(
            "\n{} build check warning(s) (kiln check shows them alone):",
            lint_findings.len()
        );
        crate::cmd::check::print(&lint_findings, &dockerfile.name, &dockerfile.text);
    }
    if !stdout_taken {
        writeln!(std::io::stdout(), "{}", image.id)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn failure_text(e: &SolveError, dockerfile: &Dockerfile) -> String {
    if e.is_cancelled() {
        return "error: the build was cancelled; nothing was tagged\n".to_owned();
    }
    let mut message = e.error.to_string();
    let hint = match &*e.error {
        StepError::ExitCode { .. } => {
            Some("fix the command, or run it by hand with `kiln debug run`")
        }
        StepError::SourceNotFound {
            ignored_by: Some(_),
            ..
        } => Some("remove the pattern from .dockerignore, or add a `!` exception for the file"),
        StepError::SourceNotFound { .. } => Some(
            "COPY sources are relative to the build context; check the path and the context directory",
        ),
        _ => None,
    };
    if let Some(label) = &e.label {
        message = format!("{label}: {message}");
    }
    let mut text = match e.span {
        Some(span) => {
            kiln_parser::excerpt(&dockerfile.name, &dockerfile.text, &span, &message, hint)
        }
        None => {
            let mut t = format!("error: {message}\n");
            if let Some(h) = hint {
                t.push_str(&format!("  = hint: {h}\n"));
            }
            t
        }
    };
    if let StepError::ExitCode { tail, .. } = &*e.error
        && !tail.is_empty()
    {
        text.push_str(&format!(
            "  = the last {} lines of its output:\n",
            tail.len()
        ));
        for line in tail {
            text.push_str(&format!("    {line}\n"));
        }
    }
    text
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {}

/// `kiln logs`: the last build's whole log, every step's output unclipped.
pub(crate) fn logs(global: &GlobalArgs, _args: LogsArgs) -> anyhow::Result<ExitCode> {
    let root = crate::cmd::store::store_root(global)?;
    let path = progress::last_log(&root)
        .with_context(|| format!("no build has run with the store {}", root.display()))?;
    let mut file = std::fs::File::open(&path)
        .with_context(|| format!("open the build log {}", path.display()))?;
    std::io::copy(&mut file, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
