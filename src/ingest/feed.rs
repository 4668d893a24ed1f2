//! The consumer thread of the monitor. It serves the group's events, reads the
//! assigned partitions' messages in batches from its message queue
//! ([`crate::ingest::message_queue`]), copies each into a batch (payload and key bytes
//! side by side, with the record's partition slot, offset and arrival time) and hands
//! full batches to the pipeline thread through a bounded channel, so reading and
//! librdkafka's bookkeeping run on one core while decoding and sketching run on the
//! other. It also does what only the consumer can: commits, pause and resume, which the
//! pipeline asks for through a control channel. Batches come back for reuse, so the
//! steady state allocates nothing per message.

use crate::health::Health;
use crate::ingest::kafka::ArcContext;
use crate::ingest::message_queue::{MessageQueue, Messages};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

/// Where a topic's records go: its stream, and the source slot of each partition.
pub(crate) struct TopicRoute {
    pub(crate) stream: usize,
    /// Source slot per partition number.
    pub(crate) slots: Vec<Option<u32>>,
}

/// Records per batch: large enough that the hand-over costs little per record and that
/// a partition's records come in long runs (global mode folds each partition into a
/// pane of its own, and each run refills that pane's cells into the cache: batches of
/// 512 cost one global instance ~7% more CPU per record on the bench schema); a batch
/// is also handed over at [`BATCH_BYTES`].
pub const BATCH_RECORDS: usize = 2048;
/// Payload bytes at which a batch is handed over whatever its record count, so that
/// the batches in flight stay a few megabytes with large messages too.
pub const BATCH_BYTES: usize = 4 << 20;
/// Batches in flight between the threads; when all are queued the consumer thread
/// waits (backpressure) and librdkafka's own bounded prefetch fills up behind it.
pub const BATCHES_IN_FLIGHT: usize = 4;
/// How long the consumer thread waits on a pipeline that has every batch in flight
/// before it pauses the partitions and serves the consumer while it waits.
pub const STALL_PAUSE_AFTER: Duration = Duration::from_millis(500);
/// How often the consumer is served during such a wait.
const STALL_POLL: Duration = Duration::from_millis(100);
/// A partial batch is handed over after this long, so quiet streams are not delayed.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Events served per round at most, so that controls and shutdown are seen even if
/// the consumer queue never empties; its messages are always read before the message
/// queue's.
const EVENTS_PER_ROUND: usize = 1024;
/// How long a round with nothing to read waits for a message; events on the consumer
/// queue (rebalances, commits) wait at most this long to be served.
const IDLE_WAIT: Duration = Duration::from_millis(100);

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
    /// With `revoked`: the (stream, partition) pairs whose label join entries the
    /// revocation handed over ([`crate::ingest::handover`]).
    pub handed: Vec<crate::ingest::handover::StreamPartition>,
    /// Partitions were assigned before these records were polled: what the handover
    /// means for the pipeline's label joins, applied first.
    pub assigned: Option<crate::ingest::handover::Assigned>,
    pub new_sources: Vec<NewSource>,
    pub records: Vec<FeedRecord>,
    pub bytes: Vec<u8>,
}

impl Batch {
    /// Whether the batch is to be handed over now.
    fn full(&self) -> bool {
        self.records.len() >= BATCH_RECORDS || self.bytes.len() >= BATCH_BYTES
    }

    pub fn bytes_of(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.bytes[start as usize..(start + len) as usize]
    }

    fn clear(&mut self) {
        self.revoked = false;
        self.handed.clear();
        self.assigned = None;
        self.new_sources.clear();
        self.records.clear();
        self.bytes.clear();
    }

    fn push_bytes(&mut self, data: &[u8]) -> (u32, u32) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(data);
        (start, data.len() as u32)
    }

    fn push_record(&mut self, slot: u32, offset: i64, time_ms: i64, payload: &[u8], key: Option<&[u8]>) {
        let payload = self.push_bytes(payload);
        let key = key.map(|k| self.push_bytes(k));
        self.records.push(FeedRecord { slot, offset, time_ms, payload, key });
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
    pub context: Arc<Health>,
    pub routes: FxHashMap<String, TopicRoute>,
    pub next_slot: u32,
    /// Offsets committed (or being committed) per partition.
    committed: FxHashMap<(String, i32), i64>,
    /// The last commit asked for, sent again when a commit fails.
    wanted: Vec<(String, i32, i64)>,
    commit_retry_at: Instant,
    /// Where assigned partitions' messages are read from in batches; `None` when
    /// `kafka.batch_reads` is off or librdkafka refused to make one (then everything
    /// is polled one by one).
    queue: Option<MessageQueue>,
    /// The group's assignment count (`Health::assignments`) last routed.
    routed_assignments: u64,
    /// Messages of the current round, given back to librdkafka once copied.
    messages: Messages,
    /// Source slots by (librdkafka topic handle, partition), for this assignment.
    topic_slots: FxHashMap<(usize, i32), Option<u32>>,
    /// The pipeline asked for a pause (its checkpoint cannot be written); the end of a
    /// stall does not resume then.
    paused_by_pipeline: bool,
    /// Batches the pipeline gave back while the consumer thread waited on it, for
    /// reuse (as many as are in circulation at most).
    spares: Vec<Batch>,
}

/// A stall of the pipeline during which the partitions are paused: the assignment
/// count when they were, so that partitions assigned since are paused too.
struct Stall {
    assignments: u64,
}

impl Feeder {
    pub fn new(
        consumer: BaseConsumer<ArcContext>,
        context: Arc<Health>,
        routes: FxHashMap<String, TopicRoute>,
        next_slot: u32,
        batch_reads: bool,
    ) -> Feeder {
        let queue = if batch_reads { MessageQueue::new(&consumer) } else { None };
        if batch_reads && queue.is_none() {
            tracing::warn!("librdkafka made no message queue; messages are polled one by one");
        }
        tracing::info!(
            reading = if queue.is_some() { "in batches" } else { "one by one" },
            "consumer reads the assigned partitions' messages"
        );
        Feeder {
            consumer,
            context,
            routes,
            next_slot,
            committed: FxHashMap::default(),
            wanted: Vec::new(),
            commit_retry_at: Instant::now(),
            queue,
            routed_assignments: 0,
            messages: Messages::default(),
            topic_slots: FxHashMap::default(),
            paused_by_pipeline: false,
            spares: Vec::new(),
        }
    }

    /// Sends `batch` and returns an empty one (reused when the pipeline gave one back);
    /// `None` when the pipeline thread is gone.
    ///
    /// When every batch in flight is queued the pipeline is behind: this waits for it,
    /// waking when it gives a batch back. A pipeline held up for long (the schema
    /// registry away, a slow disk) would leave the consumer unpolled, and librdkafka
    /// takes a consumer not polled for `max.poll.interval.ms` out of its group (the
    /// partitions move, and come back, for nothing): past [`STALL_PAUSE_AFTER`] the
    /// assigned partitions are paused and the consumer is served while waiting. A
    /// message it still delivers joins the waiting batch; the fetched messages that
    /// pausing drops are fetched again after the resume (librdkafka fetches from the
    /// position after the last message handed to the application).
    fn hand_over(
        &mut self,
        mut batch: Batch,
        batches: &SyncSender<Batch>,
        spare: &Receiver<Batch>,
    ) -> Option<Batch> {
        let mut waiting_since = None;
        let mut stall: Option<Stall> = None;
        loop {
            match batches.try_send(batch) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return None,
                Err(TrySendError::Full(back)) => batch = back,
            }
            let since = *waiting_since.get_or_insert_with(Instant::now);
            // The pipeline took a batch (there is room) before it gives one back.
            if let Ok(given_back) = spare.recv_timeout(STALL_POLL) {
                // Kept for reuse: dropping it would allocate a new one per batch.
                self.spares.push(given_back);
                continue;
            }
            if since.elapsed() < STALL_PAUSE_AFTER
                || self.context.revoked.load(Ordering::SeqCst)
                || self.assignment_waiting()
            {
                // After a revocation the waiting batch must go before anything polled.
                continue;
            }
            let assignments = self.context.assignments.load(Ordering::SeqCst);
            if stall.as_ref().is_none_or(|s| s.assignments != assignments) {
                if stall.is_none() {
                    tracing::info!(
                        waited_ms = since.elapsed().as_millis() as u64,
                        "the pipeline is held up: partitions paused, the consumer kept in its group"
                    );
                }
                self.set_paused(true);
                stall = Some(Stall { assignments });
            }
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    if let Some(slot) = slot(
                        &mut self.routes,
                        &mut self.next_slot,
                        &mut batch,
                        message.topic(),
                        message.partition(),
                    ) {
                        batch.push_record(
                            slot,
                            message.offset(),
                            crate::clock::now_ms(),
                            message.payload().unwrap_or(&[]),
                            message.key(),
                        );
                    }
                }
                Some(Err(e)) => {
                    self.context.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "consumer error");
                }
                None => {}
            }
        }
        if stall.is_some() {
            tracing::info!(
                waited_ms = waiting_since.map_or(0, |s: Instant| s.elapsed().as_millis() as u64),
                "the pipeline caught up: partitions resumed"
            );
            if !self.paused_by_pipeline {
                self.set_paused(false);
            }
        }
        let mut next = self.spares.pop().or_else(|| spare.try_recv().ok()).unwrap_or_default();
        next.clear();
        Some(next)
    }

    /// The pairs the last revocation handed over, for its batch.
    fn take_handed(&self) -> Vec<crate::ingest::handover::StreamPartition> {
        let Some(handover) = self.context.handover.get() else { return Vec::new() };
        handover.board.lock().ok().and_then(|mut b| b.revoked.take()).unwrap_or_default()
    }

    /// An assignment's handover outcome not yet passed to the pipeline.
    fn take_assigned(&self) -> Option<crate::ingest::handover::Assigned> {
        let handover = self.context.handover.get()?;
        handover.board.lock().ok()?.assigned.take()
    }

    fn assignment_waiting(&self) -> bool {
        self.context.handover.get().is_some_and(|h| h.board.lock().is_ok_and(|b| b.assigned.is_some()))
    }

    /// Pauses or resumes the whole assignment.
    fn set_paused(&self, pause: bool) {
        if let Ok(assignment) = self.consumer.assignment() {
            let done =
                if pause { self.consumer.pause(&assignment) } else { self.consumer.resume(&assignment) };
            if let Err(e) = done {
                tracing::warn!(error = %e, pause, "cannot pause or resume the consumer");
            }
        }
    }

    /// The consumer, for closing: the message queue and any messages still held are
    /// given back to librdkafka first, or closing the consumer would wait for them.
    pub fn into_consumer(mut self) -> BaseConsumer<ArcContext> {
        self.messages.clear();
        drop(self.queue.take());
        self.consumer
    }

    /// Polls until `shutdown` is set or the pipeline hangs up, sending batches; applies
    /// controls as they come. Returns with the last batch sent and the sender dropped.
    ///
    /// Each round drains the consumer queue first (events, and messages of partitions
    /// not yet forwarded to the message queue, which come before any of theirs there),
    /// then reads the message queue in one batch call.
    pub fn run(
        &mut self,
        shutdown: &crate::shutdown::Stop,
        batches: SyncSender<Batch>,
        spare: &Receiver<Batch>,
        controls: &Receiver<Control>,
    ) {
        let mut batch = Batch::default();
        let mut started = Instant::now();
        let mut clock_ms = crate::clock::now_ms();
        loop {
            if shutdown.requested() {
                break;
            }
            self.apply_controls(controls);
            let mut read = 0usize;
            let mut waited = false;
            let mut events = 0usize;
            let mut drained = false;
            while !batch.full() && events < EVENTS_PER_ROUND {
                // Without a message queue, the consumer queue is where a quiet round waits.
                let timeout = if self.queue.is_none() && batch.records.is_empty() && read == 0 {
                    IDLE_WAIT
                } else {
                    Duration::ZERO
                };
                waited |= !timeout.is_zero();
                let polled = self.consumer.poll(timeout);
                if self.context.revoked.swap(false, Ordering::SeqCst) {
                    // Records polled before the revocation go first, then the rollback.
                    // (Handed over without serving the consumer while waiting: what
                    // it would deliver now belongs after the rollback.)
                    if !batch.records.is_empty() || !batch.new_sources.is_empty() {
                        batch = match hand_over_blocking(batch, &batches, spare) {
                            Some(b) => b,
                            None => return,
                        };
                    }
                    batch.revoked = true;
                    batch.handed = self.take_handed();
                    batch = match hand_over_blocking(batch, &batches, spare) {
                        Some(b) => b,
                        None => return,
                    };
                    started = Instant::now();
                }
                if let Some(assigned) = self.take_assigned() {
                    // Likewise: the handover is applied before the new partitions' records.
                    if !batch.records.is_empty() || !batch.new_sources.is_empty() {
                        batch = match hand_over_blocking(batch, &batches, spare) {
                            Some(b) => b,
                            None => return,
                        };
                    }
                    batch.assigned = Some(assigned);
                    batch = match hand_over_blocking(batch, &batches, spare) {
                        Some(b) => b,
                        None => return,
                    };
                    started = Instant::now();
                }
                match polled {
                    Some(Ok(message)) => {
                        if waited {
                            // The clock after a wait, not before it (see StreamState's floor).
                            clock_ms = crate::clock::now_ms();
                        }
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
                            batch.push_record(
                                slot,
                                message.offset(),
                                clock_ms,
                                message.payload().unwrap_or(&[]),
                                message.key(),
                            );
                        }
                        read += 1;
                    }
                    // An error, nothing, or an event served: the queue may still
                    // hold messages.
                    other => {
                        if let Some(Err(e)) = other {
                            self.context.fetch_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "consumer error");
                        }
                        events += 1;
                        if self.queue.as_ref().is_none_or(MessageQueue::consumer_queue_is_empty) {
                            drained = true;
                            break;
                        }
                    }
                }
            }
            let assignments = self.context.assignments.load(Ordering::SeqCst);
            let mut routed_now = false;
            if assignments != self.routed_assignments
                && let Some(queue) = &self.queue
            {
                self.routed_assignments = assignments;
                self.topic_slots.clear();
                routed_now = true;
                match self.consumer.assignment() {
                    Ok(assignment) => {
                        let missed = queue.route(&assignment);
                        if missed > 0 {
                            tracing::warn!(
                                missed,
                                "partitions not forwarded to the message queue; read one by one"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the assignment"),
                }
            }
            // After a forward, or while the consumer queue is not drained, the next round
            // drains it first.
            if let Some(queue) = &mut self.queue
                && !routed_now
                && drained
                && !batch.full()
            {
                // A quiet round waits here for the first message only (at most one
                // asked for), then takes what else has arrived without waiting.
                if batch.records.is_empty() && read == 0 {
                    queue.consume(IDLE_WAIT, 1, &mut self.messages);
                }
                let room = BATCH_RECORDS - batch.records.len() - self.messages.len();
                if room > 0 {
                    queue.consume(Duration::ZERO, room, &mut self.messages);
                }
            }
            // One clock read per round: a millisecond is the windows' resolution.
            clock_ms = crate::clock::now_ms();
            if !self.messages.is_empty() {
                if batch.records.is_empty() {
                    started = Instant::now();
                }
                read += self.messages.len();
                self.push_messages(&mut batch, clock_ms);
            }
            let idle = read == 0;
            let full = batch.full();
            let due = !batch.records.is_empty() && (idle || started.elapsed() >= BATCH_LINGER);
            if full || due || (idle && !batch.new_sources.is_empty()) {
                batch = match self.hand_over(batch, &batches, spare) {
                    Some(b) => b,
                    None => return,
                };
            }
        }
        if !batch.records.is_empty() || !batch.new_sources.is_empty() {
            let _ = batches.send(batch);
        }
    }

    /// Copies the messages read from the message queue into the batch and gives them
    /// back to librdkafka. The source slot is looked up by librdkafka's topic handle
    /// and the partition, the last one remembered: no topic name is read per message.
    fn push_messages(&mut self, batch: &mut Batch, time_ms: i64) {
        let mut last: Option<((usize, i32), Option<u32>)> = None;
        for message in self.messages.iter() {
            if let Some(e) = message.error() {
                self.context.fetch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, partition = message.partition(), "consumer error");
                continue;
            }
            let key = (message.topic_handle(), message.partition());
            let slot = match last {
                Some((k, slot)) if k == key => slot,
                _ => {
                    let slot = *self.topic_slots.entry(key).or_insert_with(|| {
                        let topic = message.topic()?;
                        slot(&mut self.routes, &mut self.next_slot, batch, topic, message.partition())
                    });
                    last = Some((key, slot));
                    slot
                }
            };
            if let Some(slot) = slot {
                batch.push_record(slot, message.offset(), time_ms, message.payload(), message.key());
            }
        }
        self.messages.clear();
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
                    self.paused_by_pipeline = pause;
                    self.set_paused(pause);
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

    /// The last commit of a stop: the offsets the pipeline asked for last are sent
    /// asynchronously, then the consumer is served until librdkafka answers or `until`
    /// passes. Returns whether the commit is known done (or there was nothing to
    /// commit). A commit not done is logged once and left: the next start reads again
    /// from the previous commit and skips what the checkpoint holds.
    pub fn last_commit(&mut self, controls: &Receiver<Control>, until: Instant) -> bool {
        let before = self.context.commits_answered.load(Ordering::SeqCst);
        if self.context.commit_failed.swap(false, Ordering::SeqCst) {
            // An earlier commit failed: what it carried is sent again with this one.
            self.committed.clear();
        }
        while let Ok(control) = controls.try_recv() {
            if let Control::Commit(offsets, _) = control {
                self.wanted = offsets;
            }
        }
        // Only what moved forward since the last commit that went out is sent.
        let sent = self.commit(CommitMode::Async);
        // From here on, a revocation (closing the consumer causes one) commits nothing.
        self.context.closing.store(true, Ordering::SeqCst);
        if !sent {
            return true;
        }
        loop {
            if self.context.commits_answered.load(Ordering::SeqCst) != before {
                if self.context.commit_failed.swap(false, Ordering::SeqCst) {
                    tracing::warn!(
                        "the last offset commit failed; the next start skips what the checkpoint holds"
                    );
                    return false;
                }
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    joined = self.context.joined.load(Ordering::SeqCst),
                    connected = self.context.connected.load(Ordering::SeqCst),
                    "the last offset commit got no answer within its share of state.shutdown_timeout; \
                     the next start reads from the previous commit and skips what the checkpoint holds"
                );
                return false;
            }
            // Serves the commit's answer; a message polled now is dropped unread (its
            // offset is past the checkpoint, so it is read again on the next start).
            let _ = self.consumer.poll(left.min(IDLE_WAIT));
        }
    }

    /// Commits the wanted offsets that moved forward; returns whether it sent any.
    fn commit(&mut self, mode: CommitMode) -> bool {
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
        if list.count() == 0 {
            return false;
        }
        if let Err(e) = self.consumer.commit(&list, mode) {
            tracing::warn!(error = %e, "offset commit failed; it is sent again");
            self.committed.clear();
            return false;
        }
        true
    }
}

/// Sends `batch`, waiting as long as it takes, and returns an empty one.
fn hand_over_blocking(batch: Batch, batches: &SyncSender<Batch>, spare: &Receiver<Batch>) -> Option<Batch> {
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
