//! The results: one [`Row`] per measurement, the Markdown table `scripts/bench.sh` prints and
//! writes to `bench/results.md`, and the raw figures as JSON.
//!
//! A row shows its figure, the spread (99th percentile or min–max), the reference measured in
//! the same run, the ratio of the two, and the product's target with whether it was met. The
//! ratio always reads "how many times the reference's cost": time over time, memory over memory,
//! and for rates the reference's rate over ours, so a ratio above 1 is always the slower side.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::stats::Summary;

/// What a figure counts.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Seconds,
    Bytes,
    PerSecond,
    /// A data rate, bytes per second (shown in MB/s).
    BytesPerSecond,
}

/// One measured figure with its unit, as stored in the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub what: String,
    pub unit: Unit,
    #[serde(flatten)]
    pub summary: Summary,
}

impl Figure {
    pub fn new(what: impl Into<String>, unit: Unit, summary: Summary) -> Figure {
        Figure { what: what.into(), unit, summary }
    }

    /// The median, formatted in the figure's unit.
    pub fn median_text(&self) -> String {
        format_value(self.summary.median, self.unit)
    }
}

/// A target and whether the figure met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The goal, e.g. "< 1 ms added".
    pub goal: String,
    /// The figure compared with the goal, e.g. "+0.41 ms".
    pub figure: String,
    pub met: bool,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// A stable key for scripts, e.g. `exec.maestro_exec.10`.
    pub id: String,
    /// The issue's section, e.g. "Exec overhead".
    pub section: String,
    pub measured: Figure,
    /// How the spread column reads: the 99th percentile, or min–max for small sample counts.
    pub spread: Spread,
    /// Extra words for the spread column (e.g. the p99 latency of a throughput row).
    pub spread_note: Option<String>,
    pub reference: Option<Figure>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
}

/// Which spread a row shows.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    P99,
    MinMax,
    /// A single figure (a rate over a whole run): the note says what else to read.
    Note,
}

impl Row {
    /// A row whose ratio is computed from the medians (see the module comment for direction).
    pub fn new(
        id: &str,
        section: &str,
        measured: Figure,
        spread: Spread,
        reference: Option<Figure>,
    ) -> Row {
        let ratio = reference.as_ref().and_then(|r| ratio(&measured, r));
        Row {
            id: id.to_owned(),
            section: section.to_owned(),
            measured,
            spread,
            spread_note: None,
            reference,
            ratio,
            target: None,
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.spread_note = Some(note.into());
        self
    }

    pub fn target(mut self, goal: &str, figure: String, met: bool) -> Row {
        self.target = Some(Target { goal: goal.to_owned(), figure, met });
        self
    }

    fn spread_text(&self) -> String {
        let s = &self.measured.summary;
        let u = self.measured.unit;
        let base = match self.spread {
            Spread::P99 => format!("p99 {}", format_value(s.p99, u)),
            Spread::MinMax => format!("{} – {}", format_value(s.min, u), format_value(s.max, u)),
            Spread::Note => String::new(),
        };
        match (&self.spread_note, base.is_empty()) {
            (Some(note), true) => note.clone(),
            (Some(note), false) => format!("{base}; {note}"),
            (None, _) => base,
        }
    }
}

/// How many times the reference's cost the measured figure is.
fn ratio(measured: &Figure, reference: &Figure) -> Option<f64> {
    let (m, r) = (measured.summary.median, reference.summary.median);
    let value = match measured.unit {
        Unit::PerSecond | Unit::BytesPerSecond => r / m,
        Unit::Seconds | Unit::Bytes => m / r,
    };
    value.is_finite().then_some(value)
}

/// A value in its unit, with a readable scale.
pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds => format_seconds(value),
        Unit::Bytes => format_bytes(value),
        Unit::PerSecond => format!("{}/s", group_thousands(value)),
        Unit::BytesPerSecond => format!("{:.0} MB/s", value / 1e6),
    }
}

pub fn format_seconds(s: f64) -> String {
    let abs = s.abs();
    if abs < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if abs < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

pub fn format_bytes(b: f64) -> String {
    const KIB: f64 = 1024.0;
    if b.abs() < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / (KIB * KIB))
    }
}

fn group_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Machine { cores, memory_gib: mem_kib / (1024.0 * 1024.0), cpu, kernel }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC, RFC 3339.
    pub date: String,
    pub mode: String,
    pub machine: Machine,
    pub rows: Vec<Row>,
}

impl Report {
    /// The Markdown: a heading line with date, mode and machine, then the table.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Run: {} ({} mode) on {} cores ({}), {:.1} GiB memory, Linux {}; {} build.\n\n",
            self.date,
            self.mode,
            m.cores,
            m.cpu,
            m.memory_gib,
            m.kernel,
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
        out.push_str(
            "| # | measurement | median | p99 or min–max | reference (same run) | ratio | target |\n",
        );
        out.push_str("|---|---|---|---|---|---|---|\n");
        let mut section = "";
        let mut number = 0;
        for row in &self.rows {
            if row.section != section {
                section = &row.section;
                number += 1;
            }
            let reference = row
                .reference
                .as_ref()
                .map(|r| format!("{}: {}", r.what, r.median_text()))
                .unwrap_or_else(|| "–".to_owned());
            let ratio = row.ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".to_owned());
            let target = row
                .target
                .as_ref()
                .map(|t| {
                    let verdict = if t.met { "met" } else { "**missed**" };
                    format!("{}: {} ({verdict})", t.goal, t.figure)
                })
                .unwrap_or_else(|| "–".to_owned());
            let _ = writeln!(
                out,
                "| {number} | {}: {} | {} | {} | {reference} | {ratio} | {target} |",
                row.section,
                row.measured.what,
                row.measured.median_text(),
                row.spread_text(),
            );
        }
        out
    }

    /// Writes the Markdown and the JSON.
    pub fn write(&self, markdown: &Path, json: &Path) -> anyhow::Result<()> {
        for path in [markdown, json] {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
        }
        let text = format!("# Benchmark results\n\n{}", self.markdown());
        std::fs::write(markdown, text)
            .with_context(|| format!("cannot write {}", markdown.display()))?;
        let raw = serde_json::to_vec_pretty(self).context("cannot serialize the results")?;
        std::fs::write(json, raw).with_context(|| format!("cannot write {}", json.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn formats_and_ratios() {
        assert_eq!(format_seconds(0.000_412), "412.0 µs");
        assert_eq!(format_seconds(0.0123), "12.30 ms");
        assert_eq!(format_bytes(2048.0), "2.0 KiB");
        assert_eq!(format_value(12345.6, Unit::PerSecond), "12,346/s");
        let s = |v| Summary::of(&[v]).unwrap();
        let fast = Figure::new("a", Unit::PerSecond, s(1000.0));
        let slow = Figure::new("b", Unit::PerSecond, s(250.0));
        assert_eq!(ratio(&slow, &fast), Some(4.0));
        let t = Figure::new("t", Unit::Seconds, s(2.0));
        let r = Figure::new("r", Unit::Seconds, s(0.5));
        assert_eq!(ratio(&t, &r), Some(4.0));
    }
}
