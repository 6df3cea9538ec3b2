//! BuildKit's shell-expansion vectors (`../shared/conformance/shell/`), run as the
//! conformance README §2 describes.

use kiln_parser::shell::Lexer;

fn conformance() -> Option<std::path::PathBuf> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/shell");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/conformance is absent");
        None
    }
}

#[test]
fn env_var_test_vectors() {
    let Some(dir) = conformance() else { return };
    let text = std::fs::read_to_string(dir.join("envVarTest")).expect("read envVarTest");
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "line {}: {line}", n + 1);
        let (platform, source, expected) = (fields[0], fields[1], fields[2]);
        if platform == "W" {
            continue;
        }
        checked += 1;
        let got = lexer.expand_word(source, &env);
        let ok = match (expected, &got) {
            ("error", Err(_)) => true,
            ("error", Ok(_)) => false,
            (want, Ok(e)) => e.value == want,
            (_, Err(_)) => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {source:?} -> {got:?}, want {expected:?}",
                n + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 200, "only {checked} vectors read");
}

#[test]
fn words_test_vectors() {
    let Some(dir) = conformance() else { return };
    let text = std::fs::read_to_string(dir.join("wordsTest")).expect("read wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start();
            let (k, v) = rest.split_once('=').expect("ENV line has =");
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let (input, expected) = line.split_once('|').expect("one | per line");
        let input = input.trim();
        let expected: Vec<String> = expected
            .trim_start()
            .split(',')
            .map(str::to_owned)
            .collect();
        checked += 1;
        let got = match lexer.expand_words(input, &env) {
            Ok(e) => e.value,
            Err(_) => vec!["error".to_owned()],
        };
        if got != expected {
            failures.push(format!(
                "line {}: {input:?} -> {got:?}, want {expected:?}",
                n + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 20, "only {checked} vectors read");
}
