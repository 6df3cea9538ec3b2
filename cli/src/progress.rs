//! Renders the solver's progress events. `plain` is BuildKit's line format, stable for CI
//! logs and golden tests; `rawjson` is one JSON event per line; `quiet` prints nothing.

use std::collections::HashMap;
use std::io::Write;

use kiln_solver::progress::{Event, EventKind};
use tokio::sync::mpsc::UnboundedReceiver;

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `#N [1/3] RUN ...` lines.
    Plain,
    /// One JSON object per event.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    pub(crate) fn parse(text: &str) -> Option<Mode> {
        match text {
            // The live view is not written yet: a terminal gets the plain lines too.
            "auto" | "tty" | "plain" => Some(Mode::Plain),
            "rawjson" => Some(Mode::RawJson),
            "quiet" => Some(Mode::Quiet),
            _ => None,
        }
    }
}

/// What the build did, for the closing summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) ran: usize,
    pub(crate) cached: usize,
}

/// Prints events to stderr until the channel closes; returns the tally.
pub(crate) async fn render(mode: Mode, mut events: UnboundedReceiver<Event>) -> Tally {
    let mut tally = Tally::default();
    let mut started_at: HashMap<u32, u128> = HashMap::new();
    let stderr = std::io::stderr();
    while let Some(event) = events.recv().await {
        match &event.kind {
            EventKind::Started { label } => {
                started_at.insert(event.vertex, event.at_ns);
                if !label.starts_with("[internal]") {
                    tally.ran += 1;
                }
            }
            EventKind::Cached { label } if !label.starts_with("[internal]") => tally.cached += 1,
            _ => {}
        }
        let text = match mode {
            Mode::Quiet => continue,
            Mode::RawJson => match serde_json::to_string(&event) {
                Ok(line) => format!("{line}\n"),
                Err(_) => continue,
            },
            Mode::Plain => plain_line(&event, started_at.get(&event.vertex).copied()),
        };
        // A closed stderr must not stop the build.
        let _ = stderr.lock().write_all(text.as_bytes());
    }
    tally
}

fn plain_line(event: &Event, started: Option<u128>) -> String {
    let n = event.vertex;
    match &event.kind {
        EventKind::Started { label } => format!("\n#{n} {label}\n"),
        EventKind::Cached { label } => format!("\n#{n} {label}\n#{n} CACHED\n"),
        EventKind::Log { line, .. } => {
            let since = started
                .map(|s| event.at_ns.saturating_sub(s) as f64 / 1e9)
                .unwrap_or(0.0);
            format!("#{n} {since:.3} {line}\n")
        }
        EventKind::Done { seconds } => format!("#{n} DONE {seconds:.1}s\n"),
        EventKind::Error { message } => format!("#{n} ERROR: {message}\n"),
    }
}
