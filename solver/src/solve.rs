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

use kiln_exporter::config::{History, RootFs, rfc3339};
use kiln_exporter::image::{StoredImage, write_image};
use kiln_parser::Span;
use kiln_snapshotter::layer_in::{WhiteoutStyle, apply_layer};
use kiln_snapshotter::layer_out::{LayerInfo, LayerOptions};
use kiln_snapshotter::{SnapshotId, SnapshotterKind, Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::cache_index::{CacheIndex, CacheRecord, IndexError};
use crate::cache_key::{CacheKey, KeyBuilder};
use crate::cancel::Cancel;
use crate::context::{ContentMemo, ContextError, ContextTree, EntryKind};
use crate::frontend::{LayerSource, Plan};
use crate::graph::VertexId;
use crate::layered_view::{LayeredView, ViewError};
use crate::ops::copy::{CopyError, CopyFrom, CopyOptions, copy, ensure_dir};
use crate::ops::{CopyOp, ExecMount, ExecOp, FilesOp, HttpOp, MkdirOp, Op, http};
use crate::progress::{EventKind, Progress, Stream};
use crate::request::{NetworkMode, SecretSource, SecretSpec, SshSpec};
use crate::scheduler::{self, ScheduleError};

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
    /// The sandbox could not run the command.
    #[error("could not run the step: {0}")]
    Sandbox(#[from] kiln_sandbox::Error),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cache index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
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
}

/// The results of a solved plan, ready to export.
#[derive(Debug)]
pub struct Solved {
    /// Every needed vertex's result.
    pub results: HashMap<VertexId, Done>,
    /// How many context files had to be read (not found in the stat memo).
    pub context_files_read: usize,
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
    });
    let graph = Arc::new(plan.graph.clone());
    let runner = Arc::clone(&shared);
    let outcome = scheduler::run(graph, &[plan.target], cancel, move |id, inputs| {
        let shared = Arc::clone(&runner);
        async move { run_vertex(shared, id, inputs).await }
    })
    .await;
    drop(leftovers);
    match outcome {
        Ok(results) => Ok(Solved {
            results,
            context_files_read: files_read,
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
                let dir = store.tmp_dir().join(format!(
                    "ssh-{}-{}",
                    std::process::id(),
                    leftovers.agents.len()
                ));
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

/// Matches a COPY's sources in the context (globs included) and digests what they read.
fn context_sources(
    tree: &ContextTree,
    op: &CopyOp,
    memo: &ContentMemo,
    options: &SolveOptions,
) -> Result<ContextSources, StepError> {
    let mut sources = Vec::new();
    for source in &op.sources {
        if kiln_parser::dockerignore::has_wildcard(source) {
            for (path, _) in tree.entries() {
                if path.is_empty() {
                    continue;
                }
                let matched =
                    kiln_parser::dockerignore::glob_match(source, path).map_err(|reason| {
                        StepError::Pattern {
                            pattern: source.clone(),
                            reason,
                        }
                    })?;
                if matched
                    && !sources
                        .iter()
                        .any(|s: &String| path.starts_with(&format!("{s}/")))
                {
                    sources.push(path.to_owned());
                }
            }
        } else if tree.get(source).is_some() {
            sources.push(source.clone());
        } else {
            let ignored_by = options.ignore.as_ref().and_then(|m| {
                m.decide(source)
                    .ok()
                    .filter(|d| d.excluded)
                    .and_then(|d| d.line)
            });
            return Err(StepError::SourceNotFound {
                path: format!("/{source}"),
                ignored_by,
            });
        }
    }
    // A symlink named as a source is followed; its target's content is what is copied.
    let mut read: Vec<String> = Vec::new();
    for source in &sources {
        read.push(follow_in_context(tree, source));
    }
    let refs: Vec<&str> = read.iter().map(String::as_str).collect();
    let digest = tree.digest(&refs, memo)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&digest);
    for source in &sources {
        hasher.update(&(source.len() as u64).to_le_bytes());
        hasher.update(source.as_bytes());
    }
    Ok(ContextSources {
        sources,
        digest: *hasher.finalize().as_bytes(),
    })
}

fn follow_in_context(tree: &ContextTree, path: &str) -> String {
    let mut rel = path.to_owned();
    for _ in 0..40 {
        match tree.get(&rel).map(|e| &e.kind) {
            Some(EntryKind::Symlink(target)) => {
                let target = target.to_string_lossy();
                let base = match rel.rfind('/') {
                    Some(pos) if !target.starts_with('/') => rel[..pos].to_owned(),
                    _ => String::new(),
                };
                rel = crate::meta::clean_abs(&format!("{base}/{target}"))
                    .trim_start_matches('/')
                    .to_owned();
            }
            _ => break,
        }
    }
    if tree.get(&rel).is_some() {
        rel
    } else {
        path.to_owned()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn key_for(
    shared: &Shared,
    id: VertexId,
    op: &Op,
    inputs: &[Done],
) -> (CacheKey, Vec<crate::cache_key::KeyPart>) {
    let kind = match op {
        Op::Scratch => "scratch",
        Op::Image { .. } => "image",
        Op::Context { .. } => "context",
        Op::Exec(_) => "exec",
        Op::Copy(_) => "copy",
        Op::Mkdir(_) => "mkdir",
        Op::Files(_) => "files",
        Op::Merge => "merge",
        Op::Http(_) => "http",
        Op::Git(_) => "git",
    };
    let mut builder = KeyBuilder::new(kind);
    builder.json("op", op);
    for (i, input) in inputs.iter().enumerate() {
        // A context's key says nothing of its content: the COPY adds the digest of what
        // it reads instead, so changes elsewhere in the context do not invalidate it.
        builder.input(i, &input.key);
    }
    if let Some(sources) = shared.context_sources.get(&id) {
        builder.part("content", &sources.digest);
    }
    if let Some(remote) = shared.remote.get(&id) {
        builder.part("remote", remote.identity.as_bytes());
    }
    if let Some((commit, _)) = shared.git.get(&id) {
        builder.part("commit", commit.as_bytes());
    }
    builder.finish()
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
        shared.progress.send(id, EventKind::Cached { label });
        return Ok(done);
    }
    if shared.cancel.is_cancelled() {
        return Err(StepError::Cancelled);
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
    shared.progress.send(id, EventKind::Started { label });
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
        Op::Context { .. } | Op::Scratch => unreachable_op(),
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
    let value = serde_json::to_vec(&recorded).map_err(|e| StepError::Internal(e.to_string()))?;
    // The step's parts, by its label, so that a later build can say what changed.
    if let Some(step) = step {
        shared.index.set_last_parts(&step.label, &parts)?;
    }
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

fn unreachable_op() -> Result<Option<SnapshotId>, StepError> {
    Err(StepError::Internal("no work for this vertex".to_owned()))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StepError> + Send + 'static,
) -> Result<T, StepError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StepError::Internal(e.to_string()))?
}

fn lookup(shared: &Shared, key: &CacheKey) -> Result<Option<Done>, StepError> {
    let Some(record) = shared.index.get(key)? else {
        return Ok(None);
    };
    let Ok(recorded) = serde_json::from_slice::<Recorded>(&record.value) else {
        return Ok(None);
    };
    let snapshot = match recorded.snapshot {
        Some(text) => match SnapshotId::parse(&text) {
            // A pruned snapshot is a cache miss, never an error.
            Some(id) if shared.store.snapshots().is_committed(&id) => Some(id),
            _ => return Ok(None),
        },
        None => None,
    };
    Ok(Some(Done {
        key: *key,
        snapshot,
        created: recorded.created,
        cached: true,
    }))
}

/// The key of a base layer chain: layers unpacked once are reused by every image that
/// shares them (and by builds on top of images kiln built itself).
fn chain_key(parent: Option<&CacheKey>, diff_id: &str) -> CacheKey {
    let mut builder = KeyBuilder::new("layer");
    if let Some(parent) = parent {
        builder.input(0, parent);
    }
    builder.part("diff_id", diff_id.as_bytes());
    builder.finish().0
}

fn unpack_image(shared: &Shared, image: usize) -> Result<Option<SnapshotId>, StepError> {
    let base = &shared.plan.base_images[image];
    let diff_ids = &base.config.rootfs.diff_ids;
    let mut parent: Option<SnapshotId> = None;
    let mut parent_key: Option<CacheKey> = None;
    for (i, layer) in base.layers.iter().enumerate() {
        let diff_id = diff_ids
            .get(i)
            .cloned()
            .unwrap_or_else(|| layer.digest.to_string());
        let key = chain_key(parent_key.as_ref(), &diff_id);
        if let Some(done) = lookup(shared, &key)?
            && done.snapshot.is_some()
        {
            parent = done.snapshot;
            parent_key = Some(key);
            continue;
        }
        if shared.cancel.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let active = shared.store.snapshots().prepare(parent.as_ref())?;
        let dir = shared.store.snapshots().diff_dir(&active);
        let style = match shared.store.snapshots().kind() {
            SnapshotterKind::Overlay => WhiteoutStyle::Overlay,
            SnapshotterKind::Native => WhiteoutStyle::Delete,
        };
        let applied = shared
            .store
            .content()
            .open(&layer.digest)
            .and_then(|blob| apply_layer(blob, &dir, style));
        if let Err(e) = applied {
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e.into());
        }
        let id = shared.store.snapshots().commit(active)?;
        let value = serde_json::to_vec(&Recorded {
            snapshot: Some(id.as_str().to_owned()),
            created: now_secs(),
        })
        .map_err(|e| StepError::Internal(e.to_string()))?;
        shared.index.put(
            &key,
            &CacheRecord {
                value,
                parts: Vec::new(),
            },
        )?;
        parent = Some(id);
        parent_key = Some(key);
    }
    Ok(parent)
}

fn to_sandbox_mounts(mounts: Vec<kiln_snapshotter::Mount>) -> Vec<kiln_sandbox::Mount> {
    mounts
        .into_iter()
        .map(|m| kiln_sandbox::Mount {
            kind: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

async fn run_exec(
    shared: Arc<Shared>,
    id: VertexId,
    exec: ExecOp,
    inputs: Vec<Done>,
) -> Result<Option<SnapshotId>, StepError> {
    let parent = inputs[0].snapshot.clone();
    let active = shared.store.snapshots().prepare(parent.as_ref())?;
    let mounts = match shared.store.snapshots().mounts(&active) {
        Ok(m) => m,
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e.into());
        }
    };
    // Preparing mounts may wait on a locked cache mount's flock: never on an async
    // worker, where a holder could not be scheduled to release it.
    let prepared = {
        let shared = Arc::clone(&shared);
        let exec = exec.clone();
        let inputs = inputs.clone();
        tokio::task::spawn_blocking(move || {
            let mut extras = Extras::default();
            let result = extras.prepare(&shared, &exec, &inputs);
            (extras, result)
        })
        .await
    };
    let mut extras = match prepared {
        Ok((extras, Ok(()))) => extras,
        Ok((mut extras, Err(e))) => {
            extras.clean_up();
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e);
        }
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            return Err(StepError::Internal(e.to_string()));
        }
    };
    let stubs = match mount_stubs(&shared, &active, &exec) {
        Ok(stubs) => stubs,
        Err(e) => {
            extras.clean_up();
            let _ = shared.store.snapshots().remove(active.id());
            return Err(e);
        }
    };
    let mut rootfs = to_sandbox_mounts(mounts);
    rootfs.append(&mut extras.rootfs);
    let mut spec = kiln_sandbox::Spec::new(rootfs, exec.argv.clone());
    spec.env = exec.env.clone();
    spec.env.extend(shared.plan.proxy_env.iter().cloned());
    spec.env.append(&mut extras.env);
    spec.mounts = std::mem::take(&mut extras.mounts);
    spec.cwd = exec.cwd.clone();
    spec.user = exec.user.clone();
    spec.hostname = "buildkitsandbox".to_owned();
    spec.network = match exec.network {
        NetworkMode::None => kiln_sandbox::Network::None,
        _ => kiln_sandbox::Network::Default,
    };
    let handle = kiln_sandbox::CancelHandle::new();
    let watcher = {
        let cancel = shared.cancel.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            handle.cancel();
        })
    };
    let progress = shared.progress.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        let status = kiln_sandbox::run(
            &spec,
            &mut |stream, bytes| {
                let (slot, stream) = match stream {
                    kiln_sandbox::Stream::Stdout => (0, Stream::Stdout),
                    kiln_sandbox::Stream::Stderr => (1, Stream::Stderr),
                };
                partial[slot].extend_from_slice(bytes);
                while let Some(pos) = partial[slot].iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial[slot].drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    emit_line(&progress, id, stream, text, &mut tail);
                }
            },
            &handle,
        );
        for (slot, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !partial[slot].is_empty() {
                let text = String::from_utf8_lossy(&partial[slot]).into_owned();
                emit_line(&progress, id, stream, text, &mut tail);
            }
        }
        (status, tail)
    })
    .await;
    watcher.abort();
    extras.clean_up();
    let (status, tail) = match outcome {
        Ok(v) => v,
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            return Err(StepError::Internal(e.to_string()));
        }
    };
    let failed = match status {
        Ok(status) if status.success() => None,
        Ok(_) if shared.cancel.is_cancelled() => Some(StepError::Cancelled),
        Ok(status) => Some(StepError::ExitCode {
            argv: exec.argv.join(" "),
            code: status.code(),
            tail: tail.into_iter().collect(),
        }),
        Err(e) => Some(StepError::Sandbox(e)),
    };
    if let Some(error) = failed {
        let _ = shared.store.snapshots().remove(active.id());
        return Err(error);
    }
    remove_stubs(&shared.store.snapshots().diff_dir(&active), &stubs);
    Ok(Some(shared.store.snapshots().commit(active)?))
}

/// The paths the sandbox will create to mount things on (its own `/proc`, `/etc/hosts`
/// ... and the step's `--mount` targets, with their parents) that the tree does not
/// have yet, deepest first.
fn mount_stubs(
    shared: &Shared,
    active: &kiln_snapshotter::Active,
    exec: &ExecOp,
) -> Result<Vec<String>, StepError> {
    let mut layers = vec![shared.store.snapshots().diff_dir(active)];
    layers.extend(shared.store.snapshots().lower_layers(active)?);
    let view = LayeredView::new(layers);
    let mut candidates: Vec<String> = kiln_sandbox::plan::CREATED_MOUNT_POINTS
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    for target in exec.mounts.iter().filter_map(|m| m.target()) {
        let mut path = crate::meta::clean_abs(target);
        while path != "/" {
            candidates.push(path.clone());
            path = match path.rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(pos) => path[..pos].to_owned(),
            };
        }
    }
    let mut stubs = Vec::new();
    for path in candidates {
        if !stubs.contains(&path) && view.lstat(&path)?.is_none() {
            stubs.push(path);
        }
    }
    stubs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    Ok(stubs)
}

/// Removes the mount stubs a step left, as BuildKit does: a path that did not exist
/// before the step and is an empty file or directory after it is the sandbox's, not the
/// step's, and must not be seen by later steps.
fn remove_stubs(diff_dir: &std::path::Path, stubs: &[String]) {
    'stubs: for stub in stubs {
        // The step may have put a link where a parent was: every component on the way
        // must be a real directory of the diff, or the stub is left alone.
        let parts: Vec<&str> = stub.split('/').filter(|p| !p.is_empty()).collect();
        let mut host = diff_dir.to_path_buf();
        for parent in &parts[..parts.len().saturating_sub(1)] {
            host.push(parent);
            if !std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                continue 'stubs;
            }
        }
        let Some(name) = parts.last() else { continue };
        host.push(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&host);
            }
            // remove_dir only removes an empty directory: what the step put there stays.
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&host);
            }
            _ => {}
        }
    }
}

/// What a RUN's `--mount`s add to its sandbox, and what to undo afterwards.
#[derive(Default)]
struct Extras {
    /// Trees mounted on top of the rootfs (binds from stages, images, the context).
    rootfs: Vec<kiln_sandbox::Mount>,
    /// Host paths, tmpfs and secrets.
    mounts: Vec<kiln_sandbox::ExtraMount>,
    /// Variables set for the step only (secrets as env, `SSH_AUTH_SOCK`).
    env: Vec<String>,
    /// Temp dirs and files to remove after the step.
    temps: Vec<PathBuf>,
    /// Locks held on cache mounts while the step runs.
    locks: Vec<std::fs::File>,
}

impl Extras {
    /// A fresh path in the store's temp dir, removed by `clean_up`.
    fn temp(&mut self, shared: &Shared, what: &str) -> Result<PathBuf, StepError> {
        let base = shared.store.tmp_dir();
        std::fs::create_dir_all(&base).map_err(|e| io_err(&base, e))?;
        // A process-wide counter: two steps of one build never share a name.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seed = format!(
            "{what}{}{:?}{}",
            std::process::id(),
            std::time::SystemTime::now(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let name = format!("{what}-{}", &blake3::hash(seed.as_bytes()).to_hex()[..16]);
        let path = base.join(name);
        self.temps.push(path.clone());
        Ok(path)
    }

    fn prepare(
        &mut self,
        shared: &Shared,
        exec: &ExecOp,
        inputs: &[Done],
    ) -> Result<(), StepError> {
        for mount in &exec.mounts {
            match mount {
                ExecMount::Bind {
                    input,
                    source,
                    target,
                    rw,
                    context,
                } => {
                    let snapshot = inputs.get(*input).and_then(|d| d.snapshot.clone());
                    let rel = if let Some(name) = context {
                        context_mount_source(shared, name, source)
                    } else {
                        source.clone()
                    };
                    self.tree(shared, snapshot.as_ref(), &rel, target, *rw)?;
                }
                ExecMount::Cache {
                    id,
                    target,
                    sharing,
                    mode,
                    uid,
                    gid,
                    readonly,
                } => {
                    let dir = self.cache_dir(shared, id, sharing, *mode, (*uid, *gid))?;
                    self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                        source: dir,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                ExecMount::Tmpfs { target, size } => {
                    self.mounts.push(kiln_sandbox::ExtraMount::Tmpfs {
                        target: target.clone(),
                        size: (*size > 0).then_some(*size),
                        mode: None,
                    });
                }
                ExecMount::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(source) = shared.secrets.get(id) else {
                        if *required {
                            return Err(StepError::MissingSecret { id: id.clone() });
                        }
                        continue;
                    };
                    let value: Vec<u8> = match source {
                        SecretSource::File(path) => {
                            std::fs::read(path).map_err(|e| io_err(path, e))?
                        }
                        SecretSource::Env(var) => std::env::var_os(var)
                            .ok_or_else(|| StepError::MissingSecret {
                                id: format!("{id} (environment variable {var} is not set)"),
                            })?
                            .into_encoded_bytes(),
                    };
                    if let Some(var) = env {
                        self.env
                            .push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    }
                    if let Some(target) = target {
                        // A file secret is bound from where it is; one from the
                        // environment needs a file, private to root, gone after the step.
                        let source_file = match source {
                            SecretSource::File(path) => path.clone(),
                            SecretSource::Env(_) => {
                                let path = self.temp(shared, "secret")?;
                                write_private(&path, &value)?;
                                path
                            }
                        };
                        self.mounts.push(kiln_sandbox::ExtraMount::Secret {
                            source: source_file,
                            target: target.clone(),
                            mode: Some(*mode),
                            uid: Some(*uid),
                            gid: Some(*gid),
                        });
                    }
                }
                ExecMount::File {
                    target,
                    content,
                    mode,
                } => {
                    let path = self.temp(shared, "script")?;
                    std::fs::write(&path, content).map_err(|e| io_err(&path, e))?;
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(*mode),
                    )
                    .map_err(|e| io_err(&path, e))?;
                    self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                        source: path,
                        target: target.clone(),
                        readonly: true,
                    });
                }
                ExecMount::Ssh {
                    id,
                    target,
                    required,
                } => {
                    let Some(socket) = shared.ssh.get(id).cloned().flatten() else {
                        if *required || shared.ssh.contains_key(id) {
                            return Err(StepError::MissingSsh { id: id.clone() });
                        }
                        continue;
                    };
                    self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                        source: socket,
                        target: target.clone(),
                        readonly: false,
                    });
                    self.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
        }
        Ok(())
    }

    /// Mounts `rel` of a snapshot's tree at `target`: a bind of a file or of a single
    /// layer, else a read-only overlay of the layers that hold the directory; `rw` adds a
    /// throw-away upper dir.
    fn tree(
        &mut self,
        shared: &Shared,
        snapshot: Option<&SnapshotId>,
        rel: &str,
        target: &str,
        rw: bool,
    ) -> Result<(), StepError> {
        let layers = match snapshot {
            Some(id) => shared.store.snapshots().layers(id)?,
            None => Vec::new(),
        };
        let rel = crate::meta::clean_abs(rel);
        let view = LayeredView::new(layers.clone());
        let resolved = view.resolve(&rel, true)?;
        let mut lowers: Vec<PathBuf> = Vec::new();
        match view.lstat(&resolved)? {
            None if resolved == "/" => {
                let empty = self.temp(shared, "empty")?;
                std::fs::create_dir_all(&empty).map_err(|e| io_err(&empty, e))?;
                lowers.push(empty);
            }
            None => {
                return Err(StepError::SourceNotFound {
                    path: rel,
                    ignored_by: None,
                });
            }
            Some(found) if !found.meta.is_dir() => {
                let source = if rw {
                    let copy = self.temp(shared, "bind")?;
                    std::fs::copy(&found.host_path, &copy).map_err(|e| io_err(&copy, e))?;
                    copy
                } else {
                    found.host_path.clone()
                };
                self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                    source,
                    target: target.to_owned(),
                    readonly: !rw,
                });
                return Ok(());
            }
            Some(_) => {
                // Each layer is walked one component at a time with lstat: the kernel
                // must never resolve a path inside a layer (a link there points into the
                // host), and a file, whiteout or opaque directory on the way hides what
                // the layers below hold.
                let parts: Vec<&str> = resolved.split('/').filter(|p| !p.is_empty()).collect();
                'layers: for layer in &layers {
                    let mut path = layer.clone();
                    let mut hides_below = false;
                    for (i, part) in parts.iter().enumerate() {
                        path.push(part);
                        match std::fs::symlink_metadata(&path) {
                            Ok(meta) if meta.is_dir() => {
                                hides_below |= crate::layered_view::is_opaque(&path);
                            }
                            Ok(_) => break 'layers,
                            Err(_) if i == 0 || !hides_below => continue 'layers,
                            Err(_) => break 'layers,
                        }
                    }
                    lowers.push(path);
                    if hides_below {
                        break;
                    }
                }
            }
        }
        let lowerdir: Vec<String> = lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if !rw && lowerdir.len() == 1 {
            self.rootfs.push(kiln_sandbox::Mount {
                kind: "bind".to_owned(),
                source: lowerdir[0].clone(),
                target: target.to_owned(),
                options: vec!["rbind".to_owned(), "ro".to_owned()],
            });
            return Ok(());
        }
        let mut options = vec![format!("lowerdir={}", lowerdir.join(":"))];
        if rw {
            let scratch = self.temp(shared, "bind-rw")?;
            let (upper, work) = (scratch.join("upper"), scratch.join("work"));
            for dir in [&upper, &work] {
                std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            }
            options.push(format!("upperdir={}", upper.display()));
            options.push(format!("workdir={}", work.display()));
        } else {
            options.push("ro".to_owned());
        }
        self.rootfs.push(kiln_sandbox::Mount {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: target.to_owned(),
            options,
        });
        Ok(())
    }

    /// The persistent directory of a cache mount (made on first use), locked as
    /// `sharing` says: `locked` waits for other users, `private` takes a fresh dir when
    /// the shared one is busy, `shared` does neither.
    fn cache_dir(
        &mut self,
        shared: &Shared,
        id: &str,
        sharing: &str,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<PathBuf, StepError> {
        let base = shared.store.root().join("cache-mounts");
        std::fs::create_dir_all(&base).map_err(|e| io_err(&base, e))?;
        let name = blake3::hash(id.as_bytes()).to_hex()[..32].to_owned();
        let dir = base.join(&name);
        if sharing != "shared" {
            let lock_path = base.join(format!("{name}.lock"));
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| io_err(&lock_path, e))?;
            if sharing == "private" {
                if lock.try_lock().is_err() {
                    let fresh = self.temp(shared, "cache-private")?;
                    make_dir(&fresh, mode, owner)?;
                    return Ok(fresh);
                }
            } else {
                lock.lock().map_err(|e| io_err(&lock_path, e))?;
            }
            self.locks.push(lock);
        }
        if !dir.exists() {
            // Made beside and renamed, so a concurrent first use never sees half of it.
            let fresh = self.temp(shared, "cache-new")?;
            make_dir(&fresh, mode, owner)?;
            if std::fs::rename(&fresh, &dir).is_err() && !dir.exists() {
                return Err(StepError::Internal(format!(
                    "could not create the cache mount {}",
                    dir.display()
                )));
            }
        }
        Ok(dir)
    }

    fn clean_up(&mut self) {
        for path in self.temps.drain(..) {
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
        }
        self.locks.clear();
    }
}

fn make_dir(path: &std::path::Path, mode: u32, owner: (u32, u32)) -> Result<(), StepError> {
    std::fs::create_dir_all(path).map_err(|e| io_err(path, e))?;
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).map_err(|e| io_err(path, e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io_err(path, e))
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), StepError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    file.write_all(bytes).map_err(|e| io_err(path, e))
}

fn io_err(path: &std::path::Path, source: std::io::Error) -> StepError {
    StepError::Copy(CopyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Where a bind from the context lands in the copy made of it: a directory's contents
/// are the copy's root, a file keeps its name.
fn context_mount_source(shared: &Shared, context: &str, source: &str) -> String {
    let Some(tree) = shared.contexts.get(context) else {
        return "/".to_owned();
    };
    let followed = follow_in_context(tree, source);
    match tree.get(&followed).map(|e| &e.kind) {
        Some(EntryKind::Dir) | None => "/".to_owned(),
        Some(_) => format!("/{}", source.rsplit('/').next().unwrap_or(source)),
    }
}

fn emit_line(
    progress: &Progress,
    id: VertexId,
    stream: Stream,
    line: String,
    tail: &mut std::collections::VecDeque<String>,
) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.clone());
    progress.send(id, EventKind::Log { stream, line });
}

/// Resolves `user[:group]` as BuildKit does for `--chown` and WORKDIR: numbers as they
/// are, names from the tree's `/etc/passwd` and `/etc/group`, a name not found is 0.
fn resolve_owner(spec: &str, tree: &LayeredView) -> Result<(u32, u32), StepError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = tree.read_to_string("/etc/passwd")?.unwrap_or_default();
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) if user == "root" || user.is_empty() => (0, 0),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == user)
            .map(|f| (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0)))
            .unwrap_or((0, 0)),
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) if group == "root" || group.is_empty() => 0,
            Err(_) => {
                let groups = tree.read_to_string("/etc/group")?.unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == group)
                    .and_then(|f| f[2].parse().ok())
                    .unwrap_or(0)
            }
        };
    }
    Ok((uid, gid))
}

fn view_of(shared: &Shared, snapshot: Option<&SnapshotId>) -> Result<LayeredView, StepError> {
    Ok(LayeredView::new(match snapshot {
        Some(id) => shared.store.snapshots().layers(id)?,
        None => Vec::new(),
    }))
}

/// Runs `work` on a fresh snapshot over `parent`; commits it, or removes it on failure.
fn on_new_snapshot(
    shared: &Shared,
    parent: Option<&SnapshotId>,
    work: impl FnOnce(&std::path::Path, &LayeredView) -> Result<(), StepError>,
) -> Result<Option<SnapshotId>, StepError> {
    let active = shared.store.snapshots().prepare(parent)?;
    let dir = shared.store.snapshots().diff_dir(&active);
    let below = shared
        .store
        .snapshots()
        .lower_layers(&active)
        .map(LayeredView::new)
        .map_err(StepError::from);
    match below.and_then(|below| work(&dir, &below)) {
        Ok(()) => Ok(Some(shared.store.snapshots().commit(active)?)),
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            Err(e)
        }
    }
}

fn run_copy(
    shared: &Shared,
    id: VertexId,
    op: &CopyOp,
    inputs: &[Done],
) -> Result<Option<SnapshotId>, StepError> {
    let dest_view = view_of(shared, inputs[0].snapshot.as_ref())?;
    let chown = op
        .chown
        .as_deref()
        .map(|spec| resolve_owner(spec, &dest_view))
        .transpose()?;
    let excludes = if op.excludes.is_empty() {
        None
    } else {
        Some(
            kiln_parser::dockerignore::Matcher::new(&op.excludes).map_err(|e| {
                StepError::Pattern {
                    pattern: op.excludes.join(","),
                    reason: e.to_string(),
                }
            })?,
        )
    };
    let options = CopyOptions {
        chown,
        chmod: op.chmod.clone(),
        dest_is_dir: op.dest_is_dir,
        excludes,
        parents: op.parents.clone(),
        unpack: op.unpack,
    };
    let dest = if op.dest_is_dir && !op.dest.ends_with('/') {
        format!("{}/", op.dest)
    } else {
        op.dest.clone()
    };
    on_new_snapshot(shared, inputs[0].snapshot.as_ref(), |dir, below| {
        if let Some(name) = &op.context {
            let tree = shared
                .contexts
                .get(name)
                .ok_or_else(|| StepError::Internal(format!("no build context {name}")))?;
            let sources = shared
                .context_sources
                .get(&id)
                .map(|s| s.sources.clone())
                .unwrap_or_default();
            copy(
                &CopyFrom::Context(tree),
                &sources,
                &dest,
                dir,
                below,
                &options,
            )?;
        } else {
            let source_view = view_of(shared, inputs[1].snapshot.as_ref())?;
            let sources = tree_sources(&source_view, &op.sources)?;
            copy(
                &CopyFrom::Tree(&source_view),
                &sources,
                &dest,
                dir,
                below,
                &options,
            )?;
        }
        Ok(())
    })
}

/// Matches sources (globs included) in another stage's or an image's tree.
fn tree_sources(view: &LayeredView, patterns: &[String]) -> Result<Vec<String>, StepError> {
    let mut out = Vec::new();
    for pattern in patterns {
        if !kiln_parser::dockerignore::has_wildcard(pattern) {
            // Through the tree's own symlinks (`/lib -> usr/lib`), as a chroot resolves.
            let resolved = view.resolve(&format!("/{pattern}"), true)?;
            if view.lstat(&resolved)?.is_none() && !pattern.is_empty() {
                return Err(StepError::SourceNotFound {
                    path: format!("/{pattern}"),
                    ignored_by: None,
                });
            }
            out.push(pattern.clone());
            continue;
        }
        // Walk only as deep as the pattern has parts: `*` never crosses a `/`.
        let depth = pattern.split('/').count();
        let mut frontier = vec![String::new()];
        for level in 0..depth {
            let mut next = Vec::new();
            for dir in frontier {
                let real = view.resolve(&format!("/{dir}"), true)?;
                let is_dir = dir.is_empty() || view.lstat(&real)?.is_some_and(|f| f.meta.is_dir());
                if !is_dir {
                    continue;
                }
                let mut names = view.read_dir(&real)?;
                names.sort();
                for name in names {
                    let path = if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    };
                    let prefix: Vec<&str> = pattern.split('/').take(level + 1).collect();
                    let matched = kiln_parser::dockerignore::glob_match(&prefix.join("/"), &path)
                        .map_err(|reason| StepError::Pattern {
                        pattern: pattern.clone(),
                        reason,
                    })?;
                    if matched {
                        next.push(path);
                    }
                }
            }
            frontier = next;
        }
        out.extend(frontier);
    }
    Ok(out)
}

fn run_mkdir(
    shared: &Shared,
    op: &MkdirOp,
    parent: Option<SnapshotId>,
) -> Result<Option<SnapshotId>, StepError> {
    let tree = view_of(shared, parent.as_ref())?;
    let owner = if op.user.is_empty() {
        (0, 0)
    } else {
        resolve_owner(&op.user, &tree)?
    };
    on_new_snapshot(shared, parent.as_ref(), |dir, below| {
        let mut layers = vec![dir.to_owned()];
        layers.extend(below.layers().iter().cloned());
        ensure_dir(dir, &LayeredView::new(layers), &op.path, owner)?;
        Ok(())
    })
}

fn run_files(shared: &Shared, op: &FilesOp) -> Result<Option<SnapshotId>, StepError> {
    on_new_snapshot(shared, None, |dir, _| {
        for (name, content) in &op.files {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|e| io_err(&path, e))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .map_err(|e| io_err(&path, e))?;
        }
        Ok(())
    })
}

fn run_merge(
    shared: &Shared,
    below: Option<SnapshotId>,
    linked: Option<SnapshotId>,
) -> Result<Option<SnapshotId>, StepError> {
    let Some(linked) = linked else {
        return Ok(below);
    };
    let active = shared.store.snapshots().prepare(below.as_ref())?;
    match shared.store.snapshots().apply_diff(&active, &linked) {
        Ok(()) => Ok(Some(shared.store.snapshots().commit(active)?)),
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            Err(e.into())
        }
    }
}

/// Finds what identifies an `ADD URL` now: its `--checksum`, else the server's
/// validators, else (a server that sends none) the digest of a download made now and
/// kept for the step.
async fn remote_identity(store: &Store, op: &HttpOp) -> Result<Remote, StepError> {
    if let Some(checksum) = &op.checksum {
        return Ok(Remote {
            identity: format!("checksum={checksum}"),
            fetched: None,
        });
    }
    let http_err = |e: http::HttpError| StepError::Download(e.to_string());
    if let Some(validators) = http::validators(&op.url).await.map_err(http_err)? {
        return Ok(Remote {
            identity: validators,
            fetched: None,
        });
    }
    let dir = store.tmp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let path = dir.join(format!(
        "download-{}",
        &blake3::hash(format!("{}{:?}", op.url, SystemTime::now()).as_bytes()).to_hex()[..16]
    ));
    let fetched = http::fetch(&op.url, &path).await.map_err(http_err)?;
    Ok(Remote {
        identity: format!("content={}", fetched.digest),
        fetched: Some((path, fetched)),
    })
}

async fn run_http(
    shared: &Shared,
    id: VertexId,
    op: &HttpOp,
) -> Result<Option<SnapshotId>, StepError> {
    let active = shared.store.snapshots().prepare(None)?;
    let path = shared.store.snapshots().diff_dir(&active).join(&op.name);
    let result = async {
        let fetched = match shared.remote.get(&id).and_then(|r| r.fetched.clone()) {
            Some((temp, fetched)) => {
                std::fs::rename(&temp, &path).map_err(|e| io_err(&path, e))?;
                fetched
            }
            None => http::fetch(&op.url, &path)
                .await
                .map_err(|e| StepError::Download(e.to_string()))?,
        };
        if let Some(expected) = &op.checksum
            && *expected != fetched.digest
        {
            return Err(StepError::Download(format!(
                "{}: checksum mismatch: expected {expected}, the download is {}",
                op.url, fetched.digest
            )));
        }
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| io_err(&path, e))?;
        let time =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(fetched.modified.max(0) as u64);
        std::fs::File::open(&path)
            .and_then(|f| f.set_modified(time))
            .map_err(|e| io_err(&path, e))?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(Some(shared.store.snapshots().commit(active)?)),
        Err(e) => {
            let _ = shared.store.snapshots().remove(active.id());
            Err(e)
        }
    }
}

/// Clones a git source into the store's temp dir (on a blocking thread: gitoxide's
/// transport is blocking) and returns its commit and where the checkout is.
async fn git_checkout(
    store: &Store,
    op: &crate::ops::GitOp,
) -> Result<(String, PathBuf), StepError> {
    let dir = store.tmp_dir();
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let dest = dir.join(format!(
        "git-{}",
        &blake3::hash(format!("{}{:?}", op.source.url, SystemTime::now()).as_bytes()).to_hex()
            [..16]
    ));
    let source = op.source.clone();
    let keep = op.keep_git_dir;
    let target = dest.clone();
    let commit = blocking(move || {
        crate::ops::git::checkout(&source, &target, keep)
            .map_err(|e| StepError::Download(e.to_string()))
    })
    .await;
    match commit {
        Ok(commit) => {
            if let Some(expected) = &op.checksum
                && !commit.starts_with(expected.trim_start_matches("sha1:"))
            {
                let _ = std::fs::remove_dir_all(&dest);
                return Err(StepError::Download(format!(
                    "git {}: checksum mismatch: expected commit {expected}, the ref is at {commit}",
                    op.source.url
                )));
            }
            Ok((commit, dest))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dest);
            Err(e)
        }
    }
}

fn run_git(
    shared: &Shared,
    id: VertexId,
    op: &crate::ops::GitOp,
) -> Result<Option<SnapshotId>, StepError> {
    let (_, checkout) = shared
        .git
        .get(&id)
        .ok_or_else(|| StepError::Internal("a git source was not checked out".to_owned()))?;
    let from = crate::ops::git::subdir_in(checkout, &op.source.subdir).ok_or_else(|| {
        StepError::SourceNotFound {
            path: format!(
                "{}#:{} (a directory of the repository, not a link)",
                op.source.url, op.source.subdir
            ),
            ignored_by: None,
        }
    })?;
    on_new_snapshot(shared, None, |dir, _| {
        for entry in std::fs::read_dir(&from).map_err(|e| io_err(&from, e))? {
            let entry = entry.map_err(|e| io_err(&from, e))?;
            let target = dir.join(entry.file_name());
            std::fs::rename(entry.path(), &target).map_err(|e| io_err(&target, e))?;
        }
        Ok(())
    })
}

/// Writes the result's layers, config and manifest into the store (nothing is tagged).
pub fn export_image(
    store: &Store,
    index_path: &std::path::Path,
    plan: &Plan,
    solved: &Solved,
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<StoredImage, SolveError> {
    let fail = |e: StepError| SolveError::bare(e);
    let mut layers: Vec<LayerInfo> = Vec::new();
    let mut created: Vec<Option<i64>> = Vec::new();
    let mut chain: Vec<(CacheKey, Option<SnapshotId>)> = Vec::new();
    let mut parent_key: Option<CacheKey> = None;
    for source in &plan.layers {
        match *source {
            LayerSource::Base { image, layer } => {
                let base = &plan.base_images[image];
                let descriptor = &base.layers[layer];
                let diff_id = base
                    .config
                    .rootfs
                    .diff_ids
                    .get(layer)
                    .cloned()
                    .unwrap_or_else(|| descriptor.digest.to_string());
                layers.push(LayerInfo {
                    digest: descriptor.digest.clone(),
                    diff_id: kiln_snapshotter::Digest::parse(&diff_id)
                        .unwrap_or_else(|| descriptor.digest.clone()),
                    size: descriptor.size,
                    media_type: descriptor.media_type.clone(),
                });
                created.push(None);
                let key = chain_key(parent_key.as_ref(), &diff_id);
                chain.push((key, None));
                parent_key = Some(key);
            }
            LayerSource::Vertex(vertex) => {
                let done = solved.results.get(&vertex).ok_or_else(|| {
                    fail(StepError::Internal(
                        "a layer's step has no result".to_owned(),
                    ))
                })?;
                let snapshot = done.snapshot.as_ref().ok_or_else(|| {
                    fail(StepError::Internal(
                        "a layer's step has no snapshot".to_owned(),
                    ))
                })?;
                // A RUN's mount stubs were removed when it ended (remove_stubs): what
                // is left in its diff is the step's own, parents of mount targets included.
                let options = LayerOptions {
                    source_date_epoch: plan.source_date_epoch,
                    ..LayerOptions::default()
                };
                let info = store
                    .layer_for(snapshot, &options)
                    .map_err(|e| fail(e.into()))?;
                let key = chain_key(parent_key.as_ref(), info.diff_id.as_str());
                chain.push((key, Some(snapshot.clone())));
                parent_key = Some(key);
                layers.push(info);
                created.push(Some(done.created));
            }
        }
    }
    let mut image = plan.image.clone();
    image.rootfs = RootFs {
        kind: "layers".to_owned(),
        diff_ids: layers.iter().map(|l| l.diff_id.to_string()).collect(),
    };
    fill_history_times(&mut image.history, &created, plan.source_date_epoch);
    image.created = image.history.last().and_then(|h| h.created.clone());
    let stored = write_image(store, &image, &layers, annotations).map_err(|e| fail(e.into()))?;
    // Remember which snapshot holds each built layer's chain, so a later FROM of this
    // image reuses the snapshots instead of unpacking its layers again. Only a chain
    // whose whole prefix is known can be recorded this way.
    if let Ok(index) = CacheIndex::open(index_path) {
        for (key, snapshot) in chain {
            if let Some(snapshot) = snapshot {
                let value = serde_json::to_vec(&Recorded {
                    snapshot: Some(snapshot.as_str().to_owned()),
                    created: now_secs(),
                })
                .unwrap_or_default();
                let _ = index.put(
                    &key,
                    &CacheRecord {
                        value,
                        parts: Vec::new(),
                    },
                );
            }
        }
    }
    Ok(stored)
}

/// BuildKit's history timestamps: a layer entry gets its layer's creation time; a run of
/// metadata entries takes the time of the layer after it (the first run) or before it
/// (later runs); with `SOURCE_DATE_EPOCH`, every new entry is the epoch.
fn fill_history_times(history: &mut [History], layer_times: &[Option<i64>], epoch: Option<i64>) {
    let mut layer = 0;
    let mut times: Vec<Option<i64>> = Vec::with_capacity(history.len());
    for entry in history.iter() {
        if entry.empty_layer {
            times.push(None);
        } else {
            times.push(layer_times.get(layer).copied().flatten());
            layer += 1;
        }
    }
    let missing: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, h)| h.created.is_none())
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Some(epoch) = epoch {
        for i in missing {
            history[i].created = Some(rfc3339(epoch));
        }
        return;
    }
    let first_missing = missing[0];
    let mut current = times[first_missing..]
        .iter()
        .flatten()
        .next()
        .copied()
        .or_else(|| times.iter().flatten().last().copied())
        .unwrap_or_else(now_secs);
    let mut seen_missing = false;
    for (i, entry) in history.iter_mut().enumerate() {
        if entry.created.is_some() {
            continue;
        }
        match times[i] {
            Some(t) => {
                entry.created = Some(rfc3339(t));
                if seen_missing {
                    current = t;
                }
            }
            None => {
                seen_missing = true;
                entry.created = Some(rfc3339(current));
            }
        }
    }
}
