//! Parse errors: where (a [`Span`]), what, and how to fix it, rendered like rustc.

use std::fmt;

use serde::Serialize;

/// A place in the Dockerfile: byte offsets and 1-based line/column of the start, and the
/// last line (continuation lines and heredoc bodies belong to their instruction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
    /// 1-based line of the first character.
    pub line: usize,
    /// 1-based column (in characters) of the first character.
    pub col: usize,
    /// 1-based last line.
    pub end_line: usize,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file has no instruction at all.
    #[error("file with no instructions")]
    Empty,
    /// A physical line is longer than BuildKit's scanner accepts.
    #[error("dockerfile line greater than max allowed size of 65535")]
    LineTooLong,
    /// A parser directive is repeated or has a bad value.
    #[error("{0}")]
    Directive(String),
    /// An instruction keyword kiln does not know.
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    /// A `--flag` the instruction does not take.
    #[error("unknown flag: {0}")]
    UnknownFlag(String),
    /// A flag with a bad value.
    #[error("{0}")]
    BadFlag(String),
    /// Too few or too many arguments, or malformed ones.
    #[error("{0}")]
    Arguments(String),
    /// JSON where only a JSON array of strings is allowed.
    #[error("{0}")]
    Json(String),
    /// A heredoc whose terminator never comes.
    #[error("unterminated heredoc")]
    UnterminatedHeredoc,
    /// A quote that never closes.
    #[error("{0}")]
    Quote(String),
    /// The input is past one of the parser's bounds (file size, nesting, expanded size).
    #[error("{0}")]
    Limit(String),
    /// The file is not UTF-8 text.
    #[error("{0}")]
    Encoding(String),
    /// A NUL byte where the text becomes a process's argument or environment.
    #[error("{0}")]
    Nul(String),
}

/// A parse error: what is wrong and where, with an optional hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where.
    pub span: Span,
    /// What.
    pub kind: ErrorKind,
    /// How to fix it, when there is something to say.
    pub hint: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.span.line, self.kind)
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(crate) fn new(span: Span, kind: ErrorKind) -> Error {
        Error {
            span,
            kind,
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// The error as a person should read it:
    ///
    /// ```text
    /// Dockerfile:3:1: unknown instruction: RUNN
    ///   |
    /// 3 | RUNN echo hi
    ///   | ^^^^
    ///   = hint: did you mean RUN?
    /// ```
    pub fn render(&self, file_name: &str, source: &str) -> String {
        excerpt(
            file_name,
            source,
            &self.span,
            &self.kind.to_string(),
            self.hint.as_deref(),
        )
    }
}

/// Renders `message` at `span` of `source` the way rustc does: `FILE:LINE:COL: message`,
/// the line, a caret under the span, and the hint. Used for parse errors and for build
/// errors that point at an instruction.
pub fn excerpt(
    file_name: &str,
    source: &str,
    span: &Span,
    message: &str,
    hint: Option<&str>,
) -> String {
    let line_no = span.line.max(1);
    let mut out = format!("{file_name}:{line_no}:{}: {message}\n", span.col.max(1));
    if let Some(line) = source.lines().nth(line_no - 1) {
        let line = line
            .strip_prefix('\u{feff}')
            .unwrap_or(line)
            .trim_end_matches('\r');
        let gutter = " ".repeat(line_no.to_string().len());
        let col = span.col.max(1);
        let width = if span.end > span.start && span.end_line <= line_no {
            source
                .get(span.start..span.end)
                .map(|s| s.chars().count())
                .unwrap_or(1)
        } else {
            line.chars().count().saturating_sub(col - 1)
        }
        .clamp(1, 80);
        out.push_str(&format!("{gutter} |\n{line_no} | {line}\n"));
        out.push_str(&format!(
            "{gutter} | {}{}\n",
            " ".repeat(col - 1),
            "^".repeat(width)
        ));
        if let Some(hint) = hint {
            out.push_str(&format!("{gutter} = hint: {hint}\n"));
        }
    } else if let Some(hint) = hint {
        out.push_str(&format!("  = hint: {hint}\n"));
    }
    out
}

/// The closest of `candidates` to `word` (case-insensitive), if it is close enough to be
/// a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) + usize::from(c.len() > 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbours (the commonest typo) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let all = ["run", "copy", "workdir", "entrypoint"];
        assert_eq!(did_you_mean("RUNN", &all), Some("run"));
        assert_eq!(did_you_mean("cpy", &all), Some("copy"));
        assert_eq!(did_you_mean("entrypiont", &all), Some("entrypoint"));
        assert_eq!(did_you_mean("banana", &all), None);
    }

    #[test]
    fn renders_like_rustc() {
        let source = "FROM x\nRUNN echo\n";
        let err = Error::new(
            Span {
                start: 7,
                end: 11,
                line: 2,
                col: 1,
                end_line: 2,
            },
            ErrorKind::UnknownInstruction("RUNN".into()),
        )
        .with_hint("did you mean RUN?");
        assert_eq!(
            err.render("Dockerfile", source),
            "Dockerfile:2:1: unknown instruction: RUNN\n  |\n2 | RUNN echo\n  | ^^^^\n  = hint: did you mean RUN?\n"
        );
    }
}
