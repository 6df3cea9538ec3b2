//! Any word: single-word and word-splitting expansion, and .dockerignore patterns, must
//! never panic (UTF-8 boundaries, unterminated quotes and braces, odd modifiers).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: Vec<(String, String)> = vec![
        ("PWD".into(), "/home".into()),
        ("EMPTY".into(), String::new()),
        ("UTF".into(), "한국어 ☺".into()),
    ];
    for escape in ['\\', '`'] {
        let lexer = kiln_parser::shell::Lexer::new(escape);
        let _ = lexer.expand_word(text, &env);
        let _ = lexer.expand_words(text, &env);
    }
    // Structured nesting: the first byte repeats the rest as `${a:-REST` N times, so
    // depths far past MAX_NESTING are one mutation away (a stack overflow is a crash).
    if let Some((&n, rest)) = text.as_bytes().split_first()
        && let Ok(rest) = std::str::from_utf8(rest)
    {
        let depth = usize::from(n) * 64;
        let word = format!("{}{rest}{}", "${a:-".repeat(depth), "}".repeat(depth));
        let _ = kiln_parser::shell::Lexer::new('\\').expand_word(&word, &env);
        let _ = kiln_parser::expand::expand_heredoc(&word, '\\', &env);
    }
    let patterns: Vec<&str> = text.lines().collect();
    if let Ok(matcher) = kiln_parser::dockerignore::Matcher::new(&patterns) {
        let _ = matcher.matches("a/b/c.txt");
        let _ = matcher.matches(text);
    }
});
