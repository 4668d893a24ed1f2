//! A stream's labels: reads the request id and prediction from each prediction
//! message and the request id and label from each label message, joins them
//! ([`crate::stats::label_join`]), and keeps the performance of each window of
//! predictions ([`crate::stats::performance`]) until it is final: closed to new
//! predictions and every prediction labelled, expired or evicted. Reports carry the
//! windows settled since the previous report (final) and those still waiting
//! (provisional, with their `label_coverage`). The whole state goes into the checkpoint.
//!
//! Performance windows are the stream's windows: count windows of `size` records the
//! stream accepted (a window's `predictions` are those of them with a usable id and
//! prediction, in the sample, not duplicates), or time windows `[k * size, (k + 1) *
//! size)` of processing time or of event time. Predictions are kept in panes as the
//! stream cuts them (a tumbling window is one pane; a sliding one `size / slide`
//! panes of `slide`), each with its own mergeable accumulators: a sliding window is
//! the merge of its panes, so a prediction counts in every window that covers it. The
//! join's entries carry their pane. Sliding windows settle in order (each once all its
//! panes are closed and resolved) and are numbered by their last pane; a pane is
//! dropped once the last window holding it settled.
//!
//! On count and processing-time windows the join's clock is processing time. On
//! event-time windows it is the stream's watermark (the highest event time of the
//! predictions read, minus `allowed_lateness`, as the stream closes its own windows): a
//! prediction is placed by its event time and expires when the watermark reaches its
//! event time + `ttl`; a label (which has no event time) waits from the watermark at
//! its arrival; a window closes when the watermark passes its end. A prediction whose
//! window the watermark passed is counted `late`, one without a usable event time
//! `bad_event_time`. Labels read before the stream's first event time wait for it (in
//! the checkpoint too). The watermark moves with predictions only: while none arrive,
//! nothing expires and no window closes, as with the stream's own windows.
//!
//! When a partition moves to another instance of the group ([`crate::ingest::handover`])
//! its entries leave the join: the waiting predictions are counted `handed_over` in
//! their windows here (which can then become final) and `adopted` by the new owner, in
//! the window of their prediction time when it holds that window still (time windows),
//! else in its window open at the assignment.
//!
//! With a reference profile that has the model's side ([`ModelProfile`]): its
//! performance is each report's `reference` (and the baseline of `performance`
//! conditions without their own), and for a binary task its calibration estimates
//! each window's performance from the scores of its predictions as they arrive
//! ([`crate::stats::estimate`]), reported as the window's `estimated` beside the
//! realized `metrics`.

use super::json_pointer;
use crate::clock::{FORMATTABLE_MS, format_ms};
use crate::config::StreamConfig;
use crate::config::labels::{IdLocation, LabelsConfig, TaskConfig};
use crate::config::{TimeBasis, WindowConfig};
use crate::decode::{EventTime, HeldPredictions, HeldValue};
use crate::stats::estimate::EstimateSketch;
use crate::stats::isotonic::Calibration;
use crate::stats::label_join::{
    Arrival, Handed, HandedSide, JoinEvent, JoinSettings, JoinState, LabelJoin, id_hash,
};
use crate::stats::model_profile::{ModelProfile, ModelTask};
use crate::stats::performance::{
    BinarySketch, MAX_CLASSES, MulticlassSketch, OTHER_CLASS, PerformanceSection, PerformanceSketch,
    PerformanceStatus, ReferencePerformance, RegressionSketch, WindowPerformance,
};
use crate::stats::window::PaneClock;
use crate::telemetry::Telemetry;
use prometheus::{GaugeVec, IntCounterVec};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::Write as _;

/// A finite JSON number's value.
fn number(raw: &RawValue) -> Option<f64> {
    let text = raw.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    serde_json::from_str::<f64>(text).ok().filter(|v| v.is_finite())
}

/// An event time as the `json` decoder reads it: epoch milliseconds from a number (the
/// fraction floored), RFC 3339 text; `None` for `null`.
fn event_time_of(raw: &RawValue) -> EventTime {
    use crate::decode::json::{epoch_ms_from_number, epoch_ms_from_rfc3339};
    let text = raw.get();
    if text == "null" {
        None
    } else if text.starts_with('"') {
        Some(json_string(text).ok_or(()).and_then(|s| epoch_ms_from_rfc3339(&s)))
    } else {
        Some(number(raw).ok_or(()).and_then(epoch_ms_from_number))
    }
}

/// A JSON string's content (borrowed unless it has escapes).
fn json_string(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(std::borrow::Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(std::borrow::Cow::Owned),
    }
}

/// Every `outcome` of `driftscope_labels_total`.
pub const OUTCOMES: [&str; 17] = [
    "predictions",
    "labels",
    "joined",
    "expired",
    "evicted",
    "orphan",
    "labels_evicted",
    "duplicate",
    "not_sampled",
    "late",
    "bad_event_time",
    "bad_json",
    "bad_id",
    "bad_prediction",
    "bad_label",
    "handed_over",
    "adopted",
];

/// How predictions are cut into performance windows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PerfClock {
    Count(u64),
    Millis(i64),
    /// Event-time windows of `size_ms`, closed by the watermark (the highest event time
    /// minus `lateness_ms`).
    Event {
        size_ms: i64,
        lateness_ms: i64,
    },
}

/// One window of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PerfWindow {
    key: i64,
    start_ms: i64,
    end_ms: i64,
    predictions: u64,
    labelled: u64,
    expired: u64,
    evicted: u64,
    /// Predictions still waiting when their partition moved to another instance.
    #[serde(default)]
    handed_over: u64,
    /// Predictions taken over, waiting, from another instance (in `predictions` too).
    #[serde(default)]
    adopted: u64,
    /// No more predictions can fall in it.
    closed: bool,
    sketch: PerformanceSketch,
    /// The expected confusion matrix of its predictions (binary, with a calibration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    estimate: Option<EstimateSketch>,
}

impl PerfWindow {
    fn resolved(&self) -> bool {
        self.labelled + self.expired + self.evicted + self.handed_over >= self.predictions
    }

    fn view(&self, status: PerformanceStatus) -> WindowPerformance {
        WindowPerformance {
            index: self.key.max(0) as u64,
            start: format_ms(self.start_ms),
            end: format_ms(self.end_ms),
            status,
            predictions: self.predictions,
            labelled: self.labelled,
            expired: self.expired,
            evicted: self.evicted,
            handed_over: self.handed_over,
            adopted: self.adopted,
            label_coverage: coverage(self.labelled, self.predictions),
            metrics: self.sketch.metrics(),
            confusion: match &self.sketch {
                PerformanceSketch::Binary(b) => Some([b.tp, b.fp, b.tn, b.fn_]),
                _ => None,
            },
            estimated: self.estimate.as_ref().map(EstimateSketch::view),
        }
    }
}

fn coverage(labelled: u64, predictions: u64) -> f64 {
    if predictions == 0 { 1.0 } else { labelled as f64 / predictions as f64 }
}

impl LabelsState {
    /// Every entry of the join as of this state (a handover takes them by partition).
    pub fn join_entries(&self) -> Handed {
        self.join.entries()
    }

    /// Class names by index (multiclass).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

/// What the checkpoint keeps of a stream's labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelsState {
    join: JoinState,
    windows: Vec<PerfWindow>,
    /// Predictions counted into count windows so far.
    predictions_seen: u64,
    /// Windows below this key are closed.
    closed_below: i64,
    clock_floor_ms: i64,
    /// Multiclass: class names by index (the join keeps indices).
    classes: Vec<String>,
    /// Windows settled since the last report.
    settled: Vec<WindowPerformance>,
    /// Outcomes the join does not count itself (late, bad_*).
    other: BTreeMap<String, u64>,
    /// Event-time windows: the highest event time of the predictions read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_event_ms: Option<i64>,
    /// Event-time windows: labels read before the first event time, `(partition, id
    /// hash, value)`, joined when the watermark exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    early_labels: Vec<(i32, u64, f64)>,
    /// Sliding windows: the last pane of the next window to settle (windows settle in
    /// order; `None` before the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_end: Option<i64>,
}

/// A stream's label join and performance windows.
pub struct StreamLabels {
    stream: String,
    pub topics: Vec<String>,
    prediction_id: IdLocation,
    label_id: IdLocation,
    label: String,
    task: TaskConfig,
    /// How predictions are cut into panes (a tumbling window is one pane).
    clock: PerfClock,
    /// Panes per window: 1 (tumbling), or `size / slide` (sliding).
    panes: i64,
    /// Event-time windows of a `json` stream: the pointer of the event time.
    event_time: Option<String>,
    join: LabelJoin,
    state: LabelsState,
    events: Vec<JoinEvent>,
    /// Totals last added to the Prometheus counters.
    published: BTreeMap<&'static str, u64>,
    labels_total: IntCounterVec,
    performance: GaugeVec,
    performance_estimated: GaugeVec,
    label_coverage: GaugeVec,
    /// The model's performance on the reference, when the profile has it.
    reference: Option<ReferencePerformance>,
    /// The score's calibration on the reference (binary tasks).
    calibration: Option<Calibration>,
    /// Why the label and prediction topics are not co-partitioned, when they are not
    /// (a note in every report of the stream).
    pub co_partitioning: Option<String>,
    /// An `open_inference` stream: the predictions are read from the stream's own
    /// decoder, which decodes the prediction tensor with the monitored features (see
    /// [`Self::use_open_inference`]).
    oip: bool,
    /// Scratch for the id of a batch's row, `<id>/<row>` (reused, no allocation per
    /// message once grown).
    row_id: Vec<u8>,
}

/// Why a labels table cannot work with its stream; `key` is relative to the stream.
#[derive(Debug)]
pub struct LabelsSetupError {
    pub key: String,
    pub message: String,
}

impl StreamLabels {
    pub fn new(
        stream: &str,
        config: &LabelsConfig,
        window: &WindowConfig,
        telemetry: &Telemetry,
    ) -> Result<StreamLabels, LabelsSetupError> {
        // Panes as the stream cuts them: a tumbling window is one pane, a sliding one
        // `size / slide` panes of `slide`.
        let (spec, basis) = super::stream::window_spec(window);
        let clock = match (spec.clock, basis) {
            (PaneClock::Records(n), _) => PerfClock::Count(n),
            (PaneClock::Millis { pane_ms, lateness_ms }, Some(TimeBasis::Event)) => {
                PerfClock::Event { size_ms: pane_ms.max(1), lateness_ms }
            }
            (PaneClock::Millis { pane_ms, .. }, _) => PerfClock::Millis(pane_ms.max(1)),
        };
        let settings = JoinSettings {
            ttl_ms: i64::try_from(config.ttl.as_millis()).unwrap_or(i64::MAX),
            max_pending: config.max_pending,
            sample: config.sample,
        };
        for outcome in OUTCOMES {
            telemetry.labels.with_label_values(&[stream, outcome]);
        }
        let mut labels = StreamLabels {
            stream: stream.to_owned(),
            topics: config.topics.clone(),
            prediction_id: config.prediction_id.clone(),
            label_id: config.label_id.clone(),
            label: config.label.clone(),
            task: config.task.clone(),
            clock,
            panes: spec.panes_per_window.max(1) as i64,
            event_time: None,
            join: LabelJoin::new(settings),
            state: LabelsState::default(),
            events: Vec::new(),
            published: BTreeMap::new(),
            labels_total: telemetry.labels.clone(),
            performance: telemetry.performance.clone(),
            performance_estimated: telemetry.performance_estimated.clone(),
            label_coverage: telemetry.label_coverage.clone(),
            reference: None,
            calibration: None,
            co_partitioning: None,
            oip: false,
            row_id: Vec::new(),
        };
        labels.state.clock_floor_ms = i64::MIN;
        labels.state.closed_below = i64::MIN;
        Ok(labels)
    }

    /// [`Self::new`] for `stream`'s labels table, window and event-time field.
    pub fn of_stream(
        stream: &StreamConfig,
        config: &LabelsConfig,
        telemetry: &Telemetry,
    ) -> Result<StreamLabels, LabelsSetupError> {
        let mut labels = StreamLabels::new(&stream.name, config, &stream.window, telemetry)?;
        if matches!(labels.clock, PerfClock::Event { .. }) {
            labels.event_time = stream.event_time_field.clone();
        }
        Ok(labels)
    }

    /// Reads predictions from the Open Inference Protocol messages of `stream`, as the
    /// stream's decoder holds them ([`HeldPredictions`]: its `for_stream` reads the
    /// task's prediction tensor, or a column of `open_inference.columns`, or a field's
    /// `tensor` and `column`); the id is the message's `id` (`prediction_id =
    /// "protocol"`) or the Kafka key.
    pub fn use_open_inference(&mut self, stream: &StreamConfig) -> Result<(), LabelsSetupError> {
        if stream.open_inference.is_none() {
            return Err(LabelsSetupError {
                key: "open_inference".into(),
                message: "format `open_inference` needs `[streams.open_inference]`".into(),
            });
        }
        self.oip = true;
        Ok(())
    }

    /// Compares the partition counts of the label topics and the stream's topics (from
    /// the cluster's metadata, waiting at most 5 s; unknown counts are not judged). With
    /// different counts an id's prediction and label land on different partition
    /// numbers, so one instance of the group may see one side only: logged as an error
    /// and noted in every report of the stream.
    pub fn check_co_partitioning<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &C,
        topics: &[String],
    ) {
        let count = |topic: &str| {
            let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(5)).ok()?;
            let t = metadata.topics().iter().find(|t| t.name() == topic)?;
            (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
        };
        let predictions: Vec<(String, usize)> =
            topics.iter().filter_map(|t| Some((t.clone(), count(t)?))).collect();
        for label_topic in &self.topics {
            let Some(n) = count(label_topic) else { continue };
            if let Some((topic, m)) = predictions.iter().find(|(_, m)| *m != n) {
                let problem = format!(
                    "not co-partitioned: label topic `{label_topic}` has {n} partitions, prediction topic `{topic}` \
                     has {m}; an instance may see a prediction but not its label (give both topics the same \
                     partition count and key both by the request id)"
                );
                tracing::error!(stream = %self.stream, "{problem}");
                self.co_partitioning = Some(problem);
                return;
            }
        }
    }

    /// Takes the model's side of the stream's reference profile: its performance
    /// (when computed for this task and, for binary, at this threshold) and its
    /// calibration (binary). What does not fit is logged and left out.
    pub fn use_reference(&mut self, model: Option<&ModelProfile>, telemetry: &Telemetry) {
        let Some(model) = model else { return };
        let task = model.model_task();
        let same_task = task.map(ModelTask::name) == Some(self.task_name());
        if !same_task {
            tracing::warn!(stream = %self.stream, reference_task = %model.task, task = self.task_name(), "the reference profile's model is of another task: not used");
            return;
        }
        let same_threshold = match (&self.task, task) {
            (TaskConfig::Binary { threshold, .. }, Some(ModelTask::Binary { threshold: t })) => {
                *threshold == t
            }
            _ => true,
        };
        if same_threshold {
            for (metric, value) in &model.metrics {
                telemetry.performance_reference.with_label_values(&[&self.stream, metric]).set(*value);
            }
            self.reference = Some(ReferencePerformance { rows: model.rows, metrics: model.metrics.clone() });
        } else {
            tracing::warn!(stream = %self.stream, reference_threshold = ?model.threshold, "the reference profile's performance was computed at another decision threshold: not used as a baseline (rebuild the profile with this config)");
        }
        if matches!(self.task, TaskConfig::Binary { .. }) {
            self.calibration = model.calibration.clone();
        }
    }

    /// The reference's figure for `metric`, when the profile has it.
    pub fn reference_metric(&self, metric: &str) -> Option<f64> {
        self.reference.as_ref()?.metrics.get(metric).copied()
    }

    fn empty_sketch(&self) -> PerformanceSketch {
        match &self.task {
            TaskConfig::Binary { threshold, .. } => PerformanceSketch::Binary(BinarySketch::new(*threshold)),
            TaskConfig::Multiclass { .. } => PerformanceSketch::Multiclass(MulticlassSketch::default()),
            TaskConfig::Regression { .. } => PerformanceSketch::Regression(RegressionSketch::default()),
        }
    }

    fn task_name(&self) -> &'static str {
        match self.task {
            TaskConfig::Binary { .. } => "binary",
            TaskConfig::Multiclass { .. } => "multiclass",
            TaskConfig::Regression { .. } => "regression",
        }
    }

    fn count(&mut self, outcome: &str) {
        *self.state.other.entry(outcome.to_owned()).or_insert(0) += 1;
    }

    /// A prediction message the stream accepted, read at processing time `now_ms`.
    /// Returns the outcome counted when it cannot take part (for the log).
    pub fn prediction(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        self.prediction_at(0, payload, key, now_ms)
    }

    /// [`Self::prediction`] of a message of partition `partition`.
    pub fn prediction_at(
        &mut self,
        partition: i32,
        payload: &[u8],
        key: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        let (read, event_time) = self.read_prediction(payload, key);
        self.record_prediction(partition, read, event_time, now_ms)
    }

    /// The predictions of a message of partition `partition` that the stream accepted
    /// as `rows` records: the message itself for a `json` stream, each row of the
    /// message for an `open_inference` one, read from `held` (the stream's decoder,
    /// holding the message). A message of one row has the id as is; row `i` of a
    /// batch of more rows has the id `<id>/<i>` (so the labels of a batch are keyed
    /// `req-7/0`, `req-7/1`, ...). A row without a usable prediction (the tensor
    /// missing or unusable, of other rows than the stream read) counts
    /// `bad_prediction`. Returns the last outcome counted (for the log).
    pub fn predictions_at(
        &mut self,
        partition: i32,
        payload: &[u8],
        key: Option<&[u8]>,
        rows: usize,
        now_ms: i64,
        held: Option<&dyn HeldPredictions>,
    ) -> Result<(), &'static str> {
        if !self.oip {
            return self.prediction_at(partition, payload, key, now_ms);
        }
        let mut result = Ok(());
        for row in 0..rows {
            let read = match held {
                Some(held) => self.read_row(held, row, rows, key),
                None => Err("bad_prediction"),
            };
            // Event-time windows: each row's event time as the stream's decoder read it.
            let event_time = match (held, &self.clock) {
                (Some(held), PerfClock::Event { .. }) => held.event_time_ms(row),
                _ => None,
            };
            if let Err(reason) = self.record_prediction(partition, read, event_time, now_ms) {
                result = Err(reason);
            }
        }
        result
    }

    /// Row `row` (of `rows`) of a decoded message: its id hash and prediction.
    fn read_row(
        &mut self,
        held: &dyn HeldPredictions,
        row: usize,
        rows: usize,
        key: Option<&[u8]>,
    ) -> Result<(u64, f64), &'static str> {
        let id = match &self.prediction_id {
            IdLocation::Protocol => held.protocol_id().map(str::as_bytes),
            IdLocation::Key => key,
            // Refused by the config's validation for this format.
            IdLocation::Pointer(_) => None,
        };
        let id = id.filter(|id| !id.is_empty()).ok_or("bad_id")?;
        let id = if rows == 1 {
            id_hash(id)
        } else {
            self.row_id.clear();
            self.row_id.extend_from_slice(id);
            let _ = write!(self.row_id, "/{row}");
            id_hash(&self.row_id)
        };
        let value = match (&self.task, held.prediction(row)) {
            (TaskConfig::Binary { .. }, Some(HeldValue::Number(x))) if (0.0..=1.0).contains(&x) => x,
            (TaskConfig::Multiclass { .. }, Some(HeldValue::Text(name))) => self.class_index_of(name),
            (TaskConfig::Regression { .. }, Some(HeldValue::Number(x))) if x.is_finite() => x,
            _ => return Err("bad_prediction"),
        };
        Ok((id, value))
    }

    /// Counts one record the stream accepted towards its window and joins its
    /// prediction (`read`: its id hash and value, or why it has none; `event_time`: the
    /// record's, for event-time windows).
    fn record_prediction(
        &mut self,
        partition: i32,
        read: Result<(u64, f64), &'static str>,
        event_time: EventTime,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        let now_ms = now_ms.max(self.state.clock_floor_ms);
        // Every record the stream accepted counts towards its count window, usable or
        // not, sampled or not, so performance windows are the stream's windows.
        let (window, due_ms, now_ms) = match self.clock {
            PerfClock::Count(size) => {
                let key = (self.state.predictions_seen / size.max(1)) as i64;
                self.state.predictions_seen += 1;
                (key, now_ms, now_ms)
            }
            PerfClock::Millis(size) => (now_ms.div_euclid(size), now_ms, now_ms),
            PerfClock::Event { size_ms, .. } => {
                // The stream does not window a record without a time a report can show.
                let Some(Ok(t)) = event_time.filter(|t| t.is_ok_and(|t| FORMATTABLE_MS.contains(&t))) else {
                    self.count("bad_event_time");
                    return Err("bad_event_time");
                };
                // As the stream's windows: the record raises the high-water mark, is
                // late or not by the windows closed before it, then the watermark moves.
                self.state.max_event_ms = Some(self.state.max_event_ms.map_or(t, |m| m.max(t)));
                let watermark = self.watermark().unwrap_or(i64::MIN);
                self.join_early_labels(watermark);
                (t.div_euclid(size_ms), t, watermark)
            }
        };
        let result = self.join_prediction(partition, read, window, due_ms, now_ms);
        match self.clock {
            PerfClock::Count(size) if self.state.predictions_seen % size.max(1) == 0 => {
                self.close_below(window + 1);
            }
            PerfClock::Event { size_ms, .. } => self.close_below(now_ms.div_euclid(size_ms)),
            _ => {}
        }
        result
    }

    /// Event-time windows: the highest event time read minus the allowed lateness
    /// (`None` before the first event time).
    fn watermark(&self) -> Option<i64> {
        match self.clock {
            PerfClock::Event { lateness_ms, .. } => {
                self.state.max_event_ms.map(|m| m.saturating_sub(lateness_ms))
            }
            PerfClock::Count(_) | PerfClock::Millis(_) => None,
        }
    }

    /// Joins the labels that waited for the first watermark, as read at `watermark`.
    fn join_early_labels(&mut self, watermark: i64) {
        if self.state.early_labels.is_empty() {
            return;
        }
        for (partition, id, value) in std::mem::take(&mut self.state.early_labels) {
            self.join.label_in(partition, id, value, watermark, &mut self.events);
        }
        self.apply_events();
    }

    /// `read`'s prediction in `window`, due from `due_ms` (its event time, or the clock
    /// at arrival) by the clock `now_ms`.
    fn join_prediction(
        &mut self,
        partition: i32,
        read: Result<(u64, f64), &'static str>,
        window: i64,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        let (id, value) = match read {
            Ok(v) => v,
            Err(reason) => {
                self.count(reason);
                return Err(reason);
            }
        };
        if window < self.state.closed_below {
            self.count("late");
            return Err("late");
        }
        self.ensure_window(window, due_ms);
        let arrival =
            self.join.prediction_due(partition, id, window, value, due_ms, now_ms, &mut self.events);
        if matches!(arrival, Arrival::Waiting | Arrival::Joined)
            && let Some(w) = self.state.windows.iter_mut().find(|w| w.key == window)
        {
            w.predictions += 1;
            w.end_ms = w.end_ms.max(due_ms);
            if let (Some(estimate), Some(calibration), TaskConfig::Binary { threshold, .. }) =
                (w.estimate.as_mut(), self.calibration.as_ref(), &self.task)
            {
                estimate.add(calibration.apply(value), value >= *threshold);
            }
        }
        self.apply_events();
        Ok(())
    }

    /// A label message read at processing time `now_ms`.
    pub fn label_message(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        self.label_message_at(0, payload, key, now_ms)
    }

    /// [`Self::label_message`] of a message of partition `partition`.
    pub fn label_message_at(
        &mut self,
        partition: i32,
        payload: &[u8],
        key: Option<&[u8]>,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        let now_ms = match self.clock {
            // A label has no event time: it waits from the watermark at its arrival.
            PerfClock::Event { .. } => self.watermark(),
            PerfClock::Count(_) | PerfClock::Millis(_) => Some(now_ms.max(self.state.clock_floor_ms)),
        };
        match self.read_label(payload, key) {
            Ok((id, value)) => {
                match now_ms {
                    Some(now_ms) => {
                        self.join.label_in(partition, id, value, now_ms, &mut self.events);
                        self.apply_events();
                    }
                    None => self.hold_early_label(partition, id, value),
                }
                Ok(())
            }
            Err(reason) => {
                self.count(reason);
                Err(reason)
            }
        }
    }

    /// A label read before the first event time: it waits for the watermark, under the
    /// join's cap (beyond it the oldest such label is evicted, and counted).
    fn hold_early_label(&mut self, partition: i32, id: u64, value: f64) {
        let settings = self.join.settings();
        if !crate::stats::label_join::sampled(id, settings.sample) {
            // Counted by the join as any label outside the sample.
            self.join.label_in(partition, id, value, i64::MIN, &mut self.events);
            return;
        }
        if self.state.early_labels.len() >= settings.max_pending.max(1) {
            self.state.early_labels.remove(0);
            self.count("labels_evicted");
        }
        self.state.early_labels.push((partition, id, value));
    }

    /// Takes the entries of partitions `partitions` out of the join (for a handover;
    /// nothing is counted yet: see [`Self::hand_over`] and [`Self::put_back`]).
    pub fn take_partitions(&mut self, partitions: &[i32]) -> Handed {
        self.join.take_partitions(partitions)
    }

    /// Entries taken out that stay here after all (their partition came back).
    pub fn put_back(&mut self, handed: Handed) {
        self.join.merge(handed, false, &mut self.events);
        self.apply_events();
    }

    /// Entries taken out that another instance took over: their waiting predictions
    /// are resolved here as `handed_over`.
    pub fn hand_over(&mut self, handed: &Handed) {
        self.join.count_handed_over(handed);
        for window in handed.waiting_predictions() {
            if let Some(w) = self.window_mut(window) {
                w.handed_over += 1;
            }
        }
        self.publish_counts();
    }

    /// Entries another instance handed over, with that instance's class names (their
    /// values are class indices there). A waiting prediction goes to the window of its
    /// prediction time when this instance holds it (time windows), else to the window
    /// open now; it is counted there as a prediction and as `adopted`.
    ///
    /// On event-time windows the entries' deadlines are event times (a prediction's
    /// event time + `ttl`, a label's watermark at arrival + `ttl`), so they hold against
    /// this instance's watermark as they did against the other's; a waiting prediction
    /// goes to the window of its event time unless this instance closed that window
    /// already (then to the oldest window open here).
    pub fn adopt(&mut self, mut handed: Handed, classes: &[String], now_ms: i64) {
        let now_ms = now_ms.max(self.state.clock_floor_ms);
        let current = match self.clock {
            PerfClock::Count(size) => (self.state.predictions_seen / size.max(1)) as i64,
            PerfClock::Millis(size) => now_ms.div_euclid(size),
            PerfClock::Event { size_ms, .. } => self.watermark().map_or(i64::MIN, |w| w.div_euclid(size_ms)),
        };
        let multiclass = matches!(self.task, TaskConfig::Multiclass { .. });
        let clock = self.clock;
        let closed_below = self.state.closed_below;
        let mut windows = Vec::new();
        let held_windows = &self.state.windows;
        handed.adapt(|side, window, value| {
            if side != HandedSide::Prediction {
                return (window, value);
            }
            let held = match clock {
                PerfClock::Count(_) => false,
                PerfClock::Millis(_) => held_windows.iter().any(|w| w.key == window),
                PerfClock::Event { .. } => window >= closed_below,
            };
            let window = if held { window } else { current };
            windows.push(window);
            (window, value)
        });
        if multiclass {
            // The other instance's class indices, by name, to this one's.
            let mut map = Vec::with_capacity(classes.len());
            for name in classes {
                map.push(self.class_index_of(name));
            }
            handed.adapt(|side, window, value| {
                if side == HandedSide::Joined {
                    return (window, value);
                }
                let index = value as usize;
                (window, map.get(index).copied().unwrap_or(MAX_CLASSES as f64))
            });
        }
        let count_windows = matches!(self.clock, PerfClock::Count(_));
        for window in windows {
            self.ensure_window(window, now_ms);
            if let Some(w) = self.window_mut(window) {
                w.predictions += 1;
                w.adopted += 1;
                if count_windows {
                    // A count window spans the times of its predictions.
                    w.end_ms = w.end_ms.max(now_ms);
                }
            }
        }
        self.join.merge(handed, true, &mut self.events);
        self.apply_events();
        self.publish_counts();
    }

    /// Class names by index (multiclass), for a handover record.
    pub fn classes(&self) -> &[String] {
        &self.state.classes
    }

    /// Moves the clock: expires what waited `ttl`, closes time windows that ended, and
    /// settles windows whose every prediction is resolved.
    /// On event-time windows processing time moves nothing: the watermark moved with
    /// each prediction already.
    pub fn tick(&mut self, now_ms: i64) {
        match self.clock {
            PerfClock::Count(_) | PerfClock::Millis(_) => {
                self.state.clock_floor_ms = self.state.clock_floor_ms.max(now_ms);
                self.join.expire(now_ms, &mut self.events);
                self.apply_events();
                if let PerfClock::Millis(size) = self.clock {
                    self.close_below(now_ms.div_euclid(size));
                }
            }
            PerfClock::Event { .. } => {
                if let Some(watermark) = self.watermark() {
                    self.join.expire(watermark, &mut self.events);
                    self.apply_events();
                }
            }
        }
        self.settle();
        self.publish_counts();
    }

    fn close_below(&mut self, key: i64) {
        self.state.closed_below = self.state.closed_below.max(key);
        for w in &mut self.state.windows {
            if w.key < key {
                w.closed = true;
            }
        }
    }

    fn settle(&mut self) {
        if self.panes > 1 {
            self.settle_sliding();
            return;
        }
        let mut i = 0;
        while i < self.state.windows.len() {
            let w = &self.state.windows[i];
            if w.closed && w.resolved() {
                let w = self.state.windows.remove(i);
                let view = w.view(PerformanceStatus::Final);
                for (metric, value) in &view.metrics {
                    self.performance.with_label_values(&[&self.stream, metric]).set(*value);
                }
                self.state.settled.push(view);
            } else {
                i += 1;
            }
        }
    }

    /// Sliding windows: the first window not settled yet (its last pane), or `None`
    /// with no pane held. Count windows start full (their first pane is pane 0).
    fn first_open_end(&self) -> Option<i64> {
        let oldest = self.state.windows.first()?.key;
        let mut end = self.state.next_end.unwrap_or(i64::MIN).max(oldest);
        if matches!(self.clock, PerfClock::Count(_)) {
            end = end.max(self.panes - 1);
        }
        Some(end)
    }

    /// Sliding windows: the window of panes `end - panes + 1 ..= end`, merged (`None`
    /// when no prediction fell in it).
    fn merged(&self, end: i64) -> Option<PerfWindow> {
        let start = end - self.panes + 1;
        let mut members = self.state.windows.iter().filter(|w| (start..=end).contains(&w.key));
        let mut window = members.next()?.clone();
        for pane in members {
            window.predictions += pane.predictions;
            window.labelled += pane.labelled;
            window.expired += pane.expired;
            window.evicted += pane.evicted;
            window.handed_over += pane.handed_over;
            window.adopted += pane.adopted;
            window.closed &= pane.closed;
            window.sketch.merge(&pane.sketch);
            if let (Some(e), Some(other)) = (window.estimate.as_mut(), pane.estimate.as_ref()) {
                e.merge(other);
            }
            window.end_ms = window.end_ms.max(pane.end_ms);
        }
        window.key = end;
        if let PerfClock::Millis(pane) | PerfClock::Event { size_ms: pane, .. } = self.clock {
            (window.start_ms, window.end_ms) = (start.saturating_mul(pane), (end + 1).saturating_mul(pane));
        }
        (window.predictions > 0).then_some(window)
    }

    /// Sliding windows settle in order, each once all its panes are closed and
    /// resolved; a pane is dropped once the last window holding it settled.
    fn settle_sliding(&mut self) {
        while let Some(end) = self.first_open_end() {
            let start = end - self.panes + 1;
            let ready = end < self.state.closed_below
                && self
                    .state
                    .windows
                    .iter()
                    .filter(|w| (start..=end).contains(&w.key))
                    .all(PerfWindow::resolved);
            if !ready {
                break;
            }
            if let Some(window) = self.merged(end) {
                let view = window.view(PerformanceStatus::Final);
                for (metric, value) in &view.metrics {
                    self.performance.with_label_values(&[&self.stream, metric]).set(*value);
                }
                self.state.settled.push(view);
            }
            self.state.next_end = Some(end + 1);
            self.state.windows.retain(|w| w.key > start);
        }
    }

    /// The `performance` section for the next report: windows settled since the last
    /// one, then the closed windows still waiting for labels.
    pub fn section(&mut self) -> PerformanceSection {
        let mut windows = std::mem::take(&mut self.state.settled);
        if self.panes > 1 {
            if let (Some(first), Some(newest)) =
                (self.first_open_end(), self.state.windows.last().map(|w| w.key))
            {
                let last =
                    self.state.closed_below.saturating_sub(1).min(newest.saturating_add(self.panes - 1));
                for end in first..=last {
                    windows.extend(self.merged(end).map(|w| w.view(PerformanceStatus::Provisional)));
                }
            }
        } else {
            windows.extend(
                self.state
                    .windows
                    .iter()
                    .filter(|w| w.closed)
                    .map(|w| w.view(PerformanceStatus::Provisional)),
            );
        }
        if let Some(newest) = windows.iter().max_by_key(|w| w.index) {
            self.label_coverage.with_label_values(&[&self.stream]).set(newest.label_coverage);
            for (metric, value) in newest.estimated.iter().flat_map(|e| &e.metrics) {
                self.performance_estimated.with_label_values(&[&self.stream, metric]).set(*value);
            }
        }
        PerformanceSection {
            task: self.task_name().into(),
            windows,
            counts: self.totals(),
            reference: self.reference.clone(),
        }
    }

    fn window_mut(&mut self, key: i64) -> Option<&mut PerfWindow> {
        self.state.windows.iter_mut().find(|w| w.key == key)
    }

    fn ensure_window(&mut self, key: i64, now_ms: i64) {
        if self.window_mut(key).is_some() {
            return;
        }
        let (start_ms, end_ms) = match self.clock {
            PerfClock::Count(_) => (now_ms, now_ms),
            PerfClock::Millis(size) | PerfClock::Event { size_ms: size, .. } => {
                (key.saturating_mul(size), key.saturating_mul(size).saturating_add(size))
            }
        };
        let sketch = self.empty_sketch();
        let estimate = self.calibration.as_ref().map(|_| EstimateSketch::default());
        let at = self.state.windows.partition_point(|w| w.key < key);
        self.state.windows.insert(
            at,
            PerfWindow {
                key,
                start_ms,
                end_ms,
                predictions: 0,
                labelled: 0,
                expired: 0,
                evicted: 0,
                handed_over: 0,
                adopted: 0,
                closed: false,
                sketch,
                estimate,
            },
        );
    }

    fn apply_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        for event in events.drain(..) {
            match event {
                JoinEvent::Joined { window, predicted, label, .. } => {
                    let classes = &self.state.classes;
                    let Some(w) = self.state.windows.iter_mut().find(|w| w.key == window) else { continue };
                    let added = match &mut w.sketch {
                        PerformanceSketch::Binary(b) => b.add(predicted, label >= 0.5).is_ok(),
                        PerformanceSketch::Multiclass(m) => {
                            let name = |v: f64| classes.get(v as usize).map_or(OTHER_CLASS, String::as_str);
                            m.add(name(predicted), name(label));
                            true
                        }
                        PerformanceSketch::Regression(r) => r.add(predicted, label).is_ok(),
                    };
                    if added {
                        w.labelled += 1;
                    } else {
                        // Values are checked when read: this cannot happen.
                        w.expired += 1;
                    }
                }
                JoinEvent::Expired { window } => {
                    if let Some(w) = self.window_mut(window) {
                        w.expired += 1;
                    }
                }
                JoinEvent::Evicted { window } => {
                    if let Some(w) = self.window_mut(window) {
                        w.evicted += 1;
                    }
                }
                JoinEvent::Orphan | JoinEvent::LabelEvicted | JoinEvent::MarkerEvicted => {}
            }
        }
        self.events = events;
    }

    /// The id hash of a message: of its Kafka key, or of the text at a pointer (a
    /// string's content, a number's JSON text).
    fn read_id(
        location: &IdLocation,
        raw: Option<&RawValue>,
        key: Option<&[u8]>,
    ) -> Result<u64, &'static str> {
        match location {
            IdLocation::Key => key.filter(|k| !k.is_empty()).map(id_hash).ok_or("bad_id"),
            // Refused by the config's validation for JSON messages.
            IdLocation::Protocol => Err("bad_id"),
            IdLocation::Pointer(_) => {
                let text = raw.ok_or("bad_id")?.get();
                if text.starts_with('"') {
                    let s = json_string(text).ok_or("bad_id")?;
                    if s.is_empty() { Err("bad_id") } else { Ok(id_hash(s.as_bytes())) }
                } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                    Ok(id_hash(text.as_bytes()))
                } else {
                    Err("bad_id")
                }
            }
        }
    }

    /// A class's index by its name (a new name gets the next index, up to the cap).
    fn class_index_of(&mut self, name: &str) -> f64 {
        let classes = &mut self.state.classes;
        let index = match classes.iter().position(|c| c == name) {
            Some(i) => i,
            None if classes.len() < MAX_CLASSES => {
                classes.push(name.to_owned());
                classes.len() - 1
            }
            None => MAX_CLASSES,
        };
        index as f64
    }

    /// A class's index (a string, or a number or boolean by its JSON text).
    fn class_index(&mut self, raw: &RawValue) -> Option<f64> {
        let text = raw.get();
        let name = if text.starts_with('"') {
            json_string(text)?
        } else if text == "true"
            || text == "false"
            || text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        {
            std::borrow::Cow::Borrowed(text)
        } else {
            return None;
        };
        let classes = &mut self.state.classes;
        let index = match classes.iter().position(|c| *c == name) {
            Some(i) => i,
            None if classes.len() < MAX_CLASSES => {
                classes.push(name.into_owned());
                classes.len() - 1
            }
            // Beyond the cap: an index past the table reads as the overflow class.
            None => MAX_CLASSES,
        };
        Some(index as f64)
    }

    /// A prediction message's id hash and prediction, and its event time (event-time
    /// windows of a `json` stream: read as the stream reads it).
    fn read_prediction(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
    ) -> (Result<(u64, f64), &'static str>, EventTime) {
        let id_pointer = match &self.prediction_id {
            IdLocation::Pointer(p) => Some(p.as_str()),
            IdLocation::Key | IdLocation::Protocol => None,
        };
        let Ok([id, value, time]) = json_pointer::lookup(
            payload,
            [id_pointer, Some(self.task.prediction_pointer()), self.event_time.as_deref()],
        ) else {
            return (Err("bad_json"), None);
        };
        (self.read_id_and_prediction(id, value, key), time.and_then(event_time_of))
    }

    fn read_id_and_prediction(
        &mut self,
        id: Option<&RawValue>,
        value: Option<&RawValue>,
        key: Option<&[u8]>,
    ) -> Result<(u64, f64), &'static str> {
        let id = Self::read_id(&self.prediction_id, id, key)?;
        let value = value.ok_or("bad_prediction")?;
        let value = match &self.task {
            TaskConfig::Binary { .. } => {
                number(value).filter(|s| (0.0..=1.0).contains(s)).ok_or("bad_prediction")?
            }
            TaskConfig::Multiclass { .. } => self.class_index(value).ok_or("bad_prediction")?,
            TaskConfig::Regression { .. } => number(value).ok_or("bad_prediction")?,
        };
        Ok((id, value))
    }

    fn read_label(&mut self, payload: &[u8], key: Option<&[u8]>) -> Result<(u64, f64), &'static str> {
        let id_pointer = match &self.label_id {
            IdLocation::Pointer(p) => Some(p.as_str()),
            IdLocation::Key | IdLocation::Protocol => None,
        };
        let [id, value] =
            json_pointer::lookup(payload, [id_pointer, Some(&self.label)]).map_err(|_| "bad_json")?;
        let id = Self::read_id(&self.label_id, id, key)?;
        let value = value.ok_or("bad_label")?;
        let value = match &self.task {
            TaskConfig::Binary { .. } => match value.get() {
                "true" => 1.0,
                "false" => 0.0,
                _ => number(value).filter(|v| *v == 0.0 || *v == 1.0).ok_or("bad_label")?,
            },
            TaskConfig::Multiclass { .. } => self.class_index(value).ok_or("bad_label")?,
            TaskConfig::Regression { .. } => number(value).ok_or("bad_label")?,
        };
        Ok((id, value))
    }

    /// Running totals by outcome.
    fn totals(&self) -> BTreeMap<String, u64> {
        let c = self.join.counts();
        let mut out: BTreeMap<String, u64> = [
            ("predictions", c.predictions),
            ("labels", c.labels),
            ("joined", c.joined),
            ("expired", c.expired),
            ("evicted", c.evicted),
            ("orphan", c.orphans),
            ("labels_evicted", c.labels_evicted),
            ("duplicate", c.duplicate_predictions + c.duplicate_labels),
            ("not_sampled", c.not_sampled),
            ("handed_over", c.handed_over),
            ("adopted", c.adopted),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in &self.state.other {
            *out.entry(k.clone()).or_insert(0) += *v;
        }
        out
    }

    /// Adds what the totals grew by since the last call to the Prometheus counters (a
    /// roll-back to a checkpoint lowers the totals; the counters wait until they pass
    /// what was published).
    fn publish_counts(&mut self) {
        let totals = self.totals();
        for outcome in OUTCOMES {
            let now = totals.get(outcome).copied().unwrap_or(0);
            let before = self.published.entry(outcome).or_insert(0);
            if now > *before {
                self.labels_total.with_label_values(&[&self.stream, outcome]).inc_by(now - *before);
                *before = now;
            }
        }
    }

    /// The state for a checkpoint.
    pub fn snapshot(&self) -> LabelsState {
        let mut state = self.state.clone();
        state.join = self.join.snapshot();
        state
    }

    /// Puts a checkpoint's state back (`None`: start empty).
    pub fn restore(&mut self, saved: Option<&LabelsState>) {
        match saved {
            Some(saved) => {
                self.state = saved.clone();
                self.join.restore(&saved.join, &mut self.events);
                self.state.join = JoinState::default();
                self.apply_events();
            }
            None => {
                self.state =
                    LabelsState { clock_floor_ms: i64::MIN, closed_below: i64::MIN, ..Default::default() };
                self.join.restore(&JoinState::default(), &mut self.events);
                self.events.clear();
            }
        }
    }
}

/// Start-up check of `performance` conditions without a `baseline`: every watched
/// stream with labels must have the metric in its reference profile. The error names
/// the condition's `baseline` key.
pub fn check_baselines(
    config: &crate::config::Config,
    labels: &[Option<StreamLabels>],
) -> Result<(), super::stream::StreamSetupError> {
    for (t, trigger) in config.triggers.iter().enumerate() {
        let Some(condition) = &trigger.condition.performance else { continue };
        if condition.baseline.is_some() {
            continue;
        }
        let watched = |name: &str| {
            trigger.condition.streams.is_empty() || trigger.condition.streams.iter().any(|s| s == name)
        };
        for (stream, joined) in config.streams.iter().zip(labels) {
            let Some(joined) = joined else { continue };
            if !watched(&stream.name) || joined.reference_metric(&condition.metric).is_some() {
                continue;
            }
            let columns = stream.labels.as_ref().map(reference_columns).unwrap_or_default();
            return Err(super::stream::StreamSetupError {
                key: format!("triggers[{t}].condition.performance.baseline"),
                message: format!(
                    "not set, and the reference profile of stream `{}` has no `{}` of the model to take instead; \
                     set `baseline`, or rebuild the profile with `driftscope reference build --config` from data \
                     with the label and prediction columns ({columns})",
                    stream.name, condition.metric
                ),
            });
        }
    }
    Ok(())
}

/// How the label and prediction columns of reference data are named, for messages.
fn reference_columns(labels: &LabelsConfig) -> String {
    use crate::config::labels::{column_of_pointer, column_of_prediction};
    let name = |column: Option<String>, pointer: &str| {
        column.map_or_else(|| format!("from `{pointer}`: not one column"), |c| format!("`{c}`"))
    };
    let prediction = labels.task.prediction_pointer();
    format!(
        "label {}, prediction {}",
        name(column_of_pointer(&labels.label), &labels.label),
        name(column_of_prediction(prediction), prediction)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn labels(window: &str, task: &str) -> (StreamLabels, Telemetry) {
        labels_with(window, task, "")
    }

    fn labels_with(window: &str, task: &str, extra: &str) -> (StreamLabels, Telemetry) {
        let text = format!(
            "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\nwindow = {window}\n\
             reference = {{ from_stream = 10 }}\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
             [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\n\
             ttl = \"10s\"\ntask = {task}\n{extra}\n"
        );
        let config = Config::from_toml(&text, Path::new("t.toml")).expect("config");
        let telemetry = Telemetry::new();
        let stream = &config.streams[0];
        let l = StreamLabels::new("s", stream.labels.as_ref().expect("labels"), &stream.window, &telemetry)
            .map_err(|e| e.message)
            .expect("labels");
        (l, telemetry)
    }

    const BINARY: &str = "{ type = \"binary\", score = \"/p\", threshold = 0.5 }";
    const COUNT4: &str = "{ type = \"tumbling_count\", size = 4 }";

    #[test]
    fn a_count_window_is_provisional_until_every_prediction_is_resolved() {
        let (mut l, telemetry) = labels(COUNT4, BINARY);
        for (i, p) in [0.9, 0.2, 0.7, 0.4].iter().enumerate() {
            l.prediction(format!(r#"{{"id": "r{i}", "p": {p}, "x": 1}}"#).as_bytes(), None, 0).expect("pred");
        }
        l.label_message(br#"{"y": 1}"#, Some(b"r0"), 1).expect("label");
        l.label_message(br#"{"y": true}"#, Some(b"r1"), 1).expect("label");
        l.label_message(br#"{"y": 0}"#, Some(b"r2"), 1).expect("label");
        l.tick(2);
        let s = l.section();
        assert_eq!(s.windows.len(), 1);
        assert_eq!(s.windows[0].status, PerformanceStatus::Provisional);
        assert_eq!(s.windows[0].label_coverage, 0.75);
        // r3 never gets its label: at the ttl it expires and the window is final.
        l.tick(10_001);
        let s = l.section();
        let w = &s.windows[0];
        assert_eq!((w.status, w.predictions, w.labelled, w.expired), (PerformanceStatus::Final, 4, 3, 1));
        // Joined: (0.9, 1) tp, (0.2, 1) fn, (0.7, 0) fp.
        assert!((w.metrics["accuracy"] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(w.metrics["precision"], 0.5);
        assert!(l.section().windows.is_empty(), "a final window is reported once");
        let text = telemetry.render();
        assert!(text.contains(r#"driftscope_labels_total{outcome="expired",stream="s"} 1"#), "{text}");
        assert!(text.contains(r#"driftscope_performance{metric="precision",stream="s"} 0.5"#), "{text}");
    }

    /// A binary model profile whose calibration maps a score `s` to about `s`.
    fn calibrated_model(threshold: f64) -> ModelProfile {
        use crate::stats::model_profile::{Cell, ModelProfileBuilder};
        let mut b = ModelProfileBuilder::new(ModelTask::Binary { threshold }, "y", "p");
        for i in 0..=100 {
            let s = f64::from(i) / 100.0;
            // Of ten rows at score s, round(10 s) are positive.
            for k in 0..10 {
                b.add(Cell::Number(f64::from(u8::from(f64::from(k) < (s * 10.0).round()))), Cell::Number(s));
            }
        }
        b.finish().expect("rows")
    }

    #[test]
    fn windows_carry_the_estimate_and_reports_the_reference() {
        let (mut l, telemetry) = labels(COUNT4, BINARY);
        l.use_reference(Some(&calibrated_model(0.5)), &telemetry);
        for (i, p) in [0.9, 0.2, 0.7, 0.4].iter().enumerate() {
            l.prediction(format!(r#"{{"id": "r{i}", "p": {p}}}"#).as_bytes(), None, 0).expect("pred");
        }
        // No label yet: the closed window is provisional and already has its estimate.
        l.tick(1);
        let s = l.section();
        let w = &s.windows[0];
        assert_eq!((w.status, w.labelled), (PerformanceStatus::Provisional, 0));
        let e = w.estimated.as_ref().expect("estimated");
        assert_eq!(e.predictions, 4);
        // Calibrated p = score: expected tp 0.9 + 0.7, fp 0.1 + 0.3, fn 0.2 + 0.4, tn 0.8 + 0.6.
        for (got, want) in e.expected_confusion.iter().zip([1.6, 0.4, 1.4, 0.6]) {
            assert!((got - want).abs() < 1e-9, "{:?}", e.expected_confusion);
        }
        assert!((e.metrics["accuracy"] - 0.75).abs() < 1e-9);
        assert!((e.metrics["precision"] - 0.8).abs() < 1e-9);
        let reference = s.reference.as_ref().expect("reference");
        assert_eq!(reference.rows, 1010);
        assert_eq!(l.reference_metric("accuracy"), Some(reference.metrics["accuracy"]));
        // The checkpoint keeps the estimate.
        let bytes = rmp_serde::to_vec_named(&l.snapshot()).expect("encode");
        let saved: LabelsState = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(saved.windows[0].estimate, l.state.windows[0].estimate);
        let text = telemetry.render();
        assert!(
            text.contains(r#"driftscope_performance_estimated{metric="accuracy",stream="s"} 0.75"#),
            "{text}"
        );
        assert!(text.contains(r#"driftscope_performance_reference{metric="f1",stream="s"}"#), "{text}");
        // A reference made at another threshold: its figures are no baseline, its
        // calibration still estimates.
        let (mut other, t2) = labels(COUNT4, BINARY);
        other.use_reference(Some(&calibrated_model(0.3)), &t2);
        assert!(other.reference.is_none() && other.calibration.is_some());
    }

    #[test]
    fn a_performance_condition_without_a_baseline_needs_the_references_figure() {
        let text = |baseline: &str| {
            format!(
                "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\nwindow = {COUNT4}\n\
                 reference = {{ from_stream = 10 }}\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
                 [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\n\
                 ttl = \"10s\"\ntask = {BINARY}\n\
                 [[triggers]]\nname = \"t\"\nkind = {{ type = \"webhook\", url = \"http://127.0.0.1:1/\", \
                 secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n\
                 condition = {{ performance = {{ metric = \"f1\", drop = 0.05{baseline} }} }}\n"
            )
        };
        let config = Config::from_toml(&text(""), Path::new("t.toml")).expect("config");
        let (mut l, telemetry) = labels(COUNT4, BINARY);
        let e = check_baselines(&config, std::slice::from_ref(&Some(l))).expect_err("no baseline anywhere");
        assert_eq!(e.key, "triggers[0].condition.performance.baseline");
        assert!(
            e.message.contains("stream `s`") && e.message.contains("label `y`, prediction `p`"),
            "{}",
            e.message
        );
        (l, _) = labels(COUNT4, BINARY);
        l.use_reference(Some(&calibrated_model(0.5)), &telemetry);
        check_baselines(&config, &[Some(l)]).expect("the reference's f1 is the baseline");
        let explicit = Config::from_toml(&text(", baseline = 0.8"), Path::new("t.toml")).expect("config");
        let (l, _) = labels(COUNT4, BINARY);
        check_baselines(&explicit, &[Some(l)]).expect("an explicit baseline needs no reference");
    }

    /// Labels of a `json` stream on event-time windows of 1 s (event time `/ts`),
    /// allowed lateness 500 ms, `ttl` 2 s.
    fn event_labels() -> (StreamLabels, Telemetry) {
        let text = "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
                    window = { type = \"tumbling_time\", size = \"1s\", time = \"event\", allowed_lateness = \"500ms\" }\n\
                    reference = { from_stream = 10 }\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
                    [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\n\
                    ttl = \"2s\"\ntask = { type = \"binary\", score = \"/p\" }\n";
        let config = Config::from_toml(text, Path::new("t.toml")).expect("config");
        let telemetry = Telemetry::new();
        let stream = &config.streams[0];
        let l = StreamLabels::of_stream(stream, stream.labels.as_ref().expect("labels"), &telemetry)
            .map_err(|e| e.message)
            .expect("labels");
        (l, telemetry)
    }

    fn at(l: &mut StreamLabels, id: &str, p: f64, ts: i64) -> Result<(), &'static str> {
        // Processing time is far from the event times, and moves nothing.
        l.prediction(format!(r#"{{"id": "{id}", "p": {p}, "ts": {ts}}}"#).as_bytes(), None, 99_000_000)
    }

    fn label(l: &mut StreamLabels, id: &str, y: u8) {
        l.label_message(format!(r#"{{"y": {y}}}"#).as_bytes(), Some(id.as_bytes()), 99_000_000)
            .expect("label");
    }

    #[test]
    fn event_time_windows_group_by_event_time_and_expire_on_the_watermark() {
        let (mut l, telemetry) = event_labels();
        // Before any event time there is no watermark: the label waits for it.
        label(&mut l, "e", 1);
        assert_eq!(l.state.early_labels.len(), 1);
        at(&mut l, "p0", 0.9, 10_300).expect("pred"); // watermark 9_800; e's label waits until 11_800
        at(&mut l, "p1", 0.8, 10_900).expect("pred"); // watermark 10_400
        at(&mut l, "p2", 0.2, 10_100).expect("out of order, window 10 still open"); // due 12_100
        at(&mut l, "e", 0.7, 11_200).expect("pred"); // watermark 10_700: joins its early label
        label(&mut l, "p1", 0);
        at(&mut l, "p3", 0.6, 12_400).expect("pred"); // watermark 11_900: window 10 closed
        assert_eq!(at(&mut l, "late", 0.5, 10_500), Err("late"));
        l.tick(0);
        let s = l.section();
        let w10 = &s.windows[0];
        assert_eq!(
            (w10.index, w10.status, w10.predictions, w10.labelled),
            (10, PerformanceStatus::Provisional, 3, 1)
        );
        assert_eq!(
            (w10.start.as_str(), w10.end.as_str()),
            ("1970-01-01T00:00:10.000Z", "1970-01-01T00:00:11.000Z")
        );
        // Watermark 12_150: p2 (due 12_100) expires, p0 (due 12_300, ahead of it) waits.
        at(&mut l, "p4", 0.4, 12_650).expect("pred");
        label(&mut l, "p0", 1);
        label(&mut l, "p2", 0);
        l.tick(0);
        let s = l.section();
        let finals: Vec<_> = s.windows.iter().filter(|w| w.status == PerformanceStatus::Final).collect();
        assert_eq!(finals.len(), 2, "{s:?}");
        let (w10, w11) = (finals[0], finals[1]);
        assert_eq!((w10.index, w10.predictions, w10.labelled, w10.expired), (10, 3, 2, 1));
        // p0 (0.9, 1) tp, p1 (0.8, 0) fp.
        assert_eq!(w10.confusion, Some([1, 1, 0, 0]));
        assert_eq!((w11.index, w11.predictions, w11.labelled), (11, 1, 1));
        assert_eq!(w11.confusion, Some([1, 0, 0, 0]));
        assert_eq!((s.counts["late"], s.counts["expired"], s.counts["joined"]), (1, 1, 3));
        // p2's label came after its deadline: it waits as an orphan (expires at 14_150).
        assert_eq!(s.counts["orphan"], 0);
        at(&mut l, "p5", 0.4, 14_649).expect("pred");
        l.tick(0);
        assert_eq!(l.section().counts["orphan"], 0);
        at(&mut l, "p6", 0.4, 14_650).expect("pred");
        l.tick(0);
        assert_eq!(l.section().counts["orphan"], 1);
        // Processing time moves nothing: p3 (due 14_400) expires with the watermark only.
        l.tick(i64::MAX / 2);
        assert_eq!(l.section().counts["expired"], 1);
        at(&mut l, "p7", 0.4, 14_900).expect("pred");
        l.tick(0);
        assert_eq!(l.section().counts["expired"], 2);
        let text = telemetry.render();
        assert!(text.contains(r#"driftscope_labels_total{outcome="late",stream="s"} 1"#), "{text}");
    }

    #[test]
    fn event_time_join_state_survives_a_checkpoint_mid_join() {
        let (mut l, _t) = event_labels();
        label(&mut l, "early", 1);
        let bytes = rmp_serde::to_vec_named(&l.snapshot()).expect("encode");
        let (mut back, _t2) = event_labels();
        back.restore(Some(&rmp_serde::from_slice(&bytes).expect("decode")));
        for l in [&mut l, &mut back] {
            at(l, "a", 0.9, 5_000).expect("pred");
            at(l, "b", 0.1, 5_900).expect("pred");
            at(l, "c", 0.3, 5_200).expect("pred");
        }
        let bytes = rmp_serde::to_vec_named(&l.snapshot()).expect("encode");
        let (mut back, _t3) = event_labels();
        back.restore(Some(&rmp_serde::from_slice(&bytes).expect("decode")));
        for l in [&mut l, &mut back] {
            label(l, "a", 1);
            at(l, "early", 0.8, 6_100).expect("pred");
            label(l, "a", 1);
            at(l, "d", 0.5, 7_600).expect("pred"); // watermark 7_100: c expires, a and b do not
            label(l, "b", 1);
            at(l, "f", 0.5, 8_500).expect("pred"); // watermark 8_000: b's marker and a's end
            l.tick(0);
        }
        let (a, b) = (l.section(), back.section());
        assert_eq!(a, b);
        let w5 = a.windows.iter().find(|w| w.index == 5).expect("window 5");
        assert_eq!((w5.status, w5.predictions, w5.labelled, w5.expired), (PerformanceStatus::Final, 3, 2, 1));
        assert_eq!(w5.confusion, Some([1, 0, 0, 1]));
        assert_eq!((a.counts["duplicate"], a.counts["joined"]), (1, 3));
    }

    #[test]
    fn handed_over_event_time_entries_keep_their_event_time_deadlines() {
        let pred = |l: &mut StreamLabels, partition: i32, id: &str, ts: i64| {
            let payload = format!(r#"{{"id": "{id}", "p": 0.9, "ts": {ts}}}"#);
            l.prediction_at(partition, payload.as_bytes(), None, 0).expect("pred");
        };
        let (mut old, _t) = event_labels();
        pred(&mut old, 5, "a", 10_300); // due 12_300
        pred(&mut old, 5, "b", 10_600); // due 12_600
        pred(&mut old, 0, "c", 12_000); // watermark 11_500
        let handed = old.take_partitions(&[5]);
        old.hand_over(&handed);
        // A new owner behind: window 10 is open there, the entries go to it.
        let (mut behind, _t2) = event_labels();
        pred(&mut behind, 1, "n", 9_800); // watermark 9_300
        behind.adopt(handed.clone(), &[], 99_000_000);
        behind.label_message_at(5, br#"{"y": 1}"#, Some(b"a"), 0).expect("label");
        pred(&mut behind, 1, "m", 13_099); // watermark 12_599: b (due 12_600) waits
        behind.tick(0);
        assert_eq!(behind.section().counts["expired"], 1, "n (due 11_800) alone");
        pred(&mut behind, 1, "m2", 13_100); // watermark 12_600: b expires
        behind.tick(0);
        let s = behind.section();
        let w10 = s.windows.iter().find(|w| w.index == 10).expect("window 10");
        assert_eq!(
            (w10.status, w10.predictions, w10.adopted, w10.labelled, w10.expired),
            (PerformanceStatus::Final, 2, 2, 1, 1)
        );
        assert_eq!(
            (w10.start.as_str(), w10.end.as_str()),
            ("1970-01-01T00:00:10.000Z", "1970-01-01T00:00:11.000Z")
        );
        // A new owner ahead closed window 10: they go to its oldest open window, 12,
        // and a (due 12_300) expires at once by its watermark 12_500.
        let (mut ahead, _t3) = event_labels();
        pred(&mut ahead, 1, "z", 13_000);
        ahead.adopt(handed, &[], 0);
        ahead.tick(0);
        let s = ahead.section();
        assert!(s.windows.iter().all(|w| w.index != 10), "{s:?}");
        assert_eq!(s.counts["expired"], 1);
        let w12 = ahead.state.windows.iter().find(|w| w.key == 12).expect("window 12");
        assert_eq!((w12.predictions, w12.adopted, w12.expired), (2, 2, 1));
    }

    #[test]
    fn a_prediction_without_a_usable_event_time_is_counted_not_joined() {
        let (mut l, _t) = event_labels();
        assert_eq!(l.prediction(br#"{"id": "a", "p": 0.5}"#, None, 0), Err("bad_event_time"));
        assert_eq!(l.prediction(br#"{"id": "a", "p": 0.5, "ts": "soon"}"#, None, 0), Err("bad_event_time"));
        assert_eq!(l.prediction(br#"{"id": "a", "p": 0.5, "ts": -5}"#, None, 0), Err("bad_event_time"));
        // RFC 3339 text works as the stream reads it.
        l.prediction(br#"{"id": "a", "p": 0.5, "ts": "2024-01-01T00:00:01.500+01:00"}"#, None, 0)
            .expect("pred");
        assert_eq!(l.state.max_event_ms, Some(1_704_063_601_500));
        let counts = l.section().counts;
        assert_eq!((counts["bad_event_time"], counts["predictions"]), (3, 1));
    }

    #[test]
    fn a_sliding_count_window_merges_its_panes_and_settles_in_order() {
        let (mut l, telemetry) = labels("{ type = \"sliding_count\", size = 4, slide = 2 }", BINARY);
        let scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.7];
        for (i, p) in scores.iter().enumerate() {
            l.prediction(format!(r#"{{"id": "r{i}", "p": {p}}}"#).as_bytes(), None, 0).expect("pred");
        }
        for (id, y) in [("r0", 1), ("r1", 0), ("r2", 1), ("r4", 0), ("r5", 1)] {
            l.label_message(format!(r#"{{"y": {y}}}"#).as_bytes(), Some(id.as_bytes()), 1).expect("label");
        }
        l.tick(2);
        // Panes 0 (r0, r1), 1 (r2, r3), 2 (r4, r5): windows end at panes 1 and 2 (count
        // windows start full), both waiting for r3.
        let s = l.section();
        let views: Vec<_> =
            s.windows.iter().map(|w| (w.index, w.status, w.predictions, w.labelled)).collect();
        assert_eq!(
            views,
            [(1, PerformanceStatus::Provisional, 4, 3), (2, PerformanceStatus::Provisional, 4, 3)]
        );
        // A checkpoint mid-join continues the same.
        let bytes = rmp_serde::to_vec_named(&l.snapshot()).expect("encode");
        let (mut back, _t) = labels("{ type = \"sliding_count\", size = 4, slide = 2 }", BINARY);
        back.restore(Some(&rmp_serde::from_slice(&bytes).expect("decode")));
        l.tick(10_001);
        back.tick(10_001);
        let s = l.section();
        assert_eq!(s, back.section());
        assert_eq!(s.windows.len(), 2, "{s:?}");
        let (w1, w2) = (&s.windows[0], &s.windows[1]);
        // Window 1: r0 tp, r1 fp, r2 fn, r3 expired; window 2: r2 fn, r4 tn, r5 tp, r3 expired.
        assert_eq!(
            (w1.index, w1.status, w1.expired, w1.confusion),
            (1, PerformanceStatus::Final, 1, Some([1, 1, 0, 1]))
        );
        assert_eq!(
            (w2.index, w2.status, w2.expired, w2.confusion),
            (2, PerformanceStatus::Final, 1, Some([1, 0, 1, 1]))
        );
        assert_eq!(w2.metrics["accuracy"], 2.0 / 3.0);
        assert!(l.section().windows.is_empty(), "each window is reported final once");
        // Pane 1 was dropped with window 2; pane 2 waits for window 3.
        assert_eq!(l.state.windows.iter().map(|w| w.key).collect::<Vec<_>>(), [2]);
        let text = telemetry.render();
        assert!(text.contains(r#"driftscope_labels_total{outcome="expired",stream="s"} 1"#), "{text}");
    }

    #[test]
    fn a_sliding_processing_time_window_closes_with_the_clock() {
        let window = "{ type = \"sliding_time\", size = \"2s\", slide = \"1s\" }";
        let (mut l, _t) = labels(window, BINARY);
        // Nothing is closed yet: no window to report, provisional or final.
        assert!(l.section().windows.is_empty());
        l.prediction(br#"{"id": "a", "p": 0.9}"#, None, 10_200).expect("pred");
        l.prediction(br#"{"id": "b", "p": 0.2}"#, None, 11_500).expect("pred");
        l.label_message(br#"{"y": 1}"#, Some(b"a"), 11_600).expect("label");
        l.tick(12_000);
        let s = l.section();
        let views: Vec<_> =
            s.windows.iter().map(|w| (w.index, w.status, w.predictions, w.labelled)).collect();
        // Window 10 (panes 9-10) is final; window 11 (10-11) waits for b.
        assert_eq!(views, [(10, PerformanceStatus::Final, 1, 1), (11, PerformanceStatus::Provisional, 2, 1)]);
        l.label_message(br#"{"y": 1}"#, Some(b"b"), 12_100).expect("label");
        l.tick(13_000);
        let s = l.section();
        let views: Vec<_> =
            s.windows.iter().map(|w| (w.index, w.status, w.predictions, w.confusion)).collect();
        assert_eq!(
            views,
            [
                (11, PerformanceStatus::Final, 2, Some([1, 0, 0, 1])),
                (12, PerformanceStatus::Final, 1, Some([0, 0, 0, 1]))
            ]
        );
    }

    #[test]
    fn a_sliding_event_time_window_holds_every_pane_it_covers() {
        let text = "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
                    window = { type = \"sliding_time\", size = \"2s\", slide = \"1s\", time = \"event\", allowed_lateness = \"500ms\" }\n\
                    reference = { from_stream = 10 }\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
                    [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\n\
                    ttl = \"2s\"\ntask = { type = \"binary\", score = \"/p\" }\n";
        let config = Config::from_toml(text, Path::new("t.toml")).expect("config");
        let stream = &config.streams[0];
        let mut l =
            StreamLabels::of_stream(stream, stream.labels.as_ref().expect("labels"), &Telemetry::new())
                .map_err(|e| e.message)
                .expect("labels");
        at(&mut l, "a", 0.9, 10_200).expect("pred");
        at(&mut l, "b", 0.1, 11_700).expect("pred");
        at(&mut l, "c", 0.8, 11_100).expect("pred");
        for (id, y) in [("a", 1), ("b", 1), ("c", 0)] {
            label(&mut l, id, y);
        }
        at(&mut l, "d", 0.5, 14_000).expect("pred"); // watermark 13_500: panes 10-12 closed
        l.tick(0);
        let s = l.section();
        let views: Vec<_> = s
            .windows
            .iter()
            .map(|w| (w.index, w.start.as_str(), w.predictions, w.labelled, w.confusion.unwrap_or_default()))
            .collect();
        // Windows end at panes 10 (9-10: a), 11 (10-11: a, b, c) and 12 (11-12: b, c).
        assert_eq!(
            views,
            [
                (10, "1970-01-01T00:00:09.000Z", 1, 1, [1, 0, 0, 0]),
                (11, "1970-01-01T00:00:10.000Z", 3, 3, [1, 1, 0, 1]),
                (12, "1970-01-01T00:00:11.000Z", 2, 2, [0, 1, 0, 1]),
            ]
        );
        assert!(s.windows.iter().all(|w| w.status == PerformanceStatus::Final));
    }

    #[test]
    fn bad_messages_are_counted_by_reason_never_joined() {
        let (mut l, _t) = labels(COUNT4, BINARY);
        assert_eq!(l.prediction(br#"{"p": 0.5}"#, None, 0), Err("bad_id"));
        assert_eq!(l.prediction(br#"{"id": "a", "p": 1.5}"#, None, 0), Err("bad_prediction"));
        assert_eq!(l.label_message(br#"{"y": 1}"#, None, 0), Err("bad_id"));
        assert_eq!(l.label_message(br#"{"y": "yes"}"#, Some(b"a"), 0), Err("bad_label"));
        assert_eq!(l.label_message(b"not json", Some(b"a"), 0), Err("bad_json"));
        let totals = l.totals();
        assert_eq!((totals["bad_id"], totals["bad_prediction"], totals["bad_label"]), (2, 1, 1));
        assert_eq!(totals["joined"], 0);
    }

    #[test]
    fn the_state_survives_a_checkpoint_round_trip() {
        let (mut l, _t) = labels(COUNT4, "{ type = \"multiclass\", predicted = \"/c\" }");
        for (i, c) in ["a", "b", "a"].iter().enumerate() {
            l.prediction(format!(r#"{{"id": {i}, "c": "{c}"}}"#).as_bytes(), None, 0).expect("pred");
        }
        l.label_message(br#"{"y": "a"}"#, Some(b"0"), 0).expect("label");
        let bytes = rmp_serde::to_vec_named(&l.snapshot()).expect("encode");
        let saved: LabelsState = rmp_serde::from_slice(&bytes).expect("decode");
        let (mut back, _t2) = labels(COUNT4, "{ type = \"multiclass\", predicted = \"/c\" }");
        back.restore(Some(&saved));
        for l in [&mut l, &mut back] {
            l.label_message(br#"{"y": "a"}"#, Some(b"0"), 1).expect("duplicate");
            l.label_message(br#"{"y": "a"}"#, Some(b"1"), 1).expect("label");
            l.label_message(br#"{"y": "a"}"#, Some(b"2"), 1).expect("label");
            l.prediction(br#"{"id": 3, "c": "b"}"#, None, 1).expect("pred");
            l.label_message(br#"{"y": "b"}"#, Some(b"3"), 1).expect("label");
            l.tick(2);
        }
        let (a, b) = (l.section(), back.section());
        assert_eq!(a, b);
        assert_eq!(a.windows[0].status, PerformanceStatus::Final);
        assert_eq!(a.windows[0].metrics["accuracy"], 0.75);
        assert_eq!(a.counts["duplicate"], 1);
    }

    #[test]
    fn a_moved_partitions_predictions_are_handed_over_here_and_adopted_there() {
        let multiclass = "{ type = \"multiclass\", predicted = \"/c\" }";
        let (mut old, _t) = labels(COUNT4, multiclass);
        let (mut new, telemetry) = labels(COUNT4, multiclass);
        // The new owner numbers classes otherwise: "b" is its class 0.
        new.prediction_at(1, br#"{"id": "n0", "c": "b"}"#, None, 0).expect("pred");
        for (i, (partition, c)) in [(0, "a"), (5, "b"), (5, "a"), (0, "b")].iter().enumerate() {
            old.prediction_at(*partition, format!(r#"{{"id": "r{i}", "c": "{c}"}}"#).as_bytes(), None, 0)
                .expect("pred");
        }
        old.label_message_at(0, br#"{"y": "a"}"#, Some(b"r0"), 1).expect("label");
        old.label_message_at(0, br#"{"y": "b"}"#, Some(b"r3"), 1).expect("label");
        // Partition 5 moves: r1 and r2 wait there.
        let handed = old.take_partitions(&[5]);
        old.hand_over(&handed);
        old.tick(2);
        let s = old.section();
        let w = &s.windows[0];
        assert_eq!((w.status, w.predictions, w.labelled, w.handed_over), (PerformanceStatus::Final, 4, 2, 2));
        assert_eq!(s.counts["handed_over"], 2);
        let classes = old.classes().to_vec();
        new.adopt(handed, &classes, 3);
        // r1 ("b") is labelled "b", r2 ("a") "b": one right, one wrong, in the new
        // owner's open window, by the new owner's class numbers.
        new.label_message_at(5, br#"{"y": "b"}"#, Some(b"r1"), 4).expect("label");
        new.label_message_at(5, br#"{"y": "b"}"#, Some(b"r2"), 4).expect("label");
        new.label_message_at(5, br#"{"y": "b"}"#, Some(b"r2"), 4).expect("duplicate");
        new.label_message_at(1, br#"{"y": "b"}"#, Some(b"n0"), 4).expect("label");
        for (i, c) in ["a", "a", "a"].iter().enumerate() {
            new.prediction_at(1, format!(r#"{{"id": "m{i}", "c": "{c}"}}"#).as_bytes(), None, 5)
                .expect("pred");
        }
        new.tick(10_010);
        let s = new.section();
        let w = &s.windows[0];
        assert_eq!((w.status, w.predictions, w.adopted), (PerformanceStatus::Final, 6, 2), "{w:?}");
        assert_eq!((w.labelled, w.expired), (3, 3), "{w:?}");
        assert!((w.metrics["accuracy"] - 2.0 / 3.0).abs() < 1e-12, "{w:?}");
        assert_eq!((s.counts["adopted"], s.counts["orphan"], s.counts["duplicate"]), (2, 0, 1));
        let text = telemetry.render();
        assert!(text.contains(r#"driftscope_labels_total{outcome="adopted",stream="s"} 2"#), "{text}");
    }

    #[test]
    fn count_windows_are_the_streams_windows_whatever_the_sample_and_bad_records() {
        let (mut l, _t) = labels_with(COUNT4, BINARY, "sample = 0.5");
        let mut sampled = 0;
        for i in 0..8 {
            let id = format!("r{i}");
            sampled += u64::from(crate::stats::label_join::sampled(id_hash(id.as_bytes()), 0.5));
            l.prediction(format!(r#"{{"id": "{id}", "p": 0.5}}"#).as_bytes(), None, 0).expect("pred");
        }
        // A bad record is a record of the stream's window too.
        assert_eq!(l.prediction(br#"{"p": 0.5}"#, None, 0), Err("bad_id"));
        l.tick(20_000);
        let s = l.section();
        let total: u64 = s.windows.iter().map(|w| w.predictions).sum();
        assert_eq!(total, sampled, "{s:?}");
        assert!(s.windows.iter().all(|w| w.index < 2), "8 records make windows 0 and 1: {s:?}");
        assert_eq!(l.state.predictions_seen, 9);
    }

    /// An `open_inference` stream's labels (its prediction key names a tensor) and the
    /// stream's decoder, which reads the prediction with the monitored tensor `x`.
    struct Oip {
        labels: StreamLabels,
        decoder: crate::decode::open_inference::OpenInference,
    }

    impl Oip {
        fn new(task: &str, prediction_id: &str, columns: &str) -> Oip {
            let text = format!(
                "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"open_inference\"\nwindow = {COUNT4}\n\
                 reference = {{ from_stream = 10 }}\n[streams.open_inference]\nmessage = \"response\"\n{columns}\n\
                 [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
                 [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"{prediction_id}\"\nlabel_id = \"key\"\n\
                 label = \"/y\"\nttl = \"10s\"\ntask = {task}\n"
            );
            let config = Config::from_toml(&text, Path::new("t.toml")).expect("config");
            let stream = &config.streams[0];
            let mut labels = StreamLabels::new(
                "s",
                stream.labels.as_ref().expect("labels"),
                &stream.window,
                &Telemetry::new(),
            )
            .map_err(|e| e.message)
            .expect("labels");
            labels.use_open_inference(stream).map_err(|e| e.message).expect("open_inference");
            let x = crate::decode::FieldBinding {
                name: "x".into(),
                path: None,
                feature: 0,
                kind: crate::stats::settings::FeatureKind::Numeric,
            };
            let decoder = crate::decode::open_inference::OpenInference::for_stream(stream, &[x])
                .map_err(|e| e.message)
                .expect("decoder");
            Oip { labels, decoder }
        }

        /// Decodes `payload` as the stream does, then joins its rows' predictions.
        fn predictions(&mut self, payload: &[u8], key: Option<&[u8]>) -> Result<(), &'static str> {
            use crate::decode::{Decoder, HeldPredictions};
            let rows = self.decoder.decode_message(payload, key).expect("the stream accepts the response");
            type Stream =
                dyn Decoder<crate::stats::sketch::WindowSketch, crate::stats::profile::ProfileBuilder>;
            let held: Option<&dyn HeldPredictions> = (&self.decoder as &Stream).held_predictions();
            self.labels.predictions_at(0, payload, key, rows, 0, held)
        }
    }

    /// A protobuf ModelInferResponse with request id `id`, the stream's tensor `x` of
    /// `rows` rows and one FP32 output tensor.
    fn response_of(id: &str, rows: i64, tensor: &str, shape: Vec<i64>, values: &[f32]) -> Vec<u8> {
        use crate::decode::open_inference::proto::model_infer_response::InferOutputTensor;
        use crate::decode::open_inference::proto::{InferTensorContents, ModelInferResponse};
        use prost::Message as _;
        let fp32 = |name: &str, shape: Vec<i64>, values: Vec<f32>| InferOutputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
            contents: Some(InferTensorContents { fp32_contents: values, ..Default::default() }),
            ..Default::default()
        };
        ModelInferResponse {
            id: id.into(),
            outputs: vec![
                fp32("x", vec![rows], (0..rows).map(|r| r as f32).collect()),
                fp32(tensor, shape, values.to_vec()),
            ],
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// [`response_of`] with `x` of the prediction tensor's rows.
    fn response(id: &str, tensor: &str, shape: Vec<i64>, values: &[f32]) -> Vec<u8> {
        response_of(id, shape[0], tensor, shape, values)
    }

    #[test]
    fn open_inference_rows_join_by_protocol_id_and_batch_rows_by_id_slash_row() {
        let mut o = Oip::new("{ type = \"binary\", score = \"prob\" }", "protocol", "");
        // One row: the id as is. Three rows: `b/0`, `b/1`, `b/2`. The key is not the id.
        o.predictions(&response("a", "prob", vec![1], &[0.9]), Some(b"k")).expect("one row");
        o.predictions(&response("b", "prob", vec![3], &[0.8, 0.3, 0.6]), Some(b"k")).expect("batch");
        let l = &mut o.labels;
        for (id, y) in [("a", "1"), ("b/0", "0"), ("b/1", "0"), ("b/2", "1")] {
            l.label_message(format!(r#"{{"y": {y}}}"#).as_bytes(), Some(id.as_bytes()), 1).expect("label");
        }
        l.tick(2);
        let s = l.section();
        let w = &s.windows[0];
        assert_eq!((w.status, w.predictions, w.labelled), (PerformanceStatus::Final, 4, 4));
        // (0.9, 1) tp, (0.8, 0) fp, (0.3, 0) tn, (0.6, 1) tp.
        assert_eq!(w.confusion, Some([2, 1, 1, 0]));
        assert_eq!(s.counts["orphan"], 0);
    }

    #[test]
    fn open_inference_predictions_read_a_column_by_name_a_class_or_a_value() {
        // Column 1 of a [N, 2] tensor, named by `open_inference.columns`.
        let mut o = Oip::new(
            "{ type = \"binary\", score = \"p_fraud\" }",
            "protocol",
            "columns = { probs = [\"p_legit\", \"p_fraud\"] }",
        );
        o.predictions(&response("r", "probs", vec![1, 2], &[0.2, 0.8]), None).expect("column");
        o.labels.label_message(br#"{"y": 1}"#, Some(b"r"), 1).expect("label");
        o.labels.tick(2);
        assert_eq!(o.labels.section().counts["joined"], 1);
        // Classes from a numeric tensor by their text; the id from the Kafka key.
        let mut o = Oip::new("{ type = \"multiclass\", predicted = \"class\" }", "key", "");
        o.predictions(&response("ignored", "class", vec![4], &[2.0, 7.0, 1.0, 1.0]), Some(b"m"))
            .expect("classes");
        for (id, y) in [("m/0", 2), ("m/1", 3), ("m/2", 1), ("m/3", 0)] {
            o.labels
                .label_message(format!(r#"{{"y": {y}}}"#).as_bytes(), Some(id.as_bytes()), 1)
                .expect("label");
        }
        o.labels.tick(2);
        let s = o.labels.section();
        assert_eq!((s.counts["joined"], s.windows[0].metrics["accuracy"]), (4, 0.5));
        // Regression: the value itself.
        let mut o = Oip::new("{ type = \"regression\", prediction = \"y_hat\" }", "protocol", "");
        o.predictions(&response("v", "y_hat", vec![1], &[3.5]), None).expect("value");
        o.labels.label_message(br#"{"y": 1.5}"#, Some(b"v"), 1).expect("label");
        o.labels.tick(2);
        assert_eq!(o.labels.section().counts["joined"], 1);
    }

    #[test]
    fn open_inference_rows_without_an_id_or_a_usable_prediction_are_counted() {
        let mut o = Oip::new("{ type = \"binary\", score = \"prob\" }", "protocol", "");
        // No protocol id (the key does not stand in for it).
        assert_eq!(o.predictions(&response("", "prob", vec![1], &[0.5]), Some(b"k")), Err("bad_id"));
        // No prediction tensor: each of the stream's rows is a bad prediction (the
        // stream still takes the message).
        assert_eq!(o.predictions(&response("r", "other", vec![2], &[0.5, 0.5]), None), Err("bad_prediction"));
        // A score outside [0, 1], and a prediction tensor of other rows than the stream read.
        assert_eq!(o.predictions(&response("r", "prob", vec![1], &[1.5]), None), Err("bad_prediction"));
        assert_eq!(o.predictions(&response_of("r", 2, "prob", vec![1], &[0.5]), None), Err("bad_prediction"));
        let counts = o.labels.section().counts;
        assert_eq!((counts["bad_id"], counts["bad_prediction"], counts["predictions"]), (1, 5, 0));
    }
}
