//! The consumer thread of the monitor. It polls the group, copies each message into a
//! batch (payload and key bytes side by side, with the record's partition slot, offset
//! and arrival time) and hands full batches to the pipeline thread through a bounded
//! channel, so polling and librdkafka's bookkeeping run on one core while decoding and
//! sketching run on the other. It also does what only the consumer can: commits, pause
//! and resume, which the pipeline asks for through a control channel. Batches come
//! back for reuse, so the steady state allocates nothing per message.

use super::TopicRoute;
use crate::ingest::kafka::{ArcContext, MonitorContext};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

/// Records per batch: large enough that the hand-over costs little per record, small
/// enough that a batch is a few hundred kilobytes.
pub const BATCH_RECORDS: usize = 512;
/// Batches in flight between the threads; when all are queued the consumer thread
/// waits (backpressure) and librdkafka's own bounded prefetch fills up behind it.
pub const BATCHES_IN_FLIGHT: usize = 4;
/// A partial batch is handed over after this long, so quiet streams are not delayed.
const BATCH_LINGER: Duration = Duration::from_millis(5);

/// One message, by reference into its batch's bytes.
#[derive(Debug, Clone, Copy)]
pub struct FeedRecord {
    pub slot: u32,
    pub offset: i64,
    /// Processing time (ms since the epoch) when it was polled.
    pub time_ms: i64,
    pub payload: (u32, u32),
    pub key: Option<(u32, u32)>,
}

/// A partition seen for the first time, announced before its first record.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub slot: u32,
    pub topic: String,
    pub partition: i32,
    pub stream: usize,
}

#[derive(Debug, Default)]
pub struct Batch {
    /// Partitions were revoked before these records were polled: the pipeline rolls
    /// back to its checkpoint first.
    pub revoked: bool,
    pub new_sources: Vec<NewSource>,
    pub records: Vec<FeedRecord>,
    pub bytes: Vec<u8>,
}

impl Batch {
    pub fn bytes_of(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.bytes[start as usize..(start + len) as usize]
    }

    fn clear(&mut self) {
        self.revoked = false;
        self.new_sources.clear();
        self.records.clear();
        self.bytes.clear();
    }

    fn push_bytes(&mut self, data: &[u8]) -> (u32, u32) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(data);
        (start, data.len() as u32)
    }
}

/// What the pipeline thread asks of the consumer.
#[derive(Debug)]
pub enum Control {
    /// Commit these next offsets (the positions of a written checkpoint).
    Commit(Vec<(String, i32, i64)>, CommitMode),
    /// Stop fetching (the checkpoint cannot be written) or start again.
    Pause(bool),
}

/// The consumer side: routing, batching, commits.
pub struct Feeder {
    pub consumer: BaseConsumer<ArcContext>,
    pub context: Arc<MonitorContext>,
    pub routes: FxHashMap<String, TopicRoute>,
    pub next_slot: u32,
    /// Offsets committed (or being committed) per partition.
    committed: FxHashMap<(String, i32), i64>,
    /// The last commit asked for, sent again when a commit fails.
    wanted: Vec<(String, i32, i64)>,
    commit_retry_at: Instant,
}

impl Feeder {
    pub fn new(
        consumer: BaseConsumer<ArcContext>,
        context: Arc<MonitorContext>,
        routes: FxHashMap<String, TopicRoute>,
        next_slot: u32,
    ) -> Feeder {
        Feeder {
            consumer,
            context,
            routes,
            next_slot,
            committed: FxHashMap::default(),
            wanted: Vec::new(),
            commit_retry_at: Instant::now(),
        }
    }

    /// Polls until `shutdown` is set or the pipeline hangs up, sending batches; applies
    /// controls as they come. Returns with the last batch sent and the sender dropped.
    pub fn run(
        &mut self,
        shutdown: &AtomicBool,
        batches: SyncSender<Batch>,
        spare: &Receiver<Batch>,
        controls: &Receiver<Control>,
    ) {
        let mut batch = Batch::default();
        let mut started = Instant::now();
        let mut clock_ms = super::now_ms();
        let mut polls = 0u32;
        loop {
            if shutdown.load(Ordering::SeqCst) {
                break;
            }
            self.apply_controls(controls);
            let timeout = if batch.records.is_empty() { Duration::from_millis(100) } else { Duration::ZERO };
            let polled = self.consumer.poll(timeout);
            if self.context.revoked.swap(false, Ordering::SeqCst) {
                // Records polled before the revocation go first, then the rollback.
                if !batch.records.is_empty() || !batch.new_sources.is_empty() {
                    batch = match hand_over(batch, &batches, spare) {
                        Some(b) => b,
                        None => return,
                    };
                }
                batch.revoked = true;
                batch = match hand_over(batch, &batches, spare) {
                    Some(b) => b,
                    None => return,
                };
                started = Instant::now();
            }
            // The clock is read every 16 polls, when idle, and after a poll that may
            // have waited: ~40 ns a read, and a millisecond is the windows' resolution.
            polls = polls.wrapping_add(1);
            if polls % 16 == 0 || !timeout.is_zero() {
                clock_ms = super::now_ms();
            }
            let idle = match polled {
                Some(Ok(message)) => {
                    if let Some(slot) = slot(
                        &mut self.routes,
                        &mut self.next_slot,
                        &mut batch,
                        message.topic(),
                        message.partition(),
                    ) {
                        if batch.records.is_empty() {
                            started = Instant::now();
                        }
                        let payload = batch.push_bytes(message.payload().unwrap_or(&[]));
                        let key = message.key().map(|k| batch.push_bytes(k));
                        batch.records.push(FeedRecord {
                            slot,
                            offset: message.offset(),
                            time_ms: clock_ms,
                            payload,
                            key,
                        });
                    }
                    false
                }
                Some(Err(e)) => {
                    self.context.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "consumer error");
                    true
                }
                None => true,
            };
            if idle {
                clock_ms = super::now_ms();
            }
            let full = batch.records.len() >= BATCH_RECORDS;
            // The linger is checked with the clock, every 16 polls, not on every message.
            let due =
                !batch.records.is_empty() && (idle || (polls % 16 == 0 && started.elapsed() >= BATCH_LINGER));
            if full || due || (idle && !batch.new_sources.is_empty()) {
                batch = match hand_over(batch, &batches, spare) {
                    Some(b) => b,
                    None => return,
                };
            }
        }
        if !batch.records.is_empty() || !batch.new_sources.is_empty() {
            let _ = batches.send(batch);
        }
    }

    /// Applies pending controls; sends failed commits again at most once a second.
    pub fn apply_controls(&mut self, controls: &Receiver<Control>) {
        loop {
            match controls.try_recv() {
                Ok(Control::Commit(offsets, mode)) => {
                    self.wanted = offsets;
                    self.commit(mode);
                }
                Ok(Control::Pause(pause)) => {
                    if let Ok(assignment) = self.consumer.assignment() {
                        let done = if pause {
                            self.consumer.pause(&assignment)
                        } else {
                            self.consumer.resume(&assignment)
                        };
                        if let Err(e) = done {
                            tracing::warn!(error = %e, pause, "cannot pause or resume the consumer");
                        }
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if self.commit_retry_at.elapsed() >= Duration::from_secs(1)
            && self.context.commit_failed.swap(false, Ordering::SeqCst)
        {
            self.commit_retry_at = Instant::now();
            self.committed.clear();
            self.commit(CommitMode::Async);
        }
    }

    /// Commits the wanted offsets that moved forward.
    fn commit(&mut self, mode: CommitMode) {
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in &self.wanted {
            let key = (topic.clone(), *partition);
            if self.committed.get(&key).is_some_and(|&c| c >= *offset) {
                continue;
            }
            if list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_ok() {
                self.committed.insert(key, *offset);
            }
        }
        if list.count() > 0
            && let Err(e) = self.consumer.commit(&list, mode)
        {
            tracing::warn!(error = %e, "offset commit failed; it is sent again");
            self.committed.clear();
        }
    }
}

/// Sends `batch` and returns an empty one (reused when the pipeline gave one back);
/// `None` when the pipeline thread is gone.
fn hand_over(batch: Batch, batches: &SyncSender<Batch>, spare: &Receiver<Batch>) -> Option<Batch> {
    batches.send(batch).ok()?;
    let mut next = spare.try_recv().unwrap_or_default();
    next.clear();
    Some(next)
}

/// The source slot of a partition, announcing new ones in the batch.
fn slot(
    routes: &mut FxHashMap<String, TopicRoute>,
    next_slot: &mut u32,
    batch: &mut Batch,
    topic: &str,
    partition: i32,
) -> Option<u32> {
    let route = routes.get_mut(topic)?;
    let p = usize::try_from(partition).ok()?;
    if route.slots.len() <= p {
        route.slots.resize(p + 1, None);
    }
    Some(match route.slots[p] {
        Some(slot) => slot,
        None => {
            let slot = *next_slot;
            *next_slot += 1;
            route.slots[p] = Some(slot);
            batch.new_sources.push(NewSource {
                slot,
                topic: topic.to_owned(),
                partition,
                stream: route.stream,
            });
            slot
        }
    })
}
