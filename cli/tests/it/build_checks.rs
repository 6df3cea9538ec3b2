//! Build checks through the `kiln` binary: the checks that need the store or a build
//! (`InvalidBaseImagePlatform`), and the real-world corpus.
//!
//! The real-world Dockerfiles of `../shared/conformance/realworld/` (README §5): `kiln
//! check` on each gives exactly the findings BuildKit's checks give, written in `testdata/lint/realworld/<name>.expected` from BuildKit's rule
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

/// `InvalidBaseImagePlatform` (BuildKit `validateBaseImagePlatform`, called as it resolves
/// each base image): a base of another OS or architecture than the stage is built for.
/// The stand-in is made by building `FROM scratch` for `windows/amd64` (no RUN, so it
/// builds here); a linux/amd64 build uses it, as kiln takes a stored image of the wanted
/// architecture. The expected platform is the host's, `--platform`'s or `FROM
/// --platform`'s; a `# check=` comment above the FROM does not reach this rule (BuildKit
/// runs it with the file's configuration only).
#[test]
fn base_image_of_another_platform_is_reported_at_build_and_check() {
    let k = Kiln::new();
    k.write("foreign/f", "x");
    k.write("foreign/Dockerfile", "FROM scratch\nCOPY f /f\n");
    k.ok(&[
        "build",
        "--platform",
        "windows/amd64",
        "-t",
        "foreign",
        "foreign",
    ]);
    let host = match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    };
    let windows_host = host.replace("linux", "windows");
    if windows_host != "windows/amd64" {
        eprintln!("skipped: the stand-in is built for windows/amd64, the host is {host}");
        return;
    }
    k.write(
        "ctx/Dockerfile",
        "# the base\n# check=skip=InvalidBaseImagePlatform\nFROM foreign\nENV A=1\n",
    );
    let message = format!(
        "InvalidBaseImagePlatform: Base image foreign was pulled with platform \"windows/amd64\", expected \"{host}\" for current build"
    );
    // kiln check: the store's image stands for the base.
    let out = run(k.cmd().args(["check", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains(&message), "{err}");
    // kiln build: found when the base is resolved; a warning, the build goes on.
    let out = run(k.cmd().args(["build", "--progress=plain", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains(&message), "{err}");
    // For the platform the image is, nothing to say.
    let out = run(k
        .cmd()
        .args(["check", "--platform", "windows/amd64", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("InvalidBaseImagePlatform"),
        "{err}"
    );
    // error=true: the build fails with BuildKit's message.
    k.write(
        "ctx/Dockerfile",
        "# check=error=true\nFROM foreign\nENV A=1\n",
    );
    let out = run(k.cmd().args(["build", "--progress=plain", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&message)
            && err.contains("lint violation found for rules: InvalidBaseImagePlatform"),
        "{err}"
    );
}

/// As BuildKit's `testBaseImagePlatformMismatch`: an image pushed for another
/// architecture (a single-platform manifest, so the registry has nothing else to give)
/// is what the build pulls, and the build reports it once it has resolved it. `kiln
/// check` pulls nothing, so with the image absent from the store it has nothing to say.
#[test]
fn base_image_pulled_for_another_architecture_is_reported_by_the_build() {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let (host_platform, other) = match std::env::consts::ARCH {
        "aarch64" => ("linux/arm64", "linux/amd64"),
        _ => ("linux/amd64", "linux/arm64"),
    };
    let server = RegistryServer::start(ServerOptions::default());
    let image = format!("{}/buildkit/testbaseimageplatform:latest", server.host());
    let pusher = Kiln::new();
    pusher.write("foreign/foo", "test");
    pusher.write("foreign/Dockerfile", "FROM scratch\nCOPY foo /foo\n");
    pusher.ok(&["build", "--platform", other, "-t", &image, "foreign"]);
    pusher.ok(&["push", &image]);

    let k = Kiln::new();
    k.write("ctx/Dockerfile", format!("\nFROM {image}\nENV foo=bar\n"));
    let message = format!(
        "InvalidBaseImagePlatform: Base image {image} was pulled with platform \"{other}\", expected \"{host_platform}\" for current build"
    );
    let out = run(k.cmd().args(["check", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("InvalidBaseImagePlatform"),
        "{err}"
    );
    let out = run(k.cmd().args(["build", "--progress=plain", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&message), "{err}");
    assert!(err.contains("Dockerfile:2:1"), "{err}");
}

/// A build checks the base images it pulled: their `ENV` and `SHELL` count, as in
/// BuildKit's dispatch (the stage starts from the resolved image's config). `kiln
/// check`, pulling nothing, knows only `PATH` for an image the store lacks, so under
/// `error=true` it fails where the build passes.
#[test]
fn a_build_checks_with_the_env_and_shell_of_the_images_it_pulled() {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let image = format!("{}/kiln/gobase:1", server.host());
    let pusher = Kiln::new();
    pusher.write("base/foo", "test");
    pusher.write(
        "base/Dockerfile",
        "FROM scratch\nCOPY foo /foo\nENV GOPATH=/go\nSHELL [\"/bin/sh\", \"-c\"]\n",
    );
    pusher.ok(&["build", "-t", &image, "base"]);
    pusher.ok(&["push", &image]);

    let k = Kiln::new();
    k.write(
        "ctx/Dockerfile",
        format!("# check=error=true\nFROM {image}\nWORKDIR $GOPATH/src\nCMD run\n"),
    );
    let out = run(k.cmd().args(["check", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UndefinedVar: Usage of undefined variable '$GOPATH'")
            && err.contains("JSONArgsRecommended"),
        "{err}"
    );
    let out = run(k.cmd().args(["build", "--progress=plain", "ctx"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("UndefinedVar") && !err.contains("JSONArgsRecommended"),
        "{err}"
    );
}

/// `kiln check` looks the store's base up by the `FROM` name after `ARG` expansion, as
/// the build resolves it: the image's `ENV` then counts.
#[test]
fn check_finds_the_stored_base_under_its_expanded_name() {
    let k = Kiln::new();
    k.write("base/foo", "test");
    k.write(
        "base/Dockerfile",
        "FROM scratch\nCOPY foo /foo\nENV GOPATH=/go\n",
    );
    k.ok(&["build", "-t", "gobase:1.26", "base"]);
    k.write(
        "ctx/Dockerfile",
        "ARG GO=1.26\nFROM gobase:${GO}\nWORKDIR $GOPATH/src\nCOPY --chmod=$MODE x /x\n",
    );
    let json = k.ok(&["check", "--format", "json", "ctx"]);
    let findings: serde_json::Value = serde_json::from_str(&json).expect("json");
    let messages: Vec<&str> = findings
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(messages, ["Usage of undefined variable '$MODE'"], "{json}");
}
