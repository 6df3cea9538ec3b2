//! `--chmod` values: octal bits for every file, or a symbolic change (`u+x,go-w,a=rX`)
//! applied to each file's own mode, as BuildKit does with `dchapes/mode`.

use serde::Serialize;

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Chmod {
    /// The same bits for every file and directory.
    Bits(u32),
    /// Clauses applied in order to each file's mode.
    Symbolic(String),
}

impl Chmod {
    /// Parses `0755`/`755` or a symbolic mode; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Chmod, String> {
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Bits)
                .ok_or_else(|| {
                    format!(
                        "invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777"
                    )
                });
        }
        // Check every clause once, so a bad one fails before anything is copied.
        apply_symbolic(text, 0o644, false)?;
        Ok(Chmod::Symbolic(text.to_owned()))
    }

    /// The permission bits for a file whose mode is `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Bits(bits) => *bits,
            Chmod::Symbolic(text) => apply_symbolic(text, mode, is_dir).unwrap_or(mode & 0o7777),
        }
    }
}

fn apply_symbolic(text: &str, mode: u32, is_dir: bool) -> Result<u32, String> {
    let bad = |why: &str| format!("invalid chmod parameter {text:?}: {why}");
    let mut mode = mode & 0o7777;
    for clause in text.split(',') {
        let chars: Vec<char> = clause.chars().collect();
        let mut i = 0;
        let mut who = 0u32;
        while let Some(&c) = chars.get(i) {
            let bits = match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => break,
            };
            who |= bits;
            i += 1;
        }
        if who == 0 {
            who = 0o7777;
        }
        if i == chars.len() {
            return Err(bad("expected +, - or = after the users"));
        }
        while i < chars.len() {
            let op = chars[i];
            if !matches!(op, '+' | '-' | '=') {
                return Err(bad(&format!("unexpected {op:?}; expected +, - or =")));
            }
            i += 1;
            let mut perm = 0u32;
            while let Some(&c) = chars.get(i) {
                perm |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    'X' => 0,
                    's' => 0o6000,
                    't' => 0o1000,
                    '+' | '-' | '=' => break,
                    other => return Err(bad(&format!("unknown permission {other:?}"))),
                };
                i += 1;
            }
            let perm = perm & who;
            mode = match op {
                '+' => mode | perm,
                '-' => mode & !perm,
                _ => (mode & !(who & 0o7777)) | perm,
            };
        }
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Bits(0o755)));
        assert_eq!(Chmod::parse("0640").unwrap().apply(0o777, false), 0o640);
        let s = Chmod::parse("u+x,go-w").unwrap();
        assert_eq!(s.apply(0o666, false), 0o744);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o600, false), 0o444);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o600, true), 0o555);
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o644, false), 0o755);
        assert_eq!(Chmod::parse("g=").unwrap().apply(0o775, false), 0o705);
        assert!(Chmod::parse("99999").is_err());
        assert!(Chmod::parse("u*x").is_err());
        assert!(Chmod::parse("q+x").is_err());
    }
}
