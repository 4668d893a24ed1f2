//! The owner's reader of the partials topic: a member of the partials group
//! (`<group_id>.partials`, read_committed) owns the streams whose partials partition
//! ([`owner_partition`]) it is assigned, and reads their partials. When it leaves, the
//! group hands the partition to another member, which reads the partials from the
//! group's committed offset on. Not yet here: committing those offsets (only below the
//! oldest unscored pane) and the scoring loop.

use super::publisher::{ScaleError, owner_partition, partials_consumer_config};
use crate::config::KafkaConfig;
use crate::stats::partial::{Partial, PartialError};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// Which of `streams` the member assigned `assigned` (partials partitions) owns.
pub fn owned_streams<'a>(streams: &'a [String], assigned: &[i32], partitions: i32) -> Vec<&'a str> {
    streams
        .iter()
        .filter(|s| assigned.contains(&owner_partition(s, partitions)))
        .map(String::as_str)
        .collect()
}

pub struct PartialsReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl PartialsReader {
    pub fn new(kafka: &KafkaConfig, topic: &str, timeout: Duration) -> Result<Self, ScaleError> {
        let consumer: BaseConsumer = partials_consumer_config(kafka).create()?;
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            return Err(ScaleError::Topic {
                topic: topic.into(),
                message: "has no partitions (create it first)".into(),
            });
        }
        consumer.subscribe(&[topic])?;
        Ok(PartialsReader { consumer, topic: topic.into(), partitions })
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The partials partitions assigned to this member now.
    pub fn assigned(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|a| a.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    /// The next committed partial, if one arrives within `timeout`. A record that is not
    /// a partial of this version is an error for the caller to count and report; it
    /// never stops the reader.
    pub fn poll(&self, timeout: Duration) -> Option<Result<Partial, PartialError>> {
        match self.consumer.poll(timeout)? {
            Ok(m) => Some(Partial::decode(m.payload().unwrap_or_default())),
            Err(e) => {
                tracing::warn!(error = %e, "reading the partials topic");
                None
            }
        }
    }
}
