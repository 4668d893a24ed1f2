//! Isotonic calibration of a binary model's score: the non-decreasing map from score to
//! the probability of the positive class that fits the reference's labels best in
//! squared error (pool-adjacent-violators), kept as a bounded lookup table of at most
//! [`MAX_BREAKPOINTS`] points and read by linear interpolation.
//!
//! The fit is scikit-learn's `IsotonicRegression(out_of_bounds="clip")`: rows sorted by
//! score, rows of equal score pooled into their mean label (weighted by their count),
//! pool-adjacent-violators over those (adjacent blocks with equal or decreasing means
//! pooled), then only the first and last point of each constant run kept; a score is
//! clipped to the fitted range and interpolated linearly between the two breakpoints
//! around it. (scikit-learn also pools scores closer than 1e-15 apart; here only equal
//! scores are pooled, which differs only for such near-ties.)
//!
//! Written here rather than taken from a crate: `pav_regression` is LGPL-3.0 and
//! interpolates between block centroids (not scikit-learn's fit); `linfa-linear` has
//! one but brings the linfa framework and ndarray for about sixty lines of arithmetic.
//!
//! The bound: a fit over a large reference can have thousands of breakpoints. When it
//! has more than [`MAX_BREAKPOINTS`], a subset is kept (the first and last always) so
//! that between two kept points the fit rises by at most a tolerance `eps`, the
//! smallest that fits the budget (found by bisection). The fit is non-decreasing, so
//! the interpolation between two kept points and the fit itself both stay between
//! their values: the table is within `eps` of the exact fit everywhere. The largest
//! actual distance (at the fit's own breakpoints, where two piecewise-linear functions
//! differ most) is stored as [`Calibration::max_error`], 0 when nothing was dropped.

use serde::{Deserialize, Serialize};

/// Breakpoints a calibration table keeps at most.
pub const MAX_BREAKPOINTS: usize = 256;

/// A fitted calibration: breakpoints `x` (scores, strictly increasing) and `y`
/// (calibrated probabilities, non-decreasing), read by linear interpolation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    /// Rows the fit was made from.
    pub rows: u64,
    /// Largest distance between this table and the exact fit over the fitted range
    /// (0 when the table is the exact fit).
    pub max_error: f64,
}

/// Why a stored table cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalibrationError {
    #[error("the calibration table is empty or its `x` and `y` differ in length")]
    Shape,
    #[error("the calibration table has more than {MAX_BREAKPOINTS} breakpoints")]
    TooLarge,
    #[error("calibration scores must be finite and strictly increasing")]
    Unsorted,
    #[error("calibrated probabilities must be in [0, 1] and non-decreasing")]
    NotMonotone,
    #[error("the calibration's max_error must be a finite number, at least 0")]
    MaxError,
}

impl Calibration {
    /// Fits the calibration of `rows` (score, label); `None` without rows. Scores must
    /// be finite (the caller drops the others). Sorts `rows` in place.
    pub fn fit(rows: &mut [(f64, bool)]) -> Option<Calibration> {
        if rows.is_empty() {
            return None;
        }
        rows.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let (x, y) = exact_fit(rows);
        let (x, y, max_error) = compress(x, y, MAX_BREAKPOINTS);
        Some(Calibration { x, y, rows: rows.len() as u64, max_error })
    }

    /// The calibrated probability of `score`: clipped to the fitted range, linear
    /// between breakpoints. No allocation. A table must have a breakpoint (a fitted or
    /// validated one has); a NaN score (callers refuse them) reads as the lowest.
    pub fn apply(&self, score: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        let last = x.len() - 1;
        if score.is_nan() || score <= x[0] {
            return y[0];
        }
        if score >= x[last] {
            return y[last];
        }
        // x[i - 1] <= score < x[i], with 1 <= i <= last.
        let i = x.partition_point(|&v| v <= score);
        let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
        let v = y0 + (score - x0) * ((y1 - y0) / (x1 - x0));
        // Breakpoints near f64's ends overflow the differences: stay between the two.
        if v.is_nan() { y0 } else { v.clamp(y0, y1) }
    }

    /// Checks a table read from a profile.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        if self.x.is_empty() || self.x.len() != self.y.len() {
            return Err(CalibrationError::Shape);
        }
        if self.x.len() > MAX_BREAKPOINTS {
            return Err(CalibrationError::TooLarge);
        }
        if !self.x.iter().all(|v| v.is_finite()) || !self.x.windows(2).all(|w| w[0] < w[1]) {
            return Err(CalibrationError::Unsorted);
        }
        if !self.y.iter().all(|v| (0.0..=1.0).contains(v)) || !self.y.windows(2).all(|w| w[0] <= w[1]) {
            return Err(CalibrationError::NotMonotone);
        }
        if !(self.max_error.is_finite() && self.max_error >= 0.0) {
            return Err(CalibrationError::MaxError);
        }
        Ok(())
    }
}

/// scikit-learn's fit on rows sorted by score: its `X_thresholds_` and `y_thresholds_`.
fn exact_fit(sorted: &[(f64, bool)]) -> (Vec<f64>, Vec<f64>) {
    // Equal scores pooled: (score, mean label, weight).
    let mut unique: Vec<(f64, f64, f64)> = Vec::new();
    for &(s, label) in sorted {
        let l = f64::from(u8::from(label));
        match unique.last_mut() {
            Some((x, sum, w)) if *x == s => {
                *sum += l;
                *w += 1.0;
            }
            _ => unique.push((s, l, 1.0)),
        }
    }
    for u in &mut unique {
        u.1 /= u.2;
    }
    // Pool adjacent violators: blocks of (mean, weight, points); a block whose mean is
    // not above its predecessor's is pooled into it (scikit-learn pools equal means too).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for &(_, mean, w) in &unique {
        let mut block = (mean, w, 1usize);
        while let Some(&(prev_mean, prev_w, prev_n)) = blocks.last() {
            if prev_mean < block.0 {
                break;
            }
            blocks.pop();
            let weight = prev_w + block.1;
            block = ((prev_mean * prev_w + block.0 * block.1) / weight, weight, prev_n + block.2);
        }
        blocks.push(block);
    }
    let fitted: Vec<f64> = blocks.iter().flat_map(|&(mean, _, n)| std::iter::repeat_n(mean, n)).collect();
    // Keep the first and last point, and every point whose value differs from one of
    // its neighbours (the ends of each constant run).
    let n = unique.len();
    let keep = |i: usize| i == 0 || i + 1 == n || fitted[i - 1] != fitted[i] || fitted[i + 1] != fitted[i];
    let x = (0..n).filter(|&i| keep(i)).map(|i| unique[i].0).collect();
    let y = (0..n).filter(|&i| keep(i)).map(|i| fitted[i]).collect();
    (x, y)
}

/// Indices of the points kept at tolerance `eps`: from each kept point, the farthest
/// point such that the fit rises by at most `eps` up to it (at least the next point).
fn kept(y: &[f64], eps: f64, out: &mut Vec<usize>) {
    out.clear();
    let n = y.len();
    let mut anchor = 0;
    out.push(0);
    while anchor + 1 < n {
        let mut j = anchor + 1;
        while j + 1 < n && y[j + 1] - y[anchor] <= eps {
            j += 1;
        }
        out.push(j);
        anchor = j;
    }
}

/// At most `budget` of the breakpoints (see the module doc), and the table's largest
/// distance from the exact fit.
fn compress(x: Vec<f64>, y: Vec<f64>, budget: usize) -> (Vec<f64>, Vec<f64>, f64) {
    if x.len() <= budget {
        return (x, y, 0.0);
    }
    let range = y[y.len() - 1] - y[0];
    let mut keep = Vec::with_capacity(budget);
    // At eps = range only the first, the last and at most one point between are kept.
    let (mut low, mut high) = (0.0, range);
    for _ in 0..60 {
        let mid = 0.5 * (low + high);
        kept(&y, mid, &mut keep);
        if keep.len() <= budget {
            high = mid;
        } else {
            low = mid;
        }
    }
    kept(&y, high, &mut keep);
    let kx: Vec<f64> = keep.iter().map(|&i| x[i]).collect();
    let ky: Vec<f64> = keep.iter().map(|&i| y[i]).collect();
    let table = Calibration { x: kx, y: ky, rows: 0, max_error: 0.0 };
    let max_error = x.iter().zip(&y).map(|(&xi, &yi)| (table.apply(xi) - yi).abs()).fold(0.0, f64::max);
    (table.x, table.y, max_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(scores: &[f64], labels: &[u8]) -> Vec<(f64, bool)> {
        scores.iter().zip(labels).map(|(&s, &l)| (s, l == 1)).collect()
    }

    /// scikit-learn's `IsotonicRegression(out_of_bounds="clip")` on a small example,
    /// derived by hand (no scikit-learn on this machine to run it):
    ///
    /// x = [0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], y = [0, 1, 0, 0, 1, 0, 1, 1, 1].
    /// Equal scores pooled: 0.2 -> 0.5 (weight 2). Violators: 0.5 (w 2) then 0 at 0.3
    /// pool to 1/3 (w 3); 1 at 0.4 then 0 at 0.5 pool to 1/2 (w 2); 1, 1, 1 at 0.6 to
    /// 0.8 pool (equal means) to 1. Fit: 0, 1/3, 1/3, 1/2, 1/2, 1, 1, 1. Kept: every
    /// point but 0.7 (equal to both neighbours). Predictions: 0.05 clips to 0; 0.25 ->
    /// 1/3; 0.35 -> 1/3 + (1/2 - 1/3) / 2 = 5/12; 0.55 -> 1/2 + (1 - 1/2) / 2 = 3/4;
    /// 0.75 -> 1; 0.9 clips to 1.
    #[test]
    fn the_fit_is_scikit_learns_on_a_worked_example() {
        let mut r = rows(&[0.3, 0.1, 0.2, 0.2, 0.4, 0.5, 0.8, 0.6, 0.7], &[0, 0, 1, 0, 1, 0, 1, 1, 1]);
        let c = Calibration::fit(&mut r).expect("fit");
        assert_eq!(c.x, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]);
        let want_y = [0.0, 1.0 / 3.0, 1.0 / 3.0, 0.5, 0.5, 1.0, 1.0];
        for (got, want) in c.y.iter().zip(want_y) {
            assert!((got - want).abs() < 1e-15, "{:?}", c.y);
        }
        assert_eq!((c.rows, c.max_error), (9, 0.0));
        for (score, want) in [
            (0.05, 0.0),
            (0.1, 0.0),
            (0.25, 1.0 / 3.0),
            (0.35, 5.0 / 12.0),
            (0.55, 0.75),
            (0.75, 1.0),
            (0.9, 1.0),
        ] {
            assert!((c.apply(score) - want).abs() < 1e-12, "{score}: {}", c.apply(score));
        }
        c.validate().expect("valid");
    }

    /// The isotonic regression by its min-max formula (an independent oracle):
    /// `fit_i = max_{j <= i} min_{k >= i} mean(y_j..=y_k)` over the distinct scores,
    /// each weighted by its rows.
    fn min_max(sorted: &[(f64, bool)]) -> Vec<(f64, f64)> {
        let mut u: Vec<(f64, f64, f64)> = Vec::new();
        for &(s, l) in sorted {
            match u.last_mut() {
                Some((x, sum, w)) if *x == s => {
                    *sum += f64::from(u8::from(l));
                    *w += 1.0;
                }
                _ => u.push((s, f64::from(u8::from(l)), 1.0)),
            }
        }
        let n = u.len();
        (0..n)
            .map(|i| {
                let best = (0..=i)
                    .map(|j| {
                        (i..n)
                            .map(|k| {
                                let (s, w) = u[j..=k].iter().fold((0.0, 0.0), |a, p| (a.0 + p.1, a.1 + p.2));
                                s / w
                            })
                            .fold(f64::INFINITY, f64::min)
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                (u[i].0, best)
            })
            .collect()
    }

    struct Rng(u64);
    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn the_fit_equals_the_min_max_formula_at_every_score() {
        let mut rng = Rng(0x150);
        for case in 0..20 {
            // Scores on a coarse grid so that ties occur; labels follow the score.
            let mut r: Vec<(f64, bool)> = (0..60 + case * 7)
                .map(|_| {
                    let s = (rng.unit() * 40.0).floor() / 40.0;
                    (s, rng.unit() < s)
                })
                .collect();
            let want = min_max(&{
                let mut s = r.clone();
                s.sort_by(|a, b| a.0.total_cmp(&b.0));
                s
            });
            let c = Calibration::fit(&mut r).expect("fit");
            assert!(c.x.len() <= want.len());
            for (score, value) in want {
                assert!((c.apply(score) - value).abs() < 1e-12, "case {case} at {score}");
            }
        }
    }

    #[test]
    fn a_large_fit_is_cut_to_the_budget_within_its_stated_error() {
        let mut rng = Rng(7);
        let mut r: Vec<(f64, bool)> = (0..200_000)
            .map(|_| {
                let s = rng.unit();
                (s, rng.unit() < s * s)
            })
            .collect();
        let mut sorted = r.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ex, ey) = exact_fit(&sorted);
        assert!(ex.len() > MAX_BREAKPOINTS, "the exact fit has {} points", ex.len());
        let c = Calibration::fit(&mut r).expect("fit");
        c.validate().expect("valid");
        assert!(c.x.len() <= MAX_BREAKPOINTS);
        assert_eq!((c.x[0], c.x[c.x.len() - 1]), (ex[0], ex[ex.len() - 1]));
        let worst = ex.iter().zip(&ey).map(|(&x, &y)| (c.apply(x) - y).abs()).fold(0.0, f64::max);
        assert_eq!(worst, c.max_error);
        eprintln!("{} exact breakpoints cut to {}: max_error {:.5}", ex.len(), c.x.len(), c.max_error);
        // The budget of 256 on a fit rising from about 0 to 1 allows a rise of 2/254 per
        // two kept points; in practice it is much closer.
        assert!(c.max_error > 0.0 && c.max_error < 0.01, "{}", c.max_error);
        // And it still calibrates: the mean calibrated probability is the positive share.
        let positives = r.iter().filter(|(_, l)| *l).count() as f64 / r.len() as f64;
        let mean = r.iter().map(|(s, _)| c.apply(*s)).sum::<f64>() / r.len() as f64;
        assert!((mean - positives).abs() < 0.002, "{mean} vs {positives}");
    }

    #[test]
    fn a_fit_of_many_distinct_levels_is_cut_within_the_bound() {
        // 10,000 breakpoints of a strictly rising fit: the cut keeps 256, and the
        // rule (a rise of at most eps between kept points) bounds the error by
        // eps <= 2 * range / (256 - 2).
        let x: Vec<f64> = (0..10_000).map(|i| f64::from(i) / 10_000.0).collect();
        let y: Vec<f64> = x.iter().map(|v| v * v).collect();
        let (kx, ky, max_error) = compress(x.clone(), y.clone(), MAX_BREAKPOINTS);
        assert!(kx.len() <= MAX_BREAKPOINTS && kx.len() > MAX_BREAKPOINTS - 10, "{}", kx.len());
        let table = Calibration { x: kx, y: ky, rows: 0, max_error };
        table.validate().expect("valid");
        let worst = x.iter().zip(&y).map(|(&a, &b)| (table.apply(a) - b).abs()).fold(0.0, f64::max);
        assert_eq!(worst, max_error);
        assert!(max_error <= 2.0 * y[y.len() - 1] / 254.0, "{max_error}");
        eprintln!("10000 breakpoints of y = x^2 cut to {}: max_error {max_error:.6}", table.x.len());
    }

    #[test]
    fn degenerate_inputs_give_a_usable_table() {
        assert!(Calibration::fit(&mut []).is_none());
        let c = Calibration::fit(&mut rows(&[0.4, 0.4], &[1, 0])).expect("fit");
        assert_eq!((c.x.clone(), c.y.clone()), (vec![0.4], vec![0.5]));
        assert_eq!((c.apply(0.0), c.apply(1.0), c.apply(f64::NAN)), (0.5, 0.5, 0.5));
        let wide = Calibration { x: vec![-f64::MAX, f64::MAX], y: vec![0.25, 0.75], rows: 2, max_error: 0.0 };
        for s in [-f64::MAX / 2.0, 0.0, f64::MAX / 2.0] {
            assert!((0.25..=0.75).contains(&wide.apply(s)), "{s}: {}", wide.apply(s));
        }
        let bad = Calibration { x: vec![0.2, 0.1], y: vec![0.0, 1.0], rows: 2, max_error: 0.0 };
        assert_eq!(bad.validate(), Err(CalibrationError::Unsorted));
        let bad = Calibration { x: vec![0.1, 0.2], y: vec![0.6, 0.5], rows: 2, max_error: 0.0 };
        assert_eq!(bad.validate(), Err(CalibrationError::NotMonotone));
    }
}
