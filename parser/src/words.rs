//! Word splitting as BuildKit's parser does it before any expansion: for ARG, ENV and
//! LABEL words (quotes and escapes kept in the word, whitespace inside quotes kept), for
//! heredoc markers, and for whitespace-separated lists.

/// Splits like BuildKit's `parseWords`: whitespace ends a word unless quoted; quote
/// characters and escapes stay in the word; an escape at the very end is dropped.
pub(crate) fn split_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            None if !in_word => {
                if c.is_whitespace() {
                    i += 1;
                    continue;
                }
                in_word = true;
                continue;
            }
            None => {
                if c.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    if i + 1 == chars.len() {
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(c);
                i += 1;
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        quote = None;
                        i += 1;
                        continue;
                    }
                    word.push(c);
                    i += 1;
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Removes quotes and escapes from one word, without expanding anything.
pub(crate) fn unquote(word: &str, escape: char) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some('\'') => out.push(c),
            Some(_) if c == escape => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            Some(_) => out.push(c),
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == escape => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// Splits on runs of `[\t\v\f\r ]`, as BuildKit's `parseStringsWhitespaceDelimited`.
pub(crate) fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(['\t', '\u{0B}', '\u{0C}', '\r', ' '])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &[&str]) {
        assert_eq!(split_words(input, '\\'), expected, "{input}");
    }

    #[test]
    fn words_keep_quotes() {
        check("a b", &["a", "b"]);
        check("abc=\"123 456\" d", &["abc=\"123 456\"", "d"]);
        check("x='a b' \"\"", &["x='a b'", "\"\""]);
        check("a\\ b c", &["a\\ b", "c"]);
        check("end\\", &["end"]);
        check("'it\\'s'", &["'it\\'s'"]);
    }

    #[test]
    fn unquote_words() {
        assert_eq!(unquote("\"EOF\"", '\\'), "EOF");
        assert_eq!(unquote("'E\\OF'", '\\'), "E\\OF");
        assert_eq!(unquote("E\\OF", '\\'), "EOF");
    }
}
