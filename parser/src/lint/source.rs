//! What the checks read from the text because the typed AST does not keep it: each
//! instruction's node (keyword and `AS` as written), the comments right above it (for
//! descriptions), and the span of a single line.

use std::collections::BTreeMap;

use super::CheckConfig;
use crate::error::Span;
use crate::node::Node;

/// The text and the facts derived from it.
pub(crate) struct Source<'a> {
    text: &'a str,
    /// Every instruction's node, in file order.
    pub(crate) nodes: Vec<Node>,
    /// For each node, the comments above it as BuildKit collects them (`PrevComment`).
    comments: Vec<Vec<String>>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str) -> Source<'a> {
        // The file parsed already; should the node pass fail anyway, the checks that
        // need nodes find none.
        let nodes = crate::parse_nodes(text)
            .map(|tree| tree.nodes)
            .unwrap_or_default();
        let comments = prev_comments(text, &nodes);
        Source {
            text,
            nodes,
            comments,
        }
    }

    /// The node of the instruction that starts at byte `start`.
    pub(crate) fn node_at(&self, start: usize) -> Option<&Node> {
        self.nodes.iter().find(|n| n.span.start == start)
    }

    /// The comments above the node of the instruction that starts at byte `start`.
    pub(crate) fn comments_at(&self, start: usize) -> &[String] {
        self.nodes
            .iter()
            .position(|n| n.span.start == start)
            .and_then(|i| self.comments.get(i))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The span of physical line `line` (1-based), without its newline.
    pub(crate) fn line_span(&self, line: usize) -> Span {
        line_span(self.text, line).unwrap_or(Span {
            line,
            col: 1,
            end_line: line,
            ..Span::default()
        })
    }
}

/// The span of physical line `line` (1-based) of `text`, without its newline.
pub(crate) fn line_span(text: &str, line: usize) -> Option<Span> {
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let content = raw.trim_end_matches(['\r', '\n']);
            return Some(Span {
                start: offset,
                end: offset + content.len(),
                line,
                col: 1,
                end_line: line,
            });
        }
        offset += raw.len();
    }
    None
}

/// The configuration for each instruction (by start byte) that has a `# check=` comment
/// among the comments above it: `config` merged with the first such comment, as
/// BuildKit's `WithMergedConfigFromComments` (frontend 1.21+). A comment that names
/// another directive (`# syntax=`) is passed over; a `check=` value that does not parse
/// leaves `config` as it is. The value ends at its first space, so
/// `# check=skip=all // why` works.
pub(crate) fn local_configs(
    source: &Source<'_>,
    config: &CheckConfig,
) -> BTreeMap<usize, CheckConfig> {
    let mut out = BTreeMap::new();
    for (node, comments) in source.nodes.iter().zip(&source.comments) {
        let found = comments.iter().find_map(|comment| {
            let line = format!("#{comment}");
            let (name, value) = crate::lines::directive(&line)?;
            (name.eq_ignore_ascii_case("check"))
                .then(|| value.split(' ').next().map(CheckConfig::parse))
        });
        if let Some(Some(Ok(local))) = found {
            out.insert(node.span.start, config.merged(&local));
        }
    }
    out
}

/// The `# check=` directive as BuildKit's linter reads it (`parser.ParseDirective`, not
/// the parser's own pass): after a byte-order mark and a first `#!` line, each line
/// must start with `#` (no indent) and be a known directive, the first other line ends
/// the scan, and a second directive of one name ends it too. The value, cut at its
/// first space, and its line (1-based).
pub(crate) fn check_directive(text: &str) -> Option<(String, usize)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split('\n').enumerate().peekable();
    if lines.peek().is_some_and(|(_, l)| l.starts_with("#!")) {
        lines.next();
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, raw) in lines {
        let (name, value) = crate::lines::directive(raw.trim_end_matches('\r'))?;
        let name = name.to_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") || seen.contains(&name) {
            return None;
        }
        if name == "check" {
            return Some((
                value.split(' ').next().unwrap_or_default().to_owned(),
                i + 1,
            ));
        }
        seen.push(name);
    }
    None
}

/// The comments BuildKit's parser hands each instruction: the comment lines since the
/// previous instruction, each without its first character and trimmed; a bare `#`
/// empties the list, a parser directive is not kept, a blank line changes nothing.
/// Comment lines inside a continued instruction do not count.
fn prev_comments(text: &str, nodes: &[Node]) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::with_capacity(nodes.len());
    let mut comments: Vec<String> = Vec::new();
    let mut scan = DirectiveScan::default();
    let mut line = 1;
    for node in nodes {
        while line < node.span.line {
            let mut raw = lines.get(line - 1).copied().unwrap_or_default();
            if line == 1 {
                raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
            }
            let trimmed = raw.trim_start();
            if trimmed.starts_with('#') {
                let mut rest = raw.chars();
                rest.next();
                let comment = rest.as_str().trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_owned());
                }
            }
            if scan
                .directive(trimmed.trim_end_matches(['\r', '\n']))
                .is_some()
            {
                comments.pop();
            }
            line += 1;
        }
        out.push(std::mem::take(&mut comments));
        scan.done = true;
        line = node.span.end_line + 1;
    }
    out
}

/// The parser directives at the top: `# name=value` lines with a known name, each once,
/// before anything else.
#[derive(Default)]
struct DirectiveScan {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveScan {
    /// The directive's name if `line` (left-trimmed, no newline) is one.
    fn directive(&mut self, line: &str) -> Option<String> {
        if self.done {
            return None;
        }
        let name = crate::lines::directive(line).map(|(name, _)| name.to_lowercase());
        match name {
            Some(name)
                if matches!(name.as_str(), "syntax" | "escape" | "check")
                    && !self.seen.contains(&name) =>
            {
                self.seen.push(name.clone());
                Some(name)
            }
            _ => {
                self.done = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&[&str]]) {
        let source = Source::new(text);
        let got: Vec<Vec<&str>> = source
            .nodes
            .iter()
            .map(|n| {
                source
                    .comments_at(n.span.start)
                    .iter()
                    .map(String::as_str)
                    .collect()
            })
            .collect();
        let want: Vec<Vec<&str>> = expected.iter().map(|c| c.to_vec()).collect();
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn comments_above_instructions() {
        check(
            "# check=skip=all\n# foo is foo\nARG foo\n\n# one\n\n#  two  \nFROM a\n#\nARG b\nRUN x \\\n  # inside\n  y\n",
            &[&["foo is foo"], &["one", "two"], &[], &[]],
        );
        check("  # indented\nFROM a\n", &[&["# indented"]]);
        check("RUN <<EOF\n# body\nEOF\nFROM a\n", &[&[], &[]]);
    }

    #[test]
    fn directive_lines() {
        let found = check_directive;
        assert_eq!(
            found("# syntax=x\n# check=skip=all\nFROM a\n"),
            Some(("skip=all".to_owned(), 2))
        );
        assert_eq!(found("# hi\n# check=a\nFROM a\n"), None);
        assert_eq!(
            found("#!/bin/kiln\n#check = skip=A, B\n"),
            Some(("skip=A,".to_owned(), 2))
        );
        assert_eq!(found(" # check=skip=all\nFROM a\n"), None);
        assert_eq!(found("# escape=`\n# escape=\\\n# check=skip=all\n"), None);
    }
}
