//! The rules BuildKit reports while it parses, before any stage runs: empty continuation
//! lines, `FROM ... AS name` casing, `MAINTAINER`, description comments, stage names and
//! instruction casing.

use super::source::Source;
use super::{
    CONSISTENT_INSTRUCTION_CASING, DUPLICATE_STAGE_NAME, FROM_AS_CASING,
    INVALID_DEFINITION_DESCRIPTION, MAINTAINER_DEPRECATED, NO_EMPTY_CONTINUATION,
    RESERVED_STAGE_NAME, Report, STAGE_NAME_CASING,
};
use crate::ast::Dockerfile;
use crate::error::Span;
use crate::node::Node;

/// Names a stage cannot usefully take: `FROM scratch` and the build context.
const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

pub(crate) fn check(file: &Dockerfile, source: &Source<'_>, report: &mut Report<'_>) {
    for warning in &file.warnings {
        if warning.message.starts_with("Empty continuation line") {
            // BuildKit places it on the instruction's last continued line.
            report.add(
                &NO_EMPTY_CONTINUATION,
                source.line_span(warning.span.end_line),
                "Empty continuation line".to_owned(),
            );
        }
    }
    for node in &source.nodes {
        match node.name().as_str() {
            "from" => from(node, source, report),
            "maintainer" => report.add_at(
                node.span.start,
                &MAINTAINER_DEPRECATED,
                node.span,
                "Maintainer instruction is deprecated in favor of using label".to_owned(),
            ),
            "arg" => {
                let keys: Vec<String> = node
                    .args
                    .iter()
                    .map(|word| word.split_once('=').map_or(word.as_str(), |(k, _)| k))
                    .map(str::to_owned)
                    .collect();
                description(
                    "ARG",
                    &keys,
                    source.comments_at(node.span.start),
                    node.span,
                    report,
                );
            }
            _ => {}
        }
    }
    stage_names(file, report);
    casing(file, source, report);
}

fn from(node: &Node, source: &Source<'_>, report: &mut Report<'_>) {
    let [_, as_word, name] = node.args.as_slice() else {
        return;
    };
    if *name != name.to_lowercase() {
        report.add_at(
            node.span.start,
            &STAGE_NAME_CASING,
            node.span,
            format!("Stage name '{name}' should be lowercase"),
        );
    }
    // A FROM keyword of mixed case is ConsistentInstructionCasing's business.
    let keyword = &node.keyword;
    let as_matches = if *keyword == keyword.to_lowercase() {
        *as_word == as_word.to_lowercase()
    } else if *keyword == keyword.to_uppercase() {
        *as_word == as_word.to_uppercase()
    } else {
        true
    };
    if !as_matches {
        report.add_at(
            node.span.start,
            &FROM_AS_CASING,
            node.span,
            format!("'{as_word}' and '{keyword}' keywords' casing do not match"),
        );
    }
    description(
        "FROM",
        &[name.to_lowercase()],
        source.comments_at(node.span.start),
        node.span,
        report,
    );
}

/// The last comment above `FROM ... AS name` or `ARG name...` should start with a name.
fn description(
    instruction: &str,
    keys: &[String],
    comments: &[String],
    span: Span,
    report: &mut Report<'_>,
) {
    let (Some(last), Some(first_key)) = (comments.last(), keys.first()) else {
        return;
    };
    let first_word = last.split(' ').next().unwrap_or_default();
    if keys.iter().any(|k| k == first_word) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>"
    } else {
        first_key.as_str()
    };
    report.add_at(
        span.start,
        &INVALID_DEFINITION_DESCRIPTION,
        span,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    );
}

fn stage_names(file: &Dockerfile, report: &mut Report<'_>) {
    let mut seen: Vec<&str> = Vec::new();
    for stage in &file.stages {
        let Some(name) = stage.name.as_deref() else {
            continue;
        };
        if RESERVED_STAGE_NAMES.contains(&name) {
            report.add(
                &RESERVED_STAGE_NAME,
                stage.span,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
            );
        }
        if seen.contains(&name) {
            report.add(
                &DUPLICATE_STAGE_NAME,
                stage.span,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
            );
        }
        seen.push(name);
    }
}

/// Keywords (of the stages: global `ARG`s do not count) should all be upper or all
/// lower case, whichever most are; a tie counts as upper.
fn casing(file: &Dockerfile, source: &Source<'_>, report: &mut Report<'_>) {
    let mut keywords: Vec<(&str, Span)> = Vec::new();
    for stage in &file.stages {
        if let Some(node) = source.node_at(stage.span.start) {
            keywords.push((&node.keyword, stage.span));
        }
        for instruction in &stage.instructions {
            keywords.push((&instruction.keyword, instruction.span));
        }
    }
    let lower = keywords
        .iter()
        .filter(|(k, _)| *k == k.to_lowercase())
        .count();
    let upper = keywords
        .iter()
        .filter(|(k, _)| *k != k.to_lowercase() && *k == k.to_uppercase())
        .count();
    let majority_lower = lower > upper;
    for (keyword, span) in keywords {
        let wanted = if majority_lower && keyword != keyword.to_lowercase() {
            "lowercase"
        } else if !majority_lower && keyword != keyword.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        report.add(
            &CONSISTENT_INSTRUCTION_CASING,
            span,
            format!("Command '{keyword}' should match the case of the command majority ({wanted})"),
        );
    }
}
