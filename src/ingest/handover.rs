//! The handover of a stream's label join when its partitions move to another instance
//! of the consumer group (`labels.handover_topic`): the waiting predictions, waiting
//! labels and joined ids' markers of a partition go to its new owner through a
//! compacted topic, one record per (group, stream, partition number), so a prediction
//! is joined once wherever its label is read and nothing is counted twice.
//!
//! How it fits the windows' own handover (roll back to the last checkpoint, commit its
//! positions): a record holds the join's entries *as of the last checkpoint* and the
//! positions that checkpoint commits, for the stream's topics at that partition number.
//!
//! * At a revocation the old owner's rebalance callback commits the checkpoint's
//!   positions (as before) and writes the records of the revoked partitions from the
//!   same checkpoint, waiting for the broker's acknowledgement before it returns, so
//!   the group's next assignment is made after the records are in the topic. While a
//!   revocation is handled the pipeline writes no checkpoint ([`Board::revoke_pending`]),
//!   so what is committed and what is handed over stay one state. The pipeline then
//!   rolls back to that checkpoint and takes the written partitions' entries aside.
//! * At the assignment that follows, a partition that came back to the same instance
//!   gets its entries back untouched (nobody else held it in between); any other
//!   written partition's waiting predictions are counted `handed_over` in their windows.
//!   A newly assigned partition's record is read before any of its messages is
//!   processed, and adopted only when its positions equal the group's committed offsets
//!   (then it is the state those offsets continue); otherwise it is stale (an owner
//!   since read on) and left, logged. A record of another instance used is then
//!   deleted (a tombstone, for compaction: a record that continues from the committed
//!   offsets is the state at them whoever adopted it since, as an adopter that read on
//!   committed further, its own copies first).
//! * At a stop (SIGTERM) the pipeline hands every partition's entries over itself, with
//!   the positions of its last checkpoint, before it writes that checkpoint.
//! * At every commit (SIGKILL): before the checkpoint is written, so before its offsets
//!   are committed, a copy of its entries of every owned partition that changed since
//!   its last copy is written and acknowledged, with the positions that commit commits.
//!   An instance killed with SIGKILL hands nothing over itself: its partitions' new
//!   owners adopt its last copies by the rule above. A reader takes the latest record
//!   that continues from the committed offsets, not simply the latest: a writer killed
//!   after a commit's copies and before the broker took the commit leaves a latest
//!   record ahead of them, and the one before it is the state they continue. Only owned
//!   partitions are copied (not after their revocation, loss or hand-over at a stop).
//! * At a restart the checkpoint's entries wait aside until the first assignment, which
//!   decides per partition where they come from (`restart_keeps` in
//!   [`crate::ingest::kafka`]): the checkpoint when it is ahead of the commit, or level
//!   with it while the record that continues is this instance's own copy ([`Handover::writer`]
//!   is kept in `state.dir`); else the topic's record. So a partition's entries come
//!   from one place and nothing counts twice, also when the instance was killed
//!   between a revocation's records and its next checkpoint.
//!
//! Kafka I/O only: what the entries are and how they are counted is
//! [`crate::stats::label_join`] and [`crate::monitor::labels`].

use crate::config::Config;
use crate::stats::label_join::Handed;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a rebalance callback waits for the handover topic (writing, reading).
pub const HANDOVER_BOUND: Duration = Duration::from_secs(30);

/// A (stream index, partition number) pair.
pub type StreamPartition = (usize, i32);

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0} handover record(s) not acknowledged by the broker")]
    NotAcknowledged(u64),
    #[error("the handover topic `{0}` was not read to its end in time")]
    ReadTimeout(String),
    #[error("a handover record cannot be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// An encoded record of a pair (`None`: a tombstone).
pub type Encoded = (StreamPartition, Option<Vec<u8>>);

/// A commit's copies, and their digests for [`Board::written`] once written.
#[derive(Debug, Default)]
pub struct Copies {
    pub records: Vec<Encoded>,
    pub digests: Vec<(StreamPartition, u64)>,
}

/// What one record holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoverRecord {
    /// The next offset of each of the stream's topics at this partition number that
    /// the writer had read (the offsets committed with this state).
    pub positions: Vec<(String, i64)>,
    /// The writer's class names by index (multiclass values are indices).
    pub classes: Vec<String>,
    pub entries: Handed,
    /// The writing instance ([`Handover::writer`]; 0 in records of older versions).
    #[serde(default)]
    pub writer: u64,
    /// A copy written at a commit: the writer keeps the entries (a revocation's or a
    /// stop's record hands them over: the writer no longer has them).
    #[serde(default)]
    pub copy: bool,
}

/// A labels stream with a handover topic.
#[derive(Debug, Clone)]
pub struct HandoverStream {
    pub stream: usize,
    pub name: String,
    pub topic: String,
    /// The stream's prediction and label topics.
    pub topics: Vec<String>,
}

/// A stream's join as of the last checkpoint (what a revocation hands over).
#[derive(Debug, Default)]
pub struct SavedJoin {
    pub entries: Handed,
    pub classes: Vec<String>,
}

/// What the assignment means for the entries set aside at the revocation, and the
/// records to adopt.
#[derive(Debug, Default)]
pub struct Assigned {
    /// Partitions written at the revocation that came back to this instance.
    pub kept: BTreeSet<StreamPartition>,
    pub adopted: Vec<(StreamPartition, HandoverRecord)>,
}

/// Shared between the rebalance callbacks (consumer thread) and the pipeline.
#[derive(Debug, Default)]
pub struct Board {
    /// Set by a revocation's callback until the pipeline has rolled back: no
    /// checkpoint is written meanwhile.
    pub revoke_pending: bool,
    /// Per stream index, the join as of the last checkpoint.
    pub saved: BTreeMap<usize, Arc<SavedJoin>>,
    /// Partitions whose records the last revocation wrote.
    pub handed_last: BTreeSet<StreamPartition>,
    /// For the batch that carries the revocation: the partitions written.
    pub revoked: Option<Vec<StreamPartition>>,
    /// For the batch after the assignment.
    pub assigned: Option<Assigned>,
    /// Assignments noticed, and those the pipeline applied and checkpointed: a
    /// revocation waits for them to be equal, so it hands over the adopted entries too.
    pub notices_made: u64,
    pub notices_applied: u64,
    /// The pairs of the group's current assignment: periodic records are written for
    /// these alone, so an instance never overwrites a partition it no longer owns.
    pub owned: BTreeSet<StreamPartition>,
    /// Per pair, a digest of the last periodic record written (its positions and
    /// entries): a partition whose state did not change is not written again.
    pub written: BTreeMap<StreamPartition, u64>,
    /// The committed offsets of the assigned partitions, read at the assignment: the
    /// positions of a partition whose entries were adopted before any of its messages
    /// was read.
    pub committed: BTreeMap<(String, i32), i64>,
    /// After a restart, until the first assignment: per pair the positions of the
    /// restored checkpoint (its entries wait aside in the pipeline), so the assignment
    /// decides where each partition's entries come from.
    pub restored: Option<BTreeMap<StreamPartition, Vec<(String, i64)>>>,
}

/// How a restored checkpoint's positions at a partition stand against the group's
/// committed offsets there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The checkpoint was written, its commit not done: this instance read on past the
    /// commit, and only it holds that state.
    Ahead,
    Equal,
    /// Another instance read on since (and committed): the checkpoint's entries are stale.
    Behind,
}

/// Compares a checkpoint's positions at `partition` with the committed offsets. A topic
/// the checkpoint has no position for is not compared (nothing of it was read here); a
/// position without a committed offset is ahead (its commit never came).
pub fn standing(
    local: &[(String, i64)],
    committed: &BTreeMap<(String, i32), i64>,
    partition: i32,
) -> Standing {
    let mut ahead = false;
    for (topic, offset) in local {
        match committed.get(&(topic.clone(), partition)) {
            Some(c) if offset < c => return Standing::Behind,
            Some(c) if offset > c => ahead = true,
            Some(_) => {}
            None => ahead = true,
        }
    }
    if ahead { Standing::Ahead } else { Standing::Equal }
}

struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::kafka::forward_log(level, fac, log_message)
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() { &self.0.ok } else { &self.0.failed };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct Handover {
    group: String,
    pub streams: Vec<HandoverStream>,
    producer: BaseProducer<AckContext>,
    acks: Arc<Acks>,
    reader: ClientConfig,
    pub board: Mutex<Board>,
    pub applied: Condvar,
    /// Records found stale (positions behind or ahead of the committed offsets).
    pub stale: AtomicU64,
    /// This instance's identity in its records, kept in `state.dir` so it survives a
    /// restart: a restarted instance knows its own copies from another's records.
    pub writer: u64,
    /// Periodic records written, their payload bytes (before compression) and the time
    /// spent waiting for their acknowledgements (ns): logged at the stop.
    pub periodic_records: AtomicU64,
    pub periodic_bytes: AtomicU64,
    pub periodic_nanos: AtomicU64,
    pub periodic_writes: AtomicU64,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover").field("streams", &self.streams).finish_non_exhaustive()
    }
}

impl Handover {
    /// `None` when no stream names a handover topic.
    pub fn new(config: &Config) -> Result<Option<Handover>, HandoverError> {
        let streams: Vec<HandoverStream> = config
            .streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let labels = s.labels.as_ref()?;
                Some(HandoverStream {
                    stream: i,
                    name: s.name.clone(),
                    topic: labels.handover_topic.clone()?,
                    topics: s.topics.iter().chain(&labels.topics).cloned().collect(),
                })
            })
            .collect();
        if streams.is_empty() {
            return Ok(None);
        }
        let kafka = &config.kafka;
        let mut producer = ClientConfig::new();
        // Compressed: a record is a partition's whole join, written at every commit
        // that changed it (see the README's sizing rule).
        producer
            .set("bootstrap.servers", &kafka.brokers)
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("compression.codec", "lz4");
        let mut reader = super::kafka::consumer_config(kafka);
        for (key, value) in &kafka.properties {
            if !matches!(
                key.as_str(),
                "group.id"
                    | "group.instance.id"
                    | "auto.offset.reset"
                    | "enable.auto.commit"
                    | "enable.auto.offset.store"
                    | "session.timeout.ms"
                    | "partition.assignment.strategy"
            ) {
                producer.set(key, value);
            }
        }
        // The reader assigns partitions itself: no group membership, no commits.
        reader
            .set("group.id", format!("{}.handover-reader", kafka.group_id))
            .remove("group.instance.id")
            .set("enable.partition.eof", "false");
        let acks = Arc::new(Acks { ok: AtomicU64::new(0), failed: AtomicU64::new(0) });
        let writer = writer_id(&config.state.dir);
        Ok(Some(Handover {
            group: kafka.group_id.clone(),
            streams,
            producer: producer.create_with_context(AckContext(acks.clone()))?,
            acks,
            reader,
            board: Mutex::new(Board::default()),
            applied: Condvar::new(),
            stale: AtomicU64::new(0),
            writer,
            periodic_records: AtomicU64::new(0),
            periodic_bytes: AtomicU64::new(0),
            periodic_nanos: AtomicU64::new(0),
            periodic_writes: AtomicU64::new(0),
        }))
    }

    /// The record key of a stream's partition.
    pub fn key(&self, stream: &str, partition: i32) -> String {
        serde_json::json!([self.group, stream, partition]).to_string()
    }

    fn stream(&self, index: usize) -> Option<&HandoverStream> {
        self.streams.iter().find(|s| s.stream == index)
    }

    /// The (stream, partition) pairs of handover streams in a partition list.
    pub fn pairs(&self, list: &TopicPartitionList) -> BTreeSet<StreamPartition> {
        let mut out = BTreeSet::new();
        for e in list.elements() {
            for s in self.streams.iter().filter(|s| s.topics.iter().any(|t| t == e.topic())) {
                out.insert((s.stream, e.partition()));
            }
        }
        out
    }

    /// Writes records (`None`: a tombstone) and waits until the broker acknowledged
    /// every one, at most `bound`.
    pub fn write(
        &self,
        records: &[(StreamPartition, Option<HandoverRecord>)],
        bound: Duration,
    ) -> Result<(), HandoverError> {
        let encoded = records
            .iter()
            .map(|(pair, record)| Ok((*pair, record.as_ref().map(rmp_serde::to_vec_named).transpose()?)))
            .collect::<Result<Vec<_>, HandoverError>>()?;
        self.write_encoded(&encoded, bound)
    }

    /// [`Self::write`] of encoded records.
    pub fn write_encoded(&self, records: &[Encoded], bound: Duration) -> Result<(), HandoverError> {
        if records.is_empty() {
            return Ok(());
        }
        let (ok0, failed0) = (self.acks.ok.load(Ordering::SeqCst), self.acks.failed.load(Ordering::SeqCst));
        let mut sent = 0u64;
        for ((stream, partition), payload) in records {
            let Some(s) = self.stream(*stream) else { continue };
            let key = self.key(&s.name, *partition);
            let mut out = BaseRecord::<str, [u8]>::to(&s.topic).key(key.as_str());
            if let Some(payload) = payload.as_deref() {
                out = out.payload(payload);
            }
            self.producer.send(out).map_err(|(e, _)| e)?;
            sent += 1;
        }
        // Served until every record is answered: `flush` polls in steps of 100 ms and
        // added about that to each write (measured: 105 ms per commit's copies).
        let deadline = Instant::now() + bound;
        let answered = || {
            let ok = self.acks.ok.load(Ordering::SeqCst) - ok0;
            let failed = self.acks.failed.load(Ordering::SeqCst) - failed0;
            (ok, failed)
        };
        loop {
            let (ok, failed) = answered();
            if ok + failed >= sent {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.producer.flush(Duration::ZERO)?;
                break;
            }
            self.producer.poll(left.min(Duration::from_millis(5)));
        }
        let (ok, failed) = answered();
        if ok < sent {
            return Err(HandoverError::NotAcknowledged(failed.max(sent - ok)));
        }
        Ok(())
    }

    /// Of each wanted (stream, partition), the latest record that continues from the
    /// group's committed offsets ([`Self::continues`]), read from the start of the
    /// handover topics to their ends. Not simply the latest: a writer killed after
    /// writing a commit's records and before the broker took the commit leaves a latest
    /// record ahead of the committed offsets, and the one before it is the state they
    /// continue. A tombstone (a record adopted) hides nothing: a record continuing from
    /// the committed offsets is the state at them whoever adopted it since (an adopter
    /// that read on committed further, and wrote its own records first).
    pub fn read(
        &self,
        wanted: &BTreeSet<StreamPartition>,
        committed: &BTreeMap<(String, i32), i64>,
        bound: Duration,
    ) -> Result<BTreeMap<StreamPartition, HandoverRecord>, HandoverError> {
        let mut later_stale: BTreeMap<StreamPartition, Vec<(String, i64)>> = BTreeMap::new();
        let found = self.read_with(wanted, bound, |pair, record, found| {
            if self.continues(pair, &record, committed) {
                later_stale.remove(&pair);
                found.insert(pair, record);
            } else {
                later_stale.insert(pair, record.positions);
            }
        })?;
        for (pair, positions) in later_stale {
            if found.contains_key(&pair) {
                tracing::info!(
                    partition = pair.1,
                    written_at = ?positions,
                    "the latest handover record is ahead of the committed offsets (its writer stopped before its \
                     commit was taken): the record before it, which continues from them, is used"
                );
            } else {
                self.stale.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    partition = pair.1,
                    written_at = ?positions,
                    "no handover record continues from the committed offsets (its writer read on, or died \
                     without handing over): none adopted"
                );
            }
        }
        Ok(found)
    }

    /// Reads the wanted pairs' records from the start of the handover topics to their
    /// ends, handing each decoded record to `take` (tombstones and unreadable records
    /// are skipped).
    fn read_with(
        &self,
        wanted: &BTreeSet<StreamPartition>,
        bound: Duration,
        mut take: impl FnMut(StreamPartition, HandoverRecord, &mut BTreeMap<StreamPartition, HandoverRecord>),
    ) -> Result<BTreeMap<StreamPartition, HandoverRecord>, HandoverError> {
        let deadline = Instant::now() + bound;
        let mut by_key: BTreeMap<(String, String), StreamPartition> = BTreeMap::new();
        for &(stream, partition) in wanted {
            if let Some(s) = self.stream(stream) {
                by_key.insert((s.topic.clone(), self.key(&s.name, partition)), (stream, partition));
            }
        }
        let topics: BTreeSet<&str> = by_key.keys().map(|(t, _)| t.as_str()).collect();
        let mut found = BTreeMap::new();
        if topics.is_empty() {
            return Ok(found);
        }
        let consumer: BaseConsumer = self.reader.create()?;
        let mut list = TopicPartitionList::new();
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for topic in &topics {
            let metadata = consumer.fetch_metadata(Some(topic), bound)?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (low, high) = consumer.fetch_watermarks(topic, p.id(), bound)?;
                    if high > low {
                        list.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                        ends.insert((topic.to_string(), p.id()), high);
                    }
                }
            }
        }
        consumer.assign(&list)?;
        while !ends.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let topic = ends.keys().next().map(|(t, _)| t.clone()).unwrap_or_default();
                return Err(HandoverError::ReadTimeout(topic));
            }
            match consumer.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => {
                    let at = (m.topic().to_owned(), m.partition());
                    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                    if let Some(&pair) = by_key.get(&(at.0.clone(), key)) {
                        match m.payload().map(rmp_serde::from_slice::<HandoverRecord>) {
                            Some(Ok(record)) => take(pair, record, &mut found),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, offset = m.offset(), "unreadable handover record: skipped");
                            }
                            None => {}
                        }
                    }
                    if ends.get(&at).is_some_and(|&end| m.offset() + 1 >= end) {
                        ends.remove(&at);
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "reading the handover topic"),
                None => {}
            }
        }
        Ok(found)
    }

    /// A revocation's records: of every revoked pair, the join's entries of that
    /// partition as of the last checkpoint, with the positions committed (`safe`).
    pub fn revoked_records(
        &self,
        board: &Board,
        revoked: &BTreeSet<StreamPartition>,
        safe: &crate::health::SafeOffsets,
    ) -> Vec<(StreamPartition, Option<HandoverRecord>)> {
        revoked
            .iter()
            .filter_map(|&(stream, partition)| {
                let s = self.stream(stream)?;
                let saved = board.saved.get(&stream);
                let positions = s
                    .topics
                    .iter()
                    .filter_map(|t| {
                        let at = (t.clone(), partition);
                        Some((t.clone(), *safe.get(&at).or_else(|| board.committed.get(&at))?))
                    })
                    .collect();
                let record = HandoverRecord {
                    positions,
                    classes: saved.map(|j| j.classes.clone()).unwrap_or_default(),
                    entries: saved.map(|j| j.entries.of_partition(partition)).unwrap_or_default(),
                    writer: self.writer,
                    copy: false,
                };
                Some(((stream, partition), Some(record)))
            })
            .collect()
    }

    /// A commit's records: of every pair this instance owns whose positions or entries
    /// changed since its last periodic record, a copy of the checkpoint's entries with
    /// the positions the commit will commit (`positions`: (topic, partition) -> offset;
    /// a partition not read yet has those committed when it was assigned). Encoded, with
    /// a digest each for [`Board::written`].
    pub fn periodic_records(
        &self,
        board: &Board,
        joins: &BTreeMap<usize, (BTreeMap<i32, Handed>, Vec<String>)>,
        positions: &BTreeMap<(String, i32), i64>,
    ) -> Result<Copies, HandoverError> {
        let mut out = Copies::default();
        let empty = Handed::default();
        for &(stream, partition) in &board.owned {
            let (Some(s), Some((entries, classes))) = (self.stream(stream), joins.get(&stream)) else {
                continue;
            };
            let record = HandoverRecord {
                positions: s
                    .topics
                    .iter()
                    .filter_map(|t| {
                        let at = (t.clone(), partition);
                        Some((t.clone(), *positions.get(&at).or_else(|| board.committed.get(&at))?))
                    })
                    .collect(),
                classes: classes.clone(),
                entries: entries.get(&partition).unwrap_or(&empty).clone(),
                writer: self.writer,
                copy: true,
            };
            let payload = rmp_serde::to_vec_named(&record)?;
            let digest = {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::hash::DefaultHasher::new();
                payload.hash(&mut hasher);
                hasher.finish()
            };
            if board.written.get(&(stream, partition)) != Some(&digest) {
                out.records.push(((stream, partition), Some(payload)));
                out.digests.push(((stream, partition), digest));
            }
        }
        Ok(out)
    }

    /// Partitions no longer assigned (lost with the group session): no more periodic
    /// records of them.
    pub fn disown(&self, partitions: &TopicPartitionList) {
        if let Ok(mut board) = self.board.lock() {
            for pair in self.pairs(partitions) {
                board.owned.remove(&pair);
                board.written.remove(&pair);
            }
        }
    }

    /// Whether a record continues from the group's committed offsets at its partition
    /// (`committed`: (topic, partition) -> offset): every position it was written at is
    /// the committed one. A topic its writer never read there has no position and holds
    /// none of its entries, so whatever is committed for it does not matter.
    pub fn continues(
        &self,
        (stream, partition): StreamPartition,
        record: &HandoverRecord,
        committed: &BTreeMap<(String, i32), i64>,
    ) -> bool {
        let Some(s) = self.stream(stream) else { return false };
        record.positions.iter().all(|(topic, offset)| {
            s.topics.contains(topic) && committed.get(&(topic.clone(), partition)) == Some(offset)
        })
    }

    /// Blocks until the pipeline applied (and checkpointed) every assignment noticed,
    /// at most `bound`; returns the board locked.
    pub fn wait_applied(&self, bound: Duration) -> Option<std::sync::MutexGuard<'_, Board>> {
        let guard = self.board.lock().ok()?;
        let (guard, waited) =
            self.applied.wait_timeout_while(guard, bound, |b| b.notices_applied < b.notices_made).ok()?;
        if waited.timed_out() {
            tracing::warn!(
                "the pipeline has not applied the last assignment's handover; handing over what the last checkpoint holds"
            );
        }
        Some(guard)
    }

    /// The pipeline applied an assignment's notice and checkpointed.
    pub fn notice_applied(&self) {
        if let Ok(mut board) = self.board.lock() {
            board.notices_applied = board.notices_made;
        }
        self.applied.notify_all();
    }
}

/// This instance's writer identity, kept in `<state.dir>/handover-writer` (made at the
/// first start). When it cannot be kept a new one is used (logged): a restart then
/// takes its own copies for another instance's, and adopts them over its checkpoint.
fn writer_id(dir: &std::path::Path) -> u64 {
    let path = dir.join("handover-writer");
    if let Some(id) = std::fs::read_to_string(&path).ok().and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
    {
        return id;
    }
    let id = rand::random::<u64>() | 1;
    let kept = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, format!("{id:016x}\n")));
    if let Err(e) = kept {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the handover writer identity; a restart will adopt its own handover records over its checkpoint");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handover of one stream `s` (topics `p`, labels `l`), its state in `dir`.
    fn handover_in(dir: &std::path::Path) -> Handover {
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[state]\ndir = {:?}\n[[streams]]\nname = \"s\"\n\
             topics = [\"p\"]\nformat = \"json\"\nwindow = {{ type = \"tumbling_count\", size = 4 }}\n\
             reference = {{ from_stream = 10 }}\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
             [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\n\
             label = \"/y\"\nttl = \"10s\"\nhandover_topic = \"h\"\n\
             task = {{ type = \"binary\", score = \"/p\", threshold = 0.5 }}\n",
            dir.display().to_string()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t.toml")).expect("config");
        Handover::new(&config).expect("handover").expect("configured")
    }

    #[test]
    fn a_record_continues_only_from_its_own_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = handover_in(dir.path());
        assert_eq!(h.key("s", 3), r#"["g","s",3]"#);
        let record = HandoverRecord { positions: vec![("p".into(), 10)], ..Default::default() };
        let mut committed = BTreeMap::from([(("p".to_owned(), 3), 10)]);
        assert!(h.continues((0, 3), &record, &committed), "labels never read: no position either side");
        committed.insert(("l".to_owned(), 3), 4);
        assert!(h.continues((0, 3), &record, &committed), "the writer held nothing of the labels");
        let both =
            HandoverRecord { positions: vec![("p".into(), 10), ("l".into(), 3)], ..Default::default() };
        assert!(!h.continues((0, 3), &both, &committed), "the group committed labels since");
        committed.insert(("p".to_owned(), 3), 12);
        assert!(!h.continues((0, 3), &record, &committed), "read on after the record: stale");
    }

    #[test]
    fn a_restarted_instance_keeps_its_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, again) = (handover_in(dir.path()).writer, handover_in(dir.path()).writer);
        assert_eq!(first, again);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(handover_in(other.path()).writer, first, "another state directory, another writer");
    }

    #[test]
    fn a_checkpoint_stands_ahead_level_or_behind_the_commit() {
        let committed = BTreeMap::from([(("p".to_owned(), 1), 10), (("l".to_owned(), 1), 5)]);
        let at = |p: i64, l: i64| vec![("p".to_owned(), p), ("l".to_owned(), l)];
        assert_eq!(standing(&at(10, 5), &committed, 1), Standing::Equal);
        assert_eq!(standing(&at(12, 5), &committed, 1), Standing::Ahead);
        assert_eq!(standing(&at(12, 4), &committed, 1), Standing::Behind, "another read on in one topic");
        assert_eq!(standing(&at(10, 5), &committed, 2), Standing::Ahead, "never committed there");
        assert_eq!(
            standing(&[("p".to_owned(), 10)], &committed, 1),
            Standing::Equal,
            "labels never read here"
        );
    }

    #[test]
    fn copies_are_written_for_owned_partitions_that_changed_at_the_commit_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = handover_in(dir.path());
        let mut board = Board { owned: BTreeSet::from([(0, 1), (0, 2)]), ..Default::default() };
        // Partition 2 was adopted and not read since: the offsets committed then.
        board.committed.insert(("p".to_owned(), 2), 7);
        let mut join = crate::stats::label_join::LabelJoin::new(crate::stats::label_join::JoinSettings {
            ttl_ms: 10_000,
            max_pending: 100,
            sample: 1.0,
        });
        let mut events = Vec::new();
        for (id, partition) in [(1u64, 1), (2, 1), (3, 3)] {
            join.prediction_in(partition, id, 4, 0.9, 0, &mut events);
        }
        let joins = BTreeMap::from([(0, (join.snapshot().entries().by_partition(), Vec::new()))]);
        let positions = BTreeMap::from([(("p".to_owned(), 1), 20), (("l".to_owned(), 1), 9)]);
        let Copies { records, digests } = h.periodic_records(&board, &joins, &positions).expect("encoded");
        let decoded: BTreeMap<StreamPartition, HandoverRecord> = records
            .iter()
            .map(|(pair, r)| {
                (*pair, rmp_serde::from_slice(r.as_deref().expect("a record")).expect("decoded"))
            })
            .collect();
        assert_eq!(decoded.keys().copied().collect::<Vec<_>>(), [(0, 1), (0, 2)], "partition 3 is not owned");
        let one = &decoded[&(0, 1)];
        assert_eq!(one.positions, [("p".to_owned(), 20), ("l".to_owned(), 9)]);
        assert_eq!((one.entries.len(), one.copy, one.writer), (2, true, h.writer));
        assert_eq!(decoded[&(0, 2)].positions, [("p".to_owned(), 7)]);
        assert!(decoded[&(0, 2)].entries.is_empty());
        board.written.extend(digests);
        let again = h.periodic_records(&board, &joins, &positions).expect("encoded");
        assert!(again.records.is_empty(), "nothing changed: nothing written");
        let moved = BTreeMap::from([(("p".to_owned(), 1), 21), (("l".to_owned(), 1), 9)]);
        let moved = h.periodic_records(&board, &joins, &moved).expect("encoded").records;
        assert_eq!(moved.iter().map(|(pair, _)| *pair).collect::<Vec<_>>(), [(0, 1)], "its positions moved");
    }
}
