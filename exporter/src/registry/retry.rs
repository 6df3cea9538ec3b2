//! Retrying transient registry failures, and turning oci-client errors into ours.

use std::future::Future;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::config::{RegistryConfig, Retrying};
use super::error::{Error, chain};

/// The outcome of one failed try.
pub(crate) enum Failure {
    /// Worth another try (5xx, 429, a broken or refused connection); the cause.
    Transient(String),
    /// Final: retrying cannot help.
    Fatal(Error),
}

/// Runs `op` up to `policy.attempts` times while it fails transiently, sleeping with
/// exponential backoff in between (each retry told to `config.on_retry`). A try that
/// makes no progress for `config.stall_timeout` is a transient failure; `op` gets an
/// [`Activity`] to [`Activity::touch`] as bytes move, so a slow but moving upload is not
/// cut. `what` names the blob or manifest for the error. Returns the value and how many
/// tries it took.
pub(crate) async fn retry<T, F, Fut>(
    config: &RegistryConfig,
    what: &str,
    mut op: F,
) -> Result<(T, u32), Error>
where
    F: FnMut(Activity) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let policy = &config.retry;
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        let activity = Activity::new();
        let outcome = watched(config.stall_timeout, &activity, op(activity.clone())).await;
        match outcome {
            Ok(value) => return Ok((value, attempt)),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Transient(cause)) if attempt >= attempts => {
                return Err(Error::RetriesExhausted {
                    what: what.to_owned(),
                    attempts,
                    cause,
                });
            }
            Err(Failure::Transient(cause)) => {
                backoff(config, what, attempt, &cause).await;
                attempt += 1;
            }
        }
    }
}

/// Tells `config.on_retry` and waits before try `failed + 1`.
pub(crate) async fn backoff(config: &RegistryConfig, what: &str, failed: u32, cause: &str) {
    let wait = config.retry.backoff(failed);
    config.on_retry.notify(&Retrying {
        what,
        failed,
        attempts: config.retry.attempts.max(1),
        wait,
        cause,
    });
    tokio::time::sleep(wait).await;
}

/// When a try last made progress; shared between the try and its watchdog.
#[derive(Clone, Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes moved: the try is alive.
    pub(crate) fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Runs `work` unless it goes `stall` without touching `activity`: then a transient
/// failure saying so (the future is dropped, which closes its connection).
pub(crate) async fn watched<T>(
    stall: Duration,
    activity: &Activity,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let watchdog = async {
        loop {
            let idle = activity.idle();
            if idle >= stall {
                return;
            }
            tokio::time::sleep(stall - idle).await;
        }
    };
    tokio::select! {
        done = work => done,
        () = watchdog => Err(Failure::Transient(format!(
            "no progress for {}s: the registry stopped answering",
            stall.as_secs_f64()
        ))),
    }
}

/// Context for classifying an oci-client error.
pub(crate) struct Op<'a> {
    /// The registry host.
    pub registry: &'a str,
    /// The repository.
    pub repository: &'a str,
    /// The operation, for messages ("upload of blob sha256:... to r.io/x").
    pub what: &'a str,
}

/// Sorts an oci-client error into transient or fatal, mapping the fatal ones to
/// kiln's errors (401 -> [`Error::Unauthorized`] with the `kiln login` hint, ...).
pub(crate) fn classify(op: &Op<'_>, err: OciDistributionError) -> Failure {
    let status_failure = |code: u16, message: String| -> Failure {
        match code {
            401 => Failure::Fatal(unauthorized(op)),
            403 => Failure::Fatal(Error::Denied {
                registry: op.registry.to_owned(),
                repository: op.repository.to_owned(),
                message,
            }),
            408 | 429 | 500..=599 => Failure::Transient(format!("HTTP {code}: {}", message.trim())),
            _ => Failure::Fatal(Error::Registry {
                what: op.what.to_owned(),
                reason: format!("HTTP {code}: {}", message.trim()),
            }),
        }
    };
    match err {
        OciDistributionError::UnauthorizedError { .. } => Failure::Fatal(unauthorized(op)),
        OciDistributionError::AuthenticationFailure(message) => {
            // A token endpoint that is down is transient; one that says no is not.
            if message.to_ascii_lowercase().contains("unauthorized") || message.trim().is_empty() {
                Failure::Fatal(unauthorized(op))
            } else {
                Failure::Fatal(Error::Registry {
                    what: op.what.to_owned(),
                    reason: format!("authentication failed: {message}"),
                })
            }
        }
        OciDistributionError::ServerError { code, message, .. } => status_failure(code, message),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let message = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized))
            {
                Failure::Fatal(unauthorized(op))
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                status_failure(403, message)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                Failure::Transient(message)
            } else {
                Failure::Fatal(Error::Registry {
                    what: op.what.to_owned(),
                    reason: message,
                })
            }
        }
        OciDistributionError::RequestError(e) => match e.status() {
            Some(status) => status_failure(status.as_u16(), chain(&e)),
            // No status: the connection broke, was refused or timed out.
            None if e.is_builder() => Failure::Fatal(Error::Registry {
                what: op.what.to_owned(),
                reason: chain(&e),
            }),
            None => Failure::Transient(chain(&e)),
        },
        OciDistributionError::IoError(e) => Failure::Transient(chain(&e)),
        other => Failure::Fatal(Error::Registry {
            what: op.what.to_owned(),
            reason: chain(&other),
        }),
    }
}

pub(crate) fn unauthorized(op: &Op<'_>) -> Error {
    Error::Unauthorized {
        registry: op.registry.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RetryPolicy;

    fn config(stall_ms: u64) -> RegistryConfig {
        RegistryConfig {
            retry: RetryPolicy {
                attempts: 3,
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(10),
            },
            stall_timeout: Duration::from_millis(stall_ms),
            ..RegistryConfig::default()
        }
    }

    /// Runs `op` through `retry` with `config`; the result and the retries it showed.
    async fn check<F, Fut>(config: RegistryConfig, op: F) -> (Result<u32, String>, Vec<String>)
    where
        F: FnMut(Activity) -> Fut,
        Fut: Future<Output = Result<u32, Failure>>,
    {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let config = RegistryConfig {
            on_retry: crate::registry::RetryObserver::new({
                let seen = Arc::clone(&seen);
                move |r| seen.lock().unwrap().push(r.to_string())
            }),
            ..config
        };
        let outcome = retry(&config, "upload of blob x", op)
            .await
            .map(|(v, _)| v)
            .map_err(|e| e.to_string());
        let seen = seen.lock().unwrap().clone();
        (outcome, seen)
    }

    #[tokio::test]
    async fn a_try_that_keeps_moving_is_not_cut_and_an_idle_one_is() {
        // 10 pieces 20 ms apart under a 50 ms stall timeout: 200 ms in all, never idle.
        let (moving, shown) = check(config(50), |activity| async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                activity.touch();
            }
            Ok(7)
        })
        .await;
        assert_eq!(moving, Ok(7));
        assert!(shown.is_empty(), "{shown:?}");

        // Idle on the first try, answering on the second: one retry, shown.
        let mut tries = 0;
        let (recovered, shown) = check(config(50), |_| {
            tries += 1;
            let stall = tries == 1;
            async move {
                if stall {
                    std::future::pending::<()>().await;
                }
                Ok(8)
            }
        })
        .await;
        assert_eq!(recovered, Ok(8));
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(
            shown[0].starts_with("upload of blob x: try 1 of 3 failed (no progress for 0.05s"),
            "{shown:?}"
        );

        // Never answering: bounded, and the error says why.
        let (failed, shown) = check(config(30), |_| std::future::pending()).await;
        let failed = failed.unwrap_err();
        assert!(failed.contains("giving up after 3 attempts"), "{failed}");
        assert!(failed.contains("no progress for 0.03s"), "{failed}");
        assert_eq!(shown.len(), 2, "{shown:?}");
    }
}
