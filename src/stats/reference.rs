//! A profile made ready for scoring: per-feature primary metric and threshold resolved
//! from the settings, overrides and the spec's defaults, and the shared grids and
//! category indexes that window sketches are built on.

use super::categorical::{CategoricalSketch, CategoryIndex};
use super::grid;
use super::null::{self, NullModel};
use super::numeric::{NumericGrid, NumericSketch};
use super::profile::{FeatureStats, Profile};
use super::report::ReferenceInfo;
use super::settings::{DriftSettings, FeatureKind, FeatureOverride, Metric, Rule};
use super::sketch::{FeatureSketch, FeatureSketchState, WindowSketch, WindowSketchState};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A setting that does not fit the reference; `key` is the offending config key.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("feature `{feature}`: `{key}`: {message}")]
pub struct OverrideError {
    pub feature: String,
    pub key: &'static str,
    pub message: String,
}

/// How one feature is scored.
#[derive(Debug)]
pub struct ScoredFeature {
    pub name: String,
    pub kind: FeatureKind,
    pub primary_metric: Metric,
    /// The version-1 threshold (on the score, or on the p-value for the tests).
    pub threshold: f64,
    /// How the verdict is reached.
    pub rule: Rule,
    /// The version-2 effect floor on the primary score (Cramér's V for chi_square).
    pub min_effect: f64,
    /// The primary score's bootstrap null, for the version-2 distances.
    pub null: Option<NullModel>,
    pub reference_missing_share: f64,
    pub model: FeatureModel,
}

#[derive(Debug)]
pub enum FeatureModel {
    Numeric { grid: Arc<NumericGrid>, cell_bins: Vec<u32> },
    Categorical { index: Arc<CategoryIndex> },
}

/// The reference a window is scored against.
#[derive(Debug)]
pub struct Reference {
    pub profile: Profile,
    pub settings: DriftSettings,
    pub features: Vec<ScoredFeature>,
}

impl Reference {
    /// Resolves every feature's scoring choices; overrides must name profile features
    /// and agree with how the profile was built.
    pub fn new(
        profile: Profile,
        settings: DriftSettings,
        overrides: &BTreeMap<String, FeatureOverride>,
    ) -> Result<Reference, OverrideError> {
        for name in overrides.keys() {
            if profile.feature(name).is_none() {
                return Err(OverrideError {
                    feature: name.clone(),
                    key: "name",
                    message: "no such feature in the reference".into(),
                });
            }
        }
        let mut features = Vec::with_capacity(profile.features.len());
        let draws = null::DRAWS;
        for (position, f) in profile.features.iter().enumerate() {
            let over = overrides.get(&f.name).cloned().unwrap_or_default();
            let err = |key, message: String| OverrideError { feature: f.name.clone(), key, message };
            let kind = f.kind();
            if let Some(k) = over.kind
                && k != kind
            {
                return Err(err(
                    "kind",
                    format!("is {k} but the reference profile holds it as {kind}; rebuild the profile"),
                ));
            }
            let primary_metric = over.primary_metric.unwrap_or_else(|| Metric::default_for(kind, f.n()));
            if !primary_metric.applies_to(kind) {
                return Err(err(
                    "primary_metric",
                    format!("`{primary_metric}` does not apply to a {kind} feature"),
                ));
            }
            let threshold = over.threshold.unwrap_or_else(|| primary_metric.default_threshold());
            if !threshold.is_finite() || threshold < 0.0 {
                return Err(err("threshold", format!("must be a finite number >= 0, got {threshold}")));
            }
            let rule = over.rule.unwrap_or(settings.rule);
            // A user's threshold on a distance is its effect floor (the spec's rule).
            let min_effect = over
                .min_effect
                .or(if primary_metric.is_test() { None } else { over.threshold })
                .unwrap_or_else(|| primary_metric.default_min_effect());
            if !min_effect.is_finite() || min_effect < 0.0 {
                return Err(err("min_effect", format!("must be a finite number >= 0, got {min_effect}")));
            }
            let seed = 0x5eed_0000 ^ position as u64;
            let null = match (rule, primary_metric, &f.stats) {
                (Rule::Threshold, ..) | (_, Metric::Ks | Metric::ChiSquare, _) => None,
                (_, Metric::Wasserstein, FeatureStats::Numeric(p)) => Some(NullModel::wasserstein(
                    &grid::support(&p.grid_edges, &p.grid_cells),
                    p.std.max(super::metrics::WASSERSTEIN_STD_FLOOR),
                    draws,
                    seed,
                )),
                (_, metric, FeatureStats::Numeric(p)) => {
                    Some(NullModel::binned(metric, &p.bin_counts, draws, seed))
                }
                (_, metric, FeatureStats::Categorical(p)) => {
                    let mut counts: Vec<u64> = p.categories.iter().map(|c| c.count).collect();
                    counts.push(p.other);
                    Some(NullModel::binned(metric, &counts, draws, seed))
                }
            };
            let model = match &f.stats {
                FeatureStats::Numeric(p) => {
                    if let Some(bins) = over.bins
                        && bins != p.bins
                    {
                        return Err(err(
                            "bins",
                            format!(
                                "is {bins} but the reference profile was built with {}; rebuild the profile",
                                p.bins
                            ),
                        ));
                    }
                    FeatureModel::Numeric {
                        grid: Arc::new(NumericGrid::new(p.grid_edges.clone(), p.mean)),
                        cell_bins: grid::bins_of_cells(&p.grid_edges, &p.bin_edges),
                    }
                }
                FeatureStats::Categorical(p) => FeatureModel::Categorical {
                    index: Arc::new(CategoryIndex::new(p.categories.iter().map(|c| c.name.as_str()))),
                },
            };
            features.push(ScoredFeature {
                name: f.name.clone(),
                kind,
                primary_metric,
                threshold,
                rule,
                min_effect,
                null,
                reference_missing_share: profile.missing_share(f),
                model,
            });
        }
        Ok(Reference { profile, settings, features })
    }

    /// Draws every feature's bootstrap null for windows of `m` values ahead of the first
    /// window, spread over `threads` threads (each null is drawn once and cached, so
    /// this only moves the work out of the first window's scoring).
    pub fn warm_up(&self, m: u64, threads: usize) {
        let nulls: Vec<&super::null::NullModel> =
            self.features.iter().filter_map(|f| f.null.as_ref()).collect();
        if nulls.is_empty() {
            return;
        }
        let per_thread = nulls.len().div_ceil(threads.clamp(1, nulls.len()));
        std::thread::scope(|scope| {
            for chunk in nulls.chunks(per_thread) {
                scope.spawn(move || {
                    for null in chunk {
                        null.sorted_draws(m);
                    }
                });
            }
        });
    }

    /// An empty sketch for one window of this reference.
    pub fn new_window(&self) -> WindowSketch {
        WindowSketch::new(
            self.features
                .iter()
                .map(|f| match &f.model {
                    FeatureModel::Numeric { grid, .. } => {
                        FeatureSketch::Numeric(NumericSketch::new(grid.clone()))
                    }
                    FeatureModel::Categorical { index } => FeatureSketch::Categorical(
                        CategoricalSketch::new(index.clone(), self.settings.max_categories),
                    ),
                })
                .collect(),
        )
    }

    /// Rebuilds a window sketch of this reference from a snapshot; refuses one whose
    /// features do not fit the reference.
    pub fn restore_window(&self, state: &WindowSketchState) -> Result<WindowSketch, String> {
        let reference = self;
        if state.features.len() != reference.features.len() {
            return Err(format!(
                "{} features, but the reference has {}",
                state.features.len(),
                reference.features.len()
            ));
        }
        let mut features = Vec::with_capacity(state.features.len());
        for (feature, saved) in reference.features.iter().zip(&state.features) {
            let sketch = match (&feature.model, saved) {
                (FeatureModel::Numeric { grid, .. }, FeatureSketchState::Numeric(s)) => {
                    FeatureSketch::Numeric(NumericSketch::restore(grid.clone(), s)?)
                }
                (FeatureModel::Categorical { index }, FeatureSketchState::Categorical(s)) => {
                    FeatureSketch::Categorical(CategoricalSketch::restore(
                        index.clone(),
                        reference.settings.max_categories,
                        s,
                    )?)
                }
                _ => return Err(format!("feature `{}` has another kind in the reference", feature.name)),
            };
            features.push(sketch);
        }
        let mut window = WindowSketch::new(features);
        window.records = state.records;
        Ok(window)
    }

    pub fn feature_index(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name == name)
    }

    pub fn info(&self) -> ReferenceInfo {
        ReferenceInfo {
            source: self.profile.source.clone(),
            created_at: self.profile.created_at.clone(),
            records: self.profile.records,
        }
    }
}
