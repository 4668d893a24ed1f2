//! The HTTP server (axum): Prometheus metrics, liveness and readiness, and the JSON
//! API over recent reports. `/api/*` takes an optional bearer token.

use super::History;
use crate::health::Health;
use crate::telemetry::Telemetry;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub telemetry: Arc<Telemetry>,
    pub history: Arc<History>,
    pub health: Arc<Health>,
    pub streams: Arc<Vec<StreamInfo>>,
    pub api_token: Option<Arc<crate::secret::Secret>>,
    pub triggers: Option<super::triggers::TriggerHandle>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    pub name: String,
    pub topics: Vec<String>,
    pub format: String,
}

/// The router with every endpoint.
pub fn router(state: HttpState) -> Router {
    let api = Router::new()
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/reports/latest", get(latest_report))
        .route("/api/v1/reports", get(reports))
        .route("/api/v1/distributions/latest", get(latest_distributions))
        .route("/api/v1/triggers", get(list_triggers))
        .route("/api/v1/triggers/{id}/retry", axum::routing::post(retry_trigger))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(super::dashboard::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .with_state(state)
}

async fn require_token(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.api_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !expected.matches(given) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(request).await
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    if let Ok(lag) = state.health.lag.lock() {
        for ((topic, partition), records) in lag.iter() {
            state
                .telemetry
                .consumer_lag
                .with_label_values(&[topic.as_str(), &partition.to_string()])
                .set(*records);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.telemetry.render())
        .into_response()
}

/// Ready when the consumer has joined its group, a broker connection is up, and every
/// stream has its reference; otherwise 503 with the reasons.
async fn readyz(State(state): State<HttpState>) -> Response {
    let mut reasons = Vec::new();
    if !state.health.joined.load(Ordering::SeqCst) {
        reasons.push("the consumer has no partition assignment yet".to_owned());
    }
    if state.health.assignment_lost.load(Ordering::SeqCst) {
        reasons.push(
            "the consumer lost its partition assignment (group session expired) and is rejoining".to_owned(),
        );
    }
    if !state.health.connected.load(Ordering::SeqCst) {
        reasons.push("no connection to a Kafka broker".to_owned());
    }
    if let Ok(error) = state.health.state_error.lock()
        && let Some(error) = error.as_ref()
    {
        reasons.push(format!("state: {error}"));
    }
    if let Ok(error) = state.health.registry_error.lock()
        && let Some(error) = error.as_ref()
    {
        reasons.push(format!("schema registry unavailable (consumption waits): {error}"));
    }
    if let Ok(pending) = state.health.pending_references.lock() {
        reasons.extend(
            pending.iter().map(|s| format!("stream `{s}`: reference still being taken from the stream")),
        );
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", reasons.join("; "))).into_response()
    }
}

#[derive(Serialize)]
struct StreamSummary<'a> {
    #[serde(flatten)]
    info: &'a StreamInfo,
    windows_closed: u64,
    latest: Option<serde_json::Value>,
}

async fn streams(State(state): State<HttpState>) -> Response {
    let list: Vec<StreamSummary> = state
        .streams
        .iter()
        .map(|info| {
            let latest = state.history.latest(&info.name).flatten().map(
                |r| serde_json::json!({ "window": r.window, "dataset": r.dataset, "reference": r.reference }),
            );
            StreamSummary {
                info,
                windows_closed: state.telemetry.windows_closed.with_label_values(&[info.name.as_str()]).get(),
                latest,
            }
        })
        .collect();
    axum::Json(list).into_response()
}

#[derive(Deserialize)]
struct ReportQuery {
    stream: Option<String>,
    limit: Option<usize>,
}

fn stream_param(state: &HttpState, query: &ReportQuery) -> Result<String, Box<Response>> {
    match &query.stream {
        Some(s) if state.streams.iter().any(|i| &i.name == s) => Ok(s.clone()),
        Some(s) => Err(Box::new(error(StatusCode::NOT_FOUND, &format!("no stream named `{s}`")))),
        None if state.streams.len() == 1 => Ok(state.streams[0].name.clone()),
        None => Err(Box::new(error(StatusCode::BAD_REQUEST, "name a stream: ?stream=NAME"))),
    }
}

async fn latest_report(State(state): State<HttpState>, Query(query): Query<ReportQuery>) -> Response {
    let stream = match stream_param(&state, &query) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match state.history.latest(&stream).flatten() {
        Some(report) => axum::Json(&*report).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("stream `{stream}` has not closed a window yet")),
    }
}

async fn latest_distributions(State(state): State<HttpState>, Query(query): Query<ReportQuery>) -> Response {
    let stream = match stream_param(&state, &query) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match state.history.distributions(&stream) {
        Some(latest) => axum::Json(latest).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("stream `{stream}` has not closed a window yet")),
    }
}

async fn list_triggers(State(state): State<HttpState>) -> Response {
    match &state.triggers {
        Some(handle) => axum::Json(handle.list()).into_response(),
        None => axum::Json(Vec::<()>::new()).into_response(),
    }
}

async fn retry_trigger(
    State(state): State<HttpState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    use super::triggers::RetryError;
    let Some(handle) = &state.triggers else {
        return error(StatusCode::NOT_FOUND, "no triggers are configured");
    };
    match handle.retry(&id).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(e @ RetryError::NotFound(..)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ RetryError::AlreadyDelivered(..)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn reports(State(state): State<HttpState>, Query(query): Query<ReportQuery>) -> Response {
    let stream = match stream_param(&state, &query) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 10_000);
    let list = state.history.recent(&stream, limit).unwrap_or_default();
    let list: Vec<&crate::stats::Report> = list.iter().map(|r| &**r).collect();
    axum::Json(list).into_response()
}
