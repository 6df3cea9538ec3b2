//! Dockerfile text -> typed AST with spans; the shell-word expander; `.dockerignore`.
//!
//! Pure: no I/O beyond the text it is given, no panics on any input (fuzzed).
#![forbid(unsafe_code)]

pub mod dockerignore;
mod error;
mod lines;
mod node;
pub mod shell;
mod words;

pub use error::{Error, ErrorKind, Span};
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
