//! The sandbox's errors.

use std::path::PathBuf;
use std::time::Duration;

/// Why a sandboxed run failed before it produced an exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec cannot be run as given.
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// Starting or talking to the helper process failed.
    #[error("sandbox helper {exe}: {source}")]
    Helper {
        /// The helper binary.
        exe: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Preparing the temp dir (hosts, resolv.conf, secrets) failed.
    #[error("sandbox temp dir {path}: {source}")]
    TempDir {
        /// The file or dir.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Setting up the sandbox (namespaces, mounts, user, seccomp ...) failed; the message
    /// comes from inside the helper and names the step and path.
    #[error("sandbox setup: {0}")]
    Setup(String),
    /// The requested network cannot be set up here (says what to install or pass).
    #[error("sandbox network: {0}")]
    Network(String),
    /// The helper broke the protocol (died, or sent something unreadable).
    #[error("sandbox helper protocol: {0}")]
    Protocol(String),
    /// The command ran longer than `Spec::timeout` and was killed.
    #[error("command timed out after {0:?} and was killed")]
    TimedOut(Duration),
}
