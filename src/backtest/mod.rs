//! `driftscope backtest`: history replayed through a config's windows, reference,
//! verdicts, sequential detectors and trigger conditions, without consuming from a live
//! group. The replay goes through the monitor's own stream code
//! ([`StreamState`]), so what it reports is what `run` would have done: records from a
//! data file are handed over as Arrow IPC messages (cut at count-pane boundaries, one
//! row number per message start), records from a topic as they are.
//!
//! What it measures, per feature and per trigger: windows, alarms, the alarm rate over
//! spans the user marks clean, the delay from marked change points to the first alarm,
//! and the false-alarm rate over windows resampled from the reference itself
//! ([`crate::stats::resample`]). The summary is plain data, printed as a table or JSON.
//! A stream with labels replayed from a data file is also measured for realized
//! performance per window ([`labels`]).

pub mod labels;

use crate::config::{Config, MessageFormat, StreamConfig};
use crate::decode::{DecodeContext, Message};
use crate::monitor::stream::StreamState;
use crate::outputs::triggers::TriggerConfig;
use crate::outputs::triggers::condition::{self, Episode, Step};
use crate::stats::resample::NullWindows;
use crate::stats::sequential::SequentialState;
use crate::stats::window::ClosedWindow;
use crate::stats::{Reference, Report, Status, WindowInfo, score_window};
use arrow::record_batch::RecordBatch;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{0}")]
    Setup(String),
    #[error("column `{column}` is not in the data (the stream monitors it{hint})")]
    MissingColumn { column: String, hint: String },
    #[error("row {row}: event time in column `{column}` is missing or not a time (epoch ms or RFC 3339)")]
    BadEventTime { row: u64, column: String },
    #[error(
        "row {row}: event time {time} is before the previous row's {previous}: a backtest replays rows in order; sort the file by `{column}`"
    )]
    UnorderedEventTime { row: u64, column: String, time: String, previous: String },
    #[error("`{value}` is not a row number or an RFC 3339 time")]
    BadPosition { value: String },
    #[error("`{value}` is not a span `FROM..TO` of row numbers or RFC 3339 times")]
    BadSpan { value: String },
    #[error("{0}")]
    Encode(String),
}

/// A place in the replayed history: a row number (files; offsets on a one-partition
/// topic) or a time (ms since the Unix epoch: event time, or the message time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Row(u64),
    TimeMs(i64),
}

impl Position {
    pub fn parse(value: &str) -> Result<Position, BacktestError> {
        let v = value.trim().replace('_', "");
        if let Ok(row) = v.parse::<u64>() {
            return Ok(Position::Row(row));
        }
        humantime::parse_rfc3339_weak(value.trim())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .map(Position::TimeMs)
            .ok_or_else(|| BacktestError::BadPosition { value: value.to_owned() })
    }
}

/// `[from, to)`, both rows or both times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub from: Position,
    pub to: Position,
}

impl Span {
    pub fn parse(value: &str) -> Result<Span, BacktestError> {
        let bad = || BacktestError::BadSpan { value: value.to_owned() };
        let (a, b) = value.split_once("..").ok_or_else(bad)?;
        let (from, to) = (Position::parse(a).map_err(|_| bad())?, Position::parse(b).map_err(|_| bad())?);
        match (from, to) {
            (Position::Row(x), Position::Row(y)) if x < y => Ok(Span { from, to }),
            (Position::TimeMs(x), Position::TimeMs(y)) if x < y => Ok(Span { from, to }),
            _ => Err(bad()),
        }
    }

    fn contains(&self, w: &WindowOutcome) -> bool {
        match (self.from, self.to) {
            (Position::Row(a), Position::Row(b)) => {
                w.first_row.is_some_and(|f| f >= a) && w.last_row.is_some_and(|l| l < b)
            }
            (Position::TimeMs(a), Position::TimeMs(b)) => w.start_ms >= a && w.end_ms < b,
            _ => false,
        }
    }
}

/// What the user asks of a backtest besides the replay.
#[derive(Debug, Clone, Default)]
pub struct BacktestOptions {
    pub clean: Vec<Span>,
    pub change_at: Vec<Position>,
    /// Null windows to resample from the reference (0: none).
    pub null_windows: usize,
    /// Records per null window; default: the replayed windows' median.
    pub null_records: Option<u64>,
    pub seed: u64,
}

/// One scored window, reduced to what the summary needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowOutcome {
    pub index: u64,
    pub first_row: Option<u64>,
    pub last_row: Option<u64>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub records: u64,
    /// Per feature: evaluated, drifted, sequential alarm.
    pub evaluated: Vec<bool>,
    pub drifted: Vec<bool>,
    pub sequential_alarm: Vec<bool>,
    pub dataset_drifted: bool,
    /// Per trigger: fired in this window.
    pub fired: Vec<bool>,
    /// Realized performance (streams with labels, replayed from a data file).
    pub performance: Option<crate::stats::performance::WindowPerformance>,
}

impl WindowOutcome {
    fn alarmed(&self) -> bool {
        self.drifted.iter().any(|&d| d) || self.fired.iter().any(|&f| f)
    }

    fn after(&self, p: Position) -> bool {
        match p {
            Position::Row(r) => self.last_row.is_some_and(|l| l >= r),
            Position::TimeMs(t) => self.end_ms >= t,
        }
    }
}

/// Scores closed windows as the monitor does: verdicts, sequential detectors, triggers.
pub struct Evaluator {
    reference: Arc<Reference>,
    sequential: SequentialState,
    triggers: Vec<(TriggerConfig, Episode)>,
    fired_seq: u64,
}

/// The triggers whose condition watches `stream`.
fn watching<'a>(triggers: &'a [TriggerConfig], stream: &'a str) -> impl Iterator<Item = &'a TriggerConfig> {
    triggers
        .iter()
        .filter(move |t| t.condition.streams.is_empty() || t.condition.streams.iter().any(|s| s == stream))
}

impl Evaluator {
    pub fn new(reference: Arc<Reference>, stream: &str, triggers: &[TriggerConfig]) -> Evaluator {
        let triggers = watching(triggers, stream).map(|t| (t.clone(), Episode::default())).collect();
        Evaluator { reference, sequential: SequentialState::default(), triggers, fired_seq: 0 }
    }

    /// Scores one window and steps the detectors and trigger episodes.
    pub fn evaluate(&mut self, mut report: Report, end_ms: i64) -> (Report, Vec<bool>) {
        let settings = &self.reference.settings;
        self.sequential.update(&mut report, settings.alpha_sequential);
        let mut fired = Vec::with_capacity(self.triggers.len());
        for (trigger, episode) in &mut self.triggers {
            let verdict = match &trigger.condition.labels {
                Some(labels) => episode.labels_verdict(labels.at_least, &report),
                None => condition::evaluate(&trigger.condition, &report).0,
            };
            let step = episode.step(verdict, end_ms, &trigger.condition);
            if step == Step::Fire {
                self.fired_seq += 1;
                episode.fired(end_ms, self.fired_seq, &trigger.condition);
                if let Some(joined) = condition::joined_labels(&report) {
                    episode.labels_mark = joined;
                }
            }
            fired.push(step == Step::Fire);
        }
        (report, fired)
    }
}

fn outcome(
    report: &Report,
    fired: Vec<bool>,
    start_ms: i64,
    end_ms: i64,
    rows: Option<(u64, u64)>,
) -> WindowOutcome {
    WindowOutcome {
        index: report.window.index,
        first_row: rows.map(|r| r.0),
        last_row: rows.map(|r| r.1),
        start_ms,
        end_ms,
        records: report.window.records,
        evaluated: report.features.iter().map(|f| f.status == Status::Ok).collect(),
        drifted: report.features.iter().map(|f| f.drifted).collect(),
        sequential_alarm: report.features.iter().map(|f| f.sequential.is_some_and(|s| s.alarm)).collect(),
        dataset_drifted: report.dataset.drifted,
        fired,
        performance: report.performance.as_ref().and_then(|p| p.windows.first().cloned()),
    }
}

/// A replay in progress: the stream's own decoding and windowing, then the evaluator.
pub struct Replay {
    state: StreamState,
    evaluator: Option<Evaluator>,
    stream: StreamConfig,
    triggers: Vec<TriggerConfig>,
    closed: Vec<ClosedWindow>,
    /// For file replays: each message's first row -> its last row.
    message_rows: BTreeMap<i64, u64>,
    pub windows: Vec<WindowOutcome>,
    pub invalid_records: u64,
    /// Event time of the previous row (file replays), for the order check.
    previous_time: Option<i64>,
    /// A file replay of a stream with labels: its prediction and label columns.
    labels: Option<labels::FileLabels>,
}

/// The stream to replay: `--stream`, or the config's only one.
pub fn pick_stream<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<(usize, &'a StreamConfig), BacktestError> {
    match name {
        Some(n) => config
            .streams
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == n)
            .ok_or_else(|| BacktestError::Setup(format!("no [[streams]] entry is named `{n}`"))),
        None if config.streams.len() == 1 => Ok((0, &config.streams[0])),
        None if config.streams.is_empty() => {
            Err(BacktestError::Setup("the config has no [[streams]]".into()))
        }
        None => Err(BacktestError::Setup(format!(
            "the config has {} streams: name one with --stream ({})",
            config.streams.len(),
            config.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl Replay {
    /// A replay of `stream` of `config`. For a file (`file_columns = Some(event time
    /// column)`) the stream reads Arrow IPC with fields addressed by name; state that a
    /// stream-taken reference would write goes to a temporary directory, never the
    /// config's `state.dir`.
    pub fn new(
        config: &Config,
        index: usize,
        file_event_time: Option<Option<String>>,
        scratch_dir: &std::path::Path,
    ) -> Result<Replay, BacktestError> {
        let mut config = config.clone();
        config.state.dir = scratch_dir.to_path_buf();
        let mut stream = config.streams[index].clone();
        let file_labels = match (&file_event_time, &stream.labels) {
            (Some(_), Some(l)) => Some(labels::FileLabels::new(l, index)?),
            _ => None,
        };
        if let Some(event_time) = file_event_time {
            stream.format = MessageFormat::ArrowIpc;
            stream.event_time_field = event_time;
            for f in &mut stream.fields {
                f.path = None;
            }
        }
        config.streams[index] = stream.clone();
        let telemetry = crate::telemetry::Telemetry::new();
        // A topic's Confluent-framed Avro or Protobuf needs the registry here too.
        let decoding: DecodeContext = crate::ingest::registry::offline_decode_context(&config)
            .map_err(|e| BacktestError::Setup(e.to_string()))?;
        let state = StreamState::new(index, &stream, &config, &decoding, telemetry.stream(&stream.name))
            .map_err(|e| BacktestError::Setup(e.to_string()))?;
        Ok(Replay {
            state,
            evaluator: None,
            stream,
            triggers: config.triggers.clone(),
            closed: Vec::new(),
            message_rows: BTreeMap::new(),
            windows: Vec::new(),
            invalid_records: 0,
            previous_time: None,
            labels: file_labels,
        })
    }

    pub fn reference(&self) -> Option<&Arc<Reference>> {
        self.state.reference()
    }

    /// Feeds one data-file batch whose first row is `first_row`. Checks that the
    /// monitored columns exist and that event times are present and in order.
    pub fn feed_batch(
        &mut self,
        batch: &RecordBatch,
        first_row: u64,
        pane_records: Option<u64>,
    ) -> Result<(), BacktestError> {
        if first_row == 0 {
            let schema = batch.schema();
            let wanted: Vec<String> = match self.state.reference() {
                Some(r) => r.features.iter().map(|f| f.name.clone()).collect(),
                None => self.stream.fields.iter().map(|f| f.name.clone()).collect(),
            };
            for column in wanted {
                if schema.field_with_name(&column).is_err() {
                    return Err(BacktestError::MissingColumn { column, hint: String::new() });
                }
            }
            for (column, hint) in self.labels.iter().flat_map(|l| l.required_columns()) {
                if schema.field_with_name(column).is_err() {
                    return Err(BacktestError::MissingColumn {
                        column: column.to_owned(),
                        hint: hint.into(),
                    });
                }
            }
            if let Some(c) = &self.stream.event_time_field
                && schema.field_with_name(c).is_err()
            {
                return Err(BacktestError::MissingColumn {
                    column: c.clone(),
                    hint: " as its event time; name another with --event-time".into(),
                });
            }
        }
        let mut times: Vec<Option<i64>> = Vec::new();
        if let Some(column) = self.stream.event_time_field.clone() {
            times = crate::decode::arrow::event_times_ms(batch, &column);
            for (i, t) in times.iter().enumerate() {
                let row = first_row + i as u64;
                let Some(t) = *t else {
                    return Err(BacktestError::BadEventTime { row, column });
                };
                if let Some(previous) = self.previous_time
                    && t < previous
                {
                    return Err(BacktestError::UnorderedEventTime {
                        row,
                        column,
                        time: crate::monitor::format_ms(t),
                        previous: crate::monitor::format_ms(previous),
                    });
                }
                self.previous_time = Some(t);
            }
        }
        if let Some(labels) = &mut self.labels {
            labels.push_batch(batch, first_row)?;
        }
        // Cut at count-pane boundaries, so that every window's rows are exact, and at
        // time-pane boundaries, so that a processing-time window (replayed on the event
        // times, the only clock a file has) gets exactly its rows.
        let pane_ms = match crate::monitor::stream::window_spec(&self.stream.window).0.clock {
            crate::stats::window::PaneClock::Millis { pane_ms, .. } => Some(pane_ms),
            crate::stats::window::PaneClock::Records(_) => None,
        };
        let mut row = 0usize;
        while row < batch.num_rows() {
            let at = first_row + row as u64;
            let mut len = (batch.num_rows() - row).min(4096);
            if let Some(per_pane) = pane_records.filter(|&p| p > 0) {
                len = len.min((per_pane - at % per_pane) as usize);
            }
            let now = times.get(row).copied().flatten().unwrap_or(at as i64);
            if let (Some(pane_ms), Some(_)) = (pane_ms, times.get(row)) {
                let pane = now.div_euclid(pane_ms);
                len = times[row..row + len]
                    .iter()
                    .position(|t| t.is_some_and(|t| t.div_euclid(pane_ms) != pane))
                    .unwrap_or(len);
            }
            let slice = batch.slice(row, len);
            let message = encode_ipc(&slice)?;
            self.message_rows.insert(at as i64, at + len as u64 - 1);
            if self.state.process(&Message::value(&message), 0, at as i64, now, &mut self.closed).is_err() {
                self.invalid_records += len as u64;
            }
            // Processing-time windows close on the clock, here the replayed one.
            self.state.tick(now, &mut self.closed);
            self.drain_closed();
            row += len;
        }
        Ok(())
    }

    /// Feeds one Kafka message (`source` numbers the partition).
    pub fn feed_message(&mut self, payload: &[u8], source: u32, offset: i64, time_ms: i64) {
        if self.state.process(&Message::value(payload), source, offset, time_ms, &mut self.closed).is_err() {
            self.invalid_records += 1;
        }
        self.state.tick(time_ms, &mut self.closed);
        self.drain_closed();
    }

    fn drain_closed(&mut self) {
        if self.closed.is_empty() {
            return;
        }
        let Some(reference) = self.state.reference().cloned() else {
            self.closed.clear();
            return;
        };
        let stream_name = self.stream.name.clone();
        let evaluator = self
            .evaluator
            .get_or_insert_with(|| Evaluator::new(reference.clone(), &stream_name, &self.triggers));
        for window in self.closed.drain(..) {
            let one_source = window.spans.windows(2).all(|w| w[0].source == w[1].source);
            let rows = if self.message_rows.is_empty() {
                // A topic: rows are offsets, meaningful when they come from one partition.
                let first = window.spans.iter().map(|s| s.first).min();
                let last = window.spans.iter().map(|s| s.last).max();
                match (first, last) {
                    (Some(f), Some(l)) if one_source => Some((f as u64, l as u64)),
                    _ => None,
                }
            } else {
                let first = window.spans.iter().map(|s| s.first).min();
                let last = window.spans.iter().map(|s| s.last).max();
                match (first, last) {
                    (Some(f), Some(l)) => {
                        let last_row = self.message_rows.get(&l).copied().unwrap_or(l as u64);
                        Some((f as u64, last_row))
                    }
                    _ => None,
                }
            };
            let info = WindowInfo {
                start: crate::monitor::format_ms(window.start_ms),
                end: crate::monitor::format_ms(window.end_ms),
                index: window.index,
                ..WindowInfo::default()
            };
            let bounds = (info.start.clone(), info.end.clone());
            let mut report = score_window(&reference, &window.sketch, info);
            if let (Some(labels), Some((first, last))) = (&mut self.labels, rows) {
                labels.use_reference(reference.profile.model.as_deref());
                report.performance = Some(labels.window(window.index, bounds.0, bounds.1, first, last));
            }
            let (report, fired) = evaluator.evaluate(report, window.end_ms);
            self.windows.push(outcome(&report, fired, window.start_ms, window.end_ms, rows));
        }
        // Rows of messages below every open window are no longer needed.
        if let Some(lowest) = self.state.lowest_open_offset(0) {
            self.message_rows = self.message_rows.split_off(&lowest);
            if let (Some(labels), Ok(row)) = (&mut self.labels, u64::try_from(lowest)) {
                labels.forget_before(row);
            }
        }
    }

    pub fn trigger_names(&self) -> Vec<String> {
        watching(&self.triggers, &self.stream.name).map(|t| t.name.clone()).collect()
    }
}

fn encode_ipc(batch: &RecordBatch) -> Result<Vec<u8>, BacktestError> {
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
        .map_err(|e| BacktestError::Encode(e.to_string()))?;
    writer.write(batch).map_err(|e| BacktestError::Encode(e.to_string()))?;
    writer.finish().map_err(|e| BacktestError::Encode(e.to_string()))?;
    drop(writer);
    Ok(out)
}

/// `n` null windows of `records` records resampled from the reference, through fresh
/// detectors and trigger episodes.
pub fn null_outcomes(
    reference: &Arc<Reference>,
    stream: &str,
    triggers: &[TriggerConfig],
    n: usize,
    records: u64,
    seed: u64,
) -> Vec<WindowOutcome> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut null = NullWindows::new(reference);
    let mut evaluator = Evaluator::new(reference.clone(), stream, triggers);
    let mut sketch = reference.new_window();
    let window_ms = 60_000;
    (0..n)
        .map(|i| {
            sketch.reset();
            null.draw(&mut rng, records, &mut sketch);
            let info = WindowInfo { index: i as u64, ..WindowInfo::default() };
            let report = score_window(reference, &sketch, info);
            let end_ms = (i as i64 + 1) * window_ms;
            let (report, fired) = evaluator.evaluate(report, end_ms);
            outcome(&report, fired, end_ms - window_ms, end_ms, None)
        })
        .collect()
}

/// A feature's or trigger's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub name: String,
    pub windows: usize,
    /// Windows it alarmed in (drifted; for triggers, fired).
    pub alarms: usize,
    /// Sequential detector alarms (features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_alarms: Option<usize>,
    pub clean_windows: usize,
    pub clean_alarms: usize,
    /// `clean_alarms / clean_windows`, absent without clean windows.
    pub clean_alarm_rate: Option<f64>,
    /// Per change point: windows from the first window that ends after it to the first
    /// alarm, inclusive (1: the first such window alarmed); absent when none alarmed.
    pub delays_windows: Vec<Option<usize>>,
    /// Per change point: rows (or ms) from it to the end of the first alarming window.
    pub delays: Vec<Option<i64>>,
    /// Over the null windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_alarm_rate: Option<f64>,
}

/// The whole result.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub stream: String,
    pub rule: String,
    pub windows: usize,
    pub invalid_records: u64,
    pub change_points: Vec<Position>,
    pub features: Vec<Figures>,
    pub dataset: Figures,
    pub triggers: Vec<Figures>,
    pub null_windows: usize,
    pub null_records_per_window: u64,
    /// Share of null windows in which any feature drifted or any trigger fired.
    pub null_false_alarm_rate: Option<f64>,
    /// Share of clean windows in which any feature drifted or any trigger fired.
    pub clean_false_alarm_rate: Option<f64>,
    /// Realized performance per window (streams with labels, from a data file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub performance: Vec<PerformanceOutcome>,
}

/// One window's realized performance in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerformanceOutcome {
    pub window: u64,
    pub first_row: Option<u64>,
    pub last_row: Option<u64>,
    pub predictions: u64,
    pub labelled: u64,
    pub label_coverage: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Estimated from the calibrated scores (binary, with a calibrated reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated: Option<BTreeMap<String, f64>>,
}

impl Summary {
    /// The highest of the two false-alarm rates, what `--max-false-alarm-rate` checks.
    pub fn worst_false_alarm_rate(&self) -> Option<f64> {
        match (self.clean_false_alarm_rate, self.null_false_alarm_rate) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

fn rate(hits: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| hits as f64 / of as f64)
}

/// Figures of one series of alarms over the windows.
fn figures(
    name: String,
    windows: &[WindowOutcome],
    nulls: &[WindowOutcome],
    options: &BacktestOptions,
    alarm: impl Fn(&WindowOutcome) -> bool,
    counted: impl Fn(&WindowOutcome) -> bool,
) -> Figures {
    let counted_windows: Vec<&WindowOutcome> = windows.iter().filter(|w| counted(w)).collect();
    let clean: Vec<&&WindowOutcome> =
        counted_windows.iter().filter(|w| options.clean.iter().any(|s| s.contains(w))).collect();
    let clean_alarms = clean.iter().filter(|w| alarm(w)).count();
    let mut delays_windows = Vec::new();
    let mut delays = Vec::new();
    for &p in &options.change_at {
        let after: Vec<&&WindowOutcome> = counted_windows.iter().filter(|w| w.after(p)).collect();
        let first = after.iter().position(|w| alarm(w));
        delays_windows.push(first.map(|i| i + 1));
        delays.push(first.map(|i| match p {
            Position::Row(r) => after[i].last_row.map_or(0, |l| l as i64 - r as i64),
            Position::TimeMs(t) => after[i].end_ms - t,
        }));
    }
    let null_counted: Vec<&WindowOutcome> = nulls.iter().filter(|w| counted(w)).collect();
    Figures {
        name,
        windows: counted_windows.len(),
        alarms: counted_windows.iter().filter(|w| alarm(w)).count(),
        sequential_alarms: None,
        clean_windows: clean.len(),
        clean_alarms,
        clean_alarm_rate: rate(clean_alarms, clean.len()),
        delays_windows,
        delays,
        null_alarm_rate: (!nulls.is_empty()).then(|| {
            rate(null_counted.iter().filter(|w| alarm(w)).count(), null_counted.len()).unwrap_or(0.0)
        }),
    }
}

/// What was replayed, for the summary's header and rows.
pub struct Replayed<'a> {
    pub stream: &'a str,
    pub rule: &'a str,
    pub feature_names: &'a [String],
    pub trigger_names: &'a [String],
    pub invalid_records: u64,
}

/// Summarises replayed (and null) windows.
pub fn summarize(
    replayed: &Replayed<'_>,
    windows: &[WindowOutcome],
    nulls: &[WindowOutcome],
    options: &BacktestOptions,
) -> Summary {
    let Replayed { stream, rule, feature_names, trigger_names, invalid_records } = *replayed;
    let mut features: Vec<Figures> = feature_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut f = figures(
                name.clone(),
                windows,
                nulls,
                options,
                |w| w.drifted.get(i).copied().unwrap_or(false),
                |w| w.evaluated.get(i).copied().unwrap_or(false),
            );
            f.sequential_alarms =
                Some(windows.iter().filter(|w| w.sequential_alarm.get(i).copied().unwrap_or(false)).count());
            f
        })
        .collect();
    features.sort_by(|a, b| {
        feature_names.iter().position(|n| *n == a.name).cmp(&feature_names.iter().position(|n| *n == b.name))
    });
    let dataset = figures("dataset".into(), windows, nulls, options, |w| w.dataset_drifted, |_| true);
    let triggers = trigger_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            figures(
                name.clone(),
                windows,
                nulls,
                options,
                |w| w.fired.get(i).copied().unwrap_or(false),
                |_| true,
            )
        })
        .collect();
    let clean: Vec<&WindowOutcome> =
        windows.iter().filter(|w| options.clean.iter().any(|s| s.contains(w))).collect();
    Summary {
        stream: stream.to_owned(),
        rule: rule.to_owned(),
        windows: windows.len(),
        invalid_records,
        change_points: options.change_at.clone(),
        features,
        dataset,
        triggers,
        null_windows: nulls.len(),
        null_records_per_window: nulls.first().map_or(0, |w| w.records),
        null_false_alarm_rate: rate(nulls.iter().filter(|w| w.alarmed()).count(), nulls.len()),
        clean_false_alarm_rate: rate(clean.iter().filter(|w| w.alarmed()).count(), clean.len()),
        performance: windows
            .iter()
            .filter_map(|w| {
                let p = w.performance.as_ref()?;
                Some(PerformanceOutcome {
                    window: w.index,
                    first_row: w.first_row,
                    last_row: w.last_row,
                    predictions: p.predictions,
                    labelled: p.labelled,
                    label_coverage: p.label_coverage,
                    metrics: p.metrics.clone(),
                    estimated: p.estimated.as_ref().map(|e| e.metrics.clone()),
                })
            })
            .collect(),
    }
}

/// Windows of realized performance the table lists at most.
const PERFORMANCE_ROWS: usize = 50;

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.2}%", 100.0 * r))
}

fn fmt_delays(windows: &[Option<usize>], delays: &[Option<i64>], unit: &str) -> String {
    if windows.is_empty() {
        return "-".into();
    }
    windows
        .iter()
        .zip(delays)
        .map(|(w, d)| match (w, d) {
            (Some(w), Some(d)) => format!("{w} win ({d} {unit})"),
            _ => "never".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Summary {
    /// The table `--format table` prints.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let unit = match self.change_points.first() {
            Some(Position::TimeMs(_)) => "ms",
            _ => "rows",
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "backtest of stream `{}` ({} windows, rule {}, {} invalid records)",
            self.stream, self.windows, self.rule, self.invalid_records
        );
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>8} {:>8} {:>10} {:>12} {:>10}  delay from change points",
            "feature / trigger", "windows", "alarms", "seq", "clean", "clean rate", "null rate"
        );
        let row = |out: &mut String, f: &Figures, label: &str| {
            let _ = writeln!(
                out,
                "{:<28} {:>8} {:>8} {:>8} {:>10} {:>12} {:>10}  {}",
                format!("{label}{}", f.name),
                f.windows,
                f.alarms,
                f.sequential_alarms.map_or("-".into(), |s| s.to_string()),
                f.clean_windows,
                fmt_rate(f.clean_alarm_rate),
                fmt_rate(f.null_alarm_rate),
                fmt_delays(&f.delays_windows, &f.delays, unit)
            );
        };
        for f in &self.features {
            row(&mut out, f, "");
        }
        row(&mut out, &self.dataset, "");
        for t in &self.triggers {
            row(&mut out, t, "trigger ");
        }
        if self.null_windows > 0 {
            let _ = writeln!(
                out,
                "null: {} windows of {} records resampled from the reference; false-alarm rate (any feature or trigger) {}",
                self.null_windows,
                self.null_records_per_window,
                fmt_rate(self.null_false_alarm_rate)
            );
        }
        if self.clean_false_alarm_rate.is_some() {
            let _ = writeln!(
                out,
                "clean spans: false-alarm rate (any feature or trigger) {}",
                fmt_rate(self.clean_false_alarm_rate)
            );
        }
        if !self.performance.is_empty() {
            let _ = writeln!(out, "realized performance per window (from the file's labels):");
            for p in self.performance.iter().take(PERFORMANCE_ROWS) {
                let rows = match (p.first_row, p.last_row) {
                    (Some(f), Some(l)) => format!("rows {f}-{l}"),
                    _ => String::new(),
                };
                let metrics: Vec<String> = ["accuracy", "f1", "roc_auc", "macro_f1", "mae", "rmse"]
                    .iter()
                    .filter_map(|m| p.metrics.get(*m).map(|v| format!("{m} {v:.4}")))
                    .collect();
                let _ = writeln!(
                    out,
                    "  window {:>4} {:<20} {}  (labelled {} of {})",
                    p.window,
                    rows,
                    metrics.join(", "),
                    p.labelled,
                    p.predictions
                );
            }
            if self.performance.len() > PERFORMANCE_ROWS {
                let _ = writeln!(
                    out,
                    "  ... {} more windows (`--format json` lists every one)",
                    self.performance.len() - PERFORMANCE_ROWS
                );
            }
        }
        out
    }
}

/// The median records of the replayed windows (the default null window size).
pub fn median_records(windows: &[WindowOutcome]) -> Option<u64> {
    let mut r: Vec<u64> = windows.iter().map(|w| w.records).filter(|&r| r > 0).collect();
    r.sort_unstable();
    r.get(r.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(index: u64, rows: (u64, u64), drifted: bool, fired: bool) -> WindowOutcome {
        WindowOutcome {
            index,
            first_row: Some(rows.0),
            last_row: Some(rows.1),
            start_ms: index as i64 * 1000,
            end_ms: index as i64 * 1000 + 999,
            records: rows.1 - rows.0 + 1,
            evaluated: vec![true],
            drifted: vec![drifted],
            sequential_alarm: vec![false],
            dataset_drifted: drifted,
            fired: vec![fired],
            performance: None,
        }
    }

    #[test]
    fn clean_rates_and_delays() {
        let windows: Vec<WindowOutcome> =
            (0..10).map(|i| window(i, (i * 100, i * 100 + 99), i == 2 || i >= 7, i == 8)).collect();
        let options = BacktestOptions {
            clean: vec![Span::parse("0..500").unwrap()],
            change_at: vec![Position::Row(650), Position::Row(950)],
            ..BacktestOptions::default()
        };
        let replayed = Replayed {
            stream: "s",
            rule: "significant_effect",
            feature_names: &["x".into()],
            trigger_names: &["t".into()],
            invalid_records: 0,
        };
        let s = summarize(&replayed, &windows, &[], &options);
        let x = &s.features[0];
        assert_eq!((x.windows, x.alarms, x.clean_windows, x.clean_alarms), (10, 4, 5, 1));
        assert_eq!(x.clean_alarm_rate, Some(0.2));
        // Change at row 650: window 6 (600..699) is the first after it, 7 alarms.
        assert_eq!(x.delays_windows, vec![Some(2), Some(1)]);
        assert_eq!(x.delays, vec![Some(799 - 650), Some(999 - 950)]);
        assert_eq!(s.triggers[0].delays_windows, vec![Some(3), None]);
        assert_eq!(s.clean_false_alarm_rate, Some(0.2));
    }

    #[test]
    fn spans_and_positions_parse_or_name_the_bad_value() {
        assert_eq!(Position::parse("1_000").unwrap(), Position::Row(1000));
        assert!(matches!(Position::parse("2026-01-01T00:00:00Z").unwrap(), Position::TimeMs(_)));
        assert!(Span::parse("5..3").is_err());
        assert!(Span::parse("1..2026-01-01T00:00:00Z").is_err());
        let e = Position::parse("soon").unwrap_err().to_string();
        assert!(e.contains("`soon`"), "{e}");
    }
}
