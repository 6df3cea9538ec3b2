//! Renders the solver's progress events: `tty` is a live view (one line per running
//! step with its elapsed time and its last output lines), `plain` is BuildKit's line
//! format, stable for CI logs and golden tests, `rawjson` is one JSON event per line,
//! `quiet` prints nothing. Whatever is shown, the whole log of every step goes to a file
//! in the store (`kiln logs` prints the last build's), so no output is ever clipped away.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_solver::progress::{Event, EventKind};
use tokio::sync::mpsc::UnboundedReceiver;

/// How many output lines of a running step the live view shows.
const LIVE_TAIL: usize = 4;
/// How many build logs the store keeps.
const KEPT_LOGS: usize = 20;

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The live terminal view.
    Tty,
    /// `#N [1/3] RUN ...` lines.
    Plain,
    /// One JSON object per event.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Parses `--progress`; `auto` is `tty` on a terminal and `plain` elsewhere.
    pub(crate) fn parse(text: &str) -> Option<Mode> {
        match text {
            "auto" if std::io::stderr().is_terminal() => Some(Mode::Tty),
            "auto" | "plain" => Some(Mode::Plain),
            "tty" => Some(Mode::Tty),
            "rawjson" => Some(Mode::RawJson),
            "quiet" => Some(Mode::Quiet),
            _ => None,
        }
    }
}

/// While a debug shell owns the terminal (`--on-error=shell`), progress is held back:
/// the live view is hidden and events wait, to be shown once the shell exits.
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The live view's bars, so a pause can hide them.
static LIVE_BARS: std::sync::Mutex<Option<MultiProgress>> = std::sync::Mutex::new(None);

/// Holds progress back until dropped.
pub(crate) struct Paused;

/// Stops drawing progress (the live view cleared and hidden) until the guard drops.
pub(crate) fn pause() -> Paused {
    PAUSED.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(bars) = LIVE_BARS.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = bars.clear();
        bars.set_draw_target(ProgressDrawTarget::hidden());
    }
    Paused
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(bars) = LIVE_BARS.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bars.set_draw_target(ProgressDrawTarget::stderr());
        }
        PAUSED.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What the build did, for the closing summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) ran: usize,
    pub(crate) cached: usize,
}

/// Colours, only on a terminal and never with `NO_COLOR`.
#[derive(Clone, Copy)]
pub(crate) struct Paint(bool);

impl Paint {
    pub(crate) fn for_stderr() -> Paint {
        Paint(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }

    pub(crate) fn blue(self, text: &str) -> String {
        self.wrap("34", text)
    }

    pub(crate) fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }

    pub(crate) fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
}

/// Where the full log of this build goes: `ROOT/logs/<time>-<pid>.log`, named in
/// `ROOT/logs/last` when the build ends.
pub(crate) struct BuildLog {
    path: PathBuf,
    dir: PathBuf,
    out: Option<BufWriter<File>>,
}

impl BuildLog {
    /// A new log in `dir` (the store's `logs_dir`).
    pub(crate) fn create(dir: &Path) -> BuildLog {
        let dir = dir.to_owned();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let path = dir.join(format!("{stamp}-{}.log", std::process::id()));
        // A log that cannot be written must not fail the build: it is a convenience.
        // Step output can hold tokens: the logs are root's (or the owner's) alone.
        let out = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
            })
            .ok()
            .map(BufWriter::new);
        BuildLog { path, dir, out }
    }

    fn write(&mut self, line: &str) {
        if let Some(out) = &mut self.out {
            let _ = out.write_all(line.as_bytes());
        }
    }

    /// Appends a closing line (the result or the error) and makes this the last log.
    pub(crate) fn finish(mut self, closing: &str) {
        self.write(closing);
        if let Some(mut out) = self.out.take() {
            let _ = out.flush();
        }
        let last = self.dir.join("last");
        let tmp = self.dir.join(format!(".last-{}", std::process::id()));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name
            && std::fs::write(&tmp, name).is_ok()
        {
            let _ = std::fs::rename(&tmp, &last);
        }
        // Keep the newest few; names start with the time, so they sort by age.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let mut logs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            logs.sort();
            let excess = logs.len().saturating_sub(KEPT_LOGS);
            for old in &logs[..excess] {
                let _ = std::fs::remove_file(old);
            }
        }
    }
}

/// The last build's log file, if there is one.
pub(crate) fn last_log(dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(dir.join("last")).ok()?;
    Some(dir.join(name.trim()))
}

/// Prints events until the channel closes and writes the full log; returns the tally.
pub(crate) async fn render(
    mode: Mode,
    mut events: UnboundedReceiver<Event>,
    mut log: BuildLog,
) -> (Tally, BuildLog) {
    let mut tally = Tally::default();
    let mut started_at: HashMap<u32, u128> = HashMap::new();
    let mut live = (mode == Mode::Tty).then(Live::new);
    let mut held: Vec<Event> = Vec::new();
    loop {
        let event = match events.recv().await {
            Some(event) if PAUSED.load(std::sync::atomic::Ordering::SeqCst) => {
                held.push(event);
                continue;
            }
            Some(event) => event,
            None if !held.is_empty() => {
                for event in std::mem::take(&mut held) {
                    show(
                        mode,
                        &event,
                        &mut tally,
                        &mut started_at,
                        &mut live,
                        &mut log,
                    );
                }
                break;
            }
            None => break,
        };
        for event in std::mem::take(&mut held).into_iter().chain([event]) {
            show(
                mode,
                &event,
                &mut tally,
                &mut started_at,
                &mut live,
                &mut log,
            );
        }
    }
    if let Some(live) = live {
        live.close();
    }
    (tally, log)
}

fn show(
    mode: Mode,
    event: &Event,
    tally: &mut Tally,
    started_at: &mut HashMap<u32, u128>,
    live: &mut Option<Live>,
    log: &mut BuildLog,
) {
    let stderr = std::io::stderr();
    {
        match &event.kind {
            EventKind::Started { label } => {
                started_at.insert(event.vertex, event.at_ns);
                if !label.starts_with("[internal]") {
                    tally.ran += 1;
                }
            }
            EventKind::Cached { label, .. } if !label.starts_with("[internal]") => {
                tally.cached += 1
            }
            _ => {}
        }
        let plain = plain_line(event, started_at.get(&event.vertex).copied());
        log.write(&plain);
        match mode {
            Mode::Quiet => {}
            Mode::RawJson => {
                if let Ok(line) = serde_json::to_string(event) {
                    // A closed stderr must not stop the build.
                    let _ = writeln!(stderr.lock(), "{line}");
                }
            }
            Mode::Plain => {
                let _ = stderr.lock().write_all(plain.as_bytes());
            }
            Mode::Tty => {
                if let Some(live) = live {
                    live.show(event);
                }
            }
        }
    }
}

fn plain_line(event: &Event, started: Option<u128>) -> String {
    let n = event.vertex;
    match &event.kind {
        EventKind::Started { label } => format!("\n#{n} {label}\n"),
        EventKind::Cached { label, source } => format!("\n#{n} {label}\n#{n} {}\n", cached(source)),
        EventKind::Log { line, .. } => {
            let since = started
                .map(|s| event.at_ns.saturating_sub(s) as f64 / 1e9)
                .unwrap_or(0.0);
            format!("#{n} {since:.3} {line}\n")
        }
        EventKind::Explain { reasons } => reasons
            .iter()
            .map(|r| format!("#{n} because: {r}\n"))
            .collect(),
        EventKind::Done { seconds } => format!("#{n} DONE {seconds:.1}s\n"),
        EventKind::Error { message } => format!("#{n} ERROR: {message}\n"),
    }
}

/// `CACHED`, or `CACHED (from SRC)` for a step taken from a `--cache-from`.
fn cached(source: &Option<String>) -> String {
    match source {
        Some(source) => format!("CACHED (from {source})"),
        None => "CACHED".to_owned(),
    }
}

/// The live view: a spinner line per running step with its last output lines under it;
/// finished steps scroll up as one line each.
struct Live {
    bars: MultiProgress,
    running: HashMap<u32, (ProgressBar, String, Vec<String>)>,
    paint: Paint,
}

impl Live {
    fn new() -> Live {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        *LIVE_BARS.lock().unwrap_or_else(|e| e.into_inner()) = Some(bars.clone());
        Live {
            bars,
            running: HashMap::new(),
            paint: Paint::for_stderr(),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn message(label: &str, tail: &[String], paint: Paint) -> String {
        let mut text = label.to_owned();
        for line in tail {
            let line: String = line.chars().take(160).collect();
            text.push_str(&format!("\n    {}", paint.dim(&line)));
        }
        text
    }

    fn show(&mut self, event: &Event) {
        let n = event.vertex;
        let paint = self.paint;
        match &event.kind {
            EventKind::Started { label } => {
                let bar = self.bars.add(ProgressBar::new_spinner());
                bar.set_style(Live::style());
                let label = format!("#{n} {label}");
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.running.insert(n, (bar, label, Vec::new()));
            }
            EventKind::Log { line, .. } => {
                if let Some((bar, label, tail)) = self.running.get_mut(&n) {
                    if tail.len() == LIVE_TAIL {
                        tail.remove(0);
                    }
                    tail.push(line.clone());
                    bar.set_message(Live::message(label, tail, paint));
                }
            }
            EventKind::Cached { label, source } => {
                let _ = self
                    .bars
                    .println(format!("{} #{n} {label}", paint.blue(&cached(source))));
            }
            EventKind::Explain { reasons } => {
                let label = self
                    .running
                    .get(&n)
                    .map_or("", |(_, label, _)| label.as_str());
                for reason in reasons {
                    let _ = self
                        .bars
                        .println(format!("{} {label}: {reason}", paint.blue("WHY")));
                }
            }
            EventKind::Done { seconds } => {
                if let Some((bar, label, _)) = self.running.remove(&n) {
                    bar.finish_and_clear();
                    let _ = self.bars.println(format!(
                        "{} {label} {}",
                        paint.green("DONE"),
                        paint.dim(&format!("{seconds:.1}s"))
                    ));
                }
            }
            EventKind::Error { message } => {
                if let Some((bar, label, tail)) = self.running.remove(&n) {
                    bar.finish_and_clear();
                    let _ = self.bars.println(format!(
                        "{} {}\n    {message}",
                        paint.red("ERROR"),
                        Live::message(&label, &tail, paint)
                    ));
                }
            }
        }
    }

    fn close(self) {
        for (bar, _, _) in self.running.into_values() {
            bar.finish_and_clear();
        }
        let _ = self.bars.clear();
    }
}
