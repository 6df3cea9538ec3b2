//! Answers: JSON documents, Docker's `{"message": ...}` errors, and streamed bodies (the
//! JSON message stream of build/push/pull/load, and save's tar) fed from a channel.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde::Serialize;
use tokio::sync::mpsc;

/// The body of every answer.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// An error answer: a status and Docker's `{"message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        json_status(self.status, &serde_json::json!({ "message": self.message }))
    }
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub(crate) fn json_status<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn json<T: Serialize>(value: &T) -> Response<Body> {
    json_status(StatusCode::OK, value)
}

/// A body whose chunks arrive on a channel; dropping it (the client went away) closes
/// the channel, which the producer sees.
pub(crate) struct ChannelBody {
    receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// Bytes written by blocking code (an archive writer, a context tar), sent into a body
/// channel; the write fails once the other side has gone.
pub(crate) struct ChannelWriter(pub(crate) mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the other side went away")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A body fed from a channel (a few chunks in flight), and the sender that feeds it.
pub(crate) fn body_channel() -> (Body, mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let (sender, receiver) = mpsc::channel(16);
    (ChannelBody { receiver }.boxed(), sender)
}

/// Cancels `cancel` when the answer `sender` feeds is dropped (the client went away);
/// abort the returned task once the build has ended.
pub(crate) fn cancel_on_close(
    sender: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    cancel: &kiln_solver::cancel::Cancel,
) -> tokio::task::JoinHandle<()> {
    let (sender, cancel) = (sender.clone(), cancel.clone());
    tokio::spawn(async move {
        sender.closed().await;
        cancel.cancel();
    })
}

/// A streamed answer: the response to send now, and the sender its producer writes to.
pub(crate) fn channel(
    content_type: &'static str,
) -> (Response<Body>, mpsc::Sender<Result<Bytes, std::io::Error>>) {
    // A few chunks in flight: a slow client slows the producer instead of filling memory.
    let (body, sender) = body_channel();
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (response, sender)
}

/// The JSON message stream docker clients read (`{"stream": ...}`, `{"status": ...}`,
/// `{"aux": ...}`, `{"error": ..., "errorDetail": {"message": ...}}`), one object a line.
#[derive(Clone)]
pub(crate) struct JsonStream {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl JsonStream {
    pub(crate) fn new(sender: mpsc::Sender<Result<Bytes, std::io::Error>>) -> JsonStream {
        JsonStream { sender }
    }

    /// Sends one message; false when the client has gone.
    pub(crate) async fn send(&self, value: serde_json::Value) -> bool {
        let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
        bytes.push(b'\n');
        self.sender.send(Ok(Bytes::from(bytes))).await.is_ok()
    }

    pub(crate) async fn stream(&self, text: impl Into<String>) -> bool {
        self.send(serde_json::json!({ "stream": text.into() }))
            .await
    }

    pub(crate) async fn status(&self, text: impl Into<String>) -> bool {
        self.send(serde_json::json!({ "status": text.into() }))
            .await
    }

    pub(crate) async fn aux(&self, value: serde_json::Value) -> bool {
        self.send(serde_json::json!({ "aux": value })).await
    }

    pub(crate) async fn error(&self, message: impl Into<String>) -> bool {
        let message = message.into();
        self.send(serde_json::json!({
            "error": message,
            "errorDetail": { "message": message },
        }))
        .await
    }

    /// The channel the answer is fed from.
    pub(crate) fn sender(&self) -> &mpsc::Sender<Result<Bytes, std::io::Error>> {
        &self.sender
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_lines_are_docker_shaped() {
        let (response, sender) = channel("application/json");
        let stream = JsonStream::new(sender);
        assert!(stream.error("boom").await);
        drop(stream);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": "boom", "errorDetail": {"message": "boom"}})
        );
    }
}
