//! The owner's scoring loop: a member of the partials group (`<kafka.group_id>.partials`,
//! read_committed) owns the streams whose partials partition it is assigned
//! ([`owner_partition`]); for each it assembles windows from the partials
//! ([`Assembler`]), scores each window once, when every source partition has passed
//! its end (or has been idle for `scale.idle_timeout`, named in the report's notes),
//! and sends the report down the same outputs path as local mode. Instances that do
//! not own a stream emit nothing for it.
//!
//! A window's index is its last pane's index and its offsets are the partitions'
//! ranges, so its report and trigger ids are the same whoever scores it. After the
//! reports of a round are handed to the outputs, the owner commits its partials offset
//! (the oldest partial still needed, so a new owner reads again what it must merge)
//! with metadata holding, per stream, the windows done (`scored_below`) and the
//! sequential detectors: a new owner after a rebalance or a crash resumes there
//! without scoring a window twice (a crash between the outputs and the commit scores
//! the windows of that round again, with the same ids).

use super::assembler::{Assembler, AssemblerError, GlobalWindow};
use super::publisher::{PARTIALS_GROUP_SUFFIX, ScaleError, owner_partition, partials_consumer_config};
use super::status::{GlobalStatus, INSTANCE_HEADER, Member, OwnedStatus, assignment_partitions, owners};
use crate::config::KafkaConfig;
use crate::health::Health;
use crate::monitor::{ScoredWindow, format_ms, now_ms};
use crate::stats::Reference;
use crate::stats::partial::PartialError;
use crate::stats::partial::{Partial, PartialHeader, SourcePartition};
use crate::stats::report::{OffsetRange, WindowInfo};
use crate::stats::score_window;
use crate::stats::sequential::SequentialState;
use crate::stats::window::WindowSpec;
use crate::telemetry::GlobalSeries;
use crate::telemetry::{RateLimitedLog, StreamCounters};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Headers;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, Message};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a broker call of the loop may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How often the status board is brought up to date, and the partials group described
/// (who owns what, for `/api/v1/streams` on every instance).
const STATUS_EVERY: Duration = Duration::from_secs(1);
const DESCRIBE_EVERY: Duration = Duration::from_secs(2);
/// A description of the group waits at most this long (it holds the loop meanwhile).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Offset metadata above this many bytes is refused by brokers by default
/// (`offset.metadata.max.bytes`); the detectors are left out of it then.
const METADATA_LIMIT: usize = 4000;

/// A global stream as this instance is configured for it.
pub struct GlobalStream {
    pub name: String,
    pub topics: Vec<String>,
    pub header: PartialHeader,
    pub spec: WindowSpec,
    pub reference: Arc<Reference>,
    pub counters: StreamCounters,
}

/// Counts rebalances of the partials group: the loop's state is per assignment.
#[derive(Default)]
struct Generation(AtomicU64);

impl ClientContext for Generation {}

impl ConsumerContext for Generation {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partials partitions assigned");
        }
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What an owner commits with its partials offset, per stream.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StreamProgress {
    /// Windows ending below this pane are scored.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    scored_below: Option<i64>,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    sequential: Option<SequentialState>,
}

struct Owned {
    assembler: Assembler,
    sequential: SequentialState,
    /// Partials-topic offsets of the partials the assembler may still merge.
    held: BTreeMap<(i64, SourcePartition), i64>,
    /// Per source, the offset of the oldest partial refused for another config whose
    /// windows are not all scored: a new owner reads it again and so knows of it.
    refused: BTreeMap<SourcePartition, i64>,
}

/// One assigned partials partition: the streams it carries.
#[derive(Default)]
struct PartitionState {
    streams: BTreeMap<String, Owned>,
    /// The offset after the last partial read.
    next: Option<i64>,
    /// The offset and metadata committed last.
    committed: Option<(i64, String)>,
}

pub struct Scoring {
    consumer: BaseConsumer<Generation>,
    topic: String,
    partitions: i32,
    streams: Vec<GlobalStream>,
    idle_timeout_ms: i64,
    reports: mpsc::Sender<ScoredWindow>,
    log: RateLimitedLog,
    /// Where `/readyz` and `/api/v1/streams` read global mode from.
    health: Arc<Health>,
    series: GlobalSeries,
    instance: String,
    group: String,
    /// The partials group's members at the last description.
    members: Vec<Member>,
    /// The group's state at the last description, or why it failed.
    described: Result<Option<String>, String>,
}

/// Who this instance is, and where it shows what it knows.
pub struct ScoringBoard {
    /// `scale.instance`: the partials consumer's `client.id`, so other instances'
    /// descriptions of the group name this one.
    pub instance: String,
    pub health: Arc<Health>,
    pub series: GlobalSeries,
}

impl Scoring {
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        idle_timeout: Duration,
        streams: Vec<GlobalStream>,
        reports: mpsc::Sender<ScoredWindow>,
        board: ScoringBoard,
    ) -> Result<Scoring, ScaleError> {
        let mut config = partials_consumer_config(kafka);
        config.set("client.id", &board.instance);
        let consumer: BaseConsumer<Generation> = config.create_with_context(Generation::default())?;
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(ScaleError::Topic { topic: topic.into(), message: "has no partitions".into() });
        }
        consumer.subscribe(&[topic])?;
        for s in &streams {
            board.series.owned.with_label_values(&[s.name.as_str()]).set(0);
            board.series.windows_waiting.with_label_values(&[s.name.as_str()]).set(0);
            board.series.disagreements.with_label_values(&[s.name.as_str()]).set(0);
            for reason in ["window", "reference"] {
                board.series.refused.with_label_values(&[s.name.as_str(), reason]);
            }
        }
        Ok(Scoring {
            consumer,
            topic: topic.into(),
            partitions,
            streams,
            idle_timeout_ms: idle_timeout.as_millis() as i64,
            reports,
            log: RateLimitedLog::default(),
            health: board.health,
            series: board.series,
            instance: board.instance,
            group: format!("{}{PARTIALS_GROUP_SUFFIX}", kafka.group_id),
            members: Vec::new(),
            described: Ok(None),
        })
    }

    /// Reads, merges and scores until `stop` is asked for.
    pub fn run(mut self, stop: &dyn Fn() -> bool) -> Result<(), ScaleError> {
        let mut generation = u64::MAX;
        let mut state: BTreeMap<i32, PartitionState> = BTreeMap::new();
        let mut last_round = Instant::now();
        let (mut last_status, mut last_describe) = (None::<Instant>, None::<Instant>);
        while !stop() {
            let polled = self.consumer.poll(Duration::from_millis(100));
            let now = self.consumer.context().0.load(Ordering::SeqCst);
            if now != generation {
                // Eager rebalancing: every partition restarts from its committed offset.
                generation = now;
                state.clear();
            }
            match polled {
                Some(Ok(m)) => {
                    let partition = m.partition();
                    let offset = m.offset();
                    let decoded = Partial::decode(m.payload().unwrap_or_default());
                    let publisher = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == INSTANCE_HEADER)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    drop(m);
                    let p = match state.entry(partition) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(v) => v.insert(self.resume(partition)),
                    };
                    p.next = Some(offset + 1);
                    match decoded {
                        Ok(partial) => self.offer(p, partial, publisher.as_deref(), offset),
                        Err(e) => {
                            if let Some(suppressed) = self.log.admit() {
                                tracing::warn!(topic = %self.topic, partition, offset, error = %e, suppressed, "partials topic: record refused");
                            }
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the partials topic"),
                None => {}
            }
            if last_round.elapsed() >= Duration::from_millis(100) {
                last_round = Instant::now();
                for (partition, p) in &mut state {
                    self.score_ready(p)?;
                    self.commit(*partition, p);
                }
            }
            if last_describe.is_none_or(|t| t.elapsed() >= DESCRIBE_EVERY) {
                last_describe = Some(Instant::now());
                self.describe();
            }
            if last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
                last_status = Some(Instant::now());
                self.publish_status(&state);
            }
        }
        if let Ok(mut global) = self.health.global.lock() {
            *global = None;
        }
        Ok(())
    }

    /// Describes the partials group: its members by instance name (`client.id`) and
    /// the partials partitions each is assigned.
    fn describe(&mut self) {
        let list = match self.consumer.fetch_group_list(Some(&self.group), DESCRIBE_TIMEOUT) {
            Ok(list) => list,
            Err(e) => {
                // The last description stands (owners may have moved since).
                self.described = Err(e.to_string());
                return;
            }
        };
        let Some(group) = list.groups().iter().find(|g| g.name() == self.group) else {
            self.members.clear();
            self.described = Ok(None);
            return;
        };
        let mut members = Vec::new();
        for m in group.members() {
            let partitions = match assignment_partitions(m.assignment().unwrap_or_default(), &self.topic) {
                Ok(p) => p,
                Err(e) => {
                    if let Some(suppressed) = self.log.admit() {
                        tracing::warn!(member = m.client_id(), error = %e, suppressed, "describing the partials group");
                    }
                    Vec::new()
                }
            };
            members.push(Member { instance: m.client_id().to_owned(), partitions });
        }
        members.sort_by(|a, b| a.instance.cmp(&b.instance));
        self.members = members;
        self.described = Ok(Some(group.state().to_owned()));
    }

    /// Brings the health board's global status (and the per-instance gauges) up to date.
    fn publish_status(&self, state: &BTreeMap<i32, PartitionState>) {
        let now = now_ms();
        let assigned = self.assigned();
        let names: Vec<String> = self.streams.iter().map(|s| s.name.clone()).collect();
        let mut owner_of = owners(&names, &self.members, |s| owner_partition(s, self.partitions));
        let mut owned = BTreeMap::new();
        for s in &self.streams {
            let partition = owner_partition(&s.name, self.partitions);
            let mine = assigned.contains(&partition);
            self.series.owned.with_label_values(&[s.name.as_str()]).set(i64::from(mine));
            if !mine {
                // A description from before this instance gave the partition up.
                if owner_of.get(&s.name).is_some_and(|o| o.as_deref() == Some(self.instance.as_str())) {
                    owner_of.insert(s.name.clone(), None);
                }
                self.series.windows_waiting.with_label_values(&[s.name.as_str()]).set(0);
                self.series.disagreements.with_label_values(&[s.name.as_str()]).set(0);
                continue;
            }
            // This instance's own assignment is newer than any description.
            owner_of.insert(s.name.clone(), Some(self.instance.clone()));
            let status = state
                .get(&partition)
                .and_then(|p| p.streams.get(&s.name))
                .map_or_else(OwnedStatus::default, |o| o.assembler.status(now));
            self.series
                .windows_waiting
                .with_label_values(&[s.name.as_str()])
                .set(status.windows_waiting as i64);
            self.series
                .disagreements
                .with_label_values(&[s.name.as_str()])
                .set(status.disagreements.len() as i64);
            owned.insert(s.name.clone(), status);
        }
        let status = GlobalStatus {
            instance: self.instance.clone(),
            partials_topic: self.topic.clone(),
            partials_group: self.group.clone(),
            assigned,
            members: self.members.iter().map(|m| m.instance.clone()).collect(),
            group_state: self.described.as_ref().ok().cloned().flatten(),
            describe_error: self.described.as_ref().err().cloned(),
            owners: owner_of,
            owned,
        };
        if let Ok(mut global) = self.health.global.lock() {
            *global = Some(status);
        }
    }

    /// The partials partitions assigned to this member now.
    fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|a| a.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// A new assignment of `partition`: the owned streams, resumed from the metadata
    /// committed with the partition's offset.
    fn resume(&self, partition: i32) -> PartitionState {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        let progress: BTreeMap<String, StreamProgress> = match self.consumer.committed_offsets(list, TIMEOUT)
        {
            Ok(list) => list
                .find_partition(&self.topic, partition)
                .and_then(|e| serde_json::from_str(e.metadata()).ok())
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(partition, error = %e, "cannot read the partials group's progress; windows may be scored again");
                BTreeMap::new()
            }
        };
        let mut state = PartitionState::default();
        let now = now_ms();
        for s in &self.streams {
            if owner_partition(&s.name, self.partitions) != partition {
                continue;
            }
            let assembler =
                Assembler::new(s.header.clone(), s.spec, self.sources(s), self.idle_timeout_ms, now);
            let mut assembler = match assembler {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(stream = %s.name, error = %e, "cannot assemble global windows");
                    continue;
                }
            };
            let saved = progress.get(&s.name);
            if let Some(below) = saved.and_then(|p| p.scored_below) {
                assembler.resume(below);
            }
            tracing::info!(stream = %s.name, partition, scored_below = ?assembler.scored_below(), "owning stream");
            state.streams.insert(
                s.name.clone(),
                Owned {
                    assembler,
                    sequential: saved.and_then(|p| p.sequential.clone()).unwrap_or_default(),
                    held: BTreeMap::new(),
                    refused: BTreeMap::new(),
                },
            );
        }
        state
    }

    /// Every partition of `stream`'s topics now: the sources each window waits for (a
    /// partition added later is waited for from its first partial on). Asked when the
    /// stream is taken over, by which time its topics hold records.
    fn sources(&self, stream: &GlobalStream) -> Vec<SourcePartition> {
        let mut sources = Vec::new();
        for topic in &stream.topics {
            match self.consumer.fetch_metadata(Some(topic), TIMEOUT) {
                Ok(m) => sources.extend(
                    m.topics()
                        .iter()
                        .flat_map(|t| t.partitions())
                        .map(|p| SourcePartition { topic: topic.clone(), partition: p.id() }),
                ),
                Err(e) => {
                    tracing::warn!(stream = %stream.name, topic, error = %e, "cannot list the topic's partitions; windows wait only for the partitions heard from")
                }
            }
        }
        sources
    }

    fn offer(&mut self, p: &mut PartitionState, partial: Partial, publisher: Option<&str>, offset: i64) {
        let Some(owned) = p.streams.get_mut(&partial.header.stream) else {
            // A stream this instance does not run globally (or another config's).
            return;
        };
        let key = (partial.pane, partial.source.clone());
        let stream = partial.header.stream.clone();
        let source = partial.source.clone();
        match owned.assembler.offer_from(partial, publisher, now_ms()) {
            Ok(()) => {
                owned.held.insert(key, offset);
            }
            Err(e) => {
                if let AssemblerError::Partial(PartialError::Disagree { what, .. }) = &e {
                    self.series.refused.with_label_values(&[stream.as_str(), what]).inc();
                    owned.refused.entry(source).or_insert(offset);
                }
                if let Some(suppressed) = self.log.admit() {
                    tracing::error!(error = %e, publisher, suppressed, "partial refused");
                }
            }
        }
    }

    /// Scores the windows of `p`'s streams that are ready and hands their reports on.
    fn score_ready(&mut self, p: &mut PartitionState) -> Result<(), ScaleError> {
        let now = now_ms();
        for (name, owned) in &mut p.streams {
            let Some(stream) = self.streams.iter().find(|s| &s.name == name) else { continue };
            let windows = match owned.assembler.ready(&stream.reference, now) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(stream = %name, error = %e, "cannot merge a global window");
                    continue;
                }
            };
            for window in windows {
                let scored = score(stream, &mut owned.sequential, window);
                if self.reports.blocking_send(scored).is_err() {
                    return Err(ScaleError::Topic {
                        topic: self.topic.clone(),
                        message: "the outputs stopped accepting reports".into(),
                    });
                }
            }
            // A pane is needed until the last window holding it is scored.
            if let Some(below) = owned.assembler.scored_below() {
                let keep_from = below - (stream.spec.panes_per_window as i64 - 1);
                owned.held.retain(|(pane, _), _| *pane >= keep_from);
            }
            let assembler = &owned.assembler;
            owned.refused.retain(|source, _| assembler.has_refused(source));
        }
        Ok(())
    }

    /// Commits `partition`'s offset (the oldest partial still held, else the next) with
    /// the streams' progress, when it moved.
    fn commit(&self, partition: i32, p: &mut PartitionState) {
        let Some(next) = p.next else { return };
        let offset = p
            .streams
            .values()
            .flat_map(|o| o.held.values().chain(o.refused.values()))
            .copied()
            .min()
            .unwrap_or(next);
        let progress: BTreeMap<&str, StreamProgress> = p
            .streams
            .iter()
            .map(|(name, o)| {
                (
                    name.as_str(),
                    StreamProgress {
                        scored_below: o.assembler.scored_below(),
                        sequential: Some(o.sequential.clone()),
                    },
                )
            })
            .collect();
        let mut metadata = serde_json::to_string(&progress).unwrap_or_default();
        if metadata.len() > METADATA_LIMIT {
            let bare: BTreeMap<&str, StreamProgress> = progress
                .iter()
                .map(|(n, s)| (*n, StreamProgress { scored_below: s.scored_below, sequential: None }))
                .collect();
            metadata = serde_json::to_string(&bare).unwrap_or_default();
        }
        if p.committed.as_ref().is_some_and(|(o, m)| *o == offset && *m == metadata) {
            return;
        }
        let mut list = TopicPartitionList::new();
        if list.add_partition_offset(&self.topic, partition, Offset::Offset(offset)).is_err() {
            return;
        }
        if let Some(mut e) = list.find_partition(&self.topic, partition) {
            e.set_metadata(metadata.clone());
        }
        match self.consumer.commit(&list, CommitMode::Async) {
            Ok(()) => p.committed = Some((offset, metadata)),
            Err(e) => tracing::warn!(partition, error = %e, "committing the partials offset failed; retried"),
        }
    }
}

/// Scores one merged window as local mode scores a closed one.
fn score(stream: &GlobalStream, sequential: &mut SequentialState, window: GlobalWindow) -> ScoredWindow {
    let offsets = window
        .merged
        .contributions
        .iter()
        .filter_map(|c| {
            let (first, last) = c.offsets?;
            Some(OffsetRange { topic: c.source.topic.clone(), partition: c.source.partition, first, last })
        })
        .collect();
    let info = WindowInfo {
        start: format_ms(window.start_ms),
        end: format_ms(window.end_ms),
        records: 0,
        index: window.index.max(0) as u64,
        offsets,
        late_records: window.merged.late_records,
    };
    let started = Instant::now();
    let reference = &stream.reference;
    let mut report = score_window(reference, &window.merged.sketch, info);
    sequential.update(&mut report, reference.settings.alpha_sequential);
    let scoring = started.elapsed();
    report.stream = Some(stream.name.clone());
    for idle in &window.idle {
        report.notes.push(format!(
            "partition {}/{} published nothing for scale.idle_timeout: this window was closed without it",
            idle.topic, idle.partition
        ));
    }
    for refused in &window.refused {
        report.notes.push(format!(
            "partials of {}/{} for this window were refused (their instance's window or reference differed \
             from the owner's): those records are not in this window",
            refused.topic, refused.partition
        ));
    }
    stream.counters.windows_closed.inc();
    tracing::info!(
        stream = %stream.name,
        window = report.window.index,
        records = report.window.records,
        drift_share = report.dataset.drift_share,
        dataset_drifted = report.dataset.drifted,
        partitions = window.merged.contributions.len(),
        idle = window.idle.len(),
        "global window scored"
    );
    let distributions = Arc::new(crate::stats::distribution::distributions(reference, &window.merged.sketch));
    ScoredWindow { report: Arc::new(report), distributions, scoring, replayed: false }
}
