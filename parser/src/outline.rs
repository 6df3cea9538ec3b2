//! `--call=outline` and `--call=targets`: what a Dockerfile asks of whoever builds it,
//! as BuildKit's Dockerfile frontend answers those subrequests
//! (`frontend/dockerfile/dockerfile2llb/outline.go`, `convert.go`'s `ListTargets`).
//!
//! [`outline`] lists, for one target, the build args, secrets and ssh ids it uses:
//! - an arg is used when the target (or a stage it needs through `FROM`, `COPY --from`
//!   or `RUN --mount=from=`) declares it with `ARG`, or a `FROM` line expands it; a
//!   global `ARG` whose default names another global `ARG` uses that one too. A stage
//!   `ARG X` without a default that only brings a global `X` into scope keeps the global
//!   declaration (its comment, its line). Each arg's value is the `--build-arg` given, else
//!   its default expanded where it is declared (a stage's default sees the stage's `ENV`
//!   and base image environment).
//! - a secret is a `RUN --mount=type=secret` of a stage the target needs (its id:
//!   `source=`, else `id=`, else the target's last part, else `env=`), an ssh id a
//!   `RUN --mount=type=ssh` (`id=`, else `default`); the first mount of an id in a stage
//!   says whether it is `required`.
//! - each list is in line order; the target's own declarations come first when a name
//!   is declared twice.
//!
//! A description is the comment line right above the instruction that starts with the
//! name and a space, BuildKit's `getDocComment`: `# VERSION the release to package`
//! above `ARG VERSION` describes it as `the release to package`, and `# build the
//! binary` above `FROM golang AS build` describes the stage as `the binary`; a comment
//! that does not start with the name describes nothing.
//!
//! [`targets`] lists every stage with its `AS` name, its description, its base and
//! platform as written; the last stage is the default.
//!
//! Pure: the base images' environments come in through [`OutlineOptions::image_env`].
//!
//! ```
//! use kiln_parser::outline::{self, OutlineOptions};
//! let text = "# VERSION the release\nARG VERSION=1.0\nFROM alpine:$VERSION AS app\n";
//! let file = kiln_parser::parse(text).unwrap();
//! let found = outline::outline(&file, text, &OutlineOptions::default()).unwrap();
//! assert_eq!(found.args[0].name, "VERSION");
//! assert_eq!(found.args[0].value.as_deref(), Some("1.0"));
//! assert_eq!(found.args[0].description.as_deref(), Some("the release"));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::ast::{Dockerfile, Instruction, Kind, Mount};
use crate::error::{Error, ErrorKind, Span, did_you_mean};
use crate::lint::source::Source;
use crate::lint::{from, platform};
use crate::shell::Lexer;

/// What the outline is asked besides the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct OutlineOptions {
    /// `--build-arg`s: they are the values shown.
    pub build_args: BTreeMap<String, String>,
    /// The stage outlined (`None`: the last one).
    pub target: Option<String>,
    /// The platform the build targets (`TARGETPLATFORM`...), `None`: the host's.
    pub platform: Option<String>,
    /// Each base image's environment (`KEY=VALUE`), keyed by the name a `FROM` gives
    /// after expansion (`crate::lint::base_images`).
    pub image_env: BTreeMap<String, Vec<String>>,
}

/// Where something is: BuildKit's `pb.Location` (lines from 1; columns are not given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// One range: the instruction's first and last lines.
    pub ranges: Vec<Range>,
}

/// First and last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// `{"line": N}`.
    pub start: Position,
    /// `{"line": N}`.
    pub end: Position,
}

/// A line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 1-based.
    pub line: usize,
}

impl Location {
    fn of(span: Span) -> Location {
        Location {
            ranges: vec![Range {
                start: Position { line: span.line },
                end: Position {
                    line: span.end_line.max(span.line),
                },
            }],
        }
    }

    /// The first line.
    pub fn line(&self) -> usize {
        self.ranges.first().map_or(0, |r| r.start.line)
    }
}

/// A build arg the target uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    /// The name.
    pub name: String,
    /// The comment that describes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The value the build would take (none: declared without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The `ARG` instruction.
    pub location: Location,
}

/// A secret or an ssh id the target's `RUN --mount`s use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Need {
    /// The id.
    pub name: String,
    /// `required` (the build fails without it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The `RUN` instruction.
    pub location: Location,
}

/// `--call=outline`: what the target asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outline {
    /// The target's `AS` name (lowercase); none for an unnamed last stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The comment that describes the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Build args.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    /// Secrets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Need>,
    /// Ssh ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<Need>,
}

/// One stage, for `--call=targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The `AS` name (lowercase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The last stage: what a build without `--target` builds.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// The comment that describes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The base as written.
    pub base: String,
    /// `--platform` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The `FROM` instruction.
    pub location: Location,
}

/// BuildKit's `getDocComment`: the rest of the first comment that starts with `name `.
fn doc_comment(comments: &[String], name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix).map(str::to_owned))
}

/// Every stage with its description; the last one is the default.
pub fn targets(file: &Dockerfile, text: &str) -> Vec<Target> {
    let source = Source::new(text);
    let last = file.stages.len().saturating_sub(1);
    file.stages
        .iter()
        .enumerate()
        .map(|(i, stage)| Target {
            name: stage.name.clone(),
            default: i == last,
            description: stage
                .name
                .as_deref()
                .and_then(|n| doc_comment(source.comments_at(stage.span.start), n)),
            base: stage.from.image.clone(),
            platform: stage.from.platform.clone(),
            location: Location::of(stage.span),
        })
        .collect()
}

/// A declaration as the outline keeps it.
#[derive(Debug, Clone)]
struct ArgInfo {
    name: String,
    value: Option<String>,
    description: Option<String>,
    span: Span,
    /// Position among the names of its `ARG` line, to order names on one line.
    place: usize,
    /// The global `ARG`s its default named.
    deps: BTreeSet<String>,
}

/// One stage's capture (BuildKit's `outlineCapture`).
#[derive(Debug, Clone, Default)]
struct Capture {
    all: BTreeMap<String, ArgInfo>,
    used: BTreeSet<String>,
    secrets: BTreeMap<String, (bool, Span)>,
    ssh: BTreeMap<String, (bool, Span)>,
}

/// A stage after its walk: its capture, its base stage, the stages it reads from, its
/// variables at the end (for stages built on it).
struct Walked {
    capture: Capture,
    base: Option<usize>,
    deps: Vec<usize>,
    env: Vec<(String, String)>,
}

/// Build args that never become environment variables.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_owned(), value));
}

/// The outline of the target: the build args, secrets and ssh ids it uses.
pub fn outline(file: &Dockerfile, text: &str, options: &OutlineOptions) -> Result<Outline, Error> {
    let source = Source::new(text);
    let lexer = Lexer::new(file.directives.escape);
    let stages = &file.stages;
    let target = match &options.target {
        None => stages.len() - 1,
        Some(name) => stage_named(file, name).ok_or_else(|| {
            let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
            let hint = match did_you_mean(name, &names) {
                Some(close) => format!("did you mean {close}?"),
                None if names.is_empty() => {
                    "the Dockerfile names no stage (FROM IMAGE AS NAME)".to_owned()
                }
                None => format!("the stages are: {}", names.join(", ")),
            };
            Error::new(
                stages[stages.len() - 1].span,
                ErrorKind::Arguments(format!("target stage {name:?} could not be found")),
            )
            .with_hint(hint)
        })?,
    };
    let target_name = stages[target].name.clone().unwrap_or_default();
    let target_platform = options
        .platform
        .as_deref()
        .and_then(platform::parse)
        .unwrap_or_else(platform::host);
    let mut global = from::default_args(&options.build_args, &target_name, &target_platform);

    // The global ARGs (`buildMetaArgs`).
    let mut all = BTreeMap::new();
    for instruction in &file.global_args {
        let Kind::Arg(decls) = &instruction.kind else {
            continue;
        };
        let comments = source.comments_at(instruction.span.start);
        for (place, decl) in decls.iter().enumerate() {
            let mut info = ArgInfo {
                name: decl.name.clone(),
                value: None,
                description: doc_comment(comments, &decl.name),
                span: instruction.span,
                place,
                deps: BTreeSet::new(),
            };
            match (options.build_args.get(&decl.name), &decl.default) {
                (Some(given), _) => info.value = Some(given.clone()),
                (None, Some(default)) => {
                    let expanded = lexer
                        .expand_word(default, &global)
                        .map_err(|e| crate::expand_error(instruction.span, &e))?;
                    info.deps = expanded.matched.into_iter().collect();
                    if info.deps.remove(&decl.name)
                        && let Some(old) = all.get(&decl.name)
                    {
                        let old: &ArgInfo = old;
                        info.deps.extend(old.deps.iter().cloned());
                    }
                    info.value = Some(expanded.value);
                }
                (None, None) => {}
            }
            if let Some(value) = &info.value {
                set(&mut global, &decl.name, value.clone());
            }
            all.insert(decl.name.clone(), info);
        }
    }
    let root = Capture {
        all,
        ..Capture::default()
    };

    // Each stage the target needs, in file order (a base or a dependency comes first).
    let needed = needed(file, target);
    let mut walked: Vec<Option<Walked>> = Vec::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        if !needed.contains(&i) {
            walked.push(None);
            continue;
        }
        let mut used = BTreeSet::new();
        let base_name = match lexer.expand_word(&stage.from.image, &global) {
            Ok(expanded) => {
                used.extend(expanded.matched);
                expanded.value
            }
            Err(e) => return Err(crate::expand_error(stage.span, &e)),
        };
        if let Some(written) = &stage.from.platform {
            let expanded = lexer
                .expand_word(written, &global)
                .map_err(|e| crate::expand_error(stage.span, &e))?;
            used.extend(expanded.matched);
        }
        let base = stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(base_name.to_lowercase().as_str()));
        let (mut capture, mut env) = match base.and_then(|b| walked[b].as_ref()) {
            // The base's capture as it was before its own dispatch: the globals and
            // what its FROM used (its ARGs are its own, reached through `base`).
            Some(parent) => (
                Capture {
                    all: root.all.clone(),
                    used: BTreeSet::new(),
                    ..Capture::default()
                },
                parent.env.clone(),
            ),
            None => (
                root.clone(),
                crate::lint::image_env(options.image_env.get(&base_name)),
            ),
        };
        capture.used.extend(used);
        let mut deps = Vec::new();
        for instruction in &stage.instructions {
            walk(
                instruction,
                &lexer,
                &source,
                options,
                &global,
                &mut env,
                &mut capture,
            )?;
            deps.extend(reads_from(file, instruction));
        }
        walked.push(Some(Walked {
            capture,
            base,
            deps,
            env,
        }));
    }

    let mut args = Vec::new();
    collect_args(&walked, target, &mut BTreeSet::new(), &mut args);
    args.sort_by_key(|a| (a.span.line, a.place));
    let mut secrets = Vec::new();
    collect_needs(&walked, target, &mut BTreeSet::new(), &mut secrets, |c| {
        &c.secrets
    });
    let mut ssh = Vec::new();
    collect_needs(&walked, target, &mut BTreeSet::new(), &mut ssh, |c| &c.ssh);
    let target_stage = &stages[target];
    Ok(Outline {
        name: target_stage.name.clone(),
        description: target_stage
            .name
            .as_deref()
            .and_then(|n| doc_comment(source.comments_at(target_stage.span.start), n)),
        args: args
            .into_iter()
            .map(|a| Arg {
                name: a.name,
                description: a.description,
                value: a.value.filter(|v| !v.is_empty()),
                location: Location::of(a.span),
            })
            .collect(),
        secrets,
        ssh,
    })
}

/// The stage called `name` (any case); the last if several are.
fn stage_named(file: &Dockerfile, name: &str) -> Option<usize> {
    let name = name.to_lowercase();
    file.stages
        .iter()
        .rposition(|s| s.name.as_deref() == Some(name.as_str()))
}

/// The stages `COPY --from` or `RUN --mount=from=` of one instruction name.
fn reads_from(file: &Dockerfile, instruction: &Instruction) -> Vec<usize> {
    let froms: Vec<&str> = match &instruction.kind {
        Kind::Copy(c) => c.from.as_deref().into_iter().collect(),
        Kind::Run(run) => run.mounts.iter().filter_map(|m| m.get(&["from"])).collect(),
        _ => Vec::new(),
    };
    froms
        .into_iter()
        .filter_map(|f| match f.parse::<usize>() {
            Ok(index) => (index < file.stages.len()).then_some(index),
            Err(_) => stage_named(file, f),
        })
        .collect()
}

/// The stages the target needs: itself, its base stages and the stages it reads from.
fn needed(file: &Dockerfile, target: usize) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let stage = &file.stages[i];
        let base = stage.from.image.to_lowercase();
        // A `$VAR` base may still name a stage; every earlier stage of a name the
        // written base could be is a candidate only when it is written out.
        if let Some(b) = file.stages[..i]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(base.as_str()))
        {
            stack.push(b);
        }
        for instruction in &stage.instructions {
            stack.extend(reads_from(file, instruction));
        }
    }
    seen
}

/// One instruction's part in the capture (`dispatchArg`, `dispatchSecret`,
/// `dispatchSSH`) and in the stage's variables.
fn walk(
    instruction: &Instruction,
    lexer: &Lexer,
    source: &Source<'_>,
    options: &OutlineOptions,
    global: &[(String, String)],
    env: &mut Vec<(String, String)>,
    capture: &mut Capture,
) -> Result<(), Error> {
    let span = instruction.span;
    let expand = |word: &str, env: &Vec<(String, String)>| {
        lexer
            .expand_word(word, env)
            .map(|e| e.value)
            .map_err(|e| crate::expand_error(span, &e))
    };
    match &instruction.kind {
        Kind::Env(pairs) => {
            for kv in pairs {
                let value = if kv.legacy {
                    kv.value.clone()
                } else {
                    expand(&kv.value, env)?
                };
                let key = expand(&kv.key, env)?;
                set(env, &key, value);
            }
        }
        Kind::Arg(decls) => {
            let comments = source.comments_at(span.start);
            for (place, decl) in decls.iter().enumerate() {
                let given = options.build_args.get(&decl.name);
                let mut inherited = false;
                let value = match (given, &decl.default) {
                    (Some(given), _) => Some(given.clone()),
                    (None, Some(default)) => Some(expand(default, env)?),
                    (None, None) => {
                        let from_global = crate::shell::Env::get(global, &decl.name);
                        inherited = from_global.is_some();
                        from_global.map(str::to_owned)
                    }
                };
                if let Some(value) = &value
                    && !NON_ENV_ARGS.contains(&decl.name.as_str())
                {
                    set(env, &decl.name, value.clone());
                }
                if !inherited {
                    capture.all.insert(
                        decl.name.clone(),
                        ArgInfo {
                            name: decl.name.clone(),
                            value,
                            description: doc_comment(comments, &decl.name),
                            span,
                            place,
                            deps: BTreeSet::new(),
                        },
                    );
                }
                capture.used.insert(decl.name.clone());
            }
        }
        Kind::Run(run) => {
            for mount in &run.mounts {
                let get = |keys: &[&str]| -> Result<Option<String>, Error> {
                    mount.get(keys).map(|v| expand(v, env)).transpose()
                };
                let kind = expand(&mount.kind, env)?;
                match kind.as_str() {
                    "secret" => {
                        let id = match (
                            get(&["source", "src"])?,
                            get(&["id"])?,
                            get(&["target", "dst", "destination"])?,
                            get(&["env"])?,
                        ) {
                            (Some(s), _, _, _) | (None, Some(s), _, _) => s,
                            (None, None, Some(target), _) => target
                                .trim_end_matches('/')
                                .rsplit('/')
                                .next()
                                .unwrap_or_default()
                                .to_owned(),
                            (None, None, None, Some(env)) => env,
                            (None, None, None, None) => continue,
                        };
                        capture.secrets.entry(id).or_insert((required(mount), span));
                    }
                    "ssh" => {
                        let id = get(&["id"])?
                            .filter(|id| !id.is_empty())
                            .unwrap_or_else(|| "default".to_owned());
                        capture.ssh.entry(id).or_insert((required(mount), span));
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `required` (alone, or a true value as Go's `strconv.ParseBool` reads it).
fn required(mount: &Mount) -> bool {
    mount
        .get(&["required"])
        .is_some_and(|v| v.is_empty() || matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// BuildKit's `markAllUsed`: the used names and, through the global `ARG`s' defaults,
/// the names those used.
fn mark_all_used(capture: &Capture) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut stack: Vec<String> = capture.used.iter().cloned().collect();
    while let Some(name) = stack.pop() {
        if !used.insert(name.clone()) {
            continue;
        }
        if let Some(info) = capture.all.get(&name) {
            stack.extend(info.deps.iter().cloned());
        }
    }
    used
}

/// BuildKit's `dispatchState.args`: the stage's, then its base's, then its dependencies',
/// each name once.
fn collect_args(
    walked: &[Option<Walked>],
    at: usize,
    visited: &mut BTreeSet<String>,
    out: &mut Vec<ArgInfo>,
) {
    let Some(stage) = walked.get(at).and_then(Option::as_ref) else {
        return;
    };
    for name in mark_all_used(&stage.capture) {
        if let Some(info) = stage.capture.all.get(&name)
            && visited.insert(name)
        {
            out.push(info.clone());
        }
    }
    if let Some(base) = stage.base {
        collect_args(walked, base, visited, out);
    }
    let mut deps = stage.deps.clone();
    deps.sort_unstable();
    deps.dedup();
    for dep in deps {
        if dep != at {
            collect_args(walked, dep, visited, out);
        }
    }
}

/// The same for secrets or ssh ids, in line order.
fn collect_needs(
    walked: &[Option<Walked>],
    at: usize,
    visited: &mut BTreeSet<String>,
    out: &mut Vec<Need>,
    pick: fn(&Capture) -> &BTreeMap<String, (bool, Span)>,
) {
    fn gather(
        walked: &[Option<Walked>],
        at: usize,
        visited: &mut BTreeSet<String>,
        found: &mut Vec<(String, bool, Span)>,
        seen_stages: &mut BTreeSet<usize>,
        pick: fn(&Capture) -> &BTreeMap<String, (bool, Span)>,
    ) {
        if !seen_stages.insert(at) {
            return;
        }
        let Some(stage) = walked.get(at).and_then(Option::as_ref) else {
            return;
        };
        for (name, (required, span)) in pick(&stage.capture) {
            if visited.insert(name.clone()) {
                found.push((name.clone(), *required, *span));
            }
        }
        if let Some(base) = stage.base {
            gather(walked, base, visited, found, seen_stages, pick);
        }
        let mut deps = stage.deps.clone();
        deps.sort_unstable();
        deps.dedup();
        for dep in deps {
            gather(walked, dep, visited, found, seen_stages, pick);
        }
    }
    let mut found = Vec::new();
    gather(walked, at, visited, &mut found, &mut BTreeSet::new(), pick);
    found.sort_by_key(|(_, _, span)| (span.line, span.start));
    out.extend(found.into_iter().map(|(name, required, span)| Need {
        name,
        required,
        location: Location::of(span),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outlines `text` for `target` and gives `NAME=VALUE # description` per arg, then
    /// `secret:ID[!]` and `ssh:ID[!]` (`!`: required).
    fn check(text: &str, target: Option<&str>, build_args: &[(&str, &str)], expected: &[&str]) {
        let file = crate::parse(text).unwrap();
        let options = OutlineOptions {
            target: target.map(str::to_owned),
            build_args: build_args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..OutlineOptions::default()
        };
        let found = outline(&file, text, &options).unwrap();
        let mut got: Vec<String> = found
            .args
            .iter()
            .map(|a| {
                let mut s = format!("{}={}", a.name, a.value.as_deref().unwrap_or(""));
                if let Some(d) = &a.description {
                    s.push_str(" # ");
                    s.push_str(d);
                }
                s
            })
            .collect();
        for (kind, list) in [("secret", &found.secrets), ("ssh", &found.ssh)] {
            for n in list {
                got.push(format!(
                    "{kind}:{}{}",
                    n.name,
                    if n.required { "!" } else { "" }
                ));
            }
        }
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn globals_used_by_from_and_declared_in_stages() {
        let text = "\
# GO the Go version
ARG GO=1.23
ARG UNUSED=x
# BASE where it starts
ARG BASE=golang:${GO}
FROM ${BASE} AS build
# MODE how to build
ARG MODE=release
ARG GO
RUN --mount=type=secret,id=token,required --mount=type=ssh echo
FROM alpine
COPY --from=build /x /x
RUN --mount=type=secret,target=/run/npmrc --mount=type=ssh,id=git,required=true echo
";
        check(
            text,
            None,
            &[],
            &[
                "GO=1.23 # the Go version",
                "BASE=golang:1.23 # where it starts",
                "MODE=release # how to build",
                "secret:token!",
                "secret:npmrc",
                "ssh:default",
                "ssh:git!",
            ],
        );
        // A build arg is the value shown; the target's stage only.
        check(
            text,
            Some("build"),
            &[("MODE", "debug")],
            &[
                "GO=1.23 # the Go version",
                "BASE=golang:1.23 # where it starts",
                "MODE=debug # how to build",
                "secret:token!",
                "ssh:default",
            ],
        );
    }

    #[test]
    fn stage_defaults_see_the_stage_and_comments_must_name_the_arg() {
        check(
            "FROM a\nENV HOME=/root\n# the cache dir\nARG DIR=$HOME/.cache\nARG EMPTY\n",
            None,
            &[],
            &["DIR=/root/.cache", "EMPTY="],
        );
        // An unused stage's ARGs are not the target's.
        check("FROM a AS x\nARG X=1\nFROM b\nARG Y\n", None, &[], &["Y="]);
    }

    #[test]
    fn targets_with_descriptions() {
        let text = "# base the base\nFROM alpine AS base\n\n# test runs the tests\nFROM base AS test\nFROM --platform=$BUILDPLATFORM scratch\n";
        let file = crate::parse(text).unwrap();
        let found = targets(&file, text);
        let got: Vec<_> = found
            .iter()
            .map(|t| {
                (
                    t.name.as_deref(),
                    t.description.as_deref(),
                    t.default,
                    t.base.as_str(),
                    t.platform.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("base"), Some("the base"), false, "alpine", None),
                (Some("test"), Some("runs the tests"), false, "base", None),
                (None, None, true, "scratch", Some("$BUILDPLATFORM")),
            ]
        );
    }

    #[test]
    fn unknown_target_is_an_error_with_a_suggestion() {
        let text = "FROM a AS build\n";
        let file = crate::parse(text).unwrap();
        let options = OutlineOptions {
            target: Some("biuld".to_owned()),
            ..OutlineOptions::default()
        };
        let err = outline(&file, text, &options).unwrap_err();
        assert_eq!(
            err.kind.to_string(),
            "target stage \"biuld\" could not be found"
        );
        assert_eq!(err.hint.as_deref(), Some("did you mean build?"));
    }
}
