//! The report of one scored window: the JSON shape of `drift-metrics.md`, shared by
//! `score`, the streaming monitor, the HTTP API and the triggers.

use super::settings::{FeatureKind, Metric, Rule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    pub window: WindowInfo,
    pub reference: ReferenceInfo,
    pub dataset: DatasetVerdict,
    pub features: Vec<FeatureReport>,
    /// Things the reader should know that are not scores (e.g. unmatched columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Model performance from joined labels (streams with `[streams.labels]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<super::performance::PerformanceSection>,
    /// Schema ids the stream's messages switched between within this window
    /// (Confluent-framed Avro and Protobuf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_changes: Vec<SchemaChange>,
}

/// A stream's messages switched from one registered schema id to another, at the
/// first message of the new id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    pub from: u32,
    pub to: u32,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The window's bounds: record positions, processing or event time, and the Kafka
/// offsets it covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    pub start: String,
    pub end: String,
    pub records: u64,
    /// Sequence number of the window in its stream (0 for `score`).
    #[serde(default)]
    pub index: u64,
    /// Topic/partition/offset ranges (a replay pointer); empty for files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<OffsetRange>,
    /// Records that arrived after their event-time window had closed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub late_records: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    pub source: String,
    /// When the reference was taken.
    pub created_at: String,
    pub records: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetVerdict {
    pub features_evaluated: u64,
    pub features_drifted: u64,
    pub drift_share: f64,
    pub threshold: f64,
    pub drifted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    InsufficientData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReport {
    pub name: String,
    pub kind: FeatureKind,
    /// Values that entered the distribution.
    pub samples: u64,
    pub missing: u64,
    pub non_finite: u64,
    pub invalid: u64,
    pub missing_share: f64,
    pub reference_missing_share: f64,
    pub missing_drifted: bool,
    pub status: Status,
    pub primary_metric: Metric,
    /// Version 1: the threshold on the score (on the p-value for ks and chi_square).
    /// Version 2: the effect floor for a distance, the corrected alpha for a test.
    pub threshold: f64,
    pub drifted: bool,
    /// How the verdict was reached (`threshold` is version 1).
    #[serde(default = "version_one")]
    pub rule: Rule,
    /// Version 2: the primary score's p-value against its null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Version 2: the primary score (Cramér's V for chi_square).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// Version 2: the effect floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_effect: Option<f64>,
    /// Version 2: the per-feature level after the correction across features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Which conditions held (absent for a feature that was not evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
    /// The feature's sequential detector after this window (streams and backtests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_overflow: Option<u64>,
    pub scores: BTreeMap<String, f64>,
}

/// Reports written before verdicts had versions were version 1's.
fn version_one() -> Rule {
    Rule::Threshold
}

impl Report {
    pub fn feature(&self, name: &str) -> Option<&FeatureReport> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Names of the features whose primary metric drifted.
    pub fn drifted_features(&self) -> impl Iterator<Item = &FeatureReport> {
        self.features.iter().filter(|f| f.drifted)
    }
}

/// Which of version 2's two conditions held (`threshold` under version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// Significant, but below the effect floor: not drift.
    Significance,
    /// At least the effect floor, but within what sampling noise gives: not drift.
    Effect,
    /// Both: drift.
    Both,
    /// Neither.
    Neither,
    /// Version 1's fixed threshold decided.
    Threshold,
}

/// What the report says of a feature's detector after a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialStatus {
    /// `log M_w`.
    pub log_statistic: f64,
    /// `log(1 / alpha_sequential)`.
    pub log_threshold: f64,
    /// The detector alarmed in this window (it restarts from the next one).
    pub alarm: bool,
}
