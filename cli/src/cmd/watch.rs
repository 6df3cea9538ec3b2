//! `kiln build --watch`: build, then rebuild whenever the Dockerfile, its `.dockerignore`
//! or a context file the build reads changes, printing only the steps that ran again,
//! each with its `--explain` reason; `--exec CMD` runs after each successful build.
//!
//! One engine serves every cycle. The watcher (inotify through `notify`) reports paths;
//! after 100 ms without a new report (the debounce), each path is judged against what
//! the last build saw, kept in memory ([`Watched`]):
//! - a path the `.dockerignore` excludes, or that no `COPY`/`ADD` source or `RUN
//!   --mount=type=bind` of the Dockerfile names, is not read by the build: nothing;
//! - a read path whose type, mode, link target and bytes are what they were (a `touch`)
//!   changes no cache key: nothing to rebuild, said in one line with the time the
//!   judgement took;
//! - anything else rebuilds (the solver then re-runs only what the change reaches).
//!
//! Ctrl-C cancels a running build or ends the wait; the command exits 130.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_engine::{ContextSource, DockerfileSource, Engine};
use kiln_parser::ast::Kind;
use kiln_parser::dockerignore::Matcher;
use kiln_solver::cancel::Cancel;
use kiln_solver::context::{ContextTree, EntryKind, clean_context_path};
use kiln_solver::ops::wildcard;
use kiln_solver::progress::{Event, EventKind, Progress};
use notify::Watcher as _;

use crate::args::GlobalArgs;
use crate::cmd::build::{BuildArgs, Finished, finish, report};
use crate::progress::{self, BuildLog, Mode, Tally};

/// How long the tree must be quiet before a cycle starts.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What the watch loop waits for.
enum Message {
    Files(notify::Result<notify::Event>),
    Interrupt,
}

/// `kiln build --watch`.
pub(crate) fn watch(
    global: &GlobalArgs,
    host: Option<&str>,
    args: BuildArgs,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    if let Some(host) = host {
        bail!(
            "--watch with --host {host}: the server cannot watch this machine's files; run kiln build --watch without --host"
        );
    }
    if args.check || args.call.is_some() {
        bail!("--watch rebuilds; --check and --call build nothing: give one or the other");
    }
    let context_text = args.context.to_string_lossy();
    if context_text == "-" || context_text.contains("://") || !args.context.is_dir() {
        bail!(
            "--watch needs a context directory to watch; {} is not one",
            args.context.display()
        );
    }
    if args.file.as_deref() == Some(Path::new("-")) {
        bail!("--watch needs the Dockerfile in a file to watch; -f - reads it from stdin once");
    }
    let context = std::fs::canonicalize(&args.context)
        .with_context(|| format!("open the context {}", args.context.display()))?;
    let dockerfile = match &args.file {
        Some(path) => std::fs::canonicalize(path)
            .with_context(|| format!("open the Dockerfile {}", path.display()))?,
        None => context.join("Dockerfile"),
    };
    let engine = crate::cmd::store::open_engine(global)?;
    let runtime = crate::cmd::registry::runtime()?;

    let (sender, messages) = mpsc::channel();
    let files = sender.clone();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = files.send(Message::Files(event));
    })
    .context("start watching files (inotify)")?;
    watcher
        .watch(&context, notify::RecursiveMode::Recursive)
        .with_context(|| format!("watch {}", context.display()))?;
    if !dockerfile.starts_with(&context)
        && let Some(dir) = dockerfile.parent()
    {
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("watch {}", dir.display()))?;
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let running: Arc<Mutex<Option<Cancel>>> = Arc::new(Mutex::new(None));
    {
        let (interrupted, running) = (Arc::clone(&interrupted), Arc::clone(&running));
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                if let Ok(slot) = running.lock()
                    && let Some(cancel) = slot.as_ref()
                {
                    cancel.cancel();
                }
                let _ = sender.send(Message::Interrupt);
            }
        });
    }

    let cycle = Cycle {
        engine: &engine,
        runtime: &runtime,
        args: &args,
        mode,
        context: &context,
        dockerfile: &dockerfile,
        running: &running,
    };
    let mut watched = Watched::load(&context, &dockerfile);
    cycle.build_and_exec(&interrupted);
    eprintln!(
        "watch: waiting for changes in {} (Ctrl-C stops)",
        context.display()
    );
    while !interrupted.load(Ordering::SeqCst) {
        let mut paths = BTreeSet::new();
        match messages.recv() {
            Ok(Message::Files(event)) => add_paths(&mut paths, event),
            Ok(Message::Interrupt) | Err(_) => break,
        }
        loop {
            match messages.recv_timeout(DEBOUNCE) {
                Ok(Message::Files(event)) => add_paths(&mut paths, event),
                Ok(Message::Interrupt) => return Ok(ExitCode::from(130)),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let judged_at = Instant::now();
        let verdict = watched.judge(&paths);
        let took = judged_at.elapsed().as_secs_f64() * 1e3;
        match verdict {
            Verdict::NotRead => {}
            Verdict::Unchanged(count) => eprintln!(
                "watch: {count} file(s) the build reads were touched, their content is the same: nothing to rebuild ({took:.2} ms)"
            ),
            Verdict::Changed { paths, rescan } => {
                eprintln!("watch: changed: {}; rebuilding", paths.join(", "));
                if rescan {
                    watched = Watched::load(&context, &dockerfile);
                }
                cycle.build_and_exec(&interrupted);
            }
        }
    }
    Ok(ExitCode::from(130))
}

fn add_paths(paths: &mut BTreeSet<PathBuf>, event: notify::Result<notify::Event>) {
    match event {
        Ok(event) if !matches!(event.kind, notify::EventKind::Access(_)) => {
            paths.extend(event.paths);
        }
        Ok(_) => {}
        Err(e) => eprintln!("watch: {e}"),
    }
}

/// What one rebuild needs.
struct Cycle<'a> {
    engine: &'a Engine,
    runtime: &'a tokio::runtime::Runtime,
    args: &'a BuildArgs,
    mode: Mode,
    context: &'a Path,
    dockerfile: &'a Path,
    running: &'a Mutex<Option<Cancel>>,
}

impl Cycle<'_> {
    /// Builds; after a success, runs `--exec`. Failures are shown and the watch goes on.
    fn build_and_exec(&self, interrupted: &AtomicBool) {
        let id = match self.build() {
            Ok(id) => id,
            Err(e) => {
                if e.downcast_ref::<crate::cmd::build::Reported>().is_none() {
                    eprintln!("error: {e:#}");
                }
                None
            }
        };
        if let (Some(id), false) = (id, interrupted.load(Ordering::SeqCst)) {
            self.exec(&id);
        }
    }

    /// One build with the explanations on, showing only the steps that ran.
    fn build(&self) -> anyhow::Result<Option<String>> {
        let args = self.args;
        let mut request =
            crate::cmd::build::request(args, ContextSource::Dir(self.context.to_owned()))?;
        request.dockerfile = match &args.file {
            Some(_) => DockerfileSource::Path(self.dockerfile.to_owned()),
            None => DockerfileSource::Default,
        };
        request.explain = true;
        let stdout_taken = request
            .outputs
            .iter()
            .any(|o| matches!(o.dest, Some(kiln_engine::Destination::Stream(_))));
        let cancel = Cancel::new();
        if let Ok(mut slot) = self.running.lock() {
            *slot = Some(cancel.clone());
        }
        let started = Instant::now();
        let log = BuildLog::create(&self.engine.store().logs_dir());
        let mode = self.mode;
        let (built, tally, log) = self.runtime.block_on(async {
            let (sender, mut events) = Progress::channel();
            let (shown, to_render) = tokio::sync::mpsc::unbounded_channel();
            let renderer = tokio::spawn(progress::render(mode, to_render, log));
            let filter = tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut hidden = BTreeSet::new();
                while let Some(event) = events.recv().await {
                    if only_what_ran(&event, &mut hidden, &mut tally) {
                        let _ = shown.send(event);
                    }
                }
                tally
            });
            let built = self.engine.build(request, sender, cancel).await;
            let tally = filter.await.unwrap_or_default();
            (built, tally, renderer.await.ok().map(|(_, log)| log))
        });
        if let Ok(mut slot) = self.running.lock() {
            *slot = None;
        }
        let outcome = match built {
            Ok(outcome) => outcome,
            Err(e) => return Err(report(&e, log)),
        };
        let finished = Finished::of(&outcome);
        finish(args, mode, &finished, tally, log, started, stdout_taken)?;
        Ok(Some(finished.id))
    }

    /// `--exec CMD`: the command itself (no shell), the image id in `$KILN_IMAGE`.
    fn exec(&self, id: &str) {
        let Some((program, rest)) = self.args.exec.split_first() else {
            return;
        };
        let shown = self.args.exec.join(" ");
        let _ = std::io::stdout().flush();
        match std::process::Command::new(program)
            .args(rest)
            .env("KILN_IMAGE", id)
            .status()
        {
            Ok(status) if status.success() => eprintln!("watch: {shown}: done"),
            Ok(status) => eprintln!("watch: {shown}: {status}"),
            Err(e) => eprintln!("watch: --exec {shown}: cannot run {program}: {e}"),
        }
    }
}

/// Whether an event is shown: steps that run, not those from the cache, nor kiln's own
/// `[internal]` steps; counts both.
fn only_what_ran(event: &Event, hidden: &mut BTreeSet<u32>, tally: &mut Tally) -> bool {
    match &event.kind {
        EventKind::Cached { label, .. } => {
            if !label.starts_with("[internal]") {
                tally.cached += 1;
            }
            false
        }
        EventKind::Started { label } if label.starts_with("[internal]") => {
            hidden.insert(event.vertex);
            false
        }
        EventKind::Started { .. } => {
            tally.ran += 1;
            true
        }
        _ => !hidden.contains(&event.vertex),
    }
}

/// What a cycle's paths amount to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// None is read by the build.
    NotRead,
    /// These many are read, and are as they were.
    Unchanged(usize),
    /// These changed; `rescan`: the Dockerfile, the `.dockerignore` or a directory did,
    /// so what the build reads is worked out again.
    Changed { paths: Vec<String>, rescan: bool },
}

/// A path's identity for the build: what a context digest covers (never times).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fingerprint {
    File { mode: u32, content: [u8; 32] },
    Dir { mode: u32 },
    Link(PathBuf),
    Other { mode: u32 },
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let mode = meta.permissions().mode();
    Some(if meta.file_type().is_symlink() {
        Fingerprint::Link(std::fs::read_link(path).ok()?)
    } else if meta.is_dir() {
        Fingerprint::Dir { mode }
    } else if meta.is_file() {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path).ok()?).ok()?;
        Fingerprint::File {
            mode,
            content: *hasher.finalize().as_bytes(),
        }
    } else {
        Fingerprint::Other { mode }
    })
}

/// A context path the Dockerfile reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The whole context (`COPY . .`, or a source with a variable in it).
    All,
    /// A file or directory.
    Path(String),
    /// A pattern, component by component.
    Glob(Vec<String>),
}

impl Source {
    fn of(written: &str) -> Option<Source> {
        if written.contains('$') {
            return Some(Source::All);
        }
        let clean = clean_context_path(written.trim_start_matches('/')).ok()?;
        Some(if clean.is_empty() {
            Source::All
        } else if wildcard::has_wildcard(&clean) {
            Source::Glob(clean.split('/').map(str::to_owned).collect())
        } else {
            Source::Path(clean)
        })
    }

    /// Whether `rel` is this source or inside it.
    fn covers(&self, rel: &str) -> bool {
        match self {
            Source::All => true,
            Source::Path(p) => {
                rel == p
                    || rel
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            }
            Source::Glob(parts) => {
                let names: Vec<&str> = rel.split('/').collect();
                names.len() >= parts.len()
                    && parts
                        .iter()
                        .zip(&names)
                        .all(|(p, n)| wildcard::matches(p, n).unwrap_or(true))
            }
        }
    }
}

/// The context sources every stage's `COPY`/`ADD` (without `--from`) and `RUN
/// --mount=type=bind` (without `from=`) name. `None` when the Dockerfile does not parse
/// (then everything counts until it does).
fn sources(text: &str) -> Option<Vec<Source>> {
    let file = kiln_parser::parse(text).ok()?;
    let mut out = Vec::new();
    for stage in &file.stages {
        for instruction in &stage.instructions {
            match &instruction.kind {
                Kind::Copy(copy) | Kind::Add(copy) if copy.from.is_none() => {
                    for source in &copy.sources {
                        let remote = source.contains("://") || source.starts_with("git@");
                        if !source.starts_with("<<") && !remote {
                            out.extend(Source::of(source));
                        }
                    }
                }
                Kind::Run(run) => {
                    for mount in &run.mounts {
                        if mount.kind == "bind" && mount.get(&["from"]).is_none() {
                            out.extend(Source::of(mount.get(&["source", "src"]).unwrap_or("/")));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Some(out)
}

/// What the last build saw, kept between cycles.
struct Watched {
    context: PathBuf,
    dockerfile: PathBuf,
    /// The Dockerfile's text (`None`: unreadable).
    text: Option<String>,
    /// The `.dockerignore` candidates with their text.
    ignore_files: BTreeMap<PathBuf, Option<String>>,
    matcher: Matcher,
    /// `None`: everything is read (the Dockerfile does not parse).
    sources: Option<Vec<Source>>,
    /// Every read path of the context, by relative path.
    files: BTreeMap<String, Fingerprint>,
}

impl Watched {
    /// Reads the Dockerfile and the `.dockerignore`, then fingerprints every context
    /// path the build reads.
    fn load(context: &Path, dockerfile: &Path) -> Watched {
        let text = std::fs::read_to_string(dockerfile).ok();
        let mut ignore_files = BTreeMap::new();
        let name = dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for candidate in [
            dockerfile.with_file_name(format!("{name}.dockerignore")),
            context.join(".dockerignore"),
        ] {
            let found = std::fs::read_to_string(&candidate).ok();
            ignore_files.insert(candidate, found);
        }
        let matcher = kiln_engine::ignore_for(context, Some(dockerfile)).unwrap_or_default();
        let mut watched = Watched {
            context: context.to_owned(),
            dockerfile: dockerfile.to_owned(),
            sources: text.as_deref().and_then(sources),
            text,
            ignore_files,
            matcher,
            files: BTreeMap::new(),
        };
        if let Ok(tree) = ContextTree::scan(context, &watched.matcher) {
            let read: Vec<String> = tree
                .entries()
                .filter(|(rel, entry)| {
                    !rel.is_empty()
                        && !matches!(entry.kind, EntryKind::Special)
                        && watched.reads(rel)
                })
                .map(|(rel, _)| rel.to_owned())
                .collect();
            for rel in read {
                if let Some(found) = fingerprint(&context.join(&rel)) {
                    watched.files.insert(rel, found);
                }
            }
        }
        watched
    }

    /// Whether the build reads `rel` (relative to the context).
    fn reads(&self, rel: &str) -> bool {
        if self.matcher.matches(rel).unwrap_or(false) {
            return false;
        }
        match &self.sources {
            None => true,
            Some(sources) => sources.iter().any(|s| s.covers(rel)),
        }
    }

    /// Judges the paths reported since the last cycle, remembering what they are now.
    fn judge(&mut self, paths: &BTreeSet<PathBuf>) -> Verdict {
        let mut changed = Vec::new();
        let mut rescan = false;
        let mut read = 0;
        for path in paths {
            if *path == self.dockerfile || self.ignore_files.contains_key(path) {
                read += 1;
                let now = std::fs::read_to_string(path).ok();
                let before = if *path == self.dockerfile {
                    &mut self.text
                } else {
                    self.ignore_files.entry(path.clone()).or_default()
                };
                if *before != now {
                    *before = now;
                    changed.push(self.shown(path));
                    rescan = true;
                }
                continue;
            }
            let Some(rel) = path
                .strip_prefix(&self.context)
                .ok()
                .map(|r| r.to_string_lossy().into_owned())
            else {
                continue;
            };
            if rel.is_empty() || !self.reads(&rel) {
                continue;
            }
            read += 1;
            let now = fingerprint(path);
            if self.files.get(&rel) != now.as_ref() {
                if matches!(now, Some(Fingerprint::Dir { .. }))
                    || matches!(self.files.get(&rel), Some(Fingerprint::Dir { .. }))
                {
                    // A directory moved in or out: what is under it was not reported.
                    rescan = true;
                }
                match now {
                    Some(found) => self.files.insert(rel.clone(), found),
                    None => self.files.remove(&rel),
                };
                changed.push(rel);
            }
        }
        match (read, changed.is_empty()) {
            (0, _) => Verdict::NotRead,
            (n, true) => Verdict::Unchanged(n),
            (_, false) => Verdict::Changed {
                paths: changed,
                rescan,
            },
        }
    }

    /// A path as messages show it: relative to the context when inside it.
    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.context)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dockerfile: &str, ignore: &str, expected: &[(&str, bool)]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(dir.path().join(".dockerignore"), ignore).unwrap();
        let watched = Watched::load(dir.path(), &dir.path().join("Dockerfile"));
        for (rel, read) in expected {
            assert_eq!(watched.reads(rel), *read, "{rel} in\n{dockerfile}");
        }
    }

    #[test]
    fn what_the_build_reads() {
        let text = "FROM a\nCOPY src/ app.toml /app/\nADD *.tar.gz /x/\nCOPY --from=a /n /n\nCOPY <<EOF /h\nhi\nEOF\nRUN --mount=type=bind,source=tools make\n";
        check(
            text,
            "src/*.tmp\n",
            &[
                ("src/main.c", true),
                ("src/x.tmp", false),
                ("srcs", false),
                ("app.toml", true),
                ("a.tar.gz", true),
                ("sub/a.tar.gz", false),
                ("tools/gen", true),
                ("n", false),
                ("README.md", false),
            ],
        );
        check(
            "FROM a\nCOPY . .\n",
            "*.log\n",
            &[("x", true), ("a.log", false)],
        );
        check("FROM a\nARG D\nCOPY $D /d\n", "", &[("x", true)]);
        // A Dockerfile that does not parse: everything counts until it does.
        check("FROM a\nRUNN x\n", "", &[("x", true)]);
    }

    #[test]
    fn a_touch_changes_nothing_new_bytes_do() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("Dockerfile"), "FROM a\nCOPY . .\n").unwrap();
        std::fs::write(root.join("a.txt"), "one").unwrap();
        let mut watched = Watched::load(&root, &root.join("Dockerfile"));
        let paths: BTreeSet<PathBuf> = [root.join("a.txt")].into();
        let file = std::fs::File::options()
            .write(true)
            .open(root.join("a.txt"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(watched.judge(&paths), Verdict::Unchanged(1));
        std::fs::write(root.join("a.txt"), "two").unwrap();
        assert_eq!(
            watched.judge(&paths),
            Verdict::Changed {
                paths: vec!["a.txt".to_owned()],
                rescan: false
            }
        );
        assert_eq!(watched.judge(&paths), Verdict::Unchanged(1));
        std::fs::write(root.join("Dockerfile"), "FROM b\nCOPY . .\n").unwrap();
        let paths: BTreeSet<PathBuf> = [root.join("Dockerfile")].into();
        assert_eq!(
            watched.judge(&paths),
            Verdict::Changed {
                paths: vec!["Dockerfile".to_owned()],
                rescan: true
            }
        );
    }
}
