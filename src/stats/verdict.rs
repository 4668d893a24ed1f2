//! Verdicts: whether a feature drifted in a window, by version 2 of `drift-metrics.md`
//! (significant at this window's and the reference's sizes, after the correction across
//! features, **and** at least the effect floor) or by version 1 (a fixed threshold).

use super::reference::ScoredFeature;
pub use super::report::DecidedBy;
use super::settings::{Metric, Multiplicity, Rule};
use std::collections::BTreeMap;

/// One feature's verdict in one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub drifted: bool,
    /// The primary score's p-value against its null (version 2 only).
    pub p_value: Option<f64>,
    /// The primary score, or Cramér's V for chi_square (version 2 only).
    pub effect: Option<f64>,
    pub decided_by: DecidedBy,
}

/// The per-feature level: `alpha / d` with Bonferroni over the `evaluated` features.
pub fn corrected_alpha(alpha: f64, multiplicity: Multiplicity, evaluated: u64) -> f64 {
    match multiplicity {
        Multiplicity::Bonferroni => alpha / evaluated.max(1) as f64,
        Multiplicity::None => alpha,
    }
}

/// The name of `metric`'s effect: its score key, `ks_statistic` for ks, and
/// `cramers_v` for chi_square (not a score key: the report's `effect`).
pub fn effect_key(metric: Metric) -> &'static str {
    match metric {
        Metric::Ks => "ks_statistic",
        Metric::ChiSquare => "cramers_v",
        other => other.as_str(),
    }
}

/// The verdict on an evaluated feature with `samples` values in the window, tested at
/// the corrected level `alpha`; `cramers_v` is chi_square's effect (categorical only).
pub fn judge(
    feature: &ScoredFeature,
    scores: &BTreeMap<String, f64>,
    cramers_v: Option<f64>,
    samples: u64,
    alpha: f64,
) -> Judgement {
    let metric = feature.primary_metric;
    if feature.rule == Rule::Threshold {
        let drifted =
            scores.get(metric.decision_key()).is_some_and(|&v| metric.drifted(v, feature.threshold));
        return Judgement { drifted, p_value: None, effect: None, decided_by: DecidedBy::Threshold };
    }
    let effect = match metric {
        Metric::ChiSquare => cramers_v,
        _ => scores.get(effect_key(metric)).copied(),
    }
    .filter(|v| v.is_finite());
    let p_value = match metric {
        Metric::Ks | Metric::ChiSquare => scores.get(metric.decision_key()).copied(),
        _ => match (&feature.null, scores.get(metric.as_str())) {
            (Some(null), Some(&score)) if score.is_finite() => Some(null.p_value(samples, score)),
            _ => None,
        },
    };
    let significant = p_value.is_some_and(|p| p < alpha);
    let large = effect.is_some_and(|e| e >= feature.min_effect);
    let decided_by = match (significant, large) {
        (true, true) => DecidedBy::Both,
        (true, false) => DecidedBy::Significance,
        (false, true) => DecidedBy::Effect,
        (false, false) => DecidedBy::Neither,
    };
    Judgement { drifted: significant && large, p_value, effect, decided_by }
}

/// Cramér's V of the 2 x k table of the two rows' *shares* (both rows scaled to the
/// same total): `sqrt(0.5 * sum (p - q)^2 / (p + q))`, 0 for identical shares, 1 for
/// disjoint ones. Computed on shares rather than counts so that the effect floor
/// measures the shift and not the ratio of the two sample sizes: on raw counts a
/// 1,000-row reference against 100,000-record windows caps V near 0.1 whatever moved.
/// Equal to the textbook V when the two rows have equal totals.
pub fn cramers_v(reference: &[u64], window: &[u64]) -> f64 {
    let n: u64 = reference.iter().sum();
    let m: u64 = window.iter().sum();
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (n, m) = (n as f64, m as f64);
    let mut sum = 0.0;
    for (&r, &c) in reference.iter().zip(window) {
        let (p, q) = (r as f64 / n, c as f64 / m);
        if p + q > 0.0 {
            sum += (p - q) * (p - q) / (p + q);
        }
    }
    (0.5 * sum).max(0.0).sqrt().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cramers_v_bounds_and_equal_rows() {
        assert_eq!(cramers_v(&[10, 20], &[10, 20]), 0.0);
        assert!((cramers_v(&[10, 0], &[0, 30]) - 1.0).abs() < 1e-12);
        // Equal totals: the textbook V = sqrt(X2 / N).
        let (x2, _) = crate::stats::metrics::chi_square_homogeneity(&[30, 70], &[50, 50]);
        assert!((cramers_v(&[30, 70], &[50, 50]) - (x2 / 200.0).sqrt()).abs() < 1e-12);
        // Unequal totals with the same shares give the same V.
        assert!((cramers_v(&[300, 700], &[5, 5]) - cramers_v(&[30, 70], &[50, 50])).abs() < 1e-12);
    }

    #[test]
    fn bonferroni_divides_by_the_evaluated_features() {
        assert_eq!(corrected_alpha(0.01, Multiplicity::Bonferroni, 10), 0.001);
        assert_eq!(corrected_alpha(0.01, Multiplicity::Bonferroni, 0), 0.01);
        assert_eq!(corrected_alpha(0.01, Multiplicity::None, 10), 0.01);
    }
}
