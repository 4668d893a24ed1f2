//! One window's sketches of every monitored feature, and [`ValueSink`], the interface
//! through which decoders hand values to sketches and to profile builders alike.

use super::categorical::{CategoricalSketch, CategoricalSketchState};
use super::numeric::{NumericSketch, NumericSketchState};

/// Where decoded values go. Features are addressed by their position in the reference.
pub trait ValueSink {
    /// `n` more records were decoded (each feature sees one value, missing or not, per record).
    fn add_records(&mut self, n: u64);
    fn numeric(&mut self, feature: usize, x: f64);
    /// Many values of one feature at once (a column of a batch); sinks that can
    /// resolve the feature once per slice override it.
    fn numeric_slice(&mut self, feature: usize, values: &[f64]) {
        for &x in values {
            self.numeric(feature, x);
        }
    }
    fn category(&mut self, feature: usize, value: &str);
    /// `count` copies of one numeric value (resampled windows); sinks that can add
    /// them at once override it.
    fn numeric_repeated(&mut self, feature: usize, x: f64, count: u64) {
        for _ in 0..count {
            self.numeric(feature, x);
        }
    }
    /// `count` copies of one category.
    fn category_repeated(&mut self, feature: usize, value: &str, count: u64) {
        for _ in 0..count {
            self.category(feature, value);
        }
    }
    /// The field was absent or null.
    fn missing(&mut self, feature: usize);
    /// The field held a value of the wrong type for its kind.
    fn invalid(&mut self, feature: usize);
}

/// A sketch of one feature, of the kind the reference gave it.
#[derive(Debug, Clone)]
pub enum FeatureSketch {
    Numeric(NumericSketch),
    Categorical(CategoricalSketch),
}

impl FeatureSketch {
    pub fn missing(&self) -> u64 {
        match self {
            FeatureSketch::Numeric(s) => s.missing,
            FeatureSketch::Categorical(s) => s.missing,
        }
    }

    pub fn invalid(&self) -> u64 {
        match self {
            FeatureSketch::Numeric(s) => s.invalid,
            FeatureSketch::Categorical(s) => s.invalid,
        }
    }
}

/// Every feature's sketch over one window, plus the window's record count.
#[derive(Debug, Clone)]
pub struct WindowSketch {
    pub records: u64,
    pub features: Vec<FeatureSketch>,
}

impl WindowSketch {
    pub fn new(features: Vec<FeatureSketch>) -> Self {
        WindowSketch { records: 0, features }
    }

    /// Folds another sketch of the same reference into this one.
    pub fn merge(&mut self, other: &WindowSketch) {
        self.records += other.records;
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            match (a, b) {
                (FeatureSketch::Numeric(a), FeatureSketch::Numeric(b)) => a.merge(b),
                (FeatureSketch::Categorical(a), FeatureSketch::Categorical(b)) => a.merge(b),
                _ => debug_assert!(false, "merging sketches of different references"),
            }
        }
    }

    /// Empties every sketch, keeping allocations for the next window.
    pub fn reset(&mut self) {
        self.records = 0;
        for f in &mut self.features {
            match f {
                FeatureSketch::Numeric(s) => s.reset(),
                FeatureSketch::Categorical(s) => s.reset(),
            }
        }
    }
}

impl ValueSink for WindowSketch {
    #[inline]
    fn add_records(&mut self, n: u64) {
        self.records += n;
    }

    #[inline]
    fn numeric(&mut self, feature: usize, x: f64) {
        match &mut self.features[feature] {
            FeatureSketch::Numeric(s) => s.observe(x),
            FeatureSketch::Categorical(s) => s.invalid += 1,
        }
    }

    fn numeric_slice(&mut self, feature: usize, values: &[f64]) {
        match &mut self.features[feature] {
            FeatureSketch::Numeric(s) => s.observe_slice(values),
            FeatureSketch::Categorical(s) => s.invalid += values.len() as u64,
        }
    }

    #[inline]
    fn category(&mut self, feature: usize, value: &str) {
        match &mut self.features[feature] {
            FeatureSketch::Categorical(s) => s.observe(value),
            FeatureSketch::Numeric(s) => s.invalid += 1,
        }
    }

    fn numeric_repeated(&mut self, feature: usize, x: f64, count: u64) {
        match &mut self.features[feature] {
            FeatureSketch::Numeric(s) => s.observe_n(x, count),
            FeatureSketch::Categorical(s) => s.invalid += count,
        }
    }

    fn category_repeated(&mut self, feature: usize, value: &str, count: u64) {
        match &mut self.features[feature] {
            FeatureSketch::Categorical(s) => s.observe_n(value, count),
            FeatureSketch::Numeric(s) => s.invalid += count,
        }
    }

    #[inline]
    fn missing(&mut self, feature: usize) {
        match &mut self.features[feature] {
            FeatureSketch::Numeric(s) => s.missing += 1,
            FeatureSketch::Categorical(s) => s.missing += 1,
        }
    }

    #[inline]
    fn invalid(&mut self, feature: usize) {
        match &mut self.features[feature] {
            FeatureSketch::Numeric(s) => s.invalid += 1,
            FeatureSketch::Categorical(s) => s.invalid += 1,
        }
    }
}

/// The state of one feature's sketch, for checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FeatureSketchState {
    Numeric(NumericSketchState),
    Categorical(CategoricalSketchState),
}

/// The state of a [`WindowSketch`], for checkpoints; restored against the reference it
/// was taken on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowSketchState {
    pub records: u64,
    pub features: Vec<FeatureSketchState>,
}

impl WindowSketch {
    pub fn snapshot(&self) -> WindowSketchState {
        WindowSketchState {
            records: self.records,
            features: self
                .features
                .iter()
                .map(|f| match f {
                    FeatureSketch::Numeric(s) => FeatureSketchState::Numeric(s.snapshot()),
                    FeatureSketch::Categorical(s) => FeatureSketchState::Categorical(s.snapshot()),
                })
                .collect(),
        }
    }
}
