//! Realized performance in a backtest: a data file whose rows carry both the model's
//! prediction and the true label (the columns the stream's `[streams.labels]` names) is
//! measured window by window with the monitor's own accumulators
//! ([`crate::stats::performance`]), so `condition.performance` and `condition.labels`
//! triggers replay as `run` would evaluate them. A file needs no join: a row with a
//! label is a labelled prediction, a row without one a prediction whose label never
//! came (counted `expired`). With the model's side of the reference profile, as
//! `run` does: the reference's figures are each window's `reference` (the baseline of a
//! `performance` condition without its own) and, for a binary task, the calibrated
//! scores give each window its `estimated` performance.

use super::BacktestError;
use crate::config::labels::{LabelsConfig, TaskConfig};
use crate::stats::estimate::EstimateSketch;
use crate::stats::isotonic::Calibration;
use crate::stats::model_profile::{ModelProfile, ModelTask};
use crate::stats::performance::{
    BinarySketch, MulticlassSketch, PerformanceSection, PerformanceSketch, PerformanceStatus,
    ReferencePerformance, RegressionSketch, WindowPerformance,
};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use std::collections::{BTreeMap, VecDeque};

/// One row's prediction and label, as the task reads them.
#[derive(Debug, Clone, PartialEq)]
enum RowPair {
    Number { predicted: Option<f64>, label: Option<f64> },
    Class { predicted: Option<String>, label: Option<String> },
}

/// The columns a task reads.
#[derive(Debug, Clone)]
enum Columns {
    Binary { score: String, threshold: f64 },
    Multiclass { predicted: String },
    Regression { prediction: String },
}

/// A file's labelled rows waiting for the windows that hold them.
#[derive(Debug)]
pub struct FileLabels {
    label: String,
    columns: Columns,
    /// (row number, pair), in row order.
    rows: VecDeque<(u64, RowPair)>,
    /// Labelled predictions counted so far (the `joined` total a `labels` condition reads).
    joined: u64,
    expired: u64,
    /// The model's figures on the reference, when the profile has them for this task.
    reference: Option<ReferencePerformance>,
    /// Binary: the score's calibration on the reference.
    calibration: Option<Calibration>,
    /// The reference profile was looked at (it is taken once, at the first window).
    reference_taken: bool,
}

/// A top-level column name from a JSON pointer (`/score` -> `score`).
fn column(key: &str, pointer: &str) -> Result<String, BacktestError> {
    match pointer.strip_prefix('/') {
        Some(name) if !name.is_empty() && !name.contains('/') => {
            Ok(name.replace("~1", "/").replace("~0", "~"))
        }
        _ => Err(BacktestError::Setup(format!(
            "{key} = \"{pointer}\": a backtest over a data file reads the prediction and the label from top-level columns; \
             give a pointer of one segment (\"/score\" reads the column `score`)"
        ))),
    }
}

impl FileLabels {
    pub fn new(labels: &LabelsConfig, stream: usize) -> Result<FileLabels, BacktestError> {
        let key = |k: &str| format!("streams[{stream}].labels.{k}");
        let columns = match &labels.task {
            TaskConfig::Binary { score, threshold } => {
                Columns::Binary { score: column(&key("task.score"), score)?, threshold: *threshold }
            }
            TaskConfig::Multiclass { predicted } => {
                Columns::Multiclass { predicted: column(&key("task.predicted"), predicted)? }
            }
            TaskConfig::Regression { prediction } => {
                Columns::Regression { prediction: column(&key("task.prediction"), prediction)? }
            }
        };
        Ok(FileLabels {
            label: column(&key("label"), &labels.label)?,
            columns,
            rows: VecDeque::new(),
            joined: 0,
            expired: 0,
            reference: None,
            calibration: None,
            reference_taken: false,
        })
    }

    /// Takes the model's side of the reference profile, as the monitor does: its
    /// figures when they are of this task (and, binary, this threshold), its
    /// calibration for a binary task. Only the first call looks.
    pub fn use_reference(&mut self, model: Option<&ModelProfile>) {
        if std::mem::replace(&mut self.reference_taken, true) {
            return;
        }
        let Some(model) = model else { return };
        let figures = || Some(ReferencePerformance { rows: model.rows, metrics: model.metrics.clone() });
        match (model.model_task(), &self.columns) {
            (Some(ModelTask::Binary { threshold: t }), Columns::Binary { threshold, .. }) => {
                if t == *threshold {
                    self.reference = figures();
                }
                self.calibration = model.calibration.clone();
            }
            (Some(ModelTask::Multiclass), Columns::Multiclass { .. })
            | (Some(ModelTask::Regression), Columns::Regression { .. }) => self.reference = figures(),
            _ => {}
        }
    }

    fn prediction_column(&self) -> &str {
        match &self.columns {
            Columns::Binary { score, .. } => score,
            Columns::Multiclass { predicted } => predicted,
            Columns::Regression { prediction } => prediction,
        }
    }

    fn task(&self) -> &'static str {
        match self.columns {
            Columns::Binary { .. } => "binary",
            Columns::Multiclass { .. } => "multiclass",
            Columns::Regression { .. } => "regression",
        }
    }

    /// The columns the data file must have, with what each is for.
    pub fn required_columns(&self) -> [(&str, &'static str); 2] {
        [(self.prediction_column(), " as the labels' prediction"), (&self.label, " as the labels' label")]
    }

    /// Keeps the pairs of a batch whose first row is `first_row`.
    pub fn push_batch(&mut self, batch: &RecordBatch, first_row: u64) -> Result<(), BacktestError> {
        let get = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| BacktestError::MissingColumn {
                column: name.to_owned(),
                hint: " as a labels column".into(),
            })
        };
        let prediction = get(self.prediction_column())?;
        let label = get(&self.label)?;
        let numbers = |a: &dyn Array, name: &str| -> Result<Vec<Option<f64>>, BacktestError> {
            let cast = arrow::compute::cast(a, &DataType::Float64).map_err(|e| {
                BacktestError::Setup(format!("column `{name}` is not numeric ({}): {e}", a.data_type()))
            })?;
            Ok(cast.as_primitive::<Float64Type>().iter().collect())
        };
        let texts = |a: &dyn Array, name: &str| -> Result<Vec<Option<String>>, BacktestError> {
            let cast = arrow::compute::cast(a, &DataType::Utf8).map_err(|e| {
                BacktestError::Setup(format!(
                    "column `{name}` cannot be read as classes ({}): {e}",
                    a.data_type()
                ))
            })?;
            Ok(cast.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect())
        };
        let pairs: Vec<RowPair> = match &self.columns {
            Columns::Multiclass { predicted } => {
                let p = texts(prediction.as_ref(), predicted)?;
                let l = texts(label.as_ref(), &self.label)?;
                p.into_iter().zip(l).map(|(predicted, label)| RowPair::Class { predicted, label }).collect()
            }
            _ => {
                let p = numbers(prediction.as_ref(), self.prediction_column())?;
                let l = numbers(label.as_ref(), &self.label)?;
                p.into_iter().zip(l).map(|(predicted, label)| RowPair::Number { predicted, label }).collect()
            }
        };
        self.rows.extend(pairs.into_iter().enumerate().map(|(i, p)| (first_row + i as u64, p)));
        Ok(())
    }

    fn empty_sketch(&self) -> PerformanceSketch {
        match &self.columns {
            Columns::Binary { threshold, .. } => PerformanceSketch::Binary(BinarySketch::new(*threshold)),
            Columns::Multiclass { .. } => PerformanceSketch::Multiclass(MulticlassSketch::default()),
            Columns::Regression { .. } => PerformanceSketch::Regression(RegressionSketch::default()),
        }
    }

    /// The performance section of the window of rows `first..=last` (final: a file's
    /// labels are all there), with the running `joined` total.
    pub fn window(
        &mut self,
        index: u64,
        start: String,
        end: String,
        first: u64,
        last: u64,
    ) -> PerformanceSection {
        let mut sketch = self.empty_sketch();
        let mut estimate = self.calibration.as_ref().map(|_| EstimateSketch::default());
        let (mut predictions, mut labelled, mut unusable) = (0u64, 0u64, 0u64);
        for (_, pair) in self.rows.iter().filter(|(row, _)| (first..=last).contains(row)) {
            if let (
                Some(estimate),
                Some(calibration),
                RowPair::Number { predicted: Some(p), .. },
                Columns::Binary { threshold, .. },
            ) = (estimate.as_mut(), self.calibration.as_ref(), pair, &self.columns)
            {
                estimate.add(calibration.apply(*p), *p >= *threshold);
            }
            let counted = match (pair, &mut sketch) {
                (RowPair::Number { predicted: Some(p), label }, PerformanceSketch::Binary(b)) => {
                    predictions += 1;
                    label.map(|l| b.add(*p, l >= 0.5).is_ok())
                }
                (RowPair::Number { predicted: Some(p), label }, PerformanceSketch::Regression(r)) => {
                    predictions += 1;
                    label.map(|l| r.add(*p, l).is_ok())
                }
                (RowPair::Class { predicted: Some(p), label }, PerformanceSketch::Multiclass(m)) => {
                    predictions += 1;
                    label.as_deref().map(|l| {
                        m.add(p, l);
                        true
                    })
                }
                _ => None,
            };
            match counted {
                Some(true) => labelled += 1,
                Some(false) => unusable += 1,
                None => {}
            }
        }
        let expired = predictions - labelled - unusable;
        self.joined += labelled;
        self.expired += expired;
        let confusion = match &sketch {
            PerformanceSketch::Binary(b) => Some([b.tp, b.fp, b.tn, b.fn_]),
            _ => None,
        };
        let window = WindowPerformance {
            index,
            start,
            end,
            status: PerformanceStatus::Final,
            predictions,
            labelled,
            expired,
            evicted: 0,
            handed_over: 0,
            adopted: 0,
            label_coverage: if predictions == 0 { 1.0 } else { labelled as f64 / predictions as f64 },
            metrics: sketch.metrics(),
            confusion,
            estimated: estimate.as_ref().map(EstimateSketch::view),
        };
        let counts =
            BTreeMap::from([("joined".to_owned(), self.joined), ("expired".to_owned(), self.expired)]);
        PerformanceSection {
            task: self.task().into(),
            windows: vec![window],
            counts,
            reference: self.reference.clone(),
        }
    }

    /// Drops the rows before `row` (no open window holds them).
    pub fn forget_before(&mut self, row: u64) {
        while self.rows.front().is_some_and(|(r, _)| *r < row) {
            self.rows.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray};
    use std::sync::Arc;

    fn labels(task: &str) -> LabelsConfig {
        toml::from_str(&format!(
            "topics = [\"l\"]\nprediction_id = \"key\"\nlabel_id = \"key\"\nlabel = \"/y\"\nttl = \"1h\"\ntask = {task}\n"
        ))
        .unwrap()
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn a_binary_window_counts_its_rows_only_and_a_missing_label_as_expired() {
        let mut l =
            FileLabels::new(&labels("{ type = \"binary\", score = \"/p\", threshold = 0.5 }"), 0).unwrap();
        let p: ArrayRef = Arc::new(Float64Array::from(vec![0.9, 0.2, 0.7, 0.4, 0.8, 0.1]));
        let y: ArrayRef = Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            Some(false),
            None,
            Some(true),
            Some(false),
        ]));
        l.push_batch(&batch(vec![("p", p), ("y", y)]), 10).unwrap();
        let section = l.window(0, "a".into(), "b".into(), 10, 13);
        let w = &section.windows[0];
        assert_eq!((w.predictions, w.labelled, w.expired), (4, 3, 1));
        assert_eq!(w.confusion, Some([1, 1, 1, 0]), "tp fp tn fn at 0.5");
        assert!((w.metrics["accuracy"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(section.counts["joined"], 3);
        l.forget_before(14);
        let next = l.window(1, "b".into(), "c".into(), 14, 15);
        assert_eq!(next.windows[0].labelled, 2);
        assert_eq!(next.windows[0].metrics["accuracy"], 1.0);
        assert_eq!(next.counts["joined"], 5, "a running total");
    }

    #[test]
    fn multiclass_and_regression_read_their_columns() {
        let mut m = FileLabels::new(&labels("{ type = \"multiclass\", predicted = \"/c\" }"), 0).unwrap();
        let c: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
        let y: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "a"]));
        m.push_batch(&batch(vec![("c", c), ("y", y)]), 0).unwrap();
        assert!(
            (m.window(0, "".into(), "".into(), 0, 2).windows[0].metrics["accuracy"] - 2.0 / 3.0).abs()
                < 1e-12
        );

        let mut r = FileLabels::new(&labels("{ type = \"regression\", prediction = \"/v\" }"), 0).unwrap();
        let v: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0]));
        let y: ArrayRef = Arc::new(Float64Array::from(vec![2.0, 2.0]));
        r.push_batch(&batch(vec![("v", v), ("y", y)]), 0).unwrap();
        assert_eq!(r.window(0, "".into(), "".into(), 0, 1).windows[0].metrics["mae"], 0.5);
    }

    #[test]
    fn nested_pointers_and_missing_columns_are_named() {
        let err = FileLabels::new(&labels("{ type = \"binary\", score = \"/out/p\" }"), 2).unwrap_err();
        assert!(err.to_string().contains("streams[2].labels.task.score"), "{err}");
        let mut l = FileLabels::new(&labels("{ type = \"binary\", score = \"/p\" }"), 0).unwrap();
        let p: ArrayRef = Arc::new(Float64Array::from(vec![0.5]));
        let err = l.push_batch(&batch(vec![("p", p)]), 0).unwrap_err();
        assert!(err.to_string().contains("`y`"), "{err}");
    }
}
