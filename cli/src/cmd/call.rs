//! `kiln build --call=outline|targets|check` (buildx's `--call`, BuildKit's frontend
//! subrequests): what the Dockerfile asks for, or its build checks, without building.
//! The analysis is `kiln_parser::outline`'s; this module prints it as buildx does —
//! the subrequest's text table (Go's `tabwriter`), or its JSON with `format=json`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use base64::Engine as _;
use kiln_engine::{BuildRequest, Engine};
use kiln_parser::outline::{Outline, Target};

use crate::cmd::build::{Reported, report};

/// What `--call` asks for (`build`, the default, is no call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    /// The build checks (`check`, alias `lint`): `kiln check`.
    Check,
    /// The build args, secrets and ssh ids of the target.
    Outline,
    /// The stages.
    Targets,
}

/// A parsed `--call` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) function: Function,
    /// `format=json`.
    pub(crate) json: bool,
    /// `ignorestatus=true`: a check's error findings do not fail the command.
    pub(crate) ignore_status: bool,
}

const USAGE: &str =
    "write --call=build|check|outline|targets[,format=text|json][,ignorestatus=BOOL]";

/// buildx's `ParsePrintFunc`: CSV fields, one bare name, `format=` and `ignorestatus=`.
/// `None` for `build` (a plain build).
pub(crate) fn parse(value: &str) -> anyhow::Result<Option<Call>> {
    let mut name: Option<String> = None;
    let mut json = false;
    let mut ignore_status = false;
    for field in kiln_parser::csv_fields(value) {
        match field.split_once('=') {
            Some(("format", "json")) => json = true,
            Some(("format", "text" | "")) => json = false,
            Some(("format", other)) => {
                bail!("--call {value}: unknown format {other:?}: use format=text or format=json")
            }
            Some(("ignorestatus", v)) => {
                ignore_status = match v {
                    "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                    "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                    _ => bail!("--call {value}: ignorestatus={v} is not a boolean: {USAGE}"),
                }
            }
            Some(_) => bail!("--call {value}: unknown field {field:?}: {USAGE}"),
            None if name.is_some() => bail!("--call {value}: two function names: {USAGE}"),
            None => name = Some(field),
        }
    }
    let function = match name.as_deref().unwrap_or("build") {
        "build" => return Ok(None),
        "check" | "lint" => Function::Check,
        "outline" => Function::Outline,
        "targets" => Function::Targets,
        other => bail!(
            "--call {value}: unknown function {other:?}: use build, check, outline or targets"
        ),
    };
    Ok(Some(Call {
        function,
        json,
        ignore_status,
    }))
}

/// The call `kiln build`'s flags ask for: `--call`, or `--check` (`--call=check`).
pub(crate) fn for_build(args: &crate::cmd::build::BuildArgs) -> anyhow::Result<Option<Call>> {
    let call = match &args.call {
        Some(value) => parse(value)?,
        None => None,
    };
    match (args.check, call) {
        (false, call) => Ok(call),
        (true, None) => Ok(Some(Call {
            function: Function::Check,
            json: false,
            ignore_status: false,
        })),
        (true, Some(call)) if call.function == Function::Check => Ok(Some(call)),
        (true, Some(_)) => bail!(
            "--check is --call=check; it cannot be given with --call={}",
            args.call.as_deref().unwrap_or_default()
        ),
    }
}

/// Runs the call on this machine: the Dockerfile and `.dockerignore` are read here,
/// base images are looked up in this store (nothing is pulled).
pub(crate) fn run(
    engine: &Engine,
    runtime: &tokio::runtime::Runtime,
    request: BuildRequest,
    call: Call,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match call.function {
        Function::Check => {
            let checked = match runtime.block_on(engine.check(request)) {
                Ok(checked) => checked,
                Err(e) => return Err(report(&e, None)),
            };
            let file = &checked.dockerfile;
            if call.json {
                let json = crate::cmd::check::json(&checked.findings, &file.name);
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            } else {
                crate::cmd::check::print(&checked.findings, &file.name, &file.text);
            }
            if let Some(message) = &checked.violation
                && !call.ignore_status
            {
                eprintln!("error: {message}");
                return Err(Reported.into());
            }
            if !call.json {
                eprintln!("Check complete: {} finding(s)", checked.findings.len());
            }
        }
        Function::Outline => {
            let (outline, file) = match runtime.block_on(engine.outline(request)) {
                Ok(found) => found,
                Err(e) => return Err(report(&e, None)),
            };
            if call.json {
                let json = OutlineJson {
                    outline: &outline,
                    sources: sources(&file.text),
                };
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            } else {
                write!(out, "{}", outline_text(&outline))?;
            }
        }
        Function::Targets => {
            let (targets, file) = match runtime.block_on(engine.targets(request)) {
                Ok(found) => found,
                Err(e) => return Err(report(&e, None)),
            };
            if call.json {
                let json = TargetsJson {
                    targets: &targets,
                    sources: sources(&file.text),
                };
                writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
            } else {
                write!(out, "{}", targets_text(&targets))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// BuildKit's `result.json` for an outline: its fields, then the Dockerfile (base64).
#[derive(serde::Serialize)]
struct OutlineJson<'a> {
    #[serde(flatten)]
    outline: &'a Outline,
    sources: [String; 1],
}

/// BuildKit's `result.json` for the targets.
#[derive(serde::Serialize)]
struct TargetsJson<'a> {
    targets: &'a [Target],
    sources: [String; 1],
}

/// The Dockerfile as the subrequests' `sources` give it (Go marshals `[]byte` as base64).
fn sources(text: &str) -> [String; 1] {
    [base64::engine::general_purpose::STANDARD.encode(text.as_bytes())]
}

/// Go's `text/tabwriter` with minwidth 0, padding `padding`, spaces: every cell but a
/// line's last is padded to its column's widest cell plus `padding`.
fn table(rows: &[Vec<String>], padding: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + padding - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// BuildKit's `PrintOutline`.
pub(crate) fn outline_text(outline: &Outline) -> String {
    let mut out = String::new();
    if outline.name.is_some() || outline.description.is_some() {
        let mut rows = vec![vec![
            "TARGET:".to_owned(),
            outline
                .name
                .clone()
                .unwrap_or_else(|| "(default)".to_owned()),
        ]];
        if let Some(description) = &outline.description {
            rows.push(vec!["DESCRIPTION:".to_owned(), description.clone()]);
        }
        out.push_str(&table(&rows, 1));
        out.push('\n');
    }
    if !outline.args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_owned(),
            "VALUE".to_owned(),
            "DESCRIPTION".to_owned(),
        ]];
        for arg in &outline.args {
            rows.push(vec![
                arg.name.clone(),
                arg.value.clone().unwrap_or_default(),
                arg.description.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table(&rows, 3));
        out.push('\n');
    }
    for (title, needs) in [("SECRET", &outline.secrets), ("SSH", &outline.ssh)] {
        if needs.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_owned(), "REQUIRED".to_owned()]];
        for need in needs {
            let required = if need.required { "true" } else { "" };
            rows.push(vec![need.name.clone(), required.to_owned()]);
        }
        out.push_str(&table(&rows, 3));
        out.push('\n');
    }
    out
}

/// BuildKit's `PrintTargets`.
pub(crate) fn targets_text(targets: &[Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()]];
    for target in targets {
        let name = match (&target.name, target.default) {
            (None, true) => "(default)".to_owned(),
            (Some(name), true) => format!("{name} (default)"),
            (name, false) => name.clone().unwrap_or_default(),
        };
        rows.push(vec![name, target.description.clone().unwrap_or_default()]);
    }
    table(&rows, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<Option<(Function, bool, bool)>, &str>) {
        let got = parse(value)
            .map(|c| c.map(|c| (c.function, c.json, c.ignore_status)))
            .map_err(|e| e.to_string());
        match expected {
            Ok(want) => assert_eq!(got.unwrap(), want, "{value}"),
            Err(part) => {
                let err = got.unwrap_err();
                assert!(err.contains(part), "{value}: {err}");
            }
        }
    }

    #[test]
    fn call_values() {
        check("build", Ok(None));
        check("outline", Ok(Some((Function::Outline, false, false))));
        check(
            "outline,format=json",
            Ok(Some((Function::Outline, true, false))),
        );
        check(
            "format=json,targets",
            Ok(Some((Function::Targets, true, false))),
        );
        check(
            "lint,ignorestatus=true",
            Ok(Some((Function::Check, false, true))),
        );
        check("outlines", Err("use build, check, outline or targets"));
        check("outline,format=yaml", Err("format=text or format=json"));
        check("outline,targets", Err("two function names"));
        check("outline,color=1", Err("unknown field"));
    }

    #[test]
    fn tabwriter_pads_all_but_the_last_cell() {
        let rows = vec![
            vec![
                "BUILD ARG".to_owned(),
                "VALUE".to_owned(),
                "DESCRIPTION".to_owned(),
            ],
            vec!["GO".to_owned(), "1.23".to_owned(), String::new()],
        ];
        assert_eq!(
            table(&rows, 3),
            "BUILD ARG   VALUE   DESCRIPTION\nGO          1.23    \n"
        );
    }
}
