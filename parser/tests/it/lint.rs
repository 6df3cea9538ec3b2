//! The build checks against `testdata/lint/<Rule>/`: `bad.Dockerfile` gives exactly the
//! findings in `expected.txt` (`LINE:RULE:MESSAGE` lines), `good.Dockerfile` none of that
//! rule; a `.dockerignore` beside them applies to both, and so does `platforms.txt`
//! (`IMAGE OS/ARCH[/VARIANT]` lines: the base images' platforms). `KILN_BLESS=1` rewrites
//! `expected.txt` from what `bad.Dockerfile` gives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_parser::dockerignore::{Matcher, read_ignore_file};
use kiln_parser::lint::{self, CheckOptions, Finding, RULES};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/lint")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The findings for `dir/name`, with `dir/.dockerignore` if there is one.
fn findings(dir: &Path, name: &str) -> Vec<Finding> {
    let path = dir.join(name);
    let text = read(&path);
    let file = kiln_parser::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ignore = std::fs::read_to_string(dir.join(".dockerignore"))
        .ok()
        .map(|t| Matcher::new(&read_ignore_file(&t)).expect(".dockerignore"));
    let image_platform: BTreeMap<String, String> =
        std::fs::read_to_string(dir.join("platforms.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(image, platform)| (image.to_owned(), platform.to_owned()))
            .collect();
    let options = CheckOptions {
        ignore,
        image_platform,
        ..CheckOptions::default()
    };
    lint::check(&file, &text, &options)
}

fn lines(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("{}:{}:{}\n", f.span.line, f.rule, f.message))
        .collect()
}

fn check_text(text: &str, options: &CheckOptions, expected: &[&str]) {
    let file = kiln_parser::parse(text).expect("parse");
    let got = lines(&lint::check(&file, text, options));
    let want: String = expected.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(got, want, "{text}");
}

#[test]
fn every_rule_has_cases() {
    for rule in RULES {
        let dir = testdata().join(rule.name);
        for name in ["bad.Dockerfile", "good.Dockerfile", "expected.txt"] {
            assert!(dir.join(name).is_file(), "missing {}/{name}", rule.name);
        }
    }
}

#[test]
fn bad_files_give_the_expected_findings() {
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for rule in RULES {
        let dir = testdata().join(rule.name);
        let got = lines(&findings(&dir, "bad.Dockerfile"));
        let expected_path = dir.join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &got).expect("bless");
            continue;
        }
        let want = read(&expected_path);
        if got != want {
            failures.push(format!("{}:\n--- got\n{got}--- want\n{want}", rule.name));
        }
        if !got.lines().any(|l| l.split(':').nth(1) == Some(rule.name)) {
            failures.push(format!("{}: bad.Dockerfile does not trigger it", rule.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_files_do_not_trigger_their_rule() {
    for rule in RULES {
        let dir = testdata().join(rule.name);
        let hits: Vec<Finding> = findings(&dir, "good.Dockerfile")
            .into_iter()
            .filter(|f| f.rule == rule.name)
            .collect();
        assert!(hits.is_empty(), "{}:\n{}", rule.name, lines(&hits));
    }
}

#[test]
fn findings_render_like_errors_with_the_url() {
    let dir = testdata().join("WorkdirRelativePath");
    let text = read(&dir.join("bad.Dockerfile"));
    let finding = &findings(&dir, "bad.Dockerfile")[0];
    assert_eq!(
        finding.render("Dockerfile", &text),
        "Dockerfile:2:1: WorkdirRelativePath: Relative workdir \"app/\" can have unexpected results if the base image changes\n  |\n2 | WORKDIR app/\n  | ^^^^^^^^^^^^\n  = hint: https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/\n"
    );
}

#[test]
fn target_limits_the_dispatched_stages() {
    let text = "FROM alpine AS a\nWORKDIR one\n\nFROM a AS b\nENV X $Y\n\nFROM alpine AS c\nWORKDIR two\nCOPY --from=B / /\n";
    let all = CheckOptions::default();
    check_text(
        text,
        &all,
        &[
            "2:WorkdirRelativePath:Relative workdir \"one\" can have unexpected results if the base image changes",
            "5:UndefinedVar:Usage of undefined variable '$Y'",
            "5:LegacyKeyValueFormat:\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
            "8:WorkdirRelativePath:Relative workdir \"two\" can have unexpected results if the base image changes",
        ],
    );
    let target = |t: &str| CheckOptions {
        target: Some(t.to_owned()),
        ..CheckOptions::default()
    };
    check_text(
        text,
        &target("a"),
        &[
            "2:WorkdirRelativePath:Relative workdir \"one\" can have unexpected results if the base image changes",
        ],
    );
    // c needs b (COPY --from, any case), b needs a (FROM).
    check_text(
        text,
        &target("c"),
        &[
            "2:WorkdirRelativePath:Relative workdir \"one\" can have unexpected results if the base image changes",
            "5:UndefinedVar:Usage of undefined variable '$Y'",
            "5:LegacyKeyValueFormat:\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
            "8:WorkdirRelativePath:Relative workdir \"two\" can have unexpected results if the base image changes",
        ],
    );
    check_text(text, &target("nope"), &[]);
}

#[test]
fn build_args_and_image_env_define_variables() {
    let text = "ARG GO=1.22\nFROM golang:${GO}\nARG VERSION\nENV PATH=$GOPATH/bin:$PATH\nCOPY app-$VERSION /\n";
    check_text(
        text,
        &CheckOptions::default(),
        &["4:UndefinedVar:Usage of undefined variable '$GOPATH' (did you mean $PATH?)"],
    );
    let options = CheckOptions {
        image_env: BTreeMap::from([(
            "golang:1.23".to_owned(),
            vec!["GOPATH=/go".to_owned(), "PATH=/go/bin:/usr/bin".to_owned()],
        )]),
        build_args: BTreeMap::from([("GO".to_owned(), "1.23".to_owned())]),
        ..CheckOptions::default()
    };
    check_text(text, &options, &[]);
}

#[test]
fn base_image_platform_against_the_build_platform() {
    let text = "FROM example/app:1\nFROM example/app:1 AS other\n";
    let options = |platform: Option<&str>, image: &str| CheckOptions {
        platform: platform.map(str::to_owned),
        image_platform: BTreeMap::from([("example/app:1".to_owned(), image.to_owned())]),
        target: Some("other".to_owned()),
        ..CheckOptions::default()
    };
    // Only the stages the target needs resolve their base.
    check_text(
        text,
        &options(Some("linux/s390x"), "linux/arm64/v8"),
        &[
            "2:InvalidBaseImagePlatform:Base image example/app:1 was pulled with platform \"linux/arm64\", expected \"linux/s390x\" for current build",
        ],
    );
    // The variant does not count.
    check_text(text, &options(Some("linux/arm/v7"), "linux/arm/v6"), &[]);
    // With no --platform, the host's.
    let host = match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    };
    check_text(text, &options(None, host), &[]);
    // --platform gives TARGETPLATFORM too.
    let text = "FROM --platform=$TARGETPLATFORM example/app:1\n";
    check_text(
        text,
        &options(Some("linux/riscv64"), "linux/riscv64"),
        &[
            "1:RedundantTargetPlatform:Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        ],
    );
}

#[test]
fn check_comments_above_one_instruction() {
    // frontend 1.21+: `# check=` above an instruction adds to the file's configuration
    // for the rules BuildKit runs with that instruction.
    let text = "\
# the base stage
# check=skip=FromAsCasing
FROM alpine as Base
# check=skip=SecretsUsedInArgOrEnv // allowed here
ENV password=bar
# check=skip=all // only this instruction
ARG alternate_password
ENV api_token=x

# a comment, then the directive: still above the instruction
# check=skip=JSONArgsRecommended
CMD run
# check=skip=WorkdirRelativePath
# check=skip=LegacyKeyValueFormat
ENV A b
# syntax=not-a-check
# check=skip=ExposeProtoCasing
EXPOSE 80/TCP
# check=skip=MultipleInstructionsDisallowed
CMD [\"again\"]
# check=skip=ConsistentInstructionCasing
run true
# check=skip
WORKDIR rel
";
    check_text(
        text,
        &CheckOptions::default(),
        &[
            "3:StageNameCasing:Stage name 'Base' should be lowercase",
            "8:SecretsUsedInArgOrEnv:Do not use ARG or ENV instructions for sensitive data (ENV \"api_token\")",
            "15:LegacyKeyValueFormat:\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
            "22:ConsistentInstructionCasing:Command 'run' should match the case of the command majority (uppercase)",
            "24:WorkdirRelativePath:Relative workdir \"rel\" can have unexpected results if the base image changes",
        ],
    );
}

#[test]
fn a_base_image_shell_silences_json_args_recommended() {
    // dispatchCmd: the warning only when `d.image.Config.Shell` is empty, and the config
    // starts as the base image's.
    let text = "FROM pwsh-image\nCMD Get-Date\n\nFROM plain AS other\nENTRYPOINT run\n";
    let options = CheckOptions {
        image_shell: BTreeMap::from([(
            "pwsh-image".to_owned(),
            vec!["pwsh".to_owned(), "-Command".to_owned()],
        )]),
        ..CheckOptions::default()
    };
    check_text(
        text,
        &options,
        &[
            "5:JSONArgsRecommended:JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals",
        ],
    );
}

#[test]
fn heredoc_bodies_are_expanded_unless_quoted() {
    let text = "FROM alpine\nCOPY <<EOF /a\n$MISSING\nEOF\nCOPY <<'EOF' /b\n$QUOTED\nEOF\nRUN <<EOF\n$SHELL_ONLY\nEOF\n";
    check_text(
        text,
        &CheckOptions::default(),
        &["2:UndefinedVar:Usage of undefined variable '$MISSING'"],
    );
}

/// BuildKit's real-world Dockerfiles check without panicking (skipped without the
/// conformance folder).
#[test]
fn realworld_dockerfiles_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/realworld");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    };
    let mut checked = 0;
    for entry in entries {
        let path = entry.expect("entry").path();
        for file in [path.join("Dockerfile"), path.clone()] {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            if let Ok(parsed) = kiln_parser::parse(&text) {
                lint::check(&parsed, &text, &CheckOptions::default());
                checked += 1;
            }
            break;
        }
    }
    assert!(checked > 0, "no Dockerfile under {}", dir.display());
}
