//! A request body read by blocking code (tar extraction, `load`) as a `std::io::Read`,
//! streamed chunk by chunk (never held whole), with a size limit.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// Why the body ended early, as the handler needs to tell it.
#[derive(Clone, Debug, Default)]
pub(crate) struct BodyState {
    too_large: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
}

impl BodyState {
    /// The body passed the limit (a 413).
    pub(crate) fn too_large(&self) -> bool {
        self.too_large.load(Ordering::SeqCst)
    }
    /// The connection failed or closed before the body ended (a truncated upload).
    pub(crate) fn broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }
}

/// The blocking side: reads what the pump task forwards.
pub(crate) struct BodyReader {
    receiver: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.current.has_remaining() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

/// Starts a task that pulls `body` and forwards it to the returned reader, failing the
/// read once more than `limit` bytes arrived.
pub(crate) fn reader(body: Incoming, limit: u64) -> (BodyReader, BodyState) {
    let (sender, receiver) = mpsc::channel(8);
    let state = BodyState::default();
    let pump_state = state.clone();
    tokio::spawn(async move {
        let mut body = body;
        let mut seen: u64 = 0;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    pump_state.broken.store(true, Ordering::SeqCst);
                    let _ = sender
                        .send(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the request body ended early: {e}"),
                        )))
                        .await;
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    seen += data.len() as u64;
                    if seen > limit {
                        pump_state.too_large.store(true, Ordering::SeqCst);
                        let _ = sender
                            .send(Err(std::io::Error::other(format!(
                                "the request body is larger than the server's limit of {limit} bytes"
                            ))))
                            .await;
                        break;
                    }
                    if sender.send(Ok(data)).await.is_err() {
                        // The reader stopped (it found the input bad): stop reading.
                        break;
                    }
                }
            }
        }
    });
    (
        BodyReader {
            receiver,
            current: Bytes::new(),
        },
        state,
    )
}
