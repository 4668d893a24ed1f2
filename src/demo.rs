//! `driftscope demo`: the whole product on one machine with no external services.
//! librdkafka's in-process mock cluster carries a synthetic model's feature and
//! prediction streams; after a clean phase the generator injects drift (a shifted
//! numeric feature, a new category, more missing values, a shifted prediction score);
//! the true outcomes arrive later on a labels topic and do not shift with the score,
//! so the model's measured performance drops with the drift;
//! the full monitor, HTTP server and dashboard run as in production, and a local
//! webhook receiver verifies and prints each trigger it gets.

use crate::config::{
    Config, FieldConfig, HttpConfig, KafkaConfig, MessageFormat, ReferenceConfig, StreamConfig, WindowConfig,
};
use crate::stats::FeatureKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub const FEATURES_TOPIC: &str = "demo-features";
pub const PREDICTIONS_TOPIC: &str = "demo-predictions";
/// The true outcome of each prediction, keyed by the same request id.
pub const LABELS_TOPIC: &str = "demo-labels";
/// A prediction's label is produced this many records after it.
pub const LABEL_DELAY_RECORDS: u64 = 300;
/// Share of predictions whose label never comes.
pub const LABELS_NEVER: f64 = 0.1;
/// Records per stream that become the reference.
pub const REFERENCE_RECORDS: u64 = 5_000;
/// Records per window.
pub const WINDOW_RECORDS: u64 = 2_000;
/// Clean records per stream before drift is injected: the reference and four windows.
pub const CLEAN_RECORDS: u64 = REFERENCE_RECORDS + 4 * WINDOW_RECORDS;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub duration: Duration,
    /// Records per second per stream.
    pub rate: u64,
    pub port: u16,
    pub seed: u64,
}

/// The config the demo runs the monitor with: two streams of one model, references
/// taken from the clean phase.
pub fn demo_config(bootstrap: &str, port: u16, state_dir: &std::path::Path) -> Config {
    let field = |name: &str, kind: FeatureKind| FieldConfig {
        name: name.into(),
        kind: Some(kind),
        ..Default::default()
    };
    let stream = |name: &str, topic: &str, fields: Vec<FieldConfig>| StreamConfig {
        name: name.into(),
        topics: vec![topic.into()],
        format: MessageFormat::Json,
        event_time_field: None,
        json: None,
        avro: None,
        protobuf: None,
        window: WindowConfig::TumblingCount { size: WINDOW_RECORDS },
        reference: ReferenceConfig { from_stream: Some(REFERENCE_RECORDS), ..Default::default() },
        fields,
        labels: None,
        open_inference: None,
    };
    let mut config = Config {
        kafka: KafkaConfig {
            brokers: bootstrap.into(),
            group_id: "driftscope-demo".into(),
            ..Default::default()
        },
        http: HttpConfig { listen: format!("127.0.0.1:{port}"), api_token: None },
        streams: vec![
            stream(
                "features",
                FEATURES_TOPIC,
                vec![
                    field("age", FeatureKind::Numeric),
                    field("income", FeatureKind::Numeric),
                    field("tenure_months", FeatureKind::Numeric),
                    field("country", FeatureKind::Categorical),
                    field("device", FeatureKind::Categorical),
                ],
            ),
            StreamConfig {
                labels: Some(demo_labels()),
                ..stream("predictions", PREDICTIONS_TOPIC, vec![field("score", FeatureKind::Numeric)])
            },
        ],
        ..Default::default()
    };
    config.state.dir = state_dir.to_path_buf();
    config
}

/// The predictions stream's labels: joined by the Kafka key (the request id), a binary
/// task on the score.
fn demo_labels() -> crate::config::labels::LabelsConfig {
    crate::config::labels::LabelsConfig {
        topics: vec![LABELS_TOPIC.into()],
        format: crate::config::labels::LabelFormat::Json,
        prediction_id: crate::config::labels::IdLocation::Key,
        label_id: crate::config::labels::IdLocation::Key,
        label: "/label".into(),
        task: crate::config::labels::TaskConfig::Binary { score: "/score".into(), threshold: 0.5 },
        ttl: Duration::from_secs(20),
        sample: 1.0,
        max_pending: 100_000,
        handover_topic: None,
    }
}

/// A synthetic model's traffic; `drifted` switches on every injected change.
pub struct Generator {
    rng: StdRng,
    /// The outcomes' own draws, so that labels leave the features' sequence as it was.
    outcomes: StdRng,
    id: u64,
}

/// One request: its features and prediction as JSON, and its true outcome (`None`:
/// the label never comes).
pub struct Request {
    pub features: String,
    pub prediction: String,
    pub outcome: Option<bool>,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            outcomes: StdRng::seed_from_u64(seed ^ 0x1abe_1500),
            id: 0,
        }
    }

    fn normal(&mut self) -> f64 {
        // Box-Muller: two uniforms give one standard normal.
        let u: f64 = self.rng.random::<f64>().max(1e-12);
        let v: f64 = self.rng.random();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// One feature record and its prediction, as JSON.
    pub fn next(&mut self, drifted: bool) -> (String, String) {
        let request = self.request(drifted);
        (request.features, request.prediction)
    }

    /// One request with its outcome. The score is calibrated in the clean phase; with
    /// drift the model scores higher while the outcomes keep their rate (a harmful
    /// shift: precision and calibration fall).
    pub fn request(&mut self, drifted: bool) -> Request {
        self.id += 1;
        let age = (40.0 + 12.0 * self.normal() + if drifted { 9.0 } else { 0.0 }).clamp(18.0, 95.0).round();
        let income = (10.6 + 0.5 * self.normal()).exp() * if drifted { 1.6 } else { 1.0 };
        let tenure_missing = self.rng.random::<f64>() < if drifted { 0.25 } else { 0.01 };
        let tenure = (self.rng.random::<f64>() * 72.0).floor();
        let countries = ["US", "DE", "FR", "GB", "IN"];
        let country = if drifted && self.rng.random::<f64>() < 0.3 {
            "BR"
        } else {
            countries[self.rng.random_range(0..countries.len())]
        };
        let device = ["mobile", "desktop", "tablet"]
            [usize::from(self.rng.random::<f64>() > 0.6) + usize::from(self.rng.random::<f64>() > 0.9)];
        let tenure = if tenure_missing { "null".to_owned() } else { tenure.to_string() };
        let features = format!(
            r#"{{"id":{},"age":{age},"income":{income:.2},"tenure_months":{tenure},"country":"{country}","device":"{device}"}}"#,
            self.id
        );
        let clean_logit = -0.9 + 0.6 * self.normal();
        let logit = clean_logit + if drifted { 1.1 } else { 0.0 };
        let score = 1.0 / (1.0 + (-logit).exp());
        let prediction = format!(r#"{{"id":{},"score":{score:.5}}}"#, self.id);
        let truth = 1.0 / (1.0 + (-clean_logit).exp());
        let positive = self.outcomes.random::<f64>() < truth;
        let outcome = (self.outcomes.random::<f64>() >= LABELS_NEVER).then_some(positive);
        Request { features, prediction, outcome }
    }
}

/// Where [`produce`] writes, and whether records carry an event time.
#[derive(Debug, Clone)]
pub struct ProduceTarget {
    pub features: String,
    pub predictions: String,
    /// The labels topic; `None`: no labels are produced.
    pub labels: Option<String>,
    /// Adds `"ts"` (epoch milliseconds, the time of producing) to every record.
    pub event_time: bool,
}

impl ProduceTarget {
    /// The single-instance demo's topics, with labels and no event time.
    pub fn single() -> Self {
        ProduceTarget {
            features: FEATURES_TOPIC.into(),
            predictions: PREDICTIONS_TOPIC.into(),
            labels: Some(LABELS_TOPIC.into()),
            event_time: false,
        }
    }
}

/// `json` (an object from the generator) with `"ts": ts_ms` as its first member.
fn with_event_time(json: &str, ts_ms: i64) -> String {
    format!("{{\"ts\":{ts_ms},{}", json.strip_prefix('{').unwrap_or(json))
}

/// Produces both streams at `rate` records per second each until `stop`; the first
/// `clean_records` are clean, the rest drifted. Counts what it produced.
pub async fn produce(
    bootstrap: String,
    target: ProduceTarget,
    rate: u64,
    seed: u64,
    clean_records: u64,
    produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<(), rdkafka::error::KafkaError> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "5").create()?;
    let mut generator = Generator::new(seed);
    // Outcomes waiting for their delay: (request key, label).
    let mut outcomes: std::collections::VecDeque<(u64, Option<bool>)> = std::collections::VecDeque::new();
    // Ticks of 10 ms, each producing its share of the rate.
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = (rate as f64 / 100.0).max(0.01);
    let mut owed = 0.0;
    while !stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let n = produced.load(Ordering::SeqCst);
            let request = generator.request(n >= clean_records);
            outcomes.push_back((n, request.outcome));
            let label = match outcomes.front() {
                Some(&(k, outcome)) if k + LABEL_DELAY_RECORDS <= n => {
                    outcomes.pop_front();
                    outcome.map(|positive| (k.to_string(), format!(r#"{{"label":{}}}"#, u8::from(positive))))
                }
                _ => None,
            };
            let key = n.to_string();
            let (features, prediction) = if target.event_time {
                let now = crate::clock::now_ms();
                (with_event_time(&request.features, now), with_event_time(&request.prediction, now))
            } else {
                (request.features, request.prediction)
            };
            let mut messages = vec![
                (target.features.as_str(), key.as_str(), features.as_str()),
                (target.predictions.as_str(), key.as_str(), prediction.as_str()),
            ];
            if let (Some(labels), Some((label_key, payload))) = (&target.labels, &label) {
                messages.push((labels.as_str(), label_key.as_str(), payload.as_str()));
            }
            for (topic, key, payload) in messages {
                let mut record = BaseRecord::<str, str>::to(topic).key(key).payload(payload);
                // A full local queue only means we are ahead of the mock broker: retry.
                while let Err((_, r)) = producer.send(record) {
                    record = r;
                    tokio::task::yield_now().await;
                }
            }
            produced.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
    Ok(())
}

/// Starts the mock cluster with the demo's topics.
pub fn mock_cluster() -> Result<MockCluster<'static, DefaultProducerContext>, rdkafka::error::KafkaError> {
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(FEATURES_TOPIC, 1, 1)?;
    cluster.create_topic(PREDICTIONS_TOPIC, 1, 1)?;
    cluster.create_topic(LABELS_TOPIC, 1, 1)?;
    Ok(cluster)
}

/// Partitions of each input topic of the multi-instance demo (`--instances`), so the
/// instances share the reading.
pub const CLUSTER_PARTITIONS: i32 = 6;
/// The multi-instance demo's windows: event time, so every instance cuts the same ones.
pub const CLUSTER_WINDOW: Duration = Duration::from_secs(5);
/// Clean windows (of records produced at the demo's rate) before drift is injected in
/// the multi-instance demo.
pub const CLUSTER_CLEAN_WINDOWS: u64 = 4;
/// A source partition of the multi-instance demo silent this long counts as idle.
pub const CLUSTER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The fresh names of one multi-instance demo run: its topics, consumer group and
/// partials topic, so a run never reads what an earlier run left on the broker.
#[derive(Debug, Clone)]
pub struct ClusterNames {
    pub features: String,
    pub predictions: String,
    pub group: String,
    pub partials: String,
}

impl ClusterNames {
    /// Names suffixed with this process's id and the current time.
    pub fn fresh() -> Self {
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let run = format!("{}-{}", secs, std::process::id());
        ClusterNames {
            features: format!("{FEATURES_TOPIC}-{run}"),
            predictions: format!("{PREDICTIONS_TOPIC}-{run}"),
            group: format!("driftscope-demo-{run}"),
            partials: format!("driftscope-demo-partials-{run}"),
        }
    }
}

/// The name (`scale.instance`) of the multi-instance demo's `i`-th monitor (from 0).
pub fn instance_name(i: usize) -> String {
    format!("demo-{}", i + 1)
}

/// Writes the multi-instance demo's references: the generator's clean traffic
/// ([`REFERENCE_RECORDS`] requests from a seed of their own) as JSON Lines, features
/// and predictions. Global mode takes references from files: the first records of a
/// stream read by several instances would differ between them.
pub fn write_references(
    dir: &std::path::Path,
    seed: u64,
) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let mut generator = Generator::new(seed ^ 0x0ef0_ce00);
    let (mut features, mut predictions) = (String::new(), String::new());
    for _ in 0..REFERENCE_RECORDS {
        let (f, p) = generator.next(false);
        features.push_str(&f);
        features.push('\n');
        predictions.push_str(&p);
        predictions.push('\n');
    }
    let paths = (dir.join("reference-features.jsonl"), dir.join("reference-predictions.jsonl"));
    std::fs::write(&paths.0, features)?;
    std::fs::write(&paths.1, predictions)?;
    Ok(paths)
}

/// The config of one monitor of the multi-instance demo: global mode on `bootstrap`,
/// the streams of [`demo_config`] with event-time windows and references from files,
/// and no labels (label joins are refused in global mode). Goes through the config's
/// own validation, so what global mode refuses is refused here too.
pub fn cluster_config(
    bootstrap: &str,
    names: &ClusterNames,
    instance: &str,
    port: u16,
    state_dir: &std::path::Path,
    references: &(std::path::PathBuf, std::path::PathBuf),
) -> Result<Config, crate::config::ConfigError> {
    let window = format!(
        "window = {{ type = \"tumbling_time\", size = \"{}s\", time = \"event\" }}",
        CLUSTER_WINDOW.as_secs()
    );
    let fields = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(name, kind)| format!("[[streams.fields]]\nname = \"{name}\"\nkind = \"{kind}\"\n"))
            .collect::<String>()
    };
    let text = format!(
        "[kafka]\nbrokers = {bootstrap:?}\ngroup_id = {group:?}\n\
         [scale]\nmode = \"global\"\npartials_topic = {partials:?}\nidle_timeout = \"{idle}s\"\ninstance = {instance:?}\n\
         [state]\ndir = {state:?}\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [[streams]]\nname = \"features\"\ntopics = [{features:?}]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
         {window}\nreference = {{ data = {features_ref:?} }}\n{features_fields}\
         [[streams]]\nname = \"predictions\"\ntopics = [{predictions:?}]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
         {window}\nreference = {{ data = {predictions_ref:?} }}\n{predictions_fields}",
        group = names.group,
        partials = names.partials,
        idle = CLUSTER_IDLE_TIMEOUT.as_secs(),
        state = state_dir.display().to_string(),
        features = names.features,
        predictions = names.predictions,
        features_ref = references.0.display().to_string(),
        predictions_ref = references.1.display().to_string(),
        features_fields = fields(&[
            ("age", "numeric"),
            ("income", "numeric"),
            ("tenure_months", "numeric"),
            ("country", "categorical"),
            ("device", "categorical"),
        ]),
        predictions_fields = fields(&[("score", "numeric")]),
    );
    Config::from_toml(&text, &state_dir.join("driftscope.toml"))
}

/// Creates the multi-instance demo's input topics, [`CLUSTER_PARTITIONS`] partitions each.
pub async fn create_cluster_topics(
    bootstrap: &str,
    names: &ClusterNames,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let topics: Vec<NewTopic> = [&names.features, &names.predictions]
        .into_iter()
        .map(|t| NewTopic::new(t, CLUSTER_PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&topics, &options).await? {
        result.map_err(|(_, code)| rdkafka::error::KafkaError::AdminOp(code))?;
    }
    Ok(())
}

/// The demo's trigger: a signed webhook to the local receiver when a stream's dataset
/// drifts in two windows in a row.
pub fn demo_trigger(
    receiver_url: &str,
    secret: &str,
) -> Result<crate::outputs::triggers::TriggerConfig, toml::de::Error> {
    toml::from_str(&format!(
        r#"
name = "retrain-demo-model"
kind = {{ type = "webhook", url = "{receiver_url}", secret = "{secret}" }}
condition = {{ dataset_drift = true, consecutive_windows = 2, cooldown = "10m", clear_windows = 2 }}
delivery = {{ initial_backoff = "200ms", max_backoff = "5s" }}
"#
    ))
}

/// A fresh `whsec_` signing secret for one demo run.
pub fn new_webhook_secret(seed: u64) -> String {
    use base64::Engine;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5ec7);
    let key: [u8; 24] = rng.random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// What the receiver saw, for the demo's printout and its tests.
#[derive(Debug, Clone)]
pub struct ReceivedTrigger {
    pub id: String,
    pub verified: bool,
    pub stream: String,
    pub window_index: u64,
    pub drifted: Vec<String>,
}

/// A local webhook receiver: verifies each delivery's Standard Webhooks signature and
/// reports it on `received`. Answers 204 to valid deliveries, 401 to others.
pub async fn webhook_receiver(
    secret: &str,
    received: tokio::sync::mpsc::UnboundedSender<ReceivedTrigger>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::{HeaderMap, StatusCode};
    let key = crate::outputs::triggers::signing::WebhookKey::from_secret(&crate::secret::Secret::new(secret))
        .map_err(std::io::Error::other)?;
    let key = Arc::new(key);
    let app = axum::Router::new().route(
        "/hooks/retrain",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let key = key.clone();
            let received = received.clone();
            async move {
                let header =
                    |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let id = header("webhook-id");
                let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
                let verified = key.verify(&id, timestamp, &body, &header("webhook-signature"));
                let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let data = &envelope["data"];
                let _ = received.send(ReceivedTrigger {
                    id,
                    verified,
                    stream: data["stream"].as_str().unwrap_or("").to_owned(),
                    window_index: data["window"]["index"].as_u64().unwrap_or(0),
                    drifted: data["drifted_features"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect())
                        .unwrap_or_default(),
                });
                if verified { StatusCode::NO_CONTENT } else { StatusCode::UNAUTHORIZED }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::scale::ScaleMode;

    #[test]
    fn event_time_goes_first_in_the_generators_json() {
        let (features, _) = Generator::new(1).next(false);
        let stamped: serde_json::Value =
            serde_json::from_str(&with_event_time(&features, 1_700_000_000_123)).unwrap();
        let plain: serde_json::Value = serde_json::from_str(&features).unwrap();
        assert_eq!(stamped["ts"], 1_700_000_000_123_i64);
        assert_eq!(stamped["age"], plain["age"]);
    }

    #[test]
    fn the_cluster_config_is_global_with_event_time_windows_file_references_and_no_labels() {
        let dir = tempfile::tempdir().unwrap();
        let references = write_references(dir.path(), 7).unwrap();
        let names = ClusterNames::fresh();
        let config = cluster_config("127.0.0.1:1", &names, "demo-2", 0, dir.path(), &references).unwrap();
        assert_eq!(config.scale.instance_name(), "demo-2");
        assert_eq!(config.scale.partials_topic, names.partials);
        assert_eq!(config.kafka.group_id, names.group);
        assert_eq!(config.streams.len(), 2);
        for stream in &config.streams {
            assert_eq!(config.scale.mode_of(&stream.name), ScaleMode::Global);
            assert!(
                matches!(stream.window, WindowConfig::TumblingTime { size, .. } if size == CLUSTER_WINDOW)
            );
            assert!(stream.labels.is_none() && stream.reference.data.is_some());
        }
        let lines = std::fs::read_to_string(&references.0).unwrap().lines().count();
        assert_eq!(lines as u64, REFERENCE_RECORDS);
    }
}
