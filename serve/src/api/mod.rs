//! The Docker Engine API subset: one function per endpoint, dispatched by [`Route`].
//! Every error is Docker's `{"message": ...}` with a 4xx for what the client got wrong.

mod build;
mod images;
mod kiln;
mod system;

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::builds::Builds;
use crate::engine_calls::{Backend, CallError};
use crate::reply::{ApiError, Body};
use crate::routes::{self, API_VERSION, Route};

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) backend: Backend,
    pub(crate) builds: Builds,
    /// `--max-context-size`: the largest `/build` or `/images/load` body, in bytes.
    pub(crate) max_body: u64,
    /// What `--allow-insecure-entitlement` lets a client ask for.
    pub(crate) insecure_entitlements: Vec<String>,
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        let status = match &e {
            CallError::NotFound(_) => StatusCode::NOT_FOUND,
            CallError::Invalid(_) => StatusCode::BAD_REQUEST,
            CallError::Busy(_) => StatusCode::CONFLICT,
            CallError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.message().to_owned())
    }
}

/// The query string's pairs, decoded.
pub(crate) fn query_pairs(request: &Request<Incoming>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Refuses query parameters outside `known`: nothing is accepted and ignored.
pub(crate) fn only_params(
    what: &str,
    pairs: &[(String, String)],
    known: &[&str],
) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        Some((name, _)) => Err(ApiError::bad_request(format!(
            "{what}: unknown parameter {name:?}; kiln accepts {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))),
        None => Ok(()),
    }
}

pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Answers one request; never fails (errors are answers).
pub(crate) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut response = match routes::route(request.method(), request.uri().path()) {
        Ok(route) => match dispatch(&state, route, request).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert("API-Version", HeaderValue::from_static(API_VERSION));
    headers.insert(
        http::header::SERVER,
        HeaderValue::from_static(concat!("kiln/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    Ok(response)
}

async fn dispatch(
    state: &Arc<State>,
    route: Route,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match route {
        Route::Ping => Ok(system::ping(request.method())),
        Route::Version => Ok(system::version()),
        Route::Info => system::info(state),
        Route::SystemDf => system::df(state),
        Route::BuildPrune => system::prune(state, &request).await,
        Route::Build => build::build(state, request).await,
        Route::KilnBuild => kiln::build(state, request).await,
        Route::ImagesList => images::list(state, &request),
        Route::ImageInspect(name) => images::inspect(state, &name),
        Route::ImageTag(name) => images::tag(state, &name, &request),
        Route::ImageRemove(name) => images::remove(state, &name, &request),
        Route::ImagePush(name) => images::push(state, &name, &request).await,
        Route::ImageCreate => images::pull(state, &request).await,
        Route::ImageSave(name) => images::save(state, vec![name], &request),
        Route::ImagesSave => {
            let pairs = query_pairs(&request);
            only_params("GET /images/get", &pairs, &["names"])?;
            let names = pairs
                .into_iter()
                .filter(|(k, _)| k == "names")
                .map(|(_, v)| v)
                .collect();
            images::save(state, names, &request)
        }
        Route::ImagesLoad => images::load(state, request).await,
        Route::Unsupported(what) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("kiln builds images and does not run containers: {what} is not supported"),
        )),
    }
}
