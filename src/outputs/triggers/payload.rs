//! What a fired trigger carries: the evidence taken from the window that fired it (ids,
//! window bounds, the replay pointer, drift share, drifted features), and its shape on
//! the wire for each kind: the webhook/Kafka envelope, GitHub's `client_payload`
//! (at most 10 top-level keys, under 64 KB) and GitLab's CI variables.

use super::condition::Observed;
use crate::config::triggers::{ConditionConfig, Require};
use crate::stats::report::{OffsetRange, Report, WindowInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::SystemTime;

/// The envelope `type` of webhook and Kafka deliveries.
pub const EVENT_TYPE: &str = "drift.detected";

/// GitHub rejects a `client_payload` with more top-level keys than this.
pub const GITHUB_MAX_PAYLOAD_KEYS: usize = 10;

/// GitHub rejects a `client_payload` of this many bytes or more (64 KB).
pub const GITHUB_MAX_PAYLOAD_BYTES: usize = 65_536;

/// The evidence of one fired trigger: the `data` of the webhook envelope, GitHub's
/// `client_payload`, GitLab's `DRIFTSCOPE_PAYLOAD`. At most 10 top-level keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Unique per fired event, stable across delivery attempts: use it to deduplicate.
    pub trigger_id: String,
    /// The trigger's configured name.
    pub trigger: String,
    /// The stream whose windows met the condition.
    pub stream: String,
    /// When the trigger fired (RFC 3339).
    pub fired_at: String,
    /// The condition that held.
    pub condition: ConditionSummary,
    /// The window that completed the episode and what it covered.
    pub window: WindowEvidence,
    /// The window's dataset verdict.
    pub dataset: DatasetEvidence,
    /// Features whose primary metric drifted in that window.
    pub drifted_features: Vec<FeatureEvidence>,
    /// For `score` conditions: the scores that crossed the limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed: Vec<Observed>,
}

/// The condition, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConditionSummary {
    /// `dataset_drift = true`.
    DatasetDrift {
        /// Windows in a row it had to hold.
        consecutive_windows: u32,
    },
    /// `features = [...]`.
    Features {
        /// The watched features.
        features: Vec<String>,
        /// `any` or `all`.
        require: Require,
        /// Windows in a row it had to hold.
        consecutive_windows: u32,
    },
    /// `sequential = true`.
    Sequential {
        /// The watched features; every feature when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// `any` or `all`.
        require: Require,
    },
    /// `labels = { at_least = N }`.
    Labels {
        /// New labels that make it fire.
        at_least: u64,
    },
    /// `performance = { ... }`.
    Performance {
        /// The watched metric.
        metric: String,
        /// How far below the baseline its upper bound had to be.
        drop: f64,
        /// The metric's expected value as configured; absent when it is the reference
        /// profile's (the evidence then names it as `baseline`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        baseline: Option<f64>,
        /// One-sided confidence of the bound.
        confidence: f64,
        /// Windows in a row it had to hold.
        consecutive_windows: u32,
    },
    /// `score = ...`.
    Score {
        /// The score key.
        score: String,
        /// The feature, or every feature when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature: Option<String>,
        /// Lower limit, when the condition is `above`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        /// Upper limit, when the condition is `below`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
        /// Windows in a row it had to hold.
        consecutive_windows: u32,
    },
}

impl ConditionSummary {
    /// Summarises a condition.
    pub fn of(c: &ConditionConfig) -> ConditionSummary {
        if let Some(l) = &c.labels {
            ConditionSummary::Labels { at_least: l.at_least }
        } else if let Some(p) = &c.performance {
            ConditionSummary::Performance {
                metric: p.metric.clone(),
                drop: p.drop,
                baseline: p.baseline,
                confidence: p.confidence,
                consecutive_windows: c.consecutive_windows,
            }
        } else if let Some(score) = &c.score {
            ConditionSummary::Score {
                score: score.clone(),
                feature: c.feature.clone(),
                above: c.above,
                below: c.below,
                consecutive_windows: c.consecutive_windows,
            }
        } else if c.sequential {
            ConditionSummary::Sequential { features: c.features.clone(), require: c.require }
        } else if !c.features.is_empty() {
            ConditionSummary::Features {
                features: c.features.clone(),
                require: c.require,
                consecutive_windows: c.consecutive_windows,
            }
        } else {
            ConditionSummary::DatasetDrift { consecutive_windows: c.consecutive_windows }
        }
    }
}

/// The firing window's bounds and the Kafka offsets it covers (a replay pointer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowEvidence {
    /// Sequence number of the window in its stream.
    pub index: u64,
    /// Start of the window (RFC 3339, or a record position).
    pub start: String,
    /// End of the window.
    pub end: String,
    /// Records in the window.
    pub records: u64,
    /// Topic/partition/offset ranges of the window's records.
    pub offsets: Vec<OffsetRange>,
}

/// The window's dataset verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEvidence {
    /// Share of evaluated features that drifted.
    pub drift_share: f64,
    /// The share at which the dataset counts as drifted.
    pub threshold: f64,
    /// Whether the dataset counts as drifted.
    pub drifted: bool,
    /// Features evaluated.
    pub features_evaluated: u64,
    /// Features drifted (may exceed `drifted_features` when a kind's size limit cut
    /// that list).
    pub features_drifted: u64,
}

/// One drifted feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureEvidence {
    /// Feature name.
    pub name: String,
    /// Its primary metric.
    pub metric: String,
    /// The value that decided drift (a p-value for `ks` and `chi_square`); absent when
    /// not a finite number.
    pub score: Option<f64>,
    /// The metric's threshold.
    pub threshold: f64,
    /// Version 2: the primary score's p-value against its null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Version 2: the effect (the primary score, Cramér's V for chi_square).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// The sequential detector's log statistic, when the stream has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_log_statistic: Option<f64>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Evidence {
    /// The evidence of a trigger that fired on `report`.
    pub fn from_report(
        trigger_id: String,
        trigger: &str,
        condition: &ConditionConfig,
        report: &Report,
        observed: Vec<Observed>,
        fired_at: SystemTime,
    ) -> Evidence {
        let d = &report.dataset;
        Evidence {
            trigger_id,
            trigger: trigger.to_owned(),
            stream: report.stream.clone().unwrap_or_default(),
            fired_at: humantime::format_rfc3339_millis(fired_at).to_string(),
            condition: ConditionSummary::of(condition),
            window: WindowEvidence {
                index: report.window.index,
                start: report.window.start.clone(),
                end: report.window.end.clone(),
                records: report.window.records,
                offsets: report.window.offsets.clone(),
            },
            dataset: DatasetEvidence {
                drift_share: finite(d.drift_share).unwrap_or(0.0),
                threshold: finite(d.threshold).unwrap_or(0.0),
                drifted: d.drifted,
                features_evaluated: d.features_evaluated,
                features_drifted: d.features_drifted,
            },
            drifted_features: report
                .features
                .iter()
                .filter(|f| f.drifted || (condition.sequential && f.sequential.is_some_and(|s| s.alarm)))
                .map(|f| FeatureEvidence {
                    name: f.name.clone(),
                    metric: f.primary_metric.as_str().to_owned(),
                    score: f.scores.get(f.primary_metric.decision_key()).copied().and_then(finite),
                    threshold: finite(f.threshold).unwrap_or(0.0),
                    p_value: f.p_value.and_then(finite),
                    effect: f.effect.and_then(finite),
                    sequential_log_statistic: f.sequential.map(|s| s.log_statistic).and_then(finite),
                })
                .collect(),
            observed,
        }
    }

    /// `{"type": "drift.detected", "timestamp": <fired_at>, "data": <evidence>}`: the
    /// body of webhook deliveries and Kafka records. Stable across attempts.
    pub fn envelope(&self) -> Vec<u8> {
        let envelope = serde_json::json!({
            "type": EVENT_TYPE,
            "timestamp": self.fired_at,
            "data": self,
        });
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// The body of a GitHub `repository_dispatch` request. Long feature lists are cut
    /// until `client_payload` is under 64 KB; more than 10 top-level keys, or a payload
    /// that cannot be made small enough, is an error (a permanent failure).
    pub fn github_body(&self, event_type: &str) -> Result<Vec<u8>, String> {
        let mut evidence = self.clone();
        loop {
            let payload = serde_json::to_value(&evidence).map_err(|e| e.to_string())?;
            let keys = payload.as_object().map_or(0, |o| o.len());
            if keys > GITHUB_MAX_PAYLOAD_KEYS {
                return Err(format!(
                    "client_payload has {keys} top-level keys; GitHub accepts at most {GITHUB_MAX_PAYLOAD_KEYS}"
                ));
            }
            let size = serde_json::to_vec(&payload).map_or(usize::MAX, |v| v.len());
            if size < GITHUB_MAX_PAYLOAD_BYTES {
                let body = serde_json::json!({ "event_type": event_type, "client_payload": payload });
                return serde_json::to_vec(&body).map_err(|e| e.to_string());
            }
            if !evidence.drifted_features.is_empty() {
                let keep = evidence.drifted_features.len() / 2;
                evidence.drifted_features.truncate(keep);
            } else if !evidence.observed.is_empty() {
                let keep = evidence.observed.len() / 2;
                evidence.observed.truncate(keep);
            } else {
                return Err(format!(
                    "client_payload is {size} bytes; GitHub accepts less than {GITHUB_MAX_PAYLOAD_BYTES}"
                ));
            }
        }
    }

    /// GitLab pipeline variables (`variables[KEY]=value` form fields), the built-in
    /// `DRIFTSCOPE_*` ones first.
    pub fn gitlab_variables(&self) -> Vec<(String, String)> {
        let features: Vec<&str> = self.drifted_features.iter().map(|f| f.name.as_str()).collect();
        let payload = serde_json::to_string(self).unwrap_or_default();
        [
            ("DRIFTSCOPE_TRIGGER_ID", self.trigger_id.clone()),
            ("DRIFTSCOPE_TRIGGER", self.trigger.clone()),
            ("DRIFTSCOPE_STREAM", self.stream.clone()),
            ("DRIFTSCOPE_WINDOW_INDEX", self.window.index.to_string()),
            ("DRIFTSCOPE_WINDOW_START", self.window.start.clone()),
            ("DRIFTSCOPE_WINDOW_END", self.window.end.clone()),
            ("DRIFTSCOPE_DRIFT_SHARE", self.dataset.drift_share.to_string()),
            ("DRIFTSCOPE_FEATURES", features.join(",")),
            ("DRIFTSCOPE_PAYLOAD", payload),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The evidence as a JSON value (for the API).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The id of the event `trigger` fires on a window of `stream`:
/// `<trigger>-<stream>-<window index>-<16 hex digits>`, the digits derived from the
/// window's offsets (random for windows without offsets). Characters outside
/// `[A-Za-z0-9._-]` are replaced by `_`, so the id is safe in URLs and file names.
pub fn trigger_id(trigger: &str, stream: &str, window: &WindowInfo) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect()
    };
    let stream = if stream.is_empty() { "default".to_owned() } else { clean(stream) };
    // A stream window is identified by the records it covers: the same window scored
    // again (after a restart) gets the same id, and instances of one group, which
    // number their windows independently, never share one. Windows of files have no
    // offsets: those ids are random.
    let suffix = if window.offsets.is_empty() {
        rand::random::<u64>()
    } else {
        let mut hasher = crc32fast::Hasher::new();
        for range in &window.offsets {
            hasher.update(range.topic.as_bytes());
            hasher.update(&[0]);
            hasher.update(&range.partition.to_le_bytes());
            hasher.update(&range.first.to_le_bytes());
            hasher.update(&range.last.to_le_bytes());
        }
        let high = u64::from(hasher.finalize());
        let mut hasher = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
        hasher.update(&window.index.to_le_bytes());
        hasher.update(trigger.as_bytes());
        (high << 32) | u64::from(hasher.finalize())
    };
    format!("{}-{stream}-{}-{suffix:016x}", clean(trigger), window.index)
}

/// Whether `id` has the character set of ids this module makes (file-name safe).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 512
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(features: usize) -> Evidence {
        Evidence {
            trigger_id: "t-s-1-00".into(),
            trigger: "t".into(),
            stream: "s".into(),
            fired_at: "2024-01-01T00:00:00.000Z".into(),
            condition: ConditionSummary::DatasetDrift { consecutive_windows: 2 },
            window: WindowEvidence {
                index: 1,
                start: "a".into(),
                end: "b".into(),
                records: 10,
                offsets: vec![OffsetRange { topic: "t".into(), partition: 0, first: 0, last: 9 }],
            },
            dataset: DatasetEvidence {
                drift_share: 0.5,
                threshold: 0.5,
                drifted: true,
                features_evaluated: features as u64,
                features_drifted: features as u64,
            },
            drifted_features: (0..features)
                .map(|i| FeatureEvidence {
                    name: format!("feature_with_a_long_name_{i:06}"),
                    metric: "psi".into(),
                    score: Some(0.5),
                    threshold: 0.2,
                    p_value: None,
                    effect: None,
                    sequential_log_statistic: None,
                })
                .collect(),
            observed: vec![],
        }
    }

    #[test]
    fn github_payload_limits() {
        let small = evidence(3);
        let body: Value = serde_json::from_slice(&small.github_body("retrain").unwrap()).unwrap();
        assert_eq!(body["event_type"], "retrain");
        let payload = body["client_payload"].as_object().unwrap();
        assert!(payload.len() <= GITHUB_MAX_PAYLOAD_KEYS);
        assert_eq!(payload["drifted_features"].as_array().unwrap().len(), 3);

        let big = evidence(20_000);
        assert!(serde_json::to_vec(&big).unwrap().len() > GITHUB_MAX_PAYLOAD_BYTES);
        let body: Value = serde_json::from_slice(&big.github_body("retrain").unwrap()).unwrap();
        let payload = &body["client_payload"];
        assert!(serde_json::to_vec(payload).unwrap().len() < GITHUB_MAX_PAYLOAD_BYTES);
        let listed = payload["drifted_features"].as_array().unwrap().len();
        assert!(listed > 0 && listed < 20_000);
        assert_eq!(payload["dataset"]["features_drifted"], 20_000);

        // Offsets alone too large to fit: a permanent error, not a silent cut.
        let mut huge = evidence(0);
        huge.window.offsets = (0..5000)
            .map(|p| OffsetRange {
                topic: "a-rather-long-topic-name-for-this-test".into(),
                partition: p,
                first: 0,
                last: 1,
            })
            .collect();
        assert!(huge.github_body("retrain").unwrap_err().contains("bytes"));
    }

    #[test]
    fn envelope_shape() {
        let e = evidence(1);
        let v: Value = serde_json::from_slice(&e.envelope()).unwrap();
        assert_eq!(v["type"], EVENT_TYPE);
        assert_eq!(v["timestamp"], e.fired_at);
        assert_eq!(v["data"]["trigger_id"], "t-s-1-00");
        assert_eq!(v["data"]["window"]["offsets"][0]["last"], 9);
        let back: Evidence = serde_json::from_value(v["data"].clone()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn ids_are_safe_and_follow_the_window() {
        let file_window = WindowInfo { index: 7, ..Default::default() };
        let a = trigger_id("retrain", "pay/ments é", &file_window);
        let b = trigger_id("retrain", "pay/ments é", &file_window);
        assert_ne!(a, b, "windows of files have random ids");
        assert!(a.starts_with("retrain-pay_ments__-7-"), "{a}");
        let range = |first| OffsetRange { topic: "t".into(), partition: 0, first, last: first + 9 };
        let stream_window =
            |first| WindowInfo { index: 7, offsets: vec![range(first)], ..Default::default() };
        let c = trigger_id("retrain", "s", &stream_window(0));
        assert_eq!(c, trigger_id("retrain", "s", &stream_window(0)), "the same records, the same id");
        assert_ne!(c, trigger_id("retrain", "s", &stream_window(10)), "other records, another id");
        assert_ne!(c, trigger_id("other", "s", &stream_window(0)));
        assert!(is_valid_id(&c));
        assert!(is_valid_id(&a));
        assert!(!is_valid_id("../etc/passwd"));
        assert!(!is_valid_id(".hidden"));
    }

    #[test]
    fn gitlab_variables_carry_the_evidence() {
        let vars = evidence(2).gitlab_variables();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("DRIFTSCOPE_TRIGGER_ID").unwrap(), "t-s-1-00");
        assert_eq!(get("DRIFTSCOPE_DRIFT_SHARE").unwrap(), "0.5");
        assert_eq!(
            get("DRIFTSCOPE_FEATURES").unwrap(),
            "feature_with_a_long_name_000000,feature_with_a_long_name_000001"
        );
        let payload: Evidence = serde_json::from_str(&get("DRIFTSCOPE_PAYLOAD").unwrap()).unwrap();
        assert_eq!(payload, evidence(2));
    }
}
