//! `kiln --host HOST build`: the same flags, built by a `kiln serve` through kiln's own
//! API (`kiln_serve::wire`). This side reads what only it can read — the context
//! (filtered by its `.dockerignore` while it is sent as a tar), the Dockerfile, secret
//! values, build args from its environment — and renders the server's events with the
//! same progress views as a local build. Nothing of the request touches the server's
//! disk but the context.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use kiln_serve::Host;
use kiln_serve::wire::{BuildSpec, InlineDockerfile, Message, Secret};
use kiln_solver::context::{ContextTree, EntryKind};
use kiln_solver::progress::Event;
use kiln_solver::request::{
    NamedContext, OutputSpec, SecretSource, SecretSpec, parse_build_context, parse_key_value,
};

use crate::args::GlobalArgs;
use crate::cmd::build::{BuildArgs, Finished, Reported, finish};
use crate::progress::{self, BuildLog, Mode, Tally};

/// Where the `dest=-` output the server streams back goes.
enum OutputTarget {
    /// Nowhere: no file output.
    None,
    Stdout,
    /// A file, written beside its destination and renamed over it at the end.
    File {
        dest: PathBuf,
        temp: tempfile::NamedTempFile,
    },
    /// `type=local`: the server sends the filesystem as a tar; a thread writes it into
    /// the directory with local export's protections (no devices or setuid bits unless
    /// `--allow`, nothing through a symlink of `dest`).
    Dir {
        dest: PathBuf,
        pipe: Option<std::io::PipeWriter>,
        worker: Option<LocalWorker>,
    },
}

type LocalWorker = std::thread::JoinHandle<
    Result<kiln_exporter::archive::LocalReport, kiln_exporter::archive::ArchiveError>,
>;

impl OutputTarget {
    /// Starts writing a `type=local` output into `dest` (checked and created first, so a
    /// refused destination fails before anything is built).
    fn dir(
        dest: &Path,
        options: kiln_exporter::archive::LocalOptions,
    ) -> anyhow::Result<OutputTarget> {
        kiln_exporter::archive::check_local_dest(dest, &options)?;
        let (reader, writer) = std::io::pipe()?;
        let at = dest.to_owned();
        let worker = std::thread::spawn(move || {
            kiln_exporter::archive::write_rootfs_stream(reader, &at, &options)
        });
        Ok(OutputTarget::Dir {
            dest: dest.to_owned(),
            pipe: Some(writer),
            worker: Some(worker),
        })
    }

    /// The writer thread's own error, when it stopped reading.
    fn worker_error(worker: &mut Option<LocalWorker>) -> Option<String> {
        match worker.take()?.join() {
            Ok(Err(e)) => Some(e.to_string()),
            Ok(Ok(_)) => None,
            Err(_) => Some("the local output's writer panicked".to_owned()),
        }
    }
}

impl OutputTarget {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            OutputTarget::None => Err(std::io::Error::other(
                "the server sent output bytes that no -o asked for",
            )),
            OutputTarget::Stdout => std::io::stdout().lock().write_all(bytes),
            OutputTarget::File { temp, .. } => temp.write_all(bytes),
            OutputTarget::Dir { pipe, worker, .. } => {
                let written = match pipe {
                    Some(pipe) => pipe.write_all(bytes),
                    None => Err(std::io::Error::other("the local output is closed")),
                };
                written.map_err(|e| match OutputTarget::worker_error(worker) {
                    Some(why) => std::io::Error::other(why),
                    None => e,
                })
            }
        }
    }

    /// Finishes the output; for `type=local`, the line that says what it wrote.
    fn commit(self) -> anyhow::Result<Option<String>> {
        match self {
            OutputTarget::Dir {
                dest,
                pipe,
                mut worker,
            } => {
                drop(pipe);
                let report = worker
                    .take()
                    .context("the local output's writer is gone")?
                    .join()
                    .map_err(|_| anyhow::anyhow!("the local output's writer panicked"))??;
                Ok(Some(kiln_engine::local_output_line(&dest, &report)))
            }
            other => other.commit_file().map(|()| None),
        }
    }

    fn commit_file(self) -> anyhow::Result<()> {
        match self {
            OutputTarget::None | OutputTarget::Dir { .. } => Ok(()),
            OutputTarget::Stdout => Ok(std::io::stdout().flush()?),
            OutputTarget::File { dest, temp } => {
                temp.as_file().sync_all()?;
                temp.persist(&dest)
                    .with_context(|| format!("write the output {}", dest.display()))?;
                Ok(())
            }
        }
    }
}

/// A file output's destination on this machine: refused unless it is absent or a
/// regular file (the rule of local builds), written through a temp file beside it.
fn output_file(dest: &Path) -> anyhow::Result<OutputTarget> {
    if let Ok(meta) = std::fs::symlink_metadata(dest)
        && !meta.file_type().is_file()
    {
        bail!(
            "-o dest={}: exists and is not a regular file; give a new path (or dest=- for stdout)",
            dest.display()
        );
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".kiln-output-")
        .tempfile_in(dir)
        .with_context(|| format!("create a file in {}", dir.display()))?;
    Ok(OutputTarget::File {
        dest: dest.to_owned(),
        temp,
    })
}

/// The outputs as the server gets them (file outputs become `dest=-`), and where their
/// bytes go here.
fn outputs(args: &BuildArgs) -> anyhow::Result<(Vec<String>, OutputTarget)> {
    let mut sent = Vec::new();
    let mut target = OutputTarget::None;
    for value in &args.output {
        let mut spec = OutputSpec::parse(value)?;
        if spec.kind == "local" {
            if !matches!(target, OutputTarget::None) {
                bail!(
                    "-o {value}: through --host only one output can be a file or directory; build the others separately"
                );
            }
            let dest = spec.attrs.get("dest").cloned().unwrap_or_default();
            if dest.is_empty() || dest == "-" {
                bail!("-o {value}: type=local needs dest=DIR (for a stream use type=tar,dest=-)");
            }
            let merge = match spec.attrs.get("merge").map(String::as_str) {
                None | Some("false") | Some("0") => false,
                Some("true") | Some("1") | Some("") => true,
                Some(other) => {
                    bail!("-o {value}: merge={other} is not a boolean; use true or false")
                }
            };
            if let Some(other) = spec
                .attrs
                .keys()
                .find(|k| !["dest", "merge"].contains(&k.as_str()))
            {
                bail!("-o {value}: kiln does not support {other} for type=local");
            }
            let options = kiln_exporter::archive::LocalOptions {
                merge,
                devices: args.allow.iter().any(|a| a == "export.devices"),
                setuid: args.allow.iter().any(|a| a == "export.setuid"),
            };
            target = OutputTarget::dir(Path::new(&dest), options)?;
            sent.push("type=tar,dest=-".to_owned());
            continue;
        }
        if let Some(dest) = spec.attrs.get("dest").cloned() {
            if !matches!(target, OutputTarget::None) {
                bail!(
                    "-o {value}: through --host only one output can be a file; build the others separately"
                );
            }
            target = if dest == "-" {
                OutputTarget::Stdout
            } else {
                output_file(Path::new(&dest))?
            };
            spec.attrs.insert("dest".to_owned(), "-".to_owned());
        }
        // Back into buildx's CSV: a pair with a comma or a quote is quoted.
        let attrs: Vec<String> = spec
            .attrs
            .iter()
            .map(|(k, v)| {
                if v.contains([',', '"']) {
                    format!("\"{k}={}\"", v.replace('"', "\"\""))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let mut text = format!("type={}", spec.kind);
        for attr in attrs {
            text.push(',');
            text.push_str(&attr);
        }
        sent.push(text);
    }
    Ok((sent, target))
}

/// The secrets' values, read here. An environment variable that is not set is left out,
/// as a local build leaves it: the step that needs it says so.
fn secrets(args: &BuildArgs) -> anyhow::Result<Vec<Secret>> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for value in &args.secret {
        let spec = SecretSpec::parse(value)?;
        let bytes = match &spec.source {
            SecretSource::File(path) => kiln_solver::input_file::read_regular_file(
                path,
                &format!("--secret id={}", spec.id),
                kiln_solver::input_file::MAX_SECRET_SIZE,
            )?,
            SecretSource::Env(var) => match std::env::var_os(var) {
                Some(v) => v.into_encoded_bytes(),
                None => continue,
            },
            SecretSource::Value(v) => v.0.to_vec(),
        };
        out.push(Secret {
            id: spec.id,
            value: base64::engine::general_purpose::STANDARD.encode(bytes),
        });
    }
    Ok(out)
}

/// The Dockerfile as a local build would read it, and its path (for
/// `NAME.dockerignore`).
fn dockerfile(args: &BuildArgs) -> anyhow::Result<(InlineDockerfile, Option<PathBuf>)> {
    let render = |e: kiln_solver::input_file::DockerfileError, name: &str| {
        anyhow::anyhow!("{}", e.render(name).trim_end())
    };
    match &args.file {
        Some(path) if path == Path::new("-") => {
            let text = kiln_solver::input_file::read_dockerfile_from(std::io::stdin().lock())
                .map_err(|e| render(e, "-"))?;
            Ok((
                InlineDockerfile {
                    name: "Dockerfile".to_owned(),
                    text,
                },
                None,
            ))
        }
        Some(path) => {
            let name = path.display().to_string();
            let text =
                kiln_solver::input_file::read_dockerfile(path).map_err(|e| render(e, &name))?;
            Ok((InlineDockerfile { name, text }, Some(path.clone())))
        }
        None => {
            let path = args.context.join("Dockerfile");
            let text = kiln_solver::input_file::read_dockerfile(&path)
                .map_err(|e| render(e, "Dockerfile"))?;
            Ok((
                InlineDockerfile {
                    name: "Dockerfile".to_owned(),
                    text,
                },
                Some(path),
            ))
        }
    }
}

/// Writes the context's files (what the `.dockerignore` leaves) as a tar, with owners,
/// modes and times as they are: the server's build sees what a local one sees.
fn write_context(tree: &ContextTree, out: &mut dyn Write) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let root = tree.root().to_owned();
    for (rel, entry) in tree.entries() {
        let name = if rel.is_empty() { "." } else { rel };
        let path = root.join(rel);
        match entry.kind {
            EntryKind::Dir => builder.append_dir(name, &path)?,
            _ => builder.append_path_with_name(&path, name)?,
        }
    }
    builder.into_inner()?.flush()
}

fn spec(args: &BuildArgs) -> anyhow::Result<(BuildSpec, OutputTarget, Option<PathBuf>)> {
    if args.explain {
        bail!(
            "--explain through --host is not supported yet (kiln's API does not carry it); build without --host, or run kiln explain on the server"
        );
    }
    if !args.ssh.is_empty() {
        bail!(
            "--ssh through --host is not supported yet: the agent would have to be forwarded to the server; build without --host"
        );
    }
    if let Some(spec) = args.cache_from.iter().chain(&args.cache_to).next() {
        bail!(
            "--cache-from/--cache-to {spec}: not supported through --host yet (kiln's API does not carry cache specs: a local cache is on this machine, a registry cache would need this machine's registry credentials on the server); build without --host"
        );
    }
    let context = args.context.to_string_lossy();
    if context == "-" || context.contains("://") {
        bail!(
            "the build context {context}: through --host the context must be a directory here (stdin and URL contexts are not supported yet)"
        );
    }
    if !args.context.is_dir() {
        bail!(
            "the build context {} is not a directory",
            args.context.display()
        );
    }
    let mut spec = BuildSpec::default();
    let env = |k: &str| std::env::var(k).ok();
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        spec.build_args
            .insert("SOURCE_DATE_EPOCH".to_owned(), epoch);
    }
    for arg in &args.build_args {
        if let Some((k, v)) = parse_key_value("build-arg", arg, &env)? {
            spec.build_args.insert(k, v);
        }
    }
    for (flag, values, into) in [
        ("label", &args.label, &mut spec.labels),
        ("annotation", &args.annotation, &mut spec.annotations),
    ] {
        for value in values {
            let (k, v) = value
                .split_once('=')
                .with_context(|| format!("--{flag} {value:?}: write KEY=VALUE"))?;
            into.insert(k.to_owned(), v.to_owned());
        }
    }
    for value in &args.build_context {
        match parse_build_context(value)? {
            (name, NamedContext::Image(reference)) => {
                spec.named_contexts
                    .insert(name, format!("docker-image://{reference}"));
            }
            _ => bail!(
                "--build-context {value}: through --host only docker-image://REF is supported yet (the server cannot read this machine's files)"
            ),
        }
    }
    let (outputs, target) = outputs(args)?;
    let (file, path) = dockerfile(args)?;
    spec.dockerfile = Some(file);
    spec.target = args.target.clone();
    spec.tags = args.tags.clone();
    spec.outputs = outputs;
    spec.push = args.push;
    spec.no_cache = args.no_cache;
    spec.no_cache_filter = args.no_cache_filter.clone();
    spec.pull = args.pull;
    spec.platform = args.platform.clone();
    spec.network = Some(args.network.clone());
    spec.allow = args.allow.clone();
    spec.secrets = secrets(args)?;
    spec.jobs = args.jobs;
    Ok((spec, target, path))
}

/// This machine's name for the context directory, so the server can keep it between
/// builds: the host name and the directory's canonical path, hashed (nothing of either
/// reaches the server).
fn context_key(dir: &Path) -> anyhow::Result<String> {
    let path = std::fs::canonicalize(dir)
        .with_context(|| format!("resolve the build context {}", dir.display()))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"kiln context key v1\0");
    hasher.update(host.trim().as_bytes());
    hasher.update(b"\0");
    hasher.update(path.as_os_str().as_encoded_bytes());
    Ok(hasher.finalize().to_hex().to_string())
}

/// Parses `--host` for the client: a UNIX socket, or a TCP port on loopback (the
/// client speaks no TLS yet).
pub(crate) fn parse_host(text: &str) -> anyhow::Result<Host> {
    let host = Host::parse(text)?;
    if let Host::Tcp(addr) = &host
        && !addr.ip().is_loopback()
    {
        bail!(
            "--host {text}: the client reaches TCP servers on loopback only (it speaks no TLS yet); use the server's UNIX socket"
        );
    }
    Ok(host)
}

pub(crate) fn build(
    global: &GlobalArgs,
    host: &str,
    args: BuildArgs,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    let host = parse_host(host)?;
    let (spec, mut target, dockerfile_path) = spec(&args)?;
    let ignore = kiln_engine::ignore_file_for(&args.context, dockerfile_path.as_deref())
        .map_err(|e| anyhow::anyhow!("{}", e.render().trim_start_matches("error: ").trim_end()))?;
    let mut spec = spec;
    let matcher = match &ignore {
        Some((path, text)) => kiln_parser::dockerignore::Matcher::from_lines(
            &kiln_parser::dockerignore::read_ignore_lines(text),
        )
        .with_context(|| format!("{}: fix the pattern", path.display()))?,
        None => kiln_parser::dockerignore::Matcher::default(),
    };
    spec.dockerignore = ignore.map(|(_, text)| text);
    spec.context_key = Some(context_key(&args.context)?);
    let tree = ContextTree::scan(&args.context, &matcher)
        .with_context(|| format!("read the build context {}", args.context.display()))?;
    let stdout_taken = matches!(target, OutputTarget::Stdout);
    let log = BuildLog::create(&crate::cmd::store::open_store(global)?.logs_dir());
    let runtime = crate::cmd::registry::runtime()?;
    let started = std::time::Instant::now();
    let mut last: Option<Message> = None;
    let (followed, rendered) = runtime.block_on(async {
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let renderer = tokio::spawn(progress::render(mode, receiver, log));
        let on_message = |message: Message| -> std::io::Result<()> {
            match message {
                Message::Event(event) => {
                    let _ = events.send(event);
                }
                Message::Output(text) => {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(std::io::Error::other)?;
                    target.write(&bytes)?;
                }
                other => last = Some(other),
            }
            Ok(())
        };
        let mut signals = crate::interrupt::Signals::catch();
        let followed = tokio::select! {
            followed = kiln_serve::client::build(
                &host,
                &spec,
                move |out| write_context(&tree, out),
                on_message,
            ) => followed.map_err(anyhow::Error::from),
            // Dropping the connection cancels the build on the server.
            signal = signals.next() => {
                eprintln!("interrupted: the build was cancelled");
                Err(crate::interrupt::Interrupted(signal).into())
            }
        };
        drop(events);
        (followed, renderer.await.ok())
    });
    let (tally, log) = match rendered {
        Some((tally, log)) => (tally, Some(log)),
        None => (Tally::default(), None),
    };
    followed?;
    match last {
        Some(Message::Result(result)) => {
            let mut lines = result.lines;
            if let Some(local) = target.commit()? {
                // The server wrote a tar to the stream; what the user asked for is the
                // directory this side wrote.
                lines.retain(|l| l != "Wrote the filesystem as a tar to -");
                lines.push(local);
            }
            let finished = Finished {
                id: result.id,
                layers: result.layers,
                size: result.size,
                lines,
                warnings: result.warnings,
                findings: result.findings,
                metadata: result.metadata,
            };
            finish(&args, mode, &finished, tally, log, started, stdout_taken)
        }
        Some(Message::Error(failure)) => {
            eprint!("{}", failure.rendered);
            if let Some(log) = log {
                log.finish(&failure.rendered);
            }
            Err(Reported.into())
        }
        _ => bail!("the server ended the build without a result"),
    }
}
