//! One build, from a [`BuildRequest`] to a [`BuildOutcome`]: the Dockerfile read and
//! parsed, the build checks, the base images resolved (the store first, then a pull),
//! the contexts scanned, the plan solved, the image exported and delivered.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_image::image::StoredImage;
use kiln_parser::Dockerfile;
use kiln_parser::dockerignore::{self, Matcher};
use kiln_parser::lint::Finding;
use kiln_snapshotter::StoreError;
use kiln_solver::cancel::Cancel;
use kiln_solver::context::ContextTree;
use kiln_solver::frontend::{self, BaseImage, LowerOptions, NamedSource, Plan, Platform};
use kiln_solver::ops::Op;
use kiln_solver::progress::Progress;
use kiln_solver::request::NamedContext;
use kiln_solver::solve::{self, SolveError, SolveOptions, StepError};

use crate::context::{TempContext, import_oci_layout};
use crate::error::{BuildError, BuildFailure, EngineError};
use crate::output::{self, Delivered};
use crate::request::{BuildRequest, ContextSource, DockerfileSource};
use crate::{Engine, RegistryAccess};

/// The Dockerfile a build read: its text and the name messages give it.
#[derive(Debug, Clone)]
pub struct DockerfileText {
    /// Shown in messages as `NAME:LINE:COL`.
    pub name: String,
    /// The text.
    pub text: String,
    /// Where it was read from, when it was a file (for `NAME.dockerignore`).
    pub path: Option<PathBuf>,
}

/// What a finished build made.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The image in the store (not necessarily tagged).
    pub image: StoredImage,
    /// What the outputs did.
    pub delivered: Delivered,
    /// The `--metadata-file` document.
    pub metadata: serde_json::Value,
    /// Steps that ran and steps taken from the cache.
    pub ran: usize,
    /// Steps taken from the cache.
    pub cached: usize,
    /// Warnings to show (unused build args, a foreign `# syntax=`).
    pub warnings: Vec<String>,
    /// The build checks' findings (warnings: errors stop the build).
    pub findings: Vec<Finding>,
    /// The Dockerfile, to render the findings against.
    pub dockerfile: DockerfileText,
}

impl BuildOutcome {
    /// The findings as a terminal shows them (`warning: Dockerfile:3:1: ...` and the
    /// excerpt), one string each.
    pub fn rendered_findings(&self) -> Vec<String> {
        let file = &self.dockerfile;
        self.findings
            .iter()
            .map(|f| f.render_labelled(&file.name, &file.text))
            .collect()
    }
}

/// What `--check` found, without building.
#[derive(Debug)]
pub struct Checked {
    /// The findings.
    pub findings: Vec<Finding>,
    /// The Dockerfile they point into.
    pub dockerfile: DockerfileText,
    /// Set when a finding is an error (`# check=error=true`): the build would stop.
    pub violation: Option<String>,
}

/// A parsed request, ready to lower: what both `build` and `check` start from.
pub(crate) struct Prepared {
    pub(crate) context: PathBuf,
    /// Kept until the build ends: dropping it removes the directory.
    pub(crate) _temp: Option<TempContext>,
    pub(crate) dockerfile: DockerfileText,
    pub(crate) parsed: Dockerfile,
    pub(crate) ignore: Matcher,
}

impl Engine {
    /// Runs the build checks on the request's Dockerfile, without building.
    pub async fn check(&self, request: BuildRequest) -> Result<Checked, BuildError> {
        let prepared = self
            .prepare(
                request.context,
                &request.dockerfile,
                request.dockerignore.as_deref(),
            )
            .await?;
        let findings = crate::check::findings(
            &prepared.parsed,
            &prepared.dockerfile.text,
            &request.build_args,
            request.target.as_deref(),
            request.platform.as_ref(),
            Some(prepared.ignore.clone()),
            Some(self.store()),
        );
        Ok(Checked {
            violation: kiln_parser::lint::violation(&findings),
            findings,
            dockerfile: prepared.dockerfile,
        })
    }

    /// Runs one build. Events go to `progress`; `cancel` stops it (every running step is
    /// killed, nothing is tagged).
    pub async fn build(
        &self,
        request: BuildRequest,
        progress: Progress,
        cancel: Cancel,
    ) -> Result<BuildOutcome, BuildError> {
        for tag in &request.tags {
            kiln_snapshotter::normalize_name(tag).map_err(|e| {
                BuildError::invalid(
                    format!("-t {tag}: {e}"),
                    "name images NAME[:TAG] or HOST/REPO[:TAG], in lowercase",
                )
            })?;
        }
        for secret in &request.secrets {
            secret.check().map_err(|e| {
                BuildError::invalid(e.to_string(), "give a regular file of at most 500 KiB")
            })?;
        }
        crate::cache::check_refs(&request.cache_from, &request.cache_to)?;
        let store = self.store().clone();
        let _building = store.lock_for_build()?;
        let prepared = self
            .prepare(
                request.context,
                &request.dockerfile,
                request.dockerignore.as_deref(),
            )
            .await?;
        let Prepared {
            context,
            _temp,
            dockerfile,
            parsed,
            ignore,
        } = prepared;
        let mut findings = crate::check::findings(
            &parsed,
            &dockerfile.text,
            &request.build_args,
            request.target.as_deref(),
            request.platform.as_ref(),
            Some(ignore.clone()),
            Some(&store),
        );
        // Checked again once the base images are resolved (below): the store's copy of
        // an image is not the one used when it is for another architecture, or absent.
        // What does not depend on them can fail the build now, before any pull.
        findings.retain(|f| f.rule != kiln_parser::lint::INVALID_BASE_IMAGE_PLATFORM.name);
        let early: Vec<Finding> = findings
            .iter()
            .filter(|f| !crate::check::depends_on_bases(f))
            .cloned()
            .collect();
        if kiln_parser::lint::violation(&early).is_some() {
            violation_stops(&findings, &dockerfile)?;
        }
        let mut warnings = Vec::new();
        if let Some(syntax) = &parsed.directives.syntax {
            // kiln is its own Dockerfile frontend: the directive is noted, never fetched.
            let image = syntax.split(['@', ':']).next().unwrap_or_default();
            if !matches!(image, "docker/dockerfile" | "docker.io/docker/dockerfile") {
                warnings.push(format!(
                    "# syntax={syntax} asks for another frontend; kiln builds the file with its own Dockerfile frontend"
                ));
            }
        }

        // Named contexts: directories are read like the main context; images stand in
        // for a stage or image of that name.
        let mut named_contexts = BTreeMap::new();
        let mut context_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
        context_dirs.insert("context".to_owned(), context.clone());
        for (name, named) in &request.named_contexts {
            let source = match named {
                NamedContext::Dir(dir) => {
                    if !dir.is_dir() {
                        return Err(BuildError::invalid(
                            format!("--build-context {name}={}: not a directory", dir.display()),
                            "give an existing directory, docker-image://REF or oci-layout://PATH",
                        ));
                    }
                    context_dirs.insert(name.clone(), dir.clone());
                    NamedSource::Dir
                }
                NamedContext::Image(reference) => NamedSource::Image(reference.clone()),
                NamedContext::OciLayout(layout) => {
                    NamedSource::Image(import_oci_layout(&store, name, layout)?)
                }
                NamedContext::Url(url) => {
                    return Err(BuildError::invalid(
                        format!(
                            "--build-context {name}={url}: git and https contexts are not supported by kiln yet"
                        ),
                        "clone or download it and pass the directory",
                    ));
                }
            };
            named_contexts.insert(name.clone(), source);
        }
        let mut build_args = request.build_args.clone();
        resolve_source_date_epoch(
            &mut build_args,
            _temp.as_ref().and_then(TempContext::commit_time),
            &parsed,
            &named_contexts,
        )?;
        let options = LowerOptions {
            build_args,
            target: request.target.clone(),
            platform: request.platform.clone(),
            labels: request.labels.clone(),
            network: request.network,
            allow: request.allow.iter().map(|a| a.name().to_owned()).collect(),
            named_contexts,
        };
        let (plan, resolved) = self
            .lower(
                &parsed,
                &options,
                &dockerfile,
                request.pull,
                &request.registry,
            )
            .await?;
        // As BuildKit, the checks see the base images the build resolved: their ENV and
        // SHELL, and their platform (`InvalidBaseImagePlatform`).
        // (The store's copies stay, without their platform, for stages the lowering did
        // not need.)
        let ask = crate::check::Ask {
            build_args: &request.build_args,
            target: request.target.as_deref(),
            platform: request.platform.as_ref(),
            ignore: Some(ignore.clone()),
        };
        let mut bases: BTreeMap<_, _> = crate::check::store_bases(&parsed, &ask, &store)
            .into_iter()
            .map(|(name, facts)| (name, facts.without_platform()))
            .collect();
        bases.extend(resolved);
        findings = crate::check::findings_with(&parsed, &dockerfile.text, ask, bases);
        violation_stops(&findings, &dockerfile)?;
        for arg in &plan.unused_args {
            warnings.push(format!(
                "build argument {arg:?} was given but no ARG in the build uses it"
            ));
        }
        let plan = Arc::new(plan);
        let contexts = scan_contexts(&plan, &context_dirs, &ignore)?;
        let registry = self.registry_config(&request.registry);
        let imports =
            crate::cache::load_imports(&request.cache_from, &registry, &mut warnings).await?;
        let solve_options = SolveOptions {
            no_cache: request.no_cache,
            no_cache_stages: request.no_cache_filter.clone(),
            jobs: request.jobs.unwrap_or(0),
            ignore: Some(ignore),
            secrets: request.secrets.clone(),
            ssh: request.ssh.clone(),
            in_flight: Some(Arc::clone(&self.inner.in_flight)),
            imports,
            explain_scope: Some(explain_scope(
                &dockerfile,
                &context,
                request.target.as_deref(),
            )),
            explain: request.explain,
            on_failed_step: request.on_failed_step.clone(),
        };
        let index_path = store.cache_index_path();
        let solved = solve::solve(
            Arc::clone(&plan),
            store.clone(),
            index_path.clone(),
            contexts,
            &solve_options,
            progress,
            cancel,
        )
        .await
        .map_err(|e| failure(&e, &dockerfile, store.root()))?;
        let cached = solved.results.values().filter(|d| d.cached).count();
        let ran = solved.results.len() - cached;
        warnings.extend(solved.warnings.iter().cloned());
        let inline = request
            .cache_to
            .iter()
            .any(|s| s.location == kiln_solver::cache_transfer::CacheLocation::Inline);
        let root = store.root().to_owned();
        let (image, solved, inline_steps) = {
            let (store, plan) = (store.clone(), Arc::clone(&plan));
            let annotations = request.annotations.clone();
            // Writing layers is blocking I/O: off the async workers.
            let (image, solved) = tokio::task::spawn_blocking(move || {
                let image = solve::export_image(&store, &index_path, &plan, &solved, annotations)
                    .map(|image| {
                        // `--cache-to type=inline`: the image carries the record of its
                        // own steps.
                        if inline {
                            crate::cache::with_inline_cache(&store, &plan, &solved, image)
                                .map(|(image, steps)| (image, Some(steps)))
                        } else {
                            Ok((image, None))
                        }
                    });
                (image, solved)
            })
            .await
            .map_err(|e| EngineError::io("the export task", std::io::Error::other(e)))?;
            let (image, steps) = image.map_err(|e| failure(&e, &dockerfile, &root))??;
            (image, solved, steps)
        };
        let outputs = output::effective(&request.outputs);
        let mut delivered = output::deliver(
            &store,
            &registry,
            &image,
            &outputs,
            &request.tags,
            &request.annotations,
            &request.allow,
        )
        .await?;
        if let Some(steps) = inline_steps {
            delivered.lines.push(format!(
                "Exported the cache inline in the image: {steps} steps"
            ));
        }
        crate::cache::finish(
            &store,
            &plan,
            solved,
            &request.cache_to,
            &registry,
            &mut delivered,
            &mut warnings,
        )
        .await?;
        Ok(BuildOutcome {
            metadata: output::metadata(&image, &delivered),
            ran,
            cached,
            image,
            delivered,
            warnings,
            findings,
            dockerfile,
        })
    }

    /// Reads the context and the Dockerfile and parses it.
    pub(crate) async fn prepare(
        &self,
        context: ContextSource,
        dockerfile: &DockerfileSource,
        dockerignore: Option<&str>,
    ) -> Result<Prepared, BuildError> {
        let store = self.store();
        let (dir, temp) = match context {
            ContextSource::Dir(dir) => {
                if !dir.is_dir() {
                    return Err(BuildError::invalid(
                        format!("the build context {} is not a directory", dir.display()),
                        "give the directory to build from (or - for a tar on stdin)",
                    ));
                }
                (dir, None)
            }
            ContextSource::Temp(temp) => (temp.path().to_owned(), Some(temp)),
            ContextSource::Git(url) => {
                let store = store.clone();
                let temp = tokio::task::spawn_blocking(move || TempContext::git(&store, &url))
                    .await
                    .map_err(|e| EngineError::io("the git checkout", std::io::Error::other(e)))??;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let from_stream = temp
            .as_ref()
            .and_then(|t| t.dockerfile().map(str::to_owned));
        let dockerfile = match (from_stream, dockerfile) {
            (Some(text), _) => DockerfileText {
                name: "Dockerfile".to_owned(),
                text,
                path: None,
            },
            (None, DockerfileSource::Inline { name, text }) => DockerfileText {
                name: name.clone(),
                text: text.clone(),
                path: None,
            },
            (None, DockerfileSource::Default) => {
                read_dockerfile(&dir.join("Dockerfile"), "Dockerfile")?
            }
            (None, DockerfileSource::InContext(rel)) => {
                let path = kiln_solver::context::clean_context_path(rel)
                    .map(|clean| dir.join(clean))
                    .map_err(|_| {
                        BuildError::invalid(
                            format!("the Dockerfile {rel} is outside the build context"),
                            "name a file inside the context",
                        )
                    })?;
                read_dockerfile(&path, rel)?
            }
            (None, DockerfileSource::Path(path)) => {
                read_dockerfile(path, &path.display().to_string())?
            }
        };
        let parsed = kiln_parser::parse(&dockerfile.text).map_err(|e| BuildError::Dockerfile {
            rendered: e.render(&dockerfile.name, &dockerfile.text),
        })?;
        let ignore = match dockerignore {
            Some(text) => {
                Matcher::from_lines(&dockerignore::read_ignore_lines(text)).map_err(|e| {
                    BuildError::invalid(
                        format!("the .dockerignore sent with the context: {e}"),
                        "fix the pattern (moby/patternmatcher syntax)",
                    )
                })?
            }
            None => ignore_for(&dir, dockerfile.path.as_deref())?,
        };
        Ok(Prepared {
            context: dir,
            _temp: temp,
            dockerfile,
            parsed,
            ignore,
        })
    }

    /// Lowers the Dockerfile, resolving base images as lowering meets them: lowering is
    /// synchronous and cheap, resolution is async (a pull), so each missing image stops
    /// the lowering, is resolved, and the lowering starts again with it known.
    async fn lower(
        &self,
        parsed: &Dockerfile,
        options: &LowerOptions,
        dockerfile: &DockerfileText,
        pull: bool,
        access: &RegistryAccess,
    ) -> Result<(Plan, BTreeMap<String, crate::check::BaseFacts>), BuildError> {
        let mut known: HashMap<(String, String), Result<BaseImage, String>> = HashMap::new();
        loop {
            let mut missing = None;
            let mut resolve = |reference: &str, wanted: &Platform| match known
                .get(&(reference.to_owned(), wanted.to_string()))
            {
                Some(found) => found.clone(),
                None => {
                    missing = Some((reference.to_owned(), wanted.clone()));
                    Err(String::new())
                }
            };
            let lowered = frontend::lower(parsed, options, &mut resolve);
            match (lowered, missing) {
                (Ok(plan), _) => return Ok((plan, resolved_bases(&known))),
                (Err(_), Some((reference, platform))) => {
                    let found = self.resolve_base(&reference, &platform, pull, access).await;
                    // An engine failure (a damaged store) is the build's error; a missing
                    // image is the lowering's, shown at the FROM line.
                    let found = match found {
                        Ok(image) => Ok(image),
                        Err(ResolveError::Engine(e)) => return Err(e.into()),
                        Err(ResolveError::NotFound(message)) => Err(message),
                    };
                    known.insert((reference, platform.to_string()), found);
                }
                (Err(e), None) => {
                    let rendered = match e.span {
                        Some(span) => kiln_parser::excerpt(
                            &dockerfile.name,
                            &dockerfile.text,
                            &span,
                            &e.message,
                            e.hint.as_deref(),
                        ),
                        None => BuildError::Invalid {
                            message: e.message.clone(),
                            hint: e.hint.clone(),
                        }
                        .render(),
                    };
                    return Err(BuildError::Dockerfile { rendered });
                }
            }
        }
    }

    /// A base image: the store's (for the wanted architecture) unless `pull`, else the
    /// registry's.
    async fn resolve_base(
        &self,
        reference: &str,
        wanted: &Platform,
        pull: bool,
        access: &RegistryAccess,
    ) -> Result<BaseImage, ResolveError> {
        let local = if pull {
            None
        } else {
            self.stored_base(reference)?
        };
        match local {
            Some(image) if image.config.architecture == wanted.architecture => Ok(image),
            Some(image) => self.pull_base(reference, wanted, access).await.map_err(|e| match e {
                ResolveError::NotFound(message) => ResolveError::NotFound(format!(
                    "the store has {reference} for linux/{} only, and {wanted} is needed: {message}",
                    image.config.architecture
                )),
                other => other,
            }),
            None => self.pull_base(reference, wanted, access).await,
        }
    }

    /// The store's image of that name; `None` only when the store has none — a damaged
    /// one is an error, never a reason to pull something else.
    fn stored_base(&self, reference: &str) -> Result<Option<BaseImage>, ResolveError> {
        match kiln_image::image::find_image(self.store(), reference) {
            Ok((names, image)) => Ok(Some(BaseImage {
                reference: names
                    .first()
                    .cloned()
                    .unwrap_or_else(|| reference.to_owned()),
                digest: image.manifest_descriptor.digest.to_string(),
                config: image.config,
                layers: image.manifest.layers,
            })),
            Err(StoreError::ImageNotFound { .. }) => Ok(None),
            Err(e) => Err(ResolveError::Engine(EngineError::invalid(
                format!("the store's image {reference} is damaged: {e}"),
                "run `kiln fsck`, or remove it (kiln rmi) and import or pull it again".to_owned(),
            ))),
        }
    }

    async fn pull_base(
        &self,
        reference: &str,
        platform: &Platform,
        access: &RegistryAccess,
    ) -> Result<BaseImage, ResolveError> {
        let pulled = self.pull(reference, platform, access).await;
        if let Err(e) = pulled {
            return Err(ResolveError::NotFound(format!(
                "{reference}: not in the local store, and pulling it failed: {e}"
            )));
        }
        self.stored_base(reference)?.ok_or_else(|| {
            ResolveError::NotFound(format!(
                "{reference}: pulled, but not found in the store afterwards"
            ))
        })
    }
}

/// What the checks use of each base image the lowering resolved, by the name it was
/// asked for.
fn resolved_bases(
    known: &HashMap<(String, String), Result<BaseImage, String>>,
) -> BTreeMap<String, crate::check::BaseFacts> {
    let mut out = BTreeMap::new();
    for ((reference, _), found) in known {
        if let Ok(image) = found {
            let facts = crate::check::BaseFacts::of(&image.config, !image.layers.is_empty());
            out.insert(reference.clone(), facts);
        }
    }
    out
}

/// With `# check=error=true`, a finding fails the build: the findings and BuildKit's
/// `lint violation found for rules: ...`.
fn violation_stops(findings: &[Finding], dockerfile: &DockerfileText) -> Result<(), BuildError> {
    let Some(message) = kiln_parser::lint::violation(findings) else {
        return Ok(());
    };
    let mut rendered = String::new();
    for finding in findings {
        let kind = if finding.error { "error" } else { "warning" };
        rendered.push_str(&format!(
            "{kind}: {}",
            finding.render(&dockerfile.name, &dockerfile.text)
        ));
    }
    rendered.push_str(&format!("error: {message}\n"));
    Err(BuildError::Dockerfile { rendered })
}

enum ResolveError {
    /// Not to be had: the lowering shows it at the FROM line.
    NotFound(String),
    /// The store failed.
    Engine(EngineError),
}

impl From<ResolveError> for BuildError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound(message) => BuildError::Invalid {
                message,
                hint: None,
            },
            ResolveError::Engine(e) => BuildError::Engine(e),
        }
    }
}

fn read_dockerfile(path: &Path, name: &str) -> Result<DockerfileText, BuildError> {
    // Bounded, regular files only, UTF-8 errors placed at their line and column.
    let text =
        kiln_solver::input_file::read_dockerfile(path).map_err(|e| BuildError::Dockerfile {
            rendered: e.render(name),
        })?;
    Ok(DockerfileText {
        name: name.to_owned(),
        text,
        path: Some(path.to_owned()),
    })
}

/// The `.dockerignore` that applies: `<Dockerfile>.dockerignore` beside the Dockerfile
/// first, then the context's `.dockerignore`.
pub fn ignore_for(context: &Path, dockerfile: Option<&Path>) -> Result<Matcher, BuildError> {
    match ignore_file_for(context, dockerfile)? {
        Some((path, text)) => {
            Matcher::from_lines(&dockerignore::read_ignore_lines(&text)).map_err(|e| {
                BuildError::invalid(
                    format!("{}: {e}", path.display()),
                    "fix the pattern (moby/patternmatcher syntax)",
                )
            })
        }
        None => Ok(Matcher::default()),
    }
}

/// The file [`ignore_for`] reads, and its text; `None` when there is none (a thin
/// client sends the text with the context it filtered).
pub fn ignore_file_for(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<(PathBuf, String)>, BuildError> {
    let mut candidates = Vec::new();
    if let Some(path) = dockerfile
        && let (Some(dir), Some(name)) = (path.parent(), path.file_name())
    {
        let [beside, _] = dockerignore::ignore_file_for(&name.to_string_lossy());
        candidates.push(dir.join(beside));
    }
    let [_, in_context] = dockerignore::ignore_file_for("Dockerfile");
    candidates.push(context.join(in_context));
    for candidate in candidates {
        match std::fs::read_to_string(&candidate) {
            Ok(text) => return Ok(Some((candidate, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::io(&candidate, e).into()),
        }
    }
    Ok(None)
}

/// Scans each context the plan reads (`.dockerignore` applied while walking).
fn scan_contexts(
    plan: &Plan,
    dirs: &BTreeMap<String, PathBuf>,
    ignore: &Matcher,
) -> Result<HashMap<String, Arc<ContextTree>>, BuildError> {
    let mut contexts = HashMap::new();
    for id in plan.graph.needed_for(&[plan.target]) {
        let Op::Context { name } = &plan.graph.vertex(id).op else {
            continue;
        };
        let Some(dir) = dirs.get(name) else {
            continue;
        };
        let matcher = if name == "context" {
            ignore.clone()
        } else {
            ignore_for(dir, None)?
        };
        let tree = ContextTree::scan(dir, &matcher).map_err(|e| {
            BuildError::invalid(
                format!("read the build context {}: {e}", dir.display()),
                "check that the context is readable",
            )
        })?;
        contexts.insert(name.clone(), Arc::new(tree));
    }
    Ok(contexts)
}

/// A solve error as data, with the Dockerfile excerpt rendered.
fn failure(e: &SolveError, dockerfile: &DockerfileText, root: &Path) -> BuildError {
    if e.is_cancelled() {
        return BuildError::Cancelled;
    }
    let mut message = e.error.to_string();
    let full = is_out_of_space(&*e.error)
        || matches!(&*e.error, StepError::Index(index) if index.is_disk_full());
    if full {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        message = match &*e.error {
            // Its message names the store already.
            StepError::Layer { .. } => format!("no space left on device: {message}"),
            _ => format!(
                "no space left on device in the store {}: {message}",
                root.display()
            ),
        };
    }
    let hint = match &*e.error {
        _ if full => Some(
            "free space on the store's filesystem (`kiln prune` removes what no image or cache entry uses, this step's leftovers included) or give --root a bigger one; the step was not cached, so the next build runs it again",
        ),
        StepError::ExitCode { .. } => {
            Some("fix the command, or run it by hand with `kiln debug run`")
        }
        StepError::SourceNotFound {
            ignored_by: Some(_),
            ..
        } => Some("remove the pattern from .dockerignore, or add a `!` exception for the file"),
        StepError::SourceNotFound { .. } => Some(
            "COPY sources are relative to the build context; check the path and the context directory",
        ),
        StepError::TreeSourceNotFound { .. } => Some(
            "COPY --from reads that stage's or image's filesystem, not the context; check the path there",
        ),
        StepError::WildcardBaseMissing { .. } => Some(
            "the directories before a source's first wildcard must exist; fix the path or create them",
        ),
        StepError::Pattern { .. } => Some(
            "COPY sources use Go's path.Match: close every `[`, and write a literal `*`, `?` or `[` as `\\*`, `\\?`, `\\[`",
        ),
        _ => None,
    };
    if let Some(label) = &e.label {
        message = format!("{label}: {message}");
    }
    let mut rendered = match e.span {
        Some(span) => {
            kiln_parser::excerpt(&dockerfile.name, &dockerfile.text, &span, &message, hint)
        }
        None => {
            let mut t = format!("error: {message}\n");
            if let Some(h) = hint {
                t.push_str(&format!("  = hint: {h}\n"));
            }
            t
        }
    };
    let log_tail = match &*e.error {
        StepError::ExitCode { tail, .. } => tail.clone(),
        _ => Vec::new(),
    };
    if !log_tail.is_empty() {
        rendered.push_str(&format!(
            "  = the last {} lines of its output:\n",
            log_tail.len()
        ));
        for line in &log_tail {
            rendered.push_str(&format!("    {line}\n"));
        }
    }
    BuildError::Failed(BuildFailure {
        step: e.label.clone(),
        message: e.error.to_string(),
        hint: hint.map(str::to_owned),
        log_tail,
        rendered,
    })
}

/// Whether the store's filesystem was full (ENOSPC, or EDQUOT: a quota is as full)
/// somewhere down the error's causes.
fn is_out_of_space(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// `--build-arg SOURCE_DATE_EPOCH=VALUE` as BuildKit's frontend resolves it (`epoch.go`):
/// seconds as they are; `context`, the main context's git commit time (nothing for a
/// context that is not a git checkout). BuildKit also takes a named context or a
/// `FROM scratch` stage with one remote ADD; kiln says it does not yet, and any other
/// value is BuildKit's `invalid SOURCE_DATE_EPOCH`.
fn resolve_source_date_epoch(
    build_args: &mut BTreeMap<String, String>,
    context_commit_time: Option<i64>,
    parsed: &kiln_parser::Dockerfile,
    named_contexts: &BTreeMap<String, NamedSource>,
) -> Result<(), BuildError> {
    let Some(value) = build_args.get("SOURCE_DATE_EPOCH").cloned() else {
        return Ok(());
    };
    if value.is_empty() || value.parse::<i64>().is_ok() {
        return Ok(());
    }
    if value == "context" {
        let resolved = context_commit_time
            .map(|t| t.to_string())
            .unwrap_or_default();
        build_args.insert("SOURCE_DATE_EPOCH".to_owned(), resolved);
        return Ok(());
    }
    let is_stage = parsed.stages.iter().any(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&value))
    });
    if is_stage || named_contexts.contains_key(&value) {
        return Err(BuildError::invalid(
            format!(
                "SOURCE_DATE_EPOCH={value}: kiln does not take the time from a stage or a named context yet"
            ),
            "give seconds since the epoch, or context for a git context's commit time",
        ));
    }
    Err(BuildError::invalid(
        format!("invalid SOURCE_DATE_EPOCH: {value}"),
        "give seconds since the epoch, or context (a git context's commit time)",
    ))
}

/// What `--explain` compares a build with: the last build of the same Dockerfile (by its
/// path, else the context's and its name) for the same target.
fn explain_scope(dockerfile: &DockerfileText, context: &Path, target: Option<&str>) -> String {
    let file = match &dockerfile.path {
        Some(path) => std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()),
        None => std::fs::canonicalize(context)
            .unwrap_or_else(|_| context.to_owned())
            .join(&dockerfile.name),
    };
    format!("{}#{}", file.display(), target.unwrap_or_default())
}
