//! Deterministic inputs for tests and benchmarks.

/// A Dockerfile of about `n` instructions in a realistic mix (RUN with continuations, ENV,
/// COPY with flags, LABEL, WORKDIR, ARG, exec-form RUN, EXPOSE).
pub fn long_dockerfile(n: usize) -> String {
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
