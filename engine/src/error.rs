//! Errors as data: what went wrong, in a form both the terminal and a server's JSON
//! answer can render.

use std::path::PathBuf;

use kiln_snapshotter::StoreError;

/// A failure of a store or registry operation, or of the engine's own I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registry operation failed.
    #[error(transparent)]
    Registry(#[from] kiln_exporter::registry::Error),
    /// A push or pull between the store and a registry failed.
    #[error(transparent)]
    Transfer(#[from] kiln_exporter::transfer::TransferError),
    /// Writing an output failed.
    #[error(transparent)]
    Archive(#[from] kiln_exporter::archive::ArchiveError),
    /// The cache index could not be read or written.
    #[error(transparent)]
    CacheIndex(#[from] kiln_solver::cache_index::IndexError),
    /// Writing a `--cache-to` cache failed.
    #[error("--cache-to {location}: {source}")]
    CacheExport {
        /// The cache, as the flag named it.
        location: String,
        /// Why.
        #[source]
        source: kiln_solver::cache_transfer::TransferError,
    },
    /// A `type=registry` cache could not be read or written: the registry is
    /// unreachable, refused, or failed (`ignore-error=true` makes it a warning).
    #[error(
        "--{flag} {location}: {source}; check the registry and the ref, or add ignore-error=true to build without the cache"
    )]
    CacheRegistry {
        /// `cache-from` or `cache-to`.
        flag: &'static str,
        /// The cache's reference, as the flag named it.
        location: String,
        /// Why.
        #[source]
        source: kiln_exporter::transfer::TransferError,
    },
    /// A file the engine reads or writes.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request cannot be carried out as given; the message says what to change.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// An image's layers could not be made into its filesystem (`kiln run`).
    #[error("unpack the image's layers: {0}")]
    Unpack(#[source] kiln_solver::solve::StepError),
    /// No image of that name or id.
    #[error("no image named {name} in the store (see kiln images)")]
    NoSuchImage {
        /// As asked for.
        name: String,
    },
    /// A build holds the store; prune must wait.
    #[error("a build is using the store {}; prune when it has finished", root.display())]
    Busy {
        /// The store.
        root: PathBuf,
    },
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        EngineError::Invalid {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// True for errors in what was asked (a server answers 4xx), false for failures of
    /// the engine or its peers (5xx).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            EngineError::Invalid { .. } | EngineError::NoSuchImage { .. }
        )
    }
}

/// A step that failed, with what a user needs to fix it.
#[derive(Debug, Clone)]
pub struct BuildFailure {
    /// The step's label, e.g. `[build 2/4] RUN make`.
    pub step: Option<String>,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The last lines of the step's output.
    pub log_tail: Vec<String>,
    /// All of the above as a user sees it: the Dockerfile excerpt with a caret, the
    /// message, the hint and the output tail.
    pub rendered: String,
}

/// Why a build did not produce its outputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The request is malformed (a bad flag value, a context that is not there).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// The Dockerfile cannot be parsed or lowered, or a build check marked as an error
    /// failed; `rendered` has the excerpt.
    #[error("{}", first_line(rendered))]
    Dockerfile {
        /// `Dockerfile:LINE:COL`, the line, a caret, the message and the hint.
        rendered: String,
    },
    /// A step failed.
    #[error("{}", first_line(&.0.rendered))]
    Failed(BuildFailure),
    /// The build was cancelled.
    #[error("the build was cancelled; nothing was tagged")]
    Cancelled,
    /// The store, a registry or an output failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
}

impl BuildError {
    /// A malformed request.
    pub fn invalid(message: impl Into<String>, hint: impl AsRef<str>) -> Self {
        BuildError::Invalid {
            message: message.into(),
            hint: Some(hint.as_ref().to_owned()),
        }
    }

    /// The whole text a user sees for this error, ending in a newline.
    pub fn render(&self) -> String {
        match self {
            BuildError::Invalid { message, hint } => {
                let mut text = format!("error: {message}\n");
                if let Some(hint) = hint {
                    text.push_str(&format!("  = hint: {hint}\n"));
                }
                text
            }
            BuildError::Dockerfile { rendered } => rendered.clone(),
            BuildError::Failed(failure) => failure.rendered.clone(),
            BuildError::Cancelled => format!("error: {self}\n"),
            BuildError::Engine(EngineError::Invalid {
                message,
                hint: Some(hint),
            }) => format!("error: {message}\n  = hint: {hint}\n"),
            BuildError::Engine(e) => format!("error: {e}\n"),
        }
    }

    /// True when the request, not the engine, is at fault (a server answers 4xx).
    pub fn is_bad_request(&self) -> bool {
        match self {
            BuildError::Invalid { .. } | BuildError::Dockerfile { .. } => true,
            BuildError::Engine(e) => e.is_bad_request(),
            _ => false,
        }
    }
}

impl From<StoreError> for BuildError {
    fn from(e: StoreError) -> Self {
        BuildError::Engine(EngineError::Store(e))
    }
}
