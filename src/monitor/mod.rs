//! The streaming monitor: one thread that polls the consumer group, decodes each
//! message into its stream's open windows, scores every window that closes, hands the
//! report to the outputs through a bounded channel, and commits offsets only up to
//! records whose windows were emitted (at-least-once, never ahead of the reports).

pub mod stream;

use crate::config::Config;
use crate::ingest::kafka::{ArcContext, DeadLetters, MonitorContext, create_consumer};
use crate::stats::report::{OffsetRange, Report, WindowInfo};
use crate::stats::score_window;
use crate::stats::window::ClosedWindow;
use crate::telemetry::Telemetry;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
pub use stream::{BadRecord, StreamSetupError, StreamState};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Setup(#[from] StreamSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the outputs stopped accepting reports")]
    OutputsGone,
}

/// Every reason a record can be refused for (the `reason` label of
/// `driftscope_records_invalid_total`): a bounded set, never taken from record contents.
pub const INVALID_REASONS: [&str; 7] = [
    "empty",
    "oversize",
    "malformed_json",
    "not_an_object",
    "undecodable_arrow",
    "wrong_schema",
    "bad_event_time",
];

/// A scored window on its way to the outputs.
#[derive(Debug, Clone)]
pub struct ScoredWindow {
    pub report: Arc<Report>,
    /// Reference vs window shares per bin or category, for the dashboard.
    pub distributions: Arc<Vec<crate::stats::distribution::FeatureDistribution>>,
    /// How long scoring took.
    pub scoring: Duration,
}

/// A topic partition the monitor has read from.
struct Source {
    topic: String,
    partition: i32,
    stream: usize,
    /// The offset after the last message read; unknown after a rebalance until the
    /// partition delivers again.
    next: Option<i64>,
    committed: i64,
}

struct TopicRoute {
    stream: usize,
    /// Source slot per partition number.
    slots: Vec<Option<u32>>,
}

pub struct Monitor {
    consumer: BaseConsumer<ArcContext>,
    state: Pipeline,
}

/// Everything but the consumer, so a message borrowed from the consumer can be
/// processed without copying it.
struct Pipeline {
    context: Arc<MonitorContext>,
    streams: Vec<StreamState>,
    routes: FxHashMap<String, TopicRoute>,
    sources: Vec<Source>,
    dead_letters: Option<DeadLetters>,
    max_message_bytes: usize,
    reports: mpsc::Sender<ScoredWindow>,
    bad_log: RateLimitedLog,
    /// Windows closed since the last emit, with their stream.
    closed: Vec<(usize, ClosedWindow)>,
    scratch: Vec<ClosedWindow>,
}

/// At most one warning per second about bad records; the rest are counted.
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl Monitor {
    pub fn new(
        config: &Config,
        telemetry: &Telemetry,
        context: Arc<MonitorContext>,
        reports: mpsc::Sender<ScoredWindow>,
    ) -> Result<Monitor, MonitorError> {
        let names: Vec<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
        telemetry.init_series(&names, &[], &INVALID_REASONS);
        let mut streams = Vec::with_capacity(config.streams.len());
        let mut routes = FxHashMap::default();
        for (i, s) in config.streams.iter().enumerate() {
            let state = StreamState::new(i, s, config, telemetry.stream(&s.name))?;
            if state.reference().is_none()
                && let Ok(mut pending) = context.pending_references.lock()
            {
                pending.insert(s.name.clone());
            }
            streams.push(state);
            for topic in &s.topics {
                routes.insert(topic.clone(), TopicRoute { stream: i, slots: Vec::new() });
            }
        }
        let consumer = create_consumer(&config.kafka, context.clone())?;
        let dead_letters = match &config.kafka.dead_letter_topic {
            Some(topic) => Some(DeadLetters::new(&config.kafka, topic)?),
            None => None,
        };
        Ok(Monitor {
            consumer,
            state: Pipeline {
                context,
                streams,
                routes,
                sources: Vec::new(),
                dead_letters,
                max_message_bytes: config.kafka.max_message_bytes,
                reports,
                bad_log: RateLimitedLog { last: None, suppressed: 0 },
                closed: Vec::new(),
                scratch: Vec::new(),
            },
        })
    }

    pub fn streams(&self) -> &[StreamState] {
        &self.state.streams
    }

    /// Consumes until `shutdown` is set, then commits what is safe and returns. The
    /// record in hand is finished; open windows are not emitted half-done (their
    /// records are read again on the next start).
    pub fn run(mut self, shutdown: Arc<AtomicBool>) -> Result<(), MonitorError> {
        let topics: Vec<&str> = self.state.routes.keys().map(String::as_str).collect();
        self.consumer.subscribe(&topics)?;
        tracing::info!(topics = ?topics, streams = self.state.streams.len(), "monitor started");
        let mut last_commit = Instant::now();
        let result = loop {
            if shutdown.load(Ordering::SeqCst) {
                break Ok(());
            }
            let polled = self.consumer.poll(Duration::from_millis(100));
            let state = &mut self.state;
            if state.context.revoked.swap(false, Ordering::SeqCst) {
                state.forget_uncommitted();
            }
            let now_ms = now_ms();
            match polled {
                Some(Ok(message)) => {
                    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
                    let payload = message.payload().unwrap_or(&[]);
                    let key = message.key();
                    if let Some((stream, slot)) = state.source_slot(topic, partition) {
                        state.sources[slot as usize].next = Some(offset + 1);
                        state.process(stream, slot, payload, key, topic, partition, offset, now_ms);
                    }
                }
                Some(Err(e)) => {
                    state.context.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "consumer error");
                }
                None => {}
            }
            for (i, stream) in state.streams.iter_mut().enumerate() {
                stream.tick(now_ms, &mut state.scratch);
                state.closed.extend(state.scratch.drain(..).map(|w| (i, w)));
            }
            let emitted = !state.closed.is_empty();
            // Windows are scored in the order they closed; offsets follow the reports.
            let closed = std::mem::take(&mut state.closed);
            let mut failed = false;
            for (stream, window) in closed {
                if state.emit(stream, window).is_err() {
                    failed = true;
                    break;
                }
            }
            if failed {
                break Err(MonitorError::OutputsGone);
            }
            if emitted || last_commit.elapsed() >= Duration::from_secs(1) {
                commit(&self.consumer, state, CommitMode::Async);
                last_commit = Instant::now();
            }
        };
        commit(&self.consumer, &mut self.state, CommitMode::Sync);
        if let Some(dl) = &self.state.dead_letters {
            dl.flush(Duration::from_secs(5));
        }
        close_consumer(self.consumer);
        tracing::info!("monitor stopped");
        result
    }
}

impl Pipeline {
    fn source_slot(&mut self, topic: &str, partition: i32) -> Option<(usize, u32)> {
        let route = self.routes.get_mut(topic)?;
        let p = usize::try_from(partition).ok()?;
        if route.slots.len() <= p {
            route.slots.resize(p + 1, None);
        }
        let slot = match route.slots[p] {
            Some(slot) => slot,
            None => {
                let slot = self.sources.len() as u32;
                self.sources.push(Source {
                    topic: topic.to_owned(),
                    partition,
                    stream: route.stream,
                    next: None,
                    committed: -1,
                });
                route.slots[p] = Some(slot);
                slot
            }
        };
        Some((route.stream, slot))
    }

    #[allow(clippy::too_many_arguments)]
    fn process(
        &mut self,
        stream: usize,
        slot: u32,
        payload: &[u8],
        key: Option<&[u8]>,
        topic: &str,
        partition: i32,
        offset: i64,
        now_ms: i64,
    ) {
        let state = &mut self.streams[stream];
        state.counters.records.inc();
        let had_reference = state.reference().is_some();
        let outcome = if payload.is_empty() {
            Err(BadRecord { reason: "empty", detail: "empty payload".into() })
        } else if payload.len() > self.max_message_bytes {
            Err(BadRecord {
                reason: "oversize",
                detail: format!(
                    "{} bytes, over kafka.max_message_bytes = {}",
                    payload.len(),
                    self.max_message_bytes
                ),
            })
        } else {
            let outcome = state.process(payload, slot, offset, now_ms, &mut self.scratch);
            self.closed.extend(self.scratch.drain(..).map(|w| (stream, w)));
            outcome
        };
        if !had_reference
            && state.reference().is_some()
            && let Ok(mut pending) = self.context.pending_references.lock()
        {
            pending.remove(&state.name);
        }
        if let Err(bad) = outcome {
            state.counters.invalid(bad.reason);
            if let Some(dl) = &self.dead_letters {
                dl.send(key, payload, bad.reason, topic, partition, offset);
                state.counters.dead_lettered.inc();
            }
            self.bad_log.warn(&state.name, topic, partition, offset, &bad);
        }
    }

    fn emit(&mut self, stream: usize, window: ClosedWindow) -> Result<(), ()> {
        let state = &self.streams[stream];
        let Some(reference) = state.reference() else {
            return Ok(());
        };
        let offsets = window
            .spans
            .iter()
            .filter_map(|span| {
                let source = self.sources.get(span.source as usize)?;
                Some(OffsetRange {
                    topic: source.topic.clone(),
                    partition: source.partition,
                    first: span.first,
                    last: span.last,
                })
            })
            .collect();
        let info = WindowInfo {
            start: format_ms(window.start_ms),
            end: format_ms(window.end_ms),
            records: 0,
            index: window.index,
            offsets,
            late_records: window.late_records,
        };
        let started = Instant::now();
        let mut report = score_window(reference, &window.sketch, info);
        let scoring = started.elapsed();
        report.stream = Some(state.name.clone());
        state.counters.windows_closed.inc();
        log_window(&report);
        let distributions = Arc::new(crate::stats::distribution::distributions(reference, &window.sketch));
        self.streams[stream].publish_event_lag();
        self.reports
            .blocking_send(ScoredWindow { report: Arc::new(report), distributions, scoring })
            .map_err(|_| ())
    }

    /// After a revocation: open windows are dropped and positions forgotten, since the
    /// consumer resumes from the committed offsets.
    fn forget_uncommitted(&mut self) {
        for stream in &mut self.streams {
            stream.discard_open();
        }
        for source in &mut self.sources {
            source.next = None;
        }
    }
}

/// Commits, per partition, the lowest offset still needed by an open window (or the
/// next unread offset when none is), whenever that moved forward.
fn commit(consumer: &BaseConsumer<ArcContext>, state: &mut Pipeline, mode: CommitMode) {
    let mut list = TopicPartitionList::new();
    let mut safe = Vec::new();
    for (slot, source) in state.sources.iter_mut().enumerate() {
        let Some(next) = source.next else { continue };
        let lowest_open = state.streams[source.stream].lowest_open_offset(slot as u32);
        let offset = lowest_open.map_or(next, |o| o.min(next));
        if offset > source.committed
            && list.add_partition_offset(&source.topic, source.partition, Offset::Offset(offset)).is_ok()
        {
            source.committed = offset;
        }
        safe.push(((source.topic.clone(), source.partition), offset.max(source.committed)));
    }
    if let Ok(mut guard) = state.context.safe.lock() {
        guard.extend(safe);
    }
    if list.count() > 0
        && let Err(e) = consumer.commit(&list, mode)
    {
        tracing::warn!(error = %e, "offset commit failed; it is retried with the next window");
        for elem in list.elements() {
            if let Some(source) =
                state.sources.iter_mut().find(|s| s.topic == elem.topic() && s.partition == elem.partition())
            {
                source.committed = -1;
            }
        }
    }
}

impl RateLimitedLog {
    fn warn(&mut self, stream: &str, topic: &str, partition: i32, offset: i64, bad: &BadRecord) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            stream,
            topic,
            partition,
            offset,
            reason = bad.reason,
            detail = %bad.detail,
            suppressed = self.suppressed,
            "bad record counted and skipped"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

fn log_window(report: &Report) {
    let drifted: Vec<&str> = report.drifted_features().map(|f| f.name.as_str()).collect();
    tracing::info!(
        stream = report.stream.as_deref().unwrap_or(""),
        window = report.window.index,
        records = report.window.records,
        drift_share = report.dataset.drift_share,
        dataset_drifted = report.dataset.drifted,
        drifted = %drifted.join(","),
        "window scored"
    );
}

/// Dropping a consumer can hang (rust-rdkafka#453): close it on a helper thread and
/// give up waiting after a bound.
fn close_consumer(consumer: BaseConsumer<ArcContext>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        tracing::warn!("kafka consumer did not close within 10s; leaving it behind");
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn format_ms(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}
