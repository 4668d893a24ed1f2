//! The configuration tree (TOML), `${ENV}` expansion, and start-up validation whose
//! errors name the offending key path.

pub mod labels;
pub mod scale;
pub mod triggers;

use crate::stats::settings::{DriftSettings, FeatureKind, FeatureOverride, Metric, Rule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use triggers::TriggerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// The whole configuration. Every table rejects unknown keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Scoring settings for every feature unless a field overrides them.
    #[serde(default)]
    pub defaults: DriftSettings,
    /// Per-feature overrides by name, for `score` and every stream.
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub outputs: OutputsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// The schema registry of the `avro` and `protobuf` formats (Confluent framing).
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
    /// Retraining triggers.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// Local or global windows across instances (`config/scale.rs`).
    #[serde(default)]
    pub scale: scale::ScaleConfig,
}

/// The HTTP server: metrics, health, API and dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; an empty string turns the server off.
    pub listen: String,
    /// Bearer token required on `/api/*` when set (use `${ENV}`); never printed.
    pub api_token: Option<crate::secret::Secret>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: "0.0.0.0:9464".into(), api_token: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Append every window report as one JSON line to this file.
    pub reports_file: Option<PathBuf>,
    /// Reports kept in memory per stream for the HTTP API.
    pub history: usize,
}

impl Default for OutputsConfig {
    fn default() -> Self {
        OutputsConfig { reports_file: None, history: 200 }
    }
}

/// Where driftscope keeps what must survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for the checkpoint, stream-taken reference profiles and the triggers'
    /// outbox.
    pub dir: PathBuf,
    /// How often the open windows are checkpointed (when anything changed). Reports
    /// wait for the checkpoint that holds them and offsets are committed only up to
    /// it, so this is also the longest a report waits.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: std::time::Duration,
    /// How long a stop (SIGTERM, Ctrl-C) may take: the record in hand is finished, the
    /// last checkpoint written and its reports handed to the outputs first; the offset
    /// commit, the consumer's close and trigger deliveries get what is left and are
    /// abandoned at the bound (the checkpoint and the trigger outbox hold their work).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: std::time::Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("driftscope-state"),
            checkpoint_interval: std::time::Duration::from_secs(1),
            shutdown_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// One monitored field and its scoring choices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// Feature name, as in the reference.
    pub name: String,
    /// Where the value is in a record: a JSON pointer (`/user/age`) for JSON, a column
    /// name for Arrow. Defaults to `/<name>` or `<name>`.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub kind: Option<FeatureKind>,
    #[serde(default)]
    pub primary_metric: Option<Metric>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub bins: Option<usize>,
    /// Version-2 effect floor on the primary score (Cramér's V for chi_square).
    #[serde(default)]
    pub min_effect: Option<f64>,
    /// `significant_effect` (version 2) or `threshold` (version 1) for this field.
    #[serde(default)]
    pub rule: Option<Rule>,
    /// `open_inference` streams: the tensor the value is in (default: the field's name).
    #[serde(default)]
    pub tensor: Option<String>,
    /// `open_inference` streams: the column of a tensor of shape [N, d] (from 0); unset
    /// for a tensor of shape [N] or [N, 1].
    #[serde(default)]
    pub column: Option<usize>,
}

impl FieldConfig {
    pub fn as_override(&self) -> FeatureOverride {
        FeatureOverride {
            kind: self.kind,
            primary_metric: self.primary_metric,
            threshold: self.threshold,
            bins: self.bins,
            min_effect: self.min_effect,
            rule: self.rule,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group shared by all driftscope instances of one deployment.
    pub group_id: String,
    /// Any librdkafka property, passed through verbatim (TLS, SASL, timeouts...).
    pub properties: BTreeMap<String, String>,
    /// Topic that receives a copy of every bad record, with the reason in a header.
    pub dead_letter_topic: Option<String>,
    /// Payloads longer than this are cut to this length in their dead-letter copy
    /// (header `driftscope-truncated` holds the original length); keep it under the
    /// dead-letter topic's `max.message.bytes`.
    pub dead_letter_max_bytes: usize,
    /// Messages larger than this are counted as `oversize` and not decoded.
    pub max_message_bytes: usize,
    /// Read the assigned partitions' messages in batches from a queue of driftscope's
    /// own (`ingest::message_queue`); `false` polls them one by one through
    /// rust-rdkafka, slower, kept as a way around a librdkafka surprise.
    pub batch_reads: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "driftscope".into(),
            properties: BTreeMap::new(),
            dead_letter_topic: None,
            dead_letter_max_bytes: 256 << 10,
            max_message_bytes: 1 << 20,
            batch_reads: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    Json,
    ArrowIpc,
    /// Open Inference Protocol (KServe v2) requests or responses, protobuf or JSON.
    OpenInference,
    /// Avro: Confluent-framed with `[registry]`, or bare with `avro.schema_file`.
    Avro,
    /// Protobuf: Confluent-framed with `[registry]`, or bare with
    /// `protobuf.descriptor_set` and `protobuf.message`.
    Protobuf,
}

/// A schema registry with the Confluent REST API (Confluent Schema Registry,
/// Apicurio's `/apis/ccompat/v7`, Karapace, Redpanda). Schemas are fetched by id once
/// and cached; while it cannot be reached the pipeline waits and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL, e.g. `http://registry:8081` or `http://apicurio:8080/apis/ccompat/v7`.
    pub url: String,
    /// HTTP basic auth user (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<crate::secret::Secret>,
    /// Bearer token (instead of basic auth); use `${ENV}`.
    #[serde(default)]
    pub bearer_token: Option<crate::secret::Secret>,
    /// PEM file of the CA that signed an `https` registry's certificate (added to the
    /// system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Bound of one request.
    #[serde(default = "registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "registry_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait between retries while the registry cannot be reached.
    #[serde(default = "registry_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn registry_timeout() -> Duration {
    Duration::from_secs(10)
}
fn registry_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn registry_max_backoff() -> Duration {
    Duration::from_secs(5)
}

/// Options of the `avro` format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvroFormatConfig {
    /// An Avro schema (`.avsc`): messages are then bare Avro binary of it, without the
    /// Confluent framing and without a registry.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
}

/// Options of the `protobuf` format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtobufFormatConfig {
    /// A serialized `FileDescriptorSet` (`protoc --include_imports --descriptor_set_out`):
    /// messages are then bare Protobuf of `message`, without framing or registry.
    #[serde(default)]
    pub descriptor_set: Option<PathBuf>,
    /// The message type's full name (`shop.Features`), with `descriptor_set`.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub topics: Vec<String>,
    pub format: MessageFormat,
    /// JSON pointer (or Arrow column) of the record's event time: RFC 3339 text or
    /// epoch milliseconds. Needed only for event-time windows.
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// Options of the `json` format (`[streams.json]`).
    #[serde(default)]
    pub json: Option<JsonFormatConfig>,
    /// Options of the `avro` format (`[streams.avro]`).
    #[serde(default)]
    pub avro: Option<AvroFormatConfig>,
    /// Options of the `protobuf` format (`[streams.protobuf]`).
    #[serde(default)]
    pub protobuf: Option<ProtobufFormatConfig>,
    pub window: WindowConfig,
    pub reference: ReferenceConfig,
    /// Monitored fields; when empty, every feature of the reference profile.
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
    /// Delayed labels joined to the predictions (`[streams.labels]`).
    #[serde(default)]
    pub labels: Option<labels::LabelsConfig>,
    /// Settings of the `open_inference` format (required by it, refused by the others).
    #[serde(default)]
    pub open_inference: Option<OpenInferenceConfig>,
}

/// How an `open_inference` stream reads its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenInferenceConfig {
    /// Which message the topic carries: a model's requests (their input tensors) or its
    /// responses (their output tensors).
    pub message: InferenceMessage,
    /// `auto` tells JSON from protobuf by each message's first byte.
    #[serde(default)]
    pub encoding: InferenceEncoding,
    /// Feature names for the columns of a tensor, in column order:
    /// `{ "input-0" = ["age", "income"] }` reads `age` from column 0 of `input-0`.
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
}

/// An Open Inference Protocol message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceMessage {
    /// `ModelInferRequest` (`inputs`; KServe v1 `instances`).
    Request,
    /// `ModelInferResponse` (`outputs`; KServe v1 `predictions`).
    Response,
}

/// How Open Inference Protocol messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceEncoding {
    #[default]
    Auto,
    Protobuf,
    Json,
}

/// Options of the `json` format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFormatConfig {
    /// A JSON pointer to an array of records in each message (`""`: the message is the
    /// array); absent: each message is one record.
    #[serde(default)]
    pub records_path: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeBasis {
    #[default]
    Processing,
    Event,
}

/// How records are grouped into windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// Every `size` records.
    TumblingCount { size: u64 },
    /// Windows of `size` records, one closing every `slide` records.
    SlidingCount { size: u64, slide: u64 },
    /// Fixed time windows on processing or event time.
    TumblingTime {
        #[serde(with = "humantime_serde")]
        size: Duration,
        #[serde(default)]
        time: TimeBasis,
        #[serde(default, with = "humantime_serde")]
        allowed_lateness: Duration,
    },
    /// Time windows of `size`, one closing every `slide`.
    SlidingTime {
        #[serde(with = "humantime_serde")]
        size: Duration,
        #[serde(with = "humantime_serde")]
        slide: Duration,
        #[serde(default)]
        time: TimeBasis,
        #[serde(default, with = "humantime_serde")]
        allowed_lateness: Duration,
    },
}

/// Where the reference distribution comes from: exactly one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// A profile saved by `driftscope reference build`.
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// A data file (CSV, Parquet, Arrow IPC, JSON Lines), profiled at start-up.
    #[serde(default)]
    pub data: Option<PathBuf>,
    /// The first N records of the stream become the reference.
    #[serde(default)]
    pub from_stream: Option<u64>,
}

impl Config {
    /// Reads, expands `${ENV}` references in string values, parses and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.into(), error })?;
        Config::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.into(), message: e.to_string() })?;
        expand_env(&mut value, &mut String::new()).map_err(|(key, message)| ConfigError::Invalid {
            path: path.into(),
            key,
            message,
        })?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            key: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        config.validate().map_err(|(key, message)| ConfigError::Invalid {
            path: path.into(),
            key,
            message,
        })?;
        Ok(config)
    }

    /// A copy safe to print or serve: secret-looking values replaced.
    /// What is valid but costly, as (key, warning): printed by `config check` and
    /// logged by `run` at start-up.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut warnings = Vec::new();
        if !self.streams.is_empty() && !self.kafka.properties.contains_key("group.instance.id") {
            warnings.push((
                "kafka.properties.\"group.instance.id\"".into(),
                format!(
                    "not set: after a crash the restarted monitor waits up to the group's session timeout \
                     (`session.timeout.ms`, {} ms here) for its partitions, its checkpoint in `{}` \
                     notwithstanding; set a stable id per instance (static membership) to take them back at once",
                    self.kafka.properties.get("session.timeout.ms").map_or("45000", String::as_str),
                    self.state.dir.display()
                ),
            ));
        }
        warnings
    }

    pub fn redacted(&self) -> Config {
        let mut copy = self.clone();
        for (key, value) in copy.kafka.properties.iter_mut() {
            if is_secret_key(key) {
                *value = REDACTED.into();
            }
        }
        copy
    }

    /// Overrides from the top-level `[[fields]]`, by feature name.
    pub fn overrides(&self) -> BTreeMap<String, FeatureOverride> {
        self.fields.iter().map(|f| (f.name.clone(), f.as_override())).collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        validate_settings(&self.defaults, "defaults")?;
        validate_fields(&self.fields, "fields")?;
        if let Some((i, f)) =
            self.fields.iter().enumerate().find(|(_, f)| f.tensor.is_some() || f.column.is_some())
        {
            let k = if f.tensor.is_some() { "tensor" } else { "column" };
            return Err((format!("fields[{i}].{k}"), "tensors are addressed in a stream's fields".into()));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "http.listen".into(),
                format!("`{}` is not an address like 0.0.0.0:9464", self.http.listen),
            ));
        }
        let interval = self.state.checkpoint_interval;
        if interval < std::time::Duration::from_millis(10) || interval > std::time::Duration::from_secs(3600)
        {
            return Err(("state.checkpoint_interval".into(), "must be between 10ms and 1h".into()));
        }
        let bound = self.state.shutdown_timeout;
        if bound < std::time::Duration::from_millis(100) || bound > std::time::Duration::from_secs(3600) {
            return Err(("state.shutdown_timeout".into(), "must be between 100ms and 1h".into()));
        }
        if let Some(strategy) = self.kafka.properties.get("partition.assignment.strategy")
            && strategy.contains("cooperative")
        {
            return Err((
                "kafka.properties.\"partition.assignment.strategy\"".into(),
                "cooperative rebalancing is not supported: driftscope rolls its windows back to the last \
                 checkpoint when partitions are revoked, which needs every partition re-read from its \
                 committed offset (use range or roundrobin)"
                    .into(),
            ));
        }
        if !(1..=MAX_DEAD_LETTER_BYTES).contains(&self.kafka.dead_letter_max_bytes) {
            return Err((
                "kafka.dead_letter_max_bytes".into(),
                format!("must be between 1 and {MAX_DEAD_LETTER_BYTES} bytes"),
            ));
        }
        if self.kafka.max_message_bytes == 0 {
            return Err(("kafka.max_message_bytes".into(), "must be at least 1".into()));
        }
        if let Some(registry) = &self.registry {
            validate_registry(registry)?;
        }
        let stream_names: Vec<String> = self.streams.iter().map(|s| s.name.clone()).collect();
        triggers::validate(&self.triggers, &stream_names)?;
        labels::validate_topics(&self.streams)?;
        scale::validate(&self.scale, &self.streams)?;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let key = |k: &str| format!("streams[{i}].{k}");
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return Err((key("name"), "must be non-empty and unique".into()));
            }
            if s.topics.is_empty() || s.topics.iter().any(String::is_empty) {
                return Err((key("topics"), "name at least one topic".into()));
            }
            validate_fields(&s.fields, &key("fields"))?;
            if let Some(l) = &s.labels {
                labels::validate(l, s, &format!("streams[{i}]"))?;
            }
            validate_open_inference(s, &key)?;
            let sources = [
                s.reference.profile.is_some(),
                s.reference.data.is_some(),
                s.reference.from_stream.is_some(),
            ];
            if sources.iter().filter(|&&b| b).count() != 1 {
                return Err((key("reference"), "set exactly one of `profile`, `data`, `from_stream`".into()));
            }
            if s.reference.from_stream == Some(0) {
                return Err((key("reference.from_stream"), "must be at least 1 record".into()));
            }
            // A format's options table belongs to that format only.
            if s.json.is_some() && s.format != MessageFormat::Json {
                return Err((
                    key("json"),
                    format!("options of the `json` format, but `format` is {:?}", s.format),
                ));
            }
            if let Some(path) = s.json.as_ref().and_then(|j| j.records_path.as_deref())
                && !(path.is_empty() || path.starts_with('/'))
            {
                return Err((key("json.records_path"), "a JSON pointer: \"\" or starting with `/`".into()));
            }
            validate_schema_formats(s, self.registry.is_some(), &key)?;
            match &s.window {
                WindowConfig::TumblingCount { size } if *size == 0 => {
                    return Err((key("window.size"), "must be at least 1".into()));
                }
                WindowConfig::SlidingCount { size, slide }
                    if *slide == 0 || slide > size || size % slide != 0 =>
                {
                    return Err((key("window.slide"), "must be at least 1 and divide `size`".into()));
                }
                WindowConfig::TumblingTime { size, time, .. } => {
                    if size.is_zero() {
                        return Err((key("window.size"), "must be positive".into()));
                    }
                    if *time == TimeBasis::Event && s.event_time_field.is_none() {
                        return Err((
                            key("event_time_field"),
                            "event-time windows need an event_time_field".into(),
                        ));
                    }
                }
                WindowConfig::SlidingTime { size, slide, time, .. } => {
                    if slide.is_zero() || slide > size || size.as_millis() % slide.as_millis() != 0 {
                        return Err((key("window.slide"), "must be positive and divide `size`".into()));
                    }
                    if *time == TimeBasis::Event && s.event_time_field.is_none() {
                        return Err((
                            key("event_time_field"),
                            "event-time windows need an event_time_field".into(),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The largest `kafka.dead_letter_max_bytes` (100 MiB): the producer's
/// `message.max.bytes` is set above it and librdkafka takes at most 1,000,000,000.
pub const MAX_DEAD_LETTER_BYTES: usize = 100 << 20;

/// What secrets are replaced with wherever config is shown.
pub const REDACTED: &str = "<redacted>";

/// librdkafka properties that carry credentials.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "key.pem", "keystore"].iter().any(|s| key.contains(s))
}

fn validate_registry(r: &RegistryConfig) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((format!("registry.{k}"), m.to_owned()));
    if !(r.url.starts_with("http://") || r.url.starts_with("https://"))
        || reqwest::Url::parse(&r.url).is_err()
    {
        return err("url", "an http:// or https:// URL");
    }
    if r.bearer_token.is_some() && (r.username.is_some() || r.password.is_some()) {
        return err("bearer_token", "either a bearer token or basic auth (`username`, `password`), not both");
    }
    if r.username.is_some() != r.password.is_some() {
        return err("password", "basic auth needs both `username` and `password`");
    }
    for (k, d) in
        [("timeout", r.timeout), ("connect_timeout", r.connect_timeout), ("max_backoff", r.max_backoff)]
    {
        if d < Duration::from_millis(10) || d > Duration::from_secs(600) {
            return err(k, "must be between 10ms and 10m");
        }
    }
    Ok(())
}

/// The `avro` and `protobuf` formats: their options tables, and a registry unless a
/// fixed schema is given.
fn validate_schema_formats(
    s: &StreamConfig,
    has_registry: bool,
    key: &dyn Fn(&str) -> String,
) -> Result<(), (String, String)> {
    if s.avro.is_some() && s.format != MessageFormat::Avro {
        return Err((key("avro"), format!("options of the `avro` format, but `format` is {:?}", s.format)));
    }
    if s.protobuf.is_some() && s.format != MessageFormat::Protobuf {
        return Err((
            key("protobuf"),
            format!("options of the `protobuf` format, but `format` is {:?}", s.format),
        ));
    }
    let fixed = match s.format {
        MessageFormat::Avro => s.avro.as_ref().is_some_and(|a| a.schema_file.is_some()),
        MessageFormat::Protobuf => {
            let p = s.protobuf.clone().unwrap_or_default();
            match (&p.descriptor_set, &p.message) {
                (Some(_), None) => {
                    return Err((
                        key("protobuf.message"),
                        "the message type's full name, with `descriptor_set`".into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err((
                        key("protobuf.message"),
                        "goes with `descriptor_set`; with the registry each message's index list names its type"
                            .into(),
                    ));
                }
                _ => {}
            }
            p.descriptor_set.is_some()
        }
        _ => return Ok(()),
    };
    if !fixed && !has_registry {
        let how =
            if s.format == MessageFormat::Avro { "avro.schema_file" } else { "protobuf.descriptor_set" };
        return Err((
            key("format"),
            format!("Confluent-framed messages need a `[registry]`; without one set `{how}`"),
        ));
    }
    Ok(())
}

fn validate_settings(s: &DriftSettings, key: &str) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((format!("{key}.{k}"), m.to_owned()));
    if !(2..=1000).contains(&s.bins) {
        return err("bins", "must be between 2 and 1000");
    }
    if !(256..=1 << 16).contains(&s.cdf_resolution) {
        // Below 256 cells the ks and wasserstein tolerances of the spec no longer hold.
        return err("cdf_resolution", "must be between 256 and 65536");
    }
    if s.max_categories == 0 {
        return err("max_categories", "must be at least 1");
    }
    if !(0.0..=1.0).contains(&s.missing_share_threshold) {
        return err("missing_share_threshold", "must be between 0 and 1");
    }
    if !(0.0..=1.0).contains(&s.dataset_drift_share) || s.dataset_drift_share == 0.0 {
        return err("dataset_drift_share", "must be in (0, 1]");
    }
    if !(s.alpha > 0.0 && s.alpha < 1.0) {
        return err("alpha", "must be in (0, 1), e.g. 0.01");
    }
    if !(s.alpha_sequential > 0.0 && s.alpha_sequential < 1.0) {
        return err("alpha_sequential", "must be in (0, 1), e.g. 0.001");
    }
    Ok(())
}

fn validate_fields(fields: &[FieldConfig], key: &str) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        let k = |s: &str| format!("{key}[{i}].{s}");
        if f.name.is_empty() || !names.insert(f.name.as_str()) {
            return Err((k("name"), "must be non-empty and unique".into()));
        }
        if let (Some(kind), Some(metric)) = (f.kind, f.primary_metric)
            && !metric.applies_to(kind)
        {
            return Err((k("primary_metric"), format!("`{metric}` does not apply to a {kind} feature")));
        }
        if let Some(t) = f.threshold
            && (!t.is_finite() || t < 0.0)
        {
            return Err((k("threshold"), "must be a finite number >= 0".into()));
        }
        if let Some(e) = f.min_effect
            && (!e.is_finite() || e < 0.0)
        {
            return Err((k("min_effect"), "must be a finite number >= 0".into()));
        }
        if let (Some(metric), Some(e)) = (f.primary_metric, f.min_effect)
            && e > 1.0
            && matches!(
                metric,
                Metric::Ks | Metric::ChiSquare | Metric::JensenShannon | Metric::Hellinger | Metric::Tvd
            )
        {
            return Err((k("min_effect"), format!("`{metric}` is at most 1, so a floor of {e} never holds")));
        }
        if let Some(b) = f.bins
            && !(2..=1000).contains(&b)
        {
            return Err((k("bins"), "must be between 2 and 1000".into()));
        }
    }
    Ok(())
}

/// The `open_inference` table and the tensor addressing of a stream's fields: set
/// exactly when the format is `open_inference`, every feature named once.
fn validate_open_inference(s: &StreamConfig, key: &dyn Fn(&str) -> String) -> Result<(), (String, String)> {
    let is_oip = s.format == MessageFormat::OpenInference;
    for (j, f) in s.fields.iter().enumerate() {
        if !is_oip && (f.tensor.is_some() || f.column.is_some()) {
            let k = if f.tensor.is_some() { "tensor" } else { "column" };
            return Err((
                key(&format!("fields[{j}].{k}")),
                "only `open_inference` streams address tensors".into(),
            ));
        }
        if is_oip && f.path.is_some() {
            return Err((
                key(&format!("fields[{j}].path")),
                "an `open_inference` field is addressed by `tensor` and `column`, not `path`".into(),
            ));
        }
        if f.tensor.as_deref() == Some("") {
            return Err((key(&format!("fields[{j}].tensor")), "must not be empty".into()));
        }
    }
    let Some(oip) = &s.open_inference else {
        if is_oip {
            return Err((
                key("open_inference"),
                "format `open_inference` needs `[streams.open_inference]` with `message = \"request\"` or \
                 `\"response\"`"
                    .into(),
            ));
        }
        return Ok(());
    };
    if !is_oip {
        return Err((key("open_inference"), "only for `format = \"open_inference\"`".into()));
    }
    let mut named = std::collections::HashSet::new();
    for (tensor, names) in &oip.columns {
        let k = || key(&format!("open_inference.columns.{tensor:?}"));
        if tensor.is_empty() {
            return Err((key("open_inference.columns"), "a tensor name must not be empty".into()));
        }
        if names.is_empty() {
            return Err((k(), "name at least one column".into()));
        }
        for name in names {
            if name.is_empty() || !named.insert(name.as_str()) {
                return Err((k(), format!("`{name}`: column names must be non-empty and named once")));
            }
        }
    }
    Ok(())
}

/// Replaces `${NAME}` in every string value with the environment variable's value;
/// an unset variable is an error naming the key. `$${` escapes a literal `${`.
fn expand_env(value: &mut toml::Value, key: &mut String) -> Result<(), (String, String)> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand_str(s)
                .map_err(|var| (key.clone(), format!("environment variable `{var}` is not set")))?;
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let len = key.len();
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
                expand_env(v, key)?;
                key.truncate(len);
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let len = key.len();
                key.push_str(&format!("[{i}]"));
                expand_env(v, key)?;
                key.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let Some(end) = rest[pos + 2..].find('}') else {
            out.push_str(&rest[pos..]);
            return Ok(out);
        };
        let var = &rest[pos + 2..pos + 2 + end];
        out.push_str(&std::env::var(var).map_err(|_| var.to_owned())?);
        rest = &rest[pos + 2 + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_config_takes_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.defaults, DriftSettings::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[defaults]\nbinz = 3\n").unwrap_err().to_string();
        assert!(e.contains("binz"), "{e}");
    }

    #[test]
    fn bad_value_names_its_path() {
        let e = parse("[[fields]]\nname = \"a\"\nprimary_metric = \"nope\"\n").unwrap_err().to_string();
        assert!(e.contains("fields[0].primary_metric"), "{e}");
        let e = parse("[defaults]\nbins = 1\n").unwrap_err().to_string();
        assert!(e.contains("defaults.bins"), "{e}");
    }

    #[test]
    fn shutdown_timeout_is_bounded_and_named() {
        assert_eq!(parse("").unwrap().state.shutdown_timeout, std::time::Duration::from_secs(10));
        let e = parse("[state]\nshutdown_timeout = \"1ms\"\n").unwrap_err().to_string();
        assert!(e.contains("state.shutdown_timeout"), "{e}");
    }

    #[test]
    fn no_static_membership_is_warned_about_by_key_and_cost() {
        let stream = "[[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"json\"\n\
                      window = { type = \"tumbling_count\", size = 10 }\nreference = { from_stream = 10 }\n\
                      [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n";
        let warnings = parse(stream).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].0.contains("group.instance.id"), "{warnings:?}");
        assert!(warnings[0].1.contains("session timeout"), "{warnings:?}");
        let with_id = format!("[kafka]\nproperties = {{ \"group.instance.id\" = \"a-0\" }}\n{stream}");
        assert!(parse(&with_id).unwrap().warnings().is_empty());
        // Nothing to consume (a `score` config): nothing to warn about.
        assert!(parse("").unwrap().warnings().is_empty());
    }

    #[test]
    fn env_expansion_and_missing_variable() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("DRIFTSCOPE_TEST_GROUP", "g1") };
        let c = parse("[kafka]\ngroup_id = \"${DRIFTSCOPE_TEST_GROUP}-x\"\n").unwrap();
        assert_eq!(c.kafka.group_id, "g1-x");
        let e = parse("[kafka]\ngroup_id = \"${DRIFTSCOPE_SURELY_UNSET_VAR}\"\n").unwrap_err().to_string();
        assert!(e.contains("kafka.group_id") && e.contains("DRIFTSCOPE_SURELY_UNSET_VAR"), "{e}");
        assert_eq!(expand_str("a$${b}").unwrap(), "a${b}");
    }

    #[test]
    fn schema_formats_need_a_registry_or_a_fixed_schema_and_errors_name_the_key() {
        let stream = |format: &str, extra: &str| {
            format!(
                "[[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"{format}\"\n\
                 window = {{ type = \"tumbling_count\", size = 10 }}\nreference = {{ from_stream = 10 }}\n{extra}"
            )
        };
        let e = parse(&stream("avro", "")).unwrap_err().to_string();
        assert!(e.contains("streams[0].format") && e.contains("[registry]"), "{e}");
        parse(&stream("avro", "avro = { schema_file = \"x.avsc\" }\n")).unwrap();
        let e =
            parse(&stream("protobuf", "protobuf = { descriptor_set = \"x.pb\" }\n")).unwrap_err().to_string();
        assert!(e.contains("streams[0].protobuf.message"), "{e}");
        let e = parse(&stream("json", "avro = { schema_file = \"x.avsc\" }\n")).unwrap_err().to_string();
        assert!(e.contains("streams[0].avro"), "{e}");
        let registry = "[registry]\nurl = \"http://127.0.0.1:8081\"\ntimeout = \"2s\"\n";
        let c = parse(&format!("{registry}{}", stream("protobuf", ""))).unwrap();
        let e = parse(&format!("{registry}{}", stream("protobuf", "protobuf = { message = \"a.B\" }\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("streams[0].protobuf.message"), "{e}");
        assert_eq!(c.registry.unwrap().timeout, Duration::from_secs(2));
        for (bad, key) in [
            ("[registry]\nurl = \"registry:8081\"\n", "registry.url"),
            ("[registry]\nurl = \"http://r\"\nusername = \"u\"\n", "registry.password"),
            (
                "[registry]\nurl = \"http://r\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"\n",
                "registry.bearer_token",
            ),
            ("[registry]\nurl = \"http://r\"\nmax_backoff = \"1h\"\n", "registry.max_backoff"),
            ("[registry]\nurl = \"http://r\"\nurll = \"x\"\n", "urll"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        // Secrets never print.
        let c = parse("[registry]\nurl = \"http://r\"\nbearer_token = \"s3cret\"\n").unwrap();
        assert!(!format!("{:?}", c.redacted()).contains("s3cret"));
    }

    #[test]
    fn dead_letter_max_bytes_defaults_and_is_validated() {
        assert_eq!(parse("").unwrap().kafka.dead_letter_max_bytes, 256 * 1024);
        assert_eq!(
            parse("[kafka]\ndead_letter_max_bytes = 4096\n").unwrap().kafka.dead_letter_max_bytes,
            4096
        );
        for bad in ["0", "209715200"] {
            let e = parse(&format!("[kafka]\ndead_letter_max_bytes = {bad}\n")).unwrap_err().to_string();
            assert!(e.contains("kafka.dead_letter_max_bytes"), "{e}");
        }
    }

    #[test]
    fn a_format_options_table_is_checked_against_the_format_by_key() {
        let stream = |format: &str, json: &str| {
            format!(
                "[[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"{format}\"\n{json}\n\
                 window = {{ type = \"tumbling_count\", size = 10 }}\nreference = {{ from_stream = 10 }}\n"
            )
        };
        let ok = parse(&stream("json", "json = { records_path = \"/instances\" }")).unwrap();
        assert_eq!(ok.streams[0].json.as_ref().and_then(|j| j.records_path.as_deref()), Some("/instances"));
        let e = parse(&stream("arrow_ipc", "json = { records_path = \"\" }")).unwrap_err().to_string();
        assert!(e.contains("streams[0].json"), "{e}");
        let e = parse(&stream("json", "json = { records_path = \"instances\" }")).unwrap_err().to_string();
        assert!(e.contains("streams[0].json.records_path"), "{e}");
        let e = parse(&stream("json", "json = { record_path = \"\" }")).unwrap_err().to_string();
        assert!(e.contains("record_path"), "{e}");
    }

    #[test]
    fn open_inference_table_and_tensor_addressing_are_validated_by_key() {
        let stream = |format: &str, extra: &str| {
            format!(
                "[[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"{format}\"\n\
                 window = {{ type = \"tumbling_count\", size = 10 }}\nreference = {{ from_stream = 10 }}\n{extra}"
            )
        };
        let table =
            "[streams.open_inference]\nmessage = \"request\"\ncolumns = { \"input-0\" = [\"a\", \"b\"] }\n";
        let field =
            "[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\ntensor = \"input-1\"\ncolumn = 2\n";
        let c = parse(&stream("open_inference", &format!("{table}{field}"))).unwrap();
        let oip = c.streams[0].open_inference.as_ref().unwrap();
        assert_eq!(oip.message, InferenceMessage::Request);
        assert_eq!(oip.encoding, InferenceEncoding::Auto);
        assert_eq!(c.streams[0].fields[0].column, Some(2));
        let cases = [
            (stream("open_inference", ""), "streams[0].open_inference"),
            (stream("json", table), "streams[0].open_inference"),
            (stream("json", field), "streams[0].fields[0].tensor"),
            ("[[fields]]\nname = \"x\"\ncolumn = 1\n".to_string(), "fields[0].column"),
            (
                stream(
                    "open_inference",
                    &format!("{table}[[streams.fields]]\nname = \"y\"\npath = \"/y\"\n"),
                ),
                "streams[0].fields[0].path",
            ),
            (
                stream(
                    "open_inference",
                    "[streams.open_inference]\nmessage = \"request\"\ncolumns = { t = [\"a\", \"a\"] }\n",
                ),
                "streams[0].open_inference.columns.\"t\"",
            ),
            (
                stream("open_inference", "[streams.open_inference]\nmessage = \"reply\"\n"),
                "streams[0].open_inference.message",
            ),
        ];
        for (text, key) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")) || e.contains(key), "{key}: {e}");
        }
    }
}
