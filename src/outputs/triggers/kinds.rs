//! One delivery attempt per kind: the signed webhook POST, GitHub's
//! `repository_dispatch`, GitLab's pipeline trigger and the Kafka record, each
//! reduced to an [`Outcome`]: delivered, retry (maybe after `Retry-After`), or dead.
//! Redirects are never followed; errors never carry a secret or the request URL.

use super::TriggerError;
use super::outbox::Entry;
use super::signing::WebhookKey;
use crate::config::KafkaConfig;
use crate::config::triggers::{DeliveryConfig, KindConfig, TriggerConfig};
use crate::secret::{REDACTED, Secret};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Header carrying the trigger id on Kafka trigger records.
pub const KAFKA_ID_HEADER: &str = "driftscope-trigger-id";

/// At most this much of an error answer's body is kept in `last_error`.
const ERROR_BODY_BYTES: usize = 300;

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted by the receiver.
    Delivered,
    /// Failed in a way worth retrying; `retry_after` is the receiver's request.
    Retry {
        /// What went wrong.
        error: String,
        /// How long the receiver asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Failed in a way retrying will not fix (a 4xx, a redirect, a bad secret).
    Dead {
        /// What went wrong.
        error: String,
    },
}

/// A secret given inline (already `${ENV}`-expanded) or by file (read at every use,
/// so a rotated file applies without a restart).
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// The value itself.
    Inline(Secret),
    /// A file holding it.
    File(PathBuf),
}

impl SecretSource {
    fn new(
        inline: &Option<Secret>,
        file: &Option<PathBuf>,
        key: String,
    ) -> Result<SecretSource, TriggerError> {
        let source = match (inline, file) {
            (Some(s), None) => SecretSource::Inline(s.clone()),
            (None, Some(f)) => SecretSource::File(f.clone()),
            _ => {
                return Err(TriggerError::Config {
                    key,
                    message: "set exactly one of the secret and the secret file".into(),
                });
            }
        };
        match source.resolve() {
            Ok(s) if !s.is_empty() => Ok(source),
            Ok(_) => Err(TriggerError::Config { key, message: "the secret is empty".into() }),
            Err(message) => Err(TriggerError::Config { key, message }),
        }
    }

    /// The current value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => Secret::from_file(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

enum Kind {
    Webhook { url: String, secret: SecretSource },
    Github { url: String, token: SecretSource, event_type: String },
    Gitlab { url: String, token: SecretSource, git_ref: String, variables: Vec<(String, String)> },
    Kafka { producer: FutureProducer, topic: String },
}

/// A configured trigger's delivery side: where and how it sends.
pub struct Target {
    /// The trigger's name.
    pub name: String,
    /// Its retry policy.
    pub policy: DeliveryConfig,
    http: reqwest::Client,
    kind: Kind,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Webhook { .. } => "webhook",
            Kind::Github { .. } => "github",
            Kind::Gitlab { .. } => "gitlab",
            Kind::Kafka { .. } => "kafka",
        };
        f.debug_struct("Target").field("name", &self.name).field("kind", &kind).finish_non_exhaustive()
    }
}

/// The HTTP client shared by all HTTP kinds: no redirects, a driftscope user agent.
pub fn http_client() -> Result<reqwest::Client, TriggerError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("driftscope/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TriggerError::Http(error_chain(&e.without_url())))
}

/// Percent-encodes one URL path segment (GitLab project paths such as `group/proj`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// librdkafka properties that only consumers accept.
fn consumer_only(key: &str) -> bool {
    matches!(
        key,
        "group.id"
            | "auto.offset.reset"
            | "enable.auto.commit"
            | "enable.auto.offset.store"
            | "auto.commit.interval.ms"
            | "fetch.message.max.bytes"
            | "statistics.interval.ms"
    )
}

impl Target {
    /// Builds the target of `config` (the `index`-th trigger): resolves secrets once
    /// to fail early, and creates the Kafka producer for `kafka` triggers.
    pub fn build(
        index: usize,
        config: &TriggerConfig,
        http: &reqwest::Client,
        kafka: Option<&KafkaConfig>,
    ) -> Result<Target, TriggerError> {
        let key = |k: &str| format!("triggers[{index}].kind.{k}");
        let kind = match &config.kind {
            KindConfig::Webhook(w) => {
                let secret_key = if w.secret_file.is_some() { key("secret_file") } else { key("secret") };
                let secret = SecretSource::new(&w.secret, &w.secret_file, secret_key.clone())?;
                let value = secret
                    .resolve()
                    .map_err(|message| TriggerError::Config { key: secret_key.clone(), message })?;
                WebhookKey::from_secret(&value)
                    .map_err(|message| TriggerError::Config { key: secret_key, message })?;
                Kind::Webhook { url: w.url.clone(), secret }
            }
            KindConfig::Github(g) => Kind::Github {
                url: format!(
                    "{}/repos/{}/{}/dispatches",
                    g.api_base.trim_end_matches('/'),
                    encode_segment(&g.owner),
                    encode_segment(&g.repo)
                ),
                token: SecretSource::new(
                    &g.token,
                    &g.token_file,
                    key(if g.token_file.is_some() { "token_file" } else { "token" }),
                )?,
                event_type: g.event_type.clone(),
            },
            KindConfig::Gitlab(g) => Kind::Gitlab {
                url: format!(
                    "{}/api/v4/projects/{}/trigger/pipeline",
                    g.base_url.trim_end_matches('/'),
                    encode_segment(&g.project)
                ),
                token: SecretSource::new(
                    &g.token,
                    &g.token_file,
                    key(if g.token_file.is_some() { "token_file" } else { "token" }),
                )?,
                git_ref: g.git_ref.clone(),
                variables: g.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            },
            KindConfig::Kafka(k) => {
                let Some(cluster) = kafka else {
                    return Err(TriggerError::Config {
                        key: format!("triggers[{index}].kind"),
                        message: "a kafka trigger needs the [kafka] brokers".into(),
                    });
                };
                let mut client = ClientConfig::new();
                client.set("bootstrap.servers", &cluster.brokers);
                for (k, v) in &cluster.properties {
                    if !consumer_only(k) {
                        client.set(k, v);
                    }
                }
                client.set("message.timeout.ms", config.delivery.timeout.as_millis().max(1).to_string());
                let producer: FutureProducer =
                    client.create().map_err(|e| TriggerError::Kafka(e.to_string()))?;
                Kind::Kafka { producer, topic: k.topic.clone() }
            }
        };
        Ok(Target { name: config.name.clone(), policy: config.delivery.clone(), http: http.clone(), kind })
    }

    /// Makes one delivery attempt of `entry`.
    pub async fn send(&self, entry: &Entry) -> Outcome {
        match &self.kind {
            Kind::Webhook { url, secret } => {
                let secret = match secret.resolve() {
                    Ok(s) => s,
                    Err(error) => {
                        return Outcome::Retry { error, retry_after: None };
                    }
                };
                let key = match WebhookKey::from_secret(&secret) {
                    Ok(k) => k,
                    Err(e) => {
                        return Outcome::Dead { error: format!("webhook secret: {e}") };
                    }
                };
                let body = entry.evidence.envelope();
                let timestamp = unix_seconds(SystemTime::now());
                let signature = key.sign(&entry.id, timestamp, &body);
                let request = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &entry.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature)
                    .body(body);
                self.http_attempt(request, &secret).await
            }
            Kind::Github { url, token, event_type } => {
                let token = match token.resolve() {
                    Ok(s) => s,
                    Err(error) => {
                        return Outcome::Retry { error, retry_after: None };
                    }
                };
                let body = match entry.evidence.github_body(event_type) {
                    Ok(b) => b,
                    Err(error) => return Outcome::Dead { error },
                };
                let request = self
                    .http
                    .post(url)
                    .bearer_auth(token.expose())
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28")
                    .header("content-type", "application/json")
                    .body(body);
                self.http_attempt(request, &token).await
            }
            Kind::Gitlab { url, token, git_ref, variables } => {
                let token = match token.resolve() {
                    Ok(s) => s,
                    Err(error) => {
                        return Outcome::Retry { error, retry_after: None };
                    }
                };
                let builtin = entry.evidence.gitlab_variables();
                let mut form: Vec<(String, String)> =
                    vec![("token".into(), token.expose().to_owned()), ("ref".into(), git_ref.clone())];
                for (k, v) in variables
                    .iter()
                    .filter(|(k, _)| !builtin.iter().any(|(b, _)| b == k))
                    .chain(builtin.iter())
                {
                    form.push((format!("variables[{k}]"), v.clone()));
                }
                let request = self.http.post(url).form(&form);
                self.http_attempt(request, &token).await
            }
            Kind::Kafka { producer, topic } => {
                let body = entry.evidence.envelope();
                let headers = OwnedHeaders::new()
                    .insert(Header { key: KAFKA_ID_HEADER, value: Some(entry.id.as_str()) })
                    .insert(Header { key: "content-type", value: Some("application/json") });
                let record =
                    FutureRecord::to(topic).key(entry.stream.as_str()).payload(&body).headers(headers);
                let timeout = self.policy.timeout;
                // librdkafka's message.timeout.ms bounds delivery; this is a backstop.
                let backstop = timeout.saturating_mul(2) + Duration::from_secs(5);
                match tokio::time::timeout(backstop, producer.send(record, timeout)).await {
                    Ok(Ok(_)) => Outcome::Delivered,
                    Ok(Err((e, _))) => kafka_outcome(&e),
                    Err(_) => {
                        Outcome::Retry { error: "kafka delivery report timed out".into(), retry_after: None }
                    }
                }
            }
        }
    }

    async fn http_attempt(&self, request: RequestBuilder, secret: &Secret) -> Outcome {
        let scrub_outcome = |outcome: Outcome| match outcome {
            Outcome::Retry { error, retry_after } => {
                Outcome::Retry { error: scrub(&error, secret), retry_after }
            }
            Outcome::Dead { error } => Outcome::Dead { error: scrub(&error, secret) },
            Outcome::Delivered => Outcome::Delivered,
        };
        let response = match request.timeout(self.policy.timeout).send().await {
            Ok(r) => r,
            Err(e) => return scrub_outcome(request_error(e, self.policy.timeout)),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = error_body(response).await;
        scrub_outcome(classify(status, retry_after, &body))
    }
}

/// Maps an HTTP status (not 2xx) to an outcome.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> Outcome {
    let detail = if body.is_empty() {
        format!("http {}", status.as_u16())
    } else {
        format!("http {}: {body}", status.as_u16())
    };
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_redirection() {
        Outcome::Dead {
            error: format!("http {} redirect not followed; configure the final URL", status.as_u16()),
        }
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Outcome::Retry { error: detail, retry_after }
    } else {
        Outcome::Dead { error: detail }
    }
}

fn request_error(e: reqwest::Error, timeout: Duration) -> Outcome {
    // The URL may embed a credential: never part of a message.
    let e = e.without_url();
    if e.is_builder() {
        return Outcome::Dead { error: format!("cannot build the request: {}", error_chain(&e)) };
    }
    let error = if e.is_timeout() {
        format!("timed out after {}", humantime::format_duration(timeout))
    } else {
        error_chain(&e)
    };
    Outcome::Retry { error, retry_after: None }
}

/// The error and its sources, `: `-joined, without the request URL (which may embed a
/// credential).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Reads at most [`ERROR_BODY_BYTES`] of an error answer, as one printable line.
async fn error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(ERROR_BODY_BYTES);
    String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Replaces every occurrence of the secret's value in `text` with `<redacted>`.
pub fn scrub(text: &str, secret: &Secret) -> String {
    let value = secret.expose();
    if value.len() < 4 {
        // Too short to scrub without mangling the message; such secrets are refused
        // at start-up anyway when empty.
        return text.to_owned();
    }
    text.replace(value, REDACTED)
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn kafka_outcome(e: &KafkaError) -> Outcome {
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::InvalidRecord
        )
    );
    let error = format!("kafka: {e}");
    if permanent { Outcome::Dead { error } } else { Outcome::Retry { error, retry_after: None } }
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses() {
        let retry =
            |s: u16| matches!(classify(StatusCode::from_u16(s).unwrap(), None, ""), Outcome::Retry { .. });
        let dead =
            |s: u16| matches!(classify(StatusCode::from_u16(s).unwrap(), None, ""), Outcome::Dead { .. });
        for s in [429, 408, 500, 502, 503, 504] {
            assert!(retry(s), "{s}");
        }
        for s in [301, 302, 307, 308, 400, 401, 403, 404, 422] {
            assert!(dead(s), "{s}");
        }
        let Outcome::Dead { error } = classify(StatusCode::FOUND, None, "") else { panic!() };
        assert!(error.contains("redirect"), "{error}");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&earlier).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn scrubbing_and_encoding() {
        let s = Secret::new("tok_abcdef");
        assert_eq!(scrub("bad token tok_abcdef here", &s), "bad token <redacted> here");
        assert_eq!(encode_segment("group/sub proj"), "group%2Fsub%20proj");
        assert_eq!(encode_segment("1234"), "1234");
    }
}
