//! The `kiln` binary: parses the command line and hands each command to its module.
//! Thin: no build logic lives here.

mod args;
mod cmd;
mod interrupt;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox re-executes this binary as its single-threaded namespace helper; that
    // must happen before anything starts a thread (see DESIGN.md, "sandbox process model").
    if let Some(code) = kiln_sandbox::helper::run_if_requested() {
        return code;
    }
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap exits 2 on usage errors, 0 for --help/--version: as docker does.
            err.exit();
        }
    };
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            if let Some(interrupt::Interrupted(signal)) = err.downcast_ref() {
                // What was cancelled has been said; 128 + the signal, as a shell shows it.
                return ExitCode::from(signal.exit_code());
            }
            if err.downcast_ref::<cmd::build::Reported>().is_some() {
                // The build already showed what failed, with the Dockerfile excerpt.
                return ExitCode::FAILURE;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
