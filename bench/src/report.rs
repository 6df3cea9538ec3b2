//! The table people read and the JSON a later run is compared with.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::measure::Sample;

/// One line of the table: one thing measured several times, or why it could not be.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) what: String,
    pub(crate) seconds: Vec<f64>,
    pub(crate) max_rss_kib: Vec<u64>,
    pub(crate) error: Option<String>,
    pub(crate) note: String,
}

impl Row {
    pub(crate) fn new(scenario: &str, what: &str, samples: Result<Vec<Sample>, String>) -> Row {
        let (seconds, max_rss_kib, error) = match samples {
            Ok(s) => (
                s.iter().map(|x| x.seconds).collect(),
                s.iter().map(|x| x.max_rss_kib).collect(),
                None,
            ),
            Err(e) => (Vec::new(), Vec::new(), Some(e)),
        };
        Row {
            scenario: scenario.to_owned(),
            what: what.to_owned(),
            seconds,
            max_rss_kib,
            error,
            note: String::new(),
        }
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    pub(crate) fn median(&self) -> Option<f64> {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        (!s.is_empty()).then(|| s[s.len() / 2])
    }
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

pub(crate) fn print_table(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "| scenario | what | median | min | max | peak RSS | note |\n|---|---|---|---|---|---|---|"
    )?;
    for row in rows {
        match (&row.error, row.median()) {
            (None, Some(median)) => {
                let min = row.seconds.iter().copied().fold(f64::INFINITY, f64::min);
                let max = row.seconds.iter().copied().fold(0.0, f64::max);
                let rss = row.max_rss_kib.iter().max().copied().unwrap_or(0);
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.1} MiB | {} |",
                    row.scenario,
                    row.what,
                    fmt_secs(median),
                    fmt_secs(min),
                    fmt_secs(max),
                    rss as f64 / 1024.0,
                    row.note
                )?;
            }
            (error, _) => writeln!(
                out,
                "| {} | {} | — | — | — | — | not measured: {} |",
                row.scenario,
                row.what,
                error.as_deref().unwrap_or("no runs")
            )?,
        }
    }
    Ok(())
}

pub(crate) fn write_json(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(rows)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
