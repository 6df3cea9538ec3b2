//! `kiln build --call=outline|targets|check`: buildx's `--call`, answered as BuildKit's
//! Dockerfile frontend answers its subrequests (`dockerfile2llb/outline.go`,
//! `ListTargets`; printed as `subrequests/outline` and `subrequests/targets` do).

use crate::support::{Kiln, describe, run};

/// Comments, global and stage args, secrets and ssh mounts over two stages.
const DOCKERFILE: &str = "\
# syntax=docker/dockerfile:1
# GO_VERSION the Go toolchain to build with
ARG GO_VERSION=1.23
# UNUSED no FROM or stage declares it
ARG UNUSED=1
# REGISTRY where the base comes from
ARG REGISTRY=docker.io
ARG BASE=${REGISTRY}/library/golang
# build compiles the binary
FROM ${BASE}:${GO_VERSION} AS build
# MODE release or debug
ARG MODE=release
# this comment names no arg
ARG LEVEL
RUN --mount=type=secret,id=token,required --mount=type=ssh echo $MODE

FROM busybox AS unused
ARG NEVER=1
RUN --mount=type=secret,id=never echo

# app the final image
FROM busybox AS app
COPY --from=build /x /x
RUN --mount=type=secret,target=/root/.npmrc --mount=type=ssh,id=git,required=true echo
";

fn world() -> Kiln {
    let k = Kiln::new();
    k.write("ctx/Dockerfile", DOCKERFILE);
    k
}

#[test]
fn outline_lists_what_the_target_uses() {
    let k = world();
    let out = k.ok(&[
        "build",
        "ctx",
        "--call=outline",
        "--build-arg",
        "MODE=debug",
    ]);
    // BASE is used by the FROM, REGISTRY through BASE's default (markAllUsed); UNUSED
    // and the unused stage's NEVER are not; the target's own stage comes first in the
    // walk but the lists are in line order. MODE shows the --build-arg.
    assert_eq!(
        out,
        "\
TARGET:      app
DESCRIPTION: the final image

BUILD ARG    VALUE                      DESCRIPTION
GO_VERSION   1.23                       the Go toolchain to build with
REGISTRY     docker.io                  where the base comes from
BASE         docker.io/library/golang   
MODE         debug                      release or debug
LEVEL                                   

SECRET   REQUIRED
token    true
.npmrc   

SSH       REQUIRED
default   
git       true

"
    );
}

#[test]
fn outline_of_a_target_as_json() {
    let k = world();
    let out = k.ok(&[
        "build",
        "ctx",
        "--call=outline,format=json",
        "--target",
        "build",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["name"], "build");
    assert_eq!(json["description"], "compiles the binary");
    let args: Vec<(&str, Option<&str>, u64)> = json["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap(),
                a["value"].as_str(),
                a["location"]["ranges"][0]["start"]["line"]
                    .as_u64()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        args,
        [
            ("GO_VERSION", Some("1.23"), 3),
            ("REGISTRY", Some("docker.io"), 7),
            ("BASE", Some("docker.io/library/golang"), 8),
            ("MODE", Some("release"), 12),
            // No value: the key is left out (`omitempty`).
            ("LEVEL", None, 14),
        ]
    );
    assert_eq!(
        json["secrets"],
        serde_json::json!([{"name": "token", "required": true,
        "location": {"ranges": [{"start": {"line": 15}, "end": {"line": 15}}]}}])
    );
    assert_eq!(json["ssh"][0]["name"], "default");
    assert!(json["ssh"][0].get("required").is_none());
    use base64::Engine as _;
    let source = base64::engine::general_purpose::STANDARD
        .decode(json["sources"][0].as_str().unwrap())
        .unwrap();
    assert_eq!(source, DOCKERFILE.as_bytes());
}

#[test]
fn targets_lists_the_stages_and_the_default() {
    let k = world();
    let out = k.ok(&["build", "ctx", "--call=targets"]);
    assert_eq!(
        out,
        "\
TARGET        DESCRIPTION
build         compiles the binary
unused        
app (default) the final image
"
    );
    let out = k.ok(&["build", "ctx", "--call", "targets,format=json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets[0]["base"], "${BASE}:${GO_VERSION}");
    assert_eq!(targets[2]["default"], true);
    assert!(targets[0].get("default").is_none());
    assert_eq!(targets[2]["location"]["ranges"][0]["start"]["line"], 22);
}

#[test]
fn call_check_is_kiln_check() {
    let k = Kiln::new();
    k.write("ctx/Dockerfile", "FROM busybox AS Build\nCMD echo hi\n");
    let check = run(k.cmd().args(["build", "ctx", "--check"]));
    let call = run(k.cmd().args(["build", "ctx", "--call=check"]));
    assert!(
        call.status.success(),
        "{}",
        describe(&["--call=check"], &call)
    );
    assert_eq!(check.stderr, call.stderr);
    assert!(String::from_utf8_lossy(&call.stderr).contains("StageNameCasing"));
    let out = k.ok(&["build", "ctx", "--call=check,format=json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json[0]["rule"], "StageNameCasing");
    // An error finding fails the call unless ignorestatus=true.
    k.write(
        "ctx/Dockerfile",
        "# check=error=true\nFROM busybox AS Build\n",
    );
    k.fails(&["build", "ctx", "--call=check"]);
    k.ok(&["build", "ctx", "--call=check,ignorestatus=true"]);
}

#[test]
fn call_runs_on_the_client_with_host() {
    let k = world();
    // No server listens there: the call never asks one, as --check does not.
    let out = run(k.cmd().args([
        "--host",
        "unix:///nonexistent/kiln.sock",
        "build",
        "ctx",
        "--call=targets",
    ]));
    assert!(out.status.success(), "{}", describe(&["--host"], &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app (default)"));
}

#[test]
fn bad_call_values_are_refused_with_the_choices() {
    let k = world();
    let err = k.fails(&["build", "ctx", "--call=outlines"]);
    assert!(
        err.contains("unknown function \"outlines\": use build, check, outline or targets"),
        "{err}"
    );
    let err = k.fails(&["build", "ctx", "--call=outline,format=yaml"]);
    assert!(err.contains("use format=text or format=json"), "{err}");
    let err = k.fails(&["build", "ctx", "--call=outline", "--check"]);
    assert!(err.contains("--check is --call=check"), "{err}");
    let err = k.fails(&["build", "ctx", "--call=outline", "--target", "biuld"]);
    assert!(
        err.contains("target stage \"biuld\" could not be found"),
        "{err}"
    );
    assert!(err.contains("did you mean build?"), "{err}");
}
