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

use kiln_exporter::config::{ContainerConfig, History, ImageConfig, RootFs};
use kiln_parser::ast::{Command, Copy, Instruction, Kind, Run};
use kiln_parser::{Dockerfile, Span, did_you_mean};
use kiln_snapshotter::Descriptor;

use crate::graph::{Graph, VertexId};
use crate::meta::{self, StageMeta, clean_abs, command_args};
use crate::ops::chmod::Chmod;
use crate::ops::{CopyOp, ExecMount, ExecOp, FilesOp, GitOp, HttpOp, MkdirOp, Op};
use crate::request::NetworkMode;

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

    fn hint(mut self, hint: impl Into<String>) -> LowerError {
        self.hint = Some(hint.into());
        self
    }
}

pub use kiln_exporter::registry::Platform;

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

#[derive(Clone)]
struct StageState {
    index: usize,
    /// The platform the stage builds for (`FROM --platform`, else the target's).
    platform: Platform,
    name: String,
    image: ImageConfig,
    meta: StageMeta,
    env: Vec<(String, String)>,
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

fn is_proxy(key: &str) -> bool {
    PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(key))
}

fn is_builtin_arg(key: &str) -> bool {
    key.starts_with("BUILDKIT_") || key == "SOURCE_DATE_EPOCH"
}

fn env_pairs(config: &ContainerConfig) -> Vec<(String, String)> {
    config.env_pairs()
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
            .map_err(|e| LowerError::at(span, e.to_string()))
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
        let names: Vec<&str> = self
            .file
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
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
        let names: Vec<&str> = self
            .file
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
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

    fn stage(
        &mut self,
        index: usize,
        base: &Base,
        states: &[Option<StageState>],
    ) -> Result<StageState, LowerError> {
        let stage = &self.file.stages[index];
        let name = self.stage_name(index);
        // BuildKit counts FROM and every instruction that makes a vertex: [name k/n].
        let total = 1 + stage
            .instructions
            .iter()
            .filter(|i| makes_vertex(&i.kind))
            .count();
        let platform = match &stage.from.platform {
            Some(expr) => {
                let text = self.expand_word(expr, &self.global_env, stage.span)?;
                if text.trim().is_empty() {
                    return Err(LowerError::at(
                        stage.span,
                        format!("empty platform value from expression {expr}"),
                    )
                    .hint("give the ARG a value, e.g. --build-arg or a default before FROM"));
                }
                parse_platform(&text).ok_or_else(|| {
                    LowerError::at(stage.span, format!("failed to parse platform {text}"))
                        .hint("write OS/ARCH[/VARIANT], e.g. linux/arm64")
                })?
            }
            None => match base {
                Base::Stage(parent) => states[*parent]
                    .as_ref()
                    .map_or_else(|| self.platform.clone(), |s| s.platform.clone()),
                _ => self.platform.clone(),
            },
        };
        let mut state;
        let mut triggers: Vec<String>;
        match base {
            Base::Scratch => {
                let fs = self.add(
                    Op::Scratch,
                    Vec::new(),
                    Step {
                        label: "[internal] scratch".to_owned(),
                        span: Some(stage.span),
                        stage: name.clone(),
                    },
                );
                state = StageState::fresh(
                    index,
                    &name,
                    &platform,
                    self.scratch_image(&platform),
                    fs,
                    Vec::new(),
                );
                triggers = Vec::new();
            }
            Base::Image(reference) => {
                let (fs, image_index) =
                    self.image_vertex(reference, &platform, stage.span, &name)?;
                let label = self.label(
                    &name,
                    1,
                    total,
                    &format!("FROM {}", self.base_images[image_index].reference),
                );
                self.steps.entry(fs).and_modify(|s| {
                    if s.label.starts_with("[internal]") {
                        s.label = label.clone();
                    }
                });
                let base = &self.base_images[image_index];
                let mut image = base.config.clone();
                image.created = None;
                triggers = std::mem::take(&mut image.config.on_build);
                let layers = (0..base.layers.len())
                    .map(|layer| LayerSource::Base {
                        image: image_index,
                        layer,
                    })
                    .collect();
                state = StageState::fresh(index, &name, &platform, image, fs, layers);
            }
            Base::Context(context) => {
                let fs = self.context_tree(context, "", stage.span);
                let image = self.scratch_image(&platform);
                let layers = vec![LayerSource::Vertex(fs)];
                state = StageState::fresh(index, &name, &platform, image, fs, layers);
                triggers = Vec::new();
            }
            Base::Stage(parent) => {
                let Some(parent) = states[*parent].clone() else {
                    return Err(LowerError::at(
                        stage.span,
                        "internal error: a base stage was not lowered first",
                    ));
                };
                state = parent;
                state.platform = platform.clone();
                state.name = name.clone();
                state.index = index;
                state.meta = StageMeta::default();
                triggers = std::mem::take(&mut state.image.config.on_build);
            }
        }
        if !matches!(base, Base::Stage(_)) {
            if state.image.config.env_get("PATH").is_none() {
                state.image.config.env.push(DEFAULT_PATH_ENV.to_owned());
            }
            state.env = env_pairs(&state.image.config);
        }
        let mut instructions: Vec<Instruction> = Vec::new();
        for trigger in triggers.drain(..) {
            let mut parsed = kiln_parser::parse_instruction(&trigger).map_err(|e| {
                LowerError::at(
                    stage.span,
                    format!("ONBUILD trigger {trigger:?} of the base image: {}", e.kind),
                )
            })?;
            parsed.span = stage.span;
            instructions.push(parsed);
        }
        instructions.extend(stage.instructions.iter().cloned());
        let mut step = 1;
        for instruction in &instructions {
            if makes_vertex(&instruction.kind) {
                step += 1;
            }
            self.instruction(index, &mut state, instruction, &name, step, total)?;
        }
        Ok(state)
    }

    fn label(&self, stage: &str, step: usize, total: usize, text: &str) -> String {
        let text = one_line(text);
        if self.multi_stage {
            format!("[{stage} {step}/{total}] {text}")
        } else {
            format!("[{step}/{total}] {text}")
        }
    }

    fn instruction(
        &mut self,
        stage_index: usize,
        state: &mut StageState,
        instruction: &Instruction,
        stage: &str,
        step: usize,
        total: usize,
    ) -> Result<(), LowerError> {
        let span = instruction.span;
        let expanded = kiln_parser::expand::expand(&instruction.kind, self.escape, &state.env)
            .map_err(|e| LowerError::at(span, e.to_string()))?;
        let kind = expanded.kind;
        let label = self.label(stage, step, total, &display_text(instruction));
        match &kind {
            Kind::Run(run) => self.run(state, run, span, label, stage),
            Kind::Copy(copy) | Kind::Add(copy) => {
                let is_add = matches!(kind, Kind::Add(_));
                self.copy(stage_index, state, copy, is_add, span, label, stage)
            }
            Kind::Workdir(_) => {
                let history = meta::apply(
                    &mut state.image,
                    &mut state.meta,
                    &kind,
                    &instruction.original,
                )
                .map_err(|e| LowerError::at(span, e.to_string()))?;
                let path = state.image.config.working_dir.clone();
                let with_layer = path != "/";
                if with_layer {
                    let op = Op::Mkdir(MkdirOp {
                        path,
                        user: state.image.config.user.clone(),
                    });
                    state.fs = self.add(
                        op,
                        vec![state.fs],
                        Step {
                            label,
                            span: Some(span),
                            stage: stage.to_owned(),
                        },
                    );
                    state.layers.push(LayerSource::Vertex(state.fs));
                }
                push_history(&mut state.image, history.unwrap_or_default(), with_layer);
                Ok(())
            }
            Kind::Arg(_) => {
                // Each default is expanded after the ones before it on the same line.
                let Kind::Arg(decls) = &instruction.kind else {
                    return Ok(());
                };
                let mut items = Vec::new();
                for decl in decls {
                    let name = decl.name.clone();
                    let value = if let Some(given) = self.options.build_args.get(&name) {
                        self.used_args.insert(name.clone());
                        Some(given.clone())
                    } else if let Some(default) = &decl.default {
                        Some(self.expand_word(default, &state.env, span)?)
                    } else {
                        self.global_env.get_value(&name).map(str::to_owned)
                    };
                    if let Some(value) = &value {
                        state.env.set(&name, value);
                        items.push(format!("{name}={value}"));
                    } else {
                        items.push(name.clone());
                    }
                    if !state.args.contains(&name) {
                        state.args.push(name);
                    }
                }
                push_history(&mut state.image, format!("ARG {}", items.join(" ")), false);
                Ok(())
            }
            Kind::Env(pairs) => {
                for kv in pairs {
                    state.env.set(&kv.key, &kv.value);
                }
                self.metadata(state, &kind, instruction)
            }
            Kind::From(_) => Err(LowerError::at(span, "FROM cannot be used here")),
            _ => self.metadata(state, &kind, instruction),
        }
    }

    fn metadata(
        &mut self,
        state: &mut StageState,
        kind: &Kind,
        instruction: &Instruction,
    ) -> Result<(), LowerError> {
        let history = meta::apply(
            &mut state.image,
            &mut state.meta,
            kind,
            &instruction.original,
        )
        .map_err(|e| LowerError::at(instruction.span, e.to_string()))?;
        if let Some(text) = history {
            push_history(&mut state.image, text, false);
        }
        Ok(())
    }

    fn run(
        &mut self,
        state: &mut StageState,
        run: &Run,
        span: Span,
        label: String,
        stage: &str,
    ) -> Result<(), LowerError> {
        if !can_run(&state.platform) {
            return Err(LowerError::at(
                span,
                format!(
                    "RUN for {} cannot execute on this {} machine",
                    state.platform,
                    Platform::host()
                ),
            )
            .hint("register an emulator with binfmt_misc (apt-get install qemu-user-static), or build for the host's platform; stages without RUN (cross-compiling with FROM --platform=$BUILDPLATFORM) work as they are"));
        }
        if run.security.as_deref().is_some_and(|s| s != "sandbox") {
            return Err(LowerError::at(
                span,
                format!(
                    "RUN --security={} is not supported: kiln runs every step in its sandbox",
                    run.security.as_deref().unwrap_or_default()
                ),
            )
            .hint("drop the flag; privileged steps cannot run in kiln"));
        }
        let network = match &run.network {
            Some(mode) => {
                NetworkMode::parse(mode).map_err(|e| LowerError::at(span, e.to_string()))?
            }
            None => self.options.network,
        };
        if network == NetworkMode::Host && !self.options.allow.iter().any(|a| a == "network.host") {
            return Err(
                LowerError::at(span, "RUN --network=host needs --allow network.host")
                    .hint("pass --allow network.host to kiln build, or use --network=default"),
            );
        }
        let shell = state.image.config.shell.clone();
        let cwd = match state.image.config.working_dir.as_str() {
            "" => "/".to_owned(),
            dir => dir.to_owned(),
        };
        let mut inputs = vec![state.fs];
        let mut mounts = Vec::new();
        let mut argv = run_argv(run, &shell);
        if let Some(script) = shebang_script(run) {
            // BuildKit runs a `#!` heredoc as a file, not through `sh -c`.
            let target = format!("/dev/pipes/{}", script.0);
            argv = [shell_or_default(&shell), vec![target.clone()]].concat();
            mounts.push(ExecMount::File {
                target,
                content: script.1,
                mode: 0o755,
            });
        }
        for (n, mount) in run.mounts.iter().enumerate() {
            mounts.push(self.exec_mount(mount, n, &cwd, &mut inputs, state.index, span)?);
        }
        let env: Vec<String> = state.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let history = format!(
            "RUN {} # buildkit",
            run_command_string(&argv, &state.args, &state.env)
        );
        let op = Op::Exec(ExecOp {
            argv,
            env,
            cwd,
            user: state.image.config.user.clone(),
            network,
            mounts,
        });
        state.fs = self.add(
            op,
            inputs,
            Step {
                label,
                span: Some(span),
                stage: stage.to_owned(),
            },
        );
        state.layers.push(LayerSource::Vertex(state.fs));
        push_history(&mut state.image, history, true);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        stage_index: usize,
        state: &mut StageState,
        copy: &Copy,
        is_add: bool,
        span: Span,
        label: String,
        stage: &str,
    ) -> Result<(), LowerError> {
        let keyword = if is_add { "ADD" } else { "COPY" };
        if !is_add && let Some(url) = copy.sources.iter().find(|s| is_url(s)) {
            return Err(
                LowerError::at(span, format!("source can't be a URL for COPY: {url}"))
                    .hint("use ADD to download a file, or RUN with wget/curl"),
            );
        }
        if copy.checksum.is_some()
            && (!is_add || copy.sources.len() != 1 || !is_url(&copy.sources[0]))
        {
            return Err(LowerError::at(
                span,
                if is_add {
                    "checksum requires a single HTTP(S) source"
                } else {
                    "checksum can't be specified for COPY"
                },
            ));
        }
        let chmod = match &copy.chmod {
            None => None,
            Some(text) => Some(Chmod::parse(text).map_err(|e| LowerError::at(span, e))?),
        };
        let heredoc_sources: Vec<&String> = copy
            .sources
            .iter()
            .filter(|s| s.starts_with("<<"))
            .collect();
        let (source_vertex, context, sources) = if !heredoc_sources.is_empty() {
            if heredoc_sources.len() != copy.sources.len() {
                return Err(LowerError::at(
                    span,
                    format!("{keyword} cannot mix heredocs and other sources in one instruction"),
                )
                .hint("split it into one COPY for the heredocs and one for the files"));
            }
            let mut files = Vec::new();
            for heredoc in &copy.heredocs {
                // The delimiter becomes a file name in an empty tree: one plain name.
                let name = &heredoc.name;
                if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
                    return Err(LowerError::at(
                        span,
                        format!("heredoc name {name:?} cannot be a file name"),
                    )
                    .hint(
                        "use a plain word such as <<EOF; the destination path says where it goes",
                    ));
                }
                let content = if heredoc.expand {
                    kiln_parser::expand::expand_heredoc(&heredoc.body, self.escape, &state.env)
                        .map_err(|e| LowerError::at(span, e.to_string()))?
                } else {
                    heredoc.body.clone()
                };
                files.push((heredoc.name.clone(), content));
            }
            let names = files.iter().map(|(n, _)| n.clone()).collect();
            let vertex = self.add(
                Op::Files(FilesOp { files }),
                Vec::new(),
                Step {
                    label: "[internal] heredoc files".to_owned(),
                    span: Some(span),
                    stage: stage.to_owned(),
                },
            );
            (vertex, None, names)
        } else if is_add && crate::ops::git::is_git_url(&copy.sources[0]) {
            if copy.sources.len() != 1 {
                return Err(LowerError::at(
                    span,
                    "kiln's ADD takes one git repository per instruction",
                )
                .hint("split them into one ADD each"));
            }
            let source = crate::ops::git::parse(&copy.sources[0]);
            let label = format!("[internal] git clone {}", copy.sources[0]);
            let vertex = self.add(
                Op::Git(GitOp {
                    source,
                    keep_git_dir: copy.keep_git_dir,
                    checksum: copy.checksum.clone(),
                }),
                Vec::new(),
                Step {
                    label,
                    span: Some(span),
                    stage: stage.to_owned(),
                },
            );
            (vertex, None, vec![String::new()])
        } else if is_add && is_url(&copy.sources[0]) {
            if copy.sources.len() != 1 {
                return Err(
                    LowerError::at(span, "kiln's ADD takes one URL per instruction")
                        .hint("split the URLs into one ADD each"),
                );
            }
            let url = copy.sources[0].clone();
            let name = url_file_name(&url);
            let vertex = self.add(
                Op::Http(HttpOp {
                    url: url.clone(),
                    checksum: copy.checksum.clone(),
                    name: name.clone(),
                }),
                Vec::new(),
                Step {
                    label: format!("[internal] download {url}"),
                    span: Some(span),
                    stage: stage.to_owned(),
                },
            );
            (vertex, None, vec![name])
        } else {
            let source = match &copy.from {
                None => FromSource::Context("context".to_owned()),
                Some(from) => self.resolve_from(from, stage_index, span)?,
            };
            let (vertex, context) = match source {
                FromSource::Context(name) => (self.context_vertex(&name), Some(name)),
                FromSource::Stage(index) => (self.stage_fs(index, span)?, None),
                FromSource::Image(reference) => (
                    self.image_vertex(&reference, &state.platform.clone(), span, stage)?
                        .0,
                    None,
                ),
            };
            let mut sources = Vec::new();
            for source in &copy.sources {
                // `--parents` keeps the path below a `/./` pivot; the pivot itself is
                // cleaned apart, since cleaning would drop the `.`.
                let whole = if copy.parents {
                    source.replacen("/./", "/", 1)
                } else {
                    source.clone()
                };
                let cleaned = crate::context::clean_context_path(&whole)
                    .map_err(|e| LowerError::at(span, e.to_string()))?;
                sources.push(cleaned);
            }
            (vertex, context, sources)
        };
        let parents = copy.parents.then(|| {
            copy.sources
                .iter()
                .map(|s| match s.split_once("/./") {
                    Some((pivot, _)) => {
                        crate::context::clean_context_path(pivot).unwrap_or_default()
                    }
                    None => String::new(),
                })
                .collect()
        });
        let cwd = match state.image.config.working_dir.as_str() {
            "" => "/",
            dir => dir,
        };
        let dest = if copy.dest.starts_with('/') {
            clean_abs(&copy.dest)
        } else {
            clean_abs(&format!("{cwd}/{}", copy.dest))
        };
        let dest_is_dir = copy.dest.ends_with('/')
            || copy.dest.ends_with("/.")
            || copy.dest == "."
            || copy.dest.is_empty();
        // ADD unpacks local archives unless --unpack=false; remote files only on request.
        let unpack = is_add
            && copy.unpack.unwrap_or(!is_url(&copy.sources[0]))
            && heredoc_sources.is_empty();
        let op = Op::Copy(CopyOp {
            sources,
            dest,
            dest_is_dir,
            chown: copy.chown.clone(),
            chmod,
            excludes: copy.excludes.clone(),
            context,
            parents,
            unpack,
        });
        let step = Step {
            label,
            span: Some(span),
            stage: stage.to_owned(),
        };
        // --link copies onto nothing, so its result (and its cache) does not depend on
        // what is below; a merge then puts it on top. BuildKit drops --link with --chmod.
        state.fs = if copy.link && copy.chmod.is_none() {
            let scratch = self.add(
                Op::Scratch,
                Vec::new(),
                Step {
                    label: "[internal] scratch".to_owned(),
                    span: Some(span),
                    stage: stage.to_owned(),
                },
            );
            let linked = self.add(op, vec![scratch, source_vertex], step.clone());
            self.add(
                Op::Merge,
                vec![state.fs, linked],
                Step {
                    label: format!("[internal] link {}", step.label),
                    ..step
                },
            )
        } else {
            self.add(op, vec![state.fs, source_vertex], step)
        };
        state.layers.push(LayerSource::Vertex(state.fs));
        let mut history = keyword.to_owned();
        if copy.parents {
            history.push_str(" --parents");
        }
        if let Some(chown) = &copy.chown {
            history.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = &copy.chmod {
            history.push_str(&format!(" --chmod={chmod}"));
        }
        // Heredocs are named by their delimiter without its quotes, after the paths.
        for source in copy.sources.iter().filter(|s| !s.starts_with("<<")) {
            history.push(' ');
            history.push_str(source);
        }
        for heredoc in &copy.heredocs {
            history.push_str(&format!(" <<{}", heredoc.name));
        }
        history.push(' ');
        history.push_str(&copy.dest);
        history.push_str(" # buildkit");
        push_history(&mut state.image, history, true);
        Ok(())
    }

    /// Lowers one `RUN --mount`, adding the vertices it reads to `inputs`.
    fn exec_mount(
        &mut self,
        mount: &kiln_parser::ast::Mount,
        n: usize,
        cwd: &str,
        inputs: &mut Vec<VertexId>,
        stage_index: usize,
        span: Span,
    ) -> Result<ExecMount, LowerError> {
        let abs = |path: &str| {
            if path.starts_with('/') {
                clean_abs(path)
            } else {
                clean_abs(&format!("{cwd}/{path}"))
            }
        };
        let target = mount.get(&["target", "dst", "destination"]).map(abs);
        let flag = |keys: &[&str]| {
            mount
                .get(keys)
                .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
        };
        let number = |keys: &[&str], default: u32, radix: u32| -> Result<u32, LowerError> {
            match mount.get(keys) {
                None => Ok(default),
                Some(v) => u32::from_str_radix(v, radix).map_err(|_| {
                    LowerError::at(span, format!("invalid {} {v:?} in RUN --mount", keys[0]))
                }),
            }
        };
        Ok(match mount.kind.as_str() {
            "bind" => {
                let source = mount.get(&["source", "src"]).unwrap_or("/");
                let from = mount.get(&["from"]);
                let resolved = match from {
                    None => FromSource::Context("context".to_owned()),
                    Some(from) => self.resolve_from(from, stage_index, span)?,
                };
                let (input, context, source) = match resolved {
                    FromSource::Context(name) => {
                        let cleaned = crate::context::clean_context_path(source)
                            .map_err(|e| LowerError::at(span, e.to_string()))?;
                        (
                            self.context_tree(&name, &cleaned, span),
                            Some(name),
                            cleaned,
                        )
                    }
                    FromSource::Stage(index) => {
                        (self.stage_fs(index, span)?, None, clean_abs(source))
                    }
                    FromSource::Image(reference) => (
                        self.image_vertex(&reference, &self.platform.clone(), span, "")?
                            .0,
                        None,
                        clean_abs(source),
                    ),
                };
                inputs.push(input);
                ExecMount::Bind {
                    input: inputs.len() - 1,
                    source,
                    target: target.unwrap_or_else(|| cwd.to_owned()),
                    rw: flag(&["rw", "readwrite"]),
                    context,
                }
            }
            "cache" => {
                if mount.get(&["from"]).is_some() || mount.get(&["source", "src"]).is_some() {
                    return Err(LowerError::at(
                        span,
                        "RUN --mount=type=cache with from= or source= is not supported by kiln yet",
                    )
                    .hint("seed the cache from a RUN step instead"));
                }
                let target =
                    target.ok_or_else(|| LowerError::at(span, "a cache mount needs target="))?;
                ExecMount::Cache {
                    id: mount
                        .get(&["id"])
                        .map(str::to_owned)
                        .unwrap_or_else(|| target.clone()),
                    target,
                    sharing: mount.get(&["sharing"]).unwrap_or("shared").to_owned(),
                    mode: number(&["mode"], 0o755, 8)?,
                    uid: number(&["uid"], 0, 10)?,
                    gid: number(&["gid"], 0, 10)?,
                    readonly: flag(&["ro", "readonly"]),
                }
            }
            "tmpfs" => ExecMount::Tmpfs {
                target: target
                    .ok_or_else(|| LowerError::at(span, "a tmpfs mount needs target="))?,
                size: match mount.get(&["size"]) {
                    None => 0,
                    Some(v) => parse_size(v).ok_or_else(|| {
                        LowerError::at(span, format!("invalid tmpfs size {v:?}"))
                            .hint("write bytes, or a number with k, m or g (e.g. size=64m)")
                    })?,
                },
            },
            "secret" => {
                let env = mount.get(&["env"]).map(str::to_owned);
                let id = match (mount.get(&["id"]), &target) {
                    (Some(id), _) => id.to_owned(),
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_owned(),
                    (None, None) => match &env {
                        Some(e) => e.clone(),
                        None => {
                            return Err(LowerError::at(
                                span,
                                "a secret mount needs id= or target=",
                            )
                            .hint("e.g. --mount=type=secret,id=npmrc"));
                        }
                    },
                };
                let target = match (&target, &env) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                ExecMount::Secret {
                    id,
                    target,
                    env,
                    required: flag(&["required"]),
                    mode: number(&["mode"], 0o400, 8)?,
                    uid: number(&["uid"], 0, 10)?,
                    gid: number(&["gid"], 0, 10)?,
                }
            }
            "ssh" => ExecMount::Ssh {
                id: mount.get(&["id"]).unwrap_or("default").to_owned(),
                target: target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}")),
                required: flag(&["required"]),
            },
            other => {
                return Err(LowerError::at(
                    span,
                    format!("unsupported mount type {other:?}"),
                ));
            }
        })
    }

    /// The filesystem vertex of an earlier stage, for `COPY --from`. Stages are lowered in
    /// file order and sources must come first, so it is known by now.
    fn stage_fs(&mut self, index: usize, span: Span) -> Result<VertexId, LowerError> {
        self.stage_results.get(&index).copied().ok_or_else(|| {
            LowerError::at(span, "internal error: a --from stage was not lowered first")
        })
    }
}

fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://") || source.starts_with("git@")
}

/// The name a downloaded file gets: the URL path's last part, or `__unnamed__`.
fn url_file_name(url: &str) -> String {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let path = path.split_once('/').map_or("", |(_, p)| p);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name.to_owned(),
        _ => "__unnamed__".to_owned(),
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

/// RUN's argv: exec form as written; shell form through the SHELL; heredocs as BuildKit
/// passes them (a whole-command heredoc is the script, others follow the command line).
pub fn run_argv(run: &Run, shell: &[String]) -> Vec<String> {
    match (&run.command, run.heredocs.as_slice()) {
        (Command::Shell(line), [only]) if is_lone_heredoc(line) => {
            command_args(&Command::Shell(only.body.clone()), shell)
        }
        (Command::Shell(line), heredocs) if !heredocs.is_empty() => {
            let mut script = line.clone();
            for heredoc in heredocs {
                script.push('\n');
                script.push_str(&heredoc.body);
                script.push_str(&heredoc.name);
            }
            command_args(&Command::Shell(script), shell)
        }
        (command, _) => command_args(command, shell),
    }
}

fn is_lone_heredoc(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("<<") && !line.contains(char::is_whitespace)
}

/// BuildKit's `runCommandString`: `|N K=V ... argv...` with every ARG in scope.
fn run_command_string(argv: &[String], args: &[String], env: &Vec<(String, String)>) -> String {
    let mut parts = Vec::new();
    if !args.is_empty() {
        parts.push(format!("|{}", args.len()));
        for arg in args {
            parts.push(format!("{arg}={}", env.get_value(arg).unwrap_or_default()));
        }
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

/// The single `RUN <<EOF` heredoc whose body starts with `#!`: its name and body.
fn shebang_script(run: &Run) -> Option<(String, String)> {
    match (&run.command, run.heredocs.as_slice()) {
        (Command::Shell(line), [only]) if is_lone_heredoc(line) && only.body.starts_with("#!") => {
            Some((only.name.clone(), only.body.clone()))
        }
        _ => None,
    }
}

fn shell_or_default(shell: &[String]) -> Vec<String> {
    if shell.is_empty() {
        meta::default_shell()
    } else {
        shell.to_vec()
    }
}

/// `64m`, `1g`, `512k` or bytes, as go-units' RAMInBytes reads tmpfs sizes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_lowercase();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let number: f64 = digits.parse().ok()?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    (number >= 0.0).then_some((number * scale as f64) as u64)
}

/// Whether a RUN for `platform` can execute here: the host's own architecture, or one
/// the kernel runs through a registered binfmt_misc emulator.
fn can_run(platform: &Platform) -> bool {
    let host = Platform::host();
    if platform.os != host.os {
        return false;
    }
    if platform.architecture == host.architecture {
        return true;
    }
    let qemu = match platform.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    std::path::Path::new(&format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}")).exists()
}
