//! Retraining triggers end to end: scripted window sequences into a `TriggerEngine`,
//! deliveries to local HTTP receivers on 127.0.0.1 (a tiny HTTP/1.1 responder that
//! replays a script of answers, verifies every webhook signature and records what it
//! accepted), restarts on the same state dir, and a Kafka trigger when
//! `DRIFTSCOPE_KAFKA_BOOTSTRAP` names a broker. Waits are bounded awaits on the
//! receiver's channel or the handle's change notifications, never sleeps.

use driftscope::config::KafkaConfig;
use driftscope::outputs::triggers::condition::Episode;
use driftscope::outputs::triggers::signing::WebhookKey;
use driftscope::outputs::triggers::{
    RetryError, Status, TriggerConfig, TriggerEngine, TriggerHandle, TriggerView, validate,
};
use driftscope::secret::Secret;
use driftscope::stats::report::{
    DatasetVerdict, FeatureReport, OffsetRange, ReferenceInfo, Report, Status as FeatureStatus, WindowInfo,
};
use driftscope::stats::settings::{FeatureKind, Metric};
use driftscope::telemetry::Telemetry;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Bound of every wait; generous for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// A scripted HTTP/1.1 receiver.

/// One answer of the receiver's script.
#[derive(Clone, Debug)]
enum Reply {
    /// Answer with this status, extra headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Read the request and never answer (the client times out).
    Hang,
    /// Answer with this status and a body echoing the request's credentials and body,
    /// as careless receivers do.
    Echo(u16),
}

fn ok() -> Reply {
    Reply::Status(200, vec![], String::new())
}

fn status(code: u16) -> Reply {
    Reply::Status(code, vec![], String::new())
}

/// A request the receiver read, and the status it answered (0 for none).
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    answered: u16,
    /// For webhook requests: whether the Standard Webhooks signature verified.
    signature_ok: Option<bool>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

struct Script {
    queue: VecDeque<Reply>,
    default: Reply,
}

struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    rx: mpsc::UnboundedReceiver<Received>,
    /// Webhook ids answered with 2xx, with how many times each.
    accepted: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Receiver {
    async fn start(script: Vec<Reply>, default: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener, script, default)
    }

    fn serve(listener: TcpListener, script: Vec<Reply>, default: Reply) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script { queue: script.into(), default }));
        let accepted = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, rx) = mpsc::unbounded_channel();
        let (s, a) = (script.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (s, a, tx) = (s.clone(), a.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = handle_connection(socket, s, a, tx).await;
                });
            }
        });
        Receiver { addr, script, rx, accepted }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set_default(&self, reply: Reply) {
        self.script.lock().unwrap().default = reply;
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(BOUND, self.rx.recv())
            .await
            .expect("receiver got no request in time")
            .expect("receiver stopped")
    }

    fn accepted(&self) -> BTreeMap<String, u32> {
        self.accepted.lock().unwrap().clone()
    }
}

async fn handle_connection(
    mut socket: TcpStream,
    script: Arc<Mutex<Script>>,
    accepted: Arc<Mutex<BTreeMap<String, u32>>>,
    tx: mpsc::UnboundedSender<Received>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let path = request_line.next().unwrap_or("").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let signature_ok = headers.get("webhook-signature").map(|sig| {
        let key = WebhookKey::from_secret(&Secret::new(SECRET)).unwrap();
        let id = headers.get("webhook-id").cloned().unwrap_or_default();
        let ts: i64 = headers.get("webhook-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
        key.verify(&id, ts, &body, sig)
    });
    let reply = {
        let mut s = script.lock().unwrap();
        s.queue.pop_front().unwrap_or_else(|| s.default.clone())
    };
    let mut received = Received { method, path, headers, body, answered: 0, signature_ok };
    let reply = match reply {
        Reply::Echo(code) => {
            let echo = format!(
                "you sent: {} {}",
                received.header("authorization"),
                String::from_utf8_lossy(&received.body)
            );
            Reply::Status(code, vec![], echo)
        }
        other => other,
    };
    match reply {
        Reply::Echo(_) => unreachable!(),
        Reply::Hang => {
            let _ = tx.send(received);
            // Hold the connection open without answering until the client gives up.
            let _ = socket.read(&mut chunk).await;
            Ok(())
        }
        Reply::Status(code, extra, text) => {
            received.answered = code;
            if (200..300).contains(&code) {
                let id = received.header("webhook-id").to_owned();
                let id = if id.is_empty() { body_trigger_id(&received) } else { id };
                *accepted.lock().unwrap().entry(id).or_default() += 1;
            }
            let mut response = format!(
                "HTTP/1.1 {code} Scripted\r\nconnection: close\r\ncontent-length: {}\r\n",
                text.len()
            );
            for (k, v) in extra {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&text);
            let _ = tx.send(received);
            socket.write_all(response.as_bytes()).await?;
            socket.shutdown().await
        }
    }
}

/// The trigger id inside a GitHub or GitLab request body.
fn body_trigger_id(r: &Received) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
        return v["client_payload"]["trigger_id"].as_str().unwrap_or_default().to_owned();
    }
    form(r).get("variables[DRIFTSCOPE_TRIGGER_ID]").cloned().unwrap_or_default()
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn form(r: &Received) -> HashMap<String, String> {
    let url = format!("http://x/?{}", String::from_utf8_lossy(&r.body));
    reqwest::Url::parse(&url)
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Reports, configs and waiting.

fn at(minutes: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + minutes * 60)
}

/// A report of `stream`'s window `index`, ending at minute `minute`, with feature `a`
/// drifted (and the dataset) or not.
fn report(stream: &str, index: u64, minute: u64, drifted: bool) -> Report {
    let feature = |name: &str, drifted: bool, psi: f64| FeatureReport {
        name: name.into(),
        kind: FeatureKind::Numeric,
        samples: 500,
        missing: 0,
        non_finite: 0,
        invalid: 0,
        missing_share: 0.0,
        reference_missing_share: 0.0,
        missing_drifted: false,
        status: FeatureStatus::Ok,
        primary_metric: Metric::Psi,
        threshold: 0.2,
        drifted,
        rule: driftscope::stats::Rule::Threshold,
        p_value: None,
        effect: None,
        min_effect: None,
        alpha: None,
        decided_by: None,
        sequential: None,
        category_overflow: None,
        scores: [("psi".to_owned(), psi)].into_iter().collect(),
    };
    Report {
        stream: Some(stream.into()),
        window: WindowInfo {
            start: humantime::format_rfc3339_millis(at(minute.saturating_sub(1))).to_string(),
            end: humantime::format_rfc3339_millis(at(minute)).to_string(),
            records: 500,
            index,
            offsets: vec![OffsetRange {
                topic: format!("{stream}-topic"),
                partition: 0,
                first: index as i64 * 500,
                last: index as i64 * 500 + 499,
            }],
            late_records: 0,
        },
        reference: ReferenceInfo::default(),
        dataset: DatasetVerdict {
            features_evaluated: 2,
            features_drifted: u64::from(drifted),
            drift_share: if drifted { 0.5 } else { 0.0 },
            threshold: 0.5,
            drifted,
        },
        features: vec![feature("a", drifted, if drifted { 0.42 } else { 0.01 }), feature("b", false, 0.02)],
        notes: vec![],
        performance: None,
        schema_changes: Vec::new(),
    }
}

fn parse(toml_text: &str) -> Vec<TriggerConfig> {
    logs();
    #[derive(serde::Deserialize)]
    struct Root {
        triggers: Vec<TriggerConfig>,
    }
    let root: Root = toml::from_str(toml_text).expect("trigger config");
    validate(&root.triggers, &["payments".into(), "clicks".into()]).expect("valid config");
    root.triggers
}

/// A webhook trigger on dataset drift that fires on the first drifted window, with
/// fast retries.
fn webhook(name: &str, url: &str, extra_delivery: &str) -> String {
    let timeout = if extra_delivery.contains("timeout") { "" } else { r#", timeout = "2s""# };
    format!(
        r#"
[[triggers]]
name = "{name}"
kind = {{ type = "webhook", url = "{url}", secret = "{SECRET}" }}
condition = {{ dataset_drift = true, consecutive_windows = 1, cooldown = "1h" }}
delivery = {{ initial_backoff = "10ms", max_backoff = "50ms"{timeout}{extra_delivery} }}
"#
    )
}

fn open(configs: &[TriggerConfig], dir: &Path) -> (TriggerEngine, TriggerHandle, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::new());
    let (engine, handle) = TriggerEngine::open(configs, dir, None, telemetry.clone()).expect("open");
    (engine, handle, telemetry)
}

/// Feeds one window a minute (`D` drifted, `.` clean) after `minute`, on the windows'
/// own clock; returns the minutes whose window fired.
fn feed(engine: &mut TriggerEngine, minute: &mut u64, script: &str) -> Vec<u64> {
    let mut fired = Vec::new();
    for c in script.chars() {
        *minute += 1;
        let r = report("payments", *minute, *minute, c == 'D');
        if !engine.on_report(&r).expect("on_report").is_empty() {
            fired.push(*minute);
        }
    }
    fired
}

/// Awaits `cond` on the handle, re-checking on every change, within [`BOUND`].
async fn wait_until(handle: &TriggerHandle, what: &str, cond: impl Fn(&TriggerHandle) -> bool) {
    let mut changes = handle.changes();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if cond(handle) {
            return;
        }
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            panic!("timed out waiting for {what}: {:#?}", handle.list());
        }
    }
}

fn status_of(handle: &TriggerHandle, id: &str) -> Option<Status> {
    handle.get(id).map(|v| v.status)
}

fn count(t: &Telemetry, trigger: &str, outcome: &str) -> u64 {
    t.triggers.with_label_values(&[trigger, outcome]).get()
}

/// Fires one trigger event by feeding a drifted window; returns its id.
fn fire(engine: &mut TriggerEngine, stream: &str, index: u64, minute: u64) -> String {
    let ids = engine.on_report_at(&report(stream, index, minute, true), at(minute)).expect("on_report");
    assert_eq!(ids.len(), 1, "expected one trigger to fire");
    ids[0].clone()
}

// ---------------------------------------------------------------------------------
// Kinds.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_and_carries_the_evidence() {
    let mut rx = Receiver::start(vec![], ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&webhook("retrain", &rx.url("/hook"), ""));
    let (mut engine, handle, telemetry) = open(&configs, dir.path());
    let id = fire(&mut engine, "payments", 7, 10);
    assert_eq!(telemetry.trigger_queue_depth.get(), 1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = handle.spawn_delivery(async move {
        let _ = stopped.await;
    });

    let r = rx.next().await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("webhook-id"), id);
    let ts: i64 = r.header("webhook-timestamp").parse().expect("unix seconds");
    assert!(ts > 1_600_000_000);
    assert!(r.header("webhook-signature").starts_with("v1,"));
    assert_eq!(r.signature_ok, Some(true), "signature verifies");

    let body = r.json();
    assert_eq!(body["type"], "drift.detected");
    assert!(humantime::parse_rfc3339_weak(body["timestamp"].as_str().unwrap()).is_ok());
    let data = &body["data"];
    assert_eq!(data["trigger_id"], id.as_str());
    assert!(id.starts_with("retrain-payments-7-"), "{id}");
    assert_eq!(data["trigger"], "retrain");
    assert_eq!(data["stream"], "payments");
    assert_eq!(data["window"]["index"], 7);
    assert_eq!(data["window"]["end"], humantime::format_rfc3339_millis(at(10)).to_string());
    assert_eq!(
        data["window"]["offsets"][0],
        serde_json::json!({"topic": "payments-topic", "partition": 0, "first": 3500, "last": 3999})
    );
    assert_eq!(data["dataset"]["drift_share"], 0.5);
    assert_eq!(
        data["drifted_features"],
        serde_json::json!([{"name": "a", "metric": "psi", "score": 0.42, "threshold": 0.2}])
    );
    assert_eq!(data["condition"]["type"], "dataset_drift");

    wait_until(&handle, "delivery", |h| status_of(h, &id) == Some(Status::Done)).await;
    assert!(handle.list().is_empty());
    assert_eq!(count(&telemetry, "retrain", "fired"), 1);
    assert_eq!(count(&telemetry, "retrain", "delivered"), 1);
    assert_eq!(telemetry.trigger_queue_depth.get(), 0);
    assert_eq!(rx.accepted(), BTreeMap::from([(id.clone(), 1)]));
    let _ = stop.send(());
    task.await.unwrap();
    // The delivered entry is kept (marked done) for a while, not re-sent on restart.
    let outbox = dir.path().join("triggers/outbox").join(format!("{id}.json"));
    let stored: Value = serde_json::from_slice(&std::fs::read(outbox).unwrap()).unwrap();
    assert_eq!(stored["status"], "done");
    drop(engine);
    let (_engine, handle, _) = open(&configs, dir.path());
    assert!(handle.list().is_empty());
    assert_eq!(handle.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_dispatch_request() {
    let mut rx = Receiver::start(vec![], status(204)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("gh-token");
    std::fs::write(&token_file, "ghp_testtoken123\n").unwrap();
    let configs = parse(&format!(
        r#"
[[triggers]]
name = "gh"
kind = {{ type = "github", owner = "acme", repo = "fraud-model", token_file = "{}", api_base = "{}", event_type = "retrain-fraud" }}
condition = {{ features = ["a"], consecutive_windows = 1 }}
"#,
        token_file.display(),
        rx.url("/api/")
    ));
    let (mut engine, handle, telemetry) = open(&configs, dir.path());
    let id = fire(&mut engine, "clicks", 3, 5);
    let task = handle.spawn_delivery(std::future::pending());

    let r = rx.next().await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/repos/acme/fraud-model/dispatches");
    assert_eq!(r.header("authorization"), "Bearer ghp_testtoken123");
    assert_eq!(r.header("accept"), "application/vnd.github+json");
    assert_eq!(r.header("x-github-api-version"), "2022-11-28");
    assert!(r.header("user-agent").starts_with("driftscope/"));
    let body = r.json();
    assert_eq!(body["event_type"], "retrain-fraud");
    let payload = body["client_payload"].as_object().unwrap();
    assert!(payload.len() <= 10, "at most 10 top-level keys: {:?}", payload.keys());
    assert!(serde_json::to_vec(&body["client_payload"]).unwrap().len() < 65_536);
    assert_eq!(payload["trigger_id"], id.as_str());
    assert_eq!(payload["stream"], "clicks");
    assert_eq!(payload["condition"]["type"], "features");

    wait_until(&handle, "delivery", |h| status_of(h, &id) == Some(Status::Done)).await;
    assert_eq!(count(&telemetry, "gh", "delivered"), 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_pipeline_trigger_form() {
    let mut rx = Receiver::start(vec![], status(201)).await;
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&format!(
        r#"
[[triggers]]
name = "gl"
kind = {{ type = "gitlab", project = "ml/fraud", token = "glptt-abc123", ref = "retrain", base_url = "{}", variables = {{ MODEL = "fraud" }} }}
condition = {{ score = "psi", feature = "a", above = 0.3, consecutive_windows = 1 }}
"#,
        rx.url("")
    ));
    let (mut engine, handle, _) = open(&configs, dir.path());
    let id = fire(&mut engine, "payments", 11, 5);
    let task = handle.spawn_delivery(std::future::pending());

    let r = rx.next().await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/v4/projects/ml%2Ffraud/trigger/pipeline");
    assert_eq!(r.header("content-type"), "application/x-www-form-urlencoded");
    let f = form(&r);
    assert_eq!(f["token"], "glptt-abc123");
    assert_eq!(f["ref"], "retrain");
    assert_eq!(f["variables[MODEL]"], "fraud");
    assert_eq!(f["variables[DRIFTSCOPE_TRIGGER_ID]"], id);
    assert_eq!(f["variables[DRIFTSCOPE_TRIGGER]"], "gl");
    assert_eq!(f["variables[DRIFTSCOPE_STREAM]"], "payments");
    assert_eq!(f["variables[DRIFTSCOPE_WINDOW_INDEX]"], "11");
    assert_eq!(f["variables[DRIFTSCOPE_DRIFT_SHARE]"], "0.5");
    assert_eq!(f["variables[DRIFTSCOPE_FEATURES]"], "a");
    let payload: Value = serde_json::from_str(&f["variables[DRIFTSCOPE_PAYLOAD]"]).unwrap();
    assert_eq!(payload["trigger_id"], id.as_str());
    assert_eq!(payload["observed"][0]["feature"], "a");
    assert_eq!(payload["observed"][0]["value"], 0.42);

    wait_until(&handle, "delivery", |h| status_of(h, &id) == Some(Status::Done)).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_trigger_record() {
    let Ok(bootstrap) = std::env::var("DRIFTSCOPE_KAFKA_BOOTSTRAP") else {
        eprintln!("DRIFTSCOPE_KAFKA_BOOTSTRAP is not set: skipping the kafka trigger test");
        return;
    };
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
    let topic = format!("driftscope-triggers-{}-{}", std::process::id(), nanos % 1_000_000_000);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap();
    for r in created {
        r.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&format!(
        r#"
[[triggers]]
name = "kf"
kind = {{ type = "kafka", topic = "{topic}" }}
condition = {{ dataset_drift = true, consecutive_windows = 1 }}
delivery = {{ timeout = "30s" }}
"#
    ));
    let kafka = KafkaConfig { brokers: bootstrap.clone(), ..KafkaConfig::default() };
    let telemetry = Arc::new(Telemetry::new());
    let (mut engine, handle) =
        TriggerEngine::open(&configs, dir.path(), Some(&kafka), telemetry.clone()).unwrap();
    let id = fire(&mut engine, "payments", 4, 5);
    let task = handle.spawn_delivery(std::future::pending());
    wait_until(&handle, "kafka delivery report", |h| status_of(h, &id) == Some(Status::Done)).await;
    assert_eq!(count(&telemetry, "kf", "delivered"), 1);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(BOUND, consumer.recv()).await.expect("a record").unwrap();
    assert_eq!(message.key(), Some("payments".as_bytes()));
    let headers = message.headers().expect("headers");
    let header = headers.iter().find(|h| h.key == "driftscope-trigger-id").expect("id header");
    assert_eq!(header.value, Some(id.as_bytes()));
    let body: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(body["type"], "drift.detected");
    assert_eq!(body["data"]["trigger_id"], id.as_str());
    assert_eq!(body["data"]["window"]["index"], 4);
    task.abort();
}

#[test]
fn a_kafka_trigger_needs_brokers() {
    let configs = parse(
        r#"
[[triggers]]
name = "kf"
kind = { type = "kafka", topic = "t" }
condition = { dataset_drift = true }
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let err = TriggerEngine::open(&configs, dir.path(), None, Arc::new(Telemetry::new())).unwrap_err();
    assert!(err.to_string().contains("triggers[0].kind"), "{err}");
}

// ---------------------------------------------------------------------------------
// Delivery policy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_receiver_gets_each_trigger_exactly_once() {
    let script = vec![
        status(503),
        Reply::Status(429, vec![("retry-after", "1".into())], "slow down".into()),
        Reply::Hang,
        status(502),
    ];
    let mut rx = Receiver::start(script, ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&webhook("retrain", &rx.url("/hook"), r#", timeout = "1s""#));
    let (mut engine, handle, telemetry) = open(&configs, dir.path());
    let a = fire(&mut engine, "payments", 1, 1);
    let b = fire(&mut engine, "clicks", 1, 1);
    let task = handle.spawn_delivery(std::future::pending());

    wait_until(&handle, "both delivered", |h| {
        status_of(h, &a) == Some(Status::Done) && status_of(h, &b) == Some(Status::Done)
    })
    .await;
    assert_eq!(rx.accepted(), BTreeMap::from([(a.clone(), 1), (b.clone(), 1)]));
    let mut seen = Vec::new();
    while let Ok(r) = rx.rx.try_recv() {
        seen.push(r);
    }
    assert!(seen.len() >= 6, "4 failures and 2 successes: {seen:#?}");
    for r in &seen {
        assert_eq!(r.signature_ok, Some(true), "every attempt is signed");
        assert!([a.as_str(), b.as_str()].contains(&r.header("webhook-id")), "stable ids");
    }
    assert!(count(&telemetry, "retrain", "retry") >= 4);
    assert_eq!(count(&telemetry, "retrain", "delivered"), 2);
    assert_eq!(count(&telemetry, "retrain", "dead"), 0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_dead_lettered_then_retried_by_hand() {
    let mut rx = Receiver::start(vec![], Reply::Status(400, vec![], "missing field".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&webhook("retrain", &rx.url("/hook"), ""));
    let (mut engine, handle, telemetry) = open(&configs, dir.path());
    let id = fire(&mut engine, "payments", 2, 2);
    let task = handle.spawn_delivery(std::future::pending());

    wait_until(&handle, "dead letter", |h| status_of(h, &id) == Some(Status::Dead)).await;
    assert_eq!(rx.next().await.answered, 400);
    let list = handle.list();
    assert_eq!(list.len(), 1);
    let view: &TriggerView = &list[0];
    assert_eq!(view.id, id);
    assert_eq!(view.status, Status::Dead);
    assert_eq!(view.attempts, 1, "a 400 is not retried");
    let error = view.last_error.as_deref().unwrap();
    assert!(error.contains("400") && error.contains("missing field"), "{error}");
    assert!(view.next_attempt_at.is_none() && view.dead_at.is_some());
    assert_eq!(count(&telemetry, "retrain", "dead"), 1);
    assert_eq!(telemetry.trigger_queue_depth.get(), 0);
    // The API view serialises.
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json[0]["status"], "dead");

    rx.set_default(ok());
    let retried = handle.retry(&id).await.unwrap();
    assert_eq!(retried.status, Status::Pending);
    wait_until(&handle, "redelivery", |h| status_of(h, &id) == Some(Status::Done)).await;
    assert_eq!(rx.accepted(), BTreeMap::from([(id.clone(), 1)]));
    assert!(handle.list().is_empty());
    assert!(matches!(handle.retry(&id).await, Err(RetryError::AlreadyDelivered(_))));
    assert!(matches!(handle.retry("no-such-id").await, Err(RetryError::NotFound(_))));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let mut rx = Receiver::start(vec![], ok()).await;
    let elsewhere = rx.url("/elsewhere");
    rx.set_default(Reply::Status(307, vec![("location", elsewhere)], String::new()));
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&webhook("retrain", &rx.url("/hook"), ""));
    let (mut engine, handle, _) = open(&configs, dir.path());
    let id = fire(&mut engine, "payments", 2, 2);
    let task = handle.spawn_delivery(std::future::pending());

    wait_until(&handle, "dead letter", |h| status_of(h, &id) == Some(Status::Dead)).await;
    let first = rx.next().await;
    assert_eq!((first.path.as_str(), first.answered), ("/hook", 307));
    task.abort();
    let _ = task.await;
    assert!(rx.rx.try_recv().is_err(), "the redirect was followed");
    assert!(rx.accepted().is_empty());
    let error = handle.get(&id).unwrap().last_error.unwrap();
    assert!(error.contains("redirect"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_after_max_attempts() {
    let rx = Receiver::start(vec![], status(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&webhook("retrain", &rx.url("/hook"), ", max_attempts = 3"));
    let (mut engine, handle, telemetry) = open(&configs, dir.path());
    let id = fire(&mut engine, "payments", 2, 2);
    let task = handle.spawn_delivery(std::future::pending());
    wait_until(&handle, "dead letter", |h| status_of(h, &id) == Some(Status::Dead)).await;
    let view = handle.get(&id).unwrap();
    assert_eq!(view.attempts, 3);
    assert!(view.last_error.unwrap().contains("gave up after 3 attempts"));
    assert_eq!(count(&telemetry, "retrain", "retry"), 2);
    task.abort();
}

// ---------------------------------------------------------------------------------
// Durability.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_trigger_is_delivered_after_restart() {
    // A port with nothing listening: the receiver is down.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = parked.local_addr().unwrap();
    drop(parked);
    let url = format!("http://{addr}/hook");
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(&webhook("retrain", &url, ""));

    let (mut engine_a, handle_a, _) = open(&configs, dir.path());
    let id = fire(&mut engine_a, "payments", 5, 5);
    let episode_a: Episode = engine_a.episode("retrain", "payments").unwrap().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = handle_a.spawn_delivery(async move {
        let _ = stopped.await;
    });
    wait_until(&handle_a, "a failed attempt", |h| h.get(&id).is_some_and(|v| v.attempts >= 1)).await;
    let _ = stop.send(());
    task.await.unwrap();
    let error = handle_a.get(&id).unwrap().last_error.unwrap();
    assert!(!error.contains(&addr.to_string()), "no URL in errors: {error}");
    drop(engine_a);
    drop(handle_a);

    // The receiver comes up on the same address; a new engine on the same state dir.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut rx = Receiver::serve(listener, vec![], ok());
    let (mut engine_b, handle_b, _) = open(&configs, dir.path());
    assert_eq!(engine_b.episode("retrain", "payments"), Some(&episode_a));
    let pending = handle_b.list();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    assert_eq!(pending[0].status, Status::Pending);
    // Still in the same episode: no second firing.
    assert!(engine_b.on_report_at(&report("payments", 6, 6, true), at(6)).unwrap().is_empty());

    let task = handle_b.spawn_delivery(std::future::pending());
    let r = rx.next().await;
    assert_eq!(r.header("webhook-id"), id);
    wait_until(&handle_b, "delivery after restart", |h| status_of(h, &id) == Some(Status::Done)).await;
    assert_eq!(rx.accepted(), BTreeMap::from([(id, 1)]));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_outbox_file_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", parked.local_addr().unwrap());
    drop(parked);
    let configs = parse(&webhook("retrain", &url, ""));
    let (mut engine, _, _) = open(&configs, dir.path());
    let id = fire(&mut engine, "payments", 1, 1);
    drop(engine);

    let outbox = dir.path().join("triggers/outbox");
    let bad = outbox.join("retrain-payments-9-deadbeef.json");
    std::fs::write(&bad, b"{\"id\": \"retrain-payments-9-deadbeef\", trunc").unwrap();
    let (_engine, handle, _) = open(&configs, dir.path());
    let problems = handle.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&bad.display().to_string()), "{problems:?}");
    assert!(!bad.exists() && outbox.join("retrain-payments-9-deadbeef.json.corrupt").exists());
    // The good entry is still there.
    assert_eq!(handle.list().iter().map(|v| v.id.clone()).collect::<Vec<_>>(), vec![id]);

    // A corrupt episode file too: reported, and the outbox restores the cooldown.
    std::fs::write(dir.path().join("triggers/episodes.json"), b"not json").unwrap();
    let (mut engine, handle, _) = open(&configs, dir.path());
    assert!(handle.problems()[0].contains("episodes.json"), "{:?}", handle.problems());
    let episode = engine.episode("retrain", "payments").unwrap();
    assert!(!episode.armed && episode.cooldown_until_ms.is_some());
    assert!(engine.on_report_at(&report("payments", 2, 2, true), at(2)).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------
// Episodes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_and_hysteresis_on_scripted_windows() {
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(
        r#"
[[triggers]]
name = "retrain"
kind = { type = "webhook", url = "http://127.0.0.1:9/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
condition = { dataset_drift = true, streams = ["payments"], consecutive_windows = 2, cooldown = "1h", clear_windows = 2 }
"#,
    );
    let telemetry = Arc::new(Telemetry::new());
    let reopen = || TriggerEngine::open(&configs, dir.path(), None, telemetry.clone()).unwrap().0;
    let mut engine = reopen();
    let none = Vec::<u64>::new();
    let mut minute = 0;
    assert_eq!(feed(&mut engine, &mut minute, "D.D"), none, "needs 2 in a row");
    // Minutes 4..8: fires at 4, once for the whole episode.
    assert_eq!(feed(&mut engine, &mut minute, "DDDDD"), vec![4]);
    // Other streams are not watched.
    assert!(engine.on_report(&report("clicks", 1, 8, true)).unwrap().is_empty());
    assert_eq!(feed(&mut engine, &mut minute, ".DD"), none, "1 clean window does not re-arm");

    // Restart: the episode (disarmed, cooling down) survives.
    let before = engine.episode("retrain", "payments").cloned().unwrap();
    assert!(!before.armed);
    drop(engine);
    let mut engine = reopen();
    assert_eq!(engine.episode("retrain", "payments"), Some(&before));
    assert_eq!(feed(&mut engine, &mut minute, "DD"), none, "still the same episode");
    assert_eq!(feed(&mut engine, &mut minute, "..DD"), none, "re-armed but cooling down");
    assert!(engine.episode("retrain", "payments").unwrap().armed);
    assert_eq!(count(&telemetry, "retrain", "suppressed"), 1);

    // Restart during the cooldown: it is not forgotten.
    drop(engine);
    let mut engine = reopen();
    // The cooldown ends at minute 4 + 60.
    minute = 62;
    assert_eq!(feed(&mut engine, &mut minute, "DD"), vec![64]);
    assert_eq!(feed(&mut engine, &mut minute, "DDDD"), none);
    assert_eq!(count(&telemetry, "retrain", "fired"), 2);
    assert_eq!(count(&telemetry, "retrain", "suppressed"), 2, "minutes 17 and 63");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_condition_uses_the_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let configs = parse(
        r#"
[[triggers]]
name = "psi"
kind = { type = "webhook", url = "http://127.0.0.1:9/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
condition = { score = "psi", feature = "a", above = 0.3, consecutive_windows = 1, cooldown = "10m" }
"#,
    );
    let (mut engine, handle, _) = open(&configs, dir.path());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let r = report("payments", 1, 1, true);
    assert_eq!(engine.on_report_at(&r, now).unwrap().len(), 1);
    let clean = report("payments", 2, 2, false);
    assert!(engine.on_report_at(&clean, now + Duration::from_secs(60)).unwrap().is_empty());
    // Window times are ignored: only the passed clock counts for the cooldown.
    let later = report("payments", 3, 3, true);
    assert!(engine.on_report_at(&later, now + Duration::from_secs(540)).unwrap().is_empty());
    let latest = report("payments", 4, 4, true);
    assert_eq!(engine.on_report_at(&latest, now + Duration::from_secs(601)).unwrap().len(), 1);
    let list = handle.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].evidence.observed[0].value, 0.42);
}

// ---------------------------------------------------------------------------------
// Secrets.

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, at TRACE level (dependencies included). One
/// global subscriber, installed before any test logs: a thread-local one would miss
/// events whose callsite another test's thread registered first (tracing caches
/// callsite interest process-wide).
fn logs() -> &'static Capture {
    static LOGS: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        capture
    })
}

#[test]
fn secrets_stay_out_of_debug_errors_api_and_logs() {
    let capture = logs();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // The receiver echoes what it was sent, credentials included, in a 401.
        let mut rx = Receiver::start(vec![], ok()).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "ghp_FILESECRET42").unwrap();
        let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let down = format!("http://{}/hook/URLSECRET77", parked.local_addr().unwrap());
        drop(parked);
        let configs = parse(&format!(
            r#"
[[triggers]]
name = "gh"
kind = {{ type = "github", owner = "o", repo = "r", token_file = "{}", api_base = "{}" }}
condition = {{ dataset_drift = true, consecutive_windows = 1 }}

[[triggers]]
name = "gl"
kind = {{ type = "gitlab", project = "1", token = "glptt-INLINESECRET99", base_url = "{}" }}
condition = {{ dataset_drift = true, consecutive_windows = 1 }}

[[triggers]]
name = "hook"
kind = {{ type = "webhook", url = "{down}", secret = "{SECRET}" }}
condition = {{ dataset_drift = true, consecutive_windows = 1 }}
delivery = {{ max_attempts = 1 }}
"#,
            token_file.display(),
            rx.url(""),
            rx.url("")
        ));
        let (mut engine, handle, _) = open(&configs, dir.path());
        rx.set_default(Reply::Echo(401));
        let ids = engine.on_report_at(&report("payments", 1, 1, true), at(1)).unwrap();
        assert_eq!(ids.len(), 3);
        let task = handle.spawn_delivery(std::future::pending());
        wait_until(&handle, "all dead", |h| ids.iter().all(|id| status_of(h, id) == Some(Status::Dead)))
            .await;
        let _ = rx.next().await;

        let errors: Vec<String> = handle.list().into_iter().filter_map(|v| v.last_error).collect();
        assert_eq!(errors.len(), 3);
        assert_eq!(
            errors.iter().filter(|e| e.contains("401") && e.contains("<redacted>")).count(),
            2,
            "the echoed credentials are scrubbed: {errors:?}"
        );
        task.abort();
        let _ = task.await;
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("dead-lettered"), "the logs were captured");
        let shown = [
            format!("{configs:?}"),
            format!("{configs:#?}"),
            format!("{engine:?}"),
            format!("{handle:?}"),
            serde_json::to_string(&configs).unwrap(),
            serde_json::to_string(&handle.list()).unwrap(),
        ];
        let secrets = ["ghp_FILESECRET42", "glptt-INLINESECRET99", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"];
        let leak = |text: &str, needle: &str| text.lines().find(|l| l.contains(needle)).map(str::to_owned);
        for text in shown.iter().chain(errors.iter()).chain([&logs]) {
            for secret in secrets {
                assert_eq!(leak(text, secret), None, "`{secret}` leaked");
            }
        }
        // The webhook URL is config, shown as such, but never repeated in errors or logs
        // (receivers sometimes embed a credential in it).
        for text in errors.iter().chain([&logs]) {
            assert_eq!(leak(text, "URLSECRET77"), None, "the URL leaked");
        }
    });
}
