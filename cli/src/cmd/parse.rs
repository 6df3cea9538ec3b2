//! `kiln parse --json` and `kiln debug dump`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct ParseArgs {
    /// Print the typed syntax tree as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// The Dockerfile to read
    pub(crate) file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    /// The Dockerfile to read
    pub(crate) file: PathBuf,
}

pub(crate) fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "kiln parse is not implemented yet ({})",
        args.file.display()
    )
}

pub(crate) fn dump(args: DumpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "kiln debug dump is not implemented yet ({})",
        args.file.display()
    )
}
