//! Reference profiles: what scoring needs from the training data (bin edges and counts,
//! the grid CDF, category counts, missing shares, n, std), built once from a data file
//! or from the stream, and saved to a versioned file so production needs no raw data.
//! Optionally the model's side ([`ModelProfile`]: its performance on the reference and
//! its score's calibration), which makes the file format version 2.

use super::grid::{self, Cell};
use super::model_profile::{ModelProfile, ModelProfileError};
use super::settings::FeatureKind;
use super::sketch::ValueSink;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// The `format` field every profile file carries.
pub const PROFILE_FORMAT: &str = "driftscope-profile";
/// The newest profile format this build reads.
pub const PROFILE_VERSION: u32 = 2;
/// The version written for a profile without a [`ModelProfile`] (version 2 adds
/// `model`; older builds refuse it by its version rather than by an unknown field).
pub const PROFILE_VERSION_WITHOUT_MODEL: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("not a driftscope profile: {0}")]
    NotAProfile(String),
    #[error(
        "profile format version {found} is newer than this driftscope supports ({supported}); upgrade driftscope or rebuild the profile with this version"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("invalid profile: {0}")]
    Invalid(String),
    #[error("invalid profile: feature `{feature}`: {reason}")]
    InvalidFeature { feature: String, reason: String },
    #[error("invalid profile: {0}")]
    InvalidModel(#[from] ModelProfileError),
}

/// A saved reference distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format: String,
    pub format_version: u32,
    /// When the reference was taken (RFC 3339, UTC).
    pub created_at: String,
    /// Where it came from: a file path, or `stream:<name>`.
    pub source: String,
    pub records: u64,
    pub cdf_resolution: usize,
    pub max_categories: usize,
    pub features: Vec<FeatureProfile>,
    /// The model's performance on the reference and its score's calibration, when
    /// the reference data had the label and prediction columns (absent in profiles
    /// written before version 2, which still load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Box<ModelProfile>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    pub missing: u64,
    pub non_finite: u64,
    pub invalid: u64,
    #[serde(flatten)]
    pub stats: FeatureStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureStats {
    Numeric(NumericProfile),
    Categorical(CategoricalProfile),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericProfile {
    /// Finite values.
    pub n: u64,
    pub mean: f64,
    /// Population standard deviation (ddof = 0).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Bins requested; `bin_edges` may be fewer after duplicates were dropped.
    pub bins: usize,
    pub bin_edges: Vec<f64>,
    pub bin_counts: Vec<u64>,
    pub grid_edges: Vec<f64>,
    pub grid_cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalProfile {
    /// Non-missing values.
    pub n: u64,
    pub categories: Vec<CategoryCount>,
    /// Values of categories beyond `max_categories` (the least frequent), pooled.
    pub other: u64,
}

impl FeatureProfile {
    pub fn kind(&self) -> FeatureKind {
        match self.stats {
            FeatureStats::Numeric(_) => FeatureKind::Numeric,
            FeatureStats::Categorical(_) => FeatureKind::Categorical,
        }
    }

    /// Values that entered the distribution.
    pub fn n(&self) -> u64 {
        match &self.stats {
            FeatureStats::Numeric(p) => p.n,
            FeatureStats::Categorical(p) => p.n,
        }
    }
}

impl Profile {
    /// Adds the model's side; the profile is then written as format version 2.
    pub fn set_model(&mut self, model: ModelProfile) {
        self.model = Some(Box::new(model));
        self.format_version = PROFILE_VERSION;
    }

    pub fn feature(&self, name: &str) -> Option<&FeatureProfile> {
        self.features.iter().find(|f| f.name == name)
    }

    /// `missing_share` of the reference: (missing + non-finite) / records.
    pub fn missing_share(&self, feature: &FeatureProfile) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            (feature.missing + feature.non_finite) as f64 / self.records as f64
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A profile is plain data: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a profile; refuses other files and newer format versions.
    pub fn from_json(bytes: &[u8]) -> Result<Profile, ProfileError> {
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            format_version: Option<u32>,
        }
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| ProfileError::NotAProfile(format!("not a JSON profile ({e})")))?;
        if header.format.as_deref() != Some(PROFILE_FORMAT) {
            return Err(ProfileError::NotAProfile(format!("missing `\"format\": \"{PROFILE_FORMAT}\"`")));
        }
        let version =
            header.format_version.ok_or_else(|| ProfileError::Invalid("missing `format_version`".into()))?;
        if version > PROFILE_VERSION || version == 0 {
            return Err(ProfileError::UnsupportedVersion { found: version, supported: PROFILE_VERSION });
        }
        let profile: Profile =
            serde_json::from_slice(bytes).map_err(|e| ProfileError::Invalid(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    /// Checks the invariants scoring relies on, so a hand-edited or damaged profile is
    /// refused at load time instead of producing wrong numbers.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if let Some(model) = &self.model {
            model.validate()?;
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.features {
            let bad = |reason: &str| ProfileError::InvalidFeature {
                feature: f.name.clone(),
                reason: reason.into(),
            };
            if !seen.insert(f.name.as_str()) {
                return Err(bad("listed twice"));
            }
            match &f.stats {
                FeatureStats::Numeric(p) => {
                    let sorted =
                        |v: &[f64]| v.iter().all(|x| x.is_finite()) && v.windows(2).all(|w| w[0] < w[1]);
                    if !sorted(&p.bin_edges) || !sorted(&p.grid_edges) {
                        return Err(bad("edges must be finite and strictly increasing"));
                    }
                    if p.bin_counts.len() != p.bin_edges.len() + 1 {
                        return Err(bad("bin_counts must have one more entry than bin_edges"));
                    }
                    if p.grid_cells.len() != p.grid_edges.len() + 1 {
                        return Err(bad("grid_cells must have one more entry than grid_edges"));
                    }
                    if p.bin_edges.iter().any(|e| p.grid_edges.binary_search_by(|g| g.total_cmp(e)).is_err())
                    {
                        return Err(bad("every bin edge must be a grid edge"));
                    }
                    let cells: u64 = p.grid_cells.iter().map(Cell::count).sum();
                    let bins: u64 = p.bin_counts.iter().sum();
                    if cells != p.n || bins != p.n {
                        return Err(bad("counts do not add up to n"));
                    }
                    if p.n > 0 && (!p.std.is_finite() || !p.mean.is_finite() || p.std < 0.0) {
                        return Err(bad("mean and std must be finite"));
                    }
                }
                FeatureStats::Categorical(p) => {
                    let total: u64 = p.categories.iter().map(|c| c.count).sum::<u64>() + p.other;
                    if total != p.n {
                        return Err(bad("category counts do not add up to n"));
                    }
                }
            }
            if f.n() + f.missing + f.non_finite + f.invalid != self.records {
                return Err(bad("value counts do not add up to the profile's records"));
            }
        }
        Ok(())
    }
}

/// What to profile for one column.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub name: String,
    pub kind: FeatureKind,
    pub bins: usize,
}

enum Accumulator {
    Numeric { values: Vec<f64>, missing: u64, non_finite: u64, invalid: u64 },
    Categorical { counts: FxHashMap<String, u64>, missing: u64, invalid: u64 },
}

/// Collects reference values (a [`ValueSink`]) and turns them into a [`Profile`].
pub struct ProfileBuilder {
    specs: Vec<FeatureSpec>,
    cdf_resolution: usize,
    max_categories: usize,
    records: u64,
    columns: Vec<Accumulator>,
}

impl ProfileBuilder {
    pub fn new(specs: Vec<FeatureSpec>, cdf_resolution: usize, max_categories: usize) -> Self {
        let columns = specs
            .iter()
            .map(|s| match s.kind {
                FeatureKind::Numeric => {
                    Accumulator::Numeric { values: Vec::new(), missing: 0, non_finite: 0, invalid: 0 }
                }
                FeatureKind::Categorical => {
                    Accumulator::Categorical { counts: FxHashMap::default(), missing: 0, invalid: 0 }
                }
            })
            .collect();
        ProfileBuilder { specs, cdf_resolution, max_categories, records: 0, columns }
    }

    pub fn specs(&self) -> &[FeatureSpec] {
        &self.specs
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn cdf_resolution(&self) -> usize {
        self.cdf_resolution
    }

    pub fn max_categories(&self) -> usize {
        self.max_categories
    }

    pub fn finish(self, source: String, created_at: String) -> Profile {
        let features = self
            .specs
            .into_iter()
            .zip(self.columns)
            .map(|(spec, column)| match column {
                Accumulator::Numeric { mut values, missing, non_finite, invalid } => {
                    values.sort_unstable_by(f64::total_cmp);
                    FeatureProfile {
                        name: spec.name,
                        missing,
                        non_finite,
                        invalid,
                        stats: FeatureStats::Numeric(numeric_profile(
                            &values,
                            spec.bins,
                            self.cdf_resolution,
                        )),
                    }
                }
                Accumulator::Categorical { counts, missing, invalid } => FeatureProfile {
                    name: spec.name,
                    missing,
                    non_finite: 0,
                    invalid,
                    stats: FeatureStats::Categorical(categorical_profile(counts, self.max_categories)),
                },
            })
            .collect();
        Profile {
            format: PROFILE_FORMAT.to_owned(),
            format_version: PROFILE_VERSION_WITHOUT_MODEL,
            created_at,
            source,
            records: self.records,
            cdf_resolution: self.cdf_resolution,
            max_categories: self.max_categories,
            features,
            model: None,
        }
    }
}

fn numeric_profile(sorted: &[f64], bins: usize, resolution: usize) -> NumericProfile {
    let n = sorted.len();
    if n == 0 {
        return NumericProfile {
            n: 0,
            mean: 0.0,
            std: 0.0,
            min: 0.0,
            max: 0.0,
            bins,
            bin_edges: Vec::new(),
            bin_counts: vec![0],
            grid_edges: Vec::new(),
            grid_cells: vec![Cell::default()],
        };
    }
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let variance = sorted.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    let bin_edges = grid::bin_edges(sorted, bins);
    let grid_edges = grid::grid_edges(sorted, &bin_edges, resolution);
    let mut grid_cells = vec![Cell::default(); grid_edges.len() + 1];
    let mut bin_counts = vec![0u64; bin_edges.len() + 1];
    for &x in sorted {
        grid::add_value(&grid_edges, &mut grid_cells, x);
        bin_counts[grid::locate(&bin_edges, x)] += 1;
    }
    NumericProfile {
        n: n as u64,
        mean,
        std: variance.sqrt(),
        min: sorted[0],
        max: sorted[n - 1],
        bins,
        bin_edges,
        bin_counts,
        grid_edges,
        grid_cells,
    }
}

fn categorical_profile(counts: FxHashMap<String, u64>, max_categories: usize) -> CategoricalProfile {
    let n = counts.values().sum();
    let mut categories: Vec<CategoryCount> =
        counts.into_iter().map(|(name, count)| CategoryCount { name, count }).collect();
    // Most frequent first, names breaking ties, so the kept set is deterministic.
    categories.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    let other = categories.iter().skip(max_categories).map(|c| c.count).sum();
    categories.truncate(max_categories);
    categories.sort_by(|a, b| a.name.cmp(&b.name));
    CategoricalProfile { n, categories, other }
}

impl ValueSink for ProfileBuilder {
    fn add_records(&mut self, n: u64) {
        self.records += n;
    }

    fn numeric(&mut self, feature: usize, x: f64) {
        match &mut self.columns[feature] {
            Accumulator::Numeric { values, non_finite, .. } => {
                if x.is_finite() {
                    values.push(x)
                } else {
                    *non_finite += 1
                }
            }
            Accumulator::Categorical { invalid, .. } => *invalid += 1,
        }
    }

    fn category(&mut self, feature: usize, value: &str) {
        match &mut self.columns[feature] {
            Accumulator::Categorical { counts, .. } => {
                if let Some(c) = counts.get_mut(value) {
                    *c += 1;
                } else {
                    counts.insert(value.to_owned(), 1);
                }
            }
            Accumulator::Numeric { invalid, .. } => *invalid += 1,
        }
    }

    fn missing(&mut self, feature: usize) {
        match &mut self.columns[feature] {
            Accumulator::Numeric { missing, .. } | Accumulator::Categorical { missing, .. } => *missing += 1,
        }
    }

    fn invalid(&mut self, feature: usize) {
        match &mut self.columns[feature] {
            Accumulator::Numeric { invalid, .. } | Accumulator::Categorical { invalid, .. } => *invalid += 1,
        }
    }
}
