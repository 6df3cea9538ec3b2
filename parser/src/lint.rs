//! BuildKit's build checks (`docker build --check`): the rules that flag a Dockerfile
//! which parses but is probably wrong, with BuildKit's rule names, messages and links.
//!
//! [`check`] takes the parsed [`Dockerfile`], its text (for what the AST does not keep:
//! comments above an instruction, the casing of `AS`, empty continuation lines) and
//! [`CheckOptions`] (build args, target and platform, the `.dockerignore` matcher, base
//! images' environments, shells and platforms), and returns [`Finding`]s in line order. Which
//! rules run is [`CheckConfig`]'s answer, read from the `# check=` directive, or from the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg which replaces it, as in BuildKit:
//! `skip=Rule1,Rule2` or `skip=all` turn rules off, `experimental=Rule` or
//! `experimental=all` turn on the experimental one ([`INVALID_DEFINITION_DESCRIPTION`];
//! `skip` does not touch it), `error=true` makes every finding an error. A `# check=`
//! comment among those right above an instruction (frontend 1.21+) adds its `skip` and
//! `experimental` for the rules BuildKit runs with that instruction; the rules it runs
//! for the whole file (instruction casing, stage names, empty continuations, default
//! `ARG`s in `FROM`, base image platforms) see only the file's configuration.
//!
//! The rules follow where BuildKit reports them: the parse (casing, stage names,
//! `MAINTAINER`, description comments, empty continuation lines), the `FROM` lines
//! against the global `ARG`s, the base images' platforms, and the dispatch of each
//! stage's instructions (undefined variables, relative `WORKDIR`, shell-form `CMD`,
//! repeated `CMD`, legacy `ENV k v`, secrets in `ARG`/`ENV`, ignored `COPY` sources,
//! `EXPOSE` formats). Dispatch rules see only the stages the target needs; with no target
//! every stage is checked, as `--check` does.
//!
//! Pure: no I/O; the caller reads the `.dockerignore` and base image configurations.
//! Not modelled: Windows stages (paths are Linux paths), `ONBUILD` triggers
//! run in a child stage, and named contexts standing in for base images. A finding
//! BuildKit would repeat for one instruction is given once.
//!
//! ```
//! use kiln_parser::lint::{self, CheckOptions};
//! let text = "FROM alpine AS Build\nCMD echo hi\n";
//! let file = kiln_parser::parse(text).unwrap();
//! let findings = lint::check(&file, text, &CheckOptions::default());
//! assert_eq!(findings[0].rule, "StageNameCasing");
//! assert_eq!(findings[0].message, "Stage name 'Build' should be lowercase");
//! assert_eq!(findings[1].rule, "JSONArgsRecommended");
//! ```

mod config;
mod dispatch;
mod expose;
pub(crate) mod from;
pub(crate) mod platform;
mod reference;
pub(crate) mod source;
mod stages;
mod suggest;

pub(crate) use dispatch::image_env;
pub use dispatch::looks_secret;

use std::collections::BTreeMap;

use crate::ast::Dockerfile;
use crate::dockerignore::Matcher;
use crate::error::{Span, excerpt};

pub use config::{CheckConfig, CheckConfigError};

/// One build-check rule: its name, the slug of its documentation page, what it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The name, as `# check=skip=` takes it (`StageNameCasing`).
    pub name: &'static str,
    /// The last part of the documentation URL (`stage-name-casing`).
    pub slug: &'static str,
    /// BuildKit's one-line description.
    pub description: &'static str,
    /// Off unless named by `experimental=` (or `experimental=all`).
    pub experimental: bool,
}

impl Rule {
    /// `https://docs.docker.com/go/dockerfile/rule/<slug>/`; empty for a rule BuildKit
    /// gives no page ([`INVALID_BASE_IMAGE_PLATFORM`]).
    pub fn url(&self) -> String {
        if self.slug.is_empty() {
            return String::new();
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{}/", self.slug)
    }
}

const fn rule(name: &'static str, slug: &'static str, description: &'static str) -> Rule {
    Rule {
        name,
        slug,
        description,
        experimental: false,
    }
}

/// `FROM image AS Name`: stage names should be lowercase.
pub const STAGE_NAME_CASING: Rule = rule(
    "StageNameCasing",
    "stage-name-casing",
    "Stage names should be lowercase",
);
/// `FROM image as name`: `AS` should be cased like `FROM`.
pub const FROM_AS_CASING: Rule = rule(
    "FromAsCasing",
    "from-as-casing",
    "The 'as' keyword should match the case of the 'from' keyword",
);
/// A blank line inside a continued instruction.
pub const NO_EMPTY_CONTINUATION: Rule = rule(
    "NoEmptyContinuation",
    "no-empty-continuation",
    "Empty continuation lines will become errors in a future release",
);
/// Instruction keywords cased unlike the file's majority.
pub const CONSISTENT_INSTRUCTION_CASING: Rule = rule(
    "ConsistentInstructionCasing",
    "consistent-instruction-casing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
);
/// Two stages with one name.
pub const DUPLICATE_STAGE_NAME: Rule = rule(
    "DuplicateStageName",
    "duplicate-stage-name",
    "Stage names should be unique",
);
/// A stage named `scratch` or `context`.
pub const RESERVED_STAGE_NAME: Rule = rule(
    "ReservedStageName",
    "reserved-stage-name",
    "Reserved words should not be used as stage names",
);
/// Shell-form `CMD`/`ENTRYPOINT` without a `SHELL`.
pub const JSON_ARGS_RECOMMENDED: Rule = rule(
    "JSONArgsRecommended",
    "json-args-recommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
);
/// `MAINTAINER`.
pub const MAINTAINER_DEPRECATED: Rule = rule(
    "MaintainerDeprecated",
    "maintainer-deprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
);
/// `FROM $X` with no global `ARG X`.
pub const UNDEFINED_ARG_IN_FROM: Rule = rule(
    "UndefinedArgInFrom",
    "undefined-arg-in-from",
    "FROM command must use declared ARGs",
);
/// A relative `WORKDIR` before any absolute one.
pub const WORKDIR_RELATIVE_PATH: Rule = rule(
    "WorkdirRelativePath",
    "workdir-relative-path",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
);
/// `$X` where no `ARG` or `ENV` defines `X`.
pub const UNDEFINED_VAR: Rule = rule(
    "UndefinedVar",
    "undefined-var",
    "Variables should be defined before their use",
);
/// Two `CMD`, `ENTRYPOINT` or `HEALTHCHECK` in one stage.
pub const MULTIPLE_INSTRUCTIONS_DISALLOWED: Rule = rule(
    "MultipleInstructionsDisallowed",
    "multiple-instructions-disallowed",
    "Multiple instructions of the same type should not be used in the same stage",
);
/// `ENV key value` and `LABEL key value`.
pub const LEGACY_KEY_VALUE_FORMAT: Rule = rule(
    "LegacyKeyValueFormat",
    "legacy-key-value-format",
    "Legacy key/value format with whitespace separator should not be used",
);
/// `FROM --platform=$TARGETPLATFORM`.
pub const REDUNDANT_TARGET_PLATFORM: Rule = rule(
    "RedundantTargetPlatform",
    "redundant-target-platform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
);
/// `ARG PASSWORD`, `ENV API_TOKEN=...`.
pub const SECRETS_USED_IN_ARG_OR_ENV: Rule = rule(
    "SecretsUsedInArgOrEnv",
    "secrets-used-in-arg-or-env",
    "Sensitive data should not be used in the ARG or ENV commands",
);
/// `ARG TAG` then `FROM image:$TAG`: no valid image without a build arg.
pub const INVALID_DEFAULT_ARG_IN_FROM: Rule = rule(
    "InvalidDefaultArgInFrom",
    "invalid-default-arg-in-from",
    "Default value for global ARG results in an empty or invalid base image name",
);
/// `FROM --platform=linux/amd64`.
pub const FROM_PLATFORM_FLAG_CONST_DISALLOWED: Rule = rule(
    "FromPlatformFlagConstDisallowed",
    "from-platform-flag-const-disallowed",
    "FROM --platform flag should not use a constant value",
);
/// `COPY` of a path `.dockerignore` leaves out (experimental before frontend 1.21).
pub const COPY_IGNORED_FILE: Rule = rule(
    "CopyIgnoredFile",
    "copy-ignored-file",
    "Attempting to Copy file that is excluded by .dockerignore",
);
/// A comment above `FROM ... AS name` or `ARG name` that does not start with the name
/// (experimental).
pub const INVALID_DEFINITION_DESCRIPTION: Rule = Rule {
    experimental: true,
    ..rule(
        "InvalidDefinitionDescription",
        "invalid-definition-description",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
    )
};

/// `EXPOSE 80/TCP`: the protocol should be lowercase.
pub const EXPOSE_PROTO_CASING: Rule = rule(
    "ExposeProtoCasing",
    "expose-proto-casing",
    "Protocol in EXPOSE instruction should be lowercase",
);
/// `EXPOSE 127.0.0.1:80:80` or `EXPOSE 8080:80`: an address or host port.
pub const EXPOSE_INVALID_FORMAT: Rule = rule(
    "ExposeInvalidFormat",
    "expose-invalid-format",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
);
/// A base image whose OS or architecture is not the platform the stage is built for
/// (BuildKit gives it no documentation page).
pub const INVALID_BASE_IMAGE_PLATFORM: Rule = rule(
    "InvalidBaseImagePlatform",
    "",
    "Base image platform does not match expected target platform",
);

/// Every rule [`check`] knows.
pub const RULES: &[Rule] = &[
    STAGE_NAME_CASING,
    FROM_AS_CASING,
    NO_EMPTY_CONTINUATION,
    CONSISTENT_INSTRUCTION_CASING,
    DUPLICATE_STAGE_NAME,
    RESERVED_STAGE_NAME,
    JSON_ARGS_RECOMMENDED,
    MAINTAINER_DEPRECATED,
    UNDEFINED_ARG_IN_FROM,
    WORKDIR_RELATIVE_PATH,
    UNDEFINED_VAR,
    MULTIPLE_INSTRUCTIONS_DISALLOWED,
    LEGACY_KEY_VALUE_FORMAT,
    REDUNDANT_TARGET_PLATFORM,
    SECRETS_USED_IN_ARG_OR_ENV,
    INVALID_DEFAULT_ARG_IN_FROM,
    FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    COPY_IGNORED_FILE,
    INVALID_DEFINITION_DESCRIPTION,
    EXPOSE_PROTO_CASING,
    EXPOSE_INVALID_FORMAT,
    INVALID_BASE_IMAGE_PLATFORM,
];

/// The [`Finding::rule`] of an expansion that hit a bound of [`crate::shell`] (nesting,
/// expanded size): not a BuildKit rule and not skippable, always an error, since the
/// build stops at the same word.
pub const EXPANSION_LIMIT: &str = "ExpansionLimit";

/// What the checks know beyond the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `--build-arg`s: they give global `ARG`s and stage `ARG`s their values, override
    /// the platform args (`TARGETPLATFORM` ...), and `BUILDKIT_DOCKERFILE_CHECK` replaces
    /// the `# check=` directive.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: only the stages it needs are dispatched; `None` checks every stage.
    pub target: Option<String>,
    /// The `.dockerignore` patterns, for [`COPY_IGNORED_FILE`].
    pub ignore: Option<Matcher>,
    /// The environment of each base image (`KEY=value` as in its config), keyed by the
    /// `FROM` image after `ARG` expansion (`alpine:3.20`). Variables the image defines
    /// are not [`UNDEFINED_VAR`]; an image not listed defines only `PATH`.
    pub image_env: BTreeMap<String, Vec<String>>,
    /// The `SHELL` of each base image that sets one, keyed like
    /// [`CheckOptions::image_env`]: a stage built on it starts with a shell, so shell-form
    /// `CMD`/`ENTRYPOINT` are not [`JSON_ARGS_RECOMMENDED`].
    pub image_shell: BTreeMap<String, Vec<String>>,
    /// `--platform`: the platform the build targets (`linux/arm64`), which gives
    /// `TARGETPLATFORM` and its parts; `None` is the host's.
    pub platform: Option<String>,
    /// The platform of each base image (`os/architecture[/variant]` of its config), keyed
    /// like [`CheckOptions::image_env`], for [`INVALID_BASE_IMAGE_PLATFORM`]. Leave out
    /// images without layers: BuildKit takes them as `scratch` and does not check them.
    pub image_platform: BTreeMap<String, String>,
}

/// One rule's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name (`StageNameCasing`); `CheckOptions` for a `# check=` directive
    /// that does not parse, which BuildKit refuses before checking anything.
    pub rule: &'static str,
    /// BuildKit's message.
    pub message: String,
    /// Where: the instruction (for [`NO_EMPTY_CONTINUATION`], the continuation's last
    /// line; for [`MULTIPLE_INSTRUCTIONS_DISALLOWED`], the instruction that is overridden).
    pub span: Span,
    /// The rule's documentation.
    pub url: String,
    /// True under `error=true`: the build should fail.
    pub error: bool,
}

impl Finding {
    /// [`Finding::render`] after `warning: ` (or `error: ` under `error=true`), as a
    /// terminal shows it.
    pub fn render_labelled(&self, file_name: &str, source: &str) -> String {
        let kind = if self.error { "error" } else { "warning" };
        format!("{kind}: {}", self.render(file_name, source))
    }

    /// The finding as a person should read it, like a parse error:
    /// `Dockerfile:3:1: StageNameCasing: Stage name 'Build' should be lowercase`, the
    /// line, a caret, and the rule's URL as the hint.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        excerpt(
            file_name,
            source,
            &self.span,
            &format!("{}: {}", self.rule, self.message),
            (!self.url.is_empty()).then_some(self.url.as_str()),
        )
    }
}

/// BuildKit's error when `error=true` and a rule fired: `lint violation found for rules:
/// A, B` (each rule once, in order of first finding); `None` when nothing is an error.
pub fn violation(findings: &[Finding]) -> Option<String> {
    let mut rules: Vec<&str> = Vec::new();
    for finding in findings.iter().filter(|f| f.error) {
        if !rules.contains(&finding.rule) {
            rules.push(finding.rule);
        }
    }
    (!rules.is_empty()).then(|| format!("lint violation found for rules: {}", rules.join(", ")))
}

/// The configuration in force: the `BUILDKIT_DOCKERFILE_CHECK` build arg if given, else
/// the `# check=` directive (read from `text` as BuildKit's linter reads it), else every
/// non-experimental rule as warnings. As in BuildKit, the directive's value ends at its
/// first space.
pub fn config(text: &str, options: &CheckOptions) -> Result<CheckConfig, CheckConfigError> {
    if let Some(value) = options.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        return CheckConfig::parse(value);
    }
    match source::check_directive(text) {
        Some((value, _)) => CheckConfig::parse(&value),
        None => Ok(CheckConfig::default()),
    }
}

/// The image each stage's `FROM` names, after expansion with the global `ARG`s and the
/// build args (`golang:1.23` for `FROM golang:${GO}`): the keys of
/// [`CheckOptions::image_env`] and the like. Stages built on an earlier stage and
/// `scratch` are left out; nothing when a `FROM` does not expand.
pub fn base_images(file: &Dockerfile, options: &CheckOptions) -> Vec<String> {
    let config = CheckConfig::default();
    let mut report = Report {
        config: &config,
        local: BTreeMap::new(),
        findings: Vec::new(),
    };
    let Some(globals) = from::check(file, options, &mut report) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for (i, base) in globals.bases.iter().enumerate() {
        let is_stage = file.stages[..i]
            .iter()
            .any(|s| s.name.as_deref() == Some(base.as_str()));
        if !is_stage && base != "scratch" && !out.contains(base) {
            out.push(base.clone());
        }
    }
    out
}

/// Runs the checks on `file`, parsed from `text`; findings are in line order.
pub fn check(file: &Dockerfile, text: &str, options: &CheckOptions) -> Vec<Finding> {
    let config = match config(text, options) {
        Ok(config) => config,
        Err(err) => {
            // dockerui/config.go names the build arg; convert.go `newRuleLinter` the
            // directive.
            let (span, message) = if options.build_args.contains_key("BUILDKIT_DOCKERFILE_CHECK") {
                (
                    Span::default(),
                    format!("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: {err}"),
                )
            } else {
                let line = source::check_directive(text).map_or(0, |(_, line)| line);
                (
                    source::line_span(text, line).unwrap_or_default(),
                    format!("failed to parse check options: {err}"),
                )
            };
            return vec![Finding {
                rule: "CheckOptions",
                message,
                span,
                url: "https://docs.docker.com/reference/build-checks/".to_owned(),
                error: true,
            }];
        }
    };
    let source = source::Source::new(text);
    let local = source::local_configs(&source, &config);
    let mut report = Report {
        config: &config,
        local,
        findings: Vec::new(),
    };
    stages::check(file, &source, &mut report);
    if let Some(stage_bases) = from::check(file, options, &mut report) {
        dispatch::check(file, options, &stage_bases, &mut report);
    }
    let mut findings = report.findings;
    findings.sort_by_key(|f| f.span.line);
    findings
}

/// Collects findings of the rules the configuration lets through.
pub(crate) struct Report<'a> {
    /// The file's configuration (directive or build arg).
    config: &'a CheckConfig,
    /// For each instruction (by start byte) with a `# check=` comment above it, the
    /// file's configuration merged with that comment's.
    local: BTreeMap<usize, CheckConfig>,
    findings: Vec<Finding>,
}

impl Report<'_> {
    /// An expansion that hit one of the expander's bounds: always an error, whatever the
    /// configuration says (the build would stop there too).
    pub(crate) fn limit(&mut self, span: Span, err: &crate::shell::Error) {
        let finding = Finding {
            rule: EXPANSION_LIMIT,
            message: format!("{err}; {}", err.limit.map(|l| l.hint()).unwrap_or_default()),
            span,
            url: "https://docs.docker.com/reference/dockerfile/#environment-replacement".to_owned(),
            error: true,
        };
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }

    /// A finding of a rule BuildKit runs with the file's configuration only (casing,
    /// stage names, empty continuations, default ARGs in FROM, base image platforms).
    pub(crate) fn add(&mut self, rule: &Rule, span: Span, message: String) {
        self.push(self.config.enabled(rule), rule, span, message);
    }

    /// A finding of a rule BuildKit runs for the instruction starting at byte `at`, so
    /// a `# check=` comment above that instruction applies too.
    pub(crate) fn add_at(&mut self, at: usize, rule: &Rule, span: Span, message: String) {
        let enabled = self.local.get(&at).unwrap_or(self.config).enabled(rule);
        self.push(enabled, rule, span, message);
    }

    fn push(&mut self, enabled: bool, rule: &Rule, span: Span, message: String) {
        if !enabled {
            return;
        }
        let finding = Finding {
            rule: rule.name,
            message,
            span,
            url: rule.url(),
            error: self.config.error,
        };
        // One instruction can reach a rule twice with the same words (`COPY $A $A/`).
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `text` (with `build_args`) and compares `LINE:RULE:MESSAGE[:error]` lines.
    fn check_text(text: &str, build_args: &[(&str, &str)], expected: &[&str]) {
        let file = crate::parse(text).expect("parse");
        let options = CheckOptions {
            build_args: build_args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..CheckOptions::default()
        };
        let got: Vec<String> = super::check(&file, text, &options)
            .iter()
            .map(|f| {
                let error = if f.error { ":error" } else { "" };
                format!("{}:{}:{}{error}", f.span.line, f.rule, f.message)
            })
            .collect();
        assert_eq!(got, expected, "{text}");
    }

    const CASING: &str = "FROM scratch as base\ncopy Dockerfile .\n";

    #[test]
    fn without_directive_every_stable_rule_warns() {
        check_text(
            CASING,
            &[],
            &[
                "1:FromAsCasing:'as' and 'FROM' keywords' casing do not match",
                "2:ConsistentInstructionCasing:Command 'copy' should match the case of the command majority (uppercase)",
            ],
        );
    }

    #[test]
    fn skip_list_turns_rules_off() {
        let text = format!("#check=skip=ConsistentInstructionCasing\n{CASING}");
        check_text(
            &text,
            &[],
            &["2:FromAsCasing:'as' and 'FROM' keywords' casing do not match"],
        );
        let text = format!("# check = skip=FromAsCasing,ConsistentInstructionCasing\n{CASING}");
        check_text(&text, &[], &[]);
        // The value ends at the first space: only FromAsCasing (and "") are skipped.
        let text = format!("#check=skip=FromAsCasing, ConsistentInstructionCasing\n{CASING}");
        check_text(
            &text,
            &[],
            &[
                "3:ConsistentInstructionCasing:Command 'copy' should match the case of the command majority (uppercase)",
            ],
        );
    }

    #[test]
    fn skip_all_turns_every_stable_rule_off() {
        check_text(&format!("#check=skip=all\n{CASING}"), &[], &[]);
        check_text(&format!("#check=skip=all;error=true\n{CASING}"), &[], &[]);
    }

    #[test]
    fn error_true_makes_findings_errors() {
        let text = format!("#check=skip=ConsistentInstructionCasing;error=true\n{CASING}");
        check_text(
            &text,
            &[],
            &["2:FromAsCasing:'as' and 'FROM' keywords' casing do not match:error"],
        );
        let file = crate::parse(&text).expect("parse");
        let findings = super::check(&file, &text, &CheckOptions::default());
        assert_eq!(
            violation(&findings).as_deref(),
            Some("lint violation found for rules: FromAsCasing")
        );
        check_text(
            &format!("#check=error=false\n{CASING}"),
            &[],
            &[
                "2:FromAsCasing:'as' and 'FROM' keywords' casing do not match",
                "3:ConsistentInstructionCasing:Command 'copy' should match the case of the command majority (uppercase)",
            ],
        );
    }

    #[test]
    fn experimental_rules_need_naming_and_ignore_skip() {
        let body = "# not a description\nARG foo=bar\nFROM scratch\n";
        check_text(body, &[], &[]);
        check_text(
            &format!("# check=skip=all;experimental=InvalidDefinitionDescription\n{body}"),
            &[],
            &[
                "3:InvalidDefinitionDescription:Comment for ARG should follow the format: `# foo <description>`",
            ],
        );
        check_text(
            &format!("# check=experimental=all\n{body}"),
            &[],
            &[
                "3:InvalidDefinitionDescription:Comment for ARG should follow the format: `# foo <description>`",
            ],
        );
    }

    #[test]
    fn build_arg_replaces_the_directive() {
        let text = format!("#check=skip=all\n{CASING}");
        check_text(
            &text,
            &[(
                "BUILDKIT_DOCKERFILE_CHECK",
                "skip=ConsistentInstructionCasing;error=true",
            )],
            &["2:FromAsCasing:'as' and 'FROM' keywords' casing do not match:error"],
        );
        let text = format!("#check=error=true\n{CASING}");
        check_text(&text, &[("BUILDKIT_DOCKERFILE_CHECK", "skip=all")], &[]);
    }

    #[test]
    fn bad_directive_is_one_error() {
        check_text(
            &format!("#check=skip\n{CASING}"),
            &[],
            &["1:CheckOptions:failed to parse check options: invalid check option \"skip\":error"],
        );
        check_text(
            &format!("#check=error=maybe\n{CASING}"),
            &[],
            &[
                "1:CheckOptions:failed to parse check options: failed to parse check option \"error=maybe\": strconv.ParseBool: parsing \"maybe\": invalid syntax:error",
            ],
        );
    }

    #[test]
    fn bad_build_arg_is_one_error_naming_it() {
        // dockerui/config.go: "failed to parse %s", keyDockerfileLintArg.
        check_text(
            CASING,
            &[("BUILDKIT_DOCKERFILE_CHECK", "skip")],
            &[
                "0:CheckOptions:failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK: invalid check option \"skip\":error",
            ],
        );
    }

    #[test]
    fn directive_after_a_shebang_and_only_unindented() {
        // parser.ParseDirective drops a first `#!` line before it reads directives, and
        // reads `#` at the very start of a line only.
        check_text(
            &format!("#!/usr/bin/env kiln\n#check=skip=all\n{CASING}"),
            &[],
            &[],
        );
        check_text(
            &format!("  #check=skip=all\n{CASING}"),
            &[],
            &[
                "2:FromAsCasing:'as' and 'FROM' keywords' casing do not match",
                "3:ConsistentInstructionCasing:Command 'copy' should match the case of the command majority (uppercase)",
            ],
        );
    }

    #[test]
    fn crate_doc_example() {
        check_text(
            "FROM alpine AS Build\nCMD echo hi\n",
            &[],
            &[
                "1:StageNameCasing:Stage name 'Build' should be lowercase",
                "2:JSONArgsRecommended:JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
            ],
        );
    }

    #[test]
    fn urls_and_render() {
        assert_eq!(
            JSON_ARGS_RECOMMENDED.url(),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        let text = "FROM scratch AS Build\n";
        let file = crate::parse(text).expect("parse");
        let findings = super::check(&file, text, &CheckOptions::default());
        assert_eq!(
            findings[0].render("Dockerfile", text),
            "Dockerfile:1:1: StageNameCasing: Stage name 'Build' should be lowercase\n  |\n1 | FROM scratch AS Build\n  | ^^^^^^^^^^^^^^^^^^^^^\n  = hint: https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n"
        );
    }
}
