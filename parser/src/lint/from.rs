//! The `FROM` lines against the global `ARG`s, as BuildKit checks them before dispatch:
//! the base image with only the `ARG` defaults (`InvalidDefaultArgInFrom`), then base
//! and `--platform` with the build args (`UndefinedArgInFrom`, `RedundantTargetPlatform`,
//! `FromPlatformFlagConstDisallowed`).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    CheckOptions, FROM_PLATFORM_FLAG_CONST_DISALLOWED, INVALID_DEFAULT_ARG_IN_FROM,
    REDUNDANT_TARGET_PLATFORM, Report, UNDEFINED_ARG_IN_FROM, platform, reference, suggest,
};
use crate::ast::{Dockerfile, Kind};
use crate::error::Span;
use crate::shell::{Env, Expansion, Lexer};

/// What the `FROM` lines resolved to, for the dispatch of the stages.
pub(crate) struct Globals {
    /// The global scope: platform args and the global `ARG`s that have a value.
    pub(crate) env: Vec<(String, String)>,
    /// Each stage's base after expansion (an image, or an earlier stage's name).
    pub(crate) bases: Vec<String>,
    /// Each stage's `--platform` after expansion, when it has one.
    pub(crate) platforms: Vec<Option<platform::Platform>>,
    /// The platform the build targets.
    pub(crate) target: platform::Platform,
}

/// Runs the `FROM` rules; `None` when BuildKit would stop here (a base or platform that
/// does not expand, is empty, or does not parse), so no stage is dispatched.
pub(crate) fn check(
    file: &Dockerfile,
    options: &CheckOptions,
    report: &mut Report<'_>,
) -> Option<Globals> {
    let lexer = Lexer::new(file.directives.escape);
    let target = options
        .target
        .clone()
        .or_else(|| file.stages.last().and_then(|s| s.name.clone()))
        .unwrap_or_default();
    let target_platform = options
        .platform
        .as_deref()
        .and_then(platform::parse)
        .unwrap_or_else(platform::host);
    let defaults = default_args(&options.build_args, &target, &target_platform);

    // With the defaults alone, every base should still name a valid image.
    if let Some(Scope { env, .. }) = global_args(defaults.clone(), file, &lexer, None) {
        for stage in &file.stages {
            let Ok(base) = lexer.expand_word(&stage.from.image, &env) else {
                break;
            };
            if !reference::is_valid(&base.value) {
                report.add(
                    &INVALID_DEFAULT_ARG_IN_FROM,
                    stage.span,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.from.image
                    ),
                );
            }
        }
    }

    let Scope { env, declared } = global_args(defaults, file, &lexer, Some(&options.build_args))?;
    // Names a FROM may use: the declared global ARGs and everything in scope.
    let mut known: BTreeSet<String> = declared;
    known.extend(env.iter().map(|(k, _)| k.clone()));
    let known: Vec<String> = known.into_iter().collect();

    let mut bases = Vec::new();
    let mut platforms = Vec::new();
    for stage in &file.stages {
        let base = lexer.expand_word(&stage.from.image, &env).ok()?;
        undeclared(&base, &known, stage.span, report);
        if base.value.is_empty() {
            return None;
        }
        if let Some(written) = &stage.from.platform {
            let value = lexer.expand_word(written, &env).ok()?;
            undeclared(&value, &known, stage.span, report);
            redundant_target_platform(written, &value, &env, stage.span, report);
            constant_platform(stage.name.as_deref(), &value, stage.span, report);
            match platform::parse(&value.value) {
                Some(parsed) if !value.value.is_empty() => platforms.push(Some(parsed)),
                _ => return None,
            }
        } else {
            platforms.push(None);
        }
        bases.push(base.value);
    }
    Some(Globals {
        env,
        bases,
        platforms,
        target: target_platform,
    })
}

fn undeclared(
    expansion: &Expansion<String>,
    known: &[String],
    span: Span,
    report: &mut Report<'_>,
) {
    for name in &expansion.unmatched {
        if known.contains(name) {
            continue;
        }
        let message = match suggest::search(name, known.iter().map(String::as_str)) {
            Some(close) => {
                format!("FROM argument '{name}' is not declared (did you mean {close}?)")
            }
            None => format!("FROM argument '{name}' is not declared"),
        };
        report.add_at(span.start, &UNDEFINED_ARG_IN_FROM, span, message);
    }
}

/// `--platform=$TARGETPLATFORM` (or `${TARGETPLATFORM}`): the only variable, and the
/// value is the target platform.
fn redundant_target_platform(
    written: &str,
    value: &Expansion<String>,
    env: &[(String, String)],
    span: Span,
    report: &mut Report<'_>,
) {
    if value.matched.len() != 1 || !value.unmatched.is_empty() {
        return;
    }
    if value.matched.contains("TARGETPLATFORM")
        && Env::get(env, "TARGETPLATFORM") == Some(value.value.as_str())
    {
        report.add_at(
            span.start,
            &REDUNDANT_TARGET_PLATFORM,
            span,
            format!(
                "Setting platform to predefined {written} in FROM is redundant as this is the default behavior"
            ),
        );
    }
}

/// `--platform=linux/amd64` written out, unless the stage's name mentions its OS or
/// architecture (`AS build-amd64`).
fn constant_platform(
    stage_name: Option<&str>,
    value: &Expansion<String>,
    span: Span,
    report: &mut Report<'_>,
) {
    if !value.matched.is_empty() || !value.unmatched.is_empty() {
        return;
    }
    let Some(parsed) = platform::parse(&value.value) else {
        return;
    };
    let name = stage_name.unwrap_or_default();
    if name.contains(parsed.os.as_str()) || name.contains(parsed.architecture.as_str()) {
        return;
    }
    report.add_at(
        span.start,
        &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
        span,
        format!(
            "FROM --platform flag should not use constant value {:?}",
            value.value
        ),
    );
}

/// The automatic platform args (`BUILD*` the host's, `TARGET*` the target's) and
/// `TARGETSTAGE`, each overridable by a build arg.
pub(crate) fn default_args(
    build_args: &BTreeMap<String, String>,
    target: &str,
    target_platform: &platform::Platform,
) -> Vec<(String, String)> {
    let host = platform::host();
    let mut out = Vec::new();
    for (prefix, platform) in [("BUILD", &host), ("TARGET", target_platform)] {
        let values = [
            ("PLATFORM", platform.format()),
            ("OS", platform.os.clone()),
            ("OSVERSION", String::new()),
            ("ARCH", platform.architecture.clone()),
            ("VARIANT", platform.variant.clone()),
        ];
        for (suffix, value) in values {
            out.push((format!("{prefix}{suffix}"), value));
        }
    }
    out.push(("TARGETSTAGE".to_owned(), target.to_owned()));
    for (key, value) in &mut out {
        if let Some(given) = build_args.get(key.as_str()) {
            value.clone_from(given);
        }
    }
    out
}

/// The global scope.
struct Scope {
    /// The names with a value.
    env: Vec<(String, String)>,
    /// Every global `ARG` declared, with a value or not.
    declared: BTreeSet<String>,
}

/// The global `ARG`s on top of `env`: a build arg's value, else the default expanded
/// with what came before; `None` if a default does not expand.
fn global_args(
    mut env: Vec<(String, String)>,
    file: &Dockerfile,
    lexer: &Lexer,
    build_args: Option<&BTreeMap<String, String>>,
) -> Option<Scope> {
    let mut declared = BTreeSet::new();
    for instruction in &file.global_args {
        let Kind::Arg(decls) = &instruction.kind else {
            continue;
        };
        for decl in decls {
            let value = match build_args.and_then(|b| b.get(&decl.name)) {
                Some(given) => Some(given.clone()),
                None => match &decl.default {
                    Some(default) => Some(lexer.expand_word(default, &env).ok()?.value),
                    None => None,
                },
            };
            if let Some(value) = value {
                env.retain(|(k, _)| *k != decl.name);
                env.push((decl.name.clone(), value));
            }
            declared.insert(decl.name.clone());
        }
    }
    Some(Scope { env, declared })
}
