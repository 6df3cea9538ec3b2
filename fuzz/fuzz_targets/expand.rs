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
    let patterns: Vec<&str> = text.lines().collect();
    if let Ok(matcher) = kiln_parser::dockerignore::Matcher::new(&patterns) {
        let _ = matcher.matches("a/b/c.txt");
        let _ = matcher.matches(text);
    }
});
