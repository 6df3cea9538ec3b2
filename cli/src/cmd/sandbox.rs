//! `kiln debug run`: one command in a sandbox, for trying the sandbox by hand.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The root filesystem directory
    pub(crate) rootfs: PathBuf,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) fn run(_global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "kiln debug run is not implemented yet ({})",
        args.rootfs.display()
    )
}
