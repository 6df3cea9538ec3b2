//! `kiln check` and `kiln build --check`: BuildKit's build checks (lint rules) on a
//! Dockerfile, as warnings or, under `# check=error=true`, errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_parser::Dockerfile;
use kiln_parser::lint::{self, CheckOptions, Finding};
use kiln_snapshotter::Store;

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The build context [default: .]
    #[arg(value_name = "PATH", default_value = ".")]
    pub(crate) context: PathBuf,
    /// The Dockerfile [default: PATH/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Build arguments the checks take into account (KEY=VALUE)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub(crate) build_args: Vec<String>,
    /// Check only what this stage needs
    #[arg(long, value_name = "STAGE")]
    pub(crate) target: Option<String>,
    /// Output: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub(crate) format: String,
}

/// The environment of each base image the store has, so variables it defines are not
/// reported as undefined (nothing is pulled for a check).
fn image_env(store: Option<&Store>, file: &Dockerfile) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(store) = store else { return out };
    for stage in &file.stages {
        if let Ok((_, image)) = kiln_exporter::image::find_image(store, &stage.from.image) {
            out.insert(stage.from.image.clone(), image.config.config.env.clone());
        }
    }
    out
}

/// The findings for a parsed Dockerfile.
pub(crate) fn findings(
    file: &Dockerfile,
    text: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    ignore: Option<kiln_parser::dockerignore::Matcher>,
    store: Option<&Store>,
) -> Vec<Finding> {
    let options = CheckOptions {
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        ignore,
        image_env: image_env(store, file),
    };
    lint::check(file, text, &options)
}

/// Prints findings as warnings (or errors) with the Dockerfile excerpt.
pub(crate) fn print(findings: &[Finding], file_name: &str, text: &str) {
    let mut err = std::io::stderr().lock();
    for finding in findings {
        let kind = if finding.error { "error" } else { "warning" };
        let _ = write!(err, "{kind}: {}", finding.render(file_name, text));
    }
}

pub(crate) fn check(global: &GlobalArgs, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let name = path.display().to_string();
    let text = match kiln_solver::input_file::read_dockerfile(&path) {
        Ok(text) => text,
        Err(err) => {
            eprint!("{}", err.render(&name));
            return Ok(ExitCode::FAILURE);
        }
    };
    let file = match kiln_parser::parse(&text) {
        Ok(file) => file,
        Err(e) => {
            eprint!("{}", e.render(&name, &text));
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut build_args = BTreeMap::new();
    for arg in &args.build_args {
        if let Some((k, v)) =
            kiln_solver::request::parse_key_value("build-arg", arg, &|k| std::env::var(k).ok())?
        {
            build_args.insert(k, v);
        }
    }
    let ignore = crate::cmd::build::ignore_for(&args.context, Some(&path))?;
    let store = crate::cmd::store::open_store(global).ok();
    let found = findings(
        &file,
        &text,
        &build_args,
        args.target.as_deref(),
        Some(ignore),
        store.as_ref(),
    );
    match args.format.as_str() {
        "json" => {
            let json: Vec<serde_json::Value> = found
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "rule": f.rule,
                        "message": f.message,
                        "url": f.url,
                        "error": f.error,
                        "location": {"file": name, "line": f.span.line, "column": f.span.col},
                    })
                })
                .collect();
            writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&json)?
            )?;
        }
        "text" => {
            print(&found, &name, &text);
            let stages = file.stages.len();
            writeln!(
                std::io::stderr(),
                "Check complete: {} finding(s) in {} stage(s) of {name}",
                found.len(),
                stages
            )?;
        }
        other => anyhow::bail!("--format {other}: use text or json"),
    }
    Ok(match lint::violation(&found) {
        Some(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    })
}
