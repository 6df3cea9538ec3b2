//! `POST /build`: the classic builder's endpoint. The query and the tar body are checked
//! before the 200 goes out (a bad request is a 4xx); then the build runs in its own task
//! and its progress streams back as Docker's JSON messages. A client that goes away
//! cancels its build.

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use kiln_solver::cancel::Cancel;
use kiln_solver::progress::{EventKind, Progress};
use serde_json::json;

use super::State;
use crate::build_params;
use crate::engine_calls::{BuildContext, CallError};
use crate::reply::{ApiError, Body, JsonStream, channel};

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the build context is larger than the server's limit of {limit} bytes: leave big files out with .dockerignore, or raise kiln serve --max-context-size"
        ),
    )
}

pub(super) async fn build(
    state: &Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let params = build_params::parse(request.uri().query().unwrap_or(""))?;
    let limit = state.max_body;
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit
    {
        return Err(too_large(limit));
    }
    let credentials = crate::credentials::from_config_header(
        request
            .headers()
            .get("X-Registry-Config")
            .and_then(|h| h.to_str().ok()),
    )?;
    let context = match &params.remote {
        Some(url) => BuildContext::Git(url.clone()),
        None => {
            let (reader, body_state) = crate::body::reader(request.into_body(), limit);
            let backend = state.backend.clone();
            let unpacked = tokio::task::spawn_blocking(move || {
                backend.context_from_stream(reader, limit, true)
            })
            .await
            .map_err(|e| ApiError::internal(format!("the context task failed: {e}")))?;
            match unpacked {
                Ok(context) => BuildContext::Temp(context),
                Err(_) if body_state.too_large() => return Err(too_large(limit)),
                Err(e) if body_state.broken() => {
                    return Err(ApiError::bad_request(format!(
                        "the build context upload ended early: {}",
                        e.message()
                    )));
                }
                Err(CallError::Failed(message)) => return Err(ApiError::internal(message)),
                Err(e) => return Err(ApiError::bad_request(e.message().to_owned())),
            }
        }
    };
    let (response, sender) = channel("application/json");
    let stream = JsonStream::new(sender);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let cancel = Cancel::new();
        let _running = state.builds.start(cancel.clone());
        let (progress, mut events) = Progress::channel();
        let quiet = params.quiet;
        let forward = {
            let stream = stream.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if quiet {
                        continue;
                    }
                    let text = match event.kind {
                        EventKind::Started { label } => format!("#{} {label}\n", event.vertex),
                        EventKind::Cached { label, .. } => {
                            format!("#{} {label}\n#{} CACHED\n", event.vertex, event.vertex)
                        }
                        EventKind::Log { line, .. } => format!("{line}\n"),
                        EventKind::Explain { reasons } => reasons
                            .iter()
                            .map(|r| format!("#{} because: {r}\n", event.vertex))
                            .collect(),
                        EventKind::Done { seconds } => {
                            format!("#{} DONE {seconds:.1}s\n", event.vertex)
                        }
                        EventKind::Error { message } => {
                            format!("#{} ERROR: {message}\n", event.vertex)
                        }
                    };
                    if !stream.stream(text).await {
                        break;
                    }
                }
            })
        };
        // The client going away (the response body dropped) cancels the build.
        let watch = crate::reply::cancel_on_close(stream.sender(), &cancel);
        let outcome = state
            .backend
            .build(&params, context, credentials, progress, cancel)
            .await;
        let _ = forward.await;
        watch.abort();
        match outcome {
            Ok(built) => {
                for warning in &built.warnings {
                    if !quiet {
                        stream.stream(format!("warning: {warning}\n")).await;
                    }
                }
                stream.aux(json!({ "ID": built.id.to_string() })).await;
                if quiet {
                    stream.stream(format!("{}\n", built.id)).await;
                } else {
                    stream
                        .stream(format!("Successfully built {}\n", built.id.short()))
                        .await;
                    for tag in &built.tags {
                        stream.stream(format!("Successfully tagged {tag}\n")).await;
                    }
                }
            }
            Err(failed) => {
                stream.error(failed.rendered.trim_end().to_owned()).await;
            }
        }
    });
    Ok(response)
}
