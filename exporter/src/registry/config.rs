//! `RegistryConfig`: how kiln reaches registries (TLS roots, insecure hosts, mirrors,
//! credentials, retries, parallelism).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::auth::AuthConfig;

/// How to reach registries. Built once by the cli (from flags and the kiln config file)
/// and handed to [`super::Registry::new`].
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Where credentials come from.
    pub auth: AuthConfig,
    /// Credentials given with the request (`host[:port]`, credential), used before
    /// `auth`: a server passes on what a client sent (docker's `X-Registry-Auth`), so
    /// each build or push uses its own client's login, never the server's files alone.
    pub given_credentials: Vec<(String, super::auth::Credential)>,
    /// Extra PEM CA bundles trusted on top of the system roots (e.g. a private CA).
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured by the system-roots loader already.
    pub ca_files: Vec<PathBuf>,
    /// Registries (`host[:port]`) allowed to use plain HTTP, like docker's
    /// `--insecure-registry`. Loopback hosts (localhost, 127.0.0.0/8, ::1) are always
    /// allowed. HTTPS is still tried first; plain HTTP only if it fails.
    pub insecure_registries: Vec<String>,
    /// Docker Hub mirrors (`https://mirror.example`, `http://127.0.0.1:5001`, or
    /// `host[:port]`), tried in order before Docker Hub for pulls of `docker.io` images.
    /// A mirror given with `http://` may be reached over plain HTTP.
    pub mirrors: Vec<String>,
    /// Retries of transient failures (5xx, 429, broken connections).
    pub retry: RetryPolicy,
    /// How many blobs one push uploads at the same time.
    pub max_parallel_uploads: usize,
    /// Blobs larger than this go up as a chunked upload (a PATCH per 4 MiB) instead of
    /// one streamed request, for registries and proxies that cap request bodies. A
    /// registry answering 413 to a single-request upload gets the chunked one anyway.
    /// One request is faster: 200 MB over loopback in ~0.9 s vs ~1.2-1.8 s chunked.
    pub chunked_upload_above: u64,
    /// Connect timeout per request.
    pub connect_timeout: Duration,
    /// How long one request may go without progress (no byte of an upload taken, no
    /// byte of a download or an answer received) before it is given up and retried as
    /// a transient failure: a registry that stops answering must not hang a push.
    pub stall_timeout: Duration,
    /// Told of every retry before its wait, so a front end can show it.
    pub on_retry: RetryObserver,
}

/// One retry about to happen, for progress output.
#[derive(Debug, Clone, Copy)]
pub struct Retrying<'a> {
    /// The operation ("upload of blob sha256:... to host/repo").
    pub what: &'a str,
    /// The try that failed (1-based).
    pub failed: u32,
    /// Tries allowed in all.
    pub attempts: u32,
    /// The wait before the next try.
    pub wait: Duration,
    /// Why the try failed.
    pub cause: &'a str,
}

impl std::fmt::Display for Retrying<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: try {} of {} failed ({}); retrying in {:.1}s",
            self.what,
            self.failed,
            self.attempts,
            self.cause,
            self.wait.as_secs_f64()
        )
    }
}

/// A callback for [`Retrying`] notices (none by default).
#[derive(Clone, Default)]
pub struct RetryObserver(Option<Arc<RetryCallback>>);

type RetryCallback = dyn Fn(&Retrying<'_>) + Send + Sync;

impl RetryObserver {
    /// Calls `f` for every retry.
    pub fn new(f: impl Fn(&Retrying<'_>) + Send + Sync + 'static) -> RetryObserver {
        RetryObserver(Some(Arc::new(f)))
    }

    pub(crate) fn notify(&self, retrying: &Retrying<'_>) {
        if let Some(f) = &self.0 {
            f(retrying);
        }
    }
}

impl std::fmt::Debug for RetryObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "RetryObserver(set)"
        } else {
            "RetryObserver(none)"
        })
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            auth: AuthConfig::default(),
            given_credentials: Vec::new(),
            ca_files: Vec::new(),
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            retry: RetryPolicy::default(),
            max_parallel_uploads: 4,
            chunked_upload_above: 512 * 1024 * 1024,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            on_retry: RetryObserver::default(),
        }
    }
}

/// Exponential backoff for transient failures: wait `initial_backoff`, doubling up to
/// `max_backoff`, between at most `attempts` tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second try.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based), with up to 25% jitter so
    /// parallel uploads that failed together do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        base + jitter
    }
}
