//! `kiln parse --json` and `kiln debug dump`: the parser's views of a Dockerfile.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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

/// The file's text and the name to show in messages; a file that cannot be a
/// Dockerfile (a device, too large, not UTF-8) is reported and ends the command.
fn read(file: &Path) -> anyhow::Result<Result<(String, String), ExitCode>> {
    let (name, read) = if file == Path::new("-") {
        (
            "Dockerfile".to_owned(),
            kiln_solver::input_file::read_dockerfile_from(std::io::stdin().lock()),
        )
    } else {
        (
            file.display().to_string(),
            kiln_solver::input_file::read_dockerfile(file),
        )
    };
    match read {
        Ok(text) => Ok(Ok((name, text))),
        Err(err) => {
            eprint!("{}", err.render(&name));
            Ok(Err(ExitCode::FAILURE))
        }
    }
}

fn print(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = match read(&args.file)? {
        Ok(read) => read,
        Err(code) => return Ok(code),
    };
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
    let (name, text) = match read(&args.file)? {
        Ok(read) => read,
        Err(code) => return Ok(code),
    };
    match kiln_parser::parse_nodes(&text) {
        Ok(tree) => print(&tree.dump()),
        Err(err) => {
            eprint!("{}", err.render(&name, &text));
            Ok(ExitCode::FAILURE)
        }
    }
}
