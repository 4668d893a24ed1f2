//! The model's side of a reference profile: its performance on the reference data (the
//! same accumulators and metrics as a window's realized performance,
//! [`super::performance`]) and, for a binary task, the isotonic calibration of its
//! score ([`super::isotonic`]) that estimates a window's performance before its labels
//! come ([`super::estimate`]). Built by `driftscope reference build` when the reference
//! data has the label and prediction columns.

use super::isotonic::{Calibration, CalibrationError};
use super::performance::{BinarySketch, MulticlassSketch, PerformanceSketch, RegressionSketch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the model predicts, as the stats core needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelTask {
    Binary { threshold: f64 },
    Multiclass,
    Regression,
}

impl ModelTask {
    pub fn name(self) -> &'static str {
        match self {
            ModelTask::Binary { .. } => "binary",
            ModelTask::Multiclass => "multiclass",
            ModelTask::Regression => "regression",
        }
    }
}

/// The model's performance on the reference, saved in the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    /// `binary`, `multiclass` or `regression`.
    pub task: String,
    /// The reference's label column.
    pub label_column: String,
    /// The reference's score (binary), predicted class or prediction column.
    pub prediction_column: String,
    /// Binary: the decision threshold the figures were computed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Rows with a usable label and prediction: they make the figures.
    pub rows: u64,
    /// Rows left out, by reason (`missing_label`, `bad_label`, `missing_prediction`,
    /// `bad_prediction`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
    /// The realized metrics on those rows, by the names a window reports.
    pub metrics: BTreeMap<String, f64>,
    /// Binary: `[tp, fp, tn, fn]` at the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion: Option<[u64; 4]>,
    /// Binary: the score's isotonic calibration on the reference's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// Why a stored model profile cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelProfileError {
    #[error("model: unknown task `{0}`")]
    Task(String),
    #[error("model: a binary task needs a threshold in [0, 1]")]
    Threshold,
    #[error("model: metric `{0}` is not a finite number")]
    Metric(String),
    #[error("model: {0}")]
    Calibration(#[from] CalibrationError),
}

impl ModelProfile {
    /// The task as the stats core needs it.
    pub fn model_task(&self) -> Option<ModelTask> {
        match (self.task.as_str(), self.threshold) {
            ("binary", Some(threshold)) => Some(ModelTask::Binary { threshold }),
            ("multiclass", _) => Some(ModelTask::Multiclass),
            ("regression", _) => Some(ModelTask::Regression),
            _ => None,
        }
    }

    /// Checks a model profile read from a file.
    pub fn validate(&self) -> Result<(), ModelProfileError> {
        match self.task.as_str() {
            "binary" => {
                if !self.threshold.is_some_and(|t| (0.0..=1.0).contains(&t)) {
                    return Err(ModelProfileError::Threshold);
                }
            }
            "multiclass" | "regression" => {}
            other => return Err(ModelProfileError::Task(other.to_owned())),
        }
        if let Some((name, _)) = self.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(ModelProfileError::Metric(name.clone()));
        }
        if let Some(c) = &self.calibration {
            c.validate()?;
        }
        Ok(())
    }
}

/// A label or prediction as read from a reference row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Missing,
    /// A value that cannot be read as the task needs.
    Invalid,
    Number(f64),
    Text(&'a str),
}

/// Collects reference rows (label, prediction) and makes the [`ModelProfile`].
pub struct ModelProfileBuilder {
    task: ModelTask,
    label_column: String,
    prediction_column: String,
    sketch: PerformanceSketch,
    /// Binary: (score, label) of every counted row, for the calibration fit.
    pairs: Vec<(f64, bool)>,
    skipped: BTreeMap<String, u64>,
}

/// A binary label: `true`/`false`, or a number or text that is 0 or 1.
fn binary_label(cell: Cell) -> Option<bool> {
    match cell {
        Cell::Number(v) if v == 0.0 || v == 1.0 => Some(v == 1.0),
        Cell::Text("true") => Some(true),
        Cell::Text("false") => Some(false),
        Cell::Text(t) => t.trim().parse::<f64>().ok().filter(|v| *v == 0.0 || *v == 1.0).map(|v| v == 1.0),
        _ => None,
    }
}

fn number(cell: Cell) -> Option<f64> {
    match cell {
        Cell::Number(v) => Some(v),
        Cell::Text(t) => t.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|v| v.is_finite())
}

impl ModelProfileBuilder {
    pub fn new(task: ModelTask, label_column: &str, prediction_column: &str) -> ModelProfileBuilder {
        let sketch = match task {
            ModelTask::Binary { threshold } => PerformanceSketch::Binary(BinarySketch::new(threshold)),
            ModelTask::Multiclass => PerformanceSketch::Multiclass(MulticlassSketch::default()),
            ModelTask::Regression => PerformanceSketch::Regression(RegressionSketch::default()),
        };
        ModelProfileBuilder {
            task,
            label_column: label_column.to_owned(),
            prediction_column: prediction_column.to_owned(),
            sketch,
            pairs: Vec::new(),
            skipped: BTreeMap::new(),
        }
    }

    fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_owned()).or_insert(0) += 1;
    }

    /// Adds one reference row; a row without a usable label or prediction is counted
    /// by reason and left out.
    pub fn add(&mut self, label: Cell, prediction: Cell) {
        let missing = |c: Cell| matches!(c, Cell::Missing);
        if missing(label) {
            return self.skip("missing_label");
        }
        if missing(prediction) {
            return self.skip("missing_prediction");
        }
        match &mut self.sketch {
            PerformanceSketch::Binary(b) => {
                let Some(label) = binary_label(label) else { return self.skip("bad_label") };
                let Some(score) = number(prediction) else { return self.skip("bad_prediction") };
                if b.add(score, label).is_err() {
                    return self.skip("bad_prediction");
                }
                self.pairs.push((score, label));
            }
            PerformanceSketch::Multiclass(m) => {
                let text = |c: Cell<'_>| match c {
                    Cell::Text(t) => Some(t.to_owned()),
                    Cell::Number(v) => Some(v.to_string()),
                    _ => None,
                };
                let Some(actual) = text(label) else { return self.skip("bad_label") };
                let Some(predicted) = text(prediction) else { return self.skip("bad_prediction") };
                m.add(&predicted, &actual);
            }
            PerformanceSketch::Regression(r) => {
                let Some(actual) = number(label) else { return self.skip("bad_label") };
                let Some(predicted) = number(prediction) else { return self.skip("bad_prediction") };
                // Both are finite: the sketch takes them.
                let _ = r.add(predicted, actual);
            }
        }
    }

    /// The model profile; `None` when no row had a usable label and prediction.
    pub fn finish(mut self) -> Option<ModelProfile> {
        let rows = self.sketch.rows();
        if rows == 0 {
            return None;
        }
        let (threshold, confusion, calibration) = match (&self.sketch, self.task) {
            (PerformanceSketch::Binary(b), ModelTask::Binary { threshold }) => {
                (Some(threshold), Some([b.tp, b.fp, b.tn, b.fn_]), Calibration::fit(&mut self.pairs))
            }
            _ => (None, None, None),
        };
        Some(ModelProfile {
            task: self.task.name().into(),
            label_column: self.label_column,
            prediction_column: self.prediction_column,
            threshold,
            rows,
            skipped: self.skipped,
            metrics: self.sketch.metrics(),
            confusion,
            calibration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_reference_gives_its_metrics_and_calibration() {
        let mut b = ModelProfileBuilder::new(ModelTask::Binary { threshold: 0.5 }, "y", "p");
        for (y, p) in [
            (Cell::Text("true"), 0.9),
            (Cell::Number(1.0), 0.2),
            (Cell::Text("0"), 0.7),
            (Cell::Text("false"), 0.1),
        ] {
            b.add(y, Cell::Number(p));
        }
        b.add(Cell::Missing, Cell::Number(0.5));
        b.add(Cell::Text("maybe"), Cell::Number(0.5));
        b.add(Cell::Number(1.0), Cell::Number(1.5));
        let m = b.finish().expect("rows");
        m.validate().expect("valid");
        assert_eq!((m.rows, m.confusion), (4, Some([1, 1, 1, 1])));
        assert_eq!(m.metrics["accuracy"], 0.5);
        assert_eq!(m.skipped["missing_label"], 1);
        assert_eq!((m.skipped["bad_label"], m.skipped["bad_prediction"]), (1, 1));
        let c = m.calibration.as_ref().expect("calibration");
        assert_eq!(c.rows, 4);
        assert_eq!(m.model_task(), Some(ModelTask::Binary { threshold: 0.5 }));
        let json = serde_json::to_string(&m).expect("json");
        assert_eq!(serde_json::from_str::<ModelProfile>(&json).expect("back"), m);
    }

    #[test]
    fn profiles_without_a_model_still_load_and_profiles_with_one_round_trip() {
        use crate::stats::profile::{FeatureSpec, PROFILE_VERSION, Profile, ProfileBuilder};
        use crate::stats::{FeatureKind, ValueSink};
        let spec = FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 };
        let mut b = ProfileBuilder::new(vec![spec], 64, 100);
        b.add_records(3);
        for x in [1.0, 2.0, 3.0] {
            b.numeric(0, x);
        }
        let mut profile = b.finish("t".into(), "now".into());
        // A profile as written before the model's side existed: version 1, no `model`.
        let old = profile.to_json();
        assert!(!String::from_utf8_lossy(&old).contains("\"model\""));
        let back = Profile::from_json(&old).expect("an old profile loads");
        assert_eq!((back.format_version, back.model.is_none()), (1, true));
        let mut m = ModelProfileBuilder::new(ModelTask::Binary { threshold: 0.5 }, "y", "p");
        for (y, p) in [(1.0, 0.9), (0.0, 0.3), (1.0, 0.6), (0.0, 0.7)] {
            m.add(Cell::Number(y), Cell::Number(p));
        }
        profile.set_model(m.finish().expect("rows"));
        let back = Profile::from_json(&profile.to_json()).expect("loads");
        assert_eq!(back, profile);
        assert_eq!(back.format_version, PROFILE_VERSION);
        // A damaged calibration is refused at load time, naming the model.
        let mut bad = profile.clone();
        if let Some(c) = bad.model.as_mut().and_then(|m| m.calibration.as_mut()) {
            c.y[0] = 2.0;
        }
        let e = Profile::from_json(&bad.to_json()).expect_err("refused").to_string();
        assert!(e.contains("model") && e.contains("non-decreasing"), "{e}");
    }

    #[test]
    fn other_tasks_and_empty_references() {
        let mut b = ModelProfileBuilder::new(ModelTask::Regression, "y", "p");
        b.add(Cell::Number(2.0), Cell::Number(1.0));
        b.add(Cell::Text("4"), Cell::Text("4.5"));
        let m = b.finish().expect("rows");
        assert_eq!(m.metrics["mae"], 0.75);
        assert!(m.calibration.is_none() && m.threshold.is_none());
        let mut b = ModelProfileBuilder::new(ModelTask::Multiclass, "y", "p");
        b.add(Cell::Text("a"), Cell::Text("a"));
        b.add(Cell::Text("b"), Cell::Text("a"));
        assert_eq!(b.finish().expect("rows").metrics["accuracy"], 0.5);
        let b = ModelProfileBuilder::new(ModelTask::Multiclass, "y", "p");
        assert!(b.finish().is_none());
        let mut bad = ModelProfileBuilder::new(ModelTask::Regression, "y", "p").finish();
        assert!(bad.is_none());
        bad = Some(ModelProfile {
            task: "ranking".into(),
            label_column: "y".into(),
            prediction_column: "p".into(),
            threshold: None,
            rows: 1,
            skipped: BTreeMap::new(),
            metrics: BTreeMap::new(),
            confusion: None,
            calibration: None,
        });
        assert_eq!(bad.expect("set").validate(), Err(ModelProfileError::Task("ranking".into())));
    }
}
