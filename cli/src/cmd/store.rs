//! Store commands: `import`, `images`, `tag`, `rmi`, `inspect`, `prune`, `du`.

use std::process::ExitCode;

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {}
#[derive(Debug, clap::Args)]
pub(crate) struct ImagesArgs {}
#[derive(Debug, clap::Args)]
pub(crate) struct TagArgs {}
#[derive(Debug, clap::Args)]
pub(crate) struct RmiArgs {}
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {}
#[derive(Debug, clap::Args)]
pub(crate) struct PruneArgs {}
#[derive(Debug, clap::Args)]
pub(crate) struct DuArgs {}

macro_rules! todo_command {
    ($($name:ident: $args:ty),*) => {$(
        pub(crate) fn $name(_global: &GlobalArgs, _args: $args) -> anyhow::Result<ExitCode> {
            anyhow::bail!(concat!("kiln ", stringify!($name), " is not implemented yet"))
        }
    )*};
}
todo_command!(import: ImportArgs, images: ImagesArgs, tag: TagArgs, rmi: RmiArgs,
    inspect: InspectArgs, prune: PruneArgs, du: DuArgs);
