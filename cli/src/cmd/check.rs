//! `kiln check` and `kiln build --check`: BuildKit's build checks (lint rules) on a
//! Dockerfile, as warnings or, under `# check=error=true`, errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_parser::lint::Finding;

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
    /// The platform the build would target, e.g. linux/arm64 [default: the host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(crate) platform: Option<String>,
    /// Output: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub(crate) format: String,
}

/// Prints findings as warnings (or errors) with the Dockerfile excerpt.
pub(crate) fn print(findings: &[Finding], file_name: &str, text: &str) {
    let mut err = std::io::stderr().lock();
    for finding in findings {
        let _ = write!(err, "{}", finding.render_labelled(file_name, text));
    }
}

/// The findings as `kiln check --format json` prints them.
pub(crate) fn json(found: &[Finding], name: &str) -> serde_json::Value {
    found
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
        .collect()
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
    let platform = match &args.platform {
        Some(text) => Some(kiln_solver::frontend::parse_platform(text).ok_or_else(|| {
            anyhow::anyhow!("--platform {text:?}: write OS/ARCH[/VARIANT], e.g. linux/amd64")
        })?),
        None => None,
    };
    let ignore = kiln_engine::ignore_for(&args.context, Some(&path))
        .map_err(|e| anyhow::anyhow!("{}", e.render().trim_end()))?;
    let store = crate::cmd::store::open_store(global).ok();
    let found = kiln_engine::check::findings(
        &file,
        &text,
        &build_args,
        args.target.as_deref(),
        platform.as_ref(),
        Some(ignore),
        store.as_ref(),
    );
    match args.format.as_str() {
        "json" => {
            let json = json(&found, &name);
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
    Ok(match kiln_parser::lint::violation(&found) {
        Some(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    })
}
