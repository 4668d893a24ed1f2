//! Estimated performance before labels (binary tasks): confidence-based performance
//! estimation. With a calibration fitted on the reference ([`super::isotonic`]), each
//! prediction's calibrated probability `p` is the chance that it is positive, so at a
//! decision threshold `t` a prediction with score `>= t` adds `p` to the expected true
//! positives and `1 - p` to the expected false positives, and one below `t` adds `p` to
//! the expected false negatives and `1 - p` to the expected true negatives. Accuracy,
//! precision, recall and F1 of that expected confusion matrix are the estimate.
//!
//! The accumulator is four sums and a count: mergeable by adding, and adding a row
//! allocates nothing.
//!
//! The assumption: the calibration found on the reference still holds, i.e.
//! `P(label | score)` has not changed. That survives covariate shift (the inputs, and so
//! the scores, move; the estimate follows them) but not concept shift (the same score
//! now means another chance of being positive): a concept shift is invisible to the
//! estimate and shows only in the realized figures once labels come.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The expected confusion matrix of a window's predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimateSketch {
    /// Predictions added.
    pub predictions: u64,
    pub tp: f64,
    pub fp: f64,
    pub tn: f64,
    pub fn_: f64,
}

impl EstimateSketch {
    /// Adds a prediction with calibrated probability `p` (in [0, 1]) that was a
    /// positive prediction (`score >= threshold`) or not.
    #[inline]
    pub fn add(&mut self, p: f64, predicted_positive: bool) {
        self.predictions += 1;
        if predicted_positive {
            self.tp += p;
            self.fp += 1.0 - p;
        } else {
            self.fn_ += p;
            self.tn += 1.0 - p;
        }
    }

    pub fn merge(&mut self, other: &EstimateSketch) {
        self.predictions += other.predictions;
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
    }

    /// Estimated `accuracy`, `precision`, `recall` and `f1`; a metric whose expected
    /// denominator is 0 is absent, as for the realized figures.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if self.predictions == 0 {
            return out;
        }
        let (tp, fp, tn, fn_) = (self.tp, self.fp, self.tn, self.fn_);
        out.insert("accuracy".into(), (tp + tn) / self.predictions as f64);
        if tp + fp > 0.0 {
            out.insert("precision".into(), tp / (tp + fp));
        }
        if tp + fn_ > 0.0 {
            out.insert("recall".into(), tp / (tp + fn_));
        }
        if 2.0 * tp + fp + fn_ > 0.0 {
            out.insert("f1".into(), 2.0 * tp / (2.0 * tp + fp + fn_));
        }
        out
    }

    /// The report's view.
    pub fn view(&self) -> EstimatedPerformance {
        EstimatedPerformance {
            predictions: self.predictions,
            metrics: self.metrics(),
            expected_confusion: [self.tp, self.fp, self.tn, self.fn_],
        }
    }
}

/// A window's `estimated` performance, beside its realized `metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimatedPerformance {
    /// Predictions the estimate covers: every prediction of the window, labelled or not.
    pub predictions: u64,
    /// `accuracy`, `precision`, `recall`, `f1`.
    pub metrics: BTreeMap<String, f64>,
    /// Expected `[tp, fp, tn, fn]`.
    pub expected_confusion: [f64; 4],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::isotonic::Calibration;
    use crate::stats::performance::BinarySketch;

    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Rows whose label is positive with probability `truth(score)`, scores drawn by `draw`.
    fn stream(
        rng: &mut Rng,
        n: usize,
        draw: impl Fn(f64) -> f64,
        truth: impl Fn(f64) -> f64,
    ) -> Vec<(f64, bool)> {
        (0..n)
            .map(|_| {
                let s = draw(rng.unit()).clamp(0.0, 1.0);
                (s, rng.unit() < truth(s))
            })
            .collect()
    }

    fn realized(rows: &[(f64, bool)], t: f64) -> BTreeMap<String, f64> {
        let mut b = BinarySketch::new(t);
        for &(s, l) in rows {
            b.add(s, l).expect("valid");
        }
        crate::stats::performance::PerformanceSketch::Binary(b).metrics()
    }

    fn estimated(c: &Calibration, rows: &[(f64, bool)], t: f64) -> EstimateSketch {
        let mut e = EstimateSketch::default();
        for &(s, _) in rows {
            e.add(c.apply(s), s >= t);
        }
        e
    }

    /// The model's scores are miscalibrated (`P(y | s) = 0.8 s + 0.1`); the isotonic
    /// calibration fitted on a reference of the same law recovers it.
    fn truth(s: f64) -> f64 {
        0.8 * s + 0.1
    }

    /// Tolerance: with 20,000 rows the realized accuracy's own sampling deviation is
    /// about sqrt(0.25 / 20,000) = 0.0035 (0.005 for precision and recall on about half
    /// the rows); 0.02 is four of them plus the calibration's error.
    const TOLERANCE: f64 = 0.02;

    #[test]
    fn on_a_calibrated_stream_the_estimate_is_the_realized_performance() {
        let mut rng = Rng(0xcbbe);
        let mut reference = stream(&mut rng, 50_000, |u| u, truth);
        let c = Calibration::fit(&mut reference).expect("fit");
        let current = stream(&mut rng, 20_000, |u| u, truth);
        let (est, real) = (estimated(&c, &current, 0.5).metrics(), realized(&current, 0.5));
        for metric in ["accuracy", "precision", "recall", "f1"] {
            let (e, r) = (est[metric], real[metric]);
            assert!((e - r).abs() < TOLERANCE, "{metric}: estimated {e}, realized {r}");
        }
    }

    #[test]
    fn under_covariate_shift_the_estimate_tracks_the_realized_drop() {
        let mut rng = Rng(0x5b1f7);
        let mut reference = stream(&mut rng, 50_000, |u| u, truth);
        let c = Calibration::fit(&mut reference).expect("fit");
        let before = stream(&mut rng, 20_000, |u| u, truth);
        // Scores crowd around the threshold, where the model is least sure: the same
        // law P(y | s), so the calibration holds, but accuracy falls.
        let after = stream(&mut rng, 20_000, |u| 0.35 + 0.3 * u, truth);
        let t = 0.5;
        let (eb, rb) = (estimated(&c, &before, t).metrics(), realized(&before, t));
        let (ea, ra) = (estimated(&c, &after, t).metrics(), realized(&after, t));
        let real_drop = rb["accuracy"] - ra["accuracy"];
        let est_drop = eb["accuracy"] - ea["accuracy"];
        assert!(real_drop > 0.1, "the shift costs accuracy: {real_drop}");
        assert!((est_drop - real_drop).abs() < TOLERANCE, "estimated drop {est_drop}, realized {real_drop}");
        for metric in ["accuracy", "precision", "recall", "f1"] {
            let (e, r) = (ea[metric], ra[metric]);
            assert!((e - r).abs() < TOLERANCE, "after the shift, {metric}: estimated {e}, realized {r}");
        }
    }

    #[test]
    fn a_concept_shift_is_invisible_to_the_estimate() {
        let mut rng = Rng(0xc0);
        let mut reference = stream(&mut rng, 50_000, |u| u, truth);
        let c = Calibration::fit(&mut reference).expect("fit");
        // Same scores, but labels no longer follow them.
        let after = stream(&mut rng, 20_000, |u| u, |_| 0.5);
        let (e, r) = (estimated(&c, &after, 0.5).metrics(), realized(&after, 0.5));
        assert!(
            e["accuracy"] - r["accuracy"] > 0.15,
            "estimated {}, realized {}",
            e["accuracy"],
            r["accuracy"]
        );
    }

    #[test]
    fn merged_parts_equal_the_whole() {
        let mut rng = Rng(3);
        let rows: Vec<(f64, bool)> = (0..1000).map(|_| (rng.unit(), false)).collect();
        let mut whole = EstimateSketch::default();
        let mut parts = [EstimateSketch::default(), EstimateSketch::default()];
        for (i, &(p, _)) in rows.iter().enumerate() {
            whole.add(p, p >= 0.3);
            parts[i % 2].add(p, p >= 0.3);
        }
        let [mut a, b] = parts;
        a.merge(&b);
        assert_eq!(a.predictions, whole.predictions);
        for (x, y) in a.view().expected_confusion.iter().zip(whole.view().expected_confusion) {
            assert!((x - y).abs() < 1e-9);
        }
        assert!(EstimateSketch::default().metrics().is_empty());
        // Expected counts add up to the predictions.
        let sum: f64 = whole.view().expected_confusion.iter().sum();
        assert!((sum - 1000.0).abs() < 1e-9);
    }
}
