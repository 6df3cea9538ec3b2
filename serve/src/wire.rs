//! kiln's own API, `POST /kiln/v1/build`, as data both sides share: the server decodes
//! these types and [`crate::client`] encodes them, so the two cannot drift apart.
//!
//! The request body is one line of JSON, a [`BuildSpec`], then the build context as a
//! tar stream (filtered by `.dockerignore` on the client's side). The answer is
//! `application/x-ndjson`: one [`Message`] a line — the build's progress events (the
//! same objects `--progress rawjson` prints), the bytes of a `dest=-` output, and last
//! the result or the failure. `docs/api.md` and `docs/kiln-api.yaml` describe it for
//! clients in other languages.

use std::collections::BTreeMap;

use kiln_solver::progress::Event;
use serde::{Deserialize, Serialize};

/// The path of the build endpoint.
pub const BUILD_PATH: &str = "/kiln/v1/build";

/// The largest first line (the spec with its secrets) the server reads.
pub const MAX_SPEC_SIZE: usize = 16 << 20;

/// Everything a build asks for, as `kiln build`'s flags say it; unknown fields are
/// refused (a 400), so a client never has a setting silently dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSpec {
    /// The Dockerfile's text and the name messages give it; `None`: `Dockerfile` in the
    /// context.
    pub dockerfile: Option<InlineDockerfile>,
    /// The `.dockerignore` text the client filtered the context with; the server applies
    /// the same patterns (for its hints) and looks for no file of its own.
    pub dockerignore: Option<String>,
    /// The client's name for this context (64 hex digits; `kiln --host` hashes its host
    /// name and the context's path): the server keeps the context under it between
    /// builds and rewrites only the files that changed. `None`: a fresh directory.
    pub context_key: Option<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg`s, resolved on the client.
    pub build_args: BTreeMap<String, String>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--annotation`s.
    pub annotations: BTreeMap<String, String>,
    /// `-t` names.
    pub tags: Vec<String>,
    /// `-o` values in buildx's syntax; one of them may be `dest=-`, whose bytes come back
    /// as [`Message::Output`].
    pub outputs: Vec<String>,
    /// `--push`.
    pub push: bool,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`.
    pub no_cache_filter: Vec<String>,
    /// `--pull`.
    pub pull: bool,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--network`: `default`, `none` or `host`.
    pub network: Option<String>,
    /// `--allow` entitlements.
    pub allow: Vec<String>,
    /// `--secret`s, with their values (read on the client; held in the server's memory).
    pub secrets: Vec<Secret>,
    /// `--build-context NAME=docker-image://REF` (other kinds name the client's files and
    /// are not sent).
    pub named_contexts: BTreeMap<String, String>,
    /// `--jobs`.
    pub jobs: Option<usize>,
}

/// A Dockerfile sent as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineDockerfile {
    /// Shown in messages as `NAME:LINE:COL`.
    pub name: String,
    /// The text.
    pub text: String,
}

/// One secret's id and value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// The id `RUN --mount=type=secret,id=ID` names.
    pub id: String,
    /// The value, base64 (standard alphabet, padded).
    pub value: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.id)
    }
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Message {
    /// A progress event.
    Event(Event),
    /// The next bytes of the `dest=-` output, base64.
    Output(String),
    /// The build finished; the last line.
    Result(BuildResult),
    /// The build failed; the last line.
    Error(BuildFailure),
}

/// A finished build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildResult {
    /// The image id (the config's digest).
    pub id: String,
    /// How many layers the image has.
    pub layers: usize,
    /// The image's size (config and layers), in bytes.
    pub size: u64,
    /// Steps that ran.
    pub ran: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// What the outputs did (`Tagged app:latest`, `Pushed ...`).
    pub lines: Vec<String>,
    /// Names the image got.
    pub names: Vec<String>,
    /// Warnings (unused build args, a foreign `# syntax=`).
    pub warnings: Vec<String>,
    /// The build checks' findings, rendered against the Dockerfile.
    pub findings: Vec<String>,
    /// The `--metadata-file` document.
    pub metadata: serde_json::Value,
}

/// A build that did not finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildFailure {
    /// The whole text a terminal shows (the Dockerfile excerpt, the hint, the step's
    /// last output lines).
    pub rendered: String,
}
