//! Dockerfile text -> typed AST with spans; the shell-word expander; `.dockerignore`;
//! BuildKit's build checks over the AST ([`lint`]).
//!
//! Pure: no I/O beyond the text it is given, no panics on any input (fuzzed).
//!
//! Bounded on hostile input: a file over [`MAX_DOCKERFILE_SIZE`] is refused before it
//! is scanned, `${...}` nesting and expanded word sizes are capped ([`shell`]), nothing
//! recurses on the input's depth beyond those caps, and a NUL byte where text becomes a
//! process's argument or environment is refused at parse time. Bytes from a file go
//! through [`decode`] (or [`parse_bytes`]), which places the first byte that is not
//! UTF-8 at its `line:col`.
#![forbid(unsafe_code)]

pub mod ast;
pub mod dockerignore;
mod error;
pub mod expand;
mod instruction;
mod lines;
pub mod lint;
mod node;
pub mod outline;
pub mod shell;
mod words;

pub use ast::{Dockerfile, Instruction, Kind, Stage};
pub use error::{Error, ErrorKind, Span, did_you_mean, excerpt};
pub use instruction::csv_fields;
pub use lines::{Directives, Heredoc, Warning};
pub use node::Node;

/// The file as BuildKit's parser sees it: directives, one node per instruction, warnings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTree {
    /// The parser directives at the top.
    pub directives: Directives,
    /// One node per instruction, in order.
    pub nodes: Vec<Node>,
    /// Warnings such as empty continuation lines.
    pub warnings: Vec<Warning>,
}

impl NodeTree {
    /// BuildKit's `Dump()` of the whole file, with a final newline.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&node.dump());
            out.push('\n');
        }
        out
    }
}

/// The largest Dockerfile kiln reads: 16 MiB, BuildKit's own bound (the Dockerfile
/// frontend refuses a file larger than one gRPC message, containerd's
/// `DefaultMaxRecvMsgSize`), so every file BuildKit builds, kiln parses. The largest
/// public Dockerfiles are a few hundred KiB; parsing is linear, so 16 MiB costs seconds,
/// not the machine.
pub const MAX_DOCKERFILE_SIZE: usize = 16 << 20;

/// Refuses text over [`MAX_DOCKERFILE_SIZE`].
fn check_size(len: usize) -> Result<(), Error> {
    if len > MAX_DOCKERFILE_SIZE {
        return Err(Error::new(
            Span {
                start: 0,
                end: 0,
                line: 1,
                col: 1,
                end_line: 1,
            },
            ErrorKind::Limit(format!(
                "the Dockerfile is {len} bytes, more than the {} MiB kiln reads",
                MAX_DOCKERFILE_SIZE >> 20
            )),
        )
        .with_hint(
            "a Dockerfile this large is not one; check the -f path (a device or a generated file?)",
        ));
    }
    Ok(())
}

/// The Dockerfile's bytes as text: refused when over [`MAX_DOCKERFILE_SIZE`] or not
/// UTF-8, the error placed at the first byte that is not (render it with
/// `String::from_utf8_lossy(bytes)` as the source: the columns before that byte agree).
pub fn decode(bytes: &[u8]) -> Result<&str, Error> {
    check_size(bytes.len())?;
    std::str::from_utf8(bytes).map_err(|err| {
        let at = err.valid_up_to();
        // The prefix up to `at` is valid UTF-8, so this cannot fail.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        let end = at + err.error_len().unwrap_or(bytes.len() - at);
        Error::new(
            Span {
                start: at,
                end,
                line,
                col,
                end_line: line,
            },
            ErrorKind::Encoding(format!(
                "the Dockerfile is not UTF-8 text: byte 0x{:02x} at offset {at} does not start a UTF-8 character",
                bytes[at]
            )),
        )
        .with_hint("save the file as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 Dockerfile)")
    })
}

/// [`parse`] for the bytes of a file: [`decode`] then [`parse`].
pub fn parse_bytes(bytes: &[u8]) -> Result<Dockerfile, Error> {
    parse(decode(bytes)?)
}

/// Parses into BuildKit's node view (no instruction is checked yet).
pub fn parse_nodes(text: &str) -> Result<NodeTree, Error> {
    check_size(text.len())?;
    let scanned = lines::scan(text)?;
    if scanned.lines.is_empty() {
        let end_line = text.lines().count().max(1);
        return Err(Error::new(
            Span {
                start: text.len(),
                end: text.len(),
                line: end_line,
                col: 1,
                end_line,
            },
            ErrorKind::Empty,
        )
        .with_hint("a Dockerfile needs at least a FROM instruction"));
    }
    let escape = scanned.directives.escape;
    let nodes = scanned
        .lines
        .iter()
        .map(|line| node::node(line, escape))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeTree {
        directives: scanned.directives,
        nodes,
        warnings: scanned.warnings,
    })
}

/// Parses a Dockerfile into stages of typed instructions.
pub fn parse(text: &str) -> Result<Dockerfile, Error> {
    let tree = parse_nodes(text)?;
    let last_span = tree.nodes.last().map(|n| n.span).unwrap_or_default();
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let escape = tree.directives.escape;
    for node in tree.nodes {
        let instruction = instruction::instruction(node)?;
        check_words(&instruction, escape)?;
        check_nul(&instruction, text)?;
        match instruction.kind {
            Kind::From(from) => stages.push(Stage {
                index: stages.len(),
                name: from.alias.as_ref().map(|a| a.to_lowercase()),
                from,
                span: instruction.span,
                instructions: Vec::new(),
            }),
            Kind::Arg(_) if stages.is_empty() => global_args.push(instruction),
            _ => match stages.last_mut() {
                Some(stage) => stage.instructions.push(instruction),
                None => {
                    let keyword = instruction.keyword.to_uppercase();
                    return Err(Error::new(
                        instruction.span,
                        ErrorKind::Arguments(format!(
                            "{keyword} comes before any FROM; only ARG may come before the first FROM"
                        )),
                    )
                    .with_hint("start the Dockerfile with FROM IMAGE"));
                }
            },
        }
    }
    if stages.is_empty() {
        let span = last_span;
        return Err(Error::new(
            span,
            ErrorKind::Arguments(
                "the Dockerfile has no FROM: there is no stage to build".to_owned(),
            ),
        )
        .with_hint("add FROM IMAGE (or FROM scratch)"));
    }
    Ok(Dockerfile {
        directives: tree.directives,
        global_args,
        stages,
        warnings: tree.warnings,
    })
}

/// Parses one instruction line, such as `CMD ["/bin/sh"]` (for `kiln import -c`).
pub fn parse_instruction(text: &str) -> Result<Instruction, Error> {
    let tree = parse_nodes(text)?;
    let second = tree.nodes.get(1).map(|n| n.span);
    let mut nodes = tree.nodes.into_iter();
    match (nodes.next(), second) {
        (Some(node), None) => instruction::instruction(node),
        _ => Err(Error::new(
            second.unwrap_or_default(),
            ErrorKind::Arguments("expected exactly one instruction".to_owned()),
        )
        .with_hint("give one instruction per -c/--change")),
    }
}

/// Every variable set: expansion then fails only on syntax (an unterminated quote, a bad
/// `${...}`), never on a value.
struct AnyValue;

impl shell::Env for AnyValue {
    fn get(&self, _name: &str) -> Option<&str> {
        Some("x")
    }
}

/// Whether a value that becomes a process's argument, environment or working directory
/// holds a NUL byte (the kernel cannot take one: `execve` strings end at NUL).
fn nul_in_process_text(kind: &Kind) -> bool {
    fn command(c: &ast::Command) -> bool {
        match c {
            ast::Command::Shell(s) => s.contains('\0'),
            ast::Command::Exec(v) => v.iter().any(|s| s.contains('\0')),
        }
    }
    match kind {
        Kind::Run(run) => command(&run.command),
        Kind::Cmd(c) | Kind::Entrypoint(c) => command(c),
        Kind::Shell(v) => v.iter().any(|s| s.contains('\0')),
        Kind::Env(pairs) => pairs
            .iter()
            .any(|kv| kv.key.contains('\0') || kv.value.contains('\0')),
        Kind::Workdir(s) | Kind::User(s) => s.contains('\0'),
        Kind::Healthcheck(h) => h.command.as_ref().is_some_and(command),
        Kind::Onbuild(inner) => nul_in_process_text(&inner.kind),
        _ => false,
    }
}

/// Refuses a NUL byte in RUN, CMD, ENTRYPOINT, SHELL, ENV, WORKDIR, USER or a
/// HEALTHCHECK command, pointing at the byte when it is in the text (a JSON `\u0000`
/// points at the instruction).
fn check_nul(instruction: &Instruction, text: &str) -> Result<(), Error> {
    if !nul_in_process_text(&instruction.kind) {
        return Ok(());
    }
    let span = instruction.span;
    let found = text
        .get(span.start..span.end.max(span.start))
        .and_then(|s| s.find('\0'))
        .map(|i| span.start + i);
    let span = match found {
        Some(at) => {
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            Span {
                start: at,
                end: at + 1,
                line,
                col: before[line_start..].chars().count() + 1,
                end_line: line,
            }
        }
        None => span,
    };
    let keyword = instruction.keyword.to_uppercase();
    Err(Error::new(
        span,
        ErrorKind::Nul(format!(
            "{keyword} holds a NUL byte (\\0): a process's arguments and environment cannot carry one"
        )),
    )
    .with_hint("remove the NUL byte (editors show it as ^@ or \\0)"))
}

/// Reports, at parse time, the words that could never be expanded.
fn check_words(instruction: &Instruction, escape: char) -> Result<(), Error> {
    match expand::expand(&instruction.kind, escape, &AnyValue) {
        Ok(_) => Ok(()),
        Err(err) => Err(expand_error(instruction.span, &err)),
    }
}

/// A failed expansion as a parse error at `span`: a syntax error says to close the quote
/// or brace, a bound says which and what to change.
pub fn expand_error(span: Span, err: &shell::Error) -> Error {
    match err.limit {
        Some(limit) => Error::new(span, ErrorKind::Limit(err.to_string())).with_hint(limit.hint()),
        None => Error::new(span, ErrorKind::Quote(err.to_string()))
            .with_hint("close the quote or the ${...}, or escape the character"),
    }
}
