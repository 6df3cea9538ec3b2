//! The real-world Dockerfiles of `../shared/conformance/realworld/` (README §5) through
//! the `kiln` binary: `kiln check` on each gives exactly the findings BuildKit's checks
//! give, written in `testdata/lint/realworld/<name>.expected` from BuildKit's rule
//! definitions (`frontend/dockerfile/linter/ruleset.go` and where `dockerfile2llb`
//! reports each rule), one `LINE RuleName message` line per finding, empty when none.
//!
//! The checks run as they would with stand-in bases: an empty store, so each base image
//! defines only `PATH` (BuildKit's default when an image sets none) and no base image has
//! a platform to compare; the context is an empty directory (no `.dockerignore`); no
//! build args, no target (every stage is checked, as `--check` does). Findings of one
//! line compare in any order (BuildKit reports a line's undefined variables in map
//! order). Skipped, saying so, when the conformance folder is absent.

use std::path::Path;

use crate::support::{Kiln, conformance_dir, describe, run};

fn expected_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/lint/realworld")
}

/// `kiln check --format json` on `dockerfile`, as sorted `LINE Rule message` lines.
fn findings(k: &Kiln, dockerfile: &Path) -> Vec<String> {
    let file = dockerfile.to_str().expect("utf-8 path");
    let args = ["check", "--format", "json", "-f", file, "context"];
    let out = run(k.cmd().args(args));
    assert!(out.status.success(), "{}", describe(&args, &out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON findings");
    let mut lines: Vec<String> = json
        .as_array()
        .expect("a list of findings")
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["location"]["line"],
                f["rule"].as_str().unwrap_or_default(),
                f["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    sort(&mut lines);
    lines
}

/// By line number, then text.
fn sort(lines: &mut [String]) {
    lines.sort_by_key(|l| {
        let (n, rest) = l.split_once(' ').unwrap_or((l, ""));
        (n.parse::<usize>().unwrap_or(0), rest.to_owned())
    });
}

#[test]
fn kiln_check_gives_buildkits_findings_on_every_realworld_dockerfile() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let dir = root.join("realworld");
    let k = Kiln::new();
    std::fs::create_dir_all(k.path("context")).expect("context dir");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read realworld/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".Dockerfile").map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names.len(), 43, "README §5 promises 43 Dockerfiles");
    let mut failures = Vec::new();
    for name in &names {
        let expected_path = expected_dir().join(format!("{name}.expected"));
        let Ok(text) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!("{name}: no {}", expected_path.display()));
            continue;
        };
        let mut want: Vec<String> = text.lines().map(str::to_owned).collect();
        sort(&mut want);
        let got = findings(&k, &dir.join(format!("{name}.Dockerfile")));
        if got != want {
            failures.push(format!(
                "{name}:\n--- kiln check\n{}\n--- expected\n{}",
                got.join("\n"),
                want.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
