//! `POST /build`'s query string, read the way dockerd reads it (same names, same
//! booleans, JSON for `buildargs`/`labels`), into [`BuildParams`]. A parameter kiln does
//! not know, or a resource limit it cannot honour, is a 400 naming it: nothing is
//! accepted and ignored.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use kiln_solver::frontend::Platform;
use kiln_solver::request::NetworkMode;

use crate::reply::ApiError;

/// What a `POST /build` asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BuildParams {
    pub(crate) tags: Vec<String>,
    /// The Dockerfile's path inside the context; `Dockerfile` when not given.
    pub(crate) dockerfile: PathBuf,
    pub(crate) build_args: BTreeMap<String, String>,
    pub(crate) target: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) no_cache: bool,
    pub(crate) pull: bool,
    pub(crate) platform: Option<Platform>,
    pub(crate) quiet: bool,
    pub(crate) network: NetworkMode,
    /// `remote=`: a git repository to build from instead of the body.
    pub(crate) remote: Option<String>,
}

/// Go's `httputils.BoolValue`: anything but empty, 0, no, false and none is true.
pub(crate) fn bool_value(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

/// Parameters whose value must be the default (docker CLI sends them always); a value
/// that asks for something kiln's builder has no equivalent of is refused.
fn must_be_default(name: &str, value: &str) -> Result<(), ApiError> {
    let v = value.trim();
    let default = match name {
        "memory" | "memswap" | "cpushares" | "cpuperiod" | "cpuquota" | "shmsize" => {
            v.is_empty() || v == "0" || v == "-1" && name == "memswap"
        }
        "cpusetcpus" | "cpusetmems" | "cgroupparent" | "extrahosts" | "securityopt" | "session"
        | "buildid" | "outputs" => v.is_empty(),
        "ulimits" | "cachefrom" => matches!(v, "" | "null" | "[]" | "{}"),
        "isolation" => matches!(v, "" | "default"),
        "squash" => !bool_value(v),
        _ => false,
    };
    if default {
        return Ok(());
    }
    let what = match name {
        "memory" | "memswap" | "cpushares" | "cpuperiod" | "cpuquota" | "cpusetcpus"
        | "cpusetmems" | "cgroupparent" | "shmsize" | "ulimits" => {
            "resource limits for RUN steps are not supported by kiln"
        }
        "extrahosts" => "extra /etc/hosts entries for RUN steps are not supported by kiln",
        "securityopt" => "security options for RUN steps are not supported by kiln",
        "session" | "buildid" => {
            "BuildKit sessions are not supported: kiln serves the classic build API (unset DOCKER_BUILDKIT or set DOCKER_BUILDKIT=0)"
        }
        "outputs" => "outputs other than the local store are not supported by POST /build",
        "cachefrom" => "external cache sources are not supported: kiln's cache is its store",
        "isolation" => "only the default isolation exists on Linux",
        "squash" => "squash is not supported",
        _ => "not supported",
    };
    Err(ApiError::bad_request(format!(
        "POST /build: {name}={value}: {what}"
    )))
}

fn json_map<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &str,
) -> Result<BTreeMap<String, T>, ApiError> {
    if value.trim().is_empty() || value.trim() == "null" {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(value).map_err(|e| {
        ApiError::bad_request(format!(
            "POST /build: {name} must be a JSON object of strings, e.g. {{\"KEY\":\"VALUE\"}}: {e}"
        ))
    })
}

/// Where a `dockerfile=` name may point: inside the context.
fn dockerfile_path(value: &str) -> Result<PathBuf, ApiError> {
    let path = Path::new(value);
    let inside = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if value.is_empty() || !inside {
        return Err(ApiError::bad_request(format!(
            "POST /build: dockerfile={value}: name a file inside the context, relative to its root (no leading /, no ..)"
        )));
    }
    Ok(path.to_owned())
}

/// Reads a `/build` query string.
pub(crate) fn parse(query: &str) -> Result<BuildParams, ApiError> {
    let mut params = BuildParams {
        dockerfile: PathBuf::from("Dockerfile"),
        ..BuildParams::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.as_ref();
        match name.as_ref() {
            "t" => {
                if value.is_empty() {
                    continue;
                }
                kiln_snapshotter::normalize_name(value)
                    .map_err(|e| ApiError::bad_request(format!("POST /build: t={value}: {e}")))?;
                params.tags.push(value.to_owned());
            }
            "dockerfile" => {
                if !value.is_empty() {
                    params.dockerfile = dockerfile_path(value)?;
                }
            }
            "buildargs" => {
                // `{"KEY": null}` is `--build-arg KEY` with KEY unset in the client's
                // environment: declared, no value.
                let args: BTreeMap<String, Option<String>> = json_map("buildargs", value)?;
                params.build_args = args
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect();
            }
            "labels" => params.labels = json_map("labels", value)?,
            "target" => params.target = Some(value.to_owned()).filter(|t| !t.is_empty()),
            "nocache" => params.no_cache = bool_value(value),
            "pull" => params.pull = bool_value(value),
            "q" => params.quiet = bool_value(value),
            // kiln runs no intermediate containers: there is none to keep or remove, so
            // both values of rm/forcerm describe what happens.
            "rm" | "forcerm" => {}
            "platform" => {
                if !value.is_empty() {
                    let platform = kiln_solver::frontend::parse_platform(value).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "POST /build: platform={value}: write OS/ARCH[/VARIANT], e.g. linux/amd64"
                        ))
                    })?;
                    params.platform = Some(platform);
                }
            }
            "networkmode" => {
                params.network = NetworkMode::parse(value).map_err(|_| {
                    ApiError::bad_request(format!(
                        "POST /build: networkmode={value}: kiln's RUN steps use default (the host's network), host or none"
                    ))
                })?;
            }
            "remote" => {
                if value.is_empty() {
                    continue;
                }
                if !kiln_solver::ops::git::is_git_url(value) {
                    return Err(ApiError::bad_request(format!(
                        "POST /build: remote={value}: kiln builds remote contexts from git repositories only (https://HOST/REPO.git#REF:DIR); send the context as a tar body instead"
                    )));
                }
                params.remote = Some(value.to_owned());
            }
            "version" => match value {
                "" | "1" => {}
                "2" => {
                    return Err(ApiError::bad_request(
                        "POST /build: version=2 asks for BuildKit's session API, which kiln does not serve: unset DOCKER_BUILDKIT or set DOCKER_BUILDKIT=0 to use the classic build API",
                    ));
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "POST /build: version={other}: the builder versions are 1 and 2"
                    )));
                }
            },
            name @ ("memory" | "memswap" | "cpushares" | "cpuperiod" | "cpuquota"
            | "cpusetcpus" | "cpusetmems" | "cgroupparent" | "shmsize" | "ulimits"
            | "extrahosts" | "securityopt" | "session" | "buildid" | "outputs"
            | "cachefrom" | "isolation" | "squash") => must_be_default(name, value)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "POST /build: unknown parameter {other:?}; kiln accepts t, dockerfile, buildargs, labels, target, nocache, pull, platform, q, rm, forcerm, networkmode, remote and version (see docs/api.md)"
                )));
            }
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, expected: Result<BuildParams, &str>) {
        match (parse(query), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{query}"),
            (Err(got), Err(fragment)) => {
                assert_eq!(got.status, http::StatusCode::BAD_REQUEST, "{query}");
                assert!(
                    got.message.contains(fragment),
                    "{query}: {:?} lacks {fragment:?}",
                    got.message
                );
            }
            (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
        }
    }

    fn base() -> BuildParams {
        BuildParams {
            dockerfile: "Dockerfile".into(),
            ..BuildParams::default()
        }
    }

    #[test]
    fn docker_cli_defaults_are_accepted() {
        // What `docker build -t x .` sends with the classic builder.
        check(
            "buildargs=%7B%7D&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0&cpusetcpus=&cpusetmems=&cpushares=0&dockerfile=Dockerfile&labels=%7B%7D&memory=0&memswap=0&networkmode=default&rm=1&shmsize=0&t=x&target=&ulimits=null&version=1",
            Ok(BuildParams {
                tags: vec!["x".into()],
                ..base()
            }),
        );
    }

    #[test]
    fn values_are_read() {
        let mut want = base();
        want.tags = vec!["a:1".into(), "b".into()];
        want.dockerfile = "sub/Dockerfile.dev".into();
        want.build_args = [("A".to_owned(), "1".to_owned())].into();
        want.labels = [("l".to_owned(), "v".to_owned())].into();
        want.target = Some("final".into());
        want.no_cache = true;
        want.pull = true;
        want.quiet = true;
        want.network = NetworkMode::None;
        want.platform = kiln_solver::frontend::parse_platform("linux/amd64");
        check(
            "t=a:1&t=b&dockerfile=sub/Dockerfile.dev&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&labels=%7B%22l%22%3A%22v%22%7D&target=final&nocache=1&pull=true&q=True&networkmode=none&platform=linux/amd64&rm=0&forcerm=1",
            Ok(want),
        );
    }

    #[test]
    fn bad_values_are_refused() {
        check("frobnicate=1", Err("unknown parameter \"frobnicate\""));
        check("memory=1000000", Err("resource limits"));
        check("version=2", Err("DOCKER_BUILDKIT"));
        check("buildargs=%5B1%5D", Err("buildargs must be a JSON object"));
        check("labels=nope", Err("labels must be a JSON object"));
        check("dockerfile=../Dockerfile", Err("inside the context"));
        check("dockerfile=/etc/passwd", Err("inside the context"));
        check("t=UPPER", Err("t=UPPER"));
        check("platform=linux/", Err("platform="));
        check("networkmode=bridge", Err("networkmode=bridge"));
        check("cachefrom=%5B%22x%22%5D", Err("external cache"));
        check(
            "remote=https://example.invalid/a.tar.gz",
            Err("git repositories only"),
        );
    }
}
