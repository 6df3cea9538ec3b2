//! The single-threaded helper process that the sandbox re-executes the kiln binary as.

use std::process::ExitCode;

/// When this process was started as the sandbox helper, run it and return its exit code;
/// otherwise return `None` at once. Call first thing in `main`, before any thread starts.
pub fn run_if_requested() -> Option<ExitCode> {
    None
}
