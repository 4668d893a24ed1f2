//! The pipeline thread's side of global mode: the partials its global streams close
//! go to the partials topic in one transaction with the input offsets they cover, so
//! the input offsets of global streams advance only with their partials (the monitor's
//! own commits leave those partitions alone). The offset a transaction commits for a
//! partition is the lowest offset an open pane still holds (or the next unread one):
//! after a crash or a rebalance those records are read again and folded again, and the
//! offset's metadata ([`ResumePoint`]) says which panes were published already, so a
//! record read again for one of them is not published twice.
//!
//! A transaction takes a broker round trip or more (~100 ms measured on the test
//! broker), so transactions run on a thread of their own: the pipeline hands over what
//! closed with the positions of that moment and goes on folding; the publisher thread
//! merges what queued up while a transaction ran (partials added, the latest
//! positions, which are never behind) into the next one.

use super::panes::ResumePoint;
use super::publisher::{PartialsPublisher, ScaleError, ensure_partials_topic};
use crate::config::Config;
use crate::health::Health;
use crate::stats::partial::Partial;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Partitions of the partials topic when driftscope creates it: each stream's partials
/// go to one of them (`owner_partition`), so this bounds how many instances can own
/// streams at once.
pub const PARTIALS_PARTITIONS: i32 = 8;
/// How long a transaction (and the broker calls around it) may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed transaction, the next try waits this long.
const RETRY: Duration = Duration::from_secs(1);
/// How long a stop waits for the last partials to be published at most (less when
/// `state.shutdown_timeout` leaves less).
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// What one transaction commits for one input partition.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPosition {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read after a restart.
    pub offset: i64,
    pub resume: ResumePoint,
}

/// Partials and the positions they bring the inputs to, for one transaction.
struct Job {
    partials: Vec<Partial>,
    positions: Vec<InputPosition>,
    /// The assignment epoch it was read in (see [`Shared::epoch`]).
    epoch: u64,
}

enum Message {
    Job(Job),
    /// Answered once nothing is held (or the one try of a stop was made).
    Flush(Sender<()>),
}

/// What the pipeline and the publisher thread share.
#[derive(Default)]
struct Shared {
    /// Raised when the pipeline drops its partitions (a revocation): jobs read
    /// before are dropped, not published (the partitions are read again from the
    /// committed offsets, here or elsewhere).
    epoch: AtomicU64,
    /// Why the publisher cannot go on (fenced by an instance with the same
    /// `scale.instance`), once that happened.
    fatal: Mutex<Option<String>>,
    transactions: AtomicU64,
    published: AtomicU64,
}

pub struct Publishing {
    jobs: Option<Sender<Message>>,
    worker: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    /// A consumer of the input group that never joins it: it only reads the group's
    /// committed offsets (with their metadata), read_committed, so it waits for a
    /// transaction in flight.
    offsets: BaseConsumer,
    /// Closed partials not yet handed to the publisher thread.
    pending: Vec<Partial>,
    /// The positions handed over last, to skip a transaction that would change nothing.
    sent: Vec<InputPosition>,
    sent_at: Instant,
}

impl Publishing {
    /// Creates the partials topic when absent, the transactional publisher and its
    /// thread.
    pub fn new(config: &Config, health: Arc<Health>) -> Result<Publishing, ScaleError> {
        let topic = &config.scale.partials_topic;
        // The admin client runs a runtime of its own, which cannot start on a thread
        // that is inside one already (the monitor is built from the service's).
        std::thread::scope(|scope| {
            scope.spawn(|| ensure_partials_topic(&config.kafka, topic, PARTIALS_PARTITIONS)).join()
        })
        .unwrap_or_else(|_| {
            Err(ScaleError::Topic { topic: topic.clone(), message: "creating it panicked".into() })
        })?;
        let publisher = PartialsPublisher::new(&config.kafka, topic, &config.scale.instance_name(), TIMEOUT)?;
        let mut consumer = crate::ingest::kafka::consumer_config(&config.kafka);
        // Never polled, so no statistics: they would queue up in it, one a second.
        consumer
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "0");
        let offsets = ClientConfig::create(&consumer)?;
        let shared = Arc::new(Shared::default());
        let (jobs, queue) = std::sync::mpsc::channel();
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("driftscope-partials".into())
            .spawn(move || publish_loop(&publisher, &health, &worker_shared, &queue))
            .map_err(ScaleError::Runtime)?;
        Ok(Publishing {
            jobs: Some(jobs),
            worker: Some(worker),
            shared,
            offsets,
            pending: Vec::new(),
            sent: Vec::new(),
            sent_at: Instant::now(),
        })
    }

    /// Where `topic`/`partition` resumes: the metadata of the input group's committed
    /// offset, if a transaction of global mode wrote it. Asked of the broker when the
    /// partition first delivers after an assignment.
    pub fn resume_point(&self, topic: &str, partition: i32) -> Option<ResumePoint> {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        match self.offsets.committed_offsets(list, TIMEOUT) {
            Ok(list) => list
                .find_partition(topic, partition)
                .and_then(|e| ResumePoint::decode(e.metadata()).filter(|_| e.offset() != Offset::Invalid)),
            Err(e) => {
                // Without it, records read again may be published again; the owner
                // keeps the latest copy of a pane, so only a pane scored already and
                // replayed with fewer records would be counted late there.
                tracing::warn!(topic, partition, error = %e, "cannot read the committed offset's resume point");
                None
            }
        }
    }

    /// Queues partials closed since the last call.
    pub fn add(&mut self, partials: Vec<Partial>) {
        self.pending.extend(partials);
    }

    /// Forgets what is not published (the partitions were revoked).
    pub fn discard(&mut self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        self.pending.clear();
        self.sent.clear();
    }

    /// Hands the pending partials with `positions` to the publisher thread: at once when
    /// partials closed, else when an offset moved and `interval` has passed (`force`: a
    /// stop's last call). Returns an error once the publisher cannot go on (fenced by
    /// another instance with the same `scale.instance`).
    pub fn publish(
        &mut self,
        positions: Vec<InputPosition>,
        force: bool,
        interval: Duration,
    ) -> Result<(), ScaleError> {
        if let Some(fatal) = self.shared.fatal.lock().ok().and_then(|f| f.clone()) {
            return Err(ScaleError::Topic { topic: "partials".into(), message: fatal });
        }
        let moved = positions.len() != self.sent.len()
            || positions
                .iter()
                .zip(&self.sent)
                .any(|(a, b)| (a.offset, &a.topic, a.partition) != (b.offset, &b.topic, b.partition));
        if self.pending.is_empty() && !(moved && (force || self.sent_at.elapsed() >= interval)) {
            return Ok(());
        }
        let job = Job {
            partials: std::mem::take(&mut self.pending),
            positions: positions.clone(),
            epoch: self.shared.epoch.load(Ordering::SeqCst),
        };
        if let Some(jobs) = &self.jobs
            && jobs.send(Message::Job(job)).is_ok()
        {
            self.sent = positions;
            self.sent_at = Instant::now();
        }
        Ok(())
    }

    /// Waits up to `bound` for everything handed over to be published (a stop), then
    /// ends the publisher thread.
    pub fn finish(&mut self, bound: Duration) {
        if let Some(jobs) = self.jobs.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            if jobs.send(Message::Flush(tx)).is_ok() && rx.recv_timeout(bound).is_err() {
                tracing::warn!(
                    "the last partials were not published in time; their records are read again on the next start"
                );
            }
        }
        if let Some(worker) = self.worker.take()
            && worker.is_finished()
        {
            let _ = worker.join();
        }
        tracing::info!(
            transactions = self.shared.transactions.load(Ordering::SeqCst),
            partials = self.shared.published.load(Ordering::SeqCst),
            "partials publisher stopped"
        );
    }
}

/// The publisher thread: one transaction at a time, of everything queued meanwhile.
fn publish_loop(publisher: &PartialsPublisher, health: &Health, shared: &Shared, queue: &Receiver<Message>) {
    let mut held: Option<Job> = None;
    let mut retry_at: Option<Instant> = None;
    let mut flushes: Vec<Sender<()>> = Vec::new();
    let mut open = true;
    while open || held.is_some() {
        // Wait for work, or for the retry of what is held.
        let first = match (&held, retry_at) {
            (None, _) => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (Some(_), Some(at)) => queue.recv_timeout(at.saturating_duration_since(Instant::now())),
            (Some(_), None) => Err(RecvTimeoutError::Timeout),
        };
        let mut take = |message: Message, held: &mut Option<Job>| match message {
            Message::Job(job) => match held {
                // Read before the partitions were dropped: not to be published.
                Some(h) if h.epoch != job.epoch => *held = Some(job),
                Some(h) => {
                    h.partials.extend(job.partials);
                    h.positions = job.positions;
                }
                None => *held = Some(job),
            },
            Message::Flush(reply) => flushes.push(reply),
        };
        match first {
            Ok(message) => take(message, &mut held),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        while let Ok(message) = queue.try_recv() {
            take(message, &mut held);
        }
        // A flush makes one try now, retry wait or not.
        let flushing = !flushes.is_empty();
        if held.as_ref().is_some_and(|h| h.epoch != shared.epoch.load(Ordering::SeqCst)) {
            held = None;
        }
        if let Some(job) = &held
            && (flushing || retry_at.is_none_or(|at| Instant::now() >= at))
        {
            match transact(publisher, health, job) {
                Ok(()) => {
                    shared.transactions.fetch_add(1, Ordering::SeqCst);
                    shared.published.fetch_add(job.partials.len() as u64, Ordering::SeqCst);
                    held = None;
                    retry_at = None;
                }
                Err(ScaleError::Kafka(rdkafka::error::KafkaError::Transaction(e))) if e.is_fatal() => {
                    tracing::error!(error = %e, "the partials publisher cannot go on (is another instance running with the same scale.instance?)");
                    if let Ok(mut fatal) = shared.fatal.lock() {
                        *fatal = Some(e.to_string());
                    }
                    return;
                }
                Err(e) => {
                    // Aborted: neither the partials nor the offsets count; both go again
                    // with what queues up meanwhile (unless the partitions are dropped).
                    tracing::warn!(error = %e, partials = job.partials.len(), "publishing partials failed; retrying");
                    retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
        if flushing {
            for reply in flushes.drain(..) {
                let _ = reply.send(());
            }
            // A stop: one try only.
            if !open {
                return;
            }
        }
        if !open && held.is_some() && !flushing {
            // Disconnected without a flush: one last try was made above.
            return;
        }
    }
}

/// One transaction: `job`'s partials and positions, with the input group's metadata.
fn transact(publisher: &PartialsPublisher, health: &Health, job: &Job) -> Result<(), ScaleError> {
    let Some(group) = health.group_metadata.lock().ok().and_then(|g| g.clone()) else {
        return Err(ScaleError::Topic { topic: "input".into(), message: "no group assignment yet".into() });
    };
    let mut list = TopicPartitionList::new();
    for p in &job.positions {
        list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset))?;
        if let Some(mut e) = list.find_partition(&p.topic, p.partition) {
            e.set_metadata(p.resume.encode());
        }
    }
    publisher.publish(&job.partials, &list, &group)
}
