//! A profile made ready for scoring: per-feature primary metric and threshold resolved
//! from the settings, overrides and the spec's defaults, and the shared grids and
//! category indexes that window sketches are built on.

use super::categorical::{CategoricalSketch, CategoryIndex};
use super::grid;
use super::numeric::{NumericGrid, NumericSketch};
use super::profile::{FeatureStats, Profile};
use super::report::ReferenceInfo;
use super::settings::{DriftSettings, FeatureKind, FeatureOverride, Metric};
use super::sketch::{FeatureSketch, WindowSketch};
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
    pub threshold: f64,
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
        for f in &profile.features {
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
                reference_missing_share: profile.missing_share(f),
                model,
            });
        }
        Ok(Reference { profile, settings, features })
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
