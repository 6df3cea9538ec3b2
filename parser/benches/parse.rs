//! Parsing a generated 10,000-instruction Dockerfile: median of 50 runs.
//! Run with `cargo bench -p kiln-parser --bench parse`.
#![allow(clippy::print_stdout)]

use std::time::Instant;

fn main() {
    let text = kiln_testkit::inputs::long_dockerfile(10_000);
    let mut times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let parsed = kiln_parser::parse(&text).expect("the generated Dockerfile parses");
        times.push(start.elapsed());
        assert_eq!(parsed.stages[0].instructions.len(), 9_998);
    }
    times.sort();
    println!(
        "parse 10,000 instructions ({} KiB): median {:.2} ms, min {:.2} ms, max {:.2} ms",
        text.len() / 1024,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
}
