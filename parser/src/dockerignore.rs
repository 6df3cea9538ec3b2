//! `.dockerignore` files and the matcher that decides which context paths are left out,
//! with the semantics of moby's `patternmatcher` and `ignorefile` (what BuildKit uses).
//!
//! Reading ([`read_ignore_file`]): a BOM is dropped; a line whose first character is `#`
//! is a comment; lines are trimmed, empty ones skipped; `!` marks an exception; patterns
//! are cleaned like Go's `filepath.Clean` and one leading `/` is removed.
//!
//! Matching ([`Matcher`]): patterns are tried in order and the last one that matches the
//! path, or any of its parent directories, decides; an exception listed before the
//! pattern it should override has no effect. Pattern syntax is Go's `filepath.Match`
//! (`*` and `?` stop at `/`, `[...]` classes, `\` escapes) plus `**` for any number of
//! directories. Syntax that Go's `filepath.Match` rejects is an error when the matcher is
//! built; a class Go accepts but its regexp engine rejects (a reversed range such as
//! `[Local-Only]`) errors when first used to match, as in BuildKit.
//!
//! Which ignore file applies is [`ignore_file_for`]'s answer: BuildKit reads
//! `<Dockerfile>.dockerignore` beside the Dockerfile first, then `.dockerignore` at the
//! context root. This module does no I/O; the caller reads the file.

use crate::shell::pattern::{self, ClassError, Token};

/// A bad pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pattern's syntax is invalid (Go's `ErrBadPattern`).
    #[error("{}invalid .dockerignore pattern {pattern:?}: {reason}", line_prefix(*line))]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// The 1-based line of the ignore file, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A lone `!`.
    #[error("{}illegal exclusion pattern: \"!\"", line_prefix(*line))]
    LoneExclamation {
        /// The 1-based line of the ignore file, when known.
        line: Option<usize>,
    },
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|l| format!(".dockerignore:{l}: "))
        .unwrap_or_default()
}

/// The ignore files to look for, in order, for a Dockerfile named `dockerfile_name`
/// (its file name, e.g. `app.Dockerfile`): the one beside it, then the context's.
/// The first is relative to the Dockerfile's directory, the second to the context root.
pub fn ignore_file_for(dockerfile_name: &str) -> [String; 2] {
    [
        format!("{dockerfile_name}.dockerignore"),
        ".dockerignore".to_owned(),
    ]
}

/// One pattern of an ignore file, with the line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreLine {
    /// The cleaned pattern, `!` kept in front of an exception.
    pub pattern: String,
    /// Where it was in the file.
    pub line: usize,
}

/// Reads an ignore file's patterns, as `ignorefile.ReadAll` does.
pub fn read_ignore_file(text: &str) -> Vec<String> {
    read_ignore_lines(text)
        .into_iter()
        .map(|l| l.pattern)
        .collect()
}

/// Like [`read_ignore_file`], keeping each pattern's line number.
pub fn read_ignore_lines(text: &str) -> Vec<IgnoreLine> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.starts_with('#') {
            continue;
        }
        let mut pattern = raw.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push(IgnoreLine {
            pattern: cleaned,
            line: index + 1,
        });
    }
    out
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Whether `text` holds a wildcard (`*`, `?`, `[`) as a COPY source path would.
pub fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Go's `filepath.Match(pattern, path)` for `/`-separated paths, as BuildKit matches COPY
/// sources: `*` and `?` stop at `/`. An invalid pattern is an error naming the problem.
pub fn glob_match(pattern: &str, path: &str) -> Result<bool, String> {
    go_match_syntax(pattern)?;
    Ok(match compile(pattern) {
        Kind::Exact => pattern == path,
        Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
        Kind::Suffix(suffix) => path.ends_with(suffix.as_str()),
        Kind::Tokens(Ok(tokens)) => {
            let chars: Vec<char> = path.chars().collect();
            pattern::matches(&tokens, &chars)
        }
        Kind::Tokens(Err(reason)) => return Err(reason),
    })
}

/// How a compiled pattern matches, as patternmatcher's fast paths.
#[derive(Debug, Clone)]
enum Kind {
    /// The path equals the pattern.
    Exact,
    /// The path starts with the pattern minus its trailing `**`.
    Prefix(String),
    /// The path ends with the pattern minus its leading `**`.
    Suffix(String),
    /// The tokens match the whole path; or the pattern errs on use.
    Tokens(Result<Vec<Token>, String>),
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
    line: Option<usize>,
}

impl Pattern {
    fn matches(&self, path: &str) -> Result<bool, Error> {
        Ok(match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Tokens(Ok(tokens)) => {
                let chars: Vec<char> = path.chars().collect();
                pattern::matches(tokens, &chars)
            }
            Kind::Tokens(Err(reason)) => {
                return Err(Error::BadPattern {
                    pattern: self.text.clone(),
                    line: self.line,
                    reason: reason.clone(),
                });
            }
        })
    }
}

/// What decided a path's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the path is excluded.
    pub excluded: bool,
    /// The index (0-based, in the pattern list) of the last pattern that matched.
    pub pattern: Option<usize>,
    /// That pattern's line in the ignore file, when built from one.
    pub line: Option<usize>,
}

/// Per-pattern results for a directory, passed down to its children so that a walk
/// does not re-match every parent of every file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParentMatches(Vec<bool>);

/// The compiled pattern list.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Compiles `patterns` (as [`read_ignore_file`] returns them, or as written).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, Error> {
        let lines: Vec<IgnoreLine> = patterns
            .iter()
            .map(|p| IgnoreLine {
                pattern: p.as_ref().to_owned(),
                line: 0,
            })
            .collect();
        Matcher::build(&lines, false)
    }

    /// Compiles the patterns of an ignore file, keeping their line numbers for messages.
    pub fn from_lines(lines: &[IgnoreLine]) -> Result<Matcher, Error> {
        Matcher::build(lines, true)
    }

    fn build(lines: &[IgnoreLine], with_lines: bool) -> Result<Matcher, Error> {
        let mut patterns = Vec::new();
        for line in lines {
            let number = with_lines.then_some(line.line);
            let text = line.pattern.trim();
            if text.is_empty() {
                continue;
            }
            let mut text = clean(text);
            let exclusion = text.starts_with('!');
            if exclusion {
                if text.len() == 1 {
                    return Err(Error::LoneExclamation { line: number });
                }
                text.remove(0);
            }
            if let Err(reason) = go_match_syntax(&text) {
                return Err(Error::BadPattern {
                    pattern: text,
                    line: number,
                    reason,
                });
            }
            let kind = compile(&text);
            patterns.push(Pattern {
                text,
                exclusion,
                kind,
                line: number,
            });
        }
        Ok(Matcher { patterns })
    }

    /// Whether there are no patterns (nothing is ever excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as compiled (cleaned, `!` removed), each with whether it is an
    /// exception.
    pub fn patterns(&self) -> impl Iterator<Item = (&str, bool)> {
        self.patterns.iter().map(|p| (p.text.as_str(), p.exclusion))
    }

    /// Whether `path` (relative, `/`-separated, cleaned) is excluded; `.` never is.
    pub fn matches(&self, path: &str) -> Result<bool, Error> {
        let path = clean(path);
        if path == "." {
            return Ok(false);
        }
        Ok(self.decide(&path)?.excluded)
    }

    /// Like [`Matcher::matches`], saying which pattern decided; the path is used as given
    /// (`MatchesOrParentMatches`).
    pub fn decide(&self, path: &str) -> Result<Decision, Error> {
        let parents = parent_dirs(path);
        let mut decision = Decision {
            excluded: false,
            pattern: None,
            line: None,
        };
        for (index, pattern) in self.patterns.iter().enumerate() {
            // An inclusion cannot change an excluded path, nor an exclusion an included one.
            if pattern.exclusion != decision.excluded {
                continue;
            }
            let mut matched = pattern.matches(path)?;
            if !matched {
                matched = parents
                    .iter()
                    .any(|parent| pattern.matches(parent).unwrap_or(false));
            }
            if matched {
                decision = Decision {
                    excluded: !pattern.exclusion,
                    pattern: Some(index),
                    line: pattern.line,
                };
            }
        }
        Ok(decision)
    }

    /// The decision for `path` given its parent directory's [`ParentMatches`] (empty for
    /// a path at the root, or when unknown), and the matches to pass to its children
    /// (`MatchesUsingParentResults`).
    pub fn decide_with_parent(
        &self,
        path: &str,
        parent: &ParentMatches,
    ) -> Result<(Decision, ParentMatches), Error> {
        let known = parent.0.len() == self.patterns.len();
        let mut here = vec![false; self.patterns.len()];
        let mut decision = Decision {
            excluded: false,
            pattern: None,
            line: None,
        };
        for (index, pattern) in self.patterns.iter().enumerate() {
            let mut matched = known && parent.0[index];
            if !matched {
                if pattern.exclusion != decision.excluded {
                    continue;
                }
                matched = pattern.matches(path)?;
                if !matched && !known {
                    matched = parent_dirs(path)
                        .iter()
                        .any(|p| pattern.matches(p).unwrap_or(false));
                }
            }
            here[index] = matched;
            if matched {
                decision = Decision {
                    excluded: !pattern.exclusion,
                    pattern: Some(index),
                    line: pattern.line,
                };
            }
        }
        Ok((decision, ParentMatches(here)))
    }
}

/// `a`, `a/b` for `a/b/c` (Go: `filepath.Dir` split and re-joined); none at the root.
fn parent_dirs(path: &str) -> Vec<String> {
    let dir = match path.rfind('/') {
        Some(pos) => clean(&path[..pos.max(1)]),
        None => ".".to_owned(),
    };
    let dir = if path.starts_with('/') && path.rfind('/') == Some(0) {
        "/".to_owned()
    } else {
        dir
    };
    if dir == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = dir.split('/').collect();
    (1..=parts.len()).map(|n| parts[..n].join("/")).collect()
}

/// Compiles a cleaned pattern as patternmatcher does: plain text matches exactly, a
/// trailing `**` by prefix, a leading `**` by suffix, anything else by tokens.
fn compile(text: &str) -> Kind {
    #[derive(PartialEq)]
    enum Form {
        Exact,
        Prefix,
        Suffix,
        Tokens,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut form = Form::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    // A trailing `**` matches everything below, like .gitignore.
                    if form == Form::Exact {
                        form = Form::Prefix;
                    } else {
                        tokens.push(Token::Star { cross_slash: true });
                        form = Form::Tokens;
                    }
                } else {
                    tokens.push(Token::Dirs);
                    form = Form::Tokens;
                }
                if first {
                    form = Form::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star { cross_slash: false });
                form = Form::Tokens;
            }
            '?' => {
                tokens.push(Token::One { cross_slash: false });
                form = Form::Tokens;
            }
            '\\' => match chars.get(i) {
                Some(&n) => {
                    tokens.push(Token::Literal(n));
                    i += 1;
                    form = Form::Tokens;
                }
                None => tokens.push(Token::Literal('\\')),
            },
            '[' => {
                form = Form::Tokens;
                match pattern::parse_class(&chars[i..], '\\', &['^']) {
                    Ok((class, used)) => {
                        tokens.push(Token::Class(class));
                        i += used;
                    }
                    Err(ClassError::BadRange(lo, hi)) => {
                        return Kind::Tokens(Err(format!(
                            "invalid character class range: {lo}-{hi}"
                        )));
                    }
                    Err(ClassError::Unterminated) => {
                        return Kind::Tokens(Err("missing closing ]".to_owned()));
                    }
                }
            }
            ']' => {
                tokens.push(Token::Literal(']'));
                form = Form::Tokens;
            }
            c => tokens.push(Token::Literal(c)),
        }
        first = false;
    }
    match form {
        Form::Exact => Kind::Exact,
        Form::Prefix => Kind::Prefix(text[..text.len() - 2].to_owned()),
        Form::Suffix => Kind::Suffix(text[2..].to_owned()),
        Form::Tokens => Kind::Tokens(Ok(tokens)),
    }
}

/// The syntax check Go's `filepath.Match(pattern, ".")` performs, which patternmatcher
/// runs when it builds the list.
fn go_match_syntax(pattern: &str) -> Result<(), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("a trailing \\ escapes nothing".to_owned());
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if chars.get(i) == Some(&']') && ranges > 0 {
                        i += 1;
                        break;
                    }
                    i = go_class_char(&chars, i)?;
                    if chars.get(i) == Some(&'-') {
                        i = go_class_char(&chars, i + 1)?;
                    }
                    ranges += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go's `getEsc`: one class character; it may not be `-` or `]`, and more must follow.
fn go_class_char(chars: &[char], mut i: usize) -> Result<usize, String> {
    match chars.get(i) {
        None => return Err("missing closing ]".to_owned()),
        Some('-' | ']') => return Err(format!("unexpected {:?} in a character class", chars[i])),
        Some('\\') => {
            i += 1;
            if i >= chars.len() {
                return Err("missing closing ]".to_owned());
            }
        }
        Some(_) => {}
    }
    i += 1;
    if i >= chars.len() {
        return Err("missing closing ]".to_owned());
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(patterns: &[&str], path: &str, expected: bool) {
        let m = Matcher::new(patterns).expect("patterns");
        assert_eq!(
            m.matches(path).expect("match"),
            expected,
            "{patterns:?} ~ {path}"
        );
    }

    #[test]
    fn last_match_wins() {
        check(&["*.go", "!keep.go"], "keep.go", false);
        check(&["!keep.go", "*.go"], "keep.go", true);
        check(&["docs", "!docs/README.md"], "docs/README.md", false);
        check(&["docs", "!docs/README.md"], "docs/other.md", true);
    }

    #[test]
    fn double_star() {
        check(&["**/*.log"], "a/b/c.log", true);
        check(&["**/*.log"], "c.log", true);
        check(&["dir/**"], "dir", false);
        check(&["dir/**"], "dir/x/y", true);
        check(&["node_modules"], "node_modules/a/b", true);
    }

    #[test]
    fn decision_names_the_line() {
        let lines = read_ignore_lines("# comment\n*.tmp\n\nsecret.txt\n");
        let m = Matcher::from_lines(&lines).expect("build");
        let d = m.decide("secret.txt").expect("decide");
        assert_eq!((d.excluded, d.line), (true, Some(4)));
        let d = m.decide("main.rs").expect("decide");
        assert_eq!((d.excluded, d.line), (false, None));
    }

    #[test]
    fn bad_patterns_name_the_line() {
        let lines = read_ignore_lines("ok\n[\n");
        let err = Matcher::from_lines(&lines).expect_err("bad");
        assert!(err.to_string().starts_with(".dockerignore:2: "), "{err}");
    }

    #[test]
    fn ignore_file_names() {
        assert_eq!(
            ignore_file_for("app.Dockerfile"),
            [
                "app.Dockerfile.dockerignore".to_owned(),
                ".dockerignore".to_owned()
            ]
        );
    }

    #[test]
    fn copy_globs_stop_at_slashes() {
        assert_eq!(glob_match("*.txt", "a.txt"), Ok(true));
        assert_eq!(glob_match("*.txt", "d/a.txt"), Ok(false));
        assert_eq!(glob_match("d/?.txt", "d/a.txt"), Ok(true));
        assert_eq!(glob_match("[ab]*", "b1"), Ok(true));
        assert!(glob_match("[a", "a").is_err());
        assert!(has_wildcard("a*") && !has_wildcard("a/b"));
    }

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            ("a//b/", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("./x/.", "x"),
            ("/", "/"),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }
}
