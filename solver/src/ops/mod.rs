//! The operations a vertex can run, as plain data. The scheduler knows none of them; the
//! solver's vertex runner matches on [`Op`] and calls the module that runs it.
//!
//! An op holds everything that decides its result, and nothing else: its canonical bytes
//! (serde JSON, fields in declaration order, maps ordered) are the first part of its cache
//! key. What only labels a step (its Dockerfile line, its progress name) lives on the
//! vertex, not here.

pub mod chmod;
pub mod copy;
pub mod git;
pub mod http;
pub mod wildcard;

use serde::Serialize;

use crate::request::NetworkMode;

/// One operation of the build graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The empty filesystem (`FROM scratch`).
    Scratch,
    /// An image's filesystem, identified by its manifest digest (resolved before the build).
    Image {
        /// The reference as resolved, e.g. `docker.io/library/busybox:latest`.
        reference: String,
        /// The manifest digest: the identity of the content.
        digest: String,
    },
    /// A build context (the main one is named `context`); its content enters the keys of
    /// the ops that read it, never as a whole.
    Context {
        /// `context` or the `--build-context` name.
        name: String,
    },
    /// A process run in a sandbox on input 0's filesystem (`RUN`).
    Exec(ExecOp),
    /// Files copied from input 1 (a context or a stage) onto input 0 (`COPY`, `ADD`).
    Copy(CopyOp),
    /// A directory made on input 0 (`WORKDIR`).
    Mkdir(MkdirOp),
    /// Small files made from the Dockerfile's text (`COPY <<EOF`), on nothing.
    Files(FilesOp),
    /// A file downloaded (`ADD https://...`), on nothing.
    Http(HttpOp),
    /// A git repository checked out (`ADD https://host/repo.git#ref:subdir`), on nothing.
    Git(GitOp),
    /// Input 1's own changes put on top of input 0 (`COPY --link`): input 1 was built on
    /// nothing, so its cache survives any change below.
    Merge,
}

/// `ADD URL`: one file, named `name`, at the root of an empty tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpOp {
    /// The URL.
    pub url: String,
    /// `--checksum=sha256:...`, verified after the download.
    pub checksum: Option<String>,
    /// The file's name: the URL path's last part.
    pub name: String,
}

/// `ADD` of a git repository: its tree (or a subdirectory of it) at the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitOp {
    /// Where and what.
    pub source: git::GitSource,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum`: the commit expected.
    pub checksum: Option<String>,
}

/// `COPY <<EOF`: the heredocs, as files at the root of an empty tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesOp {
    /// Name (the heredoc's delimiter) and content, in order.
    pub files: Vec<(String, String)>,
}

/// `RUN`: what runs, as whom, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecOp {
    /// The command and its arguments (shell form already wrapped in the SHELL).
    pub argv: Vec<String>,
    /// The environment: the image's `Env` with the ARGs in scope.
    pub env: Vec<String>,
    /// The working directory, absolute; created if missing.
    pub cwd: String,
    /// `uid[:gid]` or names, as `USER` says; empty means root.
    pub user: String,
    /// The network the process sees.
    pub network: NetworkMode,
    /// Extra mounts (`RUN --mount`), in order.
    pub mounts: Vec<ExecMount>,
}

/// One `RUN --mount`. Secret and ssh mounts name what they need, never its content: that
/// is looked up when the step runs and never enters a key, a layer or the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecMount {
    /// A read-only (or writable, changes discarded) view of another input's tree.
    Bind {
        /// Which input of the vertex.
        input: usize,
        /// Path inside that input (for a context, the path the input copied).
        source: String,
        /// Where it appears.
        target: String,
        /// Writable, with changes discarded.
        rw: bool,
        /// The input is a copy of part of this build context (`source` is the path in
        /// the context; a directory's contents are the copy's root).
        context: Option<String>,
    },
    /// A persistent cache directory, kept in the store across builds. As in BuildKit,
    /// one cache is the pair of `id` and `seed`: the same id with another owner or another
    /// `from=` is another cache.
    Cache {
        /// The cache's id, in BuildKit's form `NAMESPACE/ID` (`BUILDKIT_CACHE_MOUNT_NS`,
        /// empty by default, then the `id=` or the cleaned target).
        id: String,
        /// Where it appears.
        target: String,
        /// `shared`, `private` or `locked`.
        sharing: String,
        /// What the cache holds on first use.
        seed: CacheSeed,
        /// Read-only.
        readonly: bool,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Where it appears.
        target: String,
        /// Its size limit in bytes (0: the kernel's default).
        size: u64,
    },
    /// A secret, as a file and/or an environment variable.
    Secret {
        /// The secret's id.
        id: String,
        /// Where the file appears (none when only `env=` is asked for).
        target: Option<String>,
        /// The environment variable to set to the secret's value.
        env: Option<String>,
        /// Fail when the secret was not given.
        required: bool,
        /// File mode.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A small read-only file made for the step (a `RUN <<EOF` script with a `#!` line).
    File {
        /// Where it appears.
        target: String,
        /// Its content (part of the key: it is the step's program).
        content: String,
        /// Its mode.
        mode: u32,
    },
    /// An ssh agent socket: a socket of kiln's own, made for the step, whose connections
    /// are forwarded to the `--ssh` agent (as BuildKit's sshforward).
    Ssh {
        /// The `--ssh` id.
        id: String,
        /// Where the socket appears (`SSH_AUTH_SOCK` points at it).
        target: String,
        /// Fail when no such `--ssh` was given.
        required: bool,
        /// The socket's permission bits (BuildKit's default 0600).
        mode: u32,
        /// Its owner (default 0).
        uid: u32,
        /// Its group (default 0).
        gid: u32,
    },
}

/// What a cache mount starts as, the first time its (id, seed) pair is used: BuildKit's
/// base ref of the cache (`convert_runmount.go`: a scratch `mkdir /cache` when `uid`,
/// `gid` or `mode` is given, the `from=` input at `source=` when one is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CacheSeed {
    /// An empty directory, 0755 root:root.
    Empty,
    /// An empty directory with this mode (permission bits) and owner.
    Dir {
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A copy of a directory of another input (`from=STAGE|IMAGE,source=PATH`).
    Input {
        /// Which input of the vertex.
        input: usize,
        /// The directory in that input, absolute (for a context, the path the input
        /// copied, as a bind's).
        source: String,
        /// The input is a copy of part of this build context.
        context: Option<String>,
        /// Made with this mode and owner when the input has no such directory (BuildKit's
        /// `mkdir /cache` on the `from=` tree when `uid`/`gid`/`mode` is given without
        /// `source=`); `None`: the directory must exist.
        or_dir: Option<(u32, u32, u32)>,
    },
}

impl ExecMount {
    /// Where the mount appears, when it is a path.
    pub fn target(&self) -> Option<&str> {
        match self {
            ExecMount::Bind { target, .. }
            | ExecMount::Cache { target, .. }
            | ExecMount::Tmpfs { target, .. }
            | ExecMount::File { target, .. }
            | ExecMount::Ssh { target, .. } => Some(target),
            ExecMount::Secret { target, .. } => target.as_deref(),
        }
    }
}

/// `COPY`/`ADD`: sources from input 1 to a destination on input 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyOp {
    /// Source paths or patterns, relative to the source root, as written after expansion.
    pub sources: Vec<String>,
    /// Destination, absolute (joined with WORKDIR already).
    pub dest: String,
    /// The destination is a directory (ends with `/`).
    pub dest_is_dir: bool,
    /// `--chown` as written (names are resolved against the destination's files).
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<chmod::Chmod>,
    /// `--parents`: for each source, the part of its path not recreated under the
    /// destination (empty: the whole path is kept); none without `--parents`.
    pub parents: Option<Vec<String>>,
    /// `ADD`: a source that is a tar archive (plain or compressed) is extracted into the
    /// destination instead of copied.
    pub unpack: bool,
    /// Patterns left out (`--exclude`).
    pub excludes: Vec<String>,
    /// Input 1 is this build context (files become `0:0`, globs match its scan), not a
    /// stage or image (owners kept).
    pub context: Option<String>,
    /// Heredoc files (`COPY file <<EOF dest`), by name, copied from input 2 (their
    /// [`FilesOp`] tree) after the sources, as BuildKit copies a COPY's inline documents
    /// after its paths. Left out of the key's JSON when empty, so other COPYs keep theirs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<String>,
}

/// `WORKDIR`: make a directory (and its parents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MkdirOp {
    /// Absolute path.
    pub path: String,
    /// Owner of directories it creates, as `USER` says (empty: root).
    pub user: String,
}

/// Labels for the ops, for progress lines when no Dockerfile line is at hand.
pub fn describe(op: &Op) -> String {
    match op {
        Op::Scratch => "scratch".to_owned(),
        Op::Image { reference, .. } => format!("FROM {reference}"),
        Op::Context { name } => format!("load build context {name}"),
        Op::Exec(exec) => format!("RUN {}", exec.argv.join(" ")),
        Op::Copy(copy) => format!("COPY {} {}", copy.sources.join(" "), copy.dest),
        Op::Mkdir(mkdir) => format!("WORKDIR {}", mkdir.path),
        Op::Files(files) => format!(
            "make {}",
            files
                .files
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Op::Merge => "merge".to_owned(),
        Op::Http(http) => format!("download {}", http.url),
        Op::Git(git) => format!("git clone {}", git.source.url),
    }
}
