//! The rules BuildKit reports while it dispatches a stage's instructions, with the stage's
//! variables in scope: `UndefinedVar`, `WorkdirRelativePath`, `JSONArgsRecommended`,
//! `MultipleInstructionsDisallowed`, `LegacyKeyValueFormat`, `SecretsUsedInArgOrEnv` and
//! `CopyIgnoredFile`.
//!
//! A stage starts from its base: an earlier stage's end state (variables, `ARG`s,
//! `WORKDIR`, `SHELL`), or an image whose environment is [`CheckOptions::image_env`]'s
//! plus `PATH`. Every stage is walked (a later stage may build on it); findings count only
//! for the stages the target needs.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::from::Globals;
use super::{
    COPY_IGNORED_FILE, CheckOptions, EXPOSE_INVALID_FORMAT, EXPOSE_PROTO_CASING,
    INVALID_BASE_IMAGE_PLATFORM, JSON_ARGS_RECOMMENDED, LEGACY_KEY_VALUE_FORMAT,
    MULTIPLE_INSTRUCTIONS_DISALLOWED, Report, Rule, SECRETS_USED_IN_ARG_OR_ENV, UNDEFINED_VAR,
    WORKDIR_RELATIVE_PATH, expose, platform, suggest,
};
use crate::ast::{ArgDecl, Command, Copy, Dockerfile, Instruction, KeyValue, Kind, Stage};
use crate::dockerignore::{self, Matcher};
use crate::error::Span;
use crate::expand::expand_heredoc;
use crate::shell::{Env, Lexer};
use platform::Platform;

/// BuildKit's default `PATH` for Linux images that set none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args that never become environment variables.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Name segments (between `_`) that mark a secret, and those that clear it again.
const SECRET_TOKENS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];
const NOT_SECRET_TOKENS: &[&str] = &["public", "file", "version"];

/// Whether a variable's name marks a secret, by BuildKit's `SecretsUsedInArgOrEnv` rule
/// (a `_`-separated part such as `token` or `password`, and none such as `file`).
pub fn looks_secret(name: &str) -> bool {
    let has = |tokens: &[&str]| {
        name.split('_')
            .any(|part| tokens.iter().any(|t| part.eq_ignore_ascii_case(t)))
    };
    has(SECRET_TOKENS) && !has(NOT_SECRET_TOKENS)
}

/// What a stage hands to the stages built on it.
#[derive(Debug, Clone)]
struct StageState {
    /// Variables in scope: base image `ENV`, then `ARG`s with a value and `ENV`s.
    env: Vec<(String, String)>,
    /// Every `ARG` declared, with or without a value.
    args: Vec<String>,
    /// An absolute or relative `WORKDIR` was set in this file.
    workdir_set: bool,
    /// A `SHELL` was set in this file or by the base image.
    shell_set: bool,
}

/// A base image's environment as pairs, with BuildKit's default `PATH` when it sets none.
pub(crate) fn image_env(env: Option<&Vec<String>>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .into_iter()
        .flatten()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    out
}

impl StageState {
    fn from_image(image_env: Option<&Vec<String>>) -> StageState {
        let env = self::image_env(image_env);
        StageState {
            env,
            args: Vec::new(),
            workdir_set: false,
            shell_set: false,
        }
    }

    /// The names in scope, each once, in the order they came.
    fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in &self.env {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys
    }
}

/// A finding waiting for its stage to be known as dispatched.
struct Pending {
    /// The start of the instruction whose `# check=` comment applies.
    at: usize,
    rule: &'static Rule,
    span: Span,
    message: String,
}

pub(crate) fn check(
    file: &Dockerfile,
    options: &CheckOptions,
    globals: &Globals,
    report: &mut Report<'_>,
) {
    let dispatched = dispatched(file, options, &globals.bases);
    let mut ends: Vec<StageState> = Vec::new();
    for (i, stage) in file.stages.iter().enumerate() {
        let base_name = globals.bases.get(i).map(String::as_str).unwrap_or_default();
        let state = match base_stage(file, i, base_name) {
            Some(base) => ends[base].clone(),
            None => {
                if dispatched[i] {
                    let wanted = globals.platforms.get(i).cloned().flatten();
                    let wanted = wanted.as_ref().unwrap_or(&globals.target);
                    base_platform(options, base_name, wanted, stage.span, report);
                }
                let mut state = StageState::from_image(options.image_env.get(base_name));
                state.shell_set = options
                    .image_shell
                    .get(base_name)
                    .is_some_and(|shell| !shell.is_empty());
                state
            }
        };
        let mut walker = Walker {
            lexer: Lexer::new(file.directives.escape),
            options,
            global: &globals.env,
            state,
            cmd: None,
            entrypoint: None,
            healthcheck: None,
            pending: Vec::new(),
            limit: RefCell::new(None),
            span: stage.span,
        };
        for instruction in &stage.instructions {
            walker.span = instruction.span;
            walker.instruction(instruction);
            if walker.limit.borrow().is_some() {
                break;
            }
        }
        if let Some((span, err)) = walker.limit.take()
            && dispatched[i]
        {
            // What follows depends on a value that could not be made: stop here.
            report.limit(span, &err);
            return;
        }
        if dispatched[i] {
            for p in walker.pending {
                report.add_at(p.at, p.rule, p.span, p.message);
            }
        }
        ends.push(walker.state);
    }
}

/// [`INVALID_BASE_IMAGE_PLATFORM`]: the image's OS or architecture is not the one the
/// stage is built for (its `--platform`, else the target's). BuildKit checks this when
/// it resolves the image, with the file's configuration only. (When neither the build
/// nor the `FROM` names a platform, BuildKit would take an image of another platform it
/// can run; kiln runs only the host's, which is the target then, so nothing changes.)
fn base_platform(
    options: &CheckOptions,
    image: &str,
    wanted: &Platform,
    span: Span,
    report: &mut Report<'_>,
) {
    if image == "scratch" {
        return;
    }
    let Some(actual) = options.image_platform.get(image) else {
        return;
    };
    let Some(actual) = platform::parse(actual) else {
        return;
    };
    if actual.os != wanted.os || actual.architecture != wanted.architecture {
        report.add(
            &INVALID_BASE_IMAGE_PLATFORM,
            span,
            format!(
                "Base image {image} was pulled with platform {:?}, expected {:?} for current build",
                actual.format_normalized(),
                wanted.format_normalized()
            ),
        );
    }
}

/// The earlier stage `FROM base_name` builds on: the last one so named before `index`.
fn base_stage(file: &Dockerfile, index: usize, base_name: &str) -> Option<usize> {
    file.stages[..index]
        .iter()
        .rposition(|s| s.name.as_deref() == Some(base_name))
}

/// The stage called `name` (any case); the last one if several are.
fn stage_named(stages: &[Stage], name: &str) -> Option<usize> {
    let name = name.to_lowercase();
    stages
        .iter()
        .rposition(|s| s.name.as_deref() == Some(name.as_str()))
}

/// The stage `COPY --from=x` or `--mount=from=x` names: an index or a name.
fn stage_ref(stages: &[Stage], name: &str) -> Option<usize> {
    match name.parse::<usize>() {
        Ok(index) => (index < stages.len()).then_some(index),
        Err(_) => stage_named(stages, name),
    }
}

/// Which stages are dispatched: all without a target, else those the target needs
/// through `FROM`, `COPY --from` and `RUN --mount=from=`. An unknown target stops
/// BuildKit before any dispatch.
fn dispatched(file: &Dockerfile, options: &CheckOptions, bases: &[String]) -> Vec<bool> {
    let count = file.stages.len();
    let Some(target) = &options.target else {
        return vec![true; count];
    };
    let mut seen = vec![false; count];
    let Some(target) = stage_named(&file.stages, target) else {
        return seen;
    };
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        if let Some(base) = bases.get(i).and_then(|b| base_stage(file, i, b)) {
            stack.push(base);
        }
        for instruction in &file.stages[i].instructions {
            let froms: Vec<&str> = match &instruction.kind {
                Kind::Copy(c) => c.from.as_deref().into_iter().collect(),
                Kind::Run(run) => run.mounts.iter().filter_map(|m| m.get(&["from"])).collect(),
                _ => Vec::new(),
            };
            stack.extend(froms.into_iter().filter_map(|f| stage_ref(&file.stages, f)));
        }
    }
    seen
}

/// Looks variables up in the stage's scope and remembers those it did not find.
struct Recording<'e> {
    env: &'e [(String, String)],
    missing: RefCell<BTreeSet<String>>,
}

impl Env for Recording<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let value = Env::get(self.env, name);
        if value.is_none() {
            self.missing.borrow_mut().insert(name.to_owned());
        }
        value
    }
}

/// The instructions of which only the last in a stage counts.
#[derive(Clone, Copy)]
enum Once {
    Cmd,
    Entrypoint,
    Healthcheck,
}

/// One stage's walk.
struct Walker<'a> {
    lexer: Lexer,
    options: &'a CheckOptions,
    global: &'a [(String, String)],
    state: StageState,
    cmd: Option<Span>,
    entrypoint: Option<Span>,
    healthcheck: Option<Span>,
    pending: Vec<Pending>,
    /// The first expansion that hit a bound, and where.
    limit: RefCell<Option<(Span, crate::shell::Error)>>,
    /// The instruction being walked.
    span: Span,
}

impl Walker<'_> {
    fn add(&mut self, rule: &'static Rule, span: Span, message: String) {
        self.pending.push(Pending {
            at: self.span.start,
            rule,
            span,
            message,
        });
    }

    /// Expands `word` in the stage's scope, adding the variables it missed to `unmatched`.
    /// A word that does not expand stays as written (BuildKit would stop the build).
    fn expand(&self, word: &str, unmatched: &mut BTreeSet<String>) -> String {
        match self.lexer.expand_word(word, &self.state.env) {
            Ok(out) => {
                unmatched.extend(out.unmatched);
                out.value
            }
            Err(err) => {
                if err.limit.is_some() && self.limit.borrow().is_none() {
                    *self.limit.borrow_mut() = Some((self.span, err));
                }
                word.to_owned()
            }
        }
    }

    fn undefined(&mut self, unmatched: &BTreeSet<String>, span: Span) {
        for name in unmatched {
            if self.state.args.contains(name) || NON_ENV_ARGS.contains(&name.as_str()) {
                continue;
            }
            let message = match suggest::search(name, self.state.keys()) {
                Some(close) => {
                    format!("Usage of undefined variable '${name}' (did you mean ${close}?)")
                }
                None => format!("Usage of undefined variable '${name}'"),
            };
            self.add(&UNDEFINED_VAR, span, message);
        }
    }

    fn instruction(&mut self, instruction: &Instruction) {
        let span = instruction.span;
        let keyword = instruction.keyword.as_str();
        let mut unmatched = BTreeSet::new();
        match &instruction.kind {
            Kind::Arg(decls) => {
                for decl in decls {
                    self.arg(decl, span);
                }
            }
            Kind::Env(pairs) => {
                let pairs = self.pairs(pairs, &mut unmatched);
                self.undefined(&unmatched, span);
                for (key, value, legacy) in pairs {
                    if legacy {
                        self.legacy(keyword, span);
                    }
                    self.secret("ENV", &key, span);
                    self.state.env.push((key, value));
                }
            }
            Kind::Label(pairs) => {
                let pairs = self.pairs(pairs, &mut unmatched);
                self.undefined(&unmatched, span);
                for (_, _, legacy) in pairs {
                    if legacy {
                        self.legacy(keyword, span);
                    }
                }
            }
            Kind::Add(copy) | Kind::Copy(copy) => {
                let add = matches!(instruction.kind, Kind::Add(_));
                let sources = self.copy_words(copy, add, &mut unmatched);
                self.undefined(&unmatched, span);
                if let Some(matcher) = &self.options.ignore
                    && (add || copy.from.is_none())
                {
                    for source in &sources {
                        self.ignored(matcher, source, add, span);
                    }
                }
            }
            Kind::Workdir(path) => {
                let path = self.expand(path, &mut unmatched);
                self.undefined(&unmatched, span);
                // Only the first WORKDIR of the build needs to be absolute.
                if !self.state.workdir_set && !path.starts_with('/') {
                    self.add(
                        &WORKDIR_RELATIVE_PATH,
                        span,
                        format!(
                            "Relative workdir {path:?} can have unexpected results if the base image changes"
                        ),
                    );
                }
                self.state.workdir_set = true;
            }
            Kind::User(word) | Kind::Stopsignal(word) => {
                self.expand(word, &mut unmatched);
                self.undefined(&unmatched, span);
            }
            Kind::Volume(paths) => {
                for path in paths {
                    self.expand(path, &mut unmatched);
                }
                self.undefined(&unmatched, span);
            }
            Kind::Run(run) => {
                for mount in &run.mounts {
                    self.expand(&mount.kind, &mut unmatched);
                    for (_, value) in &mount.options {
                        self.expand(value, &mut unmatched);
                    }
                }
                self.undefined(&unmatched, span);
            }
            Kind::Cmd(command) | Kind::Entrypoint(command) => {
                let slot = if matches!(instruction.kind, Kind::Cmd(_)) {
                    Once::Cmd
                } else {
                    Once::Entrypoint
                };
                self.used_once(keyword, span, slot);
                if matches!(command, Command::Shell(_)) && !self.state.shell_set {
                    self.add(
                        &JSON_ARGS_RECOMMENDED,
                        span,
                        format!(
                            "JSON arguments recommended for {keyword} to prevent unintended behavior related to OS signals"
                        ),
                    );
                }
            }
            Kind::Healthcheck(_) => self.used_once(keyword, span, Once::Healthcheck),
            Kind::Shell(_) => self.state.shell_set = true,
            Kind::Expose(ports) => self.expose(ports, span),
            // The rest do not expand.
            Kind::Maintainer(_) | Kind::Onbuild(_) | Kind::From(_) => {}
        }
    }

    /// `EXPOSE`: each word expanded and split (unknown variables are not reported), then
    /// read as `[ip:][host:]port[-end][/proto]`: a protocol not in lowercase is
    /// [`EXPOSE_PROTO_CASING`], an address or host port [`EXPOSE_INVALID_FORMAT`]. A port
    /// BuildKit refuses ends the instruction (the build stops there).
    fn expose(&mut self, ports: &[String], span: Span) {
        let mut words = Vec::new();
        for port in ports {
            match self.lexer.expand_words(port, &self.state.env) {
                Ok(out) => words.extend(out.value),
                Err(err) => {
                    if err.limit.is_some() && self.limit.borrow().is_none() {
                        *self.limit.borrow_mut() = Some((self.span, err));
                    }
                    return;
                }
            }
        }
        for raw in words {
            let Some(port) = expose::parse(&raw) else {
                return;
            };
            if port.proto != port.proto.to_lowercase() {
                self.add(
                    &EXPOSE_PROTO_CASING,
                    span,
                    format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
                );
            }
            if port.mapped {
                self.add(
                    &EXPOSE_INVALID_FORMAT,
                    span,
                    format!(
                        "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
                    ),
                );
            }
            if !port.valid {
                return;
            }
        }
    }

    /// `ARG name[=default]`: a build arg's value, else the default expanded in scope, else
    /// (with neither) the global `ARG`'s value.
    fn arg(&mut self, decl: &ArgDecl, span: Span) {
        let name = decl.name.as_str();
        self.secret("ARG", name, span);
        let given = self.options.build_args.get(name).cloned();
        let value = match (&given, &decl.default) {
            (Some(given), _) => Some(given.clone()),
            (None, Some(default)) => {
                let mut unmatched = BTreeSet::new();
                let value = self.expand(default, &mut unmatched);
                self.undefined(&unmatched, span);
                Some(value)
            }
            (None, None) => Env::get(self.global, name).map(str::to_owned),
        };
        if let Some(value) = value
            && !NON_ENV_ARGS.contains(&name)
        {
            self.state.env.push((name.to_owned(), value));
        }
        self.state.args.push(name.to_owned());
    }

    /// Expands keys and values of `ENV`/`LABEL` pairs: `(key, value, legacy)`.
    fn pairs(
        &self,
        pairs: &[KeyValue],
        unmatched: &mut BTreeSet<String>,
    ) -> Vec<(String, String, bool)> {
        pairs
            .iter()
            .map(|kv| {
                let key = self.expand(&kv.key, unmatched);
                let value = self.expand(&kv.value, unmatched);
                (key, value, kv.legacy)
            })
            .collect()
    }

    /// Expands what BuildKit expands in `COPY`/`ADD` (`--chown`, `--chmod`, `ADD --checksum`, the
    /// paths, heredoc bodies with an unquoted delimiter); returns the expanded sources
    /// that are not heredocs.
    fn copy_words(&self, copy: &Copy, add: bool, unmatched: &mut BTreeSet<String>) -> Vec<String> {
        if let Some(chown) = &copy.chown {
            self.expand(chown, unmatched);
        }
        if let Some(chmod) = &copy.chmod {
            self.expand(chmod, unmatched);
        }
        if add && let Some(checksum) = &copy.checksum {
            self.expand(checksum, unmatched);
        }
        let sources = copy
            .sources
            .iter()
            .filter(|s| !is_heredoc_marker(s))
            .map(|s| self.expand(s, unmatched))
            .collect();
        self.expand(&copy.dest, unmatched);
        for heredoc in copy.heredocs.iter().filter(|h| h.expand) {
            let recording = Recording {
                env: &self.state.env,
                missing: RefCell::new(BTreeSet::new()),
            };
            if expand_heredoc(&heredoc.body, '\\', &recording).is_ok() {
                unmatched.extend(recording.missing.into_inner());
            }
        }
        sources
    }

    /// A second `CMD`, `ENTRYPOINT` or `HEALTHCHECK`: the earlier one is reported, as it
    /// is the one that has no effect.
    fn used_once(&mut self, keyword: &str, span: Span, which: Once) {
        let slot = match which {
            Once::Cmd => &mut self.cmd,
            Once::Entrypoint => &mut self.entrypoint,
            Once::Healthcheck => &mut self.healthcheck,
        };
        if let Some(previous) = slot.replace(span) {
            self.add(
                &MULTIPLE_INSTRUCTIONS_DISALLOWED,
                previous,
                format!(
                    "Multiple {keyword} instructions should not be used in the same stage because only the last one will be used"
                ),
            );
        }
    }

    fn legacy(&mut self, keyword: &str, span: Span) {
        self.add(
            &LEGACY_KEY_VALUE_FORMAT,
            span,
            format!(
                "\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"
            ),
        );
    }

    fn secret(&mut self, instruction: &str, key: &str, span: Span) {
        if looks_secret(key) {
            self.add(
                &SECRETS_USED_IN_ARG_OR_ENV,
                span,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
                ),
            );
        }
    }

    /// A context path `.dockerignore` leaves out. Skipped when the ignore file has
    /// exceptions (`!pattern`), which BuildKit cannot judge statically; `.` and `/` count
    /// only when a pattern ignores everything.
    fn ignored(&mut self, matcher: &Matcher, source: &str, add: bool, span: Span) {
        if is_remote(source) || matcher.is_empty() || matcher.patterns().any(|(_, e)| e) {
            return;
        }
        let path = dockerignore::clean(source);
        if (path == "." || path == "/")
            && !matcher
                .patterns()
                .any(|(p, _)| matches!(p, "*" | "**" | "**/*"))
        {
            return;
        }
        if matcher.decide(&path).is_ok_and(|d| d.excluded) {
            let what = if add { "Add" } else { "Copy" };
            self.add(
                &COPY_IGNORED_FILE,
                span,
                format!("Attempting to {what} file {path:?} that is excluded by .dockerignore"),
            );
        }
    }
}

/// `<<EOF` (or `3<<-EOF`) among the sources: a heredoc, not a path.
fn is_heredoc_marker(source: &str) -> bool {
    source
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .starts_with("<<")
}

/// URLs and Git sources, which do not come from the context.
fn is_remote(source: &str) -> bool {
    ["http://", "https://", "git://", "ssh://", "git@"]
        .iter()
        .any(|p| source.starts_with(p))
}
