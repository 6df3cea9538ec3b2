//! Retrying transient registry failures, and turning oci-client errors into ours.

use std::future::Future;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use super::config::RetryPolicy;
use super::error::{Error, chain};

/// The outcome of one failed try.
pub(crate) enum Failure {
    /// Worth another try (5xx, 429, a broken or refused connection); the cause.
    Transient(String),
    /// Final: retrying cannot help.
    Fatal(Error),
}

/// Runs `op` up to `policy.attempts` times while it fails transiently, sleeping with
/// exponential backoff in between. `what` names the blob or manifest for the error.
/// Returns the value and how many tries it took.
pub(crate) async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut op: F,
) -> Result<(T, u32), Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(value) => return Ok((value, attempt)),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::Transient(cause)) if attempt >= attempts => {
                return Err(Error::RetriesExhausted {
                    what: what.to_owned(),
                    attempts,
                    cause,
                });
            }
            Err(Failure::Transient(_)) => {
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
            }
        }
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
