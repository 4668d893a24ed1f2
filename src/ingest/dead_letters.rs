//! The dead-letter producer: copies of bad records sent to `kafka.dead_letter_topic`
//! with the reason and the record's coordinates in headers, counted only once the
//! broker acknowledged them; refusals counted by reason; the bounded flush at shutdown.

use crate::config::KafkaConfig;
use crate::telemetry::{DEAD_LETTER_FAILURE_REASONS, DeadLetterCounters, RateLimitedLog};
use rdkafka::ClientContext;
use rdkafka::bindings as rdsys;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Header names on dead-lettered records.
pub const DLQ_REASON_HEADER: &str = "driftscope-reason";
pub const DLQ_SOURCE_HEADER: &str = "driftscope-source";
/// On a copy cut to `kafka.dead_letter_max_bytes`: the original payload's length.
pub const DLQ_TRUNCATED_HEADER: &str = "driftscope-truncated";

/// How long the monitor waits at shutdown for dead letters still on their way; what is
/// not acknowledged by then is counted as a `timeout` failure and logged once. Never
/// past the stop's deadline (`state.shutdown_timeout`) either.
pub const SHUTDOWN_FLUSH_BOUND: Duration = Duration::from_secs(5);

/// Why a copy did not reach the dead-letter topic: the `reason` label of
/// `driftscope_dead_letter_failures_total`, a bounded set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The broker (or the producer's own limit) refused the copy as too large.
    TooLarge,
    /// Not acknowledged in time: `message.timeout.ms` ran out (broker down or
    /// unreachable), or the copy was still pending when the shutdown bound ran out.
    Timeout,
    /// The broker refused the producer: authentication or authorization (ACLs).
    Unauthorized,
    /// Anything else, e.g. the producer's local queue was full, or the topic does not
    /// exist and cannot be created.
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] =
        [FailureReason::TooLarge, FailureReason::Timeout, FailureReason::Unauthorized, FailureReason::Other];

    pub fn label(self) -> &'static str {
        DEAD_LETTER_FAILURE_REASONS[self.index()]
    }

    /// Position in [`FailureReason::ALL`], in the label list and in the counters.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn of(error: &KafkaError) -> FailureReason {
        use RDKafkaErrorCode as C;
        match error.rdkafka_error_code() {
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge) => FailureReason::TooLarge,
            // Purged: still pending when the shutdown bound ran out.
            Some(
                C::MessageTimedOut
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::TimedOutQueue
                | C::PurgeQueue
                | C::PurgeInflight,
            ) => FailureReason::Timeout,
            Some(
                C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication,
            ) => FailureReason::Unauthorized,
            _ => FailureReason::Other,
        }
    }
}

/// What travels with a copy to its delivery report: whose counters to bump and where
/// the original record is, for the log.
pub struct Pending {
    counters: Arc<DeadLetterCounters>,
    topic: String,
    partition: i32,
    offset: i64,
}

/// The producer's context. Delivery reports run on the producer's own polling thread
/// (a [`ThreadedProducer`]), so counting by acknowledgement never blocks the pipeline
/// thread that sends the copies: it hands each copy over and moves on. (A
/// `FutureProducer` would need a task per copy to await its future, on a runtime the
/// pipeline thread does not have; the callback counts in place.)
pub struct DeliveryContext {
    log: Mutex<RateLimitedLog>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::ingest::kafka::forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "dead-letter producer error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        match result {
            Ok(_) => pending.counters.delivered.inc(),
            Err((error, _)) => {
                let reason = FailureReason::of(error);
                pending.counters.failures[reason.index()].inc();
                // Purged copies are logged once, by `DeadLetters::close`.
                let purged = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                if !purged {
                    self.warn(&pending, reason, error);
                }
            }
        }
    }
}

impl DeliveryContext {
    fn warn(&self, pending: &Pending, reason: FailureReason, error: &KafkaError) {
        let Ok(mut log) = self.log.lock() else { return };
        let Some(suppressed) = log.admit() else { return };
        tracing::warn!(
            stream = %pending.counters.stream,
            topic = %pending.topic,
            partition = pending.partition,
            offset = pending.offset,
            reason = reason.label(),
            error = %error,
            suppressed,
            "bad record not dead-lettered; counted in driftscope_dead_letter_failures_total"
        );
    }
}

/// Copies bad records to a dead-letter topic, with the reason and the record's
/// coordinates in headers. Never blocks the monitor: copies are handed to the
/// producer's queue and counted when the broker answers; when the queue is full the
/// copy is counted as failed (`other`) at once.
pub struct DeadLetters {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    max_bytes: usize,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig, topic: &str) -> KafkaResult<Self> {
        let max_bytes = kafka.dead_letter_max_bytes;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            // Room for a full-size copy plus its key and headers; a larger one is
            // refused locally and counted as `too_large`.
            .set("message.max.bytes", (max_bytes + (1 << 20)).to_string())
            // librdkafka sends several copies in one batch and does not split a batch
            // the broker refuses as too large: batches no larger than one full copy keep
            // small copies from failing beside a large one at a topic that takes either.
            .set("batch.size", max_bytes.max(16 << 10).to_string())
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
        let context = DeliveryContext { log: Mutex::new(RateLimitedLog::default()) };
        Ok(DeadLetters { producer: config.create_with_context(context)?, topic: topic.to_owned(), max_bytes })
    }

    /// Hands a copy of a bad record to the producer; it is counted when the broker
    /// acknowledges or refuses it. A payload over `kafka.dead_letter_max_bytes` is cut
    /// to that length and marked with the original length in a header.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        counters: &Arc<DeadLetterCounters>,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let source = format!("{topic}/{partition}/{offset}");
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: DLQ_REASON_HEADER, value: Some(reason) })
            .insert(Header { key: DLQ_SOURCE_HEADER, value: Some(source.as_str()) });
        let copied = if payload.len() > self.max_bytes {
            let length = payload.len().to_string();
            headers = headers.insert(Header { key: DLQ_TRUNCATED_HEADER, value: Some(length.as_str()) });
            &payload[..self.max_bytes]
        } else {
            payload
        };
        let pending =
            Box::new(Pending { counters: counters.clone(), topic: topic.to_owned(), partition, offset });
        let mut record = BaseRecord::<[u8], [u8], Box<Pending>>::with_opaque_to(&self.topic, pending)
            .payload(copied)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Err((error, record)) = self.producer.send(record) {
            // Refused before it was queued (queue full, or over message.max.bytes): no
            // delivery report will come, so it is counted here.
            let reason = FailureReason::of(&error);
            record.delivery_opaque.counters.failures[reason.index()].inc();
            self.producer.context().warn(&record.delivery_opaque, reason, &error);
        }
    }

    /// Copies not yet acknowledged or refused.
    pub fn pending(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits up to `bound` for the copies still on their way; what is left then is
    /// purged, counted as `timeout` failures by its delivery reports, and logged once.
    pub fn close(self, bound: Duration) {
        if self.flush_within(bound) {
            return;
        }
        let left = self.producer.in_flight_count();
        self.producer.purge(PurgeConfig::default().queue().inflight());
        // The purge makes the delivery reports ready; this collects them.
        let _ = self.producer.flush(Duration::from_millis(500));
        tracing::warn!(
            undelivered = left,
            bound = ?bound,
            topic = %self.topic,
            "dead letters not acknowledged within the shutdown bound; counted in \
             driftscope_dead_letter_failures_total{{reason=\"timeout\"}}"
        );
    }

    /// Waits up to `bound` for every copy to be acknowledged (or refused), with
    /// `linger.ms` counted as elapsed the whole time; whether none is left.
    ///
    /// librdkafka sends a lingering batch at once only while a flush call lasts (its
    /// broker threads read a "flushing" flag the call holds), and rust-rdkafka's
    /// `flush` calls it with no wait in a loop, so a broker thread that woke a moment
    /// after the flag was dropped (a busy machine, or a topic whose leader was not
    /// known yet) kept the copies for the whole `linger.ms`, past the bound. One call
    /// with the whole bound holds the flag throughout.
    fn flush_within(&self, bound: Duration) -> bool {
        let millis = i32::try_from(bound.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the client pointer is valid while `self.producer` lives, and
        // librdkafka's flush may be called from any thread. rust-rdkafka's producers
        // take delivery reports as events, so this flush only waits for the message
        // count to reach zero while the producer's own thread serves the reports.
        let result = unsafe { rdsys::rd_kafka_flush(self.producer.client().native_ptr(), millis) };
        result == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_bounded_reasons() {
        let of = |code| FailureReason::of(&KafkaError::MessageProduction(code));
        assert_eq!(of(RDKafkaErrorCode::MessageSizeTooLarge), FailureReason::TooLarge);
        assert_eq!(of(RDKafkaErrorCode::MessageBatchTooLarge), FailureReason::TooLarge);
        assert_eq!(of(RDKafkaErrorCode::MessageTimedOut), FailureReason::Timeout);
        assert_eq!(of(RDKafkaErrorCode::PurgeInflight), FailureReason::Timeout);
        assert_eq!(of(RDKafkaErrorCode::TopicAuthorizationFailed), FailureReason::Unauthorized);
        assert_eq!(of(RDKafkaErrorCode::SaslAuthenticationFailed), FailureReason::Unauthorized);
        assert_eq!(of(RDKafkaErrorCode::QueueFull), FailureReason::Other);
        for (i, r) in FailureReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let labels: Vec<&str> = FailureReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["too_large", "timeout", "unauthorized", "other"]);
    }
}
