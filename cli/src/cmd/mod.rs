//! One module per group of commands; `run` dispatches.

pub(crate) mod build;
pub(crate) mod call;
pub(crate) mod check;
pub(crate) mod parse;
pub(crate) mod registry;
pub(crate) mod remote;
pub(crate) mod run;
pub(crate) mod sandbox;
pub(crate) mod serve;
pub(crate) mod store;
pub(crate) mod watch;

use std::process::ExitCode;

use crate::args::{Cli, Command, DebugCommand};

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionArgs {
    /// The shell
    shell: clap_complete::Shell,
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    if let Some(host) = &cli.host
        && !matches!(cli.command, Command::Build(_))
    {
        anyhow::bail!(
            "--host {host}: only `kiln build` runs through a server so far; run this command without --host on the server's machine (or use the docker CLI with DOCKER_HOST={host})"
        );
    }
    match cli.command {
        Command::Build(args) => build::build(global, cli.host.as_deref(), *args),
        Command::Logs(args) => build::logs(global, args),
        Command::Explain(args) => build::explain(global, args),
        Command::Run(args) => run::run(global, args),
        Command::Check(args) => check::check(global, args),
        Command::Version => {
            use std::io::Write;
            writeln!(
                std::io::stdout(),
                "kiln {} (commit {})",
                env!("CARGO_PKG_VERSION"),
                env!("KILN_COMMIT")
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion(args) => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "kiln", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Parse(args) => parse::parse(args),
        Command::Import(args) => store::import(global, args),
        Command::Load(args) => store::load(global, args),
        Command::Save(args) => store::save(global, args),
        Command::Images(args) => store::images(global, args),
        Command::Tag(args) => store::tag(global, args),
        Command::Rmi(args) => store::rmi(global, args),
        Command::Inspect(args) => store::inspect(global, args),
        Command::Prune(args) => store::prune(global, args),
        Command::Du(args) => store::du(global, args),
        Command::Fsck(args) => store::fsck(global, args),
        Command::Push(args) => registry::push(global, args),
        Command::Pull(args) => registry::pull(global, args),
        Command::Login(args) => registry::login(global, args),
        Command::Logout(args) => registry::logout(global, args),
        Command::Serve(args) => serve::serve(global, args),
        Command::Debug(DebugCommand::Dump(args)) => parse::dump(args),
        Command::Debug(DebugCommand::Run(args)) => sandbox::run(global, args),
        Command::Debug(DebugCommand::Shell(args)) => run::debug_shell(global, args),
    }
}
