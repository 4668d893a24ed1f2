//! A stream's `[streams.labels]` table: where its delayed labels come from, how a
//! prediction and its label are matched (the request id on both topics), what the
//! model predicts (the task), and the join's bounds (`ttl`, `sample`, `max_pending`).
//! Validated at start-up, errors naming the key.

use super::{InferenceMessage, MessageFormat, StreamConfig};
use crate::stats::label_join::MAX_PENDING_LIMIT;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Labels of a stream's predictions, joined by request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    /// Topics of label messages (co-partitioned with the stream's topics by request
    /// id: same partition count, the request id as the key).
    pub topics: Vec<String>,
    /// The label messages' format (`json`).
    #[serde(default = "json")]
    pub format: LabelFormat,
    /// Where the request id is in a prediction message: `"key"` (the Kafka key), a
    /// JSON pointer (`json` streams), or `"protocol"`: the Open Inference Protocol
    /// message's `id` (`open_inference` streams).
    pub prediction_id: IdLocation,
    /// Where the request id is in a label message: `"key"` or a JSON pointer.
    pub label_id: IdLocation,
    /// JSON pointer of the label in a label message.
    pub label: String,
    /// What the model predicts and where its prediction is in a prediction message.
    pub task: TaskConfig,
    /// How long an id's first message (prediction or label) waits for the other.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Fraction of request ids joined (by a hash of the id, the same on both topics).
    #[serde(default = "one")]
    pub sample: f64,
    /// Entries (waiting predictions, waiting labels, recent joined ids) held at most;
    /// the oldest is evicted and counted beyond it.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// A compacted topic where, when a partition moves to another instance of the
    /// group, the old owner writes the join's entries of that partition and the new
    /// owner reads them (keyed by group, stream and partition). Unset: the entries stay
    /// with the old owner (its predictions expire there, their labels are orphans at
    /// the new owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_topic: Option<String>,
}

/// A trigger condition on new labels: `condition.labels = { at_least = N }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsCondition {
    /// New labelled predictions (joined since the trigger last fired) that make it fire.
    pub at_least: u64,
}

/// A trigger condition on realized performance: `condition.performance = { metric =
/// "f1", drop = 0.05 }` holds in a window whose performance is final and whose metric's
/// upper confidence bound is below `baseline - drop`: the drop is established at
/// `confidence`, not a noisy dip. The baseline is `baseline` when set, else the
/// model's performance on the reference (the profile's `model.metrics`, written by
/// `driftscope reference build`); a watched stream with neither is refused at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceCondition {
    /// `accuracy`, `precision`, `recall` or `f1` (binary tasks).
    pub metric: String,
    /// How far below `baseline` the metric must be (absolute).
    pub drop: f64,
    /// The metric's expected value (the model's performance at validation); when
    /// unset, the reference profile's figure for the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// One-sided confidence of the bound (default 0.95).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

/// Metrics a performance condition can watch.
pub const PERFORMANCE_CONDITION_METRICS: [&str; 4] = ["accuracy", "precision", "recall", "f1"];

fn default_confidence() -> f64 {
    0.95
}

impl PerformanceCondition {
    /// Checks the condition; `key` is its key path.
    pub fn validate(&self, key: &str) -> Result<(), (String, String)> {
        if !PERFORMANCE_CONDITION_METRICS.contains(&self.metric.as_str()) {
            return Err((
                format!("{key}.metric"),
                format!("one of {}", PERFORMANCE_CONDITION_METRICS.join(", ")),
            ));
        }
        for (k, v, range) in [
            ("drop", Some(self.drop), 0.0..1.0),
            ("baseline", self.baseline, 0.0..1.0 + f64::EPSILON),
            ("confidence", Some(self.confidence), 0.5..1.0),
        ] {
            let Some(v) = v else { continue };
            if !(v.is_finite() && range.contains(&v)) || (k == "drop" && v <= 0.0) {
                return Err((format!("{key}.{k}"), format!("must be in [{}, {})", range.start, range.end)));
            }
        }
        Ok(())
    }
}

fn json() -> LabelFormat {
    LabelFormat::Json
}

fn one() -> f64 {
    1.0
}

fn default_max_pending() -> usize {
    1_000_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelFormat {
    Json,
}

/// Where a request id is: the Kafka key, a JSON pointer into the message, or the
/// protocol's own id field (the `id` of an Open Inference Protocol message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IdLocation {
    Key,
    Pointer(String),
    Protocol,
}

impl TryFrom<String> for IdLocation {
    type Error = String;
    fn try_from(s: String) -> Result<IdLocation, String> {
        if s == "key" {
            Ok(IdLocation::Key)
        } else if s == "protocol" {
            Ok(IdLocation::Protocol)
        } else if s.starts_with('/') {
            Ok(IdLocation::Pointer(s))
        } else {
            Err(format!(
                "`{s}` is neither \"key\" (the Kafka key), \"protocol\" (the message's protocol id) \
                 nor a JSON pointer starting with `/`"
            ))
        }
    }
}

impl From<IdLocation> for String {
    fn from(id: IdLocation) -> String {
        match id {
            IdLocation::Key => "key".into(),
            IdLocation::Protocol => "protocol".into(),
            IdLocation::Pointer(p) => p,
        }
    }
}

/// The model's task. Its prediction key (`score`, `predicted`, `prediction`) is a JSON
/// pointer for a `json` stream, and the name of the response's output tensor (or a
/// column name of `open_inference.columns`) for an `open_inference` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskConfig {
    /// A score (probability of the positive class) and a decision threshold; labels
    /// are `true`/`false` or 1/0.
    Binary {
        score: String,
        #[serde(default = "half")]
        threshold: f64,
    },
    /// A predicted class (a string, or a number taken by its JSON text).
    Multiclass { predicted: String },
    /// A predicted number.
    Regression { prediction: String },
}

fn half() -> f64 {
    0.5
}

impl TaskConfig {
    /// Where the prediction is in a prediction message: a JSON pointer (`json`
    /// streams) or an output tensor (`open_inference` streams).
    pub fn prediction_pointer(&self) -> &str {
        match self {
            TaskConfig::Binary { score, .. } => score,
            TaskConfig::Multiclass { predicted } => predicted,
            TaskConfig::Regression { prediction } => prediction,
        }
    }
}

/// The reference-data column a JSON pointer of one token names (`/is_fraud` ->
/// `is_fraud`, `~1` and `~0` unescaped); `None` for a pointer into nested data.
pub fn column_of_pointer(pointer: &str) -> Option<String> {
    let token = pointer.strip_prefix('/')?;
    (!token.is_empty() && !token.contains('/')).then(|| token.replace("~1", "/").replace("~0", "~"))
}

/// The reference-data column of a task's prediction key: of a JSON pointer as
/// [`column_of_pointer`], and an output tensor's (or tensor column's) name as is
/// (`open_inference` streams).
pub fn column_of_prediction(prediction: &str) -> Option<String> {
    if prediction.starts_with('/') {
        column_of_pointer(prediction)
    } else {
        (!prediction.is_empty()).then(|| prediction.to_owned())
    }
}

impl LabelsConfig {
    /// The reference data's label and prediction columns, named by the label pointer
    /// and the task's prediction key (see [`column_of_prediction`]).
    pub fn reference_columns(&self) -> Option<(String, String)> {
        Some((column_of_pointer(&self.label)?, column_of_prediction(self.task.prediction_pointer())?))
    }
}

/// Checks stream `stream`'s labels table; `key` is the stream's key path.
pub(super) fn validate(
    labels: &LabelsConfig,
    stream: &StreamConfig,
    key: &str,
) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((format!("{key}.labels.{k}"), m));
    if labels.topics.is_empty() || labels.topics.iter().any(String::is_empty) {
        return err("topics", "name at least one topic".into());
    }
    if let Some(t) = labels.topics.iter().find(|t| stream.topics.contains(t)) {
        return err("topics", format!("`{t}` is also a prediction topic of the stream"));
    }
    // The prediction is read from the stream's own messages: one record per JSON
    // message, or each row of an Open Inference Protocol response.
    let oip = match stream.format {
        MessageFormat::Json => false,
        MessageFormat::OpenInference => true,
        other => {
            return err(
                "task",
                format!("labels need `format = \"json\"` or `\"open_inference\"` predictions, not {other:?}"),
            );
        }
    };
    if oip && stream.open_inference.as_ref().is_some_and(|o| o.message != InferenceMessage::Response) {
        return Err((
            format!("{key}.open_inference.message"),
            "labels read the prediction from an output tensor: `message = \"response\"`".into(),
        ));
    }
    match (&labels.prediction_id, oip) {
        (IdLocation::Protocol, false) => {
            return err(
                "prediction_id",
                format!(
                    "\"protocol\" is the `id` of an Open Inference Protocol message; a {:?} stream has none \
                     (use \"key\" or a JSON pointer)",
                    stream.format
                ),
            );
        }
        (IdLocation::Pointer(p), true) => {
            return err(
                "prediction_id",
                format!("`{p}`: an open_inference stream's id is \"protocol\" (its `id`) or \"key\""),
            );
        }
        _ => {}
    }
    if labels.label_id == IdLocation::Protocol {
        return err("label_id", "label messages are JSON: \"key\" or a JSON pointer to the id".into());
    }
    if stream.json.as_ref().is_some_and(|j| j.records_path.is_some()) {
        return Err((
            format!("{key}.json.records_path"),
            "a stream with labels reads one prediction per message (no records_path)".into(),
        ));
    }
    for (k, id) in [("prediction_id", &labels.prediction_id), ("label_id", &labels.label_id)] {
        if let IdLocation::Pointer(p) = id
            && p.len() < 2
        {
            return err(k, "a JSON pointer to the id, like `/request_id`".into());
        }
    }
    if !labels.label.starts_with('/') {
        return err("label", "a JSON pointer starting with `/`".into());
    }
    let (k, pointer) = match &labels.task {
        TaskConfig::Binary { score, threshold } => {
            if !(threshold.is_finite() && (0.0..=1.0).contains(threshold)) {
                return err("task.threshold", "must be between 0 and 1".into());
            }
            ("task.score", score)
        }
        TaskConfig::Multiclass { predicted } => ("task.predicted", predicted),
        TaskConfig::Regression { prediction } => ("task.prediction", prediction),
    };
    if oip && (pointer.is_empty() || pointer.starts_with('/')) {
        return err(k, "the name of the output tensor holding the prediction (not a JSON pointer)".into());
    }
    if !oip && !pointer.starts_with('/') {
        return err(k, "a JSON pointer starting with `/`".into());
    }
    if labels.ttl.is_zero() || labels.ttl > Duration::from_secs(366 * 86_400) {
        return err("ttl", "must be positive and at most a year".into());
    }
    if !(labels.sample > 0.0 && labels.sample <= 1.0) {
        return err("sample", "must be a fraction in (0, 1]".into());
    }
    if !(1..=MAX_PENDING_LIMIT).contains(&labels.max_pending) {
        return err("max_pending", format!("must be between 1 and {MAX_PENDING_LIMIT}"));
    }
    if let Some(topic) = &labels.handover_topic {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
            return err("handover_topic", "a Kafka topic name (letters, digits, `.`, `_`, `-`)".into());
        }
        if stream.topics.contains(topic) || labels.topics.contains(topic) {
            return err("handover_topic", format!("`{topic}` is a prediction or label topic of the stream"));
        }
    }
    Ok(())
}

/// A label topic is read by one stream's join only: it may be no stream's prediction
/// topic and no other stream's label topic (a topic routes to one place).
pub(super) fn validate_topics(streams: &[StreamConfig]) -> Result<(), (String, String)> {
    for (i, s) in streams.iter().enumerate() {
        let Some(labels) = &s.labels else { continue };
        for topic in &labels.topics {
            let clash = streams.iter().enumerate().find(|(j, other)| {
                *j != i
                    && (other.topics.contains(topic)
                        || other.labels.as_ref().is_some_and(|l| l.topics.contains(topic)))
            });
            if let Some((j, _)) = clash {
                return Err((
                    format!("streams[{i}].labels.topics"),
                    format!("`{topic}` is also read by streams[{j}]; a label topic belongs to one stream"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn stream(window: &str, labels: &str) -> String {
        format!(
            "[[streams]]\nname = \"s\"\ntopics = [\"preds\"]\nformat = \"json\"\n\
             window = {window}\nreference = {{ from_stream = 10 }}\n\
             [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
             [streams.labels]\n{labels}\n"
        )
    }

    const TUMBLING: &str = "{ type = \"tumbling_count\", size = 10 }";
    const GOOD: &str = "topics = [\"labels\"]\nprediction_id = \"key\"\nlabel_id = \"/id\"\nlabel = \"/y\"\n\
                        ttl = \"10m\"\ntask = { type = \"binary\", score = \"/p\", threshold = 0.3 }";

    fn error(text: &str) -> String {
        Config::from_toml(text, Path::new("t.toml")).expect_err("invalid").to_string()
    }

    #[test]
    fn a_labels_table_parses_with_its_defaults() {
        let c = Config::from_toml(&stream(TUMBLING, GOOD), Path::new("t.toml")).expect("valid");
        let l = c.streams[0].labels.as_ref().expect("labels");
        assert_eq!(l.prediction_id, super::IdLocation::Key);
        assert_eq!(l.label_id, super::IdLocation::Pointer("/id".into()));
        assert_eq!((l.sample, l.max_pending), (1.0, 1_000_000));
        assert_eq!(l.ttl, std::time::Duration::from_secs(600));
        assert_eq!(l.task.prediction_pointer(), "/p");
    }

    #[test]
    fn every_bad_setting_is_named_by_its_key() {
        let cases = [
            (GOOD.replace("\"labels\"", "\"preds\""), "streams[0].labels.topics"),
            (GOOD.replace("label_id = \"/id\"", "label_id = \"id\""), "streams[0].labels.label_id"),
            (GOOD.replace("label = \"/y\"", "label = \"y\""), "streams[0].labels.label"),
            (GOOD.replace("0.3", "1.5"), "streams[0].labels.task.threshold"),
            (GOOD.replace("\"/p\"", "\"p\""), "streams[0].labels.task.score"),
            (GOOD.replace("\"10m\"", "\"0s\""), "streams[0].labels.ttl"),
            (format!("{GOOD}\nsample = 0.0"), "streams[0].labels.sample"),
            (format!("{GOOD}\nmax_pending = 0"), "streams[0].labels.max_pending"),
            (format!("{GOOD}\nhandover_topic = \"a b\""), "streams[0].labels.handover_topic"),
            (format!("{GOOD}\nmax_pendin = 3"), "max_pendin"),
            (GOOD.replace("binary", "ranking"), "streams[0].labels.task"),
        ];
        for (labels, key) in cases {
            let e = error(&stream(TUMBLING, &labels));
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
        let two = format!(
            "{}{}",
            stream(TUMBLING, GOOD),
            stream(TUMBLING, GOOD)
                .replace("name = \"s\"", "name = \"s2\"")
                .replace("[\"preds\"]", "[\"p2\"]")
        );
        assert!(error(&two).contains("streams[0].labels.topics"), "{}", error(&two));
        let trigger = |condition: &str| {
            format!(
                "{}\n[[triggers]]\nname = \"t\"\nkind = {{ type = \"webhook\", url = \"http://127.0.0.1:1/\", \
                 secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\ncondition = {condition}\n",
                stream(TUMBLING, GOOD)
            )
        };
        let ok = Config::from_toml(&trigger("{ labels = { at_least = 500 } }"), Path::new("t.toml"))
            .expect("valid");
        assert_eq!(ok.triggers[0].condition.labels.as_ref().map(|l| l.at_least), Some(500));
        assert!(
            error(&trigger("{ labels = { at_least = 0 } }"))
                .contains("triggers[0].condition.labels.at_least")
        );
        assert!(
            error(&trigger("{ labels = { at_least = 5 }, dataset_drift = true }")).contains("exactly one")
        );
        let perf = trigger("{ performance = { metric = \"f1\", drop = 0.05, baseline = 0.9 } }");
        let ok = Config::from_toml(&perf, Path::new("t.toml")).expect("valid");
        assert_eq!(ok.triggers[0].condition.performance.as_ref().map(|p| p.confidence), Some(0.95));
        let from_reference = trigger("{ performance = { metric = \"f1\", drop = 0.05 } }");
        let ok = Config::from_toml(&from_reference, Path::new("t.toml")).expect("valid without a baseline");
        assert_eq!(ok.triggers[0].condition.performance.as_ref().and_then(|p| p.baseline), None);
        for (bad, key) in [
            ("metric = \"auc\", drop = 0.05, baseline = 0.9", "condition.performance.metric"),
            ("metric = \"f1\", drop = 0.0, baseline = 0.9", "condition.performance.drop"),
            ("metric = \"f1\", drop = 0.1, baseline = 1.5", "condition.performance.baseline"),
            (
                "metric = \"f1\", drop = 0.1, baseline = 0.9, confidence = 1.0",
                "condition.performance.confidence",
            ),
        ] {
            let e = error(&trigger(&format!("{{ performance = {{ {bad} }} }}")));
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
        // `"protocol"` is an Open Inference Protocol message's id: not a JSON stream's.
        let protocol = GOOD.replace("prediction_id = \"key\"", "prediction_id = \"protocol\"");
        let e = error(&stream(TUMBLING, &protocol));
        assert!(e.contains("streams[0].labels.prediction_id") && e.contains("has none"), "{e}");
        let e = error(&stream(TUMBLING, &GOOD.replace("label_id = \"/id\"", "label_id = \"protocol\"")));
        assert!(e.contains("streams[0].labels.label_id"), "{e}");
    }

    #[test]
    fn labels_work_with_every_window() {
        for window in [
            "{ type = \"sliding_count\", size = 10, slide = 5 }",
            "{ type = \"sliding_time\", size = \"10s\", slide = \"5s\", time = \"event\" }",
            TUMBLING,
            "{ type = \"tumbling_time\", size = \"10s\" }",
            "{ type = \"tumbling_time\", size = \"10s\", time = \"event\", allowed_lateness = \"2s\" }",
        ] {
            let text = stream(window, GOOD)
                .replace("format = \"json\"\n", "format = \"json\"\nevent_time_field = \"/ts\"\n");
            let c = Config::from_toml(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{window}: {e}"));
            assert!(c.streams[0].labels.is_some());
        }
        // Event time needs the stream's event-time field, named by its key.
        let e = error(&stream("{ type = \"tumbling_time\", size = \"10s\", time = \"event\" }", GOOD));
        assert!(e.contains("streams[0].event_time_field"), "{e}");
    }

    fn oip_stream(message: &str, labels: &str) -> String {
        stream(TUMBLING, labels).replace(
            "format = \"json\"\n",
            &format!("format = \"open_inference\"\nopen_inference = {{ message = \"{message}\" }}\n"),
        )
    }

    #[test]
    fn an_open_inference_stream_takes_its_id_from_the_protocol_and_its_prediction_from_a_tensor() {
        let good = GOOD
            .replace("prediction_id = \"key\"", "prediction_id = \"protocol\"")
            .replace("\"/p\"", "\"probability\"");
        let c = Config::from_toml(&oip_stream("response", &good), Path::new("t.toml")).expect("valid");
        let l = c.streams[0].labels.as_ref().expect("labels");
        assert_eq!(l.prediction_id, super::IdLocation::Protocol);
        assert_eq!(l.task.prediction_pointer(), "probability");
        // Reference data names the prediction's column like the tensor.
        assert_eq!(l.reference_columns(), Some(("y".into(), "probability".into())));
        // The Kafka key works too; a JSON pointer does not.
        let keyed = good.replace("\"protocol\"", "\"key\"");
        assert!(Config::from_toml(&oip_stream("response", &keyed), Path::new("t.toml")).is_ok());
        for (labels, message, key) in [
            (good.replace("\"protocol\"", "\"/id\""), "response", "streams[0].labels.prediction_id"),
            (good.replace("\"probability\"", "\"/probability\""), "response", "streams[0].labels.task.score"),
            (good.clone(), "request", "streams[0].open_inference.message"),
        ] {
            let e = error(&oip_stream(message, &labels));
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
        let avro = stream(TUMBLING, &good).replace("format = \"json\"", "format = \"avro\"");
        assert!(error(&avro).contains("streams[0].labels.task"), "{}", error(&avro));
    }
}
