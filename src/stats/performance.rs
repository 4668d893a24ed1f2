//! Model performance from joined (prediction, label) pairs: one mergeable accumulator
//! per task, so a window's figure is the merge of its parts (panes, partitions, and
//! later instances) and equals the figure computed on all its rows at once.
//!
//! * Binary: the confusion counts at the decision threshold (a score `>= threshold` is
//!   a positive prediction, as `y_pred = score >= t` in scikit-learn), accuracy,
//!   precision, recall, F1, log loss (scores clipped to `[1e-15, 1 - 1e-15]`), the
//!   expected calibration error over [`ECE_BINS`] equal-width score bins, and ROC AUC
//!   from a histogram of positives' and negatives' scores on a fixed grid of
//!   [`AUC_CELLS`] cells over `[0, 1]`.
//! * Multiclass: accuracy and macro F1 over at most [`MAX_CLASSES`] classes (classes
//!   beyond that share one bucket, [`OTHER_CLASS`], and the overflow is counted).
//! * Regression: MAE, RMSE, MAPE (scikit-learn's: `|y - p| / max(|y|, eps)`).
//!
//! A metric that is undefined on the rows seen (precision with no positive prediction,
//! AUC with one class only) is absent from [`PerformanceSketch::metrics`] rather than
//! 0 (scikit-learn's `zero_division` would report 0).
//!
//! ROC AUC tolerance: pairs of a positive and a negative whose scores fall in the same
//! grid cell are counted as ties (1/2). Only those pairs can differ from the exact
//! count, so `|auc - exact| <= 1/2 * sum_c pos_c * neg_c / (P * N)`; that bound is
//! computed per window and reported as `roc_auc_bound`. For scores spread over `[0, 1]`
//! it is about `1 / (2 * AUC_CELLS)`; exactly tied scores are ties either way.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Score bins of the expected calibration error: `[0, 0.1), ..., [0.9, 1]`.
pub const ECE_BINS: usize = 10;
/// Cells of the ROC AUC score grid over `[0, 1]`.
pub const AUC_CELLS: usize = 1000;
/// Distinct classes a multiclass window keeps apart.
pub const MAX_CLASSES: usize = 256;
/// The bucket of classes beyond [`MAX_CLASSES`].
pub const OTHER_CLASS: &str = "__other__";
/// Log loss clips probabilities this far from 0 and 1.
const LOG_LOSS_EPS: f64 = 1e-15;

/// Why a joined pair cannot be counted (a bounded metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("the score is not a probability in [0, 1]")]
    ScoreOutOfRange,
    #[error("the value is not finite")]
    NotFinite,
}

impl PairError {
    pub fn reason(self) -> &'static str {
        match self {
            PairError::ScoreOutOfRange => "score_out_of_range",
            PairError::NotFinite => "not_finite",
        }
    }
}

/// Binary classification: confusion counts, log loss, calibration bins and the AUC grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinarySketch {
    pub threshold: f64,
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
    /// Sum of the per-row log loss.
    pub log_loss_sum: f64,
    /// Per calibration bin: rows, sum of scores, positives.
    pub ece_rows: Vec<u64>,
    pub ece_scores: Vec<f64>,
    pub ece_positives: Vec<u64>,
    /// Per AUC grid cell: positives' and negatives' scores that fall in it. Dense
    /// (`AUC_CELLS` counts, allocated at the first row, so an idle window costs
    /// nothing): a sparse map's lookups were most of a window's metrics time. Written
    /// sparse (cell -> count), as before.
    #[serde(with = "sparse_cells")]
    pub auc_positives: Vec<u64>,
    #[serde(with = "sparse_cells")]
    pub auc_negatives: Vec<u64>,
}

/// The AUC cells as a map of the non-empty ones (the checkpoint and profile format).
mod sparse_cells {
    use super::AUC_CELLS;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(cells: &[u64], serializer: S) -> Result<S::Ok, S::Error> {
        let sparse: BTreeMap<u16, u64> =
            cells.iter().enumerate().filter(|(_, n)| **n > 0).map(|(c, n)| (c as u16, *n)).collect();
        sparse.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
        let sparse = BTreeMap::<u16, u64>::deserialize(deserializer)?;
        if sparse.is_empty() {
            return Ok(Vec::new());
        }
        let mut cells = vec![0; AUC_CELLS];
        for (cell, n) in sparse {
            *cells.get_mut(cell as usize).ok_or_else(|| {
                D::Error::custom(format!("AUC cell {cell} is outside the {AUC_CELLS} cells"))
            })? = n;
        }
        Ok(cells)
    }
}

impl BinarySketch {
    pub fn new(threshold: f64) -> BinarySketch {
        BinarySketch {
            threshold,
            tp: 0,
            fp: 0,
            tn: 0,
            fn_: 0,
            log_loss_sum: 0.0,
            ece_rows: vec![0; ECE_BINS],
            ece_scores: vec![0.0; ECE_BINS],
            ece_positives: vec![0; ECE_BINS],
            auc_positives: Vec::new(),
            auc_negatives: Vec::new(),
        }
    }

    /// Adds one row: `score` is the predicted probability of the positive class.
    pub fn add(&mut self, score: f64, label: bool) -> Result<(), PairError> {
        if !score.is_finite() {
            return Err(PairError::NotFinite);
        }
        if !(0.0..=1.0).contains(&score) {
            return Err(PairError::ScoreOutOfRange);
        }
        match (score >= self.threshold, label) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
        let p = score.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
        self.log_loss_sum -= if label { p.ln() } else { (1.0 - p).ln() };
        let bin = ece_bin(score);
        self.ece_rows[bin] += 1;
        self.ece_scores[bin] += score;
        self.ece_positives[bin] += u64::from(label);
        let cell = auc_cell(score);
        let side = if label { &mut self.auc_positives } else { &mut self.auc_negatives };
        if side.is_empty() {
            side.resize(AUC_CELLS, 0);
        }
        side[cell as usize] += 1;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Adds another sketch's rows (same threshold).
    pub fn merge(&mut self, other: &BinarySketch) {
        debug_assert_eq!(self.threshold.to_bits(), other.threshold.to_bits());
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
        self.log_loss_sum += other.log_loss_sum;
        for b in 0..ECE_BINS {
            self.ece_rows[b] += other.ece_rows[b];
            self.ece_scores[b] += other.ece_scores[b];
            self.ece_positives[b] += other.ece_positives[b];
        }
        for (ours, theirs) in
            [(&mut self.auc_positives, &other.auc_positives), (&mut self.auc_negatives, &other.auc_negatives)]
        {
            if !theirs.is_empty() {
                ours.resize(AUC_CELLS, 0);
                for (a, b) in ours.iter_mut().zip(theirs) {
                    *a += b;
                }
            }
        }
    }

    fn metrics(&self, out: &mut BTreeMap<String, f64>) {
        let n = self.rows();
        if n == 0 {
            return;
        }
        let (tp, fp, fn_) = (self.tp as f64, self.fp as f64, self.fn_ as f64);
        out.insert("accuracy".into(), (self.tp + self.tn) as f64 / n as f64);
        if self.tp + self.fp > 0 {
            out.insert("precision".into(), tp / (tp + fp));
        }
        if self.tp + self.fn_ > 0 {
            out.insert("recall".into(), tp / (tp + fn_));
        }
        if self.tp + self.fp + self.fn_ > 0 {
            out.insert("f1".into(), 2.0 * tp / (2.0 * tp + fp + fn_));
        }
        out.insert("log_loss".into(), self.log_loss_sum / n as f64);
        let ece: f64 = (0..ECE_BINS)
            .filter(|&b| self.ece_rows[b] > 0)
            .map(|b| {
                let rows = self.ece_rows[b] as f64;
                (self.ece_positives[b] as f64 / rows - self.ece_scores[b] / rows).abs() * rows
            })
            .sum::<f64>()
            / n as f64;
        out.insert("ece".into(), ece);
        if let Some((auc, bound)) = self.roc_auc() {
            out.insert("roc_auc".into(), auc);
            out.insert("roc_auc_bound".into(), bound);
        }
    }

    /// ROC AUC from the grid and its bound on the distance to the exact value; `None`
    /// without both classes.
    pub fn roc_auc(&self) -> Option<(f64, f64)> {
        let positives: u64 = self.auc_positives.iter().sum();
        let negatives: u64 = self.auc_negatives.iter().sum();
        if positives == 0 || negatives == 0 {
            return None;
        }
        // Walk the cells upwards: a positive beats every negative in a lower cell and
        // ties (1/2) the negatives of its own cell.
        let mut below = 0.0f64;
        let mut wins = 0.0f64;
        let mut same_cell = 0.0f64;
        for (&pos, &neg) in self.auc_positives.iter().zip(&self.auc_negatives) {
            let (pos, here) = (pos as f64, neg as f64);
            wins += pos * (below + 0.5 * here);
            same_cell += pos * here;
            below += here;
        }
        let pairs = positives as f64 * negatives as f64;
        Some((wins / pairs, 0.5 * same_cell / pairs))
    }
}

fn ece_bin(score: f64) -> usize {
    ((score * ECE_BINS as f64) as usize).min(ECE_BINS - 1)
}

fn auc_cell(score: f64) -> u16 {
    ((score * AUC_CELLS as f64) as usize).min(AUC_CELLS - 1) as u16
}

/// Multiclass classification: per class, true positives, false positives and false
/// negatives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MulticlassSketch {
    /// class -> [tp, fp, fn]
    pub classes: BTreeMap<String, [u64; 3]>,
    pub rows: u64,
    pub correct: u64,
    /// Rows whose predicted or true class went to [`OTHER_CLASS`].
    pub overflow: u64,
}

impl MulticlassSketch {
    pub fn add(&mut self, predicted: &str, actual: &str) {
        let predicted = self.class_key(predicted);
        let actual = self.class_key(actual);
        if predicted == OTHER_CLASS || actual == OTHER_CLASS {
            self.overflow += 1;
        }
        self.rows += 1;
        if predicted == actual {
            self.correct += 1;
            self.classes.entry(predicted).or_default()[0] += 1;
        } else {
            self.classes.entry(predicted).or_default()[1] += 1;
            self.classes.entry(actual).or_default()[2] += 1;
        }
    }

    fn class_key(&self, class: &str) -> String {
        if self.classes.contains_key(class) || self.classes.len() < MAX_CLASSES {
            class.to_owned()
        } else {
            OTHER_CLASS.to_owned()
        }
    }

    /// Adds another sketch's rows; classes beyond the cap go to [`OTHER_CLASS`].
    pub fn merge(&mut self, other: &MulticlassSketch) {
        self.rows += other.rows;
        self.correct += other.correct;
        self.overflow += other.overflow;
        for (class, counts) in &other.classes {
            let key = self.class_key(class);
            let mine = self.classes.entry(key).or_default();
            for k in 0..3 {
                mine[k] += counts[k];
            }
        }
    }

    fn metrics(&self, out: &mut BTreeMap<String, f64>) {
        if self.rows == 0 {
            return;
        }
        out.insert("accuracy".into(), self.correct as f64 / self.rows as f64);
        // Every class seen as truth or prediction, as scikit-learn's default labels.
        let f1: Vec<f64> = self
            .classes
            .values()
            .map(|&[tp, fp, fn_]| {
                let d = 2 * tp + fp + fn_;
                if d == 0 { 0.0 } else { 2.0 * tp as f64 / d as f64 }
            })
            .collect();
        if !f1.is_empty() {
            out.insert("macro_f1".into(), f1.iter().sum::<f64>() / f1.len() as f64);
        }
    }
}

/// Regression: sums of absolute, squared and relative errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionSketch {
    pub rows: u64,
    pub abs_sum: f64,
    pub sq_sum: f64,
    pub ape_sum: f64,
}

impl RegressionSketch {
    pub fn add(&mut self, predicted: f64, actual: f64) -> Result<(), PairError> {
        if !predicted.is_finite() || !actual.is_finite() {
            return Err(PairError::NotFinite);
        }
        let e = (actual - predicted).abs();
        self.rows += 1;
        self.abs_sum += e;
        self.sq_sum += e * e;
        self.ape_sum += e / actual.abs().max(f64::EPSILON);
        Ok(())
    }

    pub fn merge(&mut self, other: &RegressionSketch) {
        self.rows += other.rows;
        self.abs_sum += other.abs_sum;
        self.sq_sum += other.sq_sum;
        self.ape_sum += other.ape_sum;
    }

    fn metrics(&self, out: &mut BTreeMap<String, f64>) {
        if self.rows == 0 {
            return;
        }
        let n = self.rows as f64;
        out.insert("mae".into(), self.abs_sum / n);
        out.insert("rmse".into(), (self.sq_sum / n).sqrt());
        out.insert("mape".into(), self.ape_sum / n);
    }
}

/// The accumulator of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum PerformanceSketch {
    Binary(BinarySketch),
    Multiclass(MulticlassSketch),
    Regression(RegressionSketch),
}

/// A prediction's value as the join keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Predicted {
    /// Binary score or regression prediction.
    Number(f64),
    /// Multiclass: the class's index in the caller's class table.
    Class(u32),
}

impl PerformanceSketch {
    /// Rows counted.
    pub fn rows(&self) -> u64 {
        match self {
            PerformanceSketch::Binary(b) => b.rows(),
            PerformanceSketch::Multiclass(m) => m.rows,
            PerformanceSketch::Regression(r) => r.rows,
        }
    }

    /// An empty sketch of the same task and settings.
    pub fn empty_like(&self) -> PerformanceSketch {
        match self {
            PerformanceSketch::Binary(b) => PerformanceSketch::Binary(BinarySketch::new(b.threshold)),
            PerformanceSketch::Multiclass(_) => PerformanceSketch::Multiclass(MulticlassSketch::default()),
            PerformanceSketch::Regression(_) => PerformanceSketch::Regression(RegressionSketch::default()),
        }
    }

    /// Adds another sketch of the same task; a sketch of another task is ignored (a
    /// caller merges only sketches it made from one config).
    pub fn merge(&mut self, other: &PerformanceSketch) {
        match (self, other) {
            (PerformanceSketch::Binary(a), PerformanceSketch::Binary(b)) => a.merge(b),
            (PerformanceSketch::Multiclass(a), PerformanceSketch::Multiclass(b)) => a.merge(b),
            (PerformanceSketch::Regression(a), PerformanceSketch::Regression(b)) => a.merge(b),
            _ => debug_assert!(false, "merging sketches of different tasks"),
        }
    }

    /// Every metric defined on the rows seen, by name (flat, for reports and series).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        match self {
            PerformanceSketch::Binary(b) => b.metrics(&mut out),
            PerformanceSketch::Multiclass(m) => m.metrics(&mut out),
            PerformanceSketch::Regression(r) => r.metrics(&mut out),
        }
        out
    }
}

/// Whether a window's performance can still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceStatus {
    /// Some of its predictions still wait for their label.
    Provisional,
    /// Every prediction is labelled, expired or evicted: the figure is settled.
    Final,
}

/// The realized performance of one window of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowPerformance {
    /// Sequence number of the performance window in its stream.
    pub index: u64,
    pub start: String,
    pub end: String,
    pub status: PerformanceStatus,
    /// Predictions in the window (sampled ids, duplicates not counted).
    pub predictions: u64,
    /// ... of which labelled (they make the metrics).
    pub labelled: u64,
    /// ... of which waited `ttl` without a label.
    pub expired: u64,
    /// ... of which were evicted by `max_pending`.
    pub evicted: u64,
    /// ... of which were still waiting when their partition moved to another instance
    /// of the group (which counts them as `adopted`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handed_over: u64,
    /// Predictions taken over, waiting, from another instance (counted in
    /// `predictions`, resolved here).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adopted: u64,
    /// `labelled / predictions` (1 for a window without predictions).
    pub label_coverage: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Binary tasks: `[tp, fp, tn, fn]` at the threshold (for confidence bounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion: Option<[u64; 4]>,
    /// Binary tasks whose reference profile has a calibration: the performance
    /// estimated from the scores of all the window's predictions, labelled or not
    /// ([`super::estimate`]), beside the realized `metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated: Option<super::estimate::EstimatedPerformance>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl WindowPerformance {
    /// The one-sided upper confidence bound of a binary metric (`accuracy`,
    /// `precision`, `recall`, `f1`) at `confidence`: the Wilson score bound of the
    /// proportion behind it. F1 is taken as the proportion `tp / (tp + (fp + fn) / 2)`
    /// (which it equals) of that many trials, an approximation: its errors are not
    /// independent trials. `None` without confusion counts or trials.
    pub fn upper_bound(&self, metric: &str, confidence: f64) -> Option<f64> {
        let [tp, fp, tn, fn_] = self.confusion?.map(|c| c as f64);
        let (successes, trials) = match metric {
            "accuracy" => (tp + tn, tp + fp + tn + fn_),
            "precision" => (tp, tp + fp),
            "recall" => (tp, tp + fn_),
            "f1" => (tp, tp + (fp + fn_) / 2.0),
            _ => return None,
        };
        (trials > 0.0).then(|| wilson_upper(successes / trials, trials, confidence))
    }
}

/// The Wilson score interval's upper end for proportion `p` of `n` trials, one-sided
/// at `confidence`.
pub fn wilson_upper(p: f64, n: f64, confidence: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    let z = Normal::standard().inverse_cdf(confidence.clamp(0.5, 1.0 - 1e-12));
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z2 / n)).min(1.0)
}

/// A report's `performance` section: windows whose performance settled since the
/// previous report and those still provisional, and the join's running totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceSection {
    /// `binary`, `multiclass` or `regression`.
    pub task: String,
    pub windows: Vec<WindowPerformance>,
    /// Running totals since the state began, by outcome.
    pub counts: BTreeMap<String, u64>,
    /// The model's performance on the reference (from the profile, when it has it):
    /// the baseline of a `performance` condition without a `baseline` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferencePerformance>,
}

/// The reference's performance as a report carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferencePerformance {
    /// Reference rows with a label and a prediction.
    pub rows: u64,
    pub metrics: BTreeMap<String, f64>,
}

#[cfg(test)]
#[path = "performance_tests.rs"]
mod tests;
