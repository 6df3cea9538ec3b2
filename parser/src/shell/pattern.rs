//! Glob patterns as plain tokens and one backtracking matcher for them.
//!
//! Two dialects share it: shell patterns in `${VAR#pattern}` and friends, where `*` and
//! `?` match any character, and `.dockerignore` patterns (Go's `filepath.Match` plus
//! `**`), where they stop at `/`. Matching works on `char`s, so multi-byte text never
//! splits inside a character.

/// One piece of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// This exact character.
    Literal(char),
    /// Any run of characters (`*`), across `/` or not.
    Star {
        /// Whether the run may contain `/`.
        cross_slash: bool,
    },
    /// Exactly one character (`?`), `/` included or not.
    One {
        /// Whether it may be `/`.
        cross_slash: bool,
    },
    /// A character class `[...]`.
    Class(Class),
    /// `(.*/)?`: any number of whole directories, including none (`**/` in the middle).
    Dirs,
}

/// A character class: ranges of characters, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Class {
    pub(crate) negated: bool,
    pub(crate) ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

/// Why a class could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClassError {
    /// No closing `]`.
    Unterminated,
    /// A range whose start is after its end, e.g. `[z-a]`.
    BadRange(char, char),
}

/// Parses a class starting right after `[`; returns it and the characters consumed
/// (including the closing `]`). `escape` escapes the next character inside the class;
/// `negators` are the characters that negate it when first (`^`, and `!` for shells).
/// A `]` right after the opening (or after the negation) is a literal, as in regexps.
pub(crate) fn parse_class(
    chars: &[char],
    escape: char,
    negators: &[char],
) -> Result<(Class, usize), ClassError> {
    let mut i = 0;
    let mut negated = false;
    if chars.first().is_some_and(|c| negators.contains(c)) {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(ClassError::Unterminated);
        };
        if c == ']' && !first {
            return Ok((Class { negated, ranges }, i + 1));
        }
        first = false;
        let (lo, used) = class_char(chars, i, escape)?;
        i += used;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let (h, used) = class_char(chars, i + 1, escape)?;
            hi = h;
            i += 1 + used;
            if lo > hi {
                return Err(ClassError::BadRange(lo, hi));
            }
        }
        ranges.push((lo, hi));
    }
}

fn class_char(chars: &[char], i: usize, escape: char) -> Result<(char, usize), ClassError> {
    match chars.get(i) {
        Some(&c) if c == escape => match chars.get(i + 1) {
            Some(&n) => Ok((n, 2)),
            None => Err(ClassError::Unterminated),
        },
        Some(&c) => Ok((c, 1)),
        None => Err(ClassError::Unterminated),
    }
}

/// Whether `tokens` match all of `text`.
pub(crate) fn matches(tokens: &[Token], text: &[char]) -> bool {
    // Memoised backtracking over (token index, text index): linear in both for the
    // patterns people write, and never exponential.
    let mut seen = vec![false; (tokens.len() + 1) * (text.len() + 1)];
    match_at(tokens, text, 0, 0, &mut seen)
}

fn match_at(tokens: &[Token], text: &[char], t: usize, s: usize, seen: &mut [bool]) -> bool {
    let slot = t * (text.len() + 1) + s;
    if seen[slot] {
        return false;
    }
    seen[slot] = true;
    let Some(token) = tokens.get(t) else {
        return s == text.len();
    };
    match token {
        Token::Literal(c) => text.get(s) == Some(c) && match_at(tokens, text, t + 1, s + 1, seen),
        Token::One { cross_slash } => {
            text.get(s).is_some_and(|&c| *cross_slash || c != '/')
                && match_at(tokens, text, t + 1, s + 1, seen)
        }
        Token::Class(class) => {
            text.get(s).is_some_and(|&c| class.matches(c))
                && match_at(tokens, text, t + 1, s + 1, seen)
        }
        Token::Star { cross_slash } => {
            let mut end = s;
            loop {
                if match_at(tokens, text, t + 1, end, seen) {
                    return true;
                }
                match text.get(end) {
                    Some(&c) if *cross_slash || c != '/' => end += 1,
                    _ => return false,
                }
            }
        }
        Token::Dirs => {
            // Zero directories, or any text ending in `/`.
            if match_at(tokens, text, t + 1, s, seen) {
                return true;
            }
            (s..text.len())
                .filter(|&i| text[i] == '/')
                .any(|i| match_at(tokens, text, t + 1, i + 1, seen))
        }
    }
}

/// Compiles a shell pattern (`${VAR#pattern}`): `*`, `?`, `[...]` / `[!...]` / `[^...]`
/// and `escape` for literals; `*` and `?` match any character. A class that does not
/// close is taken literally, as shells do.
pub(crate) fn compile_shell(pattern: &str, escape: char) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => tokens.push(Token::Star { cross_slash: true }),
            '?' => tokens.push(Token::One { cross_slash: true }),
            '[' => match parse_class(&chars[i..], escape, &['!', '^']) {
                Ok((class, used)) => {
                    tokens.push(Token::Class(class));
                    i += used;
                }
                Err(_) => tokens.push(Token::Literal('[')),
            },
            c if c == escape && i < chars.len() => {
                tokens.push(Token::Literal(chars[i]));
                i += 1;
            }
            c => tokens.push(Token::Literal(c)),
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, text: &str, expected: bool) {
        let tokens = compile_shell(pattern, '\\');
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(matches(&tokens, &chars), expected, "{pattern} ~ {text}");
    }

    #[test]
    fn shell_patterns() {
        check("*", "", true);
        check("*", "a/b", true);
        check("a?c", "a/c", true);
        check("[a-c]x", "bx", true);
        check("[!a-c]x", "bx", false);
        check("[^a-c]x", "dx", true);
        check("\\*", "*", true);
        check("\\*", "a", false);
        check("[", "[", true);
        check("a*b*c", "axxbyyc", true);
        check("한*", "한국어", true);
        check("[]]", "]", true);
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(30);
        let text = "a".repeat(29) + "b";
        check(&pattern, &text, false);
    }

    #[test]
    fn bad_range_is_reported() {
        let chars: Vec<char> = "z-a]".chars().collect();
        assert_eq!(
            parse_class(&chars, '\\', &['^']),
            Err(ClassError::BadRange('z', 'a'))
        );
    }
}
