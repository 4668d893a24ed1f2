//! Scoring vocabulary shared by every path: feature kinds, metric names, thresholds and
//! the drift settings a profile is built and scored with. Plain data, no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a feature is sketched and scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    Numeric,
    Categorical,
}

impl FeatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Numeric => "numeric",
            FeatureKind::Categorical => "categorical",
        }
    }
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A drift metric that can be a feature's primary metric (see `drift-metrics.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Psi,
    JensenShannon,
    Hellinger,
    KlDivergence,
    Ks,
    Wasserstein,
    ChiSquare,
    Tvd,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Psi,
        Metric::JensenShannon,
        Metric::Hellinger,
        Metric::KlDivergence,
        Metric::Ks,
        Metric::Wasserstein,
        Metric::ChiSquare,
        Metric::Tvd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Psi => "psi",
            Metric::JensenShannon => "jensen_shannon",
            Metric::Hellinger => "hellinger",
            Metric::KlDivergence => "kl_divergence",
            Metric::Ks => "ks",
            Metric::Wasserstein => "wasserstein",
            Metric::ChiSquare => "chi_square",
            Metric::Tvd => "tvd",
        }
    }

    /// Hypothesis tests drift when their p-value falls below the threshold; the
    /// distances drift when the score reaches it.
    pub fn is_test(self) -> bool {
        matches!(self, Metric::Ks | Metric::ChiSquare)
    }

    /// The report's score key whose value decides drift for this metric.
    pub fn decision_key(self) -> &'static str {
        match self {
            Metric::Ks => "ks_p_value",
            Metric::ChiSquare => "chi_square_p_value",
            other => other.as_str(),
        }
    }

    /// The version-2 effect floor: the smallest primary score that matters (for `ks`
    /// its statistic, for `chi_square` Cramér's V).
    pub fn default_min_effect(self) -> f64 {
        0.1
    }

    pub fn default_threshold(self) -> f64 {
        match self {
            Metric::Psi => 0.2,
            Metric::Ks | Metric::ChiSquare => 0.05,
            Metric::JensenShannon
            | Metric::Hellinger
            | Metric::KlDivergence
            | Metric::Wasserstein
            | Metric::Tvd => 0.1,
        }
    }

    pub fn applies_to(self, kind: FeatureKind) -> bool {
        match self {
            Metric::Ks | Metric::Wasserstein => kind == FeatureKind::Numeric,
            Metric::ChiSquare | Metric::Tvd => kind == FeatureKind::Categorical,
            _ => true,
        }
    }

    /// The spec's default rule: small references use the hypothesis test, large ones a
    /// distance (the behaviour of the best-known batch tools).
    pub fn default_for(kind: FeatureKind, reference_n: u64) -> Metric {
        match (kind, reference_n <= 1000) {
            (FeatureKind::Numeric, true) => Metric::Ks,
            (FeatureKind::Numeric, false) => Metric::Wasserstein,
            (FeatureKind::Categorical, true) => Metric::ChiSquare,
            (FeatureKind::Categorical, false) => Metric::JensenShannon,
        }
    }

    /// Whether `value` (the decision key's value) means drift at `threshold`.
    pub fn drifted(self, value: f64, threshold: f64) -> bool {
        if self.is_test() { value < threshold } else { value >= threshold }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a feature's drift verdict is reached (see `drift-metrics.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Version 2, the default: the primary score is significant at this window's and
    /// the reference's sizes (after the correction across features) and at least the
    /// feature's effect floor `min_effect`.
    #[default]
    SignificantEffect,
    /// Version 1: a fixed threshold on the score, or p below it for the tests.
    Threshold,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SignificantEffect => "significant_effect",
            Rule::Threshold => "threshold",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The correction for testing several features in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Multiplicity {
    /// Each feature is tested at `alpha / d`, d the features evaluated.
    #[default]
    Bonferroni,
    /// Each feature is tested at `alpha`.
    None,
}

/// Settings that apply to every feature unless a field overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftSettings {
    /// Bins for the binned metrics (psi, jensen_shannon, hellinger, kl_divergence).
    pub bins: usize,
    /// Cells of the reference-quantile grid that sketches a numeric CDF for ks and
    /// wasserstein. A reference with at most this many distinct values is kept exactly.
    pub cdf_resolution: usize,
    /// Distinct categories tracked exactly per window; the rest go to `__other__`.
    pub max_categories: usize,
    /// Finite values a feature needs in a window to be evaluated.
    pub min_samples: u64,
    /// Absolute change of the missing share that counts as missing-value drift.
    pub missing_share_threshold: f64,
    /// Share of drifted features at which the dataset counts as drifted.
    pub dataset_drift_share: f64,
    /// How verdicts are reached; a field's `rule` overrides it.
    pub rule: Rule,
    /// Version-2 significance level per window, before the correction across features.
    pub alpha: f64,
    /// The correction across the features of a window.
    pub multiplicity: Multiplicity,
    /// The sequential detectors' false-alarm level: under no change, the average number
    /// of windows before a feature's detector false-alarms is at least `1 / alpha_sequential`.
    pub alpha_sequential: f64,
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings {
            bins: 10,
            cdf_resolution: 1024,
            max_categories: 1000,
            min_samples: 100,
            missing_share_threshold: 0.05,
            dataset_drift_share: 0.5,
            rule: Rule::default(),
            alpha: 0.01,
            multiplicity: Multiplicity::default(),
            alpha_sequential: 0.001,
        }
    }
}

/// Per-feature choices a user can make in config; unset fields fall back to the
/// settings and the spec's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureOverride {
    pub kind: Option<FeatureKind>,
    pub primary_metric: Option<Metric>,
    pub threshold: Option<f64>,
    pub bins: Option<usize>,
    /// Version-2 effect floor (for a distance, a `threshold` set without it is used).
    pub min_effect: Option<f64>,
    pub rule: Option<Rule>,
}
