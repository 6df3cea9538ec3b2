//! `POST /kiln/v1/build`: kiln's own build endpoint (see [`crate::wire`]). The spec line
//! and the context are read and checked before the 200 goes out; then the build runs in
//! its own task, its events stream back as NDJSON, and a client that goes away cancels
//! it (unless another build waits on the same step: the engine shares running steps).

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use kiln_solver::cancel::Cancel;
use kiln_solver::progress::Progress;
use tokio::sync::mpsc;

use super::State;
use crate::engine_calls::{CallError, Sink, SpecRequest};
use crate::reply::{ApiError, Body, channel};
use crate::wire::{self, BuildSpec, MAX_SPEC_SIZE, Message};

type Chunks = mpsc::Sender<Result<Bytes, std::io::Error>>;

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the build request is larger than the server's limit of {limit} bytes: leave big files out with .dockerignore, or raise kiln serve --max-context-size"
        ),
    )
}

fn line(message: &Message) -> Bytes {
    let mut bytes = serde_json::to_vec(message).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// Reads the spec line: at most [`MAX_SPEC_SIZE`] bytes up to the first newline.
fn read_spec(input: &mut impl BufRead) -> Result<BuildSpec, ApiError> {
    let mut first = Vec::new();
    input
        .take(MAX_SPEC_SIZE as u64 + 1)
        .read_until(b'\n', &mut first)
        .map_err(|e| ApiError::bad_request(format!("the build request ended early: {e}")))?;
    if first.last() != Some(&b'\n') {
        return Err(ApiError::bad_request(if first.len() > MAX_SPEC_SIZE {
            format!("the build spec (the body's first line) is larger than {MAX_SPEC_SIZE} bytes")
        } else {
            "the body must start with the build spec as one line of JSON, then a newline and the context tar".to_owned()
        }));
    }
    serde_json::from_slice(&first)
        .map_err(|e| ApiError::bad_request(format!("the build spec is not valid: {e}")))
}

/// The `dest=-` output's bytes, sent as [`Message::Output`] lines of up to 48 KiB.
struct OutputLines {
    chunks: Chunks,
    pending: Vec<u8>,
}

const OUTPUT_CHUNK: usize = 48 << 10;

impl OutputLines {
    fn send_pending(&mut self) -> std::io::Result<()> {
        use base64::Engine as _;
        if self.pending.is_empty() {
            return Ok(());
        }
        let text = base64::engine::general_purpose::STANDARD.encode(&self.pending);
        self.pending.clear();
        // Called from the engine's blocking export thread, never from an async task.
        self.chunks
            .blocking_send(Ok(line(&Message::Output(text))))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })
    }
}

impl Write for OutputLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = OUTPUT_CHUNK - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == OUTPUT_CHUNK {
            self.send_pending()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send_pending()
    }
}

pub(super) async fn build(
    state: &Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if let Some(query) = request.uri().query().filter(|q| !q.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "POST {}: takes no query parameters (got {query:?}); the spec is the body's first line",
            wire::BUILD_PATH
        )));
    }
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
    let (response, chunks) = channel("application/x-ndjson");
    let (reader, body_state) = crate::body::reader(request.into_body(), limit);
    let backend = state.backend.clone();
    let output_chunks = chunks.clone();
    let granted = state.insecure_entitlements.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let mut input = BufReader::new(reader);
        let spec = read_spec(&mut input)?;
        // `network.host` reaches the server's own loopback services: the server grants it.
        if let Some(name) = spec
            .allow
            .iter()
            .find(|a| a.as_str() == "network.host" && !granted.contains(a))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "kiln serve does not grant {name}: start it with --allow-insecure-entitlement {name}, or build without it"
                ),
            ));
        }
        let context = match spec.context_key.as_deref() {
            Some(key) => backend.kept_context(key, input, limit),
            None => backend.context_from_stream(input, limit, false),
        }
        .map_err(|e| match e {
            CallError::Failed(message) => ApiError::internal(message),
            other => ApiError::bad_request(other.message().to_owned()),
        })?;
        SpecRequest::new(spec, context, move || {
            Sink::new(Box::new(OutputLines {
                chunks: output_chunks,
                pending: Vec::new(),
            }))
        })
        .map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the request task failed: {e}")))?;
    let spec_request = match prepared {
        Ok(request) => request,
        Err(_) if body_state.too_large() => return Err(too_large(limit)),
        Err(e) if body_state.broken() => {
            return Err(ApiError::bad_request(format!(
                "the build context upload ended early: {}",
                e.message
            )));
        }
        Err(e) => return Err(e),
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let cancel = Cancel::new();
        let _running = state.builds.start(cancel.clone());
        let (progress, mut events) = Progress::channel();
        let forward = {
            let chunks = chunks.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if chunks.send(Ok(line(&Message::Event(event)))).await.is_err() {
                        break;
                    }
                }
            })
        };
        // The client going away (the response body dropped) cancels the build.
        let watch = crate::reply::cancel_on_close(&chunks, &cancel);
        let outcome = state
            .backend
            .build_spec(spec_request, progress, cancel)
            .await;
        let _ = forward.await;
        watch.abort();
        let last = match outcome {
            Ok(result) => Message::Result(result),
            Err(failure) => Message::Error(failure),
        };
        let _ = chunks.send(Ok(line(&last))).await;
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_the_first_line() {
        let mut input = &b"{\"tags\":[\"a\"]}\nTARBYTES"[..];
        let spec = read_spec(&mut input).unwrap();
        assert_eq!(spec.tags, ["a"]);
        assert_eq!(input, b"TARBYTES");
    }

    #[test]
    fn bad_specs_are_400s() {
        for body in [&b"{\"tags\":[]}"[..], b"not json\n", b"{\"tagz\":[]}\n"] {
            let e = read_spec(&mut &body[..]).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        }
    }
}
