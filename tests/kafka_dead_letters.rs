//! Dead letters against a real broker: a copy is counted in
//! `driftscope_dead_lettered_total` only once the broker acknowledged it, and every
//! copy that did not arrive is counted in `driftscope_dead_letter_failures_total` by
//! reason. In every case the metric equals what a consumer reads from the topic.
//!
//! Oversize copies, and copies sent just before a stop with a long `linger.ms`, run
//! against the shared broker; the unauthorized and broker-down cases against an
//! instance of this test's own, started with an authorizer (StandardAuthorizer;
//! everyone allowed where no ACL exists, so only the ACL this test adds denies
//! anything) and killed for the broker-down case. The same instance serves
//! the shutdown cases: copies still pending when driftscope stops are flushed, or, with
//! the broker gone, counted as `timeout` and logged once.

mod common;

use common::*;
use driftscope::config::KafkaConfig;
use driftscope::ingest::dead_letters::{DLQ_SOURCE_HEADER, DLQ_TRUNCATED_HEADER, DeadLetters};
use driftscope::telemetry::{DEAD_LETTER_FAILURE_REASONS, Telemetry};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A topic with broker-side settings (e.g. a small `max.message.bytes`).
fn create_topic_with(bootstrap: &str, topic: &str, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    for (key, value) in settings {
        new = new.set(key, value);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let results = rt
        .block_on(
            admin
                .create_topics(&[new], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))),
        )
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// One dead letter as read back from the topic.
struct Letter {
    payload_len: usize,
    source: String,
    truncated: Option<usize>,
}

/// Everything on the dead-letter topic: reads up to its end offset, so the count is
/// exactly what the topic holds.
fn read_topic(bootstrap: &str, topic: &str) -> Vec<Letter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(30)).expect("watermarks");
    assert_eq!(low, 0);
    let mut letters = Vec::new();
    if high == 0 {
        return letters;
    }
    consumer.subscribe(&[topic]).unwrap();
    wait_for(&format!("{high} records on {topic}"), Duration::from_secs(60), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            letters.push(Letter {
                payload_len: m.payload().map_or(0, <[u8]>::len),
                source: header(DLQ_SOURCE_HEADER).expect("a source header"),
                truncated: header(DLQ_TRUNCATED_HEADER).map(|v| v.parse().expect("a length")),
            });
        }
        (letters.len() as i64 >= high).then_some(())
    });
    letters
}

/// The value of the series `name` with all of `labels` (`key="value"`) in a Prometheus
/// text exposition (0 when absent).
fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Dead-letter counters of stream `features` as served on /metrics.
#[derive(Debug, PartialEq, Eq)]
struct Counted {
    delivered: u64,
    /// In the order of `DEAD_LETTER_FAILURE_REASONS`.
    failed: [u64; 4],
}

impl Counted {
    fn scrape(addr: &str) -> Counted {
        let (status, text) = http("GET", addr, "/metrics", None);
        assert_eq!(status, 200);
        Counted {
            delivered: metric(&text, "driftscope_dead_lettered_total", &["stream=\"features\""]),
            failed: DEAD_LETTER_FAILURE_REASONS.map(|reason| {
                metric(
                    &text,
                    "driftscope_dead_letter_failures_total",
                    &["stream=\"features\"", &format!("reason=\"{reason}\"")],
                )
            }),
        }
    }

    fn settled(&self) -> u64 {
        self.delivered + self.failed.iter().sum::<u64>()
    }

    fn failed(&self, reason: &str) -> u64 {
        self.failed[DEAD_LETTER_FAILURE_REASONS.iter().position(|r| *r == reason).unwrap()]
    }
}

/// A config for one JSON stream `features` on `topic`, reference from its first 100
/// records; `extra_kafka` goes into `[kafka]`.
fn write_config(dir: &Path, brokers: &str, topic: &str, extra_kafka: &str) -> PathBuf {
    let path = dir.join(format!("{}.toml", unique("config")));
    let text = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
{extra_kafka}

[state]
dir = "{state}"

[http]
listen = "127.0.0.1:0"

[[streams]]
name = "features"
topics = ["{topic}"]
format = "json"
window = {{ type = "tumbling_count", size = 100 }}
reference = {{ from_stream = 100 }}
[[streams.fields]]
name = "x"
kind = "numeric"
"#,
        group = unique("g"),
        state = dir.join(unique("state")).display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn good(i: usize) -> Vec<u8> {
    format!(r#"{{"x": {}}}"#, i % 10).into_bytes()
}

/// A JSON object of exactly `len` bytes, bad only for its size.
fn padded(len: usize) -> Vec<u8> {
    let mut p = br#"{"x": 1, "pad": ""#.to_vec();
    p.resize(len - 2, b'p');
    p.extend_from_slice(b"\"}");
    p
}

/// Runs driftscope over `payloads` (produced to a fresh topic on `bootstrap`) until
/// `bad` dead letters are settled (acknowledged or failed); returns the counts and the
/// source topic.
fn run_until_settled(
    bootstrap: &str,
    brokers: &str,
    extra_kafka: &str,
    payloads: &[Vec<u8>],
    bad: u64,
) -> (Counted, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("dl-in");
    create_topic(bootstrap, &topic, 1);
    produce(bootstrap, &topic, 0, payloads);
    let config = write_config(dir.path(), brokers, &topic, extra_kafka);
    let run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let addr = http_address(&run);
    let counted = wait_for(&format!("{bad} dead letters settled"), Duration::from_secs(120), || {
        let c = Counted::scrape(&addr);
        assert!(c.settled() <= bad, "more dead letters than bad records: {c:?}");
        (c.settled() == bad).then_some(c)
    });
    eprintln!("dead letters settled: {counted:?} (failed: {DEAD_LETTER_FAILURE_REASONS:?})");
    let log_path = run.log.clone();
    assert!(run.terminate().success());
    // Nothing was left to purge at shutdown: every copy had settled.
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains("not acknowledged within the shutdown bound"), "{log}");
    (counted, topic, log)
}

#[test]
fn oversize_records_are_dead_lettered_as_truncated_copies() {
    let Some(bootstrap) = broker() else { return };
    let dlq = unique("dlq-oversize");
    create_topic_with(&bootstrap, &dlq, &[("max.message.bytes", "65536")]);
    let mut payloads: Vec<Vec<u8>> = (0..100).map(good).collect();
    // (offset, length): over kafka.max_message_bytes (8 KiB); up to 32 KiB they are copied
    // whole, beyond it cut to 32 KiB, which the topic (64 KiB) takes.
    let oversize = [20_000, 100_000, 30_000, 2 << 20, 300_000, 32_768];
    let mut expected = Vec::new();
    for (i, &len) in oversize.iter().enumerate() {
        expected.push((payloads.len(), len));
        payloads.push(padded(len));
        payloads.extend((0..10).map(|j| good(i + j)));
    }
    payloads.push(b"{\"x\": 1,".to_vec());
    payloads.extend((0..50).map(good));
    let (counted, topic, _) = run_until_settled(
        &bootstrap,
        &bootstrap,
        &format!("dead_letter_topic = \"{dlq}\"\nmax_message_bytes = 8192\ndead_letter_max_bytes = 32768"),
        &payloads,
        oversize.len() as u64 + 1,
    );
    assert_eq!(counted, Counted { delivered: 7, failed: [0; 4] });
    let letters = read_topic(&bootstrap, &dlq);
    assert_eq!(letters.len() as u64, counted.delivered, "the metric equals what the topic holds");
    for (offset, len) in expected {
        let letter = letters
            .iter()
            .find(|l| l.source == format!("{topic}/0/{offset}"))
            .unwrap_or_else(|| panic!("no dead letter points at offset {offset}"));
        if len > 32_768 {
            assert_eq!(letter.truncated, Some(len), "offset {offset}");
            assert_eq!(letter.payload_len, 32_768, "offset {offset}");
        } else {
            assert_eq!(letter.truncated, None, "offset {offset}");
            assert_eq!(letter.payload_len, len, "offset {offset}");
        }
    }
}

#[test]
fn copies_the_broker_refuses_as_too_large_are_counted_not_delivered() {
    let Some(bootstrap) = broker() else { return };
    let dlq = unique("dlq-small");
    // Smaller than a full copy (dead_letter_max_bytes = 32 KiB): the broker refuses
    // the larger copies itself.
    create_topic_with(&bootstrap, &dlq, &[("max.message.bytes", "16384")]);
    let mut payloads: Vec<Vec<u8>> = (0..100).map(good).collect();
    let refused = [20_000, 100_000, 25_000];
    for &len in &refused {
        payloads.push(padded(len));
        payloads.extend((0..10).map(good));
    }
    payloads.push(b"[1]".to_vec());
    payloads.extend((0..20).map(good));
    let (counted, _, log) = run_until_settled(
        &bootstrap,
        &bootstrap,
        &format!("dead_letter_topic = \"{dlq}\"\nmax_message_bytes = 8192\ndead_letter_max_bytes = 32768"),
        &payloads,
        refused.len() as u64 + 1,
    );
    // A small copy sent in one batch with a refused one is refused with it.
    assert!(counted.failed("too_large") >= refused.len() as u64, "{counted:?}");
    assert_eq!(counted.failed("timeout") + counted.failed("unauthorized") + counted.failed("other"), 0);
    assert_eq!(read_topic(&bootstrap, &dlq).len() as u64, counted.delivered, "the metric equals the topic");
    assert!(log.contains("bad record not dead-lettered") && log.contains("too_large"), "{log}");
}

/// Copies sent just before the stop, to a topic the producer has not written to yet,
/// with a `linger.ms` far past the bound: the stop's flush sends them at once. (A
/// flush that held librdkafka's "flushing" flag only for an instant lost the race
/// with the broker thread on a busy machine, and the copies waited out the linger.)
#[test]
fn copies_sent_just_before_the_stop_are_flushed_despite_a_long_linger() {
    let Some(bootstrap) = broker() else { return };
    let telemetry = Telemetry::new();
    let counters = telemetry.dead_letter_counters("features");
    let mut kafka = KafkaConfig { brokers: bootstrap.clone(), ..KafkaConfig::default() };
    kafka.properties.insert("linger.ms".into(), "60000".into());
    const STOPS: u64 = 8;
    for stop in 0..STOPS {
        let dlq = unique("dlq-linger");
        create_topic(&bootstrap, &dlq, 1);
        let letters = DeadLetters::new(&kafka, &dlq).unwrap();
        for offset in 0..3 {
            letters.send(&counters, None, b"{", "malformed_json", "in", 0, offset);
        }
        letters.close(Duration::from_secs(20));
        assert_eq!(counters.failed("timeout"), 0, "stop {stop}: copies timed out");
        assert_eq!(counters.delivered.get(), 3 * (stop + 1), "stop {stop}");
        assert_eq!(read_topic(&bootstrap, &dlq).len(), 3, "stop {stop}: the metric equals the topic");
    }
}

#[test]
fn unauthorized_broker_down_and_shutdown_copies_are_counted() {
    if broker().is_none() {
        return;
    }
    let own = OwnBroker::start(
        "dead-letters",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
         allow.everyone.if.no.acl.found=true\n\
         super.users=User:ANONYMOUS",
    );
    let plain = own.bootstrap.clone();
    let sasl = String::from_utf8_lossy(&own.script(&["bootstrap", "--sasl"]).stdout).trim().to_owned();

    // Unauthorized: driftscope reads as the SASL user `driftscope`, which an ACL denies
    // everything on the dead-letter topic (and nothing else).
    let dlq = unique("dlq-denied");
    create_topic(&plain, &dlq, 1);
    own.script(&[
        "run-class",
        "org.apache.kafka.tools.AclCommand",
        "--bootstrap-server",
        &plain,
        "--add",
        "--deny-principal",
        "User:driftscope",
        "--operation",
        "All",
        "--topic",
        &dlq,
    ]);
    let mut payloads: Vec<Vec<u8>> = (0..100).map(good).collect();
    for _ in 0..5 {
        payloads.push(b"\"a bare string\"".to_vec());
        payloads.extend((0..5).map(good));
    }
    let sasl_settings = format!(
        "dead_letter_topic = \"{dlq}\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"driftscope\"\n\"sasl.password\" = \"driftscope-secret\"\n"
    );
    let (counted, topic, log) = run_until_settled(&plain, &sasl, &sasl_settings, &payloads, 5);
    assert_eq!(counted, Counted { delivered: 0, failed: [0, 0, 5, 0] });
    assert_eq!(read_topic(&plain, &dlq).len(), 0, "the metric equals the topic");
    let warned = log
        .lines()
        .find(|l| l.contains("bad record not dead-lettered"))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert!(
        warned.contains("unauthorized") && warned.contains(&topic) && warned.contains("offset=100"),
        "{warned}"
    );

    // Broker down: the producer itself, so copies can be sent while the broker is away.
    let dlq = unique("dlq-down");
    create_topic(&plain, &dlq, 1);
    let telemetry = Telemetry::new();
    let counters = telemetry.dead_letter_counters("features");
    let mut kafka = KafkaConfig { brokers: plain.clone(), ..KafkaConfig::default() };
    kafka.properties.insert("message.timeout.ms".into(), "3000".into());
    let letters = DeadLetters::new(&kafka, &dlq).unwrap();
    let send = |offsets: std::ops::Range<i64>| {
        for offset in offsets {
            letters.send(&counters, None, b"{", "malformed_json", "in", 0, offset);
        }
    };
    send(0..4);
    wait_for("4 acknowledged", Duration::from_secs(60), || (counters.delivered.get() == 4).then_some(()));
    own.script(&["kill"]);
    send(10..13);
    // message.timeout.ms runs out while the broker is away.
    wait_for("3 timed out", Duration::from_secs(60), || (counters.failed("timeout") == 3).then_some(()));
    send(20..22);
    assert_eq!(letters.pending(), 2);
    // Shutdown: what is still pending after the bound is counted as timed out.
    letters.close(Duration::from_millis(500));
    assert_eq!(counters.delivered.get(), 4);
    assert_eq!(counters.failed("timeout"), 5);
    for reason in ["too_large", "unauthorized", "other"] {
        assert_eq!(counters.failed(reason), 0, "{reason}");
    }
    own.start_again();
    let read = read_topic(&plain, &dlq);
    assert_eq!(read.len() as u64, counters.delivered.get(), "the metric equals the topic");
    let sources: Vec<&str> = read.iter().map(|l| l.source.as_str()).collect();
    assert_eq!(sources, ["in/0/0", "in/0/1", "in/0/2", "in/0/3"]);

    // Shutdown: copies held back by a long linger.ms are still pending when driftscope
    // stops. With the broker up they are flushed on the way out ...
    let (dlq, log) = stop_with_pending_copies(&own, &plain, false);
    assert!(!log.contains("not acknowledged within the shutdown bound"), "{log}");
    assert_eq!(read_topic(&plain, &dlq).len(), 3, "flushed at shutdown");
    // ... with the broker gone they are counted as timed out and logged once.
    let (dlq, log) = stop_with_pending_copies(&own, &plain, true);
    let lines: Vec<&str> =
        log.lines().filter(|l| l.contains("not acknowledged within the shutdown bound")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("undelivered=3"), "{}", lines[0]);
    own.start_again();
    assert_eq!(read_topic(&plain, &dlq).len(), 0);
}

/// Runs driftscope until it has read three bad records whose copies wait in the
/// producer (linger.ms = 60 s), checks they are not counted yet, optionally kills the
/// broker, stops driftscope and returns the dead-letter topic and driftscope's log.
/// (With the broker gone, the consumer's last commit waits out the group session: a
/// short one keeps the test short.)
fn stop_with_pending_copies(own: &OwnBroker, plain: &str, kill_broker: bool) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let dlq = unique("dlq-shutdown");
    create_topic(plain, &dlq, 1);
    let topic = unique("dl-in");
    create_topic(plain, &topic, 1);
    let mut payloads: Vec<Vec<u8>> = (0..100).map(good).collect();
    payloads.extend([b"{".to_vec(), b"{\"x\":".to_vec(), b"{]".to_vec()]);
    produce(plain, &topic, 0, &payloads);
    let config = write_config(
        dir.path(),
        plain,
        &topic,
        &format!(
            "dead_letter_topic = \"{dlq}\"\n[kafka.properties]\n\"linger.ms\" = \"60000\"\n\"session.timeout.ms\" = \"6000\"\n"
        ),
    );
    let run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let addr = http_address(&run);
    wait_for("3 bad records read", Duration::from_secs(60), || {
        let (_, text) = http("GET", &addr, "/metrics", None);
        let invalid = metric(
            &text,
            "driftscope_records_invalid_total",
            &["stream=\"features\"", "reason=\"malformed_json\""],
        );
        (invalid == 3).then_some(())
    });
    assert_eq!(Counted::scrape(&addr).settled(), 0, "the copies wait in the producer");
    if kill_broker {
        own.script(&["kill"]);
    }
    let log_path = run.log.clone();
    let stopping = std::time::Instant::now();
    assert!(run.terminate().success());
    eprintln!("stopped with 3 copies pending (broker killed: {kill_broker}) in {:?}", stopping.elapsed());
    (dlq, std::fs::read_to_string(log_path).unwrap())
}
