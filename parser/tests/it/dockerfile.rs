//! BuildKit's parser cases and real-world Dockerfiles (`../shared/conformance/`), run as
//! the conformance README §1 and §5 describe.

use std::path::{Path, PathBuf};

fn conformance() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/conformance is absent");
        None
    }
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read cases")
        .map(|e| e.expect("entry").path())
        .collect();
    out.sort();
    out
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let Some(root) = conformance() else { return };
    let mut failures = Vec::new();
    let all = cases(&root.join("parser/testfiles"));
    for case in &all {
        let text = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        let want = std::fs::read_to_string(case.join("result")).expect("result");
        match kiln_parser::parse_nodes(&text) {
            Ok(tree) => {
                let got = tree.dump();
                if got != want {
                    failures.push(format!(
                        "{}:\n--- got\n{got}--- want\n{want}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    assert!(all.len() >= 33);
}

#[test]
fn negative_cases_fail() {
    let Some(root) = conformance() else { return };
    for case in cases(&root.join("parser/testfiles-negative")) {
        let text = std::fs::read_to_string(case.join("Dockerfile")).expect("Dockerfile");
        assert!(
            kiln_parser::parse_nodes(&text).is_err(),
            "{} must fail",
            case.display()
        );
    }
}

#[test]
fn line_numbers_cover_continuations() {
    let Some(root) = conformance() else { return };
    let text =
        std::fs::read_to_string(root.join("parser/testfile-line/Dockerfile")).expect("Dockerfile");
    let tree = kiln_parser::parse_nodes(&text).expect("parse");
    let ranges: Vec<(usize, usize)> = tree
        .nodes
        .iter()
        .map(|n| (n.span.line, n.span.end_line))
        .collect();
    assert_eq!(ranges, vec![(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn real_world_dockerfiles_parse() {
    let Some(root) = conformance() else { return };
    let mut failures = Vec::new();
    let mut count = 0;
    for file in cases(&root.join("realworld")) {
        if file.extension().is_none_or(|e| e != "Dockerfile") {
            continue;
        }
        count += 1;
        let text = std::fs::read_to_string(&file).expect("Dockerfile");
        if let Err(e) = kiln_parser::parse(&text) {
            failures.push(e.render(&file.display().to_string(), &text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(count >= 40, "only {count} files");
}

/// kiln's own fixtures (`testdata/parser/`): each `ok/*.Dockerfile` parses and its dump
/// equals `*.dump`; each `errors/*.Dockerfile` fails with exactly `*.err`.
/// `KILN_BLESS=1` rewrites the expected files (review the diff like code).
#[test]
fn testdata_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/parser");
    let bless = std::env::var_os("KILN_BLESS").is_some();
    let mut failures = Vec::new();
    for (dir, ok) in [("ok", true), ("errors", false)] {
        for file in cases(&root.join(dir)) {
            if file.extension().is_none_or(|e| e != "Dockerfile") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("fixture");
            let name = file
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let got = if ok {
                match kiln_parser::parse(&text) {
                    Ok(_) => kiln_parser::parse_nodes(&text).expect("nodes").dump(),
                    Err(e) => format!("unexpected error:\n{}", e.render(&name, &text)),
                }
            } else {
                match kiln_parser::parse(&text) {
                    Ok(_) => "unexpected success\n".to_owned(),
                    Err(e) => e.render(&name, &text),
                }
            };
            let expected_path = file.with_extension(if ok { "dump" } else { "err" });
            if bless {
                std::fs::write(&expected_path, &got).expect("bless");
                continue;
            }
            let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if got != want {
                failures.push(format!(
                    "{}:\n--- got\n{got}--- want\n{want}",
                    file.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
