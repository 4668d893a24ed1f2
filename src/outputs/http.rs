//! The HTTP server (axum): Prometheus metrics, liveness and readiness, and the JSON
//! API over recent reports. `/api/*` takes an optional bearer token.

use super::History;
use crate::health::Health;
use crate::scale::status::{GlobalStatus, OwnedStatus};
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
    // Global mode's lines inform; they do not decide readiness (a stream another
    // instance owns, or one waiting for partials, is no reason to take this one out).
    let global =
        state.health.global.lock().ok().and_then(|g| g.as_ref().map(global_lines)).unwrap_or_default();
    if reasons.is_empty() {
        (StatusCode::OK, format!("ready\n{global}")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n{global}", reasons.join("; ")))
            .into_response()
    }
}

/// `/readyz`'s lines on global mode: what this instance owns, whether partials flow,
/// what waits for what, and disagreeing configs.
fn global_lines(g: &GlobalStatus) -> String {
    let mut out = String::new();
    let seconds = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
    if g.owned.is_empty() {
        out.push_str(&format!("global: instance `{}` owns no stream\n", g.instance));
    }
    for (stream, o) in &g.owned {
        let flowing = match o.last_partial_age_ms {
            Some(age) => format!("last partial {} ago", seconds(age)),
            None => "no partial read yet".to_owned(),
        };
        out.push_str(&format!(
            "global: instance `{}` owns stream `{stream}`: {flowing}; {} window(s) waiting",
            g.instance, o.windows_waiting
        ));
        if let Some(w) = o.waiting.first() {
            out.push_str(&format!(" (oldest ends {} and waits for {})", w.end, w.waiting_for.join(", ")));
        }
        out.push('\n');
        for d in &o.disagreements {
            out.push_str(&format!(
                "global: stream `{stream}` is not scored: partials of {} from instance `{}` were folded with \
                 another {} ({} there, {} here); give every instance the same config\n",
                d.source(),
                d.instance.as_deref().unwrap_or("?"),
                d.what,
                d.theirs,
                d.ours
            ));
        }
    }
    for (stream, owner) in &g.owners {
        if g.owns(stream) {
            continue;
        }
        match owner {
            Some(owner) => {
                out.push_str(&format!("global: stream `{stream}` is owned by instance `{owner}`\n"))
            }
            None => out.push_str(&format!(
                "global: stream `{stream}` has no owner now (the partials group is rebalancing)\n"
            )),
        }
    }
    if let Some(e) = &g.describe_error {
        out.push_str(&format!("global: cannot describe the partials group `{}`: {e}\n", g.partials_group));
    }
    out
}

#[derive(Serialize)]
struct StreamSummary<'a> {
    #[serde(flatten)]
    info: &'a StreamInfo,
    windows_closed: u64,
    latest: Option<serde_json::Value>,
    /// Global streams only: who owns the stream, and on its owner the merge's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    global: Option<GlobalStream>,
}

#[derive(Serialize)]
struct GlobalStream {
    /// The owner's `scale.instance`, `null` while the partials group rebalances.
    owner: Option<String>,
    /// This instance's `scale.instance`.
    instance: String,
    owned_here: bool,
    /// The partials group's members (their `scale.instance`) at the last description.
    members: Vec<String>,
    /// On the owner: partials flowing, windows waiting, disagreements.
    #[serde(skip_serializing_if = "Option::is_none")]
    merge: Option<OwnedStatus>,
}

async fn streams(State(state): State<HttpState>) -> Response {
    let global = state.health.global.lock().ok().and_then(|g| g.clone());
    let list: Vec<StreamSummary> = state
        .streams
        .iter()
        .map(|info| {
            let latest = state.history.latest(&info.name).flatten().map(
                |r| serde_json::json!({ "window": r.window, "dataset": r.dataset, "reference": r.reference }),
            );
            let global = global.as_ref().and_then(|g| {
                let owner = g.owners.get(&info.name)?;
                Some(GlobalStream {
                    owner: owner.clone(),
                    instance: g.instance.clone(),
                    owned_here: g.owns(&info.name),
                    members: g.members.clone(),
                    merge: g.owned.get(&info.name).cloned(),
                })
            });
            StreamSummary {
                info,
                windows_closed: state.telemetry.windows_closed.with_label_values(&[info.name.as_str()]).get(),
                latest,
                global,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::status::{Disagreement, WaitingWindow};

    #[test]
    fn readyz_names_what_this_instance_owns_what_waits_and_who_disagrees() {
        let mut g =
            GlobalStatus { instance: "a".into(), partials_group: "g.partials".into(), ..Default::default() };
        g.owners.insert("s".into(), Some("a".into()));
        g.owners.insert("t".into(), Some("b".into()));
        g.owners.insert("u".into(), None);
        let owned = OwnedStatus {
            last_partial_age_ms: Some(1500),
            windows_waiting: 2,
            waiting: vec![WaitingWindow {
                index: 1,
                start: "S".into(),
                end: "E".into(),
                waiting_for: vec!["in/3".into(), "in/5".into()],
            }],
            disagreements: vec![Disagreement {
                topic: "in".into(),
                partition: 3,
                instance: Some("c".into()),
                what: "window".into(),
                ours: "10s".into(),
                theirs: "20s".into(),
                refused: 4,
                last_refused: "T".into(),
            }],
            ..Default::default()
        };
        g.owned.insert("s".into(), owned);
        let text = global_lines(&g);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "global: instance `a` owns stream `s`: last partial 1.5 s ago; 2 window(s) waiting (oldest ends E \
                 and waits for in/3, in/5)",
                "global: stream `s` is not scored: partials of in/3 from instance `c` were folded with another \
                 window (20s there, 10s here); give every instance the same config",
                "global: stream `t` is owned by instance `b`",
                "global: stream `u` has no owner now (the partials group is rebalancing)",
            ]
        );
        g.owned.clear();
        g.describe_error = Some("timed out".into());
        let text = global_lines(&g);
        assert!(text.starts_with("global: instance `a` owns no stream\n"), "{text}");
        assert!(text.contains("stream `s` is owned by instance `a`"), "{text}");
        assert!(text.ends_with("cannot describe the partials group `g.partials`: timed out\n"), "{text}");
    }
}
