//! What `kiln build` tells a person (issue 8): docker-build flag spellings, the plain
//! progress format (golden, durations masked), rawjson events, the live tty view (in
//! tmux), error excerpts with hints, `kiln logs`, version and completion.

use std::path::Path;
use std::process::Command;

use crate::support::{Kiln, describe, run, world};

/// Replaces what changes from run to run: durations, timestamps, ids, temp paths.
fn mask(text: &str, k: &Kiln) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        for (i, word) in words.iter_mut().enumerate() {
            let bare = word.trim_end_matches([':', ',', ';']);
            let tail = &word[bare.len()..];
            let is_time = bare.ends_with('s')
                && bare[..bare.len() - 1].parse::<f64>().is_ok()
                && bare.contains('.');
            if is_time {
                *word = format!("X.Xs{tail}");
            } else if i == 1 && word.parse::<f64>().is_ok() && word.contains('.') {
                *word = "T".to_owned();
            } else if let Some(rest) = word.strip_prefix("sha256:") {
                *word = format!("sha256:{}", "x".repeat(rest.len().min(4)));
            }
        }
        out.push(words.join(" "));
    }
    out.join("\n")
        .replace(k.dir.path().to_str().unwrap(), "TMP")
}

fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/progress")
        .join(name);
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&path, got).expect("bless");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with KILN_BLESS=1", path.display()));
    assert_eq!(got, want, "plain progress differs from {}", path.display());
}

const SMALL: &str = "FROM busybox\nRUN echo one && echo two\nRUN echo three\nCMD [\"sh\"]\n";

#[test]
fn plain_progress_is_stable() {
    let Some(k) = world() else { return };
    k.write("ctx/Dockerfile", SMALL);
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", "ctx", "-t", "small"]));
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    golden(
        "plain-cold.txt",
        &mask(&String::from_utf8_lossy(&out.stderr), &k),
    );
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", "ctx", "-t", "small"]));
    golden(
        "plain-cached.txt",
        &mask(&String::from_utf8_lossy(&out.stderr), &k),
    );
    // The whole log of the last build is kept.
    let logs = k.ok(&["logs"]);
    assert!(
        logs.contains("#2 CACHED") || logs.contains("CACHED"),
        "{logs}"
    );
}

#[test]
fn rawjson_events_are_json() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN echo one && echo two >&2\n",
    );
    let out = run(k.cmd().args(["build", "--progress=rawjson", "ctx"]));
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in ["started", "log", "done"] {
        assert!(kinds.contains(&kind), "no {kind} event in {stderr}");
    }
    assert!(
        events
            .iter()
            .all(|e| e["vertex"].is_u64() && e["at_ns"].is_u64())
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "log" && e["stream"] == "stderr" && e["line"] == "two")
    );
}

#[test]
fn docker_build_flag_spellings_work() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/sub/Dockerfile",
        "FROM busybox AS t\nARG X\nRUN echo \"x=$X y=$Y\" > /x\nLABEL from=t\n\
         FROM busybox AS other\nRUN exit 9\n",
    );
    let iid = k.path("iid");
    let out = run(k.cmd().env("Y", "from-env").args([
        "build",
        "-t",
        "a",
        "-t",
        "b:2",
        "--build-arg",
        "X=1",
        "--build-arg",
        "Y",
        "-f",
        "ctx/sub/Dockerfile",
        "--target",
        "t",
        "--label",
        "extra=yes",
        "--iidfile",
        iid.to_str().unwrap(),
        "-q",
        "ctx",
    ]));
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.starts_with("sha256:"), "-q prints only the id: {id}");
    assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("#1"));
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    for name in ["a", "b:2"] {
        let inspect: serde_json::Value =
            serde_json::from_str(&k.ok(&["inspect", name])).expect("json");
        assert_eq!(inspect[0]["Id"], id.as_str());
        assert_eq!(inspect[0]["Config"]["config"]["Labels"]["extra"], "yes");
        assert_eq!(inspect[0]["Config"]["config"]["Labels"]["from"], "t");
    }
    let tree = crate::support::image_tree(&k, "a");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("x")).unwrap(),
        "x=1 y=\n",
        "Y is given but not declared: RUN does not see it"
    );
    // Usage errors exit 2; a failing build exits 1.
    assert_eq!(run(k.cmd().args(["build", "--tag"])).status.code(), Some(2));
    let out = run(k.cmd().args([
        "build",
        "-f",
        "ctx/sub/Dockerfile",
        "--target",
        "other",
        "ctx",
    ]));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn errors_show_the_line_and_a_hint() {
    let Some(k) = world() else { return };
    let cases = [
        ("FROM busybox\nRUNN x\n", "2 | RUNN x", "did you mean RUN?"),
        (
            "FROM busybox AS build\nFROM busybox\nCOPY --from=biuld /a /a\n",
            "3 | COPY --from=biuld /a /a",
            "did you mean the stage build?",
        ),
        (
            "FROM busybox\nRUN echo failing-output; exit 4\n",
            "exit code: 4",
            "failing-output",
        ),
    ];
    for (i, (dockerfile, excerpt, hint)) in cases.iter().enumerate() {
        let file = format!("ctx/D{i}");
        k.write(&file, dockerfile);
        let out = run(k
            .cmd()
            .args(["build", "--progress=quiet", "-f", &file, "ctx"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(excerpt), "want {excerpt:?} in {err}");
        assert!(err.contains(hint), "want {hint:?} in {err}");
        assert!(err.contains(&format!("{file}:")), "{err}");
    }
}

#[test]
fn version_and_completion() {
    let k = Kiln::new();
    let v = k.ok(&["version"]);
    assert!(v.starts_with("kiln ") && v.contains("commit"), "{v}");
    for shell in ["bash", "zsh", "fish"] {
        let script = k.ok(&["completion", shell]);
        assert!(script.contains("build"), "{shell}: {script}");
    }
    let help = k.ok(&["build", "--help"]);
    for heading in [
        "Input:",
        "Output:",
        "Cache:",
        "Build environment:",
        "Feedback:",
    ] {
        assert!(help.contains(heading), "{help}");
    }
}

#[test]
fn tty_view_in_tmux() {
    let Some(k) = world() else { return };
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is absent (apt-get install tmux)");
        return;
    }
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN echo live-output && sleep 1\n",
    );
    let socket = k.path("tmux.sock");
    let socket = socket.to_str().unwrap();
    let bin = crate::support::kiln_bin();
    let script = format!(
        "{} --root {} build {} -t tty; echo EXIT=$?; sleep 30",
        bin.display(),
        k.root().display(),
        k.path("ctx").display()
    );
    let started = Command::new("tmux")
        .args([
            "-S",
            socket,
            "new-session",
            "-d",
            "-x",
            "150",
            "-y",
            "40",
            &script,
        ])
        .env_remove("NO_COLOR")
        .status()
        .unwrap();
    assert!(started.success());
    let mut pane = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = Command::new("tmux")
            .args(["-S", socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        pane = String::from_utf8_lossy(&out.stdout).into_owned();
        if pane.contains("EXIT=") {
            break;
        }
    }
    let _ = Command::new("tmux")
        .args(["-S", socket, "kill-server"])
        .status();
    assert!(pane.contains("EXIT=0"), "{pane}");
    assert!(
        pane.contains("DONE #2 [2/2] RUN echo live-output"),
        "{pane}"
    );
    assert!(pane.contains("Built sha256:"), "{pane}");
    assert!(pane.contains("2 steps run"), "{pane}");
    // The spinner lines are gone once the steps are done: no leftover escape noise.
    assert!(!pane.contains("\u{1b}["), "{pane}");
}

#[test]
fn build_checks_warn_and_can_fail_the_build() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox as Builder\nMAINTAINER me\nCMD echo hi\n",
    );
    // kiln check: warnings, exit 0; JSON on request.
    let out = run(k.cmd().args(["check", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for rule in [
        "FromAsCasing",
        "StageNameCasing",
        "MaintainerDeprecated",
        "JSONArgsRecommended",
    ] {
        assert!(err.contains(rule), "{rule} missing in {err}");
    }
    assert!(
        err.contains("https://docs.docker.com/go/dockerfile/rule/"),
        "{err}"
    );
    let json = k.ok(&["check", "ctx", "--format", "json"]);
    let findings: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(findings.as_array().unwrap().len() >= 4, "{json}");
    assert_eq!(findings[0]["location"]["line"], 1);
    // A build shows them after the result.
    let out = run(k.cmd().args(["build", "--progress=plain", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("build check warning(s)") && err.contains("MaintainerDeprecated"),
        "{err}"
    );
    // --check checks and stops.
    let out = run(k.cmd().args(["build", "--check", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("Built"), "{err}");
    // error=true fails the build before it runs.
    k.write(
        "ctx/Dockerfile",
        "# check=error=true\nFROM busybox as Builder\nRUN echo should-not-run\n",
    );
    let out = run(k.cmd().args(["build", "--progress=plain", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("lint violation found for rules"), "{err}");
    assert!(!err.contains("should-not-run"), "{err}");
    // skip= turns a rule off.
    k.write(
        "ctx/Dockerfile",
        "# check=skip=FromAsCasing,StageNameCasing\nFROM busybox as Builder\n",
    );
    let out = run(k.cmd().args(["check", "ctx"]));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("FromAsCasing:"));
}
