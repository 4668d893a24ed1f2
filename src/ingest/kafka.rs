//! Kafka plumbing: the consumer-group client (offsets stored and committed only by
//! driftscope, never automatically), its rebalance hooks, and the dead-letter producer.

use crate::config::KafkaConfig;
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Offsets that are safe to commit, by topic and partition: the next offset to read.
pub type SafeOffsets = BTreeMap<(String, i32), i64>;

/// Consumer lag per topic partition, from librdkafka's statistics.
pub type LagReport = BTreeMap<(String, i32), i64>;

/// Shared between the consumer's callbacks (run inside `poll`) and the rest of the
/// process: rebalance notices, the commit-safe offsets, readiness and lag.
#[derive(Default)]
pub struct MonitorContext {
    /// Set when partitions were revoked; the monitor rolls back to its last checkpoint.
    pub revoked: AtomicBool,
    /// Partitions currently assigned to this instance.
    pub assigned: AtomicUsize,
    /// The latest offsets the monitor found safe; committed synchronously before a
    /// rebalance gives partitions up, and where a partition this instance gets back
    /// resumes when the group's committed offset is behind it (a commit that never
    /// reached the broker).
    pub safe: Mutex<SafeOffsets>,
    /// Latest consumer lag per partition.
    pub lag: Mutex<LagReport>,
    /// Fetch errors since start (broker down, ...), for readiness.
    pub fetch_errors: AtomicU64,
    /// Whether a broker connection is up (librdkafka statistics; cleared at once when
    /// librdkafka reports all brokers down).
    pub connected: AtomicBool,
    /// Set once the group gave this instance an assignment (possibly empty).
    pub joined: AtomicBool,
    /// Set while the assignment is lost (the group session timed out, e.g. while the
    /// broker was away) until the group assigns partitions again: nothing is fetched.
    pub assignment_lost: AtomicBool,
    /// Streams whose reference is still being taken from the stream.
    pub pending_references: Mutex<std::collections::BTreeSet<String>>,
    /// Set when an offset commit failed after it was sent (async commits report
    /// failures only here); the monitor then sends its offsets again.
    pub commit_failed: AtomicBool,
    /// Why the last checkpoint could not be written, while that lasts (consumption is
    /// paused meanwhile, so nothing is committed or reported without a checkpoint).
    pub state_error: Mutex<Option<String>>,
}

impl MonitorContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag = LagReport::new();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" entry.
                if partition >= 0 && p.consumer_lag >= 0 {
                    lag.insert((topic.clone(), partition), p.consumer_lag);
                }
            }
        }
        if let Ok(mut guard) = self.lag.lock() {
            *guard = lag;
        }
        let up = statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        self.connected.store(up, Ordering::SeqCst);
    }

    /// For assigned partitions this instance has counted records of: when the group's
    /// committed offset is behind the safe offset (a commit was lost, e.g. sent while the
    /// broker went down, or refused after the session expired), start at the safe offset
    /// instead. Returns those partitions with their new offsets, to commit.
    fn resume_after_counted(
        &self,
        consumer: &BaseConsumer<ArcContext>,
        tpl: &mut TopicPartitionList,
    ) -> TopicPartitionList {
        let mut repaired = TopicPartitionList::new();
        let safe = self.safe.lock().map(|s| s.clone()).unwrap_or_default();
        let known: Vec<(String, i32, i64)> = tpl
            .elements()
            .iter()
            .filter_map(|e| {
                let key = (e.topic().to_owned(), e.partition());
                safe.get(&key).map(|&offset| (key.0, key.1, offset))
            })
            .collect();
        if known.is_empty() {
            return repaired;
        }
        let mut query = TopicPartitionList::new();
        for (topic, partition, _) in &known {
            query.add_partition(topic, *partition);
        }
        let committed = match consumer.committed_offsets(query, Duration::from_secs(10)) {
            Ok(list) => Some(list),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the group's committed offsets; resuming where the reported windows end");
                None
            }
        };
        for (topic, partition, offset) in known {
            let group =
                committed.as_ref().and_then(|l| l.find_partition(&topic, partition)).map(|e| e.offset());
            let behind = match group {
                Some(Offset::Offset(c)) => c < offset,
                _ => true,
            };
            if behind
                && tpl.set_partition_offset(&topic, partition, Offset::Offset(offset)).is_ok()
                && repaired.add_partition_offset(&topic, partition, Offset::Offset(offset)).is_ok()
            {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    committed = ?group,
                    "the group's committed offset is behind the records already reported; resuming after them"
                );
            }
        }
        repaired
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            _ => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }
}

/// librdkafka settings for the monitor's consumer: manual commits only, reading from
/// the earliest offset when the group has none. `kafka.properties` override these.
pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        // librdkafka waits fetch.queue.backoff.ms (default 1 s) once its local queue is
        // over the threshold: measured, that idles the monitor for ~0.8 s every ~15
        // windows (126k -> 505k msg/s end to end with 10 ms).
        .set("fetch.queue.backoff.ms", "10")
        // The prefetch buffer dominates RSS at its 64 MiB default.
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.message.max.bytes", (kafka.max_message_bytes.max(1 << 20) + 1024).to_string());
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

pub fn create_consumer(
    kafka: &KafkaConfig,
    context: Arc<MonitorContext>,
) -> KafkaResult<BaseConsumer<ArcContext>> {
    consumer_config(kafka).create_with_context(ArcContext(context))
}

/// The context handed to librdkafka: a shared handle, so the rest of the process can
/// read what the callbacks saw.
pub struct ArcContext(pub Arc<MonitorContext>);

impl ClientContext for ArcContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = false;
    fn stats(&self, statistics: Statistics) {
        self.0.stats(statistics)
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message)
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.fetch_errors.fetch_add(1, Ordering::Relaxed);
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            self.0.connected.store(false, Ordering::SeqCst);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for ArcContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; it is sent again");
            self.0.commit_failed.store(true, Ordering::SeqCst);
        }
    }

    /// librdkafka's default rebalance (rust-rdkafka's, with the same hooks), except that
    /// assigned partitions start where this instance's reported windows end when the
    /// group's committed offset is behind that: records before it are already counted,
    /// and reading them again would count them twice.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let repaired = self.0.resume_after_counted(consumer, tpl);
                self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                let assigned =
                    if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assigning partitions failed");
                }
                // Bring the group's committed offsets up to what is counted, so another
                // instance (or a restart) does not count those records again either.
                if repaired.count() > 0
                    && let Err(e) = consumer.commit(&repaired, CommitMode::Sync)
                {
                    tracing::warn!(error = %e, "re-committing offsets after the assignment failed");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let unassigned =
                    if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                if let Err(e) = unassigned {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            _ => {
                let error = rdkafka::error::KafkaError::Rebalance(err.into());
                tracing::error!(error = %error, "rebalance error");
                let rebalance = Rebalance::Error(error);
                self.pre_rebalance(consumer, &rebalance);
                let _ = if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() };
                self.post_rebalance(consumer, &rebalance);
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if consumer.assignment_lost() {
                // The group no longer knows this member: a commit would be refused. The
                // safe offsets are kept and used when the partitions come back.
                self.0.assignment_lost.store(true, Ordering::SeqCst);
                self.0.revoked.store(true, Ordering::SeqCst);
                tracing::warn!(
                    partitions = partitions.count(),
                    "partition assignment lost (the group session expired); rejoining"
                );
                return;
            }
            let safe = self.0.safe.lock().map(|s| s.clone()).unwrap_or_default();
            let mut list = TopicPartitionList::new();
            for elem in partitions.elements() {
                if let Some(&offset) = safe.get(&(elem.topic().to_owned(), elem.partition())) {
                    let _ = list.add_partition_offset(elem.topic(), elem.partition(), Offset::Offset(offset));
                }
            }
            if list.count() > 0
                && let Err(e) = consumer.commit(&list, CommitMode::Sync)
            {
                tracing::warn!(error = %e, "commit before rebalance failed; uncommitted records will be read again");
            }
            self.0.revoked.store(true, Ordering::SeqCst);
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.0.assigned.store(partitions.count(), Ordering::SeqCst);
                self.0.joined.store(true, Ordering::SeqCst);
                self.0.assignment_lost.store(false, Ordering::SeqCst);
                tracing::info!(partitions = partitions.count(), "partitions assigned");
            }
            Rebalance::Revoke(_) => self.0.assigned.store(0, Ordering::SeqCst),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Copies bad records to a dead-letter topic, with the reason and the record's
/// coordinates in headers. Never blocks the monitor: when the producer's queue is full
/// the copy is dropped and counted.
pub struct DeadLetters {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    pub dropped: AtomicU64,
}

/// Header names on dead-lettered records.
pub const DLQ_REASON_HEADER: &str = "driftscope-reason";
pub const DLQ_SOURCE_HEADER: &str = "driftscope-source";

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig, topic: &str) -> KafkaResult<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("message.max.bytes", (kafka.max_message_bytes.max(1 << 20) * 2).to_string())
            .set("linger.ms", "20");
        for (key, value) in &kafka.properties {
            // Consumer-only properties would make the producer refuse to start.
            if !matches!(
                key.as_str(),
                "group.id" | "auto.offset.reset" | "enable.auto.commit" | "enable.auto.offset.store"
            ) {
                config.set(key, value);
            }
        }
        Ok(DeadLetters { producer: config.create()?, topic: topic.to_owned(), dropped: AtomicU64::new(0) })
    }

    pub fn send(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let source = format!("{topic}/{partition}/{offset}");
        let headers = OwnedHeaders::new()
            .insert(Header { key: DLQ_REASON_HEADER, value: Some(reason) })
            .insert(Header { key: DLQ_SOURCE_HEADER, value: Some(source.as_str()) });
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if self.producer.send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (bounded) for queued copies to be delivered.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS and zstd are compiled in: a user's `security.protocol = "SSL"` and a
    /// zstd-compressing producer upstream must not fail for want of a library.
    #[test]
    fn tls_and_zstd_are_available() {
        let mut kafka = KafkaConfig::default();
        kafka.properties.insert("security.protocol".into(), "SSL".into());
        kafka.properties.insert("ssl.endpoint.identification.algorithm".into(), "https".into());
        let consumer: KafkaResult<BaseConsumer> = consumer_config(&kafka).create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let producer: KafkaResult<ThreadedProducer<DefaultProducerContext>> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("compression.codec", "zstd")
            .create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
