//! The first pass, as BuildKit's scanner does it: parser directives at the top, comments,
//! line continuations, blank lines inside continuations, heredoc bodies. It turns the
//! text into logical instruction lines, each with the span of the physical lines it took.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Span};

/// The parser directives at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=`: the frontend the file asks for, if any.
    pub syntax: Option<String>,
    /// `# escape=`: the escape character, `\` unless the file says `` ` ``.
    pub escape: char,
    /// `# check=`: the build-check settings, as written.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A heredoc attached to an instruction (`RUN <<EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The body, every line with its newline; with `<<-`, leading tabs removed.
    pub body: String,
    /// False when the delimiter was quoted: then `$VAR` in the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

/// A warning that does not stop parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What the warning is about.
    pub message: String,
    /// Where.
    pub span: Span,
}

/// One instruction's text after continuation lines are joined.
#[derive(Debug, Clone)]
pub(crate) struct Logical {
    pub(crate) text: String,
    pub(crate) span: Span,
    pub(crate) heredocs: Vec<Heredoc>,
}

pub(crate) struct Scanned {
    pub(crate) directives: Directives,
    pub(crate) lines: Vec<Logical>,
    pub(crate) warnings: Vec<Warning>,
}

const MAX_LINE: usize = 65535;

struct Physical<'a> {
    /// The line with its newline.
    raw: &'a str,
    offset: usize,
    number: usize,
}

fn physical_lines(text: &str) -> Vec<Physical<'_>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        out.push(Physical {
            raw,
            offset,
            number: i + 1,
        });
        offset += raw.len();
    }
    out
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(s: &str) -> bool {
    s.trim_start().starts_with('#')
}

/// If the line ends in an unescaped escape character (then spaces or tabs), returns the
/// line without it: the instruction continues on the next line.
fn continued(line: &str, escape: char) -> Option<&str> {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let run = trimmed.chars().rev().take_while(|&c| c == escape).count();
    if run % 2 == 1 {
        Some(&trimmed[..trimmed.len() - escape.len_utf8()])
    } else {
        None
    }
}

struct DirectiveScan {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveScan {
    /// Reads `line` as a possible directive; the first line that is not one ends the scan.
    fn check(&mut self, line: &str, directives: &mut Directives, span: Span) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(Error::new(
                span,
                ErrorKind::Directive(format!("only one {name} parser directive can be used")),
            )
            .with_hint(format!("remove the second `# {name}=` line")));
        }
        self.seen.push(name.clone());
        match name.as_str() {
            "escape" => {
                directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(Error::new(
                            span,
                            ErrorKind::Directive(format!(
                                "invalid escape token '{other}' does not match ` or \\"
                            )),
                        )
                        .with_hint("use `# escape=\\` or `# escape=``"));
                    }
                }
            }
            "syntax" => directives.syntax = Some(value.to_owned()),
            _ => directives.check = Some(value.to_owned()),
        }
        Ok(())
    }
}

/// `#[ \t]*name[ \t]*=[ \t]*value[ \t]*` with a letter-then-alphanumerics name.
pub(crate) fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches([' ', '\t']);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches([' ', '\t']).strip_prefix('=')?;
    let value = rest.trim_matches([' ', '\t']);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

pub(crate) fn scan(text: &str) -> Result<Scanned, Error> {
    let bom = text.starts_with('\u{feff}');
    let lines = physical_lines(text);
    let mut directives = Directives::default();
    let mut dscan = DirectiveScan {
        done: false,
        seen: Vec::new(),
    };
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    let line_span = |p: &Physical<'_>| Span {
        start: p.offset,
        end: p.offset + trim_newline(p.raw).len(),
        line: p.number,
        col: 1,
        end_line: p.number,
    };
    while i < lines.len() {
        let first = &lines[i];
        if first.raw.len() > MAX_LINE + 1 {
            return Err(Error::new(line_span(first), ErrorKind::LineTooLong)
                .with_hint("split the line with the escape character at its end"));
        }
        let mut raw = trim_newline(first.raw);
        let mut skip = 0;
        if i == 0 && bom {
            raw = &raw[3..];
            skip = 3;
        }
        let trimmed = raw.trim_start();
        let lead = raw.len() - trimmed.len();
        dscan.check(trimmed, &mut directives, line_span(first))?;
        i += 1;
        if is_comment(trimmed) || trimmed.is_empty() {
            continue;
        }
        let start_offset = first.offset + skip + lead;
        let col = raw[..lead].chars().count() + 1;
        let mut joined = String::new();
        let mut end_line = first.number;
        let mut end = first.offset + skip + raw.len();
        let mut empty_continuation = false;
        let mut more = match continued(trimmed, directives.escape) {
            Some(head) => {
                joined.push_str(head);
                true
            }
            None => {
                joined.push_str(trimmed);
                false
            }
        };
        while more && i < lines.len() {
            let next = &lines[i];
            if next.raw.len() > MAX_LINE + 1 {
                return Err(Error::new(line_span(next), ErrorKind::LineTooLong));
            }
            let raw = trim_newline(next.raw);
            dscan.check(raw, &mut directives, line_span(next))?;
            i += 1;
            end_line = next.number;
            end = next.offset + raw.len();
            if is_comment(raw) {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            match continued(raw, directives.escape) {
                Some(head) => joined.push_str(head),
                None => {
                    joined.push_str(raw);
                    more = false;
                }
            }
        }
        let mut span = Span {
            start: start_offset,
            end,
            line: first.number,
            col,
            end_line,
        };
        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {joined}"),
                span,
            });
        }
        let mut heredocs = Vec::new();
        if may_have_heredocs(&joined) {
            for marker in heredoc_markers(&joined, directives.escape) {
                let mut body = String::new();
                let mut terminated = false;
                while i < lines.len() {
                    let line = &lines[i];
                    i += 1;
                    span.end_line = line.number;
                    span.end = line.offset + trim_newline(line.raw).len();
                    let candidate = trim_newline(line.raw);
                    let candidate = if marker.chomp {
                        candidate.trim_start_matches('\t')
                    } else {
                        candidate
                    };
                    if candidate == marker.name {
                        terminated = true;
                        break;
                    }
                    if marker.chomp {
                        body.push_str(line.raw.trim_start_matches('\t'));
                    } else {
                        body.push_str(line.raw);
                    }
                }
                if !terminated {
                    return Err(Error::new(span, ErrorKind::UnterminatedHeredoc).with_hint(
                        format!(
                            "end the heredoc with a line that holds only `{}`",
                            marker.name
                        ),
                    ));
                }
                heredocs.push(Heredoc { body, ..marker });
            }
        }
        out.push(Logical {
            text: joined,
            span,
            heredocs,
        });
    }
    Ok(Scanned {
        directives,
        lines: out,
        warnings,
    })
}

/// RUN, COPY and ADD (also behind ONBUILD) may carry heredocs.
fn may_have_heredocs(line: &str) -> bool {
    if !line.contains("<<") {
        return false;
    }
    let mut words = line.split_whitespace();
    let mut first = words.next().unwrap_or("").to_lowercase();
    if first == "onbuild" {
        first = words.next().unwrap_or("").to_lowercase();
    }
    matches!(first.as_str(), "run" | "copy" | "add")
}

/// The heredoc markers of a line, in order: words of the form `[fd]<<[-]NAME`, where
/// NAME may be quoted (then the body is not expanded).
pub(crate) fn heredoc_markers(line: &str, escape: char) -> Vec<Heredoc> {
    let mut out = Vec::new();
    for word in crate::words::split_words(line, escape) {
        let digits = word.chars().take_while(char::is_ascii_digit).count();
        let Some(rest) = word[digits..].strip_prefix("<<") else {
            continue;
        };
        let (chomp, raw_name) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if raw_name.is_empty() || raw_name.contains('<') {
            continue;
        }
        let name = crate::words::unquote(raw_name, escape);
        if name.is_empty() {
            continue;
        }
        out.push(Heredoc {
            expand: name == raw_name,
            name,
            body: String::new(),
            chomp,
            fd: word[..digits].parse().unwrap_or(0),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[(&str, usize, usize)]) {
        let scanned = scan(text).expect("scan");
        let got: Vec<(&str, usize, usize)> = scanned
            .lines
            .iter()
            .map(|l| (l.text.as_str(), l.span.line, l.span.end_line))
            .collect();
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn continuations_comments_and_blank_lines() {
        check(
            "FROM a\nRUN x \\\n  # note\n\n  y\n",
            &[("FROM a", 1, 1), ("RUN x   y", 2, 5)],
        );
        check(
            "RUN a\\\\\nRUN b\n",
            &[("RUN a\\\\", 1, 1), ("RUN b", 2, 2)],
        );
        check("RUN a \\", &[("RUN a ", 1, 1)]);
        check(
            "\u{feff}FROM a\r\nRUN b\r\n",
            &[("FROM a", 1, 1), ("RUN b", 2, 2)],
        );
    }

    #[test]
    fn directives_only_at_the_top() {
        let s =
            scan("# escape=`\n# syntax=docker/dockerfile:1\nFROM a\n# escape=\\\n").expect("scan");
        assert_eq!(s.directives.escape, '`');
        assert_eq!(s.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        let s = scan("# hello\n# escape=`\nFROM a\n").expect("scan");
        assert_eq!(s.directives.escape, '\\');
        assert!(scan("# escape=x\nFROM a\n").is_err());
        assert!(scan("# syntax=a\n# syntax=b\nFROM a\n").is_err());
    }

    #[test]
    fn heredocs() {
        let s =
            scan("RUN <<EOF cat <<-'END'\necho $A\nEOF\n\tquoted\n\tEND\nRUN b\n").expect("scan");
        assert_eq!(s.lines.len(), 2);
        let docs = &s.lines[0].heredocs;
        assert_eq!(docs[0].name, "EOF");
        assert_eq!(docs[0].body, "echo $A\n");
        assert!(docs[0].expand);
        assert_eq!(docs[1].name, "END");
        assert_eq!(docs[1].body, "quoted\n");
        assert!(!docs[1].expand && docs[1].chomp);
        assert_eq!(s.lines[0].span.end_line, 5);
        let err = scan("RUN <<EOF\nno end\n").err().expect("unterminated");
        assert_eq!(err.kind, ErrorKind::UnterminatedHeredoc);
    }

    #[test]
    fn empty_continuation_warns() {
        let s = scan("RUN a \\\n\nb\n").expect("scan");
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].message.starts_with("Empty continuation line"));
    }
}
