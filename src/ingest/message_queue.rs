//! The consumer's messages on a queue of their own, read in batches.
//!
//! rust-rdkafka reads one message per `poll`, and each poll reads the clock three
//! times (once in the wrapper, twice in librdkafka's poll bookkeeping) and allocates a
//! shared handle: measured end to end, a quarter of the consumer thread's time.
//! librdkafka's batch call (`rd_kafka_consume_batch_queue`) does that bookkeeping once
//! per batch, but on the consumer queue it would also take the group's rebalance
//! events, which it answers itself (an unassign) instead of handing them to
//! driftscope's hooks. So each assigned partition's fetch queue is forwarded to this
//! queue: messages come here, in batches; rebalances, commits, statistics and errors
//! stay on the consumer queue, still served by rust-rdkafka's `poll`. rust-rdkafka has
//! no batch call, hence the few FFI calls here, each with its safety argument.
//!
//! Order: until a partition is forwarded its messages go to the consumer queue, so the
//! feeder drains that queue completely before reading this one, and reads this one
//! only in a round that forwarded nothing (messages may reach the consumer queue while
//! a forward is being made); after the forward, librdkafka appends nothing more of
//! that partition there. A partition stopped and started again (a rebalance) loses
//! its forward and is forwarded again when it is assigned.

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

/// A librdkafka queue owned by driftscope, fed by the assigned partitions.
pub struct MessageQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// A handle on the consumer queue, only to ask whether it is empty.
    consumer_queue: NonNull<rdsys::rd_kafka_queue_t>,
    client: NonNull<rdsys::rd_kafka_t>,
}

// SAFETY: librdkafka queues and client handles are thread-safe; the queue is used by
// one thread at a time (`&mut self` for reads).
unsafe impl Send for MessageQueue {}

impl MessageQueue {
    /// A new empty queue on `consumer`'s client; `None` if librdkafka refuses one
    /// (a consumer without a group has no consumer queue). It must be dropped before
    /// the consumer (see [`MessageQueue::drop`]).
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<MessageQueue> {
        let client = NonNull::new(consumer.client().native_ptr())?;
        // SAFETY: `client` is a live consumer handle; both queue handles returned are
        // new references, destroyed in `drop` (or here, if the second is refused).
        unsafe {
            let consumer_queue = NonNull::new(rdsys::rd_kafka_queue_get_consumer(client.as_ptr()))?;
            let Some(queue) = NonNull::new(rdsys::rd_kafka_queue_new(client.as_ptr())) else {
                rdsys::rd_kafka_queue_destroy(consumer_queue.as_ptr());
                return None;
            };
            Some(MessageQueue { queue, consumer_queue, client })
        }
    }

    /// Messages waiting here.
    pub fn len(&self) -> usize {
        // SAFETY: a live queue handle.
        unsafe { rdsys::rd_kafka_queue_length(self.queue.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the consumer queue holds nothing (no event, no message of a partition
    /// not yet routed here). rust-rdkafka's `poll` also returns nothing after serving
    /// an event, so only this tells that the consumer queue was drained.
    pub fn consumer_queue_is_empty(&self) -> bool {
        // SAFETY: a live queue handle.
        unsafe { rdsys::rd_kafka_queue_length(self.consumer_queue.as_ptr()) == 0 }
    }

    /// Forwards the fetch queues of `partitions` here; forwarding one already
    /// forwarded is a no-op. Returns how many could not be forwarded (their messages
    /// keep arriving on the consumer queue, which the feeder also reads).
    pub fn route(&self, partitions: &TopicPartitionList) -> usize {
        let mut missed = 0;
        for element in partitions.elements() {
            let Ok(topic) = CString::new(element.topic()) else {
                missed += 1;
                continue;
            };
            // SAFETY: live client, NUL-terminated topic; the returned handle is a new
            // reference, destroyed right after the forward (the forward keeps its own).
            unsafe {
                let partition_queue = rdsys::rd_kafka_queue_get_partition(
                    self.client.as_ptr(),
                    topic.as_ptr(),
                    element.partition(),
                );
                if partition_queue.is_null() {
                    missed += 1;
                    continue;
                }
                rdsys::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
                rdsys::rd_kafka_queue_destroy(partition_queue);
            }
        }
        missed
    }

    /// Appends up to `max` messages to `into`, waiting up to `timeout` for them (the
    /// whole timeout unless `max` arrive first). Returns how many were appended.
    pub fn consume(&mut self, timeout: Duration, max: usize, into: &mut Messages) -> usize {
        into.handles.reserve(max);
        let start = into.handles.len();
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the spare capacity holds at least `max` pointers; librdkafka writes
        // `n <= max` of them, each a message we now own (destroyed by `Messages`).
        unsafe {
            let n = rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                into.handles.as_mut_ptr().add(start),
                max,
            );
            let n = usize::try_from(n).unwrap_or(0).min(max);
            into.handles.set_len(start + n);
            n
        }
    }
}

impl Drop for MessageQueue {
    /// Destroying the owner's handle disables the queue and purges what it holds, so
    /// no fetched message keeps the consumer from closing; partitions still forwarded
    /// here drop their messages until the consumer stops them.
    fn drop(&mut self) {
        // SAFETY: the handles are ours and destroyed once.
        unsafe {
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr());
            rdsys::rd_kafka_queue_destroy(self.consumer_queue.as_ptr());
        }
    }
}

/// Messages taken from a [`MessageQueue`], owned until [`Messages::clear`] or drop.
#[derive(Default)]
pub struct Messages {
    handles: Vec<*mut rdsys::rd_kafka_message_t>,
}

// SAFETY: librdkafka messages may be read and destroyed on any thread.
unsafe impl Send for Messages {}

impl Messages {
    pub fn iter(&self) -> impl Iterator<Item = RawMessage<'_>> {
        // SAFETY: every handle is a live message owned by `self` until `clear`.
        self.handles.iter().map(|&m| RawMessage { message: unsafe { &*m } })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Gives the messages back to librdkafka.
    pub fn clear(&mut self) {
        for m in self.handles.drain(..) {
            // SAFETY: owned, destroyed once (drained).
            unsafe { rdsys::rd_kafka_message_destroy(m) }
        }
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One message, borrowed from [`Messages`].
#[derive(Clone, Copy)]
pub struct RawMessage<'a> {
    message: &'a rdsys::rd_kafka_message_t,
}

impl<'a> RawMessage<'a> {
    /// A consumer error delivered in place of a message (e.g. offset out of range).
    pub fn error(&self) -> Option<KafkaError> {
        if self.message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            None
        } else {
            Some(KafkaError::MessageConsumption(RDKafkaErrorCode::from(self.message.err)))
        }
    }

    /// Identifies the message's topic while the assignment lasts: librdkafka's topic
    /// handle, which an assigned partition keeps alive (so its address is not reused).
    pub fn topic_handle(&self) -> usize {
        self.message.rkt as usize
    }

    pub fn topic(&self) -> Option<&'a str> {
        if self.message.rkt.is_null() {
            return None;
        }
        // SAFETY: a live topic handle; librdkafka returns its NUL-terminated name,
        // valid while the handle is.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.message.rkt)) }.to_str().ok()
    }

    pub fn partition(&self) -> i32 {
        self.message.partition
    }

    pub fn offset(&self) -> i64 {
        self.message.offset
    }

    pub fn payload(&self) -> &'a [u8] {
        bytes(self.message.payload, self.message.len)
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        (!self.message.key.is_null()).then(|| bytes(self.message.key, self.message.key_len))
    }
}

fn bytes<'a>(data: *mut std::ffi::c_void, len: usize) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: librdkafka's payload/key pointer and length of a live message.
        unsafe { std::slice::from_raw_parts(data as *const u8, len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;

    fn consumer(group: Option<&str>) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        if let Some(group) = group {
            config.set("group.id", group);
        }
        config.create().expect("a consumer needs no broker to be made")
    }

    /// A group consumer gets a message queue, empty; one without a group has no
    /// consumer queue, so none (the feeder then polls). (Whether the consumer queue is
    /// empty is not asserted: with no broker to reach, connection errors land there.)
    #[test]
    fn a_queue_needs_a_group_consumer_and_starts_empty() {
        let grouped = consumer(Some("g"));
        let mut queue = MessageQueue::new(&grouped).expect("a queue for a group consumer");
        assert!(queue.is_empty());
        let mut messages = Messages::default();
        assert_eq!(queue.consume(Duration::ZERO, 8, &mut messages), 0);
        assert!(messages.is_empty());
        // Routing a partition of a topic nobody has seen makes its queue (librdkafka
        // creates the partition on demand) and forwards it.
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition("t", 0);
        assert_eq!(queue.route(&partitions), 0);
        drop(queue);
        assert!(MessageQueue::new(&consumer(None)).is_none());
    }
}
