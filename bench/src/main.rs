//! `kiln-bench`: one command that tells where kiln stands.
//!
//! It builds the release binary, generates its inputs deterministically, runs every
//! scenario several times in a fresh store (cold) and in a warm one, next to the physical
//! floor where one exists (`cp -a`, `tar | gzip` ...), and prints a table (median, min,
//! max, peak RSS) plus a JSON file for later comparison. Nothing here asserts a time.
//!
//!     cargo run -p kiln-bench --release -- [--runs 5] [--only noop,parse] [--out bench/out]

mod inputs;
mod measure;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs kiln's benchmark scenarios and prints a table.
#[derive(Debug, Parser)]
struct Args {
    /// Runs per measurement (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only these scenarios (comma-separated), e.g. `noop,parse`
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the JSON results and the generated inputs go
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Use this kiln binary instead of building one with `cargo build --release`
    #[arg(long)]
    kiln: Option<PathBuf>,
}

fn main() -> ExitCode {
    // The bench re-executes itself to measure one command's peak memory.
    if let Some(code) = measure::run_if_requested() {
        return code;
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kiln-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let kiln = match args.kiln {
        Some(path) => path,
        None => measure::build_release()?,
    };
    std::fs::create_dir_all(&args.out)?;
    let world = scenarios::World::new(kiln, &args.out, args.runs)?;
    let mut rows = Vec::new();
    for scenario in scenarios::ALL {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == scenario.name) {
            continue;
        }
        eprintln!("kiln-bench: {} ({})", scenario.name, scenario.about);
        rows.extend((scenario.run)(&world));
    }
    report::print_table(&rows, &mut std::io::stdout().lock())?;
    let json = args.out.join("results.json");
    report::write_json(&rows, &json)?;
    eprintln!("kiln-bench: wrote {}", json.display());
    Ok(())
}
