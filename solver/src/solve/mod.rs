//! Running a [`Plan`]: cache keys, cache lookups and the operations, vertex by vertex on
//! the [`scheduler`](crate::scheduler), with progress events; then the result's layers.
//!
//! Before anything runs, every COPY from the context has its sources matched and its
//! content digested (in parallel, memoised by stat identity), so a missing source fails
//! the build before the first RUN starts and a no-op rebuild reads no file.
//!
//! Each vertex's result is a committed snapshot recorded in the cache index under the
//! vertex's key. A snapshot is committed before it is recorded, and an active snapshot
//! of a failed or cancelled step is removed, so the store never holds half a result.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kiln_image::config::{History, RootFs, rfc3339};
use kiln_image::image::{StoredImage, write_image};
use kiln_parser::Span;
use kiln_snapshotter::layer_out::{LayerInfo, LayerOptions};
use kiln_snapshotter::{SnapshotId, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::cache_index::{CacheIndex, CacheRecord, IndexError};
use crate::cache_key::{CacheKey, KeyBuilder};
use crate::cache_transfer::ImportedCache;
use crate::cancel::Cancel;
use crate::context::{ContentMemo, ContextError, ContextTree, EntryKind};
use crate::frontend::{LayerSource, Plan};
use crate::graph::VertexId;
use crate::in_flight::InFlight;
use crate::layered_view::{LayeredView, ViewError};
use crate::ops::copy::{CopyError, CopyFrom, CopyOptions, copy, ensure_dir};
use crate::ops::{CopyOp, ExecMount, ExecOp, FilesOp, HttpOp, MkdirOp, Op, http};
use crate::progress::{EventKind, Progress, Stream};
use crate::request::{NetworkMode, SecretSource, SecretSpec, SshSpec};
use crate::scheduler::{self, ScheduleError};

mod exec;
pub use exec::to_sandbox_mounts;
mod export;
mod fileops;
mod imported;
mod keys;
mod mounts;
mod remote;

use exec::*;
pub use export::export_image;
pub use fileops::image_snapshot;
use fileops::*;
use imported::*;
use keys::*;
use mounts::*;
use remote::*;

/// How many output lines a failed RUN's error shows.
const TAIL_LINES: usize = 20;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// A RUN exited with a non-zero status.
    #[error("process {argv:?} did not complete successfully: exit code: {code}")]
    ExitCode {
        /// The command, joined by spaces as BuildKit shows it.
        argv: String,
        /// The exit code (128 + N for signal N).
        code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// A COPY source matched nothing.
    #[error("failed to compute cache key: {path:?}: not found{}", ignored_note(*.ignored_by))]
    SourceNotFound {
        /// The source as the Dockerfile names it.
        path: String,
        /// The `.dockerignore` line that excluded it, when one did.
        ignored_by: Option<usize>,
    },
    /// A `COPY --from` source is not in the stage's or image's filesystem (BuildKit's
    /// words as for the context: the cache key cannot be computed).
    #[error("failed to compute cache key: {path:?}: not found")]
    TreeSourceNotFound {
        /// The source, absolute in that filesystem.
        path: String,
    },
    /// A wildcard source's literal directory part does not exist (BuildKit fails in
    /// fsutil's walk with the `lstat` error, its path relative to the source root).
    #[error("lstat {path}: no such file or directory")]
    WildcardBaseMissing {
        /// The literal part, absolute in the source.
        path: String,
    },
    /// The sandbox could not run the command.
    #[error("could not run the step: {0}")]
    Sandbox(#[from] kiln_sandbox::Error),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cache index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The step's layer could not be written into the store (the step is not recorded).
    #[error("its layer could not be written into the store {}: {source}", store.display())]
    Layer {
        /// The store's root.
        store: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Reading the context failed.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// Copying failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// Reading a stage's tree failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// A COPY pattern is invalid.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secret the step needs was not given.
    #[error(
        "secret {id:?} is required but was not given; pass --secret id={id},src=FILE (or env=VAR)"
    )]
    MissingSecret {
        /// The secret's id.
        id: String,
    },
    /// A secret that was given cannot be used (not a regular file, too large).
    #[error("secret {id:?}: {reason}")]
    Secret {
        /// The secret's id.
        id: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// An ssh agent the step needs was not given.
    #[error(
        "ssh agent {id:?} is needed but not available; pass --ssh {id}=$SSH_AUTH_SOCK (an agent socket)"
    )]
    MissingSsh {
        /// The `--ssh` id.
        id: String,
    },
    /// An `--ssh` agent could not be served.
    #[error("{0}")]
    Ssh(String),
    /// A download (`ADD URL`) failed.
    #[error("{0}")]
    Download(String),
    /// The build was cancelled while this step ran.
    #[error("cancelled")]
    Cancelled,
    /// A worker thread failed; a bug in kiln.
    #[error("internal error: {0}")]
    Internal(String),
}

fn ignored_note(line: Option<usize>) -> String {
    match line {
        Some(line) => format!(" (it is excluded by .dockerignore line {line})"),
        None => String::new(),
    }
}

/// A build failure, tied to the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SolveError {
    /// The failing step's label, e.g. `[2/3] RUN make`.
    pub label: Option<String>,
    /// Its Dockerfile line.
    pub span: Option<Span>,
    /// What went wrong.
    pub error: Box<StepError>,
}

impl SolveError {
    fn bare(error: StepError) -> SolveError {
        SolveError {
            label: None,
            span: None,
            error: Box::new(error),
        }
    }

    /// `error` of the step that made vertex `id`, with its label and line.
    fn at(plan: &Plan, id: VertexId, error: StepError) -> SolveError {
        let step = plan.steps.get(&id);
        SolveError {
            label: step.map(|s| s.label.clone()),
            span: step.and_then(|s| s.span),
            error: Box::new(error),
        }
    }

    /// True when the build was cancelled rather than failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(*self.error, StepError::Cancelled)
    }
}

/// How to run a plan.
#[derive(Debug, Clone, Default)]
pub struct SolveOptions {
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages not taken from the cache.
    pub no_cache_stages: Vec<String>,
    /// `--jobs`: how many RUNs at once (0: twice the number of cores).
    pub jobs: usize,
    /// The `.dockerignore` decisions, to explain a missing COPY source.
    pub ignore: Option<kiln_parser::dockerignore::Matcher>,
    /// `--secret`s.
    pub secrets: Vec<SecretSpec>,
    /// `--ssh` agents.
    pub ssh: Vec<SshSpec>,
    /// The keys other builds of the same engine are solving right now; `None`: this
    /// build shares nothing.
    pub in_flight: Option<Arc<InFlight>>,
    /// `--cache-from`s, asked in order for the keys the store does not have.
    pub imports: Vec<Arc<ImportedCache>>,
    /// What the build is (its Dockerfile and target), so the next build of it can say
    /// why each step ran; `None`: nothing is kept.
    pub explain_scope: Option<String>,
    /// `--explain`: send an `Explain` event for every step that runs.
    pub explain: bool,
    /// Called when a RUN exits non-zero, with its sandbox still prepared
    /// (`--on-error=shell|keep`); `None`: the step's state is removed at once.
    pub on_failed_step: Option<FailedStepHook>,
}

/// The sandbox a RUN failed in, while it still exists: its spec (rootfs on the step's
/// writable layer as the command left it, env, user, workdir, mounts), for a front end to
/// open a shell in or to keep.
#[derive(Debug, Clone)]
pub struct FailedStep {
    /// The step, as progress labels it (`[2/3] RUN make`).
    pub label: String,
    /// The spec the command ran with.
    pub spec: kiln_sandbox::Spec,
    /// Of `spec.env`, the variables set for this step only (secrets as env,
    /// `SSH_AUTH_SOCK`): what must not outlive the build.
    pub step_only_env: Vec<String>,
    /// The step's writable layer (an active snapshot).
    pub layer: SnapshotId,
    /// The command's exit code.
    pub code: i32,
}

/// What a front end does with a failed RUN's state; see [`SolveOptions::on_failed_step`].
pub trait OnFailedStep: Send + Sync {
    /// Called on a blocking thread before the step's mounts are taken down (other steps
    /// go on meanwhile); returns whether to keep the step's writable layer in the store
    /// (an active snapshot, removed by prune) instead of removing it. The step fails
    /// with its original error either way.
    fn failed(&self, step: &FailedStep) -> bool;
}

/// A shared [`OnFailedStep`].
#[derive(Clone)]
pub struct FailedStepHook(pub Arc<dyn OnFailedStep>);

impl std::fmt::Debug for FailedStepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailedStepHook")
    }
}

/// One vertex's result.
#[derive(Debug, Clone)]
pub struct Done {
    /// Its cache key.
    pub key: CacheKey,
    /// Its filesystem (none for scratch and contexts).
    pub snapshot: Option<SnapshotId>,
    /// When the result was made (seconds since the epoch), for history timestamps.
    pub created: i64,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// What the cache index stores per key.
#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    snapshot: Option<String>,
    created: i64,
}

/// The snapshot a cache index record (a [`CacheRecord`]'s value) points to, if any: what
/// pruning must keep (with its parents) for the entry to stay a hit.
pub fn recorded_snapshot(value: &[u8]) -> Option<SnapshotId> {
    let recorded: Recorded = serde_json::from_slice(value).ok()?;
    SnapshotId::parse(&recorded.snapshot?)
}

/// An `ADD URL`'s identity (its checksum, its validators or its content's digest) and,
/// when finding it meant downloading, where the download is.
#[derive(Debug, Clone)]
struct Remote {
    identity: String,
    fetched: Option<(PathBuf, http::Fetched)>,
}

/// The content a COPY from the context reads: matched sources and their digest.
#[derive(Debug, Clone)]
struct ContextSources {
    sources: Vec<String>,
    digest: [u8; 32],
    /// Each file read, with a prefix of its digest (for `--explain`; none when too many).
    files: Option<crate::context::FileDigests>,
}

struct Shared {
    store: Store,
    index: CacheIndex,
    plan: Arc<Plan>,
    contexts: HashMap<String, Arc<ContextTree>>,
    context_sources: HashMap<VertexId, ContextSources>,
    progress: Progress,
    jobs: Semaphore,
    cancel: Cancel,
    no_cache: bool,
    no_cache_stages: HashSet<String>,
    secrets: HashMap<String, SecretSource>,
    /// What identifies each `ADD URL` before it is downloaded.
    remote: HashMap<VertexId, Remote>,
    /// Each git source's commit and its checkout, made before the build to key it.
    git: HashMap<VertexId, (String, PathBuf)>,
    /// `--ssh` ids and the agent socket each forwards (none: given without a usable one).
    ssh: HashMap<String, Option<PathBuf>>,
    /// Keys being solved by other builds of the engine.
    in_flight: Option<Arc<InFlight>>,
    /// `--cache-from`s, in order.
    imports: Vec<Arc<ImportedCache>>,
    /// Warnings for the build's end (imported steps refused).
    warnings: std::sync::Mutex<Vec<String>>,
    /// Steps taken from each of `imports`.
    hits: std::sync::Mutex<Vec<usize>>,
    /// `--explain`'s view of the build.
    explaining: Explaining,
    /// `SolveOptions::on_failed_step`.
    on_failed_step: Option<FailedStepHook>,
}

/// What `--explain` needs while the build runs: each step's stable name, the keys the
/// previous build of the same scope gave them, and what this build finds.
struct Explaining {
    scope: Option<String>,
    send: bool,
    names: HashMap<VertexId, String>,
    previous: HashMap<String, String>,
    keys: std::sync::Mutex<Vec<(String, String)>>,
    lines: std::sync::Mutex<Vec<String>>,
}

/// The note of a scope's last build: step name -> key.
fn build_note(scope: &str) -> String {
    format!("build:{scope}")
}

/// The note that `kiln explain` prints: the last build's explanations.
pub const LAST_EXPLAINED: &str = "explain:last";

impl Explaining {
    fn new(
        index: &CacheIndex,
        plan: &Plan,
        options: &SolveOptions,
    ) -> Result<Explaining, StepError> {
        // A step is its stage and its place there, in Dockerfile order.
        type Place = (usize, usize);
        let mut by_stage: HashMap<&str, Vec<(VertexId, Place)>> = HashMap::new();
        for (id, step) in &plan.steps {
            let at = step.span.map_or((usize::MAX, 0), |s| (s.line, s.col));
            by_stage
                .entry(step.stage.as_str())
                .or_default()
                .push((*id, at));
        }
        let mut names = HashMap::new();
        for (stage, mut steps) in by_stage {
            // Several steps of one instruction (COPY --link, ADD URL) share a place: the
            // lowering's order (vertex ids) tells them apart, the same in every build.
            steps.sort_by_key(|(id, at)| (*at, id.index()));
            for (ordinal, (id, _)) in steps.into_iter().enumerate() {
                names.insert(id, crate::explain::step_name(stage, ordinal));
            }
        }
        let previous = match &options.explain_scope {
            Some(scope) => index
                .note(&build_note(scope))?
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default(),
            None => HashMap::new(),
        };
        Ok(Explaining {
            scope: options.explain_scope.clone(),
            send: options.explain,
            names,
            previous,
            keys: std::sync::Mutex::new(Vec::new()),
            lines: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Notes the key a step got (cached or not).
    fn saw(&self, id: VertexId, key: &CacheKey) {
        if let Some(name) = self.names.get(&id) {
            lock(&self.keys).push((name.clone(), key.to_hex()));
        }
    }

    /// Keeps this build's keys for the next build of the scope, and its explanations for
    /// `kiln explain`.
    fn save(&self, index: &CacheIndex) -> Result<(), IndexError> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        // A rebuild that changed nothing writes nothing (a write is a commit of the
        // index, a no-op rebuild's largest cost after the context scan).
        let keys: HashMap<String, String> = lock(&self.keys).iter().cloned().collect();
        if keys != self.previous {
            index.set_note(
                &build_note(scope),
                &serde_json::to_string(&keys).unwrap_or_default(),
            )?;
        }
        let lines = serde_json::to_string(&*lock(&self.lines)).unwrap_or_default();
        if index.note(LAST_EXPLAINED)?.as_deref() != Some(lines.as_str()) {
            index.set_note(LAST_EXPLAINED, &lines)?;
        }
        Ok(())
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The results of a solved plan, ready to export.
#[derive(Debug)]
pub struct Solved {
    /// Every needed vertex's result.
    pub results: HashMap<VertexId, Done>,
    /// How many context files had to be read (not found in the stat memo).
    pub context_files_read: usize,
    /// Steps taken from each `--cache-from` (by its name), in order of the sources.
    pub imported: Vec<(String, usize)>,
    /// What the build should warn about (cached steps refused, with the reason).
    pub warnings: Vec<String>,
}

/// Runs the plan's target and everything it needs.
#[allow(clippy::too_many_arguments)]
pub async fn solve(
    plan: Arc<Plan>,
    store: Store,
    index_path: PathBuf,
    contexts: HashMap<String, Arc<ContextTree>>,
    options: &SolveOptions,
    progress: Progress,
    cancel: Cancel,
) -> Result<Solved, SolveError> {
    let index = CacheIndex::open(&index_path).map_err(|e| SolveError::bare(e.into()))?;
    let needed = plan.graph.needed_for(&[plan.target]);
    let (context_sources, files_read) = {
        let memo = ContentMemo::load(&index).map_err(|e| SolveError::bare(e.into()))?;
        let mut out = HashMap::new();
        for &id in &needed {
            if let Op::Copy(op) = &plan.graph.vertex(id).op
                && let Some(name) = &op.context
            {
                let tree = contexts.get(name).ok_or_else(|| {
                    SolveError::bare(StepError::Internal(format!(
                        "COPY from the context {name}, which was not read"
                    )))
                })?;
                let sources = context_sources(tree, op, &memo, options)
                    .map_err(|error| SolveError::at(&plan, id, error))?;
                out.insert(id, sources);
            }
        }
        let read = memo.misses();
        memo.save().map_err(|e| SolveError::bare(e.into()))?;
        (out, read)
    };
    // Whatever the pre-phase leaves (downloads, checkouts, agents) goes when solve()
    // returns, on every path: early errors included.
    let mut leftovers = Leftovers::default();
    let mut remote = HashMap::new();
    for &id in &needed {
        if let Op::Http(op) = &plan.graph.vertex(id).op {
            let found = remote_identity(&store, op)
                .await
                .map_err(|error| SolveError::at(&plan, id, error))?;
            if let Some((path, _)) = &found.fetched {
                leftovers.paths.push(path.clone());
            }
            remote.insert(id, found);
        }
    }
    let mut git = HashMap::new();
    for &id in &needed {
        if let Op::Git(op) = &plan.graph.vertex(id).op {
            let found = git_checkout(&store, op)
                .await
                .map_err(|error| SolveError::at(&plan, id, error))?;
            leftovers.paths.push(found.1.clone());
            git.insert(id, found);
        }
    }
    let ssh_sockets = ssh_agents(&store, &options.ssh, &mut leftovers).map_err(SolveError::bare)?;
    let jobs = if options.jobs == 0 {
        // RUN steps mostly wait (on the network, on sleeps, on the disk), so twice the
        // cores keeps them busy without swamping them.
        2 * std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        options.jobs
    };
    let explaining = Explaining::new(&index, &plan, options).map_err(SolveError::bare)?;
    let shared = Arc::new(Shared {
        store,
        index,
        plan: Arc::clone(&plan),
        contexts,
        context_sources,
        progress,
        jobs: Semaphore::new(jobs),
        cancel: cancel.clone(),
        no_cache: options.no_cache,
        no_cache_stages: options
            .no_cache_stages
            .iter()
            .map(|s| s.to_lowercase())
            .collect(),
        remote,
        git,
        secrets: options
            .secrets
            .iter()
            .map(|s| (s.id.clone(), s.source.clone()))
            .collect(),
        ssh: ssh_sockets,
        in_flight: options.in_flight.clone(),
        imports: options.imports.clone(),
        warnings: std::sync::Mutex::new(Vec::new()),
        hits: std::sync::Mutex::new(vec![0; options.imports.len()]),
        explaining,
        on_failed_step: options.on_failed_step.clone(),
    });
    let graph = Arc::new(plan.graph.clone());
    let runner = Arc::clone(&shared);
    let outcome = scheduler::run(graph, &[plan.target], cancel, move |id, inputs| {
        let shared = Arc::clone(&runner);
        async move { run_vertex(shared, id, inputs).await }
    })
    .await;
    drop(leftovers);
    if outcome.is_ok() {
        shared
            .explaining
            .save(&shared.index)
            .map_err(|e| SolveError::bare(e.into()))?;
    }
    let warnings = std::mem::take(
        &mut *shared
            .warnings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    match outcome {
        Ok(results) => Ok(Solved {
            imported: imported_counts(&shared),
            results,
            context_files_read: files_read,
            warnings,
        }),
        Err(ScheduleError::Vertex { vertex, error }) => Err(SolveError::at(&plan, vertex, error)),
        Err(ScheduleError::Cancelled) => Err(SolveError::bare(StepError::Cancelled)),
        Err(ScheduleError::Panicked(text)) => Err(SolveError::bare(StepError::Internal(text))),
    }
}

/// `--ssh` ids and the agent socket each forwards (none: given without a usable one).
type SshSockets = HashMap<String, Option<PathBuf>>;

/// The agents of the `--ssh` options: an agent socket as given (`$SSH_AUTH_SOCK` when
/// none is), or key files, for which kiln serves an agent of its own (left in
/// `leftovers`, to be stopped when the build ends).
fn ssh_agents(
    store: &Store,
    specs: &[SshSpec],
    leftovers: &mut Leftovers,
) -> Result<SshSockets, StepError> {
    let is_socket = |p: &std::path::Path| {
        std::fs::metadata(p)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    };
    let mut sockets = HashMap::new();
    for spec in specs {
        let paths: Vec<PathBuf> = spec.paths.iter().map(PathBuf::from).collect();
        let socket = match paths.as_slice() {
            [] => std::env::var_os("SSH_AUTH_SOCK")
                .map(PathBuf::from)
                .filter(|p| is_socket(p)),
            [one] if is_socket(one) => Some(one.clone()),
            keys => {
                let keys =
                    crate::ssh_agent::load_keys(keys).map_err(|e| StepError::Ssh(e.to_string()))?;
                // The socket lives in a directory only root can enter.
                let dir = fresh_temp_path(store, "ssh")?;
                make_dir(&dir, 0o700, (0, 0))?;
                leftovers.paths.push(dir.clone());
                let socket = dir.join("agent.sock");
                let task =
                    crate::ssh_agent::serve(keys, &socket).map_err(|e| io_err(&socket, e))?;
                leftovers.agents.push(task);
                Some(socket)
            }
        };
        sockets.insert(spec.id.clone(), socket);
    }
    Ok(sockets)
}

/// Temp paths and agent tasks a build made for itself, removed and stopped on drop.
#[derive(Default)]
struct Leftovers {
    paths: Vec<PathBuf>,
    agents: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for task in &self.agents {
            task.abort();
        }
        for path in &self.paths {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn run_vertex(
    shared: Arc<Shared>,
    id: VertexId,
    inputs: Vec<Done>,
) -> Result<Done, StepError> {
    let plan = Arc::clone(&shared.plan);
    let vertex = plan.graph.vertex(id);
    let op = vertex.op.clone();
    let (key, parts) = key_for(&shared, id, &op, &inputs);
    shared.explaining.saw(id, &key);
    let step = plan.steps.get(&id);
    let label = step.map_or_else(|| vertex.label.clone(), |s| s.label.clone());
    let use_cache = !shared.no_cache
        && !step.is_some_and(|s| shared.no_cache_stages.contains(&s.stage.to_lowercase()));
    match op {
        Op::Context { .. } | Op::Scratch => {
            if matches!(op, Op::Context { .. }) {
                shared.progress.send(id, EventKind::Started { label });
                shared.progress.send(id, EventKind::Done { seconds: 0.0 });
            }
            return Ok(Done {
                key,
                snapshot: None,
                created: 0,
                cached: true,
            });
        }
        _ => {}
    }
    // Image sources are always looked up: their key is their content's digest.
    if (use_cache || matches!(op, Op::Image { .. }))
        && let Some(done) = lookup(&shared, &key)?
    {
        shared.progress.send(
            id,
            EventKind::Cached {
                label,
                source: None,
            },
        );
        return Ok(done);
    }
    if shared.cancel.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    // Another build of this engine solving the same key: wait for it, then take its
    // result from the cache (or, if it failed, run the vertex here).
    let _slot = match (&shared.in_flight, use_cache) {
        (Some(in_flight), true) => {
            let slot = tokio::select! {
                slot = in_flight.enter(&key) => slot,
                () = shared.cancel.cancelled() => return Err(StepError::Cancelled),
            };
            if slot.waited
                && let Some(done) = lookup(&shared, &key)?
            {
                shared.progress.send(
                    id,
                    EventKind::Cached {
                        label,
                        source: None,
                    },
                );
                return Ok(done);
            }
            Some(slot)
        }
        _ => None,
    };
    // Not in the store: the --cache-from caches, in order.
    if use_cache
        && !matches!(op, Op::Image { .. })
        && let Some((done, source)) = from_imports(&shared, &key, &parts, &inputs, &label).await?
    {
        shared.progress.send(
            id,
            EventKind::Cached {
                label,
                source: Some(source),
            },
        );
        return Ok(done);
    }
    // A RUN waits for a --jobs slot before it counts as started.
    let permit = match op {
        Op::Exec(_) => Some(
            shared
                .jobs
                .acquire()
                .await
                .map_err(|e| StepError::Internal(e.to_string()))?,
        ),
        _ => None,
    };
    if shared.cancel.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    let facts = step.map(|_| step_facts(&shared, id, &op, &label, &inputs));
    shared.progress.send(
        id,
        EventKind::Started {
            label: label.clone(),
        },
    );
    if let Some(facts) = &facts {
        let forced = if shared.no_cache {
            crate::explain::Forced::NoCache
        } else if !use_cache {
            crate::explain::Forced::NoCacheFilter
        } else {
            crate::explain::Forced::No
        };
        let reasons = explain_step(&shared, id, &key, facts, forced);
        lock(&shared.explaining.lines).extend(reasons.iter().map(|r| format!("{label}: {r}")));
        if shared.explaining.send {
            shared.progress.send(id, EventKind::Explain { reasons });
        }
    }
    let started = Instant::now();
    let result = match &op {
        Op::Image { .. } => {
            let image = plan.image_vertices.get(&id).copied().ok_or_else(|| {
                StepError::Internal("an image vertex without its image".to_owned())
            })?;
            let shared2 = Arc::clone(&shared);
            blocking(move || unpack_image(&shared2, image)).await
        }
        Op::Exec(exec) => run_exec(Arc::clone(&shared), id, exec.clone(), inputs).await,
        Op::Copy(copy_op) => {
            let shared2 = Arc::clone(&shared);
            let copy_op = copy_op.clone();
            blocking(move || run_copy(&shared2, id, &copy_op, &inputs)).await
        }
        Op::Mkdir(mkdir) => {
            let shared2 = Arc::clone(&shared);
            let mkdir = mkdir.clone();
            let parent = inputs[0].snapshot.clone();
            blocking(move || run_mkdir(&shared2, &mkdir, parent)).await
        }
        Op::Files(files) => {
            let shared2 = Arc::clone(&shared);
            let files = files.clone();
            blocking(move || run_files(&shared2, &files)).await
        }
        Op::Merge => {
            let shared2 = Arc::clone(&shared);
            let (below, linked) = (inputs[0].snapshot.clone(), inputs[1].snapshot.clone());
            blocking(move || run_merge(&shared2, below, linked)).await
        }
        Op::Http(op) => run_http(&shared, id, op).await,
        Op::Git(op) => {
            let shared2 = Arc::clone(&shared);
            let op = op.clone();
            blocking(move || run_git(&shared2, id, &op)).await
        }
        // Handled (and returned) above: they have no work to run.
        Op::Context { .. } | Op::Scratch => {
            Err(StepError::Internal("no work for this vertex".to_owned()))
        }
    };
    drop(permit);
    let snapshot = match result {
        Ok(snapshot) => snapshot,
        Err(error) => {
            let message = error.to_string();
            shared.progress.send(id, EventKind::Error { message });
            return Err(if shared.cancel.is_cancelled() {
                StepError::Cancelled
            } else {
                error
            });
        }
    };
    let created = now_secs();
    let recorded = Recorded {
        snapshot: snapshot.as_ref().map(|s| s.as_str().to_owned()),
        created,
    };
    if let Some(facts) = &facts {
        let text = serde_json::to_string(facts).map_err(|e| StepError::Internal(e.to_string()))?;
        shared.index.set_facts(&key, &text)?;
    }
    let value = serde_json::to_vec(&recorded).map_err(|e| StepError::Internal(e.to_string()))?;
    shared.index.put(&key, &CacheRecord { value, parts })?;
    shared.progress.send(
        id,
        EventKind::Done {
            seconds: started.elapsed().as_secs_f64(),
        },
    );
    Ok(Done {
        key,
        snapshot,
        created,
        cached: false,
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StepError::Internal(e.to_string()))?
}

/// What a step's key is made of, as `--explain` compares it.
fn step_facts(
    shared: &Shared,
    id: VertexId,
    op: &Op,
    label: &str,
    inputs: &[Done],
) -> crate::explain::StepFacts {
    let vertex = shared.plan.graph.vertex(id);
    let input_label = |input: &VertexId| {
        shared
            .plan
            .steps
            .get(input)
            .map(|s| s.label.clone())
            .unwrap_or_default()
    };
    let sources = shared.context_sources.get(&id);
    crate::explain::StepFacts {
        label: label.to_owned(),
        op: crate::explain::op_facts(&serde_json::to_value(op).unwrap_or_default()),
        inputs: vertex
            .inputs
            .iter()
            .zip(inputs)
            .map(|(input, done)| (input_label(input), done.key.to_hex()))
            .collect(),
        files: sources.and_then(|s| s.files.clone()),
        content: sources.map(|s| blake3::Hash::from_bytes(s.digest).to_hex().to_string()),
        remote: shared.remote.get(&id).map(|r| r.identity.clone()),
        commit: shared.git.get(&id).map(|(commit, _)| commit.clone()),
    }
}

/// Why the step `id` runs: compared with the same step of the previous build of the scope.
fn explain_step(
    shared: &Shared,
    id: VertexId,
    key: &CacheKey,
    facts: &crate::explain::StepFacts,
    forced: crate::explain::Forced,
) -> Vec<String> {
    let previous = shared
        .explaining
        .names
        .get(&id)
        .and_then(|name| shared.explaining.previous.get(name));
    let old_facts = previous
        .and_then(|hex| CacheKey::from_hex(hex))
        .and_then(|old| shared.index.facts(&old).ok().flatten())
        .and_then(|text| serde_json::from_str(&text).ok());
    crate::explain::explain(
        previous.map(|hex| (hex.as_str(), old_facts.as_ref())),
        &key.to_hex(),
        facts,
        forced,
    )
}
