//! The streaming monitor: one thread that polls the consumer group, decodes each
//! message into its stream's open windows and scores every window that closes. State
//! moves forward in checkpoints: every `state.checkpoint_interval` (or sooner when
//! reports pile up) the open windows and recent reports are written to the checkpoint,
//! then the reports it holds go to the outputs through a bounded channel, then offsets
//! are committed up to what it covers. After a crash or a revocation the monitor goes
//! back to the last checkpoint and skips records it already holds, so no record is
//! lost and none is counted twice in a window.

pub mod checkpoint;
mod global;
mod json_pointer;
pub mod labels;
mod schema_changes;
pub mod stream;

pub use crate::clock::{format_ms, now_ms};
use crate::config::Config;
use crate::decode::{DecodeContext, Message, NoHeaders, REGISTRY_UNAVAILABLE};
use crate::health::Health;
use crate::ingest::dead_letters::{DeadLetters, SHUTDOWN_FLUSH_BOUND};
use crate::ingest::feed::TopicRoute;
use crate::ingest::handover::{Handover, SavedJoin, StreamPartition};
use crate::ingest::kafka::{ArcContext, create_consumer};
pub use crate::shutdown::Stop;
use crate::stats::label_join::Handed;
use crate::stats::report::{OffsetRange, Report, WindowInfo};
use crate::stats::score_window;
use crate::stats::sequential::SequentialState;
use crate::stats::window::ClosedWindow;
use crate::telemetry::{RateLimitedLog, Telemetry};
use checkpoint::{Checkpoint, CheckpointError, SourcePosition, StreamCheckpoint};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
pub use stream::{BadRecord, StreamSetupError, StreamState};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Setup(#[from] StreamSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot set the checkpoint aside: {0}")]
    SetAside(std::io::Error),
    #[error("the outputs stopped accepting reports")]
    OutputsGone,
    #[error("cannot start the pipeline thread: {0}")]
    Thread(std::io::Error),
    #[error("the pipeline thread panicked")]
    Panicked,
    #[error("global mode: {0}")]
    Scale(#[from] crate::scale::ScaleError),
    #[error("label join handover: {0}")]
    Handover(#[from] crate::ingest::handover::HandoverError),
    /// At a stop, the last checkpoint could not be written (the binary exits with
    /// [`EXIT_NO_CHECKPOINT`]). Nothing is lost: offsets are committed only up to the
    /// previous checkpoint, so the next start reads again what came after it.
    #[error(
        "the last checkpoint could not be written: {0}; the next start continues from the previous \
         checkpoint and reads again the records after it"
    )]
    LastCheckpoint(String),
}

/// Exit status of `driftscope run` when a stop could not write the last checkpoint
/// (everything else of a stop that does not fit in `state.shutdown_timeout` still exits 0).
pub const EXIT_NO_CHECKPOINT: u8 = 3;

/// A scored window on its way to the outputs.
#[derive(Debug, Clone)]
pub struct ScoredWindow {
    pub report: Arc<Report>,
    /// Reference vs window shares per bin or category, for the dashboard.
    pub distributions: Arc<Vec<crate::stats::distribution::FeatureDistribution>>,
    /// How long scoring took.
    pub scoring: Duration,
    /// Sent again from the checkpoint after a restart: the outputs may have seen it.
    pub replayed: bool,
}

/// A topic partition the monitor has read from.
struct Source {
    topic: String,
    partition: i32,
    stream: usize,
    /// The offset after the last message read; unknown after a rebalance until the
    /// partition delivers again.
    next: Option<i64>,
    /// Records below this offset are in the last checkpoint written.
    saved: Option<i64>,
    /// A label topic of its stream (its records go to the stream's label join).
    labels: bool,
}

pub struct Monitor {
    consumer: BaseConsumer<ArcContext>,
    state: Pipeline,
    /// `kafka.batch_reads`: how the consumer thread reads.
    batch_reads: bool,
    /// Global mode's owner loop (`crate::scale::scoring`), when a stream is global.
    scoring: Option<crate::scale::scoring::Scoring>,
}

/// Everything but the consumer, so a message borrowed from the consumer can be
/// processed without copying it.
struct Pipeline {
    context: Arc<Health>,
    streams: Vec<StreamState>,
    /// Per stream, its label join and performance windows (`[streams.labels]`).
    labels: Vec<Option<labels::StreamLabels>>,
    routes: FxHashMap<String, TopicRoute>,
    sources: Vec<Source>,
    dead_letters: Option<DeadLetters>,
    max_message_bytes: usize,
    reports: mpsc::Sender<ScoredWindow>,
    bad_log: RateLimitedLog,
    /// Windows closed since the last emit, with their stream.
    closed: Vec<(usize, ClosedWindow)>,
    scratch: Vec<ClosedWindow>,
    telemetry: Arc<Telemetry>,
    checkpoint_path: PathBuf,
    checkpoint_interval: Duration,
    /// The last checkpoint written (or restored): where a revocation rolls back to.
    last_checkpoint: Option<Checkpoint>,
    last_checkpoint_at: Instant,
    /// Whether anything changed since the last checkpoint.
    dirty: bool,
    /// Per stream, the newest reports (the API history; re-sent after a restart).
    recent: Vec<RecentReports>,
    recent_capacity: usize,
    /// Scored windows waiting for the checkpoint that holds them.
    unsent: Vec<ScoredWindow>,
    /// Reports from the restored checkpoint, sent before consuming.
    replay: Vec<ScoredWindow>,
    /// The error of the last failed checkpoint, while consumption is paused for it.
    checkpoint_failure: Option<String>,
    paused: bool,
    /// Schema changes told by the decoders, and per stream those waiting for the
    /// report of the window that holds them.
    schema_changes: Arc<schema_changes::SchemaChanges>,
    waiting_changes: Vec<schema_changes::WaitingChanges>,
    /// A record had to be left for the next start (see `Pipeline::halt`): nothing after
    /// it is taken.
    halted: bool,
    /// Global mode's publishing of partials (`crate::scale::publishing`).
    global: Option<crate::scale::publishing::Publishing>,
    /// The label joins' handover between instances (`labels.handover_topic`).
    handover: Option<Arc<Handover>>,
    /// Entries of partitions a revocation handed over, until the assignment says
    /// whether they came back.
    parked: Vec<(StreamPartition, crate::stats::label_join::Handed)>,
    /// When entries were set aside: an assignment that does not come within
    /// [`PARKED_BOUND`] leaves them handed over (their records are written), so
    /// checkpoints are never held up for long.
    parked_at: Instant,
    /// An assignment's handover was applied: checkpoint at once (a revocation waits
    /// for it, so it hands over the adopted entries too).
    checkpoint_now: bool,
    /// The last commit's copies of the join could not be written (logged once until
    /// they can again).
    copies_failing: bool,
}

#[derive(Default, Clone)]
struct RecentReports {
    reports: VecDeque<Arc<Report>>,
    distributions: Option<Arc<Vec<crate::stats::distribution::FeatureDistribution>>>,
    /// The stream's sequential detectors, as of the newest report.
    sequential: SequentialState,
}

/// How long entries set aside at a revocation wait for the assignment that says whether
/// their partitions came back (checkpoints wait meanwhile).
const PARKED_BOUND: Duration = Duration::from_secs(60);

/// How long a commit waits for its copies of the join to be acknowledged.
const COPIES_BOUND: Duration = Duration::from_secs(10);

/// Checkpoint early when this many reports wait for one.
const UNSENT_LIMIT: usize = 32;
/// Reports kept per stream in the checkpoint at least: more than can be in flight to
/// the outputs (the report queue plus one batch), so a report is never dropped from
/// the checkpoint before the outputs have it.
const MIN_RECENT: usize = 128;

impl Monitor {
    /// Builds the monitor and restores the checkpoint in `state.dir`, if any. With
    /// `fresh_state` an existing checkpoint is set aside instead (and what that loses
    /// is logged).
    pub fn new(
        config: &Config,
        telemetry: &Arc<Telemetry>,
        context: Arc<Health>,
        reports: mpsc::Sender<ScoredWindow>,
        fresh_state: bool,
    ) -> Result<Monitor, MonitorError> {
        let mut streams = Vec::with_capacity(config.streams.len());
        let mut routes = FxHashMap::default();
        let mut stream_labels = Vec::with_capacity(config.streams.len());
        let schema_changes = Arc::new(schema_changes::SchemaChanges::new(telemetry.clone()));
        let decoding: DecodeContext =
            crate::ingest::registry::decode_context(config, telemetry, &context, schema_changes.clone())
                .map_err(|e| StreamSetupError { key: "registry".into(), message: e.to_string() })?;
        for (i, s) in config.streams.iter().enumerate() {
            let state = StreamState::new(i, s, config, &decoding, telemetry.stream(&s.name))?;
            let reasons: Vec<&str> = state.reasons().collect();
            telemetry.init_series(&[s.name.as_str()], &[], &reasons);
            if state.reference().is_none()
                && let Ok(mut pending) = context.pending_references.lock()
            {
                pending.insert(s.name.clone());
            }
            streams.push(state);
            for topic in &s.topics {
                routes.insert(topic.clone(), TopicRoute { stream: i, slots: Vec::new() });
            }
            let mut joined = match &s.labels {
                Some(l) => {
                    let setup_error = |e: labels::LabelsSetupError| StreamSetupError {
                        key: format!("streams[{i}].{}", e.key),
                        message: e.message,
                    };
                    let mut joined = labels::StreamLabels::of_stream(s, l, telemetry).map_err(setup_error)?;
                    if s.format == crate::config::MessageFormat::OpenInference {
                        joined.use_open_inference(s).map_err(setup_error)?;
                    }
                    Some(joined)
                }
                None => None,
            };
            if let (Some(joined), Some(reference)) = (joined.as_mut(), streams[i].reference()) {
                joined.use_reference(reference.profile.model.as_deref(), telemetry);
            }
            for topic in joined.iter().flat_map(|l| &l.topics) {
                routes.insert(topic.clone(), TopicRoute { stream: i, slots: Vec::new() });
            }
            stream_labels.push(joined);
        }
        labels::check_baselines(config, &stream_labels)?;
        let consumer = create_consumer(&config.kafka, context.clone())?;
        for (s, labels) in config.streams.iter().zip(&mut stream_labels) {
            if let Some(labels) = labels {
                labels.check_co_partitioning(&consumer, &s.topics);
            }
        }
        let dead_letters = match &config.kafka.dead_letter_topic {
            Some(topic) => Some(DeadLetters::new(&config.kafka, topic)?),
            None => None,
        };
        let (global, scoring) = crate::scale::wiring::setup(config, &context, telemetry, &streams, &reports)?;
        let handover = Handover::new(config)?.map(Arc::new);
        if let Some(h) = &handover {
            let _ = context.handover.set(h.clone());
        }
        let recent = vec![RecentReports::default(); streams.len()];
        let mut state = Pipeline {
            context,
            streams,
            labels: stream_labels,
            routes,
            sources: Vec::new(),
            dead_letters,
            max_message_bytes: config.kafka.max_message_bytes,
            reports,
            bad_log: RateLimitedLog::default(),
            closed: Vec::new(),
            scratch: Vec::new(),
            telemetry: telemetry.clone(),
            checkpoint_path: config.state.dir.join(checkpoint::FILE_NAME),
            checkpoint_interval: config.state.checkpoint_interval,
            last_checkpoint: None,
            last_checkpoint_at: Instant::now(),
            dirty: false,
            recent,
            recent_capacity: config.outputs.history.max(MIN_RECENT),
            unsent: Vec::new(),
            replay: Vec::new(),
            checkpoint_failure: None,
            paused: false,
            waiting_changes: (0..config.streams.len()).map(|_| Default::default()).collect(),
            schema_changes,
            halted: false,
            global,
            handover,
            parked: Vec::new(),
            parked_at: Instant::now(),
            checkpoint_now: false,
            copies_failing: false,
        };
        if fresh_state {
            state.set_checkpoint_aside()?;
        } else if let Some(saved) = checkpoint::load(&state.checkpoint_path)? {
            state.restore(saved)?;
        }
        Ok(Monitor { consumer, state, batch_reads: config.kafka.batch_reads, scoring })
    }

    /// Consumes until `shutdown` is set, then checkpoints, hands the last reports to
    /// the outputs, commits and returns. Two threads: this one polls and batches
    /// ([`crate::ingest::feed::Feeder`]); a pipeline thread decodes, windows, scores and checkpoints.
    /// The records polled are all processed; open windows stay open in the checkpoint
    /// and continue on the next start.
    ///
    /// A stop is bounded by `stop`'s deadline: the record in hand, the last checkpoint
    /// and its reports come first (local work); the last commit then waits for its
    /// answer until halfway to the deadline and closing the consumer until the
    /// deadline. What does not fit is logged once and left: the checkpoint holds it.
    pub fn run(self, stop: Arc<Stop>) -> Result<(), MonitorError> {
        let Monitor { consumer, mut state, batch_reads, scoring } = self;
        let scoring = crate::scale::wiring::spawn_scoring(scoring, &stop)?;
        let topics: Vec<String> = state.routes.keys().cloned().collect();
        consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
        tracing::info!(topics = ?topics, streams = state.streams.len(), "monitor started");
        let routes = std::mem::take(&mut state.routes);
        let mut feeder = crate::ingest::feed::Feeder::new(
            consumer,
            state.context.clone(),
            routes,
            state.sources.len() as u32,
            batch_reads,
        );
        let (batch_tx, batch_rx) = std::sync::mpsc::sync_channel(crate::ingest::feed::BATCHES_IN_FLIGHT);
        let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel(crate::ingest::feed::BATCHES_IN_FLIGHT + 2);
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        let pipeline_stop = stop.clone();
        let pipeline = std::thread::Builder::new()
            .name("driftscope-pipeline".into())
            .spawn(move || state.run(batch_rx, spare_tx, control_tx, &pipeline_stop))
            .map_err(MonitorError::Thread)?;
        feeder.run(&stop, batch_tx, &spare_rx, &control_rx);
        // The pipeline finishes the batches sent, writes its last checkpoint and asks
        // for the last commit, which is sent here and waited for with a bound: a
        // synchronous commit waits for a group join to end (up to the session timeout
        // of a killed predecessor) or for an absent broker.
        let result = pipeline.join().unwrap_or(Err(MonitorError::Panicked));
        let result = result.and(crate::scale::wiring::join_scoring(scoring));
        let committed = feeder.last_commit(&control_rx, stop.halfway());
        let closed = close_consumer(feeder.into_consumer(), stop.deadline());
        tracing::info!(committed, consumer_closed = closed, "monitor stopped");
        result
    }
}

impl Pipeline {
    /// The pipeline thread: takes batches until the consumer thread hangs up; ticks the
    /// clock, scores closed windows and checkpoints in between.
    fn run(
        mut self,
        batches: std::sync::mpsc::Receiver<crate::ingest::feed::Batch>,
        spare: std::sync::mpsc::SyncSender<crate::ingest::feed::Batch>,
        controls: std::sync::mpsc::Sender<crate::ingest::feed::Control>,
        stop: &Stop,
    ) -> Result<(), MonitorError> {
        for window in std::mem::take(&mut self.replay) {
            self.reports.blocking_send(window).map_err(|_| MonitorError::OutputsGone)?;
        }
        let result = loop {
            match batches.recv_timeout(Duration::from_millis(100)) {
                Ok(mut batch) => {
                    self.take_batch(&mut batch);
                    let _ = spare.try_send(batch);
                    if std::mem::take(&mut self.checkpoint_now) {
                        let written = self.advance(&controls, CommitMode::Async);
                        if let Some(h) = &self.handover {
                            h.notice_applied();
                        }
                        if let Err(e) = written {
                            break Err(e);
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            }
            let now_ms = now_ms();
            for (i, stream) in self.streams.iter_mut().enumerate() {
                stream.tick(now_ms, &mut self.scratch);
                self.closed.extend(self.scratch.drain(..).map(|w| (i, w)));
                if let Some(labels) = self.labels[i].as_mut() {
                    labels.tick(now_ms);
                }
            }
            // Windows are scored in the order they closed.
            for (stream, window) in std::mem::take(&mut self.closed) {
                self.emit(stream, window);
            }
            if let Err(e) = self.publish_global(None) {
                break Err(e);
            }
            let due = self.last_checkpoint_at.elapsed() >= self.checkpoint_interval;
            if (due && (self.dirty || self.checkpoint_failure.is_some())) || self.unsent.len() >= UNSENT_LIMIT
            {
                if let Err(e) = self.advance(&controls, CommitMode::Async) {
                    break Err(e);
                }
            }
        };
        // Within the stop's bound: half of what is left at most (the last checkpoint,
        // commit and the consumer's close need the rest), and never over STOP_BOUND.
        let bound = (stop.remaining() / 2).min(crate::scale::publishing::STOP_BOUND);
        if let Err(e) = self.publish_global(Some(bound)) {
            tracing::error!(error = %e, "the last partials were not published; their records are read again on the next start");
        }
        self.hand_over_at_stop((stop.remaining() / 2).min(crate::scale::publishing::STOP_BOUND));
        if let Some(h) = &self.handover {
            let commits = h.periodic_writes.load(Ordering::Relaxed);
            let bytes = h.periodic_bytes.load(Ordering::Relaxed);
            let nanos = h.periodic_nanos.load(Ordering::Relaxed);
            tracing::info!(
                commits,
                records = h.periodic_records.load(Ordering::Relaxed),
                bytes,
                bytes_per_commit = bytes.checked_div(commits).unwrap_or(0),
                ms_per_commit = nanos.checked_div(commits).unwrap_or(0) as f64 / 1e6,
                "label join copies written to the handover topic at commits"
            );
        }
        // The last checkpoint: also when the previous one failed, so that a directory
        // that came back is used; when it still fails the stop says so (exit status 3).
        let finished = if self.dirty || !self.unsent.is_empty() || self.checkpoint_failure.is_some() {
            self.advance(&controls, CommitMode::Sync).and_then(|()| match self.checkpoint_failure.take() {
                Some(error) => Err(MonitorError::LastCheckpoint(error)),
                None => Ok(()),
            })
        } else {
            self.send_commit(&controls, CommitMode::Sync);
            Ok(())
        };
        if let Some(dl) = self.dead_letters.take() {
            // Within the stop's deadline: what is not acknowledged by then is counted.
            dl.close(stop.remaining().min(SHUTDOWN_FLUSH_BOUND));
        }
        result.and(finished)
    }

    /// Folds a batch from the consumer thread in.
    fn take_batch(&mut self, batch: &mut crate::ingest::feed::Batch) {
        if batch.revoked {
            self.roll_back();
            self.park(&batch.handed);
        }
        if let Some(assigned) = batch.assigned.take() {
            self.apply_assignment(assigned);
        }
        for new in &batch.new_sources {
            // Slots are numbered in the order the consumer thread met the partitions,
            // continuing after those of the restored checkpoint.
            debug_assert_eq!(new.slot as usize, self.sources.len());
            if new.slot as usize == self.sources.len() {
                let labels = self.is_label_topic(new.stream, &new.topic);
                self.sources.push(Source {
                    topic: new.topic.clone(),
                    partition: new.partition,
                    stream: new.stream,
                    next: None,
                    saved: None,
                    labels,
                });
                self.register_global(new.slot as usize);
            }
        }
        for record in &batch.records {
            if self.halted {
                break;
            }
            let Some(source) = self.sources.get_mut(record.slot as usize) else { continue };
            let stream = source.stream;
            let first_read = source.next.is_none();
            if source.saved.is_some_and(|saved| record.offset < saved) {
                // Read again after a restart: the checkpoint already holds it.
                self.telemetry.records_replayed.with_label_values(&[&self.streams[stream].name]).inc();
                continue;
            }
            let before = source.next.replace(record.offset + 1);
            let labels = source.labels;
            let partition = source.partition;
            self.dirty = true;
            if first_read {
                self.resume_global(record.slot as usize);
            }
            let payload = batch.bytes_of(record.payload);
            let key = record.key.map(|k| batch.bytes_of(k));
            if labels {
                self.process_label(stream, partition, payload, key, record.time_ms);
            } else if !self.process(stream, record.slot, payload, key, record.offset, record.time_ms) {
                self.halt(record.slot, before, record.offset);
            }
        }
        self.flush_streams();
    }

    fn is_label_topic(&self, stream: usize, topic: &str) -> bool {
        self.labels.get(stream).and_then(Option::as_ref).is_some_and(|l| l.topics.iter().any(|t| t == topic))
    }

    /// A label message: to the stream's join (bad ones are counted there by reason).
    fn process_label(
        &mut self,
        stream: usize,
        partition: i32,
        payload: &[u8],
        key: Option<&[u8]>,
        now_ms: i64,
    ) {
        let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) else { return };
        if let Err(reason) = labels.label_message_at(partition, payload, key, now_ms)
            && let Some(suppressed) = self.bad_log.admit()
        {
            tracing::warn!(stream = %self.streams[stream].name, reason, suppressed, "label message counted and skipped");
        }
    }

    /// Folds what every stream staged from the batch; windows that close go to `closed`.
    fn flush_streams(&mut self) {
        for (stream, state) in self.streams.iter_mut().enumerate() {
            let had_reference = state.reference().is_some();
            state.flush(&mut self.scratch);
            self.closed.extend(self.scratch.drain(..).map(|w| (stream, w)));
            if !had_reference
                && state.reference().is_some()
                && let Ok(mut pending) = self.context.pending_references.lock()
            {
                pending.remove(&state.name);
            }
        }
    }

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
                let labels = self
                    .labels
                    .get(route.stream)
                    .and_then(Option::as_ref)
                    .is_some_and(|l| l.topics.iter().any(|t| t == topic));
                self.sources.push(Source {
                    topic: topic.to_owned(),
                    partition,
                    stream: route.stream,
                    next: None,
                    saved: None,
                    labels,
                });
                route.slots[p] = Some(slot);
                slot
            }
        };
        let stream = route.stream;
        self.register_global(slot as usize);
        Some((stream, slot))
    }

    /// Decodes one record into its stream. Returns `false` when the record could not be
    /// read for a reason outside it (the schema registry unreachable while stopping):
    /// it is neither counted nor used, and must be read again by the next start.
    fn process(
        &mut self,
        stream: usize,
        slot: u32,
        payload: &[u8],
        key: Option<&[u8]>,
        offset: i64,
        now_ms: i64,
    ) -> bool {
        let partition = self.sources.get(slot as usize).map_or(0, |s| s.partition);
        let state = &mut self.streams[stream];
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
            let message = Message { payload, key, headers: &NoHeaders };
            // Folded with the rest of the batch (`flush_streams`); windows that close
            // on the way (a batch of many-row messages is folded in slices) go on.
            let outcome = state.stage(&message, slot, offset, now_ms, &mut self.scratch);
            if let Some(fresh) = self.schema_changes.take_fresh() {
                for (from, to) in fresh {
                    self.waiting_changes[stream].place(slot, offset, from, to);
                }
            }
            self.closed.extend(self.scratch.drain(..).map(|w| (stream, w)));
            // A prediction in a window waits for its label (not while the reference is taken).
            if let Ok(rows) = outcome
                && state.reference().is_some()
                && let Some(labels) = self.labels[stream].as_mut()
            {
                let _ =
                    labels.predictions_at(partition, payload, key, rows, now_ms, state.held_predictions());
            }
            outcome.map(|_| ())
        };
        if outcome.as_ref().is_err_and(|bad| bad.reason == REGISTRY_UNAVAILABLE) {
            return false;
        }
        state.counters.records.inc();
        if let Err(bad) = outcome {
            let (topic, partition) = match self.sources.get(slot as usize) {
                Some(source) => (source.topic.as_str(), source.partition),
                None => ("", -1),
            };
            state.counters.invalid(bad.reason);
            if let Some(dl) = &self.dead_letters {
                // Counted when the broker answers (see `ingest::dead_letters`).
                dl.send(&state.counters.dead_letters, key, payload, bad.reason, topic, partition, offset);
            }
            warn_bad(&mut self.bad_log, &state.name, topic, partition, offset, &bad);
        }
        true
    }

    /// Stops taking records at one that must be read again (see [`Self::process`]):
    /// its source's position goes back to before it and every record after it, from
    /// any source, is left too, so the last checkpoint and commit stop there and the
    /// next start reads on from it. Only happens during a stop.
    fn halt(&mut self, slot: u32, before: Option<i64>, offset: i64) {
        self.halted = true;
        if let Some(source) = self.sources.get_mut(slot as usize) {
            source.next = before;
            tracing::warn!(
                topic = %source.topic,
                partition = source.partition,
                offset,
                "stopping while the schema registry is unreachable: this record and those after it are left for the next start"
            );
        }
    }

    /// Scores a closed window; its report waits in `unsent` for the next checkpoint.
    fn emit(&mut self, stream: usize, window: ClosedWindow) {
        let state = &self.streams[stream];
        let Some(reference) = state.reference() else {
            return;
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
        let settings = &reference.settings;
        self.recent[stream].sequential.update(&mut report, settings.alpha_sequential);
        let scoring = started.elapsed();
        report.stream = Some(state.name.clone());
        report.performance = self.labels[stream].as_mut().map(|l| l.section());
        let sources = &self.sources;
        let locate = |slot: u32| sources.get(slot as usize).map(|s| (s.topic.clone(), s.partition));
        if let Some((changes, note)) = self.waiting_changes[stream].take_for(&window.spans, locate) {
            report.schema_changes = changes;
            report.notes.push(note);
        }
        if let Some(problem) = self.labels[stream].as_ref().and_then(|l| l.co_partitioning.clone()) {
            report.notes.push(problem);
        }
        state.counters.windows_closed.inc();
        log_window(&report);
        let distributions = Arc::new(crate::stats::distribution::distributions(reference, &window.sketch));
        self.streams[stream].publish_event_lag();
        let report = Arc::new(report);
        let recent = &mut self.recent[stream];
        if recent.reports.len() == self.recent_capacity {
            recent.reports.pop_front();
        }
        recent.reports.push_back(report.clone());
        recent.distributions = Some(distributions.clone());
        self.unsent.push(ScoredWindow { report, distributions, scoring, replayed: false });
        // A window closed by the clock changes the state as much as a record does.
        self.dirty = true;
    }

    /// Writes a checkpoint, then hands the reports it holds to the outputs, then
    /// commits the offsets it covers. When the checkpoint cannot be written the
    /// consumer is paused (not ready, nothing reported or committed) and the write is
    /// retried every interval.
    fn advance(
        &mut self,
        controls: &std::sync::mpsc::Sender<crate::ingest::feed::Control>,
        mode: CommitMode,
    ) -> Result<(), MonitorError> {
        // With a handover: no checkpoint while a revocation is being handed over from
        // the last one, nor while entries wait aside for the assignment (the board is
        // held until the positions to commit are published with the join's entries).
        // A restart's entries wait for the first assignment however long it takes
        // (nothing is read before it, so no checkpoint is missed).
        let restoring =
            || self.handover.as_ref().is_some_and(|h| h.board.lock().is_ok_and(|b| b.restored.is_some()));
        if !self.parked.is_empty() && self.parked_at.elapsed() >= PARKED_BOUND && !restoring() {
            tracing::warn!(
                waited_s = PARKED_BOUND.as_secs(),
                "no assignment since the revocation: the label join entries written then are counted handed over"
            );
            self.apply_assignment(crate::ingest::handover::Assigned::default());
        }
        let handover = self.handover.clone();
        let mut board = handover.as_ref().and_then(|h| h.board.lock().ok());
        if board.as_ref().is_some_and(|b| b.revoke_pending) || !self.parked.is_empty() {
            return Ok(());
        }
        self.last_checkpoint_at = Instant::now();
        let checkpoint = self.checkpoint();
        let joins: BTreeMap<usize, SavedJoin> = match board.as_ref() {
            Some(_) => self
                .labels
                .iter()
                .zip(&checkpoint.streams)
                .enumerate()
                .filter_map(|(i, (labels, cp))| {
                    labels.as_ref()?;
                    let saved = cp.labels.as_ref()?;
                    Some((i, SavedJoin { entries: saved.join_entries(), classes: saved.classes().to_vec() }))
                })
                .collect(),
            None => BTreeMap::new(),
        };
        // Copies of the join's entries go to the handover topic before the checkpoint
        // (and long before its commit): so the latest record continuing from the
        // committed offsets is this state or an older checkpoint's one at the same
        // offsets (see `write_copies`).
        if let (Some(handover), Some(board)) = (handover.as_deref(), board.as_mut()) {
            self.write_copies(handover, board, &checkpoint, &joins);
        }
        match checkpoint::save(&self.checkpoint_path, &checkpoint) {
            Ok(bytes) => {
                if let Some(board) = board.as_mut() {
                    board.saved = joins.into_iter().map(|(i, join)| (i, Arc::new(join))).collect();
                }
                self.telemetry.checkpoints.with_label_values(&["written"]).inc();
                self.telemetry.checkpoint_bytes.set(bytes as i64);
                if let Some(error) = self.checkpoint_failure.take() {
                    tracing::info!(path = %self.checkpoint_path.display(), previous_error = %error, "checkpoint written again; consuming");
                    if let Ok(mut guard) = self.context.state_error.lock() {
                        *guard = None;
                    }
                }
                if self.paused {
                    let _ = controls.send(crate::ingest::feed::Control::Pause(false));
                    self.paused = false;
                }
            }
            Err(e) => {
                self.telemetry.checkpoints.with_label_values(&["failed"]).inc();
                let message = format!("cannot write the checkpoint {}: {e}", self.checkpoint_path.display());
                if self.checkpoint_failure.as_deref() != Some(message.as_str()) {
                    tracing::error!(error = %message, "consumption paused until the checkpoint can be written; nothing is reported or committed meanwhile");
                }
                if let Ok(mut guard) = self.context.state_error.lock() {
                    *guard = Some(message.clone());
                }
                self.checkpoint_failure = Some(message);
                if !self.paused {
                    let _ = controls.send(crate::ingest::feed::Control::Pause(true));
                    self.paused = true;
                }
                return Ok(());
            }
        }
        for (source, position) in self.sources.iter_mut().zip(&checkpoint.sources) {
            if position.position >= 0 {
                source.saved = Some(position.position);
            }
        }
        if board.is_some() {
            self.publish_safe();
        }
        drop(board);
        self.last_checkpoint = Some(checkpoint);
        self.dirty = false;
        for window in std::mem::take(&mut self.unsent) {
            self.reports.blocking_send(window).map_err(|_| MonitorError::OutputsGone)?;
        }
        self.send_commit(controls, mode);
        Ok(())
    }

    /// Writes a copy of `checkpoint`'s join entries of each owned partition that
    /// changed since its last copy to the handover topic, with the positions the
    /// checkpoint's commit will commit, and waits for the broker's acknowledgement. An
    /// instance killed with SIGKILL hands nothing over itself: its partitions' new
    /// owners adopt these copies (they continue from the committed offsets). Written
    /// before the checkpoint: killed after them and before it, the checkpoint on disk
    /// is the previous one, at the offsets still committed, whose copies are the
    /// records before these. When they cannot be written the commit goes ahead anyway
    /// (logged): a SIGKILL then hands nothing over, as without copies.
    fn write_copies(
        &mut self,
        handover: &Handover,
        board: &mut crate::ingest::handover::Board,
        checkpoint: &Checkpoint,
        joins: &BTreeMap<usize, SavedJoin>,
    ) {
        if board.owned.is_empty() || self.halted {
            return;
        }
        // What the commit after this checkpoint commits (see `publish_safe`).
        let positions: BTreeMap<(String, i32), i64> = self
            .sources
            .iter()
            .zip(&checkpoint.sources)
            .filter(|(source, _)| !self.is_global_source(source))
            .filter_map(|(source, p)| {
                let at = if p.position >= 0 { Some(p.position) } else { source.saved };
                Some(((source.topic.clone(), source.partition), at?))
            })
            .collect();
        let by_partition: BTreeMap<usize, (BTreeMap<i32, Handed>, Vec<String>)> =
            joins.iter().map(|(&i, join)| (i, (join.entries.by_partition(), join.classes.clone()))).collect();
        let started = Instant::now();
        let written = handover.periodic_records(board, &by_partition, &positions).and_then(|copies| {
            handover.write_encoded(&copies.records, COPIES_BOUND)?;
            Ok(copies)
        });
        match written {
            Ok(crate::ingest::handover::Copies { records, digests }) => {
                if records.is_empty() {
                    return;
                }
                let bytes: usize = records.iter().filter_map(|(_, r)| r.as_ref().map(Vec::len)).sum();
                handover.periodic_writes.fetch_add(1, Ordering::Relaxed);
                handover.periodic_records.fetch_add(records.len() as u64, Ordering::Relaxed);
                handover.periodic_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                handover.periodic_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                board.written.extend(digests);
                if std::mem::take(&mut self.copies_failing) {
                    tracing::info!("the label join's copies are written to the handover topic again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.copies_failing, true) {
                    tracing::error!(error = %e, "the label join's entries were not copied to the handover topic: until they are, an instance killed with SIGKILL hands nothing over");
                }
                // Written again at the next commit, whatever the broker got of them.
                board.written.clear();
            }
        }
    }

    /// Asks the consumer thread to commit the last checkpoint's positions, and
    /// publishes them for the commit before a rebalance.
    fn send_commit(
        &self,
        controls: &std::sync::mpsc::Sender<crate::ingest::feed::Control>,
        mode: CommitMode,
    ) {
        let offsets = self.publish_safe();
        let _ = controls.send(crate::ingest::feed::Control::Commit(offsets, mode));
    }

    /// The last checkpoint's positions, published for the commit before a rebalance.
    fn publish_safe(&self) -> Vec<(String, i32, i64)> {
        // Global streams' input offsets move only with their partials (`publish_global`).
        let offsets: Vec<(String, i32, i64)> = self
            .sources
            .iter()
            .filter(|s| !self.is_global_source(s))
            .filter_map(|s| Some((s.topic.clone(), s.partition, s.saved?)))
            .collect();
        if let Ok(mut guard) = self.context.safe.lock() {
            guard.extend(offsets.iter().map(|(t, p, o)| ((t.clone(), *p), *o)));
        }
        offsets
    }

    /// After a revocation's roll-back: the entries of the partitions it handed over
    /// are set aside until the assignment says whether they came back. The revocation
    /// is over: checkpoints may be written again.
    fn park(&mut self, handed: &[StreamPartition]) {
        let Some(handover) = self.handover.clone() else { return };
        if self.parked.is_empty() {
            self.parked_at = Instant::now();
        }
        for &(stream, partition) in handed {
            if let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) {
                let entries = labels.take_partitions(&[partition]);
                self.parked.push(((stream, partition), entries));
            }
        }
        if let Ok(mut board) = handover.board.lock() {
            board.revoke_pending = false;
        }
    }

    /// An assignment's handover: entries set aside come back when their partition did,
    /// else they are counted handed over; records taken over are adopted.
    fn apply_assignment(&mut self, assigned: crate::ingest::handover::Assigned) {
        let now = now_ms();
        for ((stream, partition), entries) in std::mem::take(&mut self.parked) {
            let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) else { continue };
            if assigned.kept.contains(&(stream, partition)) {
                labels.put_back(entries);
            } else {
                labels.hand_over(&entries);
            }
        }
        for ((stream, _), record) in assigned.adopted {
            if let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) {
                labels.adopt(record.entries, &record.classes, now);
            }
        }
        self.dirty = true;
        self.checkpoint_now = true;
    }

    /// A stop hands every partition's entries over (with the positions its last
    /// checkpoint commits), so another instance of the group that takes the partitions
    /// joins them; the last checkpoint then holds them no more. Entries set aside at a
    /// revocation whose assignment never came were handed over already.
    fn hand_over_at_stop(&mut self, bound: Duration) {
        let Some(handover) = self.handover.clone() else { return };
        // A restart's entries still aside (no assignment came) go back into the last
        // checkpoint: the next start decides about them as this one would have.
        let restoring = handover.board.lock().is_ok_and(|b| b.restored.is_some());
        for ((stream, _), entries) in std::mem::take(&mut self.parked) {
            if let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) {
                if restoring { labels.put_back(entries) } else { labels.hand_over(&entries) }
            }
        }
        if self.halted {
            return;
        }
        let positions = self.checkpoint().sources;
        let (owned, committed) = match handover.board.lock() {
            Ok(board) => (board.owned.clone(), board.committed.clone()),
            Err(_) => Default::default(),
        };
        let mut records = Vec::new();
        let mut taken = Vec::new();
        for s in &handover.streams {
            let Some(labels) = self.labels.get_mut(s.stream).and_then(Option::as_mut) else { continue };
            // The partitions it owns: another's (revoked earlier) are written by their owner.
            let partitions = owned.iter().filter(|(stream, _)| *stream == s.stream).map(|&(_, p)| p);
            for partition in partitions {
                let entries = labels.take_partitions(&[partition]);
                let read: Vec<(String, i64)> = positions
                    .iter()
                    .filter(|p| p.partition == partition && p.position >= 0 && s.topics.contains(&p.topic))
                    .map(|p| (p.topic.clone(), p.position))
                    .collect();
                // A topic not read there since the assignment: the offset committed then.
                let unread = s
                    .topics
                    .iter()
                    .filter(|t| !read.iter().any(|(r, _)| r == *t))
                    .filter_map(|t| Some((t.clone(), *committed.get(&(t.clone(), partition))?)));
                let record = crate::ingest::handover::HandoverRecord {
                    positions: read.iter().cloned().chain(unread).collect(),
                    classes: labels.classes().to_vec(),
                    entries: entries.clone(),
                    writer: handover.writer,
                    copy: false,
                };
                records.push(((s.stream, partition), Some(record)));
                taken.push((s.stream, entries));
            }
        }
        let written = handover.write(&records, bound);
        for (stream, entries) in taken {
            let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) else { continue };
            match &written {
                Ok(()) => labels.hand_over(&entries),
                Err(_) => labels.put_back(entries),
            }
        }
        match written {
            Ok(()) => {
                // Handed over: the last checkpoint's copies must not overwrite them
                // (with the entries no longer here).
                if let Ok(mut board) = handover.board.lock() {
                    for (pair, _) in &records {
                        board.owned.remove(pair);
                        board.written.remove(pair);
                    }
                }
                tracing::info!(partitions = records.len(), "label join entries handed over at the stop")
            }
            Err(e) => {
                tracing::error!(error = %e, "the label join's entries were not handed over at the stop; the checkpoint keeps them")
            }
        }
        self.dirty = true;
    }

    /// The state as it is now. Positions are the next unread offsets, except where a
    /// reference still being taken needs records again after a restart.
    fn checkpoint(&self) -> Checkpoint {
        let sources = self
            .sources
            .iter()
            .enumerate()
            .map(|(slot, source)| {
                let building = self.streams[source.stream].lowest_unsaved_offset(slot as u32);
                let position = match (source.next, building) {
                    _ if self.is_global_source(source) => -1,
                    (Some(next), Some(b)) => next.min(b),
                    (Some(next), None) => next,
                    (None, _) => source.saved.unwrap_or(-1),
                };
                SourcePosition {
                    topic: source.topic.clone(),
                    partition: source.partition,
                    stream: self.streams[source.stream].name.clone(),
                    position,
                }
            })
            .collect();
        let streams = self
            .streams
            .iter()
            .zip(&self.recent)
            .zip(&self.labels)
            .map(|((stream, recent), labels)| {
                let (window, reference) = stream.fingerprint();
                StreamCheckpoint {
                    name: stream.name.clone(),
                    window,
                    reference,
                    windower: stream.snapshot(),
                    recent: recent.reports.iter().cloned().collect(),
                    latest_distributions: recent.distributions.clone(),
                    sequential: recent.sequential.clone(),
                    labels: labels.as_ref().map(|l| l.snapshot()),
                }
            })
            .collect();
        Checkpoint { written_at_ms: now_ms(), sources, streams }
    }

    /// Restores a checkpoint at start-up: open windows, partition positions, and the
    /// recent reports (queued to be sent again, marked as replayed).
    fn restore(&mut self, saved: Checkpoint) -> Result<(), MonitorError> {
        let path = self.checkpoint_path.clone();
        let mismatch = |detail: String| CheckpointError::Mismatch { path: path.clone(), detail };
        for stream in &saved.streams {
            if !self.streams.iter().any(|s| s.name == stream.name) {
                return Err(mismatch(format!("stream `{}` is no longer configured", stream.name)).into());
            }
        }
        for (slot, position) in saved.sources.iter().enumerate() {
            let fits = self
                .routes
                .get(&position.topic)
                .is_some_and(|r| self.streams[r.stream].name == position.stream);
            if !fits {
                return Err(mismatch(format!(
                    "topic `{}` is no longer read by stream `{}`",
                    position.topic, position.stream
                ))
                .into());
            }
            let got = self.source_slot(&position.topic, position.partition).map(|(_, s)| s as usize);
            if got != Some(slot) {
                return Err(mismatch(format!(
                    "partition {} of `{}` is listed twice",
                    position.partition, position.topic
                ))
                .into());
            }
            self.sources[slot].saved = (position.position >= 0
                && !self.is_global_source(&self.sources[slot]))
            .then_some(position.position);
        }
        for (i, stream) in self.streams.iter_mut().enumerate() {
            let Some(cp) = saved.stream(&stream.name) else { continue };
            let (window, reference) = stream.fingerprint();
            if cp.window != window {
                return Err(mismatch(format!(
                    "stream `{}`: windows were `{}`, now `{window}`",
                    stream.name, cp.window
                ))
                .into());
            }
            // A checkpoint taken while the reference was still being taken holds no
            // windows; it fits the reference taken since.
            if cp.reference != reference && cp.windower.is_some() {
                return Err(mismatch(format!("stream `{}`: the reference changed", stream.name)).into());
            }
            stream
                .restore(cp.windower.as_ref())
                .map_err(|e| mismatch(format!("stream `{}`: {e}", stream.name)))?;
            let recent = &mut self.recent[i];
            recent.reports = cp.recent.iter().cloned().collect();
            recent.distributions = cp.latest_distributions.clone();
            recent.sequential = cp.sequential.clone();
            if let Some(labels) = self.labels[i].as_mut() {
                labels.restore(cp.labels.as_ref());
            }
            let newest = recent.reports.len();
            for (n, report) in recent.reports.iter().enumerate() {
                let distributions = if n + 1 == newest { recent.distributions.clone() } else { None };
                self.replay.push(ScoredWindow {
                    report: report.clone(),
                    distributions: distributions.unwrap_or_default(),
                    scoring: Duration::ZERO,
                    replayed: true,
                });
            }
        }
        for i in 0..self.streams.len() {
            self.set_restored_aside(i, &saved);
        }
        let open = saved.open_records();
        tracing::info!(
            path = %self.checkpoint_path.display(),
            written_at = %format_ms(saved.written_at_ms),
            open_records = ?open,
            reports = self.replay.len(),
            "checkpoint restored"
        );
        self.last_checkpoint = Some(saved);
        Ok(())
    }

    /// With a handover: a restored checkpoint's join entries of stream `i` wait aside
    /// (as a revocation's do) until the first assignment says, partition by partition,
    /// whether they stay here or the handover topic has the partition's state (another
    /// instance took it over while this one was down, or this one handed it over at its
    /// last stop or revocation): entries of a partition come from one place, and
    /// nothing is counted twice. Those of partitions not assigned are counted handed
    /// over (the topic has their copies for whoever holds them).
    fn set_restored_aside(&mut self, i: usize, saved: &Checkpoint) {
        let Some(handover) = self.handover.clone() else { return };
        let Some(s) = handover.streams.iter().find(|s| s.stream == i) else { return };
        let Some(labels) = self.labels[i].as_mut() else { return };
        let mut local: BTreeMap<StreamPartition, Vec<(String, i64)>> = BTreeMap::new();
        for p in &saved.sources {
            if p.stream == s.name && p.position >= 0 && s.topics.contains(&p.topic) {
                local.entry((i, p.partition)).or_default().push((p.topic.clone(), p.position));
            }
        }
        let held = labels.snapshot().join_entries().by_partition();
        let partitions: Vec<i32> = held.keys().copied().collect();
        let taken = labels.take_partitions(&partitions);
        for (partition, entries) in taken.by_partition() {
            local.entry((i, partition)).or_default();
            self.parked.push(((i, partition), entries));
        }
        self.parked_at = Instant::now();
        if let Ok(mut board) = handover.board.lock() {
            board.restored.get_or_insert_with(Default::default).extend(local);
        }
    }

    /// `--fresh-state`: moves an existing checkpoint aside and says what that loses.
    fn set_checkpoint_aside(&mut self) -> Result<(), MonitorError> {
        let described = match checkpoint::load(&self.checkpoint_path) {
            Ok(Some(c)) => format!(
                "open windows holding {:?} records (their offsets are committed, so they are not read again) and {} recent reports of the API history",
                c.open_records(),
                c.streams.iter().map(|s| s.recent.len()).sum::<usize>()
            ),
            Ok(None) => String::new(),
            Err(e) => format!("an unreadable checkpoint ({e})"),
        };
        if let Some(aside) =
            checkpoint::set_aside(&self.checkpoint_path, now_ms()).map_err(MonitorError::SetAside)?
        {
            tracing::warn!(
                moved_to = %aside.display(),
                lost = %described,
                "--fresh-state: starting without the checkpoint; what it held is lost. Records after the committed offsets are read as usual"
            );
        }
        Ok(())
    }

    /// After a revocation: back to the last checkpoint. The consumer resumes every
    /// partition from its committed offset, which is the checkpoint's position, so
    /// records read since are read again (and windows closed since are scored again).
    fn roll_back(&mut self) {
        self.unsent.clear();
        self.closed.clear();
        self.discard_global();
        for source in &mut self.sources {
            source.next = None;
        }
        match &self.last_checkpoint {
            Some(saved) => {
                for (stream, recent) in self.streams.iter_mut().zip(&mut self.recent) {
                    let cp = saved.stream(&stream.name);
                    if let Err(e) = stream.restore(cp.and_then(|c| c.windower.as_ref())) {
                        tracing::error!(stream = %stream.name, error = %e, "cannot roll back to the checkpoint; dropping the open windows");
                        stream.discard_open();
                    }
                    recent.reports = cp.map(|c| c.recent.iter().cloned().collect()).unwrap_or_default();
                    recent.distributions = cp.and_then(|c| c.latest_distributions.clone());
                    recent.sequential = cp.map(|c| c.sequential.clone()).unwrap_or_default();
                }
                for (stream, labels) in self.streams.iter().zip(&mut self.labels) {
                    if let Some(labels) = labels.as_mut() {
                        labels.restore(saved.stream(&stream.name).and_then(|c| c.labels.as_ref()));
                    }
                }
                // Entries waiting aside for an assignment are not back in the join:
                // the checkpoint they came from still has them.
                for &((stream, partition), _) in &self.parked {
                    if let Some(labels) = self.labels.get_mut(stream).and_then(Option::as_mut) {
                        let _ = labels.take_partitions(&[partition]);
                    }
                }
            }
            None => {
                for (stream, recent) in self.streams.iter_mut().zip(&mut self.recent) {
                    stream.discard_open();
                    *recent = RecentReports::default();
                }
                for labels in self.labels.iter_mut().flatten() {
                    labels.restore(None);
                }
            }
        }
        self.dirty = false;
        self.paused = false;
        tracing::info!("partitions revoked: rolled back to the last checkpoint");
    }
}

/// Warns about a bad record, at most once a second (the rest are counted).
fn warn_bad(
    log: &mut RateLimitedLog,
    stream: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    bad: &BadRecord,
) {
    let Some(suppressed) = log.admit() else { return };
    tracing::warn!(
        stream,
        topic,
        partition,
        offset,
        reason = bad.reason,
        detail = %bad.detail,
        suppressed,
        "bad record counted and skipped"
    );
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

/// Closing a consumer leaves the group, which waits for a join in progress to end (up
/// to a killed predecessor's session timeout) or for an absent broker; dropping one can
/// also hang (rust-rdkafka#453). So it is closed on a helper thread, waited for until
/// `deadline`, and left behind after that: the process exits without it, and the group
/// notices the member gone within its session timeout. Returns whether it closed.
fn close_consumer(consumer: BaseConsumer<ArcContext>, deadline: Option<Instant>) -> bool {
    let context = consumer.context().0.clone();
    context.closing.store(true, Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("driftscope-close".into()).spawn(move || {
        consumer.unsubscribe();
        drop(consumer);
        let _ = tx.send(());
    });
    if spawned.is_err() {
        tracing::warn!("cannot start a thread to close the kafka consumer; leaving it");
        return false;
    }
    let wait = deadline.map_or(Duration::from_secs(10), |d| d.saturating_duration_since(Instant::now()));
    if rx.recv_timeout(wait).is_err() {
        tracing::warn!(
            joined = context.joined.load(Ordering::SeqCst),
            connected = context.connected.load(Ordering::SeqCst),
            "the kafka consumer did not close within state.shutdown_timeout (a group join in progress or \
             no broker): leaving it; the group drops this member when its session times out"
        );
        return false;
    }
    true
}
