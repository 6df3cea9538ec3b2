//! Every call the server makes into the build engine, in one place: the handlers see
//! only [`Backend`] and the plain types here, so the engine's API can move without the
//! HTTP code moving with it.

use std::io::{Read, Write};
use std::path::PathBuf;

use kiln_engine::{
    BuildError, BuildRequest, ContextSource, Destination, DockerfileSource, Engine, EngineError,
    Entitlement, Output, OutputKind, RegistryAccess,
};
use kiln_exporter::registry::Platform;
use kiln_image::image::StoredImage;
use kiln_snapshotter::Digest;
use kiln_snapshotter::layer_out::Compression;
use kiln_solver::cancel::Cancel;
use kiln_solver::progress::Progress;
use kiln_solver::request::{NamedContext, NetworkMode, SecretSource, SecretSpec, SecretValue};

pub(crate) use kiln_engine::{DiskUsage, FoundImage, ImageSummary, Sink, TempContext};

use crate::build_params::BuildParams;
use crate::credentials::Given;
use crate::wire;

fn access(credentials: Given) -> RegistryAccess {
    RegistryAccess {
        credentials,
        ..RegistryAccess::default()
    }
}

/// The engine as the server uses it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Backend {
    engine: Engine,
}

/// Why a call failed, sorted the way an HTTP answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No such image (404).
    NotFound(String),
    /// The request is wrong (400); the message says what to change.
    Invalid(String),
    /// The store is busy (409).
    Busy(String),
    /// The engine or a peer failed (500).
    Failed(String),
}

impl CallError {
    pub(crate) fn message(&self) -> &str {
        match self {
            CallError::NotFound(m)
            | CallError::Invalid(m)
            | CallError::Busy(m)
            | CallError::Failed(m) => m,
        }
    }
}

impl From<kiln_snapshotter::StoreError> for CallError {
    fn from(e: kiln_snapshotter::StoreError) -> Self {
        EngineError::Store(e).into()
    }
}

impl From<EngineError> for CallError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NoSuchImage { name } => {
                CallError::NotFound(format!("No such image: {name}"))
            }
            EngineError::Invalid { message, hint } => CallError::Invalid(match hint {
                Some(hint) => format!("{message} ({hint})"),
                None => message,
            }),
            EngineError::Busy { .. } => CallError::Busy(e.to_string()),
            EngineError::Store(kiln_snapshotter::StoreError::BadName { .. }) => {
                CallError::Invalid(e.to_string())
            }
            EngineError::Store(kiln_snapshotter::StoreError::ImageNotFound { name }) => {
                CallError::NotFound(format!("No such image: {name}"))
            }
            other => CallError::Failed(other.to_string()),
        }
    }
}

/// Where a build's context comes from.
#[derive(Debug)]
pub(crate) enum BuildContext {
    /// Unpacked from the request body.
    Temp(TempContext),
    /// `remote=`: a git repository.
    Git(String),
}

/// A finished build.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) id: Digest,
    pub(crate) tags: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// A build that did not finish.
#[derive(Debug, Clone)]
pub(crate) struct BuildFailed {
    /// The whole text a user sees (Dockerfile excerpt, hint, output tail).
    pub(crate) rendered: String,
}

/// Runs an engine future as a task of its own: a panic in it fails this call, not the
/// connection, and the connection's task stays free to notice a client going away.
async fn spawned<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, CallError> {
    tokio::spawn(work)
        .await
        .map_err(|e| CallError::Failed(format!("an engine task failed: {e}")))
}

impl Backend {
    /// A backend over `engine`.
    pub fn new(engine: Engine) -> Backend {
        Backend { engine }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.engine.store().root().to_owned()
    }

    pub(crate) fn snapshotter_name(&self) -> String {
        format!("{:?}", self.engine.store().snapshots().kind()).to_lowercase()
    }

    pub(crate) fn images(&self) -> Result<Vec<ImageSummary>, CallError> {
        Ok(self.engine.images()?)
    }

    pub(crate) fn find(&self, reference: &str) -> Result<FoundImage, CallError> {
        Ok(self.engine.find(reference)?)
    }

    pub(crate) fn tag(&self, source: &str, target: &str) -> Result<String, CallError> {
        Ok(self.engine.tag(source, target)?)
    }

    pub(crate) fn untag(&self, name: &str) -> Result<String, CallError> {
        Ok(self.engine.untag(name)?)
    }

    /// Pushes `name` to its registry; the manifest digest the registry stored.
    pub(crate) async fn push(&self, name: &str, credentials: Given) -> Result<String, CallError> {
        let engine = self.engine.clone();
        let name = name.to_owned();
        let access = access(credentials);
        let pushed = spawned(async move {
            engine
                .push(&name, Compression::default_gzip(), &access)
                .await
        })
        .await??;
        Ok(pushed.manifest_digest)
    }

    pub(crate) async fn pull(
        &self,
        reference: &str,
        platform: &Platform,
        credentials: Given,
    ) -> Result<StoredImage, CallError> {
        let engine = self.engine.clone();
        let reference = reference.to_owned();
        let platform = platform.clone();
        let access = access(credentials);
        Ok(spawned(async move { engine.pull(&reference, &platform, &access).await }).await??)
    }

    pub(crate) fn prune(&self, all: bool) -> Result<u64, CallError> {
        Ok(self.engine.prune(all)?.reclaimed)
    }

    pub(crate) fn disk_usage(&self) -> DiskUsage {
        self.engine.disk_usage()
    }

    pub(crate) fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), CallError> {
        Ok(self.engine.save(names, out)?)
    }

    pub(crate) fn load(&self, input: &mut dyn Read) -> Result<Vec<String>, CallError> {
        Ok(self.engine.load(input)?)
    }

    /// A context from a request body: a tar (plain or compressed), or — for docker's
    /// `/build`, when `may_be_dockerfile` — a lone Dockerfile, as dockerd takes it.
    pub(crate) fn context_from_stream(
        &self,
        input: impl Read + 'static,
        max_bytes: u64,
        may_be_dockerfile: bool,
    ) -> Result<TempContext, CallError> {
        Ok(self
            .engine
            .context_from_stream(input, max_bytes, may_be_dockerfile)?)
    }

    /// A context kept between builds under the client's `key`.
    pub(crate) fn kept_context(
        &self,
        key: &str,
        input: impl Read + 'static,
        max_bytes: u64,
    ) -> Result<TempContext, CallError> {
        Ok(self.engine.kept_context(key, input, max_bytes)?)
    }

    pub(crate) async fn build(
        &self,
        params: &BuildParams,
        context: BuildContext,
        credentials: Given,
        progress: Progress,
        cancel: Cancel,
    ) -> Result<Built, BuildFailed> {
        let source = match context {
            BuildContext::Temp(temp) => ContextSource::Temp(temp),
            BuildContext::Git(url) => ContextSource::Git(url),
        };
        let mut request = BuildRequest::new(source);
        request.dockerfile = if params.dockerfile == std::path::Path::new("Dockerfile") {
            DockerfileSource::Default
        } else {
            DockerfileSource::InContext(params.dockerfile.to_string_lossy().into_owned())
        };
        request.tags = params.tags.clone();
        request.build_args = params.build_args.clone();
        request.labels = params.labels.clone();
        request.target = params.target.clone();
        request.no_cache = params.no_cache;
        request.pull = params.pull;
        request.platform = params.platform.clone();
        request.network = params.network;
        request.registry = access(credentials);
        let engine = self.engine.clone();
        let built = spawned(async move { engine.build(request, progress, cancel).await })
            .await
            .map_err(|e| BuildFailed {
                rendered: format!("error: {}\n", e.message()),
            })?;
        match built {
            Ok(outcome) => Ok(Built {
                id: outcome.image.id.clone(),
                tags: outcome.delivered.names.clone(),
                warnings: outcome.warnings.clone(),
            }),
            Err(e) => Err(BuildFailed {
                rendered: render(&e),
            }),
        }
    }
}

fn render(e: &BuildError) -> String {
    e.render()
}

/// A request kiln's own API can carry, checked: the pieces that name the client's
/// files (ssh agents, directory contexts) or would write on the server's disk are not
/// part of [`wire::BuildSpec`], and outputs may only stream back (`dest=-`).
pub(crate) struct SpecRequest(BuildRequest);

fn invalid(e: BuildError) -> CallError {
    CallError::Invalid(
        e.render()
            .trim_start_matches("error: ")
            .trim_end()
            .to_owned(),
    )
}

impl SpecRequest {
    /// Checks `spec` and makes the request for `context`; the `dest=-` output writes to
    /// what `stream` makes.
    pub(crate) fn new(
        spec: wire::BuildSpec,
        context: TempContext,
        stream: impl FnOnce() -> Sink,
    ) -> Result<SpecRequest, CallError> {
        use base64::Engine as _;
        let mut request = BuildRequest::new(ContextSource::Temp(context));
        if let Some(file) = spec.dockerfile {
            request.dockerfile = DockerfileSource::Inline {
                name: file.name,
                text: file.text,
            };
        }
        request.dockerignore = spec.dockerignore;
        request.target = spec.target;
        request.build_args = spec.build_args;
        request.labels = spec.labels;
        request.annotations = spec.annotations;
        request.tags = spec.tags;
        let mut stream = Some(stream);
        let mut streamed = false;
        for value in &spec.outputs {
            let output = Output::parse(value, || match stream.take() {
                Some(make) => make(),
                None => Sink::new(Box::new(std::io::sink())),
            })
            .map_err(invalid)?;
            if let Some(Destination::Stream(_)) = &output.dest {
                if streamed {
                    return Err(CallError::Invalid(format!(
                        "-o {value}: only one output can go to dest=- (the answer carries one stream)"
                    )));
                }
                streamed = true;
            }
            if output.kind == OutputKind::Local {
                return Err(CallError::Invalid(format!(
                    "-o {value}: a directory cannot be sent to the client; use type=tar,dest=- and unpack it"
                )));
            }
            if let Some(Destination::Path(path)) = &output.dest {
                return Err(CallError::Invalid(format!(
                    "-o {value}: dest={} would write on the server; send dest=- and write the file on the client",
                    path.display()
                )));
            }
            request.outputs.push(output);
        }
        if spec.push {
            request.push_image();
        }
        request.no_cache = spec.no_cache;
        request.no_cache_filter = spec.no_cache_filter;
        request.pull = spec.pull;
        request.platform = match &spec.platform {
            Some(text) => Some(kiln_solver::frontend::parse_platform(text).ok_or_else(|| {
                CallError::Invalid(format!(
                    "platform {text:?}: write OS/ARCH[/VARIANT], e.g. linux/amd64"
                ))
            })?),
            None => None,
        };
        if let Some(network) = &spec.network {
            request.network =
                NetworkMode::parse(network).map_err(|e| CallError::Invalid(e.to_string()))?;
        }
        for name in &spec.allow {
            request
                .allow
                .push(Entitlement::parse(name).map_err(invalid)?);
        }
        for secret in spec.secrets {
            if secret.id.is_empty() {
                return Err(CallError::Invalid("a secret with an empty id".to_owned()));
            }
            let value = base64::engine::general_purpose::STANDARD
                .decode(&secret.value)
                .map_err(|_| {
                    CallError::Invalid(format!("secret {}: the value is not base64", secret.id))
                })?;
            request.secrets.push(SecretSpec {
                id: secret.id,
                source: SecretSource::Value(SecretValue(value.into())),
            });
        }
        for (name, value) in spec.named_contexts {
            let Some(reference) = value.strip_prefix("docker-image://") else {
                return Err(CallError::Invalid(format!(
                    "named context {name}={value}: only docker-image://REF can be sent to a server"
                )));
            };
            request
                .named_contexts
                .insert(name, NamedContext::Image(reference.to_owned()));
        }
        request.jobs = spec.jobs;
        Ok(SpecRequest(request))
    }
}

impl Backend {
    /// Runs a build of kiln's own API: the result, or the failure as the terminal shows it.
    pub(crate) async fn build_spec(
        &self,
        request: SpecRequest,
        progress: Progress,
        cancel: Cancel,
    ) -> Result<wire::BuildResult, wire::BuildFailure> {
        let engine = self.engine.clone();
        let built = spawned(async move { engine.build(request.0, progress, cancel).await })
            .await
            .map_err(|e| wire::BuildFailure {
                rendered: format!("error: {}\n", e.message()),
            })?;
        match built {
            Ok(outcome) => Ok(wire::BuildResult {
                id: outcome.image.id.to_string(),
                layers: outcome.image.manifest.layers.len(),
                size: kiln_engine::image_size(&outcome.image),
                ran: outcome.ran,
                cached: outcome.cached,
                lines: outcome.delivered.lines.clone(),
                names: outcome.delivered.names.clone(),
                warnings: outcome.warnings.clone(),
                findings: outcome.rendered_findings(),
                metadata: outcome.metadata.clone(),
            }),
            Err(e) => Err(wire::BuildFailure {
                rendered: render(&e),
            }),
        }
    }
}
