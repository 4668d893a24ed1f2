//! Helpers for tests against the real Kafka broker that `scripts/kafka.sh` starts:
//! topic creation, producing, running the `driftscope` binary, and waiting on
//! conditions with a bound instead of sleeping.
#![allow(dead_code)]

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The broker's address, or `None` when the user opted out of broker tests with
/// `DRIFTSCOPE_SKIP_KAFKA_TESTS=1`. Without the opt-out a missing broker fails loudly.
pub fn broker() -> Option<String> {
    let bootstrap = std::env::var("DRIFTSCOPE_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
    if std::env::var_os("DRIFTSCOPE_SKIP_KAFKA_TESTS").is_some() {
        eprintln!("DRIFTSCOPE_SKIP_KAFKA_TESTS is set: skipping a test that needs the Kafka broker");
        return None;
    }
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("kafka client");
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(15)) {
        panic!(
            "no Kafka broker at {bootstrap} ({e}). Start one with `scripts/kafka.sh start` \
             (scripts/test.sh does), or set DRIFTSCOPE_SKIP_KAFKA_TESTS=1 to skip these tests"
        );
    }
    Some(bootstrap)
}

/// A topic name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

pub fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer")
}

/// Produces payloads in order to one partition and waits until all are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, partition: i32, payloads: &[Vec<u8>]) {
    let p = producer(bootstrap);
    for payload in payloads {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(payload).partition(partition);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    p.poll(Duration::from_millis(50));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("all messages acknowledged");
}

/// Polls `check` until it returns `Some`, failing after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A running `driftscope` process; killed if the test panics.
pub struct Driftscope {
    pub child: Child,
    pub log: PathBuf,
}

impl Driftscope {
    pub fn start(args: &[&str], dir: &Path) -> Driftscope {
        let log = dir.join(format!("driftscope-{}.log", unique("run")));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_driftscope"))
            .args(args)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start driftscope");
        Driftscope { child, log }
    }

    /// SIGTERM, then the exit status (bounded wait).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc_kill(pid, 15) };
        let status =
            wait_for("driftscope to exit", Duration::from_secs(60), || self.child.try_wait().unwrap());
        std::mem::forget(self);
        status
    }

    /// Waits until the reports file holds at least `n` reports; fails at once if the
    /// process exits.
    pub fn wait_reports(&mut self, path: &Path, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        wait_for(&format!("{n} window reports"), timeout, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("driftscope exited early ({status}):\n{}", self.log_text());
            }
            let reports = read_reports(path);
            (reports.len() >= n).then_some(reports)
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driftscope {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- driftscope log tail ({}) ---", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Reports appended so far to a reports file (JSON Lines).
pub fn read_reports(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("report line"))
        .collect()
}

/// Windows of a reports file, first partition: (index, records, first offset, last offset).
pub fn report_windows(reports: &Path) -> Vec<(u64, u64, i64, i64)> {
    read_reports(reports)
        .iter()
        .map(|r| {
            let w = &r["window"];
            (
                w["index"].as_u64().unwrap(),
                w["records"].as_u64().unwrap(),
                w["offsets"][0]["first"].as_i64().unwrap(),
                w["offsets"][0]["last"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Asserts that each partition's window spans (offset ranges `(first, last)` taken from
/// reports) start at offset 0 and follow each other without gap or overlap; returns
/// each partition's last covered offset.
pub fn assert_contiguous_spans(
    mut spans: std::collections::BTreeMap<i64, Vec<(i64, i64)>>,
) -> std::collections::BTreeMap<i64, i64> {
    let mut last_covered = std::collections::BTreeMap::new();
    for (partition, list) in &mut spans {
        list.sort();
        assert_eq!(list[0].0, 0, "partition {partition} starts at offset 0: {list:?}");
        for pair in list.windows(2) {
            assert_eq!(
                pair[1].0,
                pair[0].1 + 1,
                "partition {partition}: spans overlap or leave a gap: {list:?}"
            );
        }
        last_covered.insert(*partition, list[list.len() - 1].1);
    }
    last_covered
}

/// A plain HTTP/1.1 request over a fresh connection: (status, body).
pub fn http(method: &str, addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to driftscope http");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    let chunked = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&body) } else { body })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// The address the HTTP server logged that it listens on.
pub fn http_address(run: &Driftscope) -> String {
    wait_for("the http server address in the log", Duration::from_secs(60), || {
        let log = run.log_text();
        let line = log.lines().find(|l| l.contains("http server listening"))?;
        let start = line.find("address=")? + "address=".len();
        Some(line[start..].split_whitespace().next()?.to_owned())
    })
}

/// A webhook receiver on loopback that answers 204 to every POST and keeps each
/// delivery's `webhook-id` header and body, in arrival order.
pub struct WebhookSink {
    pub url: String,
    pub deliveries: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let deliveries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = deliveries.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    loop {
                        let (mut id, mut length) = (String::new(), 0usize);
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = line.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':') {
                                match name.trim().to_ascii_lowercase().as_str() {
                                    "webhook-id" => id = value.trim().to_owned(),
                                    "content-length" => length = value.trim().parse().unwrap_or(0),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        kept.lock().unwrap().push((id, String::from_utf8_lossy(&body).into_owned()));
                        let reply = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
                        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WebhookSink { url, deliveries }
    }

    pub fn ids(&self) -> Vec<String> {
        self.deliveries.lock().unwrap().iter().map(|(id, _)| id.clone()).collect()
    }
}

/// SIGKILL: no chance to flush, checkpoint or commit anything.
pub fn kill_hard(mut run: Driftscope) {
    let _ = run.child.kill();
    let _ = run.child.wait();
    std::mem::forget(run);
}

/// Writes `csv` to `dir/train.csv` and profiles it with `driftscope reference build`;
/// returns the profile's path.
pub fn build_profile(dir: &Path, csv: &str) -> PathBuf {
    let data = dir.join("train.csv");
    std::fs::write(&data, csv).unwrap();
    let profile = dir.join("reference.profile");
    let status = Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["reference", "build", "--input"])
        .arg(&data)
        .arg("--output")
        .arg(&profile)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "reference build");
    profile
}

/// A `[[streams]]` table: JSON stream `name` on `topic`, fields `x` (numeric) and `c`
/// (categorical); `window` and `reference` are TOML inline tables.
pub fn xc_stream_toml(name: &str, topic: &str, window: &str, reference: &str) -> String {
    format!(
        "\n[[streams]]\nname = \"{name}\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nwindow = {window}\n\
         reference = {reference}\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
         [[streams.fields]]\nname = \"c\"\nkind = \"categorical\"\n"
    )
}

/// A broker instance of this test's own, managed through `scripts/kafka.sh`; wiped (data
/// dir and recorded ports) when dropped.
pub struct OwnBroker {
    pub instance: String,
    pub bootstrap: String,
    /// `DRIFTSCOPE_KAFKA_EXTRA_PROPS` for every start of this instance.
    extra_props: String,
}

impl OwnBroker {
    /// Starts a fresh instance named `NAME-<pid>`, with `extra_props` (server.properties
    /// lines, newline separated) added to the script's defaults.
    pub fn start(name: &str, extra_props: &str) -> OwnBroker {
        let mut broker = OwnBroker {
            instance: format!("{name}-{}", std::process::id()),
            bootstrap: String::new(),
            extra_props: extra_props.to_owned(),
        };
        // A leftover from an earlier run with the same pid would hold stale topics.
        broker.script(&["clean"]);
        broker.bootstrap = broker.start_again();
        broker
    }

    /// `scripts/kafka.sh ARGS` for this instance.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"));
        command
            .args(args)
            .env("DRIFTSCOPE_KAFKA_INSTANCE", &self.instance)
            .env("DRIFTSCOPE_KAFKA_EXTRA_PROPS", &self.extra_props)
            // Settings meant for the main broker must not leak into this instance.
            .env_remove("DRIFTSCOPE_KAFKA_DATA")
            .env_remove("DRIFTSCOPE_KAFKA_PORT")
            .env_remove("DRIFTSCOPE_KAFKA_SASL_PORT")
            .env_remove("DRIFTSCOPE_KAFKA_CONTROLLER_PORT");
        command
    }

    /// Runs `scripts/kafka.sh ARGS` for this instance; fails the test if it fails.
    pub fn script(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("run scripts/kafka.sh");
        assert!(
            output.status.success(),
            "`DRIFTSCOPE_KAFKA_INSTANCE={} scripts/kafka.sh {}` failed ({}):\n{}{}",
            self.instance,
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        output
    }

    /// Starts (or restarts, keeping its data) the broker; returns its bootstrap address.
    pub fn start_again(&self) -> String {
        let out = self.script(&["start"]);
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!bootstrap.is_empty(), "kafka.sh start printed no bootstrap address");
        if !self.bootstrap.is_empty() {
            assert_eq!(bootstrap, self.bootstrap, "a restarted instance keeps its address");
        }
        bootstrap
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.script_quiet(&["logs", "40"]);
            eprintln!("--- broker log tail (instance {}) ---\n{log}", self.instance);
        }
        self.script_quiet(&["clean"]);
    }
}

impl OwnBroker {
    /// Like `script`, but never panics (for `Drop`): returns stdout and stderr.
    pub fn script_quiet(&self, args: &[&str]) -> String {
        match self.command(args).output() {
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("cannot run kafka.sh: {e}"),
        }
    }
}
