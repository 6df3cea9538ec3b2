//! `kiln parse --json` and `kiln debug dump`: the parser's views of a Dockerfile.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct ParseArgs {
    /// Print the typed syntax tree as JSON (the only format so far)
    #[arg(long)]
    pub(crate) json: bool,
    /// The Dockerfile to read; `-` reads stdin
    pub(crate) file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    /// The Dockerfile to read; `-` reads stdin
    pub(crate) file: PathBuf,
}

/// The file's text and the name to show in messages.
fn read(file: &Path) -> anyhow::Result<(String, String)> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the Dockerfile from stdin")?;
        return Ok(("Dockerfile".to_owned(), text));
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    Ok((file.display().to_string(), text))
}

fn print(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = read(&args.file)?;
    match kiln_parser::parse(&text) {
        Ok(dockerfile) => {
            // JSON is the one output format; the flag is there for docker-style scripts.
            let _ = args.json;
            let mut json = serde_json::to_string_pretty(&dockerfile)?;
            json.push('\n');
            print(&json)
        }
        Err(err) => {
            eprint!("{}", err.render(&name, &text));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(crate) fn dump(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = read(&args.file)?;
    match kiln_parser::parse_nodes(&text) {
        Ok(tree) => print(&tree.dump()),
        Err(err) => {
            eprint!("{}", err.render(&name, &text));
            Ok(ExitCode::FAILURE)
        }
    }
}
