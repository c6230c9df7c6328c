//! The bench's results: figures (median of the repetitions), targets met or not, the printed
//! table and `bench/results.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{BenchError, median};

/// One measured quantity over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The figure number, with a letter for each quantity of a figure ("4b").
    pub id: String,
    pub key: String,
    pub label: String,
    pub unit: String,
    pub median: f64,
    pub values: Vec<f64>,
    /// What was shortened or how it was measured; shown in the table.
    pub note: String,
}

/// A target of the issue and whether the medians meet it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    /// The measured ratio (figure / threshold or figure / figure), when measured.
    pub ratio: Option<f64>,
    pub met: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub generated_at: String,
    pub commit: String,
    pub cores: usize,
    pub reps: u32,
    pub config: serde_json::Value,
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
}

/// Figures in the order they were first measured.
#[derive(Debug, Default)]
pub struct Figures {
    list: Vec<Figure>,
}

impl Figures {
    /// Adds one repetition's value of figure `key`, creating the figure on first use.
    pub fn add(&mut self, id: &str, key: &str, label: &str, unit: &str, note: &str, value: f64) {
        match self.list.iter_mut().find(|f| f.key == key) {
            Some(figure) => figure.values.push(value),
            None => self.list.push(Figure {
                id: id.to_owned(),
                key: key.to_owned(),
                label: label.to_owned(),
                unit: unit.to_owned(),
                median: f64::NAN,
                values: vec![value],
                note: note.to_owned(),
            }),
        }
        if let Some(figure) = self.list.iter_mut().find(|f| f.key == key) {
            figure.median = median(&figure.values);
        }
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        self.list
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.median)
            .filter(|m| m.is_finite())
    }

    pub fn into_vec(self) -> Vec<Figure> {
        self.list
    }
}

/// "at least `threshold`" (or "below" with `below`) on `value`; unmeasured when None.
pub fn target(
    text: &str,
    value: Option<f64>,
    threshold: f64,
    below: bool,
    detail: impl Fn(f64) -> String,
) -> Target {
    match value {
        Some(v) => {
            let ratio = v / threshold;
            Target {
                target: text.to_owned(),
                ratio: Some(ratio),
                met: Some(if below { ratio < 1.0 } else { ratio >= 1.0 }),
                detail: detail(v),
            }
        }
        None => Target {
            target: text.to_owned(),
            ratio: None,
            met: None,
            detail: "not measured".to_owned(),
        },
    }
}

/// A number with thousands separators, or with decimals when small.
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Results {
    /// The table printed at the end of `make bench`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "recq bench — commit {}, {} cores, median of {} repetitions",
            self.commit, self.cores, self.reps
        );
        let _ = writeln!(
            out,
            "{:<4} {:<58} {:>11}  {:<9} repetitions",
            "#", "figure", "median", "unit"
        );
        for f in &self.figures {
            let reps: Vec<String> = f.values.iter().map(|v| human(*v)).collect();
            let _ = writeln!(
                out,
                "{:<4} {:<58} {:>11}  {:<9} {}",
                f.id,
                f.label,
                human(f.median),
                f.unit,
                reps.join(" / ")
            );
            if !f.note.is_empty() {
                let _ = writeln!(out, "{:<4}   ↳ {}", "", f.note);
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "targets");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "MET    ",
                Some(false) => "NOT MET",
                None => "n/a    ",
            };
            let ratio = t
                .ratio
                .map_or(String::new(), |r| format!("  ({r:.2}× the limit)"));
            let _ = writeln!(out, "  {verdict} {:<58} {}{ratio}", t.target, t.detail);
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        }
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| BenchError::Failed(format!("cannot serialize the results: {e}")))?;
        std::fs::write(path, json + "\n")
            .map_err(BenchError::io(format!("writing {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_every_repetition_and_report_the_median() {
        let mut figures = Figures::default();
        for v in [30.0, 10.0, 20.0] {
            figures.add("1", "apply", "apply", "events/s", "", v);
        }
        assert_eq!(figures.median("apply"), Some(20.0));
        assert_eq!(figures.median("missing"), None);
        let list = figures.into_vec();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].values, vec![30.0, 10.0, 20.0]);
    }

    #[test]
    fn targets_state_the_ratio_and_whether_they_are_met() {
        let t = target("p99 < 250 ms", Some(125.0), 250.0, true, |v| {
            format!("{v} ms")
        });
        assert_eq!((t.ratio, t.met), (Some(0.5), Some(true)));
        let t = target("≥ 25× seed", Some(20.0), 25.0, false, |v| {
            format!("{v}×")
        });
        assert_eq!(t.met, Some(false));
        assert_eq!(target("x", None, 1.0, false, |_| String::new()).met, None);
        assert_eq!(human(1_234_567.0), "1,234,567");
        assert_eq!(human(4.256), "4.26");
    }
}
