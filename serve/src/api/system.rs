//! `/_ping`, `/version`, `/info`, `/system/df` and `/build/prune`.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::{State, only_params, param, query_pairs};
use crate::reply::{ApiError, Body, full, json};
use crate::routes::{API_VERSION, MIN_API_VERSION};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `Builder-Version: 1` makes the docker CLI choose the classic build API (`POST /build`
/// with a tar body) by itself, without `DOCKER_BUILDKIT=0`.
pub(super) fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("OSType", HeaderValue::from_static("linux"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn go_arch() -> String {
    kiln_exporter::registry::Platform::host().architecture
}

pub(super) fn version() -> Response<Body> {
    let kernel = read_trimmed("/proc/sys/kernel/osrelease");
    json(&serde_json::json!({
        "Platform": { "Name": format!("kiln {VERSION}") },
        "Components": [{
            "Name": "Engine",
            "Version": VERSION,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": go_arch(),
                "KernelVersion": kernel,
                "Experimental": "false",
            },
        }],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel,
        "Experimental": false,
        "BuildTime": "",
    }))
}

fn mem_total() -> u64 {
    read_trimmed("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub(super) fn info(state: &State) -> Result<Response<Body>, ApiError> {
    let images = state.backend.images()?;
    let mut ids: Vec<_> = images.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids.dedup();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(json(&serde_json::json!({
        "ID": "",
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": ids.len(),
        "Driver": state.backend.snapshotter_name(),
        "DriverStatus": [],
        "Plugins": { "Volume": [], "Network": [], "Authorization": null, "Log": [] },
        "MemoryLimit": false,
        "SwapLimit": false,
        "OomKillDisable": false,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": "",
        "LoggingDriver": "",
        "CgroupDriver": "",
        "NEventsListener": 0,
        "KernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
        "OperatingSystem": format!("kiln {VERSION} (builds only)"),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": [] },
        "NCPU": cpus,
        "MemTotal": mem_total(),
        "DockerRootDir": state.backend.root().display().to_string(),
        "Name": read_trimmed("/proc/sys/kernel/hostname"),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": { "LocalNodeState": "inactive", "ControlAvailable": false },
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "SecurityOptions": [],
        "Warnings": [
            "kiln serves the Docker API's build and image endpoints only: containers, volumes and networks are not supported",
        ],
        "KilnRunningBuilds": state.builds.running(),
    })))
}

pub(super) fn df(state: &State) -> Result<Response<Body>, ApiError> {
    let usage = state.backend.disk_usage();
    let summaries = super::images::summaries(state)?;
    let cache = |id: &str, description: &str, size: u64| {
        serde_json::json!({
            "ID": id,
            "Parent": "",
            "Parents": [],
            "Type": "regular",
            "Description": description,
            "InUse": false,
            "Shared": false,
            "Size": size,
            "CreatedAt": "1970-01-01T00:00:00Z",
            "LastUsedAt": null,
            "UsageCount": 0,
        })
    };
    Ok(json(&serde_json::json!({
        "LayersSize": usage.blobs,
        "Images": summaries,
        "Containers": [],
        "Volumes": [],
        "BuildCache": [
            cache("kiln-snapshots", "kiln: unpacked layers and step results (snapshots)", usage.snapshots),
            cache("kiln-cache-index", "kiln: the cache index", usage.cache_index),
            cache("kiln-cache-mounts", "kiln: RUN --mount=type=cache directories", usage.cache_mounts),
        ],
    })))
}

pub(super) async fn prune(
    state: &Arc<State>,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(request);
    only_params(
        "POST /build/prune",
        &pairs,
        &["all", "filters", "keep-storage"],
    )?;
    if let Some(filters) = param(&pairs, "filters")
        && !matches!(filters.trim(), "" | "{}" | "null")
    {
        return Err(ApiError::bad_request(format!(
            "POST /build/prune: filters={filters}: kiln's prune takes no filters; prune all (all=1) or what no image uses"
        )));
    }
    if let Some(keep) = param(&pairs, "keep-storage")
        && !matches!(keep.trim(), "" | "0")
    {
        return Err(ApiError::bad_request(format!(
            "POST /build/prune: keep-storage={keep}: not supported by kiln"
        )));
    }
    let all = param(&pairs, "all").is_some_and(crate::build_params::bool_value);
    let backend = state.backend.clone();
    let reclaimed = tokio::task::spawn_blocking(move || backend.prune(all))
        .await
        .map_err(|e| ApiError::internal(format!("the prune task failed: {e}")))??;
    let mut response = json(&serde_json::json!({
        "CachesDeleted": [],
        "SpaceReclaimed": reclaimed,
    }));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
