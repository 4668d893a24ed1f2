//! Global mode's partials topic on the real broker: the topic is created compacted
//! (and a non-compacted one refused by name), partials and the input offsets they cover
//! are committed in one transaction, a `read_committed` reader sees exactly the
//! committed partials, and a fenced (zombie) publisher can publish nothing.

mod common;

use driftscope::config::KafkaConfig;
use driftscope::scale::{
    PartialsPublisher, ensure_partials_topic, owner_partition, partials_consumer_config,
};
use driftscope::stats::partial::{Partial, PartialHeader, SourcePartition};
use driftscope::stats::sketch::WindowSketchState;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message};
use std::time::Duration;

fn partial(stream: &str, pane: i64, partition: i32, records: u64) -> Partial {
    Partial {
        header: PartialHeader::new(stream, "Millis x 1", 42),
        pane,
        source: SourcePartition { topic: "input".into(), partition },
        sketch: WindowSketchState { records, features: Vec::new() },
        offsets: Some((0, records as i64 - 1)),
        watermark_ms: (pane + 1) * 1000,
        late_records: 0,
    }
}

/// A member of `group` on `topic` that has its assignment (so it has group metadata).
fn joined_consumer(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    common::wait_for("the input consumer's assignment", Duration::from_secs(60), || {
        let _ = consumer.poll(Duration::from_millis(100));
        consumer.assignment().ok().filter(|a| a.count() == 2).map(|_| ())
    });
    consumer
}

/// Every committed partial on `topic`, read as the merger reads them.
/// Each with the partials-topic partition it was read from.
fn read_committed(kafka: &KafkaConfig, topic: &str, expect: usize) -> Vec<(i32, Partial)> {
    let reader: BaseConsumer = partials_consumer_config(kafka).create().expect("reader");
    reader.subscribe(&[topic]).expect("subscribe");
    let mut seen = Vec::new();
    common::wait_for("the committed partials", Duration::from_secs(60), || {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            seen.push((m.partition(), Partial::decode(m.payload().unwrap_or_default()).expect("a partial")));
        }
        (seen.len() >= expect).then_some(())
    });
    // Nothing more arrives: an extra (aborted or duplicated) partial would show here.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            seen.push((m.partition(), Partial::decode(m.payload().unwrap_or_default()).expect("a partial")));
        }
    }
    seen
}

#[test]
fn partials_and_input_offsets_commit_together_and_a_zombie_is_fenced() {
    let Some(bootstrap) = common::broker() else { return };
    let input = common::unique("scale-input");
    let partials_topic = common::unique("scale-partials");
    let group = common::unique("scale-group");
    common::create_topic(&bootstrap, &input, 2);
    let kafka = KafkaConfig { brokers: bootstrap.clone(), group_id: group.clone(), ..Default::default() };

    ensure_partials_topic(&kafka, &partials_topic, 3).expect("created");
    ensure_partials_topic(&kafka, &partials_topic, 3).expect("an existing compacted topic is accepted");
    let plain = common::unique("scale-plain");
    common::create_topic(&bootstrap, &plain, 1);
    let refused = ensure_partials_topic(&kafka, &plain, 1).unwrap_err().to_string();
    assert!(
        refused.contains("scale.partials_topic") && refused.contains("cleanup.policy=compact"),
        "{refused}"
    );

    let consumer = joined_consumer(&bootstrap, &group, &input);
    let metadata = consumer.group_metadata().expect("group metadata");
    let zombie =
        PartialsPublisher::new(&kafka, &partials_topic, "a", Duration::from_secs(30)).expect("publisher");
    // The restarted instance takes the same transactional id and fences the old one.
    let publisher =
        PartialsPublisher::new(&kafka, &partials_topic, "a", Duration::from_secs(30)).expect("publisher");

    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&input, 0, Offset::Offset(7)).unwrap();
    let fenced = zombie.publish(&[partial("s", 1, 0, 99)], &offsets, &metadata);
    assert!(fenced.is_err(), "a fenced publisher must not commit");

    let published =
        vec![partial("s", 1, 0, 5), partial("s", 1, 1, 3), partial("s", 2, 0, 4), partial("t", 1, 0, 2)];
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&input, 0, Offset::Offset(9)).unwrap();
    offsets.add_partition_offset(&input, 1, Offset::Offset(3)).unwrap();
    publisher.publish(&published, &offsets, &metadata).expect("published");

    let seen = read_committed(&kafka, &partials_topic, published.len());
    // One partials partition per stream: its owner reads all of the stream's partials.
    for (partition, p) in &seen {
        assert_eq!(*partition, owner_partition(&p.header.stream, 3), "{}", p.header.stream);
    }
    let mut seen: Vec<Partial> = seen.into_iter().map(|(_, p)| p).collect();
    seen.sort_by_key(|p| (p.header.stream.clone(), p.pane, p.source.partition));
    assert_eq!(seen, published, "exactly the committed partials, the zombie's not among them");

    let committed = consumer.committed(Duration::from_secs(30)).expect("committed offsets");
    let at = |p: i32| committed.find_partition(&input, p).map(|e| e.offset());
    assert_eq!(at(0), Some(Offset::Offset(9)));
    assert_eq!(at(1), Some(Offset::Offset(3)));
}

#[test]
fn each_stream_is_read_by_its_owner_only_and_a_new_owner_takes_over() {
    use driftscope::scale::owner::{PartialsReader, owned_streams};
    let Some(bootstrap) = common::broker() else { return };
    let input = common::unique("scale-owner-input");
    let partials_topic = common::unique("scale-owner-partials");
    let group = common::unique("scale-owner-group");
    common::create_topic(&bootstrap, &input, 2);
    let kafka = KafkaConfig { brokers: bootstrap.clone(), group_id: group.clone(), ..Default::default() };
    ensure_partials_topic(&kafka, &partials_topic, 2).expect("created");
    // Two streams on different partials partitions.
    let names: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
    let first = names[0].clone();
    let second = names
        .iter()
        .find(|n| owner_partition(n, 2) != owner_partition(&first, 2))
        .expect("two owners")
        .clone();
    let streams = vec![first.clone(), second.clone()];

    let one = PartialsReader::new(&kafka, &partials_topic, Duration::from_secs(30)).expect("reader");
    let two = PartialsReader::new(&kafka, &partials_topic, Duration::from_secs(30)).expect("reader");
    common::wait_for("both owners assigned one partition", Duration::from_secs(60), || {
        let _ = (one.poll(Duration::from_millis(50)), two.poll(Duration::from_millis(50)));
        (one.assigned().len() == 1 && two.assigned().len() == 1).then_some(())
    });
    let mine = owned_streams(&streams, &one.assigned(), 2);
    let theirs = owned_streams(&streams, &two.assigned(), 2);
    assert_eq!(mine.len() + theirs.len(), 2, "each stream has exactly one owner: {mine:?} {theirs:?}");
    assert_eq!(mine.len(), 1);

    let consumer = joined_consumer(&bootstrap, &group, &input);
    let metadata = consumer.group_metadata().expect("group metadata");
    let publisher =
        PartialsPublisher::new(&kafka, &partials_topic, "p", Duration::from_secs(30)).expect("publisher");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&input, 0, Offset::Offset(1)).unwrap();
    let published: Vec<Partial> =
        streams.iter().flat_map(|s| (0..3).map(move |pane| partial(s, pane, 0, 2))).collect();
    publisher.publish(&published, &offsets, &metadata).expect("published");

    let read = |reader: &PartialsReader, n: usize| {
        let mut got = Vec::new();
        common::wait_for("an owner's partials", Duration::from_secs(60), || {
            if let Some(p) = reader.poll(Duration::from_millis(100)) {
                got.push(p.expect("a partial"));
            }
            (got.len() >= n).then_some(())
        });
        got
    };
    let got_one = read(&one, 3);
    assert!(got_one.iter().all(|p| p.header.stream == mine[0]), "only its own stream");
    let got_two = read(&two, 3);
    assert!(got_two.iter().all(|p| p.header.stream == theirs[0]), "only its own stream");

    // The first owner leaves without committing: the other takes its partition over and
    // reads its stream's partials from the group's (uncommitted: earliest) offset.
    drop(one);
    common::wait_for("the remaining owner assigned both partitions", Duration::from_secs(90), || {
        let _ = two.poll(Duration::from_millis(100));
        (two.assigned().len() == 2).then_some(())
    });
    // Nothing is committed in the partials group yet, so the rebalance (eager: every
    // partition is revoked and assigned again) has it read its own stream again too.
    let taken = read(&two, 6);
    let of = |s: &str| taken.iter().filter(|p| p.header.stream == s).count();
    assert_eq!((of(mine[0]), of(theirs[0])), (3, 3), "the new owner reads the old owner's stream");
    assert_eq!(owned_streams(&streams, &two.assigned(), 2).len(), 2);
}

/// A transaction whose offsets the broker refuses (the group rebalanced since the
/// publisher took its metadata) is aborted with its partials, and the next one, with
/// the new generation, commits: an abort that did not finish used to refuse every later
/// transaction ("Conflicting abort_transaction API call is already in progress").
#[test]
fn a_transaction_refused_for_an_old_generation_is_aborted_and_the_next_one_commits() {
    let Some(bootstrap) = common::broker() else { return };
    let input = common::unique("scale-input");
    let partials_topic = common::unique("scale-partials");
    let group = common::unique("scale-group");
    common::create_topic(&bootstrap, &input, 2);
    let kafka = KafkaConfig { brokers: bootstrap.clone(), group_id: group.clone(), ..Default::default() };
    ensure_partials_topic(&kafka, &partials_topic, 1).expect("created");

    let first = joined_consumer(&bootstrap, &group, &input);
    let old = first.group_metadata().expect("group metadata");
    // A second member: the group rebalances and `old` names a past generation.
    let second: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    second.subscribe(&[&input]).expect("subscribe");
    common::wait_for("the rebalance to two members", Duration::from_secs(60), || {
        let _ = first.poll(Duration::from_millis(50));
        let _ = second.poll(Duration::from_millis(50));
        let one = |c: &BaseConsumer| c.assignment().ok().is_some_and(|a| a.count() == 1);
        (one(&first) && one(&second)).then_some(())
    });

    let publisher =
        PartialsPublisher::new(&kafka, &partials_topic, "a", Duration::from_secs(30)).expect("publisher");
    let mut offsets = TopicPartitionList::new();
    let mine = first.assignment().expect("assignment");
    let partition = mine.elements()[0].partition();
    offsets.add_partition_offset(&input, partition, Offset::Offset(5)).unwrap();
    // Many partials, so some are still in flight when the offsets are refused.
    let refused: Vec<Partial> = (0..2_000).map(|pane| partial("s", pane, partition, 1)).collect();
    let outcome = publisher.publish(&refused, &offsets, &old);
    assert!(outcome.is_err(), "offsets of a past generation must be refused");

    let current = first.group_metadata().expect("group metadata");
    let published = vec![partial("s", 5_000, partition, 3)];
    publisher.publish(&published, &offsets, &current).expect("the next transaction commits");
    let seen: Vec<Partial> = read_committed(&kafka, &partials_topic, 1).into_iter().map(|(_, p)| p).collect();
    assert_eq!(seen, published, "only the committed transaction's partial, none of the aborted one's");
    let committed = first.committed(Duration::from_secs(30)).expect("committed offsets");
    assert_eq!(committed.find_partition(&input, partition).map(|e| e.offset()), Some(Offset::Offset(5)));
}
