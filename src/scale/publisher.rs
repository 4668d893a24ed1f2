//! The partials topic and its transactional publisher. A batch of partials and the
//! input offsets it covers go in one transaction (`send_offsets_to_transaction` with the
//! input consumer's group metadata): after a crash either both happened or neither, so
//! a partial is neither lost (offsets committed without it) nor added twice (it is
//! keyed by stream, pane and source partition, and the topic is compacted, so a replay
//! overwrites its own earlier copy). Readers use `isolation.level = read_committed` and
//! never see an aborted or unfinished batch.

use crate::config::KafkaConfig;
use crate::stats::partial::Partial;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::topic_partition_list::TopicPartitionList;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot start a runtime for the admin client: {0}")]
    Runtime(std::io::Error),
    #[error("`scale.partials_topic` `{topic}`: {message}")]
    Topic { topic: String, message: String },
    #[error("publishing partials timed out after {0:?}: the transaction was aborted and is retried")]
    Timeout(Duration),
}

/// Settings shared by every client of global mode: the user's `kafka.properties`
/// last, so TLS and SASL settings reach these clients too.
fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        // Consumer-only properties would make the producer refuse to start.
        if !key.starts_with("group.") && !key.starts_with("enable.auto") && key != "auto.offset.reset" {
            config.set(key, value);
        }
    }
    config
}

/// What the partials group's id adds to `kafka.group_id`.
pub const PARTIALS_GROUP_SUFFIX: &str = ".partials";

/// The partials reader: a second consumer group (`<kafka.group_id>.partials`), reading
/// only committed transactions, its offsets committed by the merger.
pub fn partials_consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = base_config(kafka);
    config
        .set("group.id", format!("{}{PARTIALS_GROUP_SUFFIX}", kafka.group_id))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    config
}

/// Creates the partials topic (compacted) when absent; refuses an existing one that
/// is not compacted, by name, with the fix (without compaction replays would pile up
/// and the topic would grow without bound).
pub fn ensure_partials_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) -> Result<(), ScaleError> {
    let admin: AdminClient<DefaultClientContext> = base_config(kafka).create()?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ScaleError::Runtime)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
    let created = runtime.block_on(admin.create_topics(&[new], &options))?;
    for result in created {
        match result {
            Ok(_) => {
                tracing::info!(topic, partitions, "partials topic created (compacted)");
                return Ok(());
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(ScaleError::Topic {
                    topic: topic.into(),
                    message: format!("cannot create it: {code}"),
                });
            }
        }
    }
    // The topic existed, maybe created a moment ago by another instance: until the
    // broker has its config, the policy reads empty, so it is asked again for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let policy = loop {
        let described =
            runtime.block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options))?;
        let policy = described
            .into_iter()
            .filter_map(Result::ok)
            .find_map(|r| r.get("cleanup.policy").and_then(|e| e.value.clone()))
            .unwrap_or_default();
        if !policy.is_empty() || std::time::Instant::now() >= deadline {
            break policy;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if policy.is_empty() {
        tracing::warn!(topic, "cannot read the partials topic's cleanup.policy; assuming it is compacted");
    } else if !policy.split(',').any(|p| p.trim() == "compact") {
        return Err(ScaleError::Topic {
            topic: topic.into(),
            message: format!(
                "exists with cleanup.policy={policy}; partials need compaction (a replay overwrites its \
                 own key): `kafka-configs --alter --entity-type topics --entity-name {topic} --add-config \
                 cleanup.policy=compact`, or name a new topic"
            ),
        });
    }
    Ok(())
}

/// The partials-topic partition that carries every partial of `stream`: one per
/// stream, so the member of the partials group assigned it is the stream's owner and
/// reads all its partials (the key, which also names the pane and source partition
/// for compaction, is not what places a partial). A CRC of the name, the same on every
/// instance and version.
pub fn owner_partition(stream: &str, partitions: i32) -> i32 {
    (crc32fast::hash(stream.as_bytes()) % partitions.max(1) as u32) as i32
}

/// A transactional producer of partials. Its `transactional.id` is stable per
/// instance (`driftscope-<group>-<instance>`), so a restarted instance fences off its
/// own zombie and aborts what the crashed one left open.
pub struct PartialsPublisher {
    producer: BaseProducer,
    topic: String,
    partitions: i32,
    timeout: Duration,
    /// The `driftscope-instance` header of every partial: an owner that refuses a
    /// partial (another config) names the instance that published it.
    instance: String,
    /// An abort ran out of time and must be finished before the next transaction.
    abort_pending: AtomicBool,
}

impl PartialsPublisher {
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
        instance: &str,
        timeout: Duration,
    ) -> Result<Self, ScaleError> {
        let producer: BaseProducer = base_config(kafka)
            .set("transactional.id", format!("driftscope-{}-{instance}", kafka.group_id))
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // A transaction takes milliseconds; one a crashed instance left open blocks
            // read_committed readers of its partitions (the owner, and the input
            // group's committed offsets) until the broker aborts it, after this.
            .set("transaction.timeout.ms", "10000")
            .create()?;
        producer.init_transactions(timeout)?;
        let metadata = producer.client().fetch_metadata(Some(topic), timeout)?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(ScaleError::Topic {
                topic: topic.into(),
                message: "has no partitions (create it first)".into(),
            });
        }
        Ok(PartialsPublisher {
            producer,
            topic: topic.into(),
            partitions,
            timeout,
            instance: instance.into(),
            abort_pending: AtomicBool::new(false),
        })
    }

    /// Publishes `partials` and commits `offsets` (the input positions after the
    /// records they hold) for the input group `group`, atomically. On any error the
    /// transaction is aborted: neither the partials nor the offsets count, and the
    /// caller publishes again from the same state.
    pub fn publish(
        &self,
        partials: &[Partial],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), ScaleError> {
        // An abort that did not finish must be finished first: librdkafka refuses any
        // other transactional call until it is ("Conflicting abort_transaction API call
        // is already in progress"), which held an instance's partitions for minutes.
        if self.abort_pending.load(Ordering::SeqCst) {
            self.abort()?;
        }
        self.producer.begin_transaction()?;
        match self.send_and_commit(partials, offsets, group) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(abort) = self.abort() {
                    tracing::warn!(error = %abort, "aborting the partials transaction failed; tried again before the next one");
                }
                Err(e)
            }
        }
    }

    /// Aborts the open transaction. Its messages are purged and their delivery reports
    /// served here first: a `BaseProducer` serves them only when polled, and an abort
    /// waits for them, so without this it ran out its timeout every time.
    fn abort(&self) -> Result<(), ScaleError> {
        self.abort_pending.store(true, Ordering::SeqCst);
        self.producer.purge(PurgeConfig::default().queue().inflight());
        let deadline = std::time::Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(10));
        }
        self.producer.poll(Duration::ZERO);
        self.producer.abort_transaction(self.timeout)?;
        self.abort_pending.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn send_and_commit(
        &self,
        partials: &[Partial],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), ScaleError> {
        for p in partials {
            let key = Partial::key(&p.header.stream, p.pane, &p.source);
            let payload = p.encode();
            let headers = OwnedHeaders::new().insert(Header {
                key: super::status::INSTANCE_HEADER,
                value: Some(self.instance.as_bytes()),
            });
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic)
                .key(&key)
                .payload(&payload)
                .headers(headers)
                .partition(owner_partition(&p.header.stream, self.partitions));
            let deadline = std::time::Instant::now() + self.timeout;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        if std::time::Instant::now() >= deadline {
                            return Err(ScaleError::Timeout(self.timeout));
                        }
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        self.producer.send_offsets_to_transaction(offsets, group, self.timeout)?;
        // commit_transaction flushes what is in flight first.
        self.producer.commit_transaction(self.timeout)?;
        Ok(())
    }
}
