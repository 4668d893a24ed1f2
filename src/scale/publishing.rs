//! The pipeline thread's side of global mode: the partials its global streams close
//! go to the partials topic in one transaction with the input offsets they cover, so
//! the input offsets of global streams advance only with their partials (the monitor's
//! own commits leave those partitions alone). The offset a transaction commits for a
//! partition is the lowest offset an open pane still holds (or the next unread one):
//! after a crash or a rebalance those records are read again and folded again, and the
//! offset's metadata ([`ResumePoint`]) says which panes were published already, so a
//! record read again for one of them is not published twice.

use super::panes::ResumePoint;
use super::publisher::{PartialsPublisher, ScaleError, ensure_partials_topic};
use crate::config::Config;
use crate::health::Health;
use crate::stats::partial::Partial;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Partitions of the partials topic when driftscope creates it: each stream's partials
/// go to one of them (`owner_partition`), so this bounds how many instances can own
/// streams at once.
pub const PARTIALS_PARTITIONS: i32 = 8;
/// How long a transaction (and the broker calls around it) may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed transaction, the next try waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// What one transaction commits for one input partition.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPosition {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read after a restart.
    pub offset: i64,
    pub resume: ResumePoint,
}

pub struct Publishing {
    publisher: PartialsPublisher,
    /// A consumer of the input group that never joins it: it only reads the group's
    /// committed offsets (with their metadata), read_committed, so it waits for a
    /// transaction in flight.
    offsets: BaseConsumer,
    health: Arc<Health>,
    /// Closed partials not yet in a committed transaction.
    pending: Vec<Partial>,
    /// The positions last committed, to skip a transaction that would change nothing.
    committed: Vec<InputPosition>,
    retry_at: Option<Instant>,
    last_at: Instant,
    /// Transactions committed and partials published (for the log at the end).
    pub transactions: u64,
    pub published: u64,
}

impl Publishing {
    /// Creates the partials topic when absent and the transactional publisher.
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
        consumer.set("isolation.level", "read_committed").set("enable.auto.commit", "false");
        let offsets = ClientConfig::create(&consumer)?;
        Ok(Publishing {
            publisher,
            offsets,
            health,
            pending: Vec::new(),
            committed: Vec::new(),
            retry_at: None,
            last_at: Instant::now(),
            transactions: 0,
            published: 0,
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
        self.pending.clear();
        self.committed.clear();
        self.retry_at = None;
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Publishes the pending partials with `positions` in one transaction: at once when
    /// partials closed, else when an offset moved and `interval` has passed (`force`: a
    /// stop's last try). Returns an error only when the publisher cannot go on (fenced
    /// by another instance with the same `scale.instance`).
    pub fn publish(
        &mut self,
        positions: Vec<InputPosition>,
        force: bool,
        interval: Duration,
    ) -> Result<(), ScaleError> {
        let moved = positions.len() != self.committed.len()
            || positions
                .iter()
                .zip(&self.committed)
                .any(|(a, b)| (a.offset, &a.topic, a.partition) != (b.offset, &b.topic, b.partition));
        if self.pending.is_empty() && !(moved && (force || self.last_at.elapsed() >= interval)) {
            return Ok(());
        }
        if !force && self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(());
        }
        let Some(group) = self.health.group_metadata.lock().ok().and_then(|g| g.clone()) else {
            // Not assigned yet: nothing can have been read.
            return Ok(());
        };
        let mut list = TopicPartitionList::new();
        for p in &positions {
            list.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset))?;
            if let Some(mut e) = list.find_partition(&p.topic, p.partition) {
                e.set_metadata(p.resume.encode());
            }
        }
        self.last_at = Instant::now();
        match self.publisher.publish(&self.pending, &list, &group) {
            Ok(()) => {
                self.transactions += 1;
                self.published += self.pending.len() as u64;
                self.pending.clear();
                self.committed = positions;
                self.retry_at = None;
                Ok(())
            }
            Err(ScaleError::Kafka(rdkafka::error::KafkaError::Transaction(e))) if e.is_fatal() => {
                Err(ScaleError::Kafka(rdkafka::error::KafkaError::Transaction(e)))
            }
            Err(e) => {
                // Aborted: neither the partials nor the offsets count; both go again
                // (after a rebalance the monitor drops what it no longer reads first).
                tracing::warn!(error = %e, partials = self.pending.len(), "publishing partials failed; retrying");
                self.retry_at = Some(Instant::now() + RETRY);
                Ok(())
            }
        }
    }
}
