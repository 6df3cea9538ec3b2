//! Lowering (DESIGN.md step 3): a parsed Dockerfile and the build options become a
//! [`Plan`]: the build graph, the label and Dockerfile line of every vertex, and the
//! target stage's image config with its history.
//!
//! It follows BuildKit's `dockerfile2llb` (see `docs/buildkit-semantics.md`): only the
//! stages the target needs are lowered; metadata instructions change the stage's config
//! and the environment of later RUNs and make no vertex; FROM, RUN, COPY and WORKDIR
//! make vertices; ARGs are scoped per stage with the global ones as defaults. Base images
//! are resolved while lowering, because their config (ENV, WORKDIR, USER, ONBUILD) shapes
//! what follows; everything else that reads files (context digests, glob matches, user
//! names) waits for the run, where the files are.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_image::config::{ContainerConfig, History, ImageConfig, RootFs};
use kiln_parser::ast::{Command, Copy, Instruction, Kind, Run};
use kiln_parser::{Dockerfile, Span, did_you_mean};
use kiln_snapshotter::Descriptor;

use crate::graph::{Graph, VertexId};
use crate::meta::{self, StageMeta, clean_abs, command_args};
use crate::ops::chmod::Chmod;
use crate::ops::{CacheSeed, CopyOp, ExecMount, ExecOp, FilesOp, GitOp, HttpOp, MkdirOp, Op};
use crate::request::NetworkMode;

mod copy;
mod run;
mod stage;

pub use run::run_argv;

/// The comment BuildKit writes on every history entry it makes.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The `PATH` an image gets when its config has none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build arguments that reach every RUN without a declaration and stay out of cache keys
/// and history, as BuildKit treats proxy settings.
const PROXY_ARGS: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

/// A lowering error: what is wrong, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LowerError {
    /// The instruction at fault, when there is one.
    pub span: Option<Span>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl LowerError {
    fn at(span: Span, message: impl Into<String>) -> LowerError {
        LowerError {
            span: Some(span),
            message: message.into(),
            hint: None,
        }
    }

    /// A failed expansion at `span`; a bound that was hit says what to change.
    fn expansion(span: Span, err: &kiln_parser::shell::Error) -> LowerError {
        let lowered = LowerError::at(span, err.to_string());
        match err.limit {
            Some(limit) => lowered.hint(limit.hint()),
            None => lowered,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> LowerError {
        self.hint = Some(hint.into());
        self
    }
}

pub use kiln_image::platform::Platform;

/// Parses `os/arch[/variant]`, or `arch` alone meaning linux, as `--platform` and
/// `FROM --platform` take it.
pub fn parse_platform(text: &str) -> Option<Platform> {
    let text = text.trim().to_lowercase();
    if text.contains('/') {
        Platform::parse(&text).ok()
    } else {
        Platform::parse(&format!("linux/{text}")).ok()
    }
}

/// What lowering needs besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`, when given.
    pub platform: Option<Platform>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--network` for RUNs that do not say.
    pub network: NetworkMode,
    /// `--allow` entitlements (`network.host`).
    pub allow: Vec<String>,
    /// `--build-context`s, by name: they stand in for a stage or image of that name in
    /// FROM, `COPY --from` and `RUN --mount=from=`.
    pub named_contexts: BTreeMap<String, NamedSource>,
}

/// What a `--build-context` names, once the cli has resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedSource {
    /// A directory, read in place like the main context (its tree is scanned by name).
    Dir,
    /// An image (a reference for the store or a registry).
    Image(String),
}

/// Where `--from` (or a FROM) reads.
enum FromSource {
    Context(String),
    Stage(usize),
    Image(String),
}

/// A base image as the store (or a registry) resolved it.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference, normalised (`docker.io/library/busybox:latest`, `app:latest`).
    pub reference: String,
    /// The manifest digest: the identity of its content.
    pub digest: String,
    /// Its config.
    pub config: ImageConfig,
    /// Its layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
}

/// Where one layer of the result comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSource {
    /// Layer `layer` of base image `image` (an index into [`Plan::base_images`]): exported
    /// as the same blob.
    Base {
        /// Which base image.
        image: usize,
        /// Which of its layers.
        layer: usize,
    },
    /// The changes a vertex made (RUN, COPY, WORKDIR).
    Vertex(VertexId),
}

/// What the build shows and reports about one vertex.
#[derive(Debug, Clone)]
pub struct Step {
    /// `[stage 2/4] RUN make`.
    pub label: String,
    /// The Dockerfile line it comes from (none for the context).
    pub span: Option<Span>,
    /// The stage it belongs to (its name, or `stage-N`).
    pub stage: String,
}

/// The lowered build.
#[derive(Debug)]
pub struct Plan {
    /// The graph.
    pub graph: Graph<Op>,
    /// Labels and lines, per vertex (the first stage to add a merged vertex names it).
    pub steps: HashMap<VertexId, Step>,
    /// The vertex whose filesystem is the result.
    pub target: VertexId,
    /// The target stage's name.
    pub target_stage: String,
    /// The result's config; history entries this build adds have no `created` yet.
    pub image: ImageConfig,
    /// The result's layers, bottom first, matching the non-empty history entries.
    pub layers: Vec<LayerSource>,
    /// The base images the plan reads.
    pub base_images: Vec<BaseImage>,
    /// Which base image each image vertex stands for.
    pub image_vertices: HashMap<VertexId, usize>,
    /// Build arguments given but never declared (BuildKit warns about them).
    pub unused_args: Vec<String>,
    /// Proxy settings from build args, given to every RUN outside its cache key.
    pub proxy_env: Vec<String>,
    /// `SOURCE_DATE_EPOCH`, from a build arg or a global ARG default.
    pub source_date_epoch: Option<i64>,
}

impl StageState {
    /// Sets a stage variable (ENV, or an ARG's value) in O(1).
    fn set_env(&mut self, key: &str, value: &str) {
        crate::meta::set_indexed(
            &mut self.env,
            &mut self.env_index,
            key,
            |(k, _): &(String, String)| k.as_str(),
            (key.to_owned(), value.to_owned()),
        );
    }
}

#[derive(Clone)]
struct StageState {
    index: usize,
    /// The platform the stage builds for (`FROM --platform`, else the target's).
    platform: Platform,
    name: String,
    image: ImageConfig,
    meta: StageMeta,
    env: Vec<(String, String)>,
    /// Where each key of `env` is (a hint, see `meta::set_indexed`).
    env_index: HashMap<String, usize>,
    args: Vec<String>,
    fs: VertexId,
    layers: Vec<LayerSource>,
}

enum Base {
    Scratch,
    Stage(usize),
    Image(String),
    Context(String),
}

struct Lowerer<'a> {
    file: &'a Dockerfile,
    options: &'a LowerOptions,
    resolve: &'a mut dyn FnMut(&str, &Platform) -> Result<BaseImage, String>,
    graph: Graph<Op>,
    steps: HashMap<VertexId, Step>,
    base_images: Vec<BaseImage>,
    image_vertices: HashMap<VertexId, usize>,
    images_by_ref: HashMap<String, VertexId>,
    contexts: HashMap<String, VertexId>,
    stage_results: HashMap<usize, VertexId>,
    global_env: Vec<(String, String)>,
    used_args: BTreeSet<String>,
    platform: Platform,
    escape: char,
    multi_stage: bool,
}

/// Lowers `file` for `options`; `resolve` finds a base image by reference, for a
/// platform.
pub fn lower(
    file: &Dockerfile,
    options: &LowerOptions,
    resolve: &mut dyn FnMut(&str, &Platform) -> Result<BaseImage, String>,
) -> Result<Plan, LowerError> {
    if file.stages.is_empty() {
        return Err(LowerError {
            span: None,
            message: "the Dockerfile has no stage to build".to_owned(),
            hint: Some("start it with FROM IMAGE (or FROM scratch)".to_owned()),
        });
    }
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let mut lowerer = Lowerer {
        file,
        options,
        resolve,
        graph: Graph::new(),
        steps: HashMap::new(),
        base_images: Vec::new(),
        image_vertices: HashMap::new(),
        images_by_ref: HashMap::new(),
        contexts: HashMap::new(),
        stage_results: HashMap::new(),
        global_env: Vec::new(),
        used_args: BTreeSet::new(),
        escape: file.directives.escape,
        multi_stage: file.stages.len() > 1,
        platform,
    };
    lowerer.global_args()?;
    let target = lowerer.target_index()?;
    let bases = lowerer.bases()?;
    let needed = lowerer.reachable(target, &bases)?;
    let mut states: Vec<Option<StageState>> = vec![None; file.stages.len()];
    for index in 0..file.stages.len() {
        if needed[index] {
            let state = lowerer.stage(index, &bases[index], &states)?;
            lowerer.stage_results.insert(index, state.fs);
            states[index] = Some(state);
        }
    }
    let Some(mut state) = states[target].take() else {
        return Err(LowerError {
            span: None,
            message: "internal error: the target stage was not lowered".to_owned(),
            hint: None,
        });
    };
    for (key, value) in &options.labels {
        state.image.config.labels.insert(key.clone(), value.clone());
    }
    if let Some(platform) = &options.platform {
        state.image.os = platform.os.clone();
        state.image.architecture = platform.architecture.clone();
        state.image.variant = platform.variant.clone();
    }
    state.image.created = None;
    let unused_args = options
        .build_args
        .keys()
        .filter(|k| !lowerer.used_args.contains(*k) && !is_proxy(k) && !is_builtin_arg(k))
        .cloned()
        .collect();
    let proxy_env = options
        .build_args
        .iter()
        .filter(|(k, _)| is_proxy(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let source_date_epoch = options
        .build_args
        .get("SOURCE_DATE_EPOCH")
        .map(String::as_str)
        .or_else(|| lowerer.global_env.get_value("SOURCE_DATE_EPOCH"))
        .and_then(|v| v.trim().parse::<i64>().ok());
    Ok(Plan {
        graph: lowerer.graph,
        steps: lowerer.steps,
        target: state.fs,
        target_stage: state.name,
        image: state.image,
        layers: state.layers,
        base_images: lowerer.base_images,
        image_vertices: lowerer.image_vertices,
        unused_args,
        proxy_env,
        source_date_epoch,
    })
}

trait EnvList {
    fn get_value(&self, key: &str) -> Option<&str>;
    fn set(&mut self, key: &str, value: &str);
}

impl EnvList for Vec<(String, String)> {
    fn get_value(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &str, value: &str) {
        match self.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_owned(),
            None => self.push((key.to_owned(), value.to_owned())),
        }
    }
}

/// Whether a build arg is one of the proxy settings (either case), which reach every RUN
/// and may hold credentials.
pub fn is_proxy(key: &str) -> bool {
    PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(key))
}

fn is_builtin_arg(key: &str) -> bool {
    key.starts_with("BUILDKIT_") || key == "SOURCE_DATE_EPOCH"
}

impl StageState {
    /// A stage on a fresh base (scratch, an image, a context): no ARGs yet.
    fn fresh(
        index: usize,
        name: &str,
        platform: &Platform,
        image: ImageConfig,
        fs: VertexId,
        layers: Vec<LayerSource>,
    ) -> StageState {
        StageState {
            index,
            platform: platform.clone(),
            name: name.to_owned(),
            image,
            meta: StageMeta::default(),
            env: Vec::new(),
            env_index: HashMap::new(),
            args: Vec::new(),
            fs,
            layers,
        }
    }
}

impl Lowerer<'_> {
    fn platform_args(&self) -> Vec<(String, String)> {
        let build = Platform::host();
        let target = &self.platform;
        let mut out = Vec::new();
        for (prefix, p) in [("BUILD", &build), ("TARGET", target)] {
            out.push((format!("{prefix}PLATFORM"), p.to_string()));
            out.push((format!("{prefix}OS"), p.os.clone()));
            out.push((format!("{prefix}ARCH"), p.architecture.clone()));
            out.push((
                format!("{prefix}VARIANT"),
                p.variant.clone().unwrap_or_default(),
            ));
        }
        out
    }

    /// The automatic platform args, overridable by build args, then each global ARG.
    fn global_args(&mut self) -> Result<(), LowerError> {
        let mut env = Vec::new();
        for (key, value) in self.platform_args() {
            let value = self.options.build_args.get(&key).cloned().unwrap_or(value);
            env.set(&key, &value);
        }
        for instruction in &self.file.global_args {
            let Kind::Arg(decls) = &instruction.kind else {
                continue;
            };
            for decl in decls {
                let name = self.expand_word(&decl.name, &env, instruction.span)?;
                let value = if let Some(given) = self.options.build_args.get(&name) {
                    self.used_args.insert(name.clone());
                    Some(given.clone())
                } else {
                    match &decl.default {
                        Some(default) => Some(self.expand_word(default, &env, instruction.span)?),
                        None => None,
                    }
                };
                if let Some(value) = value {
                    env.set(&name, &value);
                }
            }
        }
        self.global_env = env;
        Ok(())
    }

    fn expand_word(
        &self,
        word: &str,
        env: &dyn kiln_parser::shell::Env,
        span: Span,
    ) -> Result<String, LowerError> {
        kiln_parser::shell::Lexer::new(self.escape)
            .expand_word(word, env)
            .map(|e| e.value)
            .map_err(|e| LowerError::expansion(span, &e))
    }

    /// The names stages were given (`AS name`), for did-you-mean hints.
    fn stage_names(&self) -> Vec<&str> {
        self.file
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect()
    }

    fn stage_name(&self, index: usize) -> String {
        self.file.stages[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    fn target_index(&self) -> Result<usize, LowerError> {
        let Some(target) = &self.options.target else {
            return Ok(self.file.stages.len() - 1);
        };
        let wanted = target.to_lowercase();
        if let Some(stage) = self
            .file
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(wanted.as_str()))
        {
            return Ok(stage.index);
        }
        let names = self.stage_names();
        let hint = match did_you_mean(target, &names) {
            Some(name) => format!("did you mean {name}?"),
            None if names.is_empty() => {
                "the Dockerfile names no stage; name one with FROM IMAGE AS NAME".to_owned()
            }
            None => format!("the stages are: {}", names.join(", ")),
        };
        Err(LowerError {
            span: None,
            message: format!("target stage {target:?} could not be found"),
            hint: Some(hint),
        })
    }

    /// What each stage's FROM names, expanded with the global args.
    fn bases(&self) -> Result<Vec<Base>, LowerError> {
        let mut out = Vec::new();
        for stage in &self.file.stages {
            let image = self.expand_word(&stage.from.image, &self.global_env, stage.span)?;
            if image.trim().is_empty() {
                return Err(LowerError::at(
                    stage.span,
                    format!("base name ({}) should not be blank", stage.from.image),
                )
                .hint("give the ARG a default before the first FROM, or pass --build-arg"));
            }
            if let Some(named) = self.options.named_contexts.get(&image) {
                out.push(match named {
                    NamedSource::Dir => Base::Context(image.clone()),
                    NamedSource::Image(reference) => Base::Image(reference.clone()),
                });
                continue;
            }
            let earlier = self.file.stages[..stage.index]
                .iter()
                .find(|s| s.name.as_deref() == Some(image.as_str()));
            out.push(match earlier {
                Some(s) => Base::Stage(s.index),
                None if image == "scratch" => Base::Scratch,
                None => Base::Image(image),
            });
        }
        Ok(out)
    }

    /// The stage a `--from` names: a name (case-insensitive), an index, or none (an image).
    fn stage_named(
        &self,
        from: &str,
        current: usize,
        span: Span,
    ) -> Result<Option<usize>, LowerError> {
        if from.contains('$') {
            return Err(
                LowerError::at(span, "variable expansion is not supported for --from").hint(
                    "define a new stage with FROM using ARG from global scope as a workaround",
                ),
            );
        }
        let stages = &self.file.stages;
        let found = if let Ok(index) = from.parse::<usize>() {
            if index >= stages.len() {
                return Err(
                    LowerError::at(span, format!("invalid stage index {index}")).hint(format!(
                        "stages are numbered from 0 to {}",
                        stages.len() - 1
                    )),
                );
            }
            Some(index)
        } else {
            let wanted = from.to_lowercase();
            stages
                .iter()
                .find(|s| s.name.as_deref() == Some(wanted.as_str()))
                .map(|s| s.index)
        };
        match found {
            Some(index) if index == current => Err(LowerError::at(
                span,
                format!(
                    "circular dependency detected on stage: {}",
                    self.stage_name(index)
                ),
            )
            .hint("a stage cannot copy from itself; copy from an earlier stage")),
            Some(index) if index > current => Err(LowerError::at(
                span,
                format!(
                    "cannot copy from stage {:?}, it needs to be defined before current stage {:?}",
                    self.stage_name(index),
                    self.stage_name(current)
                ),
            )
            .hint("move the stage above this one")),
            other => Ok(other),
        }
    }

    /// Which stages the target needs: its base chain and `--from` sources, transitively.
    fn reachable(&self, target: usize, bases: &[Base]) -> Result<Vec<bool>, LowerError> {
        let mut needed = vec![false; self.file.stages.len()];
        let mut stack = vec![target];
        while let Some(index) = stack.pop() {
            if std::mem::replace(&mut needed[index], true) {
                continue;
            }
            if let Base::Stage(parent) = bases[index] {
                stack.push(parent);
            }
            for instruction in &self.file.stages[index].instructions {
                for from in froms(instruction) {
                    if let FromSource::Stage(dep) =
                        self.resolve_from(&from, index, instruction.span)?
                    {
                        stack.push(dep);
                    }
                }
            }
        }
        Ok(needed)
    }

    fn add(&mut self, op: Op, inputs: Vec<VertexId>, step: Step) -> VertexId {
        let id = self.graph.add(op, inputs, step.label.clone());
        self.steps.entry(id).or_insert(step);
        id
    }

    fn image_vertex(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
        stage: &str,
    ) -> Result<(VertexId, usize), LowerError> {
        let memo = format!("{reference} {}", platform);
        if let Some(&vertex) = self.images_by_ref.get(&memo) {
            return Ok((vertex, self.image_vertices[&vertex]));
        }
        let names = self.stage_names();
        let hint = match did_you_mean(reference, &names) {
            Some(stage) => {
                format!("did you mean the stage {stage}? (no image {reference} was found)")
            }
            None => "import it with `kiln import`, pull it with `kiln pull`, or check the name"
                .to_owned(),
        };
        let base = (self.resolve)(reference, platform)
            .map_err(|message| LowerError::at(span, message).hint(hint))?;
        let op = Op::Image {
            reference: base.reference.clone(),
            digest: base.digest.clone(),
        };
        let label = format!("[internal] load {}", base.reference);
        let vertex = self.add(
            op,
            Vec::new(),
            Step {
                label,
                span: Some(span),
                stage: stage.to_owned(),
            },
        );
        let index = match self.image_vertices.get(&vertex) {
            Some(&i) => i,
            None => {
                self.base_images.push(base);
                self.base_images.len() - 1
            }
        };
        self.image_vertices.insert(vertex, index);
        self.images_by_ref.insert(memo, vertex);
        Ok((vertex, index))
    }

    fn context_vertex(&mut self, name: &str) -> VertexId {
        if let Some(&v) = self.contexts.get(name) {
            return v;
        }
        let v = self.add(
            Op::Context {
                name: name.to_owned(),
            },
            Vec::new(),
            Step {
                label: format!("[internal] load build context {name}")
                    .replace(" context context", " context"),
                span: None,
                stage: String::new(),
            },
        );
        self.contexts.insert(name.to_owned(), v);
        v
    }

    /// A copy of part of a context (`source`, cleaned) onto nothing: how a context
    /// becomes a tree that a stage or a bind mount can stand on.
    fn context_tree(&mut self, name: &str, source: &str, span: Span) -> VertexId {
        let scratch = self.add(
            Op::Scratch,
            Vec::new(),
            Step {
                label: "[internal] scratch".to_owned(),
                span: Some(span),
                stage: String::new(),
            },
        );
        let context = self.context_vertex(name);
        self.add(
            Op::Copy(CopyOp {
                sources: vec![source.to_owned()],
                dest: "/".to_owned(),
                dest_is_dir: true,
                chown: None,
                chmod: None,
                excludes: Vec::new(),
                context: Some(name.to_owned()),
                parents: None,
                unpack: false,
                heredocs: Vec::new(),
            }),
            vec![scratch, context],
            Step {
                label: format!("[internal] context {name}:/{source}"),
                span: Some(span),
                stage: String::new(),
            },
        )
    }

    /// What a `--from` names: a named context, a stage (by name or index), or an image.
    fn resolve_from(
        &self,
        from: &str,
        current: usize,
        span: Span,
    ) -> Result<FromSource, LowerError> {
        if let Some(named) = self.options.named_contexts.get(from) {
            return Ok(match named {
                NamedSource::Dir => FromSource::Context(from.to_owned()),
                NamedSource::Image(reference) => FromSource::Image(reference.clone()),
            });
        }
        Ok(match self.stage_named(from, current, span)? {
            Some(index) => FromSource::Stage(index),
            None => FromSource::Image(from.to_owned()),
        })
    }

    fn scratch_image(&self, platform: &Platform) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: ContainerConfig {
                env: vec![DEFAULT_PATH_ENV.to_owned()],
                working_dir: "/".to_owned(),
                ..ContainerConfig::default()
            },
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: Vec::new(),
            },
            ..ImageConfig::default()
        }
    }

    /// The filesystem vertex of an earlier stage, for `COPY --from`. Stages are lowered in
    /// file order and sources must come first, so it is known by now.
    fn stage_fs(&mut self, index: usize, span: Span) -> Result<VertexId, LowerError> {
        self.stage_results.get(&index).copied().ok_or_else(|| {
            LowerError::at(span, "internal error: a --from stage was not lowered first")
        })
    }
}

/// The `--from` values an instruction reads (COPY only for now).
fn froms(instruction: &Instruction) -> Vec<String> {
    match &instruction.kind {
        Kind::Copy(copy) => copy.from.iter().cloned().collect(),
        Kind::Run(run) => run
            .mounts
            .iter()
            .filter(|m| matches!(m.kind.as_str(), "bind" | "cache"))
            .filter_map(|m| m.get(&["from"]).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn makes_vertex(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_)
    )
}

fn push_history(image: &mut ImageConfig, created_by: String, with_layer: bool) {
    image.history.push(History {
        created: None,
        created_by,
        comment: HISTORY_COMMENT.to_owned(),
        empty_layer: !with_layer,
    });
}

/// The instruction's text for a progress label: the original line, continuations joined.
fn display_text(instruction: &Instruction) -> String {
    instruction.original.trim().to_owned()
}

fn one_line(text: &str) -> String {
    let mut out: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > 120 {
        out = out.chars().take(117).collect::<String>() + "...";
    }
    out
}
