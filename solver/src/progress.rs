//! Progress events: what the solver tells the front end while a build runs.
//!
//! The solver only sends events; rendering them (plain lines, a live terminal view, JSON)
//! is the cli's job. Every event carries the time it happened, so a renderer — or a test —
//! can tell which steps overlapped.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::graph::VertexId;

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// What happened to a vertex.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EventKind {
    /// The vertex started running.
    Started {
        /// The step as the user wrote it, e.g. `[build 2/4] RUN make`.
        label: String,
    },
    /// One line of a running step's output (without its newline).
    Log {
        /// Which stream.
        stream: Stream,
        /// The line; invalid UTF-8 is replaced.
        line: String,
    },
    /// The vertex's result came from the cache.
    Cached {
        /// The step as the user wrote it.
        label: String,
        /// The `--cache-from` it came from; none: the local store.
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// Why the vertex runs (`--explain`): one reason a line, in the user's terms.
    Explain {
        /// The reasons.
        reasons: Vec<String>,
    },
    /// The vertex finished.
    Done {
        /// How long it ran, in seconds.
        seconds: f64,
    },
    /// The vertex failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// One progress event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The vertex, numbered from 1 in the order the build first mentions it.
    pub vertex: u32,
    /// When it happened, in nanoseconds since the Unix epoch.
    pub at_ns: u128,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The sending side, cheap to clone; events sent after the receiver is gone are dropped.
#[derive(Clone, Debug)]
pub struct Progress {
    sender: Option<mpsc::UnboundedSender<Event>>,
}

impl Progress {
    /// A sender and the receiver the front end renders from.
    pub fn channel() -> (Progress, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Progress {
                sender: Some(sender),
            },
            receiver,
        )
    }

    /// A sender that drops everything (for tests and quiet callers).
    pub fn discard() -> Progress {
        Progress { sender: None }
    }

    /// Sends one event for `vertex`, stamped now.
    pub fn send(&self, vertex: VertexId, kind: EventKind) {
        if let Some(sender) = &self.sender {
            let at_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            // A closed receiver means nobody is watching: not an error for the build.
            let _ = sender.send(Event {
                vertex: vertex.index() as u32 + 1,
                at_ns,
                kind,
            });
        }
    }
}
