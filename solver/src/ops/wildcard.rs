//! COPY and ADD source wildcards, matched as BuildKit matches them: Go's `path.Match`
//! (BuildKit's `cache/contenthash/checksum.go` `includedPaths`; fsutil's
//! `copy/copy.go` `resolveWildcards` uses `filepath.Match`, the same rules on Linux).
//!
//! - `*` is any run of characters other than `/`; `**` is two of them, so it never
//!   reaches below one path level (it is *not* `.dockerignore`'s recursive wildcard);
//! - `?` is one character other than `/`;
//! - `[...]` a class: single characters and `lo-hi` ranges, negated by a leading `^`
//!   (a `!` is an ordinary member, unlike in a shell);
//! - `\` takes the next character literally, inside a class too.
//!
//! A malformed pattern (`[a`, `[]`, a trailing `\`) is an error whether or not the path
//! matches, as Go reports `ErrBadPattern` (text: `syntax error in pattern`).
//!
//! Whether a source is a pattern at all is [`has_wildcard`], BuildKit's
//! `containsWildcards`: a `*`, `?` or `[` not escaped by `\`. A source without one is a
//! literal path, backslashes included.

/// Go's `path.ErrBadPattern` text.
pub const BAD_PATTERN: &str = "syntax error in pattern";

/// Whether `name` has an unescaped `*`, `?` or `[` (BuildKit's `containsWildcards`).
pub fn has_wildcard(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

/// The part of a `/`-separated source before its first component with a wildcard, and
/// the rest (fsutil's and contenthash's `splitWildcards`): `a/b*/c` -> (`a`, `b*/c`).
pub fn split_wildcards(source: &str) -> (String, String) {
    let mut prefix = Vec::new();
    let mut rest = Vec::new();
    for part in source.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if rest.is_empty() && !has_wildcard(part) {
            prefix.push(part);
        } else {
            rest.push(part);
        }
    }
    (prefix.join("/"), rest.join("/"))
}

/// Go's `path.Match(pattern, name)`.
pub fn matches(pattern: &str, name: &str) -> Result<bool, String> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing star takes the rest of the name unless it has a `/`.
            return Ok(!name.contains(&b'/'));
        }
        let here = match_chunk(chunk, name)?;
        if let Some(tail) = here
            && (tail.is_empty() || !pattern.is_empty())
        {
            name = tail;
            continue;
        }
        if star {
            // Let the star take one more character at a time, never a `/`.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if let Some(tail) = match_chunk(chunk, &name[i + 1..])? {
                    if pattern.is_empty() && !tail.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = tail;
                    continue 'chunks;
                }
                i += 1;
            }
        }
        // No match: the rest of the pattern must still be well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Leading stars, then the chunk up to the next star outside a class.
fn scan_chunk(pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    let mut pattern = pattern;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_class = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches `chunk` (no stars) at the start of `s`: the rest of `s` on a match. The whole
/// chunk is checked for syntax even after a mismatch.
fn match_chunk<'a>(chunk: &[u8], s: &'a [u8]) -> Result<Option<&'a [u8]>, String> {
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut c = None;
                if !failed {
                    let (ch, len) = decode(s);
                    c = Some(ch);
                    s = &s[len..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = class_char(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = class_char(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if c.is_some_and(|c| lo <= c && c <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, len) = decode(s);
                    s = &s[len..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if first == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BAD_PATTERN.to_owned());
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One member of a class (escapes taken), and the chunk after it; the class must go on.
fn class_char(chunk: &[u8]) -> Result<(char, &[u8]), String> {
    let bad = || BAD_PATTERN.to_owned();
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(bad()),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(bad());
            }
        }
        _ => {}
    }
    let (c, len) = decode(chunk);
    if c == char::REPLACEMENT_CHARACTER && len == 1 {
        return Err(bad());
    }
    let rest = &chunk[len..];
    if rest.is_empty() {
        return Err(bad());
    }
    Ok((c, rest))
}

/// The first UTF-8 character of `s` and its length; an invalid byte is U+FFFD of length 1,
/// as Go's `utf8.DecodeRuneInString`.
fn decode(s: &[u8]) -> (char, usize) {
    let end = s.len().min(4);
    for len in 1..=end {
        if let Ok(text) = std::str::from_utf8(&s[..len])
            && let Some(c) = text.chars().next()
        {
            return (c, len);
        }
    }
    (char::REPLACEMENT_CHARACTER, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_match_cases() {
        // Go's path/match_test.go table, as far as it concerns `/`-separated names.
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            ("abc", "abc", Ok(true)),
            ("*", "abc", Ok(true)),
            ("*c", "abc", Ok(true)),
            ("a*", "a", Ok(true)),
            ("a*", "abc", Ok(true)),
            ("a*", "ab/c", Ok(false)),
            ("a*/b", "abc/b", Ok(true)),
            ("a*/b", "a/c/b", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Ok(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Ok(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Ok(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Ok(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Ok(false)),
            ("ab[c]", "abc", Ok(true)),
            ("ab[b-d]", "abc", Ok(true)),
            ("ab[e-g]", "abc", Ok(false)),
            ("ab[^c]", "abc", Ok(false)),
            ("ab[^b-d]", "abc", Ok(false)),
            ("ab[^e-g]", "abc", Ok(true)),
            ("a\\*b", "a*b", Ok(true)),
            ("a\\*b", "ab", Ok(false)),
            ("a?b", "a☺b", Ok(true)),
            ("a[^a]b", "a☺b", Ok(true)),
            ("a???b", "a☺b", Ok(false)),
            ("a[^a][^a][^a]b", "a☺b", Ok(false)),
            ("[a-ζ]*", "α", Ok(true)),
            ("*[a-ζ]", "A", Ok(false)),
            ("a?b", "a/b", Ok(false)),
            ("a*b", "a/b", Ok(false)),
            ("[\\]a]", "]", Ok(true)),
            ("[\\-]", "-", Ok(true)),
            ("[x\\-]", "x", Ok(true)),
            ("[x\\-]", "-", Ok(true)),
            ("[x\\-]", "z", Ok(false)),
            ("[\\-x]", "x", Ok(true)),
            ("[\\-x]", "-", Ok(true)),
            ("[\\-x]", "a", Ok(false)),
            ("[]a]", "]", Err(())),
            ("[-]", "-", Err(())),
            ("[x-]", "x", Err(())),
            ("[x-]", "-", Err(())),
            ("[x-]", "z", Err(())),
            ("[-x]", "x", Err(())),
            ("[-x]", "-", Err(())),
            ("[-x]", "a", Err(())),
            ("\\", "a", Err(())),
            ("[a-b-c]", "a", Err(())),
            ("[", "a", Err(())),
            ("[^", "a", Err(())),
            ("[^bc", "a", Err(())),
            ("a[", "a", Err(())),
            ("a[", "ab", Err(())),
            ("a[", "x", Err(())),
            ("a/b[", "x", Err(())),
            ("*x", "xxx", Ok(true)),
            // COPY's cases: `**` is `*`, `!` is no negation.
            ("**.txt", "a.txt", Ok(true)),
            ("**.txt", "d/a.txt", Ok(false)),
            ("d/**", "d/sub/y", Ok(false)),
            ("[!a].txt", "a.txt", Ok(true)),
            ("[!a].txt", "b.txt", Ok(false)),
        ];
        for (pattern, name, want) in cases {
            let got = matches(pattern, name).map_err(|_| ());
            assert_eq!(&got, want, "matches({pattern:?}, {name:?})");
        }
    }

    #[test]
    fn wildcards_and_their_escapes() {
        assert!(has_wildcard("a*") && has_wildcard("[x]") && has_wildcard("a?"));
        assert!(!has_wildcard("a/b") && !has_wildcard("\\[x\\].txt") && !has_wildcard("\\*"));
        assert!(has_wildcard("\\[x\\]*"));
        assert_eq!(
            split_wildcards("a/b/c*/d"),
            ("a/b".to_owned(), "c*/d".to_owned())
        );
        assert_eq!(
            split_wildcards("*.txt"),
            (String::new(), "*.txt".to_owned())
        );
        assert_eq!(split_wildcards("a/b"), ("a/b".to_owned(), String::new()));
    }
}
