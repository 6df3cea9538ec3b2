//! `/images/...`: list, inspect, tag, remove, push, pull (`create`), save (`get`) and
//! load, in the shapes of Docker's API documentation.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json as j};

use super::{State, only_params, param, query_pairs};
use crate::engine_calls::{FoundImage, ImageSummary};
use crate::reply::{ApiError, Body, ChannelWriter, JsonStream, channel, empty, json};

/// RFC 3339 (`2026-12-03T15:04:05Z`, fractions and offsets allowed) to Unix seconds.
fn unix_seconds(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let clock = time.trim_end_matches('Z').split(['.', '+', '-']).next()?;
    let mut t = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    Some(kiln_image::config::unix_seconds(y, m, day, hh, mm, ss))
}

/// `repo:tag` split at the tag's colon (not a registry port's).
fn split_name(name: &str) -> (&str, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(c) => (&name[..slash + c], &name[slash + c + 1..]),
        None => (name, "latest"),
    }
}

/// Docker's `ImageSummary` per image id, tags grouped.
pub(super) fn summaries(state: &State) -> Result<Vec<Value>, ApiError> {
    let images = state.backend.images()?;
    Ok(group(&images)
        .into_iter()
        .map(|(first, names)| {
            let created = first.created.as_deref().and_then(unix_seconds).unwrap_or(0);
            j!({
                "Id": first.id.to_string(),
                "ParentId": "",
                "RepoTags": names,
                "RepoDigests": [],
                "Created": created,
                "Size": first.size,
                "SharedSize": -1,
                "VirtualSize": first.size,
                "Labels": Value::Null,
                "Containers": -1,
            })
        })
        .collect())
}

fn group(images: &[ImageSummary]) -> Vec<(&ImageSummary, Vec<String>)> {
    let mut by_id: BTreeMap<String, (&ImageSummary, Vec<String>)> = BTreeMap::new();
    for image in images {
        by_id
            .entry(image.id.to_string())
            .or_insert_with(|| (image, Vec::new()))
            .1
            .push(image.name.clone());
    }
    let mut out: Vec<_> = by_id.into_values().collect();
    // Newest first, as docker lists them.
    out.sort_by_key(|(image, _)| {
        std::cmp::Reverse(image.created.as_deref().and_then(unix_seconds).unwrap_or(0))
    });
    out
}

/// Whether `name` (normalised, `repo:tag`) matches a `reference` filter (`repo`,
/// `repo:tag`, with `*` globs within a path segment as docker allows).
fn reference_matches(pattern: &str, name: &str) -> bool {
    let (repo, tag) = split_name(name);
    let short_repo = repo.strip_prefix("docker.io/library/").unwrap_or(repo);
    let glob = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
    if pattern.contains(':') && !pattern.ends_with(':') {
        let (prepo, ptag) = split_name(pattern);
        (glob(prepo, repo) || glob(prepo, short_repo)) && glob(ptag, tag)
    } else {
        glob(pattern, repo) || glob(pattern, short_repo)
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text)
                || (!text.is_empty() && text[0] != b'/' && glob_match(pattern, &text[1..]))
        }
        (Some(p), Some(t)) if p == t => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

pub(super) fn list(state: &State, request: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(request);
    only_params(
        "GET /images/json",
        &pairs,
        &["all", "filters", "filter", "digests", "shared-size"],
    )?;
    let mut references: Vec<String> = Vec::new();
    if let Some(name) = param(&pairs, "filter").filter(|f| !f.is_empty()) {
        references.push(name.to_owned());
    }
    if let Some(filters) = param(&pairs, "filters").filter(|f| !f.trim().is_empty()) {
        let parsed: BTreeMap<String, Value> = serde_json::from_str(filters).map_err(|e| {
            ApiError::bad_request(format!(
                "GET /images/json: filters must be a JSON object like {{\"reference\":{{\"app\":true}}}}: {e}"
            ))
        })?;
        for (key, values) in parsed {
            if key != "reference" {
                return Err(ApiError::bad_request(format!(
                    "GET /images/json: the {key} filter is not supported by kiln (only reference)"
                )));
            }
            // {"reference": {"app": true}} or the older ["app"].
            match values {
                Value::Object(map) => references.extend(map.keys().cloned()),
                Value::Array(list) => {
                    references.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)))
                }
                _ => {}
            }
        }
    }
    let mut all = summaries(state)?;
    if !references.is_empty() {
        all.retain_mut(|summary| {
            let tags: Vec<Value> = summary["RepoTags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| {
                    t.as_str()
                        .is_some_and(|t| references.iter().any(|r| reference_matches(r, t)))
                })
                .collect();
            let keep = !tags.is_empty();
            summary["RepoTags"] = Value::Array(tags);
            keep
        });
    }
    Ok(json(&all))
}

/// Docker's image inspect document.
fn inspect_json(found: &FoundImage) -> Value {
    let image = &found.image;
    let config = &image.config;
    let size: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    let container = &config.config;
    j!({
        "Id": image.id.to_string(),
        "RepoTags": found.names,
        "RepoDigests": [],
        "Parent": "",
        "Comment": config.history.last().map(|h| h.comment.clone()).unwrap_or_default(),
        "Created": config.created.clone().unwrap_or_default(),
        "Container": "",
        "ContainerConfig": Value::Null,
        "DockerVersion": "",
        "Author": config.author.clone().unwrap_or_default(),
        "Config": {
            "Hostname": "",
            "Domainname": "",
            "User": container.user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": if container.exposed_ports.is_empty() { Value::Null } else { j!(container.exposed_ports) },
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": container.env,
            "Cmd": container.cmd,
            "Healthcheck": container.healthcheck,
            "ArgsEscaped": container.args_escaped,
            "Image": "",
            "Volumes": if container.volumes.is_empty() { Value::Null } else { j!(container.volumes) },
            "WorkingDir": container.working_dir,
            "Entrypoint": container.entrypoint,
            "OnBuild": if container.on_build.is_empty() { Value::Null } else { j!(container.on_build) },
            "Labels": if container.labels.is_empty() { Value::Null } else { j!(container.labels) },
            "StopSignal": if container.stop_signal.is_empty() { Value::Null } else { j!(container.stop_signal) },
            "Shell": if container.shell.is_empty() { Value::Null } else { j!(container.shell) },
        },
        "Architecture": config.architecture,
        "Variant": config.variant,
        "Os": config.os,
        "Size": size,
        "VirtualSize": size,
        "GraphDriver": { "Name": "kiln", "Data": Value::Null },
        "RootFS": { "Type": config.rootfs.kind, "Layers": config.rootfs.diff_ids },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        "KilnManifestDigest": image.manifest_descriptor.digest.to_string(),
    })
}

pub(super) fn inspect(state: &State, name: &str) -> Result<Response<Body>, ApiError> {
    let found = state.backend.find(name)?;
    Ok(json(&inspect_json(&found)))
}

pub(super) fn tag(
    state: &State,
    name: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(request);
    only_params("POST /images/{name}/tag", &pairs, &["repo", "tag", "force"])?;
    let repo = param(&pairs, "repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("POST /images/{name}/tag: give the new name as repo=NAME")
        })?;
    let target = match param(&pairs, "tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_owned(),
    };
    state.backend.tag(name, &target)?;
    Ok(empty(StatusCode::CREATED))
}

pub(super) fn remove(
    state: &State,
    name: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(request);
    // kiln never deletes blobs on rmi (prune does): noprune describes what happens.
    only_params("DELETE /images/{name}", &pairs, &["force", "noprune"])?;
    let force = param(&pairs, "force").is_some_and(crate::build_params::bool_value);
    let found = state.backend.find(name)?;
    let normalized = kiln_snapshotter::normalize_name(name).ok();
    let by_name = normalized.as_ref().is_some_and(|n| found.names.contains(n));
    let names = if by_name {
        normalized.into_iter().collect()
    } else {
        if found.names.len() > 1 && !force {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "conflict: unable to delete {name} (must be forced) - image is referenced in multiple repositories ({})",
                    found.names.join(", ")
                ),
            ));
        }
        found.names.clone()
    };
    let mut answer = Vec::new();
    for n in names {
        let untagged = state.backend.untag(&n)?;
        answer.push(j!({ "Untagged": untagged }));
    }
    Ok(json(&answer))
}

fn auth_header(request: &Request<Incoming>) -> Option<&str> {
    request
        .headers()
        .get("X-Registry-Auth")
        .and_then(|h| h.to_str().ok())
}

pub(super) async fn push(
    state: &Arc<State>,
    name: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(request);
    only_params("POST /images/{name}/push", &pairs, &["tag"])?;
    let credentials = crate::credentials::from_auth_header(auth_header(request), name)?;
    let targets: Vec<String> = match param(&pairs, "tag").filter(|t| !t.is_empty()) {
        Some(tag) => vec![format!("{name}:{tag}")],
        None => {
            // No tag: every local tag of the repository, as docker pushes them.
            let repo = kiln_snapshotter::normalize_name(name)
                .map(|n| split_name(&n).0.to_owned())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let all: Vec<String> = state
                .backend
                .images()?
                .into_iter()
                .map(|i| i.name)
                .filter(|n| split_name(n).0 == repo)
                .collect();
            if all.is_empty() {
                return Err(ApiError::not_found(format!(
                    "An image does not exist locally with the tag: {name}"
                )));
            }
            all
        }
    };
    for target in &targets {
        state.backend.find(target)?;
    }
    let (response, sender) = channel("application/json");
    let stream = JsonStream::new(sender);
    let backend = state.backend.clone();
    let repo = name.to_owned();
    tokio::spawn(async move {
        stream
            .status(format!("The push refers to repository [{repo}]"))
            .await;
        for target in targets {
            let (_, tag) = split_name(&target);
            let tag = tag.to_owned();
            match backend.push(&target, credentials.clone()).await {
                Ok(digest) => {
                    stream.status(format!("{tag}: digest: {digest}")).await;
                    stream
                        .send(j!({
                            "progressDetail": {},
                            "aux": { "Tag": tag, "Digest": digest },
                        }))
                        .await;
                }
                Err(e) => {
                    stream.error(e.message()).await;
                    return;
                }
            }
        }
    });
    Ok(response)
}

pub(super) async fn pull(
    state: &Arc<State>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(request);
    if param(&pairs, "fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "POST /images/create: fromSrc (importing a root filesystem) is not supported by kiln serve; run `kiln import` on the server",
        ));
    }
    only_params(
        "POST /images/create",
        &pairs,
        &["fromImage", "tag", "platform"],
    )?;
    let from = param(&pairs, "fromImage")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("POST /images/create: give the image as fromImage=NAME")
        })?;
    let credentials = crate::credentials::from_auth_header(auth_header(request), from)?;
    let reference = match param(&pairs, "tag").filter(|t| !t.is_empty()) {
        Some(digest) if digest.starts_with("sha256:") => format!("{from}@{digest}"),
        Some(tag) => format!("{from}:{tag}"),
        None => from.to_owned(),
    };
    let platform = match param(&pairs, "platform").filter(|p| !p.is_empty()) {
        Some(text) => kiln_solver::frontend::parse_platform(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "POST /images/create: platform={text}: write OS/ARCH[/VARIANT], e.g. linux/amd64"
            ))
        })?,
        None => kiln_exporter::registry::Platform::host(),
    };
    let (response, sender) = channel("application/json");
    let stream = JsonStream::new(sender);
    let backend = state.backend.clone();
    tokio::spawn(async move {
        let (_, tag) = split_name(&reference);
        stream
            .send(j!({ "status": format!("Pulling from {reference}"), "id": tag }))
            .await;
        match backend.pull(&reference, &platform, credentials).await {
            Ok(image) => {
                stream
                    .status(format!("Digest: {}", image.manifest_descriptor.digest))
                    .await;
                stream
                    .status(format!("Status: Image is up to date for {reference}"))
                    .await;
            }
            Err(e) => {
                stream.error(e.message()).await;
            }
        }
    });
    Ok(response)
}

pub(super) fn save(
    state: &State,
    names: Vec<String>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "GET /images/get: name the image with names=NAME",
        ));
    }
    if request.uri().path().ends_with("/get") && !request.uri().path().ends_with("/images/get") {
        only_params("GET /images/{name}/get", &query_pairs(request), &[])?;
    }
    // Every name must exist before the 200 goes out: a missing one is a 404.
    for name in &names {
        state.backend.find(name)?;
    }
    let (response, sender) = channel("application/x-tar");
    let backend = state.backend.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter(sender.clone());
        if let Err(e) = backend.save(&names, &mut writer) {
            // The status is sent already: end the body with an error so the client sees
            // a broken transfer, not a short archive.
            let _ = sender.blocking_send(Err(std::io::Error::other(e.message().to_owned())));
        }
    });
    Ok(response)
}

pub(super) async fn load(
    state: &Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(&request);
    only_params("POST /images/load", &pairs, &["quiet"])?;
    let body = request.into_body();
    let (mut reader, body_state) = crate::body::reader(body, state.max_body);
    let backend = state.backend.clone();
    let loaded = tokio::task::spawn_blocking(move || backend.load(&mut reader))
        .await
        .map_err(|e| ApiError::internal(format!("the load task failed: {e}")))?;
    let lines = match loaded {
        Ok(lines) => lines,
        Err(_) if body_state.too_large() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the archive is larger than the server's limit of {} bytes (kiln serve --max-context-size)",
                    state.max_body
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    for line in lines {
        text.push_str(&j!({ "stream": format!("{line}\n") }).to_string());
        text.push('\n');
    }
    let mut response = Response::new(crate::reply::full(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_like_docker() {
        assert!(reference_matches("app", "app:latest"));
        assert!(reference_matches("app:1", "app:1"));
        assert!(!reference_matches("app:1", "app:2"));
        assert!(reference_matches(
            "busybox",
            "docker.io/library/busybox:latest"
        ));
        assert!(reference_matches(
            "127.0.0.1:5000/x",
            "127.0.0.1:5000/x:latest"
        ));
        assert!(reference_matches("ap*", "app:latest"));
        assert!(!reference_matches("ap*", "team/app:latest"));
    }

    #[test]
    fn created_times_parse() {
        assert_eq!(unix_seconds("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(
            unix_seconds("2017-01-26T16:59:13.123Z"),
            Some(1_485_449_953)
        );
    }
}
