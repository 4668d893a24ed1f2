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

/// Produces both streams at `rate` records per second each until `stop`; the first
/// `clean_records` are clean, the rest drifted. Counts what it produced.
pub async fn produce(
    bootstrap: String,
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
            let mut messages = vec![
                (FEATURES_TOPIC, key.as_str(), request.features.as_str()),
                (PREDICTIONS_TOPIC, key.as_str(), request.prediction.as_str()),
            ];
            if let Some((label_key, payload)) = &label {
                messages.push((LABELS_TOPIC, label_key.as_str(), payload.as_str()));
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
