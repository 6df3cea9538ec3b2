//! Timing one command and its peak memory.
//!
//! Peak RSS comes from `getrusage(RUSAGE_CHILDREN)`, which reports the largest child
//! waited for so far. To get one command's own figure, the bench re-executes itself as a
//! tiny wrapper whose only child is that command.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use nix::sys::resource::{UsageWho, getrusage};

const WRAPPER_ARG: &str = "__kiln_bench_measure";

/// One run of one command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) seconds: f64,
    pub(crate) max_rss_kib: u64,
}

/// When started as the wrapper, runs the command and prints its peak RSS (KiB) last.
pub(crate) fn run_if_requested() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != WRAPPER_ARG {
        return None;
    }
    let program = args.next()?;
    let status = Command::new(&program).args(args).status();
    let rss = getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|usage| usage.max_rss())
        .unwrap_or(0);
    eprintln!("{WRAPPER_ARG} max_rss_kib={rss}");
    Some(match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Runs `argv` (in `dir`, with `env`), returns its time and peak RSS, or its error output.
pub(crate) fn time(argv: &[String], dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Sample> {
    let me = std::env::current_exe().context("locate the bench binary")?;
    let start = Instant::now();
    let out = Command::new(me)
        .arg(WRAPPER_ARG)
        .args(argv)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run {}", argv.join(" ")))?;
    let seconds = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with(WRAPPER_ARG))
            .collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        bail!("{} failed: {tail}", argv.join(" "));
    }
    let max_rss_kib = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{WRAPPER_ARG} max_rss_kib=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        seconds,
        max_rss_kib,
    })
}

/// Builds the release binary of kiln and returns its path.
pub(crate) fn build_release() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("kiln-bench: cargo build --release -p kiln");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "kiln"])
        .current_dir(&root)
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo build --release -p kiln failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/kiln"))
}
