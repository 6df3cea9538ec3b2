//! `kiln serve`: kiln's engine behind the Docker Engine API, so that the `docker` CLI,
//! docker-py and every other Docker API client can build with kiln.
//!
//! The server speaks HTTP/1.1 (hyper) on a UNIX socket, mode 0660 with a group like
//! dockerd's `docker` group, or on TCP: loopback only, unless mutual TLS is set up — an
//! engine that runs builds is root on its machine, so an open port is refused by default.
//! It serves the endpoints build clients use (`/_ping`, `/version`, `/info`, `/build`,
//! `/images/...`, `/build/prune`, `/system/df`; see `docs/api.md`) and answers 501 to
//! the rest: kiln builds images and runs no containers.
//!
//! [`Server::bind`] takes a [`Backend`] (the engine) and a [`ServeConfig`];
//! [`Server::run`] takes a future that resolves when the server should stop (the cli wires it to SIGTERM/SIGINT). On that
//! signal the listeners close, running builds get `shutdown_timeout` to finish, and
//! those still running are cancelled (their sandboxes killed, nothing tagged) before
//! [`Server::run`] returns.
//!
//! Every request is checked before it touches the store: unknown parameters, a bad tar
//! body, a body over `max_context_size` and oversized headers are 4xx answers that leave
//! other builds alone.
#![forbid(unsafe_code)]

mod api;
mod body;
mod build_params;
mod builds;
pub mod client;
mod credentials;
mod engine_calls;
mod host;
mod listen;
mod reply;
mod routes;
mod server;
mod tls;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use engine_calls::Backend;
pub use host::{Host, TlsFiles, check_exposure};
pub use listen::SocketOptions;
pub use routes::{API_VERSION, MIN_API_VERSION};
pub use server::{Server, Stopped};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen (one or more).
    pub hosts: Vec<Host>,
    /// TLS for TCP hosts.
    pub tls: TlsFiles,
    /// The UNIX socket's group.
    pub socket: SocketOptions,
    /// How long running builds may go on after the stop signal before they are cancelled.
    pub shutdown_timeout: Duration,
    /// The largest request body (`/build` context, `/images/load` archive), in bytes.
    pub max_context_size: u64,
    /// Entitlements a client may ask for (`--allow-insecure-entitlement`, as buildkitd
    /// has it): a RUN step in the host's network namespace is the server's to grant,
    /// not a client's.
    pub insecure_entitlements: Vec<String>,
}

/// The default `--max-context-size`: 2 GiB, bigger than any sane build context.
pub const DEFAULT_MAX_CONTEXT_SIZE: u64 = 2 << 30;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A `--host` that cannot be used.
    #[error("--host {host}: {reason}")]
    Host {
        /// As given.
        host: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Another server answers on the socket.
    #[error("{}: another server is listening on this socket; stop it or choose another --host", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// The TLS files.
    #[error("TLS: {0}")]
    Tls(String),
    /// A system call on the listener.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}
