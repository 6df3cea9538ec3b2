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
    let mut nfa = Nfa::new(tokens);
    for &c in text {
        if !nfa.step(c) {
            return false;
        }
    }
    nfa.accepts()
}

/// For each `end` in `0..=text.len()`, whether `tokens` match `text[..end]`; stops early
/// (the rest false) once no match can follow. Costs `tokens.len()` per character.
pub(crate) fn match_ends(tokens: &[Token], text: &[char]) -> Vec<bool> {
    let mut ends = vec![false; text.len() + 1];
    let mut nfa = Nfa::new(tokens);
    ends[0] = nfa.accepts();
    for (i, &c) in text.iter().enumerate() {
        if !nfa.step(c) {
            break;
        }
        ends[i + 1] = nfa.accepts();
    }
    ends
}

/// The length of the longest prefix of `text` that `tokens` match, and how many
/// characters were read to find it (the search stops once no match can follow).
pub(crate) fn longest_match(tokens: &[Token], text: &[char]) -> (Option<usize>, usize) {
    let mut nfa = Nfa::new(tokens);
    let mut longest = nfa.accepts().then_some(0);
    let mut read = 0;
    for (i, &c) in text.iter().enumerate() {
        read = i + 1;
        if !nfa.step(c) {
            break;
        }
        if nfa.accepts() {
            longest = Some(i + 1);
        }
    }
    (longest, read)
}

/// The pattern as a set of positions being matched at once (Thompson's construction
/// over the token list): no recursion and no backtracking, so time is linear in the text
/// and memory linear in the pattern, whatever either holds.
struct Nfa<'a> {
    tokens: &'a [Token],
    /// `at[t]`: token `t` is next to match (`at[len]`: the whole pattern matched).
    at: Vec<bool>,
    /// `inside[t]`: within the directories of the `Dirs` token `t`.
    inside: Vec<bool>,
    next_at: Vec<bool>,
    next_inside: Vec<bool>,
}

impl<'a> Nfa<'a> {
    fn new(tokens: &'a [Token]) -> Nfa<'a> {
        let mut nfa = Nfa {
            tokens,
            at: vec![false; tokens.len() + 1],
            inside: vec![false; tokens.len()],
            next_at: vec![false; tokens.len() + 1],
            next_inside: vec![false; tokens.len()],
        };
        nfa.at[0] = true;
        close(tokens, &mut nfa.at, &mut nfa.inside);
        nfa
    }

    fn accepts(&self) -> bool {
        self.at[self.tokens.len()]
    }

    /// Consumes `c`; false once nothing can match any more.
    fn step(&mut self, c: char) -> bool {
        self.next_at.fill(false);
        self.next_inside.fill(false);
        let mut alive = false;
        for (t, token) in self.tokens.iter().enumerate() {
            if self.inside[t] {
                self.next_inside[t] = true;
                if c == '/' {
                    self.next_at[t + 1] = true;
                }
                alive = true;
            }
            if !self.at[t] {
                continue;
            }
            let target = match token {
                Token::Literal(l) => (*l == c).then_some(t + 1),
                Token::One { cross_slash } => (*cross_slash || c != '/').then_some(t + 1),
                Token::Class(class) => class.matches(c).then_some(t + 1),
                Token::Star { cross_slash } => (*cross_slash || c != '/').then_some(t),
                // Entered through `inside`, set by `close`.
                Token::Dirs => None,
            };
            if let Some(target) = target {
                self.next_at[target] = true;
                alive = true;
            }
        }
        std::mem::swap(&mut self.at, &mut self.next_at);
        std::mem::swap(&mut self.inside, &mut self.next_inside);
        close(self.tokens, &mut self.at, &mut self.inside);
        alive
    }
}

/// Adds what is reachable without consuming a character: past a `*` (it may match
/// nothing) and past or into a `**/` (zero directories, or some).
fn close(tokens: &[Token], at: &mut [bool], inside: &mut [bool]) {
    for (t, token) in tokens.iter().enumerate() {
        if !at[t] {
            continue;
        }
        match token {
            Token::Star { .. } => at[t + 1] = true,
            Token::Dirs => {
                at[t + 1] = true;
                inside[t] = true;
            }
            _ => {}
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
    fn long_patterns_neither_recurse_nor_allocate_a_table() {
        // 10k literals against 10k characters: the backtracking matcher recursed once
        // per character and allocated a table of 100 M cells.
        let text = "a".repeat(10_000);
        check(&text, &text, true);
        check(&format!("{text}b"), &text, false);
        let tokens = compile_shell("a*", '\\');
        let chars: Vec<char> = "aaa".chars().collect();
        assert_eq!(match_ends(&tokens, &chars), vec![false, true, true, true]);
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
