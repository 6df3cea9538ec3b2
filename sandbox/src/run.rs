//! The caller's side: prepare the temp dir, start the helper, stream output, wait, clean up.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;
use crate::helper::{MARKER_ENV, Report, Request, StdioPlan};
use crate::init::{etc_files, secret_copy};
use crate::net::{self, NetPlan};
use crate::spec::{ExtraMount, Network, Spec};
use crate::sys::linux::WindowSize;
use crate::userns::UserNamespace;

/// Which of the command's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it (SIGKILL after a cancel).
    Signal(i32),
}

impl ExitStatus {
    /// The shell's number for it: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// Cancels a run from any thread: SIGKILL to the command (PID 1 of the sandbox, which takes
/// the whole pid namespace with it) and to the helper. Cancelling before the run starts
/// makes it stop as soon as it does. `Clone + Send + Sync`.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<Mutex<CancelState>>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: bool,
    helper: Option<Pid>,
    pid1: Option<Pid>,
}

impl CancelHandle {
    /// A handle for one or more runs.
    pub fn new() -> CancelHandle {
        CancelHandle::default()
    }

    /// Kills the run (now, or as soon as it starts).
    pub fn cancel(&self) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.cancelled = true;
        state.kill();
    }

    /// Sends `signal` to the command (PID 1 of the sandbox) if it is running: how a
    /// front end forwards the signals it gets. As for any PID 1, the kernel delivers
    /// only the signals the command has a handler for (SIGKILL aside). Returns whether
    /// there was a command to signal.
    pub fn signal(&self, signal: Signal) -> bool {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match state.pid1 {
            Some(pid) => kill(pid, signal).is_ok(),
            None => false,
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancelled
    }

    fn update(&self, f: impl FnOnce(&mut CancelState)) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state);
        if state.cancelled {
            state.kill();
        }
    }
}

impl CancelState {
    fn kill(&self) {
        for pid in [self.pid1, self.helper].into_iter().flatten() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Lines longer than this are delivered in pieces, so a command printing without newlines
/// cannot make kiln buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// Runs `spec` in a fresh sandbox and returns how the command ended.
///
/// Blocks the calling thread until the command and everything it started are gone; from
/// async code call it inside `tokio::task::spawn_blocking` and cancel through a clone of
/// `cancel`. `output` receives the command's output line by line (each piece ends with
/// `\n` except possibly the last of a stream, or one cut at 64 KiB), in order within each
/// stream; the two streams are separate pipes, so their relative order is only as good as
/// the reading loop's timing.
///
/// A cancelled run returns `Ok(ExitStatus::Signal(9))`; see
/// [`CancelHandle::is_cancelled`]. A run past `spec.timeout` returns [`Error::TimedOut`].
pub fn run(
    spec: &Spec,
    output: &mut dyn FnMut(Stream, &[u8]),
    cancel: &CancelHandle,
) -> Result<ExitStatus, Error> {
    run_with(spec, StdioPlan::Piped, Streams::Piped(output), cancel)
}

/// The caller's own streams for [`run_attached`] (`kiln run`, a debug shell).
#[derive(Debug)]
pub struct Attach {
    /// The command's stdin; `None`: `/dev/null`.
    pub stdin: Option<OwnedFd>,
    /// The command's stdout (unused with a terminal).
    pub stdout: OwnedFd,
    /// The command's stderr (unused with a terminal).
    pub stderr: OwnedFd,
    /// Give the command a pty of this size instead: made inside the sandbox (in its own
    /// devpts, so `tty` names it), owned by the command's user, its controlling
    /// terminal in a session of its own; its master goes to `on_terminal`.
    pub terminal: Option<WindowSize>,
}

/// Runs `spec` with the caller's streams instead of an output callback: the command
/// reads and writes the descriptors of `attach` itself, or, with `attach.terminal`, a
/// pty whose master `on_terminal` receives as soon as the command is about to start (the
/// caller relays it to its own terminal, on another thread, until reading it fails with
/// EIO: every process of the sandbox has exited). The helper runs in a session of its
/// own, so the caller's terminal signals reach only the caller, which forwards what it
/// wants with [`CancelHandle::signal`].
pub fn run_attached(
    spec: &Spec,
    attach: Attach,
    on_terminal: &mut dyn FnMut(OwnedFd),
    cancel: &CancelHandle,
) -> Result<ExitStatus, Error> {
    let stdio = StdioPlan::Attached {
        stdin: attach.stdin.is_some(),
        terminal: attach.terminal,
    };
    run_with(spec, stdio, Streams::Attached(attach, on_terminal), cancel)
}

/// What [`run`] and [`run_attached`] share: the spec checked, the user namespace and
/// network planned, the private temp dir prepared, the helper run.
fn run_with(
    spec: &Spec,
    stdio: StdioPlan,
    streams: Streams<'_>,
    cancel: &CancelHandle,
) -> Result<ExitStatus, Error> {
    validate(spec)?;
    let userns = UserNamespace::detect();
    let net = NetPlan::new(spec.network, userns.is_some(), crate::userns::find_in_path)
        .map_err(Error::Network)?;
    let tmp = TempDir::new()?;
    prepare(spec, &tmp.0)?;
    let request = Request {
        spec: spec.clone(),
        tmp: tmp.0.clone(),
        userns,
        net,
        stdio,
    };
    let result = run_helper(&request, streams, cancel);
    cancel.update(|s| {
        s.helper = None;
        s.pid1 = None;
    });
    result
}

enum Streams<'a> {
    Piped(&'a mut dyn FnMut(Stream, &[u8])),
    Attached(Attach, &'a mut dyn FnMut(OwnedFd)),
}

fn validate(spec: &Spec) -> Result<(), Error> {
    if spec.argv.is_empty() {
        return Err(Error::InvalidSpec("empty argv".into()));
    }
    if !spec.rootfs.iter().any(|m| m.target == "/") {
        return Err(Error::InvalidSpec("no rootfs mount targets /".into()));
    }
    for (target, what) in spec.mounts.iter().map(|m| match m {
        ExtraMount::Bind { target, .. } => (target, "bind"),
        ExtraMount::Tmpfs { target, .. } => (target, "tmpfs"),
        ExtraMount::Secret { target, .. } => (target, "secret"),
    }) {
        if !target.starts_with('/') {
            return Err(Error::InvalidSpec(format!(
                "{what} mount target {target:?} is not absolute"
            )));
        }
    }
    Ok(())
}

/// The run's private temp dir, removed (it is empty of mounts by then) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, Error> {
        let template = std::env::temp_dir().join("kiln-sandbox-XXXXXX");
        nix::unistd::mkdtemp(&template)
            .map(TempDir)
            .map_err(|e| Error::TempDir {
                path: template,
                source: e.into(),
            })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    fs::write(path, contents).map_err(|source| Error::TempDir {
        path: path.to_path_buf(),
        source,
    })
}

fn prepare(spec: &Spec, tmp: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::TempDir { path, source }
    };
    let root = tmp.join("root");
    fs::create_dir(&root).map_err(io(&root))?;
    let etc = etc_files(tmp);
    let mut hosts = format!(
        "127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        spec.hostname
    );
    for line in &spec.extra_hosts {
        hosts.push_str(line);
        hosts.push('\n');
    }
    write(&etc.hosts, hosts.as_bytes())?;
    write(&etc.hostname, format!("{}\n", spec.hostname).as_bytes())?;
    let resolv = match &spec.resolv_conf {
        Some(path) => fs::read(path).map_err(io(path))?,
        None => {
            // A missing file is a host without a resolver: BuildKit's fallback then.
            let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            match spec.network {
                Network::Host if !host.is_empty() => host.into_bytes(),
                _ => net::resolv_conf(&host).into_bytes(),
            }
        }
    };
    write(&etc.resolv_conf, &resolv)?;
    let secrets = spec.mounts.iter().filter_map(|m| match m {
        ExtraMount::Secret { source, mode, .. } => Some((source, mode)),
        _ => None,
    });
    // The helper gives each copy its owner, from inside the sandbox's user namespace when
    // there is one.
    for (n, (source, mode)) in secrets.enumerate() {
        let copy = secret_copy(tmp, n);
        let bytes = fs::read(source).map_err(io(source))?;
        write(&copy, &bytes)?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(mode.unwrap_or(0o400)))
            .map_err(io(&copy))?;
    }
    Ok(())
}

fn run_helper(
    request: &Request,
    streams: Streams<'_>,
    cancel: &CancelHandle,
) -> Result<ExitStatus, Error> {
    let spec = &request.spec;
    let helper_err = |source: std::io::Error| Error::Helper {
        exe: spec.helper_exe.clone(),
        source,
    };
    let (mut ours, theirs) = UnixStream::pair().map_err(helper_err)?;
    let mut command = Command::new(&spec.helper_exe);
    command
        .env(MARKER_ENV, "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    type Output<'a> = Option<&'a mut dyn FnMut(Stream, &[u8])>;
    let (output, on_terminal, stdin): (Output<'_>, &mut dyn FnMut(OwnedFd), Option<OwnedFd>) =
        match streams {
            Streams::Piped(output) => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                (Some(output), &mut |_| {}, None)
            }
            Streams::Attached(attach, on_terminal) => {
                command
                    .stdout(Stdio::from(attach.stdout))
                    .stderr(Stdio::from(attach.stderr));
                (None, on_terminal, attach.stdin)
            }
        };
    let mut child = command.spawn().map_err(helper_err)?;
    drop(command);
    cancel.update(|s| s.helper = Some(Pid::from_raw(child.id() as i32)));

    // The header byte carries the command's stdin, when it has the caller's.
    let sent =
        crate::sys::linux::send_with_fd(ours.as_fd(), b"k", stdin.as_ref().map(|f| f.as_fd()))
            .and_then(|()| serde_json::to_vec(request).map_err(std::io::Error::other))
            .and_then(|bytes| ours.write_all(&bytes))
            .and_then(|()| ours.shutdown(std::net::Shutdown::Write));
    drop(stdin);
    let mut no_output = |_: Stream, _: &[u8]| {};
    let pipes = match output {
        Some(output) => match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => Some((
                output,
                Some(OwnedFd::from(stdout)),
                Some(OwnedFd::from(stderr)),
            )),
            _ => None,
        },
        None => Some((&mut no_output as &mut dyn FnMut(Stream, &[u8]), None, None)),
    };
    let streamed = match (pipes, sent) {
        (Some((output, stdout, stderr)), Ok(())) => {
            stream(spec, cancel, &mut ours, stdout, stderr, output, on_terminal)
        }
        (_, Err(err)) => Err(Error::Helper {
            exe: spec.helper_exe.clone(),
            source: err,
        }),
        _ => Err(Error::Protocol(
            "the helper's output pipes are missing".into(),
        )),
    };
    if streamed.is_err() {
        cancel.update(|s| s.kill());
    }
    cancel.update(|s| s.helper = None);
    let helper_status = child.wait().map_err(helper_err)?;
    // A cancel that lands while the spec is still being written kills the helper under
    // the writer: that is the cancellation, not a failure of the helper.
    let streamed = match streamed {
        Err(Error::Helper { source, .. })
            if cancel.is_cancelled() && source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            return Ok(ExitStatus::Signal(Signal::SIGKILL as i32));
        }
        other => other,
    };
    let (report, timed_out) = streamed?;
    if let Some(after) = timed_out {
        return Err(Error::TimedOut(after));
    }
    match report {
        Some(Report::Exited { code }) => Ok(ExitStatus::Code(code)),
        Some(Report::Signaled { signal }) => Ok(ExitStatus::Signal(signal)),
        Some(Report::Failed { message }) => Err(Error::Setup(message)),
        Some(Report::Started { .. } | Report::Terminal) | None if cancel.is_cancelled() => {
            Ok(ExitStatus::Signal(Signal::SIGKILL as i32))
        }
        _ => Err(Error::Protocol(format!(
            "the helper ended ({helper_status}) without reporting an exit status"
        ))),
    }
}

/// Splits a byte stream into lines for the callback.
struct Lines {
    stream: Stream,
    buf: Vec<u8>,
}

impl Lines {
    fn push(&mut self, data: &[u8], output: &mut dyn FnMut(Stream, &[u8])) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            output(self.stream, &self.buf[start..start + pos + 1]);
            start += pos + 1;
        }
        while self.buf.len() - start >= MAX_LINE {
            output(self.stream, &self.buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.buf.drain(..start);
    }

    fn finish(&mut self, output: &mut dyn FnMut(Stream, &[u8])) {
        if !self.buf.is_empty() {
            output(self.stream, &self.buf);
            self.buf.clear();
        }
    }
}

type Streamed = (Option<Report>, Option<Duration>);

#[allow(clippy::too_many_arguments)]
fn stream(
    spec: &Spec,
    cancel: &CancelHandle,
    socket: &mut UnixStream,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    output: &mut dyn FnMut(Stream, &[u8]),
    on_terminal: &mut dyn FnMut(OwnedFd),
) -> Result<Streamed, Error> {
    let deadline = spec.timeout.map(|t| (Instant::now() + t, t));
    let mut timed_out = None;
    let mut files = [stdout.map(fs::File::from), stderr.map(fs::File::from)];
    let mut received: Vec<OwnedFd> = Vec::new();
    let mut lines = [
        Lines {
            stream: Stream::Stdout,
            buf: Vec::new(),
        },
        Lines {
            stream: Stream::Stderr,
            buf: Vec::new(),
        },
    ];
    let mut socket_open = true;
    let mut status = Vec::new();
    let mut final_report = None;
    let mut buf = vec![0u8; 64 * 1024];
    while socket_open || files.iter().any(Option::is_some) {
        let timeout = match deadline {
            Some((at, _)) if timed_out.is_none() => {
                let left = at.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        let (ready, socket_ready) = {
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            let mut which = Vec::new();
            for (i, f) in files.iter().enumerate() {
                if let Some(f) = f {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    which.push(Some(i));
                }
            }
            if socket_open {
                fds.push(PollFd::new(socket.as_fd(), PollFlags::POLLIN));
                which.push(None);
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::Protocol(format!("poll: {e}"))),
            }
            let mut ready = Vec::new();
            let mut socket_ready = false;
            for (fd, which) in fds.iter().zip(which) {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    match which {
                        Some(i) => ready.push(i),
                        None => socket_ready = true,
                    }
                }
            }
            (ready, socket_ready)
        };
        for i in ready {
            let Some(file) = files[i].as_mut() else {
                continue;
            };
            match file.read(&mut buf) {
                Ok(0) => {
                    lines[i].finish(output);
                    files[i] = None;
                }
                Ok(n) => lines[i].push(&buf[..n], output),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Protocol(format!("read output: {e}"))),
            }
        }
        if socket_ready {
            match crate::sys::linux::recv_with_fds(socket.as_fd(), &mut buf) {
                Ok((0, _)) => socket_open = false,
                Ok((n, fds)) => {
                    status.extend_from_slice(&buf[..n]);
                    received.extend(fds);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // A helper killed by a cancel may reset the connection: same as EOF.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => socket_open = false,
                Err(e) => return Err(Error::Protocol(format!("read status: {e}"))),
            }
            while let Some(pos) = status.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = status.drain(..=pos).collect();
                let report: Report = serde_json::from_slice(&line)
                    .map_err(|e| Error::Protocol(format!("bad report: {e}")))?;
                match report {
                    Report::Started { pid } => cancel.update(|s| s.pid1 = Some(Pid::from_raw(pid))),
                    Report::Terminal => match received.pop() {
                        Some(master) => on_terminal(master),
                        None => {
                            return Err(Error::Protocol(
                                "the terminal report carries no descriptor".into(),
                            ));
                        }
                    },
                    other => {
                        // PID 1 is reaped: never signal its number again.
                        cancel.update(|s| s.pid1 = None);
                        final_report = Some(other);
                    }
                }
            }
        }
        if let Some((at, after)) = deadline
            && timed_out.is_none()
            && Instant::now() >= at
            && final_report.is_none()
        {
            timed_out = Some(after);
            cancel.update(|s| s.kill());
        }
    }
    Ok((final_report, timed_out))
}
