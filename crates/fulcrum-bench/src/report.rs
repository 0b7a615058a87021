//! Figures, the table a person reads, and `target/bench/results.json`.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

/// One measured figure, with the same-run baseline it is judged against.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Suite it belongs to (`packet`, `scale`, `e2e`, `control`, ...).
    pub suite: &'static str,
    /// What was measured, e.g. `TCP established`.
    pub name: String,
    /// The value, in `unit`.
    pub value: f64,
    /// `ns`, `pps`, `ms`, `%`, `bytes`, ...
    pub unit: &'static str,
    /// The baseline measured in the same run, when there is one.
    pub baseline: Option<Baseline>,
    /// The target, as text, and whether it was met.
    pub target: Option<Target>,
    /// How it was measured, and its spread.
    pub note: String,
}

/// A same-run baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    /// e.g. `XDP_PASS`, `MAC-swap XDP_TX`.
    pub name: String,
    /// The baseline's value, in the figure's unit.
    pub value: f64,
    /// `value / baseline.value`.
    pub ratio: f64,
}

/// A target from the issue.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// e.g. `<= 30 ns net`.
    pub text: String,
    /// Whether the figure met it.
    pub met: bool,
}

impl Figure {
    /// A figure with no baseline or target yet.
    pub fn new(
        suite: &'static str,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            suite,
            name: name.into(),
            value,
            unit,
            baseline: None,
            target: None,
            note: String::new(),
        }
    }

    /// Adds the same-run baseline.
    pub fn against(mut self, name: impl Into<String>, value: f64) -> Self {
        let ratio = if value == 0.0 {
            0.0
        } else {
            self.value / value
        };
        self.baseline = Some(Baseline {
            name: name.into(),
            value,
            ratio,
        });
        self
    }

    /// Adds the target.
    pub fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target {
            text: text.into(),
            met,
        });
        self
    }

    /// Adds how it was measured.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// The table, one line a figure.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<44} {:>14} {:<6} {:<28} {:<24} how",
        "suite", "figure", "value", "unit", "baseline (ratio)", "target"
    );
    for f in figures {
        let baseline = f
            .baseline
            .as_ref()
            .map(|b| format!("{} {} ({:.2}x)", b.name, human(b.value), b.ratio))
            .unwrap_or_default();
        let target = f
            .target
            .as_ref()
            .map(|t| format!("{} {}", if t.met { "MET" } else { "MISSED" }, t.text))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<8} {:<44} {:>14} {:<6} {:<28} {:<24} {}",
            f.suite,
            f.name,
            human(f.value),
            f.unit,
            baseline,
            target,
            f.note
        );
    }
    out
}

fn human(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

/// Writes every figure to `path` as JSON.
pub fn write_json(path: &Path, figures: &[Figure]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(figures)?)?;
    Ok(())
}
