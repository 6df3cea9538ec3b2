//! `kiln parse --json` and `kiln debug dump`, end to end through the binary.

use crate::support::{Kiln, conformance_dir};

#[test]
fn dump_matches_buildkit_for_every_conformance_case() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let k = Kiln::new();
    let mut cases: Vec<_> = std::fs::read_dir(root.join("parser/testfiles"))
        .expect("cases")
        .map(|e| e.expect("entry").path())
        .collect();
    cases.sort();
    for case in cases {
        let file = case.join("Dockerfile");
        let got = k.ok(&["debug", "dump", file.to_str().expect("utf8 path")]);
        let want = std::fs::read_to_string(case.join("result")).expect("result");
        assert_eq!(got, want, "{}", case.display());
    }
}

#[test]
fn parse_json_gives_stages_and_typed_instructions() {
    let k = Kiln::new();
    let file = k.write(
        "Dockerfile",
        "ARG BASE=busybox\nFROM $BASE AS build\nRUN --mount=type=cache,target=/c make\nCOPY --chmod=755 a /b/\n",
    );
    let out = k.ok(&["parse", "--json", file.to_str().expect("utf8 path")]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["global_args"][0]["kind"]["instruction"], "arg");
    let stage = &json["stages"][0];
    assert_eq!(stage["name"], "build");
    assert_eq!(stage["from"]["image"], "$BASE");
    let run = &stage["instructions"][0];
    assert_eq!(run["span"]["line"], 3);
    assert_eq!(run["kind"]["args"]["mounts"][0]["kind"], "cache");
    assert_eq!(stage["instructions"][1]["kind"]["args"]["chmod"], "755");
}

#[test]
fn bad_dockerfiles_fail_with_the_line_shown_and_a_hint() {
    let k = Kiln::new();
    let file = k.write("Dockerfile", "FROM busybox\nRUNN echo hi\n");
    let err = k.fails(&["parse", "--json", file.to_str().expect("utf8 path")]);
    let name = file.display().to_string();
    assert_eq!(
        err,
        format!(
            "{name}:2:1: unknown instruction: RUNN\n  |\n2 | RUNN echo hi\n  | ^^^^\n  = hint: did you mean RUN?\n"
        )
    );
}

#[test]
fn each_error_class_is_reported_with_its_place() {
    let k = Kiln::new();
    for (text, line, fragment) in [
        ("", 1, "file with no instructions"),
        ("# only a comment\n", 1, "file with no instructions"),
        (
            "FROM a\nCOPY --chmod=9 x /y\n",
            2,
            "invalid chmod parameter",
        ),
        ("FROM a\nCOPY --frm=b x /y\n", 2, "unknown flag: frm"),
        (
            "FROM a\nSHELL sh -c\n",
            2,
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            "FROM a\nCMD [\"a\", [\"b\"]]\n",
            2,
            "arrays must be comprised of strings only",
        ),
        ("FROM a\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
        ("FROM a\nENV PATH\n", 2, "ENV must have two arguments"),
        ("# escape=x\nFROM a\n", 1, "invalid escape token"),
        ("RUN x\n", 1, "comes before any FROM"),
    ] {
        let file = k.write("Dockerfile", text);
        let err = k.fails(&["parse", "--json", file.to_str().expect("utf8 path")]);
        assert!(err.contains(&format!(":{line}:")), "{text:?}: {err}");
        assert!(err.contains(fragment), "{text:?}: {err}");
    }
}

#[test]
fn dump_reads_stdin() {
    let k = Kiln::new();
    let mut child = k
        .cmd()
        .args(["debug", "dump", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from busybox\nonbuild run echo hi\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"busybox\")\n(onbuild (run \"echo hi\"))\n"
    );
}
