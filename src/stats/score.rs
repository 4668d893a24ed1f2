//! Scoring: one window's sketches against the reference, into a [`Report`].

use super::categorical::{CategoricalSketch, OTHER_CATEGORY};
use super::grid;
use super::metrics::{self, BinnedScores};
use super::numeric::NumericSketch;
use super::profile::{CategoricalProfile, FeatureStats, NumericProfile};
use super::reference::{FeatureModel, Reference};
use super::report::{DatasetVerdict, FeatureReport, Report, Status, WindowInfo};
use super::sketch::{FeatureSketch, WindowSketch};
use super::verdict;
use std::collections::BTreeMap;

use super::metrics::WASSERSTEIN_STD_FLOOR;

/// Scores a window; `window.records` is taken from the sketch.
pub fn score_window(reference: &Reference, sketch: &WindowSketch, mut window: WindowInfo) -> Report {
    window.records = sketch.records;
    let settings = &reference.settings;
    let mut features = Vec::with_capacity(reference.features.len());
    // Cramér's V of each categorical feature: chi_square's effect, not a score key.
    let mut cramers_v = Vec::with_capacity(reference.features.len());
    for ((feature, profile), feature_sketch) in
        reference.features.iter().zip(&reference.profile.features).zip(&sketch.features)
    {
        let (samples, non_finite, scores, category_overflow) =
            match (&feature.model, &profile.stats, feature_sketch) {
                (
                    FeatureModel::Numeric { cell_bins, .. },
                    FeatureStats::Numeric(p),
                    FeatureSketch::Numeric(s),
                ) => {
                    cramers_v.push(None);
                    (s.count(), s.non_finite, numeric_scores(p, cell_bins, s), None)
                }
                (
                    FeatureModel::Categorical { .. },
                    FeatureStats::Categorical(p),
                    FeatureSketch::Categorical(s),
                ) => {
                    let (scores, v) = categorical_scores(p, s);
                    cramers_v.push(v);
                    (s.count(), 0, scores, Some(s.overflow))
                }
                _ => {
                    cramers_v.push(None);
                    (0, 0, BTreeMap::new(), None)
                }
            };
        let missing = feature_sketch.missing();
        let missing_share =
            if sketch.records == 0 { 0.0 } else { (missing + non_finite) as f64 / sketch.records as f64 };
        let evaluated = samples >= settings.min_samples && profile.n() > 0 && !scores.is_empty();
        features.push(FeatureReport {
            name: feature.name.clone(),
            kind: feature.kind,
            samples,
            missing,
            non_finite,
            invalid: feature_sketch.invalid(),
            missing_share,
            reference_missing_share: feature.reference_missing_share,
            missing_drifted: sketch.records > 0
                && (missing_share - feature.reference_missing_share).abs() > settings.missing_share_threshold,
            status: if evaluated { Status::Ok } else { Status::InsufficientData },
            primary_metric: feature.primary_metric,
            threshold: feature.threshold,
            drifted: false,
            rule: feature.rule,
            p_value: None,
            effect: None,
            min_effect: None,
            alpha: None,
            decided_by: None,
            sequential: None,
            category_overflow,
            scores,
        });
    }
    let evaluated = features.iter().filter(|f| f.status == Status::Ok).count() as u64;
    let alpha = verdict::corrected_alpha(settings.alpha, settings.multiplicity, evaluated);
    for ((report, feature), &cramers_v) in features.iter_mut().zip(&reference.features).zip(&cramers_v) {
        if report.status != Status::Ok {
            continue;
        }
        let judgement = verdict::judge(feature, &report.scores, cramers_v, report.samples, alpha);
        report.drifted = judgement.drifted;
        report.decided_by = Some(judgement.decided_by);
        if feature.rule != super::settings::Rule::Threshold {
            report.p_value = judgement.p_value;
            report.effect = judgement.effect;
            report.min_effect = Some(feature.min_effect);
            report.alpha = Some(alpha);
            report.threshold = if feature.primary_metric.is_test() { alpha } else { feature.min_effect };
        }
    }
    let drifted = features.iter().filter(|f| f.drifted).count() as u64;
    let drift_share = if evaluated == 0 { 0.0 } else { drifted as f64 / evaluated as f64 };
    Report {
        stream: None,
        window,
        reference: reference.info(),
        dataset: DatasetVerdict {
            features_evaluated: evaluated,
            features_drifted: drifted,
            drift_share,
            threshold: settings.dataset_drift_share,
            drifted: evaluated > 0 && drift_share >= settings.dataset_drift_share,
        },
        features,
        notes: Vec::new(),
        performance: None,
        schema_changes: Vec::new(),
    }
}

fn insert_binned(scores: &mut BTreeMap<String, f64>, b: &BinnedScores) {
    scores.insert("psi".into(), b.psi);
    scores.insert("jensen_shannon".into(), b.jensen_shannon);
    scores.insert("hellinger".into(), b.hellinger);
    scores.insert("kl_divergence".into(), b.kl_divergence);
}

fn numeric_scores(
    profile: &NumericProfile,
    cell_bins: &[u32],
    sketch: &NumericSketch,
) -> BTreeMap<String, f64> {
    let mut scores = BTreeMap::new();
    if profile.n == 0 || sketch.count() == 0 {
        return scores;
    }
    let window_bins = sketch.bin_counts(cell_bins, profile.bin_counts.len());
    insert_binned(&mut scores, &metrics::binned_scores(&profile.bin_counts, &window_bins));
    let d = grid::cdf_distances(&profile.grid_edges, &profile.grid_cells, sketch.cells());
    scores.insert("ks_statistic".into(), d.ks_statistic);
    scores.insert("ks_p_value".into(), metrics::ks_p_value(d.ks_statistic, profile.n, sketch.count()));
    scores.insert("wasserstein".into(), d.wasserstein / profile.std.max(WASSERSTEIN_STD_FLOOR));
    scores
}

/// The categorical scores, and Cramér's V of the same table (`None` when empty).
fn categorical_scores(
    profile: &CategoricalProfile,
    sketch: &CategoricalSketch,
) -> (BTreeMap<String, f64>, Option<f64>) {
    let mut scores = BTreeMap::new();
    let m = sketch.count();
    if profile.n == 0 || m == 0 {
        return (scores, None);
    }
    // One column per category present in either row; `__other__` pools the reference's
    // rare categories and the window's categories past the cap.
    let mut reference_row = Vec::with_capacity(profile.categories.len() + 8);
    let mut window_row = Vec::with_capacity(profile.categories.len() + 8);
    for (category, &count) in profile.categories.iter().zip(sketch.reference_counts()) {
        reference_row.push(category.count);
        window_row.push(count);
    }
    let new_categories = sketch.new_categories();
    let mut new_records = sketch.overflow;
    for &(name, count) in &new_categories {
        if name == OTHER_CATEGORY {
            continue;
        }
        reference_row.push(0);
        window_row.push(count);
        new_records += count;
    }
    let other_window = sketch.overflow
        + new_categories.iter().filter(|(name, _)| *name == OTHER_CATEGORY).map(|&(_, c)| c).sum::<u64>();
    new_records += other_window - sketch.overflow;
    if profile.other > 0 || other_window > 0 {
        reference_row.push(profile.other);
        window_row.push(other_window);
    }
    let (reference_row, window_row): (Vec<u64>, Vec<u64>) =
        reference_row.into_iter().zip(window_row).filter(|&(r, c)| r + c > 0).unzip();
    let binned = metrics::binned_scores(&reference_row, &window_row);
    insert_binned(&mut scores, &binned);
    let (statistic, p_value) = metrics::chi_square_homogeneity(&reference_row, &window_row);
    scores.insert("chi_square_statistic".into(), statistic);
    scores.insert("chi_square_p_value".into(), p_value);

    scores.insert("tvd".into(), binned.tvd);
    scores.insert("new_category_share".into(), new_records as f64 / m as f64);
    scores.insert("new_category_count".into(), new_records as f64);
    let v = verdict::cramers_v(&reference_row, &window_row);
    (scores, Some(v))
}
