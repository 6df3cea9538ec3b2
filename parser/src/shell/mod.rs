//! Shell-word expansion for build-time substitution, as BuildKit's `shell.Lex` does it.
//!
//! Dockerfile instructions such as `COPY`, `ENV` or `WORKDIR` expand `$VAR` and
//! `${VAR...}` against the build's variables before they run; `RUN`, `CMD` and
//! `ENTRYPOINT` are left to the shell in the container. [`Lexer::expand_word`] gives one
//! word (quotes removed, escapes processed), [`Lexer::expand_words`] splits the result on
//! unquoted whitespace as `ARG`/`ENV` lists need. Both report which variables were found
//! and which were not, for the `UndefinedVar` check.
//!
//! Supported: `$V ${V} ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?msg} ${V?msg} ${V#p} ${V##p}
//! ${V%p} ${V%%p} ${V/p/r} ${V//p/r}`, single and double quotes, the escape character
//! (`\` or the backtick of `# escape=`). Positional and special parameters (`$1`, `$@`,
//! `$$` ...) are never set. Refused, with an error: unterminated quotes or `${`, `${}`,
//! modifiers BuildKit does not know (`${V:=w}`).
//!
//! Bounded on hostile input: `${...}` nests at most [`MAX_NESTING`] deep (the expander
//! recurses once per level, so this bounds its stack), a word expands to at most
//! [`MAX_WORD_SIZE`] bytes (`ARG a=$a$a` repeated doubles a value per line), and a
//! pattern in `${V#p}` / `${V/p/r}` is matched only while its work table stays under
//! [`MAX_PATTERN_CELLS`]. Each limit is an [`Error`] with [`Error::limit`] set.
//!
//! ```
//! use kiln_parser::shell::Lexer;
//! let env = vec![("NAME".to_owned(), "kiln".to_owned())];
//! let out = Lexer::new('\\').expand_word("hello-${NAME:-x}", &env).unwrap();
//! assert_eq!(out.value, "hello-kiln");
//! ```

pub(crate) mod pattern;

use std::collections::{BTreeSet, HashMap};

/// Where variables are looked up.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        // Later entries win, as later ENV/ARG lines do.
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for std::collections::BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, name).map(String::as_str)
    }
}

/// An expansion's result and the variables it looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion<T> {
    /// The expanded word (or words).
    pub value: T,
    /// Variables that were set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but not set.
    pub unmatched: BTreeSet<String>,
}

/// How deep `${...}` may nest inside one word. The expander recurses once per level;
/// 128 (serde_json's default recursion limit) is far beyond what a Dockerfile writes
/// (two or three levels) and keeps the stack under 100 KiB on any thread.
pub const MAX_NESTING: usize = 128;

/// The most bytes one word may expand to: 1 MiB. Linux refuses a single argument or
/// environment string over 128 KiB (`MAX_ARG_STRLEN`), so no value a process could take
/// is refused; a variable that refers to itself twice per line (`ARG a=$a$a`) reaches it
/// after twenty lines instead of allocating until the process dies.
pub const MAX_WORD_SIZE: usize = 1 << 20;

/// The largest work table a `${V#pattern}`, `${V%pattern}` or `${V/pattern/r}` may need
/// (pattern length times value length, one byte a cell): 16 Mi cells.
pub const MAX_PATTERN_CELLS: usize = 16 << 20;

/// Which bound an expansion hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// `${...}` nested deeper than [`MAX_NESTING`].
    Nesting,
    /// The word grew past [`MAX_WORD_SIZE`].
    Size,
    /// A pattern times its value is past [`MAX_PATTERN_CELLS`].
    Pattern,
}

impl Limit {
    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Limit::Nesting => {
                "nest ${...} less deeply: give the inner default its own ARG or ENV first"
            }
            Limit::Size => {
                "look for a variable that refers to itself more than once (ARG a=$a$a): each such line doubles it"
            }
            Limit::Pattern => "match the pattern against a shorter value, or use a shorter pattern",
        }
    }
}

/// An expansion that failed; `message` says why, in BuildKit's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The word being expanded.
    pub word: String,
    /// What is wrong, e.g. `syntax error: bad substitution`.
    pub message: String,
    /// The bound that was hit, when it was one (not a syntax error).
    pub limit: Option<Limit>,
}

/// How much of the word an error message quotes.
const QUOTED_WORD: usize = 80;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hostile word can be megabytes: quote its start only.
        match self.word.char_indices().nth(QUOTED_WORD) {
            Some((cut, _)) => write!(
                f,
                "failed to process \"{}...\" ({} bytes): {}",
                &self.word[..cut],
                self.word.len(),
                self.message
            ),
            None => write!(f, "failed to process \"{}\": {}", self.word, self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The expander, for one escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
}

impl Lexer {
    /// A lexer for `escape` (`\`, or `` ` `` after `# escape=`).
    pub fn new(escape: char) -> Lexer {
        Lexer { escape }
    }

    /// Expands one word: quotes removed, escapes processed, no splitting.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<Expansion<String>, Error> {
        let (value, _, state) = self.run(word, env)?;
        Ok(Expansion {
            value,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }

    /// Expands and splits on unquoted whitespace (text from variables splits too).
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Expansion<Vec<String>>, Error> {
        let (_, words, state) = self.run(word, env)?;
        Ok(Expansion {
            value: words,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }

    fn run<'e>(
        &self,
        word: &str,
        env: &'e dyn Env,
    ) -> Result<(String, Vec<String>, Scan<'e>), Error> {
        let mut scan = Scan {
            chars: word.chars().collect(),
            pos: 0,
            escape: self.escape,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
            limit: None,
        };
        let (value, words) = scan.stop_on(None, false).map_err(|message| Error {
            word: word.to_owned(),
            message,
            limit: scan.limit,
        })?;
        Ok((value, words, scan))
    }
}

/// Words being collected while expanding, split on unquoted whitespace.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        text.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Scan<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Env,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// How many `${` are open.
    depth: usize,
    /// The bound an error came from, if any.
    limit: Option<Limit>,
}

impl Scan<'_> {
    /// Records that `limit` was hit and returns the message for it.
    fn exceeded(&mut self, limit: Limit, message: String) -> String {
        self.limit = Some(limit);
        message
    }

    /// Fails once `text` is longer than [`MAX_WORD_SIZE`].
    fn check_size(&mut self, text: &str) -> Result<(), String> {
        if text.len() > MAX_WORD_SIZE {
            return Err(self.exceeded(
                Limit::Size,
                format!(
                    "the word expands to more than {} bytes ({} KiB), the most kiln allows",
                    MAX_WORD_SIZE,
                    MAX_WORD_SIZE / 1024
                ),
            ));
        }
        Ok(())
    }

    /// Fails when matching `tokens` against `value` would need too large a table.
    fn check_pattern(&mut self, tokens: &[pattern::Token], value: &str) -> Result<(), String> {
        let cells = (tokens.len() + 1).saturating_mul(value.chars().count() + 1);
        if cells > MAX_PATTERN_CELLS {
            return Err(self.exceeded(
                Limit::Pattern,
                format!(
                    "a pattern of {} characters against a value of {} bytes is more than kiln matches",
                    tokens.len(),
                    value.len()
                ),
            ));
        }
        Ok(())
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        // Positional and special parameters are never set in a Dockerfile.
        let value = if name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
        {
            self.env.get(name).map(str::to_owned)
        } else {
            None
        };
        if value.is_some() {
            self.matched.insert(name.to_owned());
        } else {
            self.unmatched.insert(name.to_owned());
        }
        value
    }

    /// Reads up to `stop` (consumed) or the end; returns the text and its words.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match c {
                '\'' => {
                    let text = self.single_quote()?;
                    result.push_str(&text);
                    self.check_size(&result)?;
                    words.add_raw_string(&text);
                }
                '"' => {
                    let text = self.double_quote()?;
                    result.push_str(&text);
                    self.check_size(&result)?;
                    words.add_raw_string(&text);
                }
                '$' => {
                    let text = self.dollar()?;
                    result.push_str(&text);
                    self.check_size(&result)?;
                    words.add_string(&text);
                }
                _ => {
                    self.next();
                    if c == self.escape {
                        if raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        // The escape character escapes the next one; at the end it is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                    if result.len() > MAX_WORD_SIZE {
                        self.check_size(&result)?;
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, String> {
        // Everything up to the next single quote, as is: it cannot be escaped.
        self.next();
        let mut text = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_owned(),
                    );
                }
                Some('\'') => return Ok(text),
                Some(c) => text.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        // Everything up to the next double quote, expanding `$`; the escape character
        // only escapes `"`, `$` and itself, and is kept before anything else.
        self.next();
        let mut text = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_owned(),
                    );
                }
                Some('"') => {
                    self.next();
                    return Ok(text);
                }
                Some('$') => {
                    text.push_str(&self.dollar()?);
                    self.check_size(&text)?;
                }
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                text.push(n);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    text.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            self.next();
            name.push(c);
        }
        name
    }

    fn missing_brace(&self, err: String) -> String {
        if self.peek().is_none() {
            "syntax error: missing '}'".to_owned()
        } else {
            err
        }
    }

    fn dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.next();
        if self.depth >= MAX_NESTING {
            return Err(self.exceeded(
                Limit::Nesting,
                format!("${{...}} is nested more than {MAX_NESTING} deep, the most kiln allows"),
            ));
        }
        self.depth += 1;
        let out = self.braced();
        self.depth -= 1;
        out
    }

    /// `${...}` after its `${`.
    fn braced(&mut self) -> Result<String, String> {
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_owned()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_owned()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(mut op) = self.next() else {
            return Err("syntax error: missing '}'".to_owned());
        };
        let mut modifier = op.to_string();
        let mut null_is_unset = false;
        match op {
            '}' => return Ok(self.lookup(&name).unwrap_or_default()),
            '/' => return self.replace(&name),
            ':' => {
                null_is_unset = true;
                op = self
                    .next()
                    .ok_or_else(|| "syntax error: missing '}'".to_owned())?;
                modifier.push(op);
            }
            _ => {}
        }
        if !matches!(op, '+' | '-' | '?' | '#' | '%') {
            return Err(format!("unsupported modifier ({modifier}) in substitution"));
        }
        let raw_escapes = op == '#' || op == '%';
        if null_is_unset && raw_escapes {
            return Err(format!("unsupported modifier ({modifier}) in substitution"));
        }
        let (word, _) = self
            .stop_on(Some('}'), raw_escapes)
            .map_err(|e| self.missing_brace(e))?;
        let value = self.lookup(&name);
        let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match op {
            '-' => Ok(if unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            _ => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest.to_owned()),
                    None => (false, word),
                };
                let tokens = pattern::compile_shell(&pattern, self.escape);
                self.check_pattern(&tokens, &value)?;
                Ok(if op == '#' {
                    trim_prefix(&tokens, &value, greedy)
                } else {
                    trim_suffix(&tokens, &value, greedy)
                })
            }
        }
    }

    fn replace(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let (pattern, _) = self.stop_on(Some('/'), true).map_err(|e| {
            if self.peek().is_none() {
                "syntax error: missing '/' in ${}".to_owned()
            } else {
                e
            }
        })?;
        let (replacement, _) = self
            .stop_on(Some('}'), true)
            .map_err(|e| self.missing_brace(e))?;
        let value = self.lookup(name).unwrap_or_default();
        let tokens = pattern::compile_shell(&pattern, self.escape);
        self.check_pattern(&tokens, &value)?;
        let value: Vec<char> = value.chars().collect();
        // A pattern starting with `*` that does not match at `start` matches at no later
        // position either (the `*` could have taken the characters in between).
        let leading_star = matches!(
            tokens.first(),
            Some(pattern::Token::Star { cross_slash: true })
        );
        let mut work = 0usize;
        let mut out = String::new();
        let mut start = 0;
        let mut replaced = false;
        while start <= value.len() {
            if replaced && !all {
                break;
            }
            // The leftmost match, and the longest one there (greedy `*`).
            let mut found = None;
            for from in start..=value.len() {
                let (longest, consumed) = pattern::longest_match(&tokens, &value[from..]);
                work = work.saturating_add((tokens.len() + 1).saturating_mul(consumed + 1));
                if work > MAX_PATTERN_CELLS.saturating_mul(16) {
                    return Err(self.exceeded(
                        Limit::Pattern,
                        format!(
                            "replacing a pattern of {} characters in a value of {} characters takes more work than kiln allows",
                            tokens.len(),
                            value.len()
                        ),
                    ));
                }
                if let Some(len) = longest {
                    found = Some((from, from + len));
                    break;
                }
                if leading_star {
                    break;
                }
            }
            let Some((from, to)) = found else { break };
            out.extend(&value[start..from]);
            out.push_str(&replacement);
            self.check_size(&out)?;
            replaced = true;
            if to == from {
                // An empty match: keep one character and move on, as regexp replace does.
                if let Some(&c) = value.get(from) {
                    out.push(c);
                }
                start = from + 1;
            } else {
                start = to;
            }
        }
        if start <= value.len() {
            out.extend(&value[start..]);
        }
        Ok(out)
    }
}

fn trim_prefix(tokens: &[pattern::Token], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let ends = pattern::match_ends(tokens, &chars);
    let end = if greedy {
        ends.iter().rposition(|&m| m)
    } else {
        ends.iter().position(|&m| m)
    };
    match end {
        Some(end) => chars[end..].iter().collect(),
        None => value.to_owned(),
    }
}

fn trim_suffix(tokens: &[pattern::Token], value: &str, greedy: bool) -> String {
    // A suffix matches `tokens` when its reverse matches them reversed (shell patterns
    // hold no `**/`, the one token whose reverse differs).
    let reversed: Vec<pattern::Token> = tokens.iter().rev().cloned().collect();
    let chars: Vec<char> = value.chars().rev().collect();
    let ends = pattern::match_ends(&reversed, &chars);
    // `ends[k]`: the last k characters match; `%%` removes the longest such suffix.
    let k = if greedy {
        ends.iter().rposition(|&m| m)
    } else {
        ends.iter().position(|&m| m)
    };
    match k {
        Some(k) => chars[k..].iter().rev().collect(),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("PWD", "/home"),
            ("FILE", "archive.tar.gz"),
            ("PATHV", "/usr/local/bin:/usr/bin"),
            ("EMPTY", ""),
            ("SPACE", "a  b"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn check(word: &str, expected: Result<&str, &str>) {
        let got = Lexer::new('\\').expand_word(word, &env());
        match expected {
            Ok(value) => assert_eq!(got.map(|e| e.value), Ok(value.to_owned()), "{word}"),
            Err(fragment) => {
                let err = got.expect_err(word).to_string();
                assert!(err.contains(fragment), "{word}: {err}");
            }
        }
    }

    #[test]
    fn defaults_and_alternatives() {
        check("${EMPTY:-x}", Ok("x"));
        check("${EMPTY-x}", Ok(""));
        check("${UNSET-x}", Ok("x"));
        check("${EMPTY:+x}", Ok(""));
        check("${EMPTY+x}", Ok("x"));
        check("${UNSET+x}", Ok(""));
        check("${PWD:+${FILE}}", Ok("archive.tar.gz"));
    }

    #[test]
    fn required_variables() {
        check("${UNSET?}", Err("UNSET: is not allowed to be unset"));
        check("${UNSET:?need it}", Err("UNSET: need it"));
        check("${EMPTY:?}", Err("EMPTY: is not allowed to be empty"));
        check("${EMPTY?}", Ok(""));
        check("${PWD:?}", Ok("/home"));
    }

    #[test]
    fn prefix_and_suffix_removal() {
        check("${FILE#*.}", Ok("tar.gz"));
        check("${FILE##*.}", Ok("gz"));
        check("${FILE%.*}", Ok("archive.tar"));
        check("${FILE%%.*}", Ok("archive"));
        check("${FILE#nomatch}", Ok("archive.tar.gz"));
        check("${PATHV%%:*}", Ok("/usr/local/bin"));
        check("${FILE#\\*}", Ok("archive.tar.gz"));
        check("${FILE:#x}", Err("unsupported modifier (:#)"));
    }

    #[test]
    fn replacement() {
        check("${FILE/a/A}", Ok("Archive.tar.gz"));
        check("${FILE//a/A}", Ok("Archive.tAr.gz"));
        check("${PATHV//:/ }", Ok("/usr/local/bin /usr/bin"));
        check("${FILE/.*/}", Ok("archive"));
        check("${UNSET/a/b}", Ok(""));
        check("${FILE/a", Err("missing '/' in ${}"));
        check("${FILE/a/b", Err("missing '}'"));
    }

    #[test]
    fn errors_name_the_word() {
        let err = Lexer::new('\\')
            .expand_word("he${}", &env())
            .expect_err("bad substitution");
        assert_eq!(
            err.to_string(),
            "failed to process \"he${}\": syntax error: bad substitution"
        );
        check("${PWD:=x}", Err("unsupported modifier (:=)"));
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        assert_eq!(
            lexer.expand_word("a`$PWD", &env()).map(|e| e.value),
            Ok("a$PWD".into())
        );
        assert_eq!(
            lexer.expand_word("c:\\dir", &env()).map(|e| e.value),
            Ok("c:\\dir".into())
        );
    }

    #[test]
    fn words_split_unquoted_values() {
        let got = Lexer::new('\\')
            .expand_words("x${SPACE} \"${SPACE}\"", &env())
            .expect("words");
        assert_eq!(got.value, vec!["xa", "b", "a  b"]);
    }

    #[test]
    fn reports_matched_and_unmatched_variables() {
        let got = Lexer::new('\\')
            .expand_word("$PWD ${NOPE:-x} $1", &env())
            .expect("expand");
        assert_eq!(got.matched, BTreeSet::from(["PWD".to_owned()]));
        assert_eq!(
            got.unmatched,
            BTreeSet::from(["NOPE".to_owned(), "1".to_owned()])
        );
    }

    #[test]
    fn never_panics_on_cut_input() {
        for word in [
            "$", "${", "${A", "${A:", "${A:-", "${A/", "${A//", "'", "\"", "\\", "${A#", "é${A%é",
        ] {
            let _ = Lexer::new('\\').expand_word(word, &env());
            let _ = Lexer::new('\\').expand_words(word, &env());
        }
    }
}
