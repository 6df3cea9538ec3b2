//! moby/patternmatcher's tables (`../shared/conformance/dockerignore/`), run as the
//! conformance README §3 describes.

use kiln_parser::dockerignore::{Matcher, ParentMatches, read_ignore_file};

fn conformance() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/dockerignore");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/conformance is absent");
        None
    }
}

/// Rows of a TSV table after its header, as column maps.
fn rows(text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            header
                .iter()
                .zip(line.split('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The answer got by walking from the root down, passing each directory's per-pattern
/// results to its children (`MatchesUsingParentResults`).
fn walk_decision(m: &Matcher, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut parent = ParentMatches::default();
    let mut excluded = false;
    for n in 1..=parts.len() {
        let prefix = parts[..n].join("/");
        if prefix.is_empty() {
            continue;
        }
        let (decision, here) = m.decide_with_parent(&prefix, &parent).expect("match");
        excluded = decision.excluded;
        parent = here;
    }
    excluded
}

#[test]
fn single_pattern_cases() {
    let Some(dir) = conformance() else { return };
    let text = std::fs::read_to_string(dir.join("cases.tsv")).expect("cases.tsv");
    let mut failures = Vec::new();
    let table = rows(&text);
    for row in &table {
        let (pattern, path) = (&row["pattern"], &row["path"]);
        let want = row["expected"] == "true";
        let m = Matcher::new(&[pattern]).expect("pattern builds");
        let got = if row["origin"] == "TestMatches" {
            let direct = m.decide(path).expect("match").excluded;
            if !path.starts_with('/') && !path.ends_with('/') {
                let walked = walk_decision(&m, path);
                if walked != want {
                    failures.push(format!(
                        "walk: {pattern:?} ~ {path:?} = {walked}, want {want}"
                    ));
                }
            }
            direct
        } else {
            m.matches(path).expect("match")
        };
        if got != want {
            failures.push(format!(
                "{pattern:?} ~ {path:?} = {got}, want {want} ({})",
                row["origin"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    assert!(table.len() > 100);
}

#[test]
fn pattern_list_cases() {
    let Some(dir) = conformance() else { return };
    let text = std::fs::read_to_string(dir.join("multi_cases.tsv")).expect("multi_cases.tsv");
    let table = rows(&text);
    for row in &table {
        let patterns: Vec<String> = serde_json::from_str(&row["patterns_json"]).expect("json");
        let path = &row["path"];
        let want = row["expected"] == "true";
        let m = Matcher::new(&patterns).expect("patterns build");
        let got = if row["origin"] == "TestMatches" {
            m.decide(path).expect("match").excluded
        } else {
            m.matches(path).expect("match")
        };
        assert_eq!(got, want, "{patterns:?} ~ {path:?} ({})", row["origin"]);
    }
    assert!(table.len() >= 10);
}

#[test]
fn bad_patterns_are_errors() {
    let Some(dir) = conformance() else { return };
    let text = std::fs::read_to_string(dir.join("bad_patterns.tsv")).expect("bad_patterns.tsv");
    for row in rows(&text) {
        let (pattern, path, when) = (&row["pattern"], &row["path"], row["when"].as_str());
        let built = Matcher::new(&[pattern]);
        match when {
            "new" => assert!(built.is_err(), "{pattern:?} must fail to build"),
            "match" => {
                let m = built.unwrap_or_else(|e| panic!("{pattern:?} must build: {e}"));
                assert!(m.decide(path).is_err(), "{pattern:?} must fail on match");
                assert!(m.decide(path).is_err(), "{pattern:?} must fail again");
            }
            _ => {
                let failed = match built {
                    Err(_) => true,
                    Ok(m) => m.decide(path).is_err(),
                };
                assert!(failed, "{pattern:?} must fail to build or to match");
            }
        }
    }
}

#[test]
fn reads_an_ignore_file() {
    let Some(dir) = conformance() else { return };
    let input = std::fs::read_to_string(dir.join("readall_input.dockerignore")).expect("input");
    let expected = std::fs::read_to_string(dir.join("readall_expected.txt")).expect("expected");
    let want: Vec<&str> = expected.lines().collect();
    assert_eq!(read_ignore_file(&input), want);
}
