//! Reading a topic's history once, read-only, for `driftscope backtest --topic`: every
//! partition from a start (an offset or a time) to an end (exclusive; an offset, a time,
//! or by default the partition's end when the replay starts). The consumer is assigned
//! its partitions directly (it never joins the group's assignment) and never commits,
//! so a backtest cannot move a running monitor's offsets.

use crate::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Where a replay starts or ends in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Offset(i64),
    /// The first message at or after this time (ms since the Unix epoch).
    TimeMs(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic `{0}` does not exist or has no partitions")]
    NoTopic(String),
    #[error("no message arrived for {0:?} while partitions {1:?} had not reached their end")]
    Stalled(Duration, Vec<i32>),
}

const TIMEOUT: Duration = Duration::from_secs(10);
const STALL: Duration = Duration::from_secs(60);

/// One message of the replay.
pub struct Replayed<'a> {
    /// The partition's position in the topic's partition list (a source number).
    pub source: u32,
    pub partition: i32,
    pub offset: i64,
    /// The message's timestamp (ms), 0 when it has none.
    pub timestamp_ms: i64,
    pub payload: &'a [u8],
}

/// The offset a bound stands for in one partition whose offsets run `[low, high)`.
fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    bound: Bound,
    low: i64,
    high: i64,
) -> Result<i64, ReplayError> {
    Ok(match bound {
        Bound::Offset(o) => o.clamp(low, high),
        Bound::TimeMs(t) => {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(t))?;
            let found = consumer.offsets_for_times(tpl, TIMEOUT)?;
            match found.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.clamp(low, high),
                _ => high,
            }
        }
    })
}

/// Reads `topic` from `from` to `to` and hands each message to `each`, in order within
/// each partition. Returns the messages read.
pub fn replay_topic(
    kafka: &KafkaConfig,
    topic: &str,
    from: Option<Bound>,
    to: Option<Bound>,
    mut each: impl FnMut(Replayed<'_>),
) -> Result<u64, ReplayError> {
    let mut config = super::kafka::consumer_config(kafka);
    config
        .set("group.id", format!("driftscope-backtest-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReplayError::NoTopic(topic.to_owned()));
    }
    let mut assignment = TopicPartitionList::new();
    let mut ends: Vec<(i32, i64, i64)> = Vec::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        let start = resolve(&consumer, topic, p, from.unwrap_or(Bound::Offset(low)), low, high)?;
        let end = resolve(&consumer, topic, p, to.unwrap_or(Bound::Offset(high)), low, high)?;
        if start < end {
            assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.push((p, start, end));
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment)?;
    let source_of = |p: i32| partitions.iter().position(|&x| x == p).unwrap_or(0) as u32;
    let mut remaining: Vec<i32> = ends.iter().map(|e| e.0).collect();
    let mut read = 0u64;
    let mut last_message = Instant::now();
    while !remaining.is_empty() {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            if last_message.elapsed() > STALL {
                return Err(ReplayError::Stalled(STALL, remaining));
            }
            continue;
        };
        let message = result?;
        last_message = Instant::now();
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&(_, _, end)) = ends.iter().find(|e| e.0 == partition) else { continue };
        if offset >= end {
            remaining.retain(|&p| p != partition);
            continue;
        }
        each(Replayed {
            source: source_of(partition),
            partition,
            offset,
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            payload: message.payload().unwrap_or_default(),
        });
        read += 1;
        if offset + 1 >= end {
            remaining.retain(|&p| p != partition);
        }
    }
    Ok(read)
}
