//! The consumer's message queue on the real broker: once a partition is routed there,
//! its messages come in batches, in offset order, none lost or repeated, including
//! the ones that reached the consumer queue before the partition was routed; and a
//! partition given up and assigned again (which loses its route in librdkafka) is
//! routed again and keeps flowing.

mod common;

use common::*;
use driftscope::config::KafkaConfig;
use driftscope::health::Health;
use driftscope::ingest::kafka::{ArcContext, create_consumer};
use driftscope::ingest::message_queue::{MessageQueue, Messages};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const PARTITIONS: i32 = 3;

/// What one reading loop saw: offsets per partition in arrival order, and how many
/// came through each queue.
#[derive(Default)]
struct Seen {
    offsets: BTreeMap<i32, Vec<i64>>,
    by_consumer_queue: usize,
    by_message_queue: usize,
    routes: usize,
}

impl Seen {
    fn total(&self) -> usize {
        self.offsets.values().map(Vec::len).sum()
    }
}

/// The feeder's discipline (`monitor::feed`): drain the consumer queue completely,
/// route newly assigned partitions, and read the message queue only in a round that
/// routed nothing.
fn read_until(
    consumer: &BaseConsumer<ArcContext>,
    context: &Health,
    queue: &mut MessageQueue,
    routed: &mut u64,
    seen: &mut Seen,
    total: usize,
) {
    let mut messages = Messages::default();
    wait_for(&format!("{total} messages"), Duration::from_secs(60), || {
        let mut routed_now = false;
        loop {
            match consumer.poll(Duration::ZERO) {
                Some(polled) => {
                    let message = polled.expect("no consumer error");
                    seen.offsets.entry(message.partition()).or_default().push(message.offset());
                    seen.by_consumer_queue += 1;
                }
                None if queue.consumer_queue_is_empty() => break,
                None => {}
            }
        }
        let assignments = context.assignments.load(Ordering::SeqCst);
        if assignments != *routed {
            *routed = assignments;
            assert_eq!(queue.route(&consumer.assignment().expect("assignment")), 0, "every partition routed");
            seen.routes += 1;
            routed_now = true;
        }
        if !routed_now {
            queue.consume(Duration::from_millis(20), 64, &mut messages);
        }
        for message in messages.iter() {
            assert!(message.error().is_none(), "{:?}", message.error());
            assert!(message.topic().is_some());
            let expected = format!("p{}-{}", message.partition(), message.offset());
            assert_eq!(message.payload(), expected.as_bytes(), "payload of its own partition and offset");
            seen.offsets.entry(message.partition()).or_default().push(message.offset());
            seen.by_message_queue += 1;
        }
        messages.clear();
        (seen.total() >= total).then_some(())
    });
}

fn produce_range(bootstrap: &str, topic: &str, range: std::ops::Range<i64>) {
    for partition in 0..PARTITIONS {
        let payloads: Vec<Vec<u8>> =
            range.clone().map(|o| format!("p{partition}-{o}").into_bytes()).collect();
        produce(bootstrap, topic, partition, &payloads);
    }
}

fn assert_in_order(seen: &Seen, end: i64) {
    for partition in 0..PARTITIONS {
        let offsets = seen.offsets.get(&partition).cloned().unwrap_or_default();
        let expected: Vec<i64> = (0..end).collect();
        assert_eq!(offsets, expected, "partition {partition}: every offset once, in order");
    }
}

#[test]
fn routed_partitions_arrive_in_order_and_stay_routed_across_a_reassignment() {
    let Some(bootstrap) = broker() else { return };
    let topic = unique("mq");
    create_topic(&bootstrap, &topic, PARTITIONS);
    produce_range(&bootstrap, &topic, 0..500);

    let kafka =
        KafkaConfig { brokers: bootstrap.clone(), group_id: unique("mq-group"), ..Default::default() };
    let context = Arc::new(Health::default());
    let consumer = create_consumer(&kafka, context.clone()).expect("consumer");
    let mut queue = MessageQueue::new(&consumer).expect("a message queue");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut seen = Seen::default();

    // Route only once the first message has reached the consumer queue, leaving the
    // rest of that fetch there; the next messages then arrive here, behind them.
    let first = wait_for("a first message on the consumer queue", Duration::from_secs(30), || {
        consumer.poll(Duration::from_millis(50)).map(|m| {
            let m = m.expect("no consumer error");
            (m.partition(), m.offset())
        })
    });
    seen.offsets.entry(first.0).or_default().push(first.1);
    seen.by_consumer_queue += 1;
    assert_eq!(queue.route(&consumer.assignment().expect("assignment")), 0);
    let mut routed = context.assignments.load(Ordering::SeqCst);
    assert!(!queue.consumer_queue_is_empty(), "the first fetch is still on the consumer queue");
    produce_range(&bootstrap, &topic, 500..800);
    wait_for("the new messages on the message queue", Duration::from_secs(30), || {
        (queue.len() >= 900).then_some(())
    });
    // Both queues hold messages of the same partitions: draining the consumer queue
    // first keeps each partition in order (reading here first would not).
    read_until(&consumer, &context, &mut queue, &mut routed, &mut seen, 2400);
    assert_in_order(&seen, 800);
    // How much of the first 1,500 the broker put in that first fetch is its choice (one
    // partition's 500, or all three): more than the one polled above stayed behind.
    assert!(seen.by_consumer_queue > 1, "{} by the consumer queue", seen.by_consumer_queue);
    assert!(seen.by_message_queue >= 900, "{} by the message queue", seen.by_message_queue);
    assert_eq!(seen.routes, 0, "no assignment but the one routed above");

    // Give every partition up and take it back: librdkafka drops the route when it
    // stops a partition and does not restore it on its own.
    consumer.unsubscribe();
    wait_for("the revocation", Duration::from_secs(30), || {
        let _ = consumer.poll(Duration::from_millis(50));
        (context.assigned.load(Ordering::SeqCst) == 0).then_some(())
    });
    consumer.subscribe(&[&topic]).expect("subscribe again");
    produce_range(&bootstrap, &topic, 800..1000);
    // Positions were not committed: the second assignment starts again from offset 0.
    let mut again = Seen::default();
    read_until(&consumer, &context, &mut queue, &mut routed, &mut again, 3000);
    assert_in_order(&again, 1000);
    assert_eq!(again.routes, 1, "routed again on the new assignment");
    assert!(again.by_message_queue > 0);

    drop(queue);
    consumer.unsubscribe();
}
