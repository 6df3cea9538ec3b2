//! The client side of kiln's own API, for `kiln --host HOST build`: one `POST
//! /kiln/v1/build` carrying a [`BuildSpec`] and the context tar, its answer read back as
//! [`Message`]s. Plain HTTP/1.1 over a UNIX socket or a loopback TCP port (hyper's
//! client, the same stack the server runs on).
//!
//! The context is written by a caller-given function on a blocking thread, straight
//! into the request body: nothing is staged on disk or held whole in memory, on either
//! side of the connection. Dropping the future drops the connection, which cancels the
//! build on the server.

use std::io::Write;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::Host;
use crate::reply::{ChannelWriter, body_channel};
use crate::wire::{BUILD_PATH, BuildSpec, Message};

/// Why a remote build could not be run or followed (a failed build is a
/// [`Message::Error`], not this).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the host.
    #[error("cannot connect to kiln serve at {host}: {source}; is `kiln serve` running there?")]
    Connect {
        /// The `--host`.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused the request (a 4xx or 5xx with its message).
    #[error("the server refused the build ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The connection failed mid-way.
    #[error("the connection to kiln serve failed: {0}")]
    Transport(String),
    /// The server said something that is not kiln's API.
    #[error("kiln serve answered something unexpected: {0}")]
    Protocol(String),
    /// Writing the context failed on this side.
    #[error("sending the build context: {0}")]
    Context(std::io::Error),
}

/// Runs one build on the server at `host`: sends `spec`, then what `context` writes (a
/// tar of the context), and hands every message of the answer to `on_message`, the
/// last being [`Message::Result`] or [`Message::Error`].
pub async fn build(
    host: &Host,
    spec: &BuildSpec,
    context: impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static,
    mut on_message: impl FnMut(Message) -> std::io::Result<()>,
) -> Result<(), ClientError> {
    let mut sender = connect(host).await?;
    let (body, chunks) = body_channel();
    let mut first = serde_json::to_vec(spec).map_err(|e| ClientError::Protocol(e.to_string()))?;
    first.push(b'\n');
    chunks
        .send(Ok(Bytes::from(first)))
        .await
        .map_err(|_| ClientError::Transport("the request body closed".to_owned()))?;
    let writer = tokio::task::spawn_blocking(move || {
        let errors = chunks.clone();
        // Big chunks: a tar writer writes 512-byte headers one by one, and every chunk is
        // a message on the channel and a frame of the body.
        let mut out = std::io::BufWriter::with_capacity(256 << 10, ChannelWriter(chunks));
        let written = context(&mut out).and_then(|()| out.flush());
        if let Err(e) = &written {
            // End the body with an error: the server must see a broken upload, not a
            // short context.
            let _ = errors.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        written
    });
    let request = Request::post(BUILD_PATH)
        .header(header::HOST, "kiln")
        .header(header::CONTENT_TYPE, "application/x-kiln-build")
        .body(body)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        return Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    // The server answers only after it read the whole context, so the writer is done.
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ClientError::Context(e)),
        Err(e) => return Err(ClientError::Context(std::io::Error::other(e))),
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut finished = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Transport(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let message: Message = serde_json::from_slice(&line).map_err(|e| {
                ClientError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&line)))
            })?;
            finished |= matches!(message, Message::Result(_) | Message::Error(_));
            on_message(message).map_err(ClientError::Context)?;
        }
    }
    if !finished {
        return Err(ClientError::Transport(
            "the server closed the answer before the build ended".to_owned(),
        ));
    }
    Ok(())
}

type Sender = hyper::client::conn::http1::SendRequest<crate::reply::Body>;

async fn connect(host: &Host) -> Result<Sender, ClientError> {
    let failed = |source| ClientError::Connect {
        host: host.to_string(),
        source,
    };
    match host {
        Host::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(failed)?;
            handshake(TokioIo::new(stream)).await
        }
        Host::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await.map_err(failed)?;
            handshake(TokioIo::new(stream)).await
        }
    }
}

async fn handshake<T>(io: T) -> Result<Sender, ClientError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the answer is read or the caller drops the sender.
        let _ = connection.await;
    });
    Ok(sender)
}
