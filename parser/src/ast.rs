//! The typed syntax tree: stages of typed instructions, every node with its span.
//!
//! Values stay as written (quotes included) wherever BuildKit expands build variables
//! later; [`crate::expand`] turns them into final values with the stage's variables.

use serde::Serialize;

use crate::error::Span;
use crate::lines::{Directives, Heredoc, Warning};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dockerfile {
    /// The parser directives at the top.
    pub directives: Directives,
    /// The `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<Instruction>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Warnings that do not stop the build.
    pub warnings: Vec<Warning>,
}

/// One `FROM` and the instructions under it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Position among the stages, from 0 (what `COPY --from=0` names).
    pub index: usize,
    /// The `AS` name, lowercased as BuildKit compares it.
    pub name: Option<String>,
    /// The `FROM` instruction.
    pub from: From,
    /// Where the `FROM` is.
    pub span: Span,
    /// The instructions after it, up to the next `FROM`.
    pub instructions: Vec<Instruction>,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The image (or stage name) as written; may hold `$VAR`s from global ARGs.
    pub image: String,
    /// `--platform`, as written.
    pub platform: Option<String>,
    /// `AS name`, as written.
    pub alias: Option<String>,
}

/// One instruction with its place and text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instruction {
    /// Where it is (first to last line, heredocs included).
    pub span: Span,
    /// The keyword as written (for casing checks).
    pub keyword: String,
    /// The text after continuation lines were joined.
    pub original: String,
    /// What it says.
    pub kind: Kind,
}

/// A command in shell form (a string for the SHELL) or exec form (argv).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum Command {
    /// `RUN make all`: run through the stage's SHELL.
    Shell(String),
    /// `RUN ["make", "all"]`: argv as is.
    Exec(Vec<String>),
}

/// A `KEY=value` pair of ENV or LABEL, value as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// True for the legacy `ENV KEY value` form, whose value is taken literally.
    pub legacy: bool,
}

/// One name of an `ARG`, with its default as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// `=default`, as written.
    pub default: Option<String>,
}

/// What an instruction says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "instruction", content = "args", rename_all = "lowercase")]
pub enum Kind {
    /// `FROM` (only inside [`Stage::from`] and ONBUILD errors).
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `SHELL ["sh", "-c"]`.
    Shell(Vec<String>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER` (deprecated).
    Maintainer(String),
    /// `EXPOSE` ports as written.
    Expose(Vec<String>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ADD`.
    Add(Copy),
    /// `COPY`.
    Copy(Copy),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `USER user[:group]`.
    User(String),
    /// `WORKDIR path`.
    Workdir(String),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ONBUILD` with its trigger.
    Onbuild(Box<Instruction>),
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// What to run.
    pub command: Command,
    /// Heredocs (`RUN <<EOF`).
    pub heredocs: Vec<Heredoc>,
    /// `--mount`s.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
}

/// `RUN --mount=type=...`: options as written (values may hold `$VAR`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `bind`, `cache`, `tmpfs`, `secret` or `ssh`.
    pub kind: String,
    /// The other options in order, keys as written but lowercased.
    pub options: Vec<(String, String)>,
}

impl Mount {
    /// The value of `key` or of one of its aliases (`target`/`dst`/`destination` ...).
    pub fn get(&self, keys: &[&str]) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Sources as written (globs, URLs, `<<EOF` heredoc markers).
    pub sources: Vec<String>,
    /// Destination as written.
    pub dest: String,
    /// Heredocs used as sources.
    pub heredocs: Vec<Heredoc>,
    /// `--from` (COPY only).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--checksum` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD only).
    pub unpack: Option<bool>,
    /// True when the paths came as a JSON array.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE`.
    pub command: Option<Command>,
    /// `--interval` in nanoseconds.
    pub interval: Option<i64>,
    /// `--timeout` in nanoseconds.
    pub timeout: Option<i64>,
    /// `--start-period` in nanoseconds.
    pub start_period: Option<i64>,
    /// `--start-interval` in nanoseconds.
    pub start_interval: Option<i64>,
    /// `--retries`.
    pub retries: Option<u32>,
}
