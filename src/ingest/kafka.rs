//! Kafka plumbing: the consumer-group client (offsets stored and committed only by
//! driftscope, never automatically) and its rebalance hooks. The dead-letter producer
//! is in [`super::dead_letters`].

use crate::config::KafkaConfig;
use crate::health::{Health, LagReport};
use crate::ingest::handover::{HANDOVER_BOUND, Handover, Standing, StreamPartition};
use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Takes librdkafka's statistics into the board: lag per partition, broker connection.
fn record_statistics(health: &Health, statistics: Statistics) {
    let mut lag = LagReport::new();
    for (topic, t) in &statistics.topics {
        for (&partition, p) in &t.partitions {
            // Partition -1 is librdkafka's internal "unassigned" entry.
            if partition >= 0 && p.consumer_lag >= 0 {
                lag.insert((topic.clone(), partition), p.consumer_lag);
            }
        }
    }
    if let Ok(mut guard) = health.lag.lock() {
        *guard = lag;
    }
    let up = statistics.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
    health.connected.store(up, Ordering::SeqCst);
}

/// librdkafka's log lines, as tracing events at the matching level.
pub(crate) fn forward_log(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
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

pub fn create_consumer(kafka: &KafkaConfig, context: Arc<Health>) -> KafkaResult<BaseConsumer<ArcContext>> {
    consumer_config(kafka).create_with_context(ArcContext(context))
}

/// The context handed to librdkafka: a shared handle, so the rest of the process can
/// read what the callbacks saw.
pub struct ArcContext(pub Arc<Health>);

impl ClientContext for ArcContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = false;
    fn stats(&self, statistics: Statistics) {
        record_statistics(&self.0, statistics)
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message)
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
        self.0.commits_answered.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; it is sent again");
            self.0.commit_failed.store(true, Ordering::SeqCst);
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if consumer.assignment_lost() {
                // The group no longer knows this member: a commit would be refused. The
                // monitor rolls back to its checkpoint and skips what it holds when the
                // partitions come back; its failed commits are sent again.
                self.0.assignment_lost.store(true, Ordering::SeqCst);
                if let Some(handover) = self.0.handover.get() {
                    handover.disown(partitions);
                }
                self.0.revoked.store(true, Ordering::SeqCst);
                tracing::warn!(
                    partitions = partitions.count(),
                    "partition assignment lost (the group session expired); rejoining"
                );
                return;
            }
            if self.0.closing.load(Ordering::SeqCst) {
                // The stop's own last commit was sent already (and waited for, within
                // the bound); what it did not commit, the checkpoint holds.
                self.0.revoked.store(true, Ordering::SeqCst);
                return;
            }
            // With a handover, the checkpoint cannot move while its positions are
            // committed and its join entries written (the board stays locked).
            let handover = self.0.handover.get();
            let mut board = handover.and_then(|h| h.wait_applied(HANDOVER_BOUND));
            if let Some(board) = board.as_mut() {
                board.revoke_pending = true;
            }
            let safe = self.0.safe.lock().map(|s| s.clone()).unwrap_or_default();
            let mut list = TopicPartitionList::new();
            for elem in partitions.elements() {
                if let Some(&offset) = safe.get(&(elem.topic().to_owned(), elem.partition())) {
                    let _ = list.add_partition_offset(elem.topic(), elem.partition(), Offset::Offset(offset));
                }
            }
            let mut committed = true;
            if list.count() > 0
                && let Err(e) = consumer.commit(&list, CommitMode::Sync)
            {
                committed = false;
                tracing::warn!(error = %e, "commit before rebalance failed; uncommitted records will be read again");
            }
            if let (Some(handover), Some(board)) = (handover, board.as_mut()) {
                let revoked = handover.pairs(partitions);
                // Entries go only with committed positions: otherwise the new owner
                // reads from older offsets than the entries continue (they stay here).
                let written = committed
                    && match handover.write(&handover.revoked_records(board, &revoked, &safe), HANDOVER_BOUND)
                    {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(error = %e, "the label join's waiting entries were not handed over; they stay with this instance");
                            false
                        }
                    };
                let written: Vec<_> = if written { revoked.into_iter().collect() } else { Vec::new() };
                if !written.is_empty() {
                    tracing::info!(partitions = written.len(), "label join entries handed over");
                }
                board.handed_last = written.iter().copied().collect();
                board.revoked = Some(written);
                // No more periodic records of them from here: their next owner's count.
                for pair in handover.pairs(partitions) {
                    board.owned.remove(&pair);
                    board.written.remove(&pair);
                }
            }
            drop(board);
            self.0.revoked.store(true, Ordering::SeqCst);
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                if let Ok(mut guard) = self.0.group_metadata.lock() {
                    *guard = consumer.group_metadata().map(Arc::new);
                }
                self.0.assigned.store(partitions.count(), Ordering::SeqCst);
                self.0.assignments.fetch_add(1, Ordering::SeqCst);
                self.0.joined.store(true, Ordering::SeqCst);
                self.0.assignment_lost.store(false, Ordering::SeqCst);
                if let Some(handover) = self.0.handover.get() {
                    take_over(handover, consumer, partitions);
                }
                tracing::info!(partitions = partitions.count(), "partitions assigned");
            }
            Rebalance::Revoke(_) => self.0.assigned.store(0, Ordering::SeqCst),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// At an assignment: which partitions written at the revocation came back, and the
/// handover records of the others, read before any of their messages is processed and
/// kept only when they continue from the committed offsets; the records adopted are
/// deleted. After a restart the restored checkpoint's entries wait aside, and each
/// assigned partition's come from one place (see [`restart_keeps`]); the others' are
/// counted handed over (their records are in the topic for whoever holds them). The
/// outcome waits on the board for the feeder to pass to the pipeline.
fn take_over(handover: &Handover, consumer: &BaseConsumer<ArcContext>, partitions: &TopicPartitionList) {
    let Ok(mut board) = handover.board.lock() else { return };
    let assigned = handover.pairs(partitions);
    board.owned.extend(assigned.iter().copied());
    let handed_last = std::mem::take(&mut board.handed_last);
    let restored = board.restored.take();
    let mut kept: BTreeSet<StreamPartition> = assigned.intersection(&handed_last).copied().collect();
    let new: BTreeSet<StreamPartition> = assigned.difference(&kept).copied().collect();
    let mut adopted = Vec::new();
    if !new.is_empty() {
        let committed = match consumer.committed_offsets(partitions.clone(), HANDOVER_BOUND) {
            Ok(committed) => Some(
                committed
                    .elements()
                    .into_iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                        _ => None,
                    })
                    .collect::<BTreeMap<(String, i32), i64>>(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the committed offsets; newly assigned partitions start without their waiting entries");
                None
            }
        };
        if let Some(committed) = committed {
            match handover.read(&new, &committed, HANDOVER_BOUND) {
                Ok(mut records) => {
                    if let Some(restored) = &restored {
                        for &pair in new.iter().filter(|p| restored.contains_key(p)) {
                            let local = &restored[&pair];
                            if restart_keeps(handover.writer, pair.1, local, records.get(&pair), &committed) {
                                records.remove(&pair);
                                kept.insert(pair);
                            }
                        }
                    }
                    adopted.extend(records);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the handover topic; newly assigned partitions start without their waiting entries");
                    kept.extend(restored.iter().flat_map(|r| r.keys()).filter(|p| new.contains(p)));
                }
            }
            board.committed.extend(committed);
        } else {
            // Without the committed offsets a restarted instance keeps its checkpoint's.
            kept.extend(restored.iter().flat_map(|r| r.keys()).filter(|p| new.contains(p)));
        }
    }
    // Only records of others are deleted: a copy of this instance's own that it keeps
    // continuing is what a new owner should find if it dies before its next one.
    let used: Vec<_> =
        adopted.iter().filter(|(_, r)| r.writer != handover.writer).map(|(pair, _)| (*pair, None)).collect();
    if let Err(e) = handover.write(&used, HANDOVER_BOUND) {
        tracing::warn!(error = %e, "the used handover records were not deleted (a later owner checks their positions)");
    }
    if !adopted.is_empty() {
        let entries: usize = adopted.iter().map(|(_, r)| r.entries.len()).sum();
        tracing::info!(partitions = adopted.len(), entries, "label join entries taken over");
    }
    board.notices_made += 1;
    // An assignment not yet passed on (two in a row): the kept sets add up.
    let notice = board.assigned.get_or_insert_with(Default::default);
    notice.kept.extend(kept);
    notice.adopted.extend(adopted);
}

/// After a restart, whether an assigned partition keeps the restored checkpoint's
/// entries (`local`: the checkpoint's positions there) rather than adopt `record` (the
/// latest record continuing from the committed offsets). Kept when the checkpoint is
/// ahead of the commit (written, then killed before the commit was taken: only it holds
/// that state), or level with it while no record continues or the one that does is this
/// instance's own copy (written from this or an older checkpoint). Not kept when another
/// instance read on since, or wrote the state at these offsets (it held the partition
/// after this checkpoint), or this instance handed the entries over in that record.
fn restart_keeps(
    writer: u64,
    partition: i32,
    local: &[(String, i64)],
    record: Option<&crate::ingest::handover::HandoverRecord>,
    committed: &BTreeMap<(String, i32), i64>,
) -> bool {
    match crate::ingest::handover::standing(local, committed, partition) {
        Standing::Ahead => true,
        Standing::Equal => record.is_none_or(|r| r.copy && r.writer == writer),
        Standing::Behind => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::handover::HandoverRecord;

    #[test]
    fn a_restart_keeps_its_checkpoint_only_where_nobody_else_has_the_partitions_state() {
        let me = 7;
        let committed = BTreeMap::from([(("p".to_owned(), 0), 10)]);
        let record = |writer, copy| HandoverRecord { writer, copy, ..Default::default() };
        let keeps = |local: i64, r: Option<&HandoverRecord>| {
            restart_keeps(me, 0, &[("p".into(), local)], r, &committed)
        };
        assert!(keeps(12, Some(&record(8, true))), "ahead of the commit: only the checkpoint has that state");
        assert!(keeps(10, None), "level, and no record continues");
        assert!(keeps(10, Some(&record(me, true))), "level, with its own copy (older or the same)");
        assert!(!keeps(10, Some(&record(me, false))), "it handed them over itself (a stop, a revocation)");
        assert!(!keeps(10, Some(&record(8, true))), "another held the partition at these offsets since");
        assert!(!keeps(9, Some(&record(me, true))), "another read on since");
        assert!(!keeps(9, None));
    }
    use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};

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
