//! Which endpoint a request is for: the method and path, with an optional `/vX.Y` API
//! version prefix, mapped to a [`Route`]. Image names may hold slashes and colons
//! (`127.0.0.1:5000/team/app:1`), so paths are split by hand, not by a pattern router.

use http::Method;

use crate::reply::ApiError;

/// The highest Docker Engine API version kiln speaks (Docker 20.10's).
pub const API_VERSION: &str = "1.41";
/// The lowest version accepted in a `/vX.Y` prefix.
pub const MIN_API_VERSION: &str = "1.24";

/// An endpoint of the subset kiln serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Ping,
    Version,
    Info,
    Build,
    /// `POST /kiln/v1/build`: kiln's own build endpoint.
    KilnBuild,
    BuildPrune,
    ImagesList,
    ImageInspect(String),
    ImageTag(String),
    ImageRemove(String),
    ImagePush(String),
    ImageCreate,
    ImageSave(String),
    ImagesSave,
    ImagesLoad,
    SystemDf,
    /// Anything else: a 501 that names it.
    Unsupported(String),
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Splits off a `/v1.41` prefix, refusing versions outside what kiln speaks.
fn strip_version(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (version, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some(asked) = parse_version(version) else {
        // Not a version (e.g. a path that starts with /v): routed as it is.
        return Ok(path);
    };
    let min = parse_version(MIN_API_VERSION).unwrap_or((1, 24));
    // Clients newer than 1.41 that did not negotiate (docker-py with a pinned version)
    // are served with 1.41's semantics, which every later version keeps for these
    // endpoints; only versions older than kiln's minimum are refused.
    if asked < min {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(tail)
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|v| v as u8)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The route for `method path` (the path without its query).
pub(crate) fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let path = strip_version(path)?;
    let path = percent_decode(path);
    let path = path.trim_end_matches('/');
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let unsupported = || Route::Unsupported(format!("{method} {path}"));
    let route = match path {
        "/_ping" if get => Route::Ping,
        "/version" if get => Route::Version,
        "/info" if get => Route::Info,
        "/build" if post => Route::Build,
        crate::wire::BUILD_PATH if post => Route::KilnBuild,
        "/build/prune" if post => Route::BuildPrune,
        "/images/json" if get => Route::ImagesList,
        "/images/create" if post => Route::ImageCreate,
        "/images/get" if get => Route::ImagesSave,
        "/images/load" if post => Route::ImagesLoad,
        "/system/df" if get => Route::SystemDf,
        _ => match path.strip_prefix("/images/") {
            Some(rest) if !rest.is_empty() => image_route(method, rest).unwrap_or_else(unsupported),
            _ => unsupported(),
        },
    };
    Ok(route)
}

fn image_route(method: &Method, rest: &str) -> Option<Route> {
    let with = |suffix: &str| {
        rest.strip_suffix(suffix)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
    };
    if method == Method::DELETE {
        return Some(Route::ImageRemove(rest.to_owned()));
    }
    if method == Method::GET || method == Method::HEAD {
        if let Some(name) = with("/json") {
            return Some(Route::ImageInspect(name));
        }
        if let Some(name) = with("/get") {
            return Some(Route::ImageSave(name));
        }
        return None;
    }
    if method == Method::POST {
        if let Some(name) = with("/tag") {
            return Some(Route::ImageTag(name));
        }
        if let Some(name) = with("/push") {
            return Some(Route::ImagePush(name));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Route) {
        assert_eq!(route(&method, path).unwrap(), expected, "{method} {path}");
    }

    #[test]
    fn routes() {
        check(Method::GET, "/_ping", Route::Ping);
        check(Method::HEAD, "/v1.41/_ping", Route::Ping);
        check(Method::POST, "/v1.41/build", Route::Build);
        check(Method::POST, "/build/prune", Route::BuildPrune);
        check(Method::POST, "/kiln/v1/build", Route::KilnBuild);
        check(Method::GET, "/v1.44/images/json", Route::ImagesList);
        check(
            Method::GET,
            "/images/127.0.0.1:5000/team/app:1/json",
            Route::ImageInspect("127.0.0.1:5000/team/app:1".into()),
        );
        check(
            Method::GET,
            "/images/a%2Fb/json",
            Route::ImageInspect("a/b".into()),
        );
        check(
            Method::POST,
            "/v1.41/images/x/tag",
            Route::ImageTag("x".into()),
        );
        check(
            Method::POST,
            "/images/r:5000/x/push",
            Route::ImagePush("r:5000/x".into()),
        );
        check(
            Method::DELETE,
            "/images/x:latest",
            Route::ImageRemove("x:latest".into()),
        );
        check(Method::GET, "/images/get", Route::ImagesSave);
        check(Method::GET, "/images/x/get", Route::ImageSave("x".into()));
        check(Method::POST, "/images/load", Route::ImagesLoad);
        check(Method::POST, "/images/create", Route::ImageCreate);
        check(
            Method::POST,
            "/v1.41/containers/create",
            Route::Unsupported("POST /containers/create".into()),
        );
        check(
            Method::GET,
            "/build",
            Route::Unsupported("GET /build".into()),
        );
        check(
            Method::GET,
            "/images/x/history",
            Route::Unsupported("GET /images/x/history".into()),
        );
    }

    #[test]
    fn old_versions_are_refused() {
        assert!(route(&Method::GET, "/v1.12/version").is_err());
    }
}
