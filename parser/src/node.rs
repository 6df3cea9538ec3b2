//! The second pass: each logical line becomes a [`Node`] — keyword, leading flags and the
//! arguments as BuildKit's parser splits them for that instruction (its `Node` tree), plus
//! the heredocs. [`Node::dump`] prints BuildKit's `Dump()` format; the typed AST is built
//! from nodes in `instruction.rs`.

use pest::Parser as _;
use pest::iterators::Pair;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Span};
use crate::lines::{Heredoc, Logical};
use crate::words;

#[derive(pest_derive::Parser)]
#[grammar = "dockerfile.pest"]
struct LineGrammar;

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The instruction keyword as written (`run`, `RUN`, `Run` ...).
    pub keyword: String,
    /// The leading `--flag` words, quotes and escapes removed.
    pub flags: Vec<String>,
    /// The arguments, split as this instruction splits them.
    pub args: Vec<String>,
    /// True when the arguments came from a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's nested instruction.
    pub child: Option<Box<Node>>,
    /// Heredocs, in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The instruction text after continuation lines were joined.
    pub original: String,
    /// Where it is.
    pub span: Span,
}

impl Node {
    /// The keyword, lowercased.
    pub fn name(&self) -> String {
        self.keyword.to_lowercase()
    }

    /// BuildKit's `Dump()` of this node: `(run ["--flag"] "arg" ...)`.
    pub fn dump(&self) -> String {
        let mut out = format!("({}", self.name());
        if !self.flags.is_empty() {
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(&format!(" [{}]", quoted.join(" ")));
        }
        if let Some(child) = &self.child {
            out.push(' ');
            out.push_str(&child.dump());
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.push(')');
        out
    }
}

/// Builds the node of one logical line.
pub(crate) fn node(line: &Logical, escape: char) -> Result<Node, Error> {
    let mut node = node_from_text(&line.text, line.span, escape, 0)?;
    node.heredocs = line.heredocs.clone();
    Ok(node)
}

/// How many `ONBUILD` may stack in one line's node view. The typed pass refuses even two
/// (BuildKit's "Chaining ONBUILD"); the node view (`kiln debug dump`) shows two as
/// BuildKit does, and refuses more rather than recursing once per word of a hostile
/// `ONBUILD ONBUILD ...` line.
const MAX_ONBUILD_NODES: usize = 2;

fn node_from_text(text: &str, span: Span, escape: char, depth: usize) -> Result<Node, Error> {
    let (keyword, flags, rest) = split_command(text, span)?;
    let name = keyword.to_lowercase();
    let mut node = Node {
        keyword,
        flags,
        args: Vec::new(),
        json: false,
        child: None,
        heredocs: Vec::new(),
        original: text.to_owned(),
        span,
    };
    let rest = rest.trim();
    match name.as_str() {
        "add" | "copy" | "volume" => match parse_json(rest, span)? {
            Some(args) => {
                node.args = args;
                node.json = true;
            }
            None => node.args = words::split_whitespace(rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            if let Some(args) = parse_json(rest, span)? {
                node.args = args;
                node.json = true;
            } else if !rest.is_empty() {
                node.args = vec![rest.to_owned()];
            }
        }
        "from" | "expose" => node.args = words::split_whitespace(rest),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !rest.is_empty() {
                node.args = vec![rest.to_owned()];
            }
        }
        "arg" => node.args = words::split_words(rest, escape),
        "env" | "label" => node.args = name_values(rest, &name, escape, span)?,
        "healthcheck" => {
            let split = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if split > 0 {
                node.args.push(rest[..split].to_owned());
                let cmd = rest[split..].trim_start();
                if let Some(args) = parse_json(cmd, span)? {
                    node.args.extend(args);
                    node.json = true;
                } else if !cmd.is_empty() {
                    node.args.push(cmd.to_owned());
                }
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                if depth + 1 > MAX_ONBUILD_NODES {
                    return Err(Error::new(
                        span,
                        ErrorKind::Arguments(
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned(),
                        ),
                    )
                    .with_hint("give one ONBUILD per trigger"));
                }
                node.child = Some(Box::new(node_from_text(rest, span, escape, depth + 1)?));
            }
        }
        // Unknown instructions keep their name; the typed pass reports them.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// Keyword, flags and the rest of the line. Lines with leading `--flags` go through
/// the pest grammar; the common case without flags is split directly (the two agree,
/// and skipping the grammar halves the time for a large file).
fn split_command(text: &str, span: Span) -> Result<(String, Vec<String>, String), Error> {
    let trimmed = text.trim_matches(WHITESPACE);
    let (keyword, rest) = match trimmed.find(WHITESPACE) {
        Some(pos) => (
            &trimmed[..pos],
            trimmed[pos..].trim_start_matches(WHITESPACE),
        ),
        None => (trimmed, ""),
    };
    if !rest.starts_with("--") {
        return Ok((keyword.to_owned(), Vec::new(), rest.to_owned()));
    }
    split_command_with_flags(keyword, rest, span)
}

const WHITESPACE: &[char] = &[' ', '\t', '\u{0B}', '\u{0C}', '\r', '\n'];

fn split_command_with_flags(
    keyword: &str,
    rest: &str,
    span: Span,
) -> Result<(String, Vec<String>, String), Error> {
    let mut pairs = LineGrammar::parse(Rule::flags, rest).map_err(|e| {
        Error::new(
            span,
            ErrorKind::Arguments(format!("cannot read the flags: {e}")),
        )
    })?;
    let Some(flags_pair) = pairs.next() else {
        return Ok((keyword.to_owned(), Vec::new(), rest.to_owned()));
    };
    let end = flags_pair.as_span().end();
    let flags = flags_pair
        .into_inner()
        .filter(|p| p.as_rule() == Rule::flag)
        .map(flag_value)
        .collect();
    Ok((keyword.to_owned(), flags, rest[end..].to_owned()))
}

/// A flag's text with quotes removed and backslash escapes applied.
fn flag_value(flag: Pair<'_, Rule>) -> String {
    let mut out = String::from("--");
    for piece in flag.into_inner() {
        match piece.as_rule() {
            Rule::double_quoted | Rule::single_quoted => {
                for inner in piece.into_inner() {
                    match inner.as_rule() {
                        Rule::quoted_escape => out.push_str(&inner.as_str()[1..]),
                        _ => out.push_str(inner.as_str()),
                    }
                }
            }
            Rule::escaped => out.push_str(&piece.as_str()[1..]),
            _ => out.push_str(piece.as_str()),
        }
    }
    out
}

/// BuildKit's `parseJSON`: `Some(args)` when `rest` starts with a JSON array of strings
/// (anything after the array is ignored, as Go's decoder does), an error when it is an
/// array holding something else, `None` when it is not JSON at all.
pub(crate) fn parse_json(rest: &str, span: Span) -> Result<Option<Vec<String>>, Error> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let Some(Ok(serde_json::Value::Array(items))) = stream.next() else {
        return Ok(None);
    };
    let mut args = Vec::with_capacity(items.len());
    for item in items {
        match item {
            serde_json::Value::String(s) => args.push(s),
            _ => {
                return Err(Error::new(
                    span,
                    ErrorKind::Json(
                        "when using JSON array syntax, arrays must be comprised of strings only"
                            .to_owned(),
                    ),
                )
                .with_hint("quote every element, e.g. [\"echo\", \"1\"]"));
            }
        }
    }
    Ok(Some(args))
}

/// ENV and LABEL: `k=v ...` (each pair gives `k`, `v`, `=`) or the legacy `k v` (gives
/// `k`, the rest as written, ``).
fn name_values(rest: &str, name: &str, escape: char, span: Span) -> Result<Vec<String>, Error> {
    let words = words::split_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    let upper = name.to_uppercase();
    if !first.contains('=') {
        let mut parts = rest.splitn(2, ['\t', '\u{0B}', '\u{0C}', '\r', ' ']);
        let key = parts.next().unwrap_or_default();
        let value = parts
            .next()
            .map(|v| v.trim_start_matches(['\t', '\u{0B}', '\u{0C}', '\r', ' ']));
        return match value {
            Some(value) if !value.is_empty() => {
                Ok(vec![key.to_owned(), value.to_owned(), String::new()])
            }
            _ => Err(Error::new(
                span,
                ErrorKind::Arguments(format!("{upper} must have two arguments")),
            )
            .with_hint(format!("write {upper} {key}=VALUE"))),
        };
    }
    let mut args = Vec::new();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(Error::new(
                span,
                ErrorKind::Arguments(format!(
                    "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
                )),
            )
            .with_hint(format!(
                "write {word}=VALUE, or quote a value that holds spaces"
            )));
        };
        args.extend([key.to_owned(), value.to_owned(), "=".to_owned()]);
    }
    Ok(args)
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0B}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    // Go's IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space.
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(c as u32, 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xD800..=0xDFFF | 0xFFFE | 0xFFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &str) {
        let got = node_from_text(text, Span::default(), '\\', 0).map(|n| n.dump());
        assert_eq!(got, Ok(expected.to_owned()), "{text}");
    }

    #[test]
    fn dumps() {
        check(
            "COPY --user=me --doit=true foo /tmp/",
            r#"(copy ["--user=me" "--doit=true"] "foo" "/tmp/")"#,
        );
        check(
            "COPY --doit=true -- foo /tmp/",
            r#"(copy ["--doit=true"] "foo" "/tmp/")"#,
        );
        check("CMD --doit -- [ ]", r#"(cmd ["--doit"])"#);
        check(
            "RUN --mount=\"type=cache,target=/a b\" x",
            r#"(run ["--mount=type=cache,target=/a b"] "x")"#,
        );
        check("CMD [\"a\", \"b\"] trailing", r#"(cmd "a" "b")"#);
        check("CMD [\"a\", 'b']", r#"(cmd "[\"a\", 'b']")"#);
        check(
            "ENV A=1 B=\"x y\"",
            r#"(env "A" "1" "=" "B" "\"x y\"" "=")"#,
        );
        check("ENV A  b c", r#"(env "A" "b c" "")"#);
        check("ONBUILD RUN echo", r#"(onbuild (run "echo"))"#);
        check(
            "HEALTHCHECK --interval=5s CMD [\"a\"]",
            r#"(healthcheck ["--interval=5s"] "CMD" "a")"#,
        );
        check("FOO bar", r#"(foo "")"#);
        check("CMD", "(cmd)");
    }

    #[test]
    fn nested_json_is_an_error() {
        assert!(
            node_from_text(
                "CMD [ \"echo\", [ \"nested json\" ] ]",
                Span::default(),
                '\\',
                0
            )
            .is_err()
        );
    }

    #[test]
    fn quoting_like_go() {
        assert_eq!(go_quote("a\"b\\\t♥\u{0}"), "\"a\\\"b\\\\\\t♥\\x00\"");
    }
}
