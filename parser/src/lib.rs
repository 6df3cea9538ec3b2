//! Dockerfile text -> typed AST with spans; the shell-word expander; `.dockerignore`;
//! BuildKit's build checks over the AST ([`lint`]).
//!
//! Pure: no I/O beyond the text it is given, no panics on any input (fuzzed).
#![forbid(unsafe_code)]

pub mod ast;
pub mod dockerignore;
mod error;
pub mod expand;
mod instruction;
mod lines;
pub mod lint;
mod node;
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

/// Parses into BuildKit's node view (no instruction is checked yet).
pub fn parse_nodes(text: &str) -> Result<NodeTree, Error> {
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

/// Reports, at parse time, the words that could never be expanded.
fn check_words(instruction: &Instruction, escape: char) -> Result<(), Error> {
    match expand::expand(&instruction.kind, escape, &AnyValue) {
        Ok(_) => Ok(()),
        Err(err) => Err(
            Error::new(instruction.span, ErrorKind::Quote(err.to_string()))
                .with_hint("close the quote or the ${...}, or escape the character"),
        ),
    }
}
