//! The schema registry client (the Confluent REST API's `GET /schemas/ids/{id}`): the
//! [`SchemaSource`] behind the `avro` and `protobuf` formats' Confluent framing.
//!
//! Every schema is fetched once and cached for the process, so after warm-up no
//! message causes a lookup (counted: `driftscope_schema_registry_lookups_total`). A 404
//! is an unknown id (the message is refused as `unknown_schema`). Anything else that
//! fails (connection refused, timeout, 5xx, 401/403) means the registry cannot be
//! asked: the client retries with a doubling backoff up to `registry.max_backoff` on
//! the thread that asked (the pipeline), so consumption waits and no record is skipped,
//! and says why on `/readyz` meanwhile. It gives up only when a stop is asked for
//! (`Health::stopping`), so a stop is never held by an absent registry.
//!
//! The HTTP client is blocking and built on first use, on the pipeline thread (the
//! process's async runtime never sees it); it never runs per message.

use crate::config::{Config, RegistryConfig};
use crate::decode::DecodeContext;
use crate::decode::confluent::{RegisteredSchema, SchemaEvents, SchemaKind, SchemaLookupError, SchemaSource};
use crate::health::Health;
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry.ca_file `{0}`: {1}")]
    CaFile(std::path::PathBuf, String),
    #[error("registry: cannot build the HTTP client: {0}")]
    Client(String),
}

/// The client. Shared by every stream's decoder (one cache per process).
pub struct RegistryClient {
    config: RegistryConfig,
    ca: Option<Vec<reqwest::Certificate>>,
    http: OnceLock<Result<reqwest::blocking::Client, String>>,
    cache: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
    health: Option<Arc<Health>>,
    telemetry: Option<Arc<Telemetry>>,
    log: Mutex<crate::telemetry::RateLimitedLog>,
}

/// The answer of `GET /schemas/ids/{id}`.
#[derive(serde::Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

/// What one request gave.
enum Fetched {
    Schema(RegisteredSchema),
    NotFound,
    Failed(String),
}

/// First wait before asking an unreachable registry again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl RegistryClient {
    /// Reads the CA file now (a start-up error names it); the HTTP client itself is
    /// built on first use.
    pub fn new(
        config: &RegistryConfig,
        health: Option<Arc<Health>>,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Result<RegistryClient, RegistryError> {
        let ca = match &config.ca_file {
            None => None,
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| RegistryError::CaFile(path.clone(), e.to_string()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| RegistryError::CaFile(path.clone(), e.to_string()))?;
                if certs.is_empty() {
                    return Err(RegistryError::CaFile(path.clone(), "no PEM certificate in it".into()));
                }
                Some(certs)
            }
        };
        Ok(RegistryClient {
            config: config.clone(),
            ca,
            http: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
            health,
            telemetry,
            log: Mutex::new(Default::default()),
        })
    }

    fn http(&self) -> Result<&reqwest::blocking::Client, String> {
        self.http
            .get_or_init(|| {
                let mut builder = reqwest::blocking::Client::builder()
                    .timeout(self.config.timeout)
                    .connect_timeout(self.config.connect_timeout)
                    .user_agent(concat!("driftscope/", env!("CARGO_PKG_VERSION")));
                for cert in self.ca.iter().flatten() {
                    builder = builder.add_root_certificate(cert.clone());
                }
                builder.build().map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn fetch(&self, id: u32) -> Fetched {
        if let Some(t) = &self.telemetry {
            t.schema_registry_lookups.inc();
        }
        let http = match self.http() {
            Ok(http) => http,
            Err(e) => return Fetched::Failed(format!("HTTP client: {e}")),
        };
        let url = format!("{}/schemas/ids/{id}", self.config.url.trim_end_matches('/'));
        let mut request =
            http.get(&url).header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some(token) = &self.config.bearer_token {
            request = request.bearer_auth(token.expose());
        } else if let (Some(user), Some(password)) = (&self.config.username, &self.config.password) {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = match request.send() {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(format!("GET {url}: {}", error_chain(&e))),
        };
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Fetched::NotFound;
        }
        if !status.is_success() {
            return Fetched::Failed(format!("GET {url}: HTTP {status}"));
        }
        let body = match response.bytes() {
            Ok(body) => body,
            Err(e) => return Fetched::Failed(format!("GET {url}: {}", error_chain(&e))),
        };
        match serde_json::from_slice::<SchemaById>(&body) {
            Ok(body) => {
                let kind = match body.schema_type.as_deref() {
                    None | Some("AVRO") => SchemaKind::Avro,
                    Some("PROTOBUF") => SchemaKind::Protobuf,
                    Some(_) => SchemaKind::Json,
                };
                Fetched::Schema(RegisteredSchema { kind, text: body.schema })
            }
            Err(e) => Fetched::Failed(format!("GET {url}: not a schema: {e}")),
        }
    }

    fn stopping(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.stopping.load(Ordering::SeqCst))
    }

    fn set_unavailable(&self, why: Option<String>) {
        if let Some(h) = &self.health
            && let Ok(mut slot) = h.registry_error.lock()
        {
            *slot = why;
        }
    }

    /// Waits `total`, in short slices so a stop is noticed at once.
    fn pause(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl SchemaSource for RegistryClient {
    fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, SchemaLookupError> {
        if let Some(s) = self.cache.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(s);
        }
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u64;
        loop {
            match self.fetch(id) {
                Fetched::Schema(schema) => {
                    if failures > 0 {
                        tracing::info!(id, failures, "schema registry reachable again");
                        self.set_unavailable(None);
                    }
                    let schema = Arc::new(schema);
                    if let Ok(mut cache) = self.cache.lock() {
                        cache.insert(id, schema.clone());
                    }
                    return Ok(schema);
                }
                Fetched::NotFound => {
                    self.set_unavailable(None);
                    return Err(SchemaLookupError::NotFound(id));
                }
                Fetched::Failed(why) => {
                    failures += 1;
                    self.set_unavailable(Some(why.clone()));
                    if let Ok(mut log) = self.log.lock()
                        && let Some(suppressed) = log.admit()
                    {
                        tracing::warn!(id, error = %why, retry_in = ?backoff, suppressed, "schema registry unavailable; consumption waits");
                    }
                    if self.stopping() {
                        return Err(SchemaLookupError::Unavailable(why));
                    }
                    self.pause(backoff);
                    if self.stopping() {
                        return Err(SchemaLookupError::Unavailable(why));
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}

/// The decoders' shared context for a run: the registry client when `[registry]` is
/// configured, and who is told of schema changes.
pub fn decode_context(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    health: &Arc<Health>,
    schema_events: Arc<dyn SchemaEvents>,
) -> Result<DecodeContext, RegistryError> {
    let schemas: Option<Arc<dyn SchemaSource>> = match &config.registry {
        Some(r) => Some(Arc::new(RegistryClient::new(r, Some(health.clone()), Some(telemetry.clone()))?)),
        None => None,
    };
    Ok(DecodeContext { schemas, schema_events: Some(schema_events) })
}

/// The same for a one-off read (`backtest`): the registry client without readiness
/// or metrics (an unreachable registry is waited for until the command is stopped).
pub fn offline_decode_context(config: &Config) -> Result<DecodeContext, RegistryError> {
    let schemas: Option<Arc<dyn SchemaSource>> = match &config.registry {
        Some(r) => Some(Arc::new(RegistryClient::new(r, None, None)?)),
        None => None,
    };
    Ok(DecodeContext { schemas, schema_events: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-route HTTP server on 127.0.0.1:0 answering each request from `answers`
    /// in turn, counting requests and keeping the last request's head.
    fn server(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((mut stream, _)) = listener.accept() else { return };
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                seen2.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (url, seen)
    }

    fn config(url: &str) -> RegistryConfig {
        RegistryConfig {
            url: url.into(),
            username: None,
            password: None,
            bearer_token: Some(crate::secret::Secret::new("tok")),
            ca_file: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_millis(20),
        }
    }

    #[test]
    fn fetches_once_caches_and_tells_404_from_unreachable() {
        let (url, seen) = server(vec![
            (503, "{}"),
            (200, r#"{"schema":"\"long\""}"#),
            (200, r#"{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}"#),
            (404, r#"{"error_code":40403}"#),
        ]);
        let health = Arc::new(Health::default());
        let telemetry = Arc::new(Telemetry::new());
        let client =
            RegistryClient::new(&config(&url), Some(health.clone()), Some(telemetry.clone())).unwrap();
        // The 503 is retried, then the schema arrives; readiness is clear again.
        let s = client.schema(1).unwrap();
        assert_eq!(*s, RegisteredSchema { kind: SchemaKind::Avro, text: "\"long\"".into() });
        assert!(health.registry_error.lock().unwrap().is_none());
        for _ in 0..10 {
            client.schema(1).unwrap();
        }
        assert_eq!(client.schema(2).unwrap().kind, SchemaKind::Protobuf);
        assert_eq!(client.schema(3), Err(SchemaLookupError::NotFound(3)));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "one request per id (and one retry), none from the cache");
        assert!(seen[1].starts_with("GET /schemas/ids/1 "), "{}", seen[1]);
        assert!(seen[1].to_ascii_lowercase().contains("authorization: bearer tok"), "{}", seen[1]);
        assert_eq!(telemetry.schema_registry_lookups.get(), 4);
    }

    #[test]
    fn an_unreachable_registry_is_retried_until_a_stop_and_shown_on_readiness() {
        // A port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let health = Arc::new(Health::default());
        let client = Arc::new(
            RegistryClient::new(&config(&format!("http://127.0.0.1:{port}")), Some(health.clone()), None)
                .unwrap(),
        );
        let asking = std::thread::spawn({
            let client = client.clone();
            move || client.schema(1)
        });
        wait_until(|| health.registry_error.lock().unwrap().is_some());
        assert!(!asking.is_finished(), "the lookup waits while the registry is away");
        health.stopping.store(true, Ordering::SeqCst);
        let result = asking.join().unwrap();
        assert!(matches!(result, Err(SchemaLookupError::Unavailable(_))), "{result:?}");
    }

    fn wait_until(mut ok: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < until, "condition not reached");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a pem").unwrap();
        let mut c = config("https://x");
        c.ca_file = Some(path.clone());
        let e = RegistryClient::new(&c, None, None).err().unwrap().to_string();
        assert!(e.contains("ca.pem"), "{e}");
    }
}
