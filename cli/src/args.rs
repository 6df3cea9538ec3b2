//! The command line as clap sees it. Each subcommand's own flags live beside its code in
//! `cmd/`; this file only names the subcommands and the global flags.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd;

/// kiln builds OCI images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    /// Build on a `kiln serve` instead of in this process: unix:///PATH or
    /// tcp://127.0.0.1:PORT (before the subcommand; `kiln build` only)
    #[arg(long, value_name = "HOST")]
    pub(crate) host: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every subcommand accepts, before or after its name.
#[derive(Debug, clap::Args)]
pub(crate) struct GlobalArgs {
    /// The store directory [default: $XDG_DATA_HOME/kiln, /var/lib/kiln for root]
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
    /// Snapshotter: overlay or native [default: overlay where the kernel allows it]
    #[arg(long, global = true, env = "KILN_SNAPSHOTTER", value_name = "NAME")]
    pub(crate) snapshotter: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Build an image from a Dockerfile and a context directory
    Build(Box<cmd::build::BuildArgs>),
    /// Run a command in an image of the store, in kiln's sandbox (not a container runtime)
    Run(cmd::run::RunArgs),
    /// Run the build checks (BuildKit's lint rules) on a Dockerfile
    Check(cmd::check::CheckArgs),
    /// Print kiln's version and the commit it was built from
    Version,
    /// Print a shell completion script: kiln completion bash|zsh|fish
    Completion(cmd::CompletionArgs),
    /// Print the whole log of the last build
    Logs(cmd::build::LogsArgs),
    /// Say why each step of the last build ran (what `kiln build --explain` printed)
    Explain(cmd::build::LogsArgs),
    /// Parse a Dockerfile and print its syntax tree as JSON
    Parse(cmd::parse::ParseArgs),
    /// Create an image from a root filesystem tarball or directory
    Import(cmd::store::ImportArgs),
    /// Load the images of a Docker archive (docker save's) into the store
    Load(cmd::store::LoadArgs),
    /// Write an image as a Docker archive (docker load reads it)
    Save(cmd::store::SaveArgs),
    /// List the images in the store
    Images(cmd::store::ImagesArgs),
    /// Give an image in the store another name
    Tag(cmd::store::TagArgs),
    /// Remove image names from the store
    Rmi(cmd::store::RmiArgs),
    /// Print an image's config and manifest as JSON
    Inspect(cmd::store::InspectArgs),
    /// Remove what no image or cache entry uses any more
    Prune(cmd::store::PruneArgs),
    /// Show how much disk the store uses
    Du(cmd::store::DuArgs),
    /// Check every blob and image of the store; exit 1 if anything is damaged or missing
    Fsck(cmd::store::FsckArgs),
    /// Push an image from the store to a registry
    Push(cmd::registry::PushArgs),
    /// Pull an image from a registry into the store
    Pull(cmd::registry::PullArgs),
    /// Log in to a registry (credentials go to docker's config.json)
    Login(cmd::registry::LoginArgs),
    /// Log out from a registry
    Logout(cmd::registry::LogoutArgs),
    /// Serve the Docker Engine API's build and image endpoints on a UNIX socket
    Serve(cmd::serve::ServeArgs),
    /// Tools for developers of kiln and of Dockerfiles
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Print a Dockerfile's syntax tree in BuildKit's `Dump()` format
    Dump(cmd::parse::DumpArgs),
    /// Run one command in a sandbox on a root filesystem directory
    Run(cmd::sandbox::RunArgs),
    /// Open a shell in a failed step kept by `kiln build --on-error=keep`
    Shell(cmd::run::ShellArgs),
}
