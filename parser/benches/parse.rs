//! Parsing a generated 10,000-instruction Dockerfile: median of 50 runs.
//! Run with `cargo bench -p kiln-parser --bench parse`.
#![allow(clippy::print_stdout)]

use std::time::Instant;

fn dockerfile(n: usize) -> String {
    let mut text =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM ${BASE} AS build\n");
    for i in 0..n.saturating_sub(2) {
        let line = match i % 8 {
            0 => format!("RUN echo step {i} && \\\n    test -d /tmp\n"),
            1 => format!("ENV VAR{i}=\"value {i}\" OTHER{i}=x\n"),
            2 => format!("COPY --chown=0:0 src/{i} /app/{i}/\n"),
            3 => format!("LABEL org.example.step{i}=\"{i}\"\n"),
            4 => format!("WORKDIR /work/{i}\n"),
            5 => format!("ARG A{i}=default\n"),
            6 => format!("RUN [\"/bin/sh\", \"-c\", \"echo {i}\"]\n"),
            _ => format!("EXPOSE {}/tcp\n", 1000 + i),
        };
        text.push_str(&line);
    }
    text
}

fn main() {
    let text = dockerfile(10_000);
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
