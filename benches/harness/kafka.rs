//! End-to-end on the real broker: produce N messages to a fresh topic, then read them
//! to the end with (a) a bare rdkafka BaseConsumer that drops them, (a2) the same
//! reading in batches the way driftscope does, and (b) the `driftscope run` binary,
//! each in a fresh consumer group.

use super::sys;
use super::workload::WINDOW_RECORDS;
use anyhow::{Context, bail};
use driftscope::config::KafkaConfig;
use driftscope::health::Health;
use driftscope::ingest::kafka::{consumer_config, create_consumer};
use driftscope::ingest::message_queue::{MessageQueue, Messages};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub const PARTITIONS: i32 = 4;

/// Whether a broker answers at `bootstrap`, within a few seconds.
pub fn broker_answers(bootstrap: &str) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "0")
        .create()
        .map_err(|e| e.to_string())?;
    consumer.fetch_metadata(None, Duration::from_secs(8)).map(|_| ()).map_err(|e| e.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", bootstrap).create()?)
}

/// A topic created for this run; deleted again when dropped.
pub struct Topic {
    pub name: String,
    bootstrap: String,
}

impl Topic {
    pub fn create(bootstrap: &str, name: &str) -> anyhow::Result<Topic> {
        Topic::create_with(bootstrap, name, PARTITIONS)
    }

    /// A topic of `partitions` partitions.
    pub fn create_with(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<Topic> {
        let admin = admin(bootstrap)?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = runtime().block_on(
            admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &opts),
        )?;
        for r in results {
            r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
        }
        Ok(Topic { name: name.to_owned(), bootstrap: bootstrap.to_owned() })
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        if let Ok(admin) = admin(&self.bootstrap) {
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            let _ = runtime().block_on(admin.delete_topics(&[&self.name], &opts));
        }
    }
}

/// Produces `n` messages cycling through `pool`, round-robin over the partitions, and
/// checks the topic's high watermarks add up to `n`. Returns the produce time.
pub fn produce(bootstrap: &str, topic: &str, pool: &[Vec<u8>], n: u64) -> anyhow::Result<Duration> {
    produce_with(bootstrap, topic, PARTITIONS, n, |i, payload| {
        payload.extend_from_slice(&pool[(i % pool.len() as u64) as usize]);
    })
}

/// Produces `n` messages, the `i`th written by `fill(i, buffer)` into an empty buffer,
/// round-robin over `partitions`, and checks the topic's high watermarks add up to `n`.
/// Returns the produce time.
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: u64,
    mut fill: impl FnMut(u64, &mut Vec<u8>),
) -> anyhow::Result<Duration> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .context("producer")?;
    let started = Instant::now();
    let mut payload = Vec::with_capacity(1024);
    for i in 0..n {
        payload.clear();
        fill(i, &mut payload);
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(payload.as_slice())
            .partition((i % partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
        if i % 4096 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(300)).context("flush the producer")?;
    let elapsed = started.elapsed();
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(15))?;
        total += high - low;
    }
    if total as u64 != n {
        bail!("the topic holds {total} messages after producing {n}: some deliveries failed");
    }
    Ok(elapsed)
}

/// One consumer's reading of the topic.
#[derive(Clone, Debug)]
pub struct ConsumeResult {
    /// From the consumer's creation (or the process's spawn) to the last message.
    pub total: Duration,
    /// Messages per second from the first window's worth (WINDOW_RECORDS) to the end:
    /// start-up and group join left out.
    pub steady_rate: f64,
    pub cpu_seconds: f64,
    /// CPU-seconds per million messages over the steady phase (driftscope only: from
    /// its first report to its last, so start-up and the group join are left out).
    pub steady_cpu_per_m: Option<f64>,
    /// Peak RSS, KiB (driftscope only).
    pub peak_rss_kib: Option<u64>,
}

fn bench_kafka_config(bootstrap: &str, group: &str, properties: &[(String, String)]) -> KafkaConfig {
    KafkaConfig {
        brokers: bootstrap.to_owned(),
        group_id: group.to_owned(),
        properties: properties.iter().cloned().collect(),
        ..Default::default()
    }
}

/// What a bare consumer counts while it reads: messages, their bytes (so the reads
/// are not optimised away), and when the first window's worth was in.
struct Reading {
    cpu0: f64,
    started: Instant,
    n: u64,
    timeout: Duration,
    count: u64,
    bytes: u64,
    first_window: Option<Instant>,
}

impl Reading {
    /// Before the consumer is made, so start-up is in the totals.
    fn start(n: u64, timeout: Duration) -> Reading {
        Reading {
            cpu0: sys::cpu_seconds("self").unwrap_or(0.0),
            started: Instant::now(),
            n,
            timeout,
            count: 0,
            bytes: 0,
            first_window: None,
        }
    }

    /// Whether all `n` were read; an error once the timeout has passed.
    fn done(&self, who: &str) -> anyhow::Result<bool> {
        if self.count < self.n && self.started.elapsed() > self.timeout {
            bail!("{who}: timed out after {:?} with {} of {} messages", self.timeout, self.count, self.n);
        }
        Ok(self.count >= self.n)
    }

    fn seen(&mut self, len: usize) {
        self.bytes += len as u64;
        self.count += 1;
        if self.count == WINDOW_RECORDS {
            self.first_window = Some(Instant::now());
        }
    }

    /// The figures, taken before the consumer is closed (closing is not reading).
    fn finish(self) -> ConsumeResult {
        let end = Instant::now();
        std::hint::black_box(self.bytes);
        let cpu = sys::cpu_seconds("self").unwrap_or(0.0) - self.cpu0;
        let t0 = self.first_window.unwrap_or(self.started);
        let steady = (self.n - WINDOW_RECORDS.min(self.n)) as f64 / (end - t0).as_secs_f64().max(1e-9);
        ConsumeResult {
            total: end - self.started,
            steady_rate: steady,
            cpu_seconds: cpu,
            steady_cpu_per_m: None,
            peak_rss_kib: None,
        }
    }
}

/// (a) A bare BaseConsumer with driftscope's own consumer settings, fresh group,
/// subscribed to the topic, polling and dropping every message to the end.
pub fn bare_consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    properties: &[(String, String)],
    n: u64,
    timeout: Duration,
) -> anyhow::Result<ConsumeResult> {
    let mut reading = Reading::start(n, timeout);
    let consumer: BaseConsumer =
        consumer_config(&bench_kafka_config(bootstrap, group, properties)).create()?;
    consumer.subscribe(&[topic])?;
    while !reading.done("bare consumer")? {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            reading.seen(m.payload().map_or(0, <[u8]>::len));
        }
    }
    Ok(reading.finish())
}

/// (a2) A bare consumer reading the way driftscope's consumer thread does: assigned
/// partitions forwarded to a queue of its own, read with librdkafka's batch call
/// (`driftscope::ingest::message_queue`), events served by `poll` on the consumer
/// queue; it drops every message. For reference beside (a): what reading alone costs
/// when read as driftscope reads.
pub fn bare_consume_batched(
    bootstrap: &str,
    topic: &str,
    group: &str,
    properties: &[(String, String)],
    n: u64,
    timeout: Duration,
) -> anyhow::Result<ConsumeResult> {
    let mut reading = Reading::start(n, timeout);
    let context = Arc::new(Health::default());
    let consumer = create_consumer(&bench_kafka_config(bootstrap, group, properties), context.clone())?;
    let mut queue = MessageQueue::new(&consumer).context("librdkafka made no message queue")?;
    consumer.subscribe(&[topic])?;
    let mut messages = Messages::default();
    let mut routed = 0u64;
    while !reading.done("bare batched consumer")? {
        loop {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => reading.seen(m.payload().map_or(0, <[u8]>::len)),
                _ if queue.consumer_queue_is_empty() => break,
                _ => {}
            }
        }
        let assignments = context.assignments.load(Ordering::SeqCst);
        if assignments != routed {
            routed = assignments;
            queue.route(&consumer.assignment()?);
            continue;
        }
        queue.consume(Duration::from_millis(100), 1, &mut messages);
        queue.consume(Duration::ZERO, 511, &mut messages);
        for m in messages.iter() {
            reading.seen(m.payload().len());
        }
        messages.clear();
    }
    Ok(reading.finish())
}

/// Counts complete lines appended to a file, reading only what is new.
struct LineCounter {
    path: PathBuf,
    position: u64,
    lines: u64,
}

impl LineCounter {
    fn poll(&mut self) -> u64 {
        if let Ok(mut f) = std::fs::File::open(&self.path)
            && f.seek(SeekFrom::Start(self.position)).is_ok()
        {
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_ok() {
                if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
                    self.lines += buf[..=last].iter().filter(|&&b| b == b'\n').count() as u64;
                    self.position += last as u64 + 1;
                }
            }
        }
        self.lines
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// (b) `driftscope run` with `config`, until its reports file holds n / window reports.
pub fn driftscope_consume(
    binary: &Path,
    config: &Path,
    reports: &Path,
    log: &Path,
    n: u64,
    timeout: Duration,
) -> anyhow::Result<ConsumeResult> {
    let expected = n / WINDOW_RECORDS;
    if expected < 2 {
        bail!("end-to-end needs at least {} messages (two windows)", 2 * WINDOW_RECORDS);
    }
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let pid = child.id().to_string();
    let mut counter = LineCounter { path: reports.to_owned(), position: 0, lines: 0 };
    let mut first: Option<Instant> = None;
    let mut cpu_at_first: Option<f64> = None;
    let result = loop {
        let lines = counter.poll();
        let now = Instant::now();
        if lines >= 1 && first.is_none() {
            first = Some(now);
            cpu_at_first = sys::cpu_seconds(&pid);
        }
        if lines >= expected {
            // Read before stopping it: CPU time and peak RSS of the whole run.
            let cpu = sys::cpu_seconds(&pid).unwrap_or(f64::NAN);
            let hwm = sys::status_kib(&pid, "VmHWM");
            let t1 = first.unwrap_or(started);
            let steady_records = ((expected - 1) * WINDOW_RECORDS) as f64;
            let steady = steady_records / (now - t1).as_secs_f64().max(1e-9);
            break Ok(ConsumeResult {
                total: now - started,
                steady_rate: steady,
                cpu_seconds: cpu,
                steady_cpu_per_m: cpu_at_first.map(|c0| (cpu - c0) * 1e6 / steady_records),
                peak_rss_kib: hwm,
            });
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "driftscope exited ({status}) after {lines} of {expected} reports; log {}:\n{}",
                log.display(),
                log_tail(log)
            ));
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "driftscope: timed out after {timeout:?} with {lines} of {expected} reports; log {}:\n{}",
                log.display(),
                log_tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SIGTERM, bounded wait, then SIGKILL.
    if child.try_wait()?.is_none() {
        sys::signal(child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait()?.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    result
}
