//! Lowering a Dockerfile of 100,000 `ENV` lines (issue 17, item 12: quadratic before,
//! 103 s through the binary), beside 100,000 `LABEL` lines: median of 5 runs.
//! Run with `cargo bench -p kiln-solver --bench lower`.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;

use kiln_solver::frontend::{LowerOptions, lower};
use kiln_solver::request::NetworkMode;

fn file(keyword: &str, lines: usize) -> String {
    let mut text = String::from("FROM scratch\n");
    for i in 0..lines {
        text.push_str(&format!("{keyword} k{i}=v{i}\n"));
    }
    text
}

fn main() {
    let options = LowerOptions {
        build_args: BTreeMap::new(),
        target: None,
        platform: None,
        labels: BTreeMap::new(),
        network: NetworkMode::default(),
        allow: Vec::new(),
        named_contexts: BTreeMap::new(),
    };
    for keyword in ["ENV", "LABEL"] {
        let text = file(keyword, 100_000);
        let parsed = kiln_parser::parse(&text).expect("the generated Dockerfile parses");
        let mut times = Vec::new();
        for _ in 0..5 {
            let mut resolve = |r: &str, _: &_| Err(format!("no image {r} in a bench"));
            let start = Instant::now();
            lower(&parsed, &options, &mut resolve).expect("lowers");
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "lower 100,000 {keyword} lines: median {:.1} ms, min {:.1} ms, max {:.1} ms",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}
