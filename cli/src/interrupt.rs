//! SIGINT and SIGTERM during a long command (build, push, pull): the command cancels what
//! it runs, lets it clean up (sandboxes killed, mounts and temp space removed) and exits
//! 128 + the signal's number — 130 for SIGINT, 143 for SIGTERM — as a shell reports a
//! process the signal killed, which is what CI runners and scripts test for.

use tokio::signal::unix::{SignalKind, signal};

/// The signal that stopped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// 128 + the signal's number.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// A command stopped by a signal, after it cleaned up and said so; `main` exits with
/// [`Signal::exit_code`].
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) Signal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0.name())
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT and SIGTERM caught from now on (the default action, dying at once, is off
/// for the rest of the process). Call inside the runtime, before the work starts, so
/// that no signal falls between starting and listening.
pub(crate) struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn catch() -> Signals {
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next SIGINT or SIGTERM.
    pub(crate) async fn next(&mut self) -> Signal {
        async fn recv(stream: &mut Option<tokio::signal::unix::Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => Signal::Interrupt,
            () = recv(&mut self.terminate) => Signal::Terminate,
        }
    }
}

/// Runs `work` until it ends or a signal comes; on a signal the future is dropped (which
/// cancels it and runs its clean-up) and the command ends as [`Interrupted`].
pub(crate) async fn or_signal<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    what: &str,
) -> anyhow::Result<T> {
    let mut signals = Signals::catch();
    tokio::select! {
        done = work => done,
        signal = signals.next() => {
            eprintln!("interrupted: the {what} was cancelled");
            Err(Interrupted(signal).into())
        }
    }
}
