//! Hostile input (issue 17, items 9, 10, 11, 15): each bound of the parser and the
//! expander is a positioned error with a hint, never a stack overflow or an allocation
//! that ends the process.

use kiln_parser::lint::{self, CheckOptions};
use kiln_parser::shell::{Lexer, Limit, MAX_NESTING, MAX_WORD_SIZE};
use kiln_parser::{ErrorKind, MAX_DOCKERFILE_SIZE};

/// `ENV x=${a:-${a:-...}}` nested `depth` deep, one level per continuation line.
fn nested(depth: usize) -> String {
    let mut text = String::from("FROM scratch\nENV x=");
    for _ in 0..depth {
        text.push_str("${a:-\\\n");
    }
    text.push('v');
    text.push_str(&"}".repeat(depth));
    text.push('\n');
    text
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // 20k levels overflowed the stack (SIGSEGV) before the bound.
    let text = nested(20_000);
    let err = kiln_parser::parse(&text).expect_err("too deep");
    assert!(matches!(err.kind, ErrorKind::Limit(_)), "{err:?}");
    let rendered = err.render("Dockerfile", &text);
    assert!(rendered.starts_with("Dockerfile:2:1: "), "{rendered}");
    assert!(rendered.contains("nested more than 128 deep"), "{rendered}");
    assert!(
        rendered.contains("hint: nest ${...} less deeply"),
        "{rendered}"
    );
    // The message quotes the word's start only.
    assert!(rendered.len() < 2000, "{} bytes", rendered.len());
    // At the bound it still parses.
    kiln_parser::parse(&nested(MAX_NESTING)).expect("128 levels parse");
}

#[test]
fn expander_bounds_nesting_in_quotes_too() {
    let word = "\"${a:-".repeat(MAX_NESTING + 1) + &"}\"".repeat(MAX_NESTING + 1);
    let env: Vec<(String, String)> = Vec::new();
    let err = Lexer::new('\\').expand_word(&word, &env).expect_err("deep");
    assert_eq!(err.limit, Some(Limit::Nesting));
}

/// `ARG a1=x`, then `ARG aN=${aN-1}${aN-1}` up to `count`.
fn doubling(count: usize) -> String {
    let mut text = String::from("FROM scratch\nARG a0=xxxxxxxxxxxxxxxx\n");
    for i in 1..=count {
        text.push_str(&format!("ARG a{i}=${{a{}}}${{a{}}}\n", i - 1, i - 1));
    }
    text
}

#[test]
fn doubling_args_stop_at_the_word_size_in_lint() {
    // 40 lines made the lint pass allocate until the process died (16 B << 40).
    let text = doubling(40);
    let file = kiln_parser::parse(&text).expect("parse");
    let findings = lint::check(&file, &text, &CheckOptions::default());
    let limit = findings
        .iter()
        .find(|f| f.rule == lint::EXPANSION_LIMIT)
        .expect("a limit finding");
    assert!(limit.error);
    // 16 B doubled 17 times is 2 MiB: line 2 + 17 = 19 is the first over 1 MiB.
    assert_eq!(limit.span.line, 19, "{limit:?}");
    assert!(
        limit.message.contains("more than 1048576 bytes"),
        "{limit:?}"
    );
    assert!(lint::violation(&findings).is_some());
}

#[test]
fn words_over_the_size_are_refused() {
    let env = vec![("A".to_owned(), "x".repeat(MAX_WORD_SIZE / 2 + 1))];
    let lexer = Lexer::new('\\');
    assert_eq!(
        lexer.expand_word("$A", &env).expect("half").value.len(),
        MAX_WORD_SIZE / 2 + 1
    );
    let err = lexer.expand_word("$A$A", &env).expect_err("over");
    assert_eq!(err.limit, Some(Limit::Size));
    let err = lexer.expand_word("${A//x/xx}", &env).expect_err("over");
    assert_eq!(err.limit, Some(Limit::Size));
    let err = kiln_parser::expand::expand_heredoc(&"$A ".repeat(3), '\\', &env).expect_err("h");
    assert_eq!(err.limit, Some(Limit::Size));
}

#[test]
fn patterns_against_long_values_stay_linear() {
    // `${A%%*x}` on 200k characters without an x: the backtracking trim tried every
    // start with a fresh table (quadratic); now one pass.
    let env = vec![("A".to_owned(), "a".repeat(200_000))];
    let lexer = Lexer::new('\\');
    let got = lexer.expand_word("${A%%*x}", &env).expect("trim");
    assert_eq!(got.value.len(), 200_000);
    let got = lexer.expand_word("${A//*x/y}", &env).expect("replace");
    assert_eq!(got.value.len(), 200_000);
    let got = lexer.expand_word("${A##a}", &env).expect("trim");
    assert_eq!(got.value.len(), 199_999);
}

#[test]
fn chained_onbuild_does_not_recurse_per_word() {
    let text = format!("FROM scratch\n{}RUN x\n", "ONBUILD \\\n".repeat(100_000));
    let err = kiln_parser::parse_nodes(&text).expect_err("chained");
    assert!(err.to_string().contains("Chaining ONBUILD"), "{err}");
    // Two still show in the node view, as BuildKit dumps them.
    let tree = kiln_parser::parse_nodes("FROM a\nONBUILD ONBUILD RUN x\n").expect("two");
    assert_eq!(
        tree.dump(),
        "(from \"a\")\n(onbuild (onbuild (run \"x\")))\n"
    );
}

#[test]
fn files_over_the_cap_are_refused_before_scanning() {
    let text = format!("FROM scratch\n#{}\n", "x".repeat(MAX_DOCKERFILE_SIZE));
    let err = kiln_parser::parse(&text).expect_err("too big");
    assert!(matches!(err.kind, ErrorKind::Limit(_)));
    assert!(err.to_string().contains("more than the 16 MiB"), "{err}");
    let err = kiln_parser::decode(text.as_bytes()).expect_err("too big");
    assert!(matches!(err.kind, ErrorKind::Limit(_)));
}

#[test]
fn invalid_utf8_is_placed_at_its_byte() {
    let bytes = b"FROM scratch\nRUN echo \xe9t\xe9\n";
    let err = kiln_parser::parse_bytes(bytes).expect_err("latin-1");
    assert!(matches!(err.kind, ErrorKind::Encoding(_)));
    assert_eq!((err.span.line, err.span.col), (2, 10));
    let lossy = String::from_utf8_lossy(bytes);
    let rendered = err.render("Dockerfile", &lossy);
    assert!(
        rendered.starts_with(
            "Dockerfile:2:10: the Dockerfile is not UTF-8 text: byte 0xe9 at offset 22"
        ),
        "{rendered}"
    );
    assert!(
        rendered.contains("hint: save the file as UTF-8"),
        "{rendered}"
    );
    assert!(kiln_parser::parse_bytes(b"FROM scratch\n").is_ok());
}

fn nul_error(text: &str) -> (usize, usize, String) {
    let err = kiln_parser::parse(text).expect_err(text);
    assert!(matches!(err.kind, ErrorKind::Nul(_)), "{text:?}: {err:?}");
    (err.span.line, err.span.col, err.render("Dockerfile", text))
}

#[test]
fn nul_bytes_in_process_text_are_refused_at_parse_time() {
    let (line, col, rendered) = nul_error("FROM scratch\nRUN echo a\0b\n");
    assert_eq!((line, col), (2, 11));
    assert!(rendered.contains("RUN holds a NUL byte"), "{rendered}");
    assert!(rendered.contains("hint: remove the NUL byte"), "{rendered}");
    assert_eq!(nul_error("FROM scratch\nENV A=\0\n").0, 2);
    assert_eq!(nul_error("FROM scratch\nWORKDIR /a\0\n").0, 2);
    assert_eq!(nul_error("FROM scratch\nUSER a\0\n").0, 2);
    assert_eq!(nul_error("FROM scratch\nSHELL [\"sh\\u0000\"]\n").0, 2);
    assert_eq!(nul_error("FROM scratch\nCMD [\"a\\u0000\"]\n").0, 2);
    assert_eq!(nul_error("FROM scratch\nENTRYPOINT a\0\n").0, 2);
    assert_eq!(nul_error("FROM scratch\nONBUILD RUN a\0\n").0, 2);
    // Not process text: a LABEL may hold one, as in BuildKit.
    assert!(kiln_parser::parse("FROM scratch\nLABEL a=\0\n").is_ok());
}
