//! kiln's build engine: everything between "a request" and "a result".
//!
//! An [`Engine`] owns one store and the registry settings; [`Engine::build`] takes a
//! [`BuildRequest`] (plain data: the context, the Dockerfile, args, outputs, secrets)
//! and returns a [`BuildOutcome`] or a [`BuildError`] — errors as data that a terminal
//! and a server's JSON answer both render. Beside builds, the store's operations: images,
//! tag, untag, import, push, pull, save, prune, disk usage.
//!
//! The cli and `kiln serve` are front ends over the same engine: one process may run
//! many builds at once on one engine, so nothing here reads stdin, writes stdout, names
//! a temp path after the process, installs signal handlers or starts a runtime of its
//! own. Progress goes out as the solver's events; cancellation comes in as a `Cancel`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_engine::{BuildRequest, ContextSource, Engine, EngineConfig};
//! let engine = Engine::open("/var/lib/kiln".as_ref(), EngineConfig::default())?;
//! let mut request = BuildRequest::new(ContextSource::Dir("app".into()));
//! request.tags.push("app:dev".to_owned());
//! let (progress, _events) = kiln_solver::progress::Progress::channel();
//! let outcome = engine.build(request, progress, kiln_solver::cancel::Cancel::new()).await?;
//! println!("{}", outcome.image.id);
//! # Ok(()) }
//! ```

mod build;
mod cache;
pub mod check;
mod context;
mod error;
mod fsck;
mod images;
mod load;
mod outline;
mod output;
mod request;
mod run;

use std::path::Path;
use std::sync::Arc;

use kiln_exporter::registry::RegistryConfig;
use kiln_snapshotter::{SnapshotterKind, Store};

pub use build::{BuildOutcome, Checked, DockerfileText, ignore_file_for, ignore_for};
pub use context::TempContext;
pub use error::{BuildError, BuildFailure, EngineError};
pub use fsck::{FsckReport, RepairReport};
pub use images::{
    DiskUsage, FoundImage, ImageSummary, ImportOptions, ImportSource, PruneReport, PushOutcome,
    config_with_changes, image_size,
};
pub use output::{Delivered, local_output_line, metadata};
pub use request::{
    BuildRequest, ContextSource, Destination, DockerfileSource, Entitlement, Output, OutputKind,
    Sink, parse_compression,
};
pub use run::{KeptStep, RunRootfs};

/// What one request adds to the engine's registry settings.
#[derive(Debug, Clone, Default)]
pub struct RegistryAccess {
    /// Registries (`host[:port]`) this request may reach over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials the client gave (`host[:port]`, credential), tried before the
    /// engine's own docker config.
    pub credentials: Vec<(String, kiln_exporter::registry::Credential)>,
}

/// How an engine is set up.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// The snapshotter; `None`: the best this machine supports.
    pub snapshotter: Option<SnapshotterKind>,
    /// Registry settings (mirrors, insecure registries, CA files, credentials).
    pub registry: RegistryConfig,
}

/// A build engine over one store. Cheap to clone; share one among many builds.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: EngineConfig,
    /// The keys this engine's builds are solving: shared vertices run once.
    in_flight: Arc<kiln_solver::in_flight::InFlight>,
}

impl Engine {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path, config: EngineConfig) -> Result<Engine, EngineError> {
        let store = Store::open(root, config.snapshotter)?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                config,
                in_flight: kiln_solver::in_flight::InFlight::new(),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Why each step of the store's last build ran (`kiln explain`): `STEP: REASON` lines,
    /// empty when every step was cached; `None` before any build.
    pub fn last_explained(&self) -> Result<Option<Vec<String>>, EngineError> {
        let path = self.inner.store.cache_index_path();
        if !path.exists() {
            return Ok(None);
        }
        let fail = |e: kiln_solver::cache_index::IndexError| {
            EngineError::io(&path, std::io::Error::other(e.to_string()))
        };
        let index = kiln_solver::cache_index::CacheIndex::open(&path).map_err(fail)?;
        let note = index
            .note(kiln_solver::solve::LAST_EXPLAINED)
            .map_err(fail)?;
        Ok(note.and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// A build context from a stream (docker's `POST /build` body, `kiln build -`); see
    /// [`TempContext::from_stream`].
    pub fn context_from_stream(
        &self,
        input: impl std::io::Read,
        max_bytes: u64,
        may_be_dockerfile: bool,
    ) -> Result<TempContext, EngineError> {
        TempContext::from_stream(self.store(), input, max_bytes, may_be_dockerfile)
    }

    /// A context a client sends again under `key`, kept in the store and synced to the
    /// stream (see [`TempContext::kept`]).
    pub fn kept_context(
        &self,
        key: &str,
        input: impl std::io::Read,
        max_bytes: u64,
    ) -> Result<TempContext, EngineError> {
        TempContext::kept(self.store(), key, input, max_bytes)
    }

    /// The engine's registry settings with what one request adds.
    pub(crate) fn registry_config(&self, access: &RegistryAccess) -> RegistryConfig {
        let mut config = self.inner.config.registry.clone();
        config
            .insecure_registries
            .extend(access.insecure.iter().cloned());
        config.given_credentials = access.credentials.clone();
        config
    }
}

/// A server spawns builds as tasks of a multi-threaded runtime: `Engine::build` (pulls
/// and pushes included) must stay `Send`. Compiling this is the test.
#[cfg(test)]
mod send_check {
    fn is_send<T: Send>(_: T) {}

    #[allow(dead_code)]
    fn build_is_send(engine: crate::Engine, request: crate::BuildRequest) {
        is_send(engine.build(
            request,
            kiln_solver::progress::Progress::discard(),
            kiln_solver::cancel::Cancel::new(),
        ));
    }
}
