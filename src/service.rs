//! `driftscope run` as a library call: builds the monitor and the outputs from one
//! config, runs them until the shutdown signal, and stops them in order within
//! `state.shutdown_timeout` (the monitor finishes its record, checkpoints and commits,
//! the outputs drain what it sent, trigger deliveries in flight get what time is left).

use crate::config::Config;
use crate::health::Health;
use crate::monitor::{Monitor, MonitorError, ScoredWindow, Stop};
use crate::outputs::triggers::{TriggerEngine, TriggerHandle};
use crate::outputs::{History, Outputs};
use crate::telemetry::Telemetry;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no [[streams]] configured: nothing to monitor")]
    NoStreams,
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error("outputs: {0}")]
    Outputs(std::io::Error),
    #[error(transparent)]
    Triggers(#[from] crate::outputs::triggers::TriggerError),
    #[error("http server cannot listen on {0}: {1}")]
    Http(String, std::io::Error),
    #[error("the monitor thread panicked")]
    Panicked,
}

/// Reports in flight between the monitor and the outputs; when full, the monitor
/// waits (backpressure) instead of buffering without bound.
const REPORT_QUEUE: usize = 64;

/// Shared handles of a running service, for the HTTP server and tests.
#[derive(Clone)]
pub struct ServiceHandles {
    pub telemetry: Arc<Telemetry>,
    pub history: Arc<History>,
    pub health: Arc<Health>,
    /// Where the HTTP server listens, once it does.
    pub http_addr: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

impl ServiceHandles {
    pub fn new(config: &Config) -> ServiceHandles {
        ServiceHandles {
            telemetry: Arc::new(if config.scale.any_global(&config.streams) {
                Telemetry::with_instance(Some(&config.scale.instance_name()))
            } else {
                Telemetry::new()
            }),
            history: Arc::new(History::new(
                config.outputs.history,
                config.streams.iter().map(|s| s.name.clone()),
            )),
            health: Arc::new(Health::default()),
            http_addr: Arc::new(std::sync::OnceLock::new()),
        }
    }
}

/// Start-up choices that are not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Set an existing checkpoint aside instead of restoring it (`--fresh-state`).
    pub fresh_state: bool,
}

/// Runs until `shutdown` resolves; returns after a clean stop.
pub async fn run(
    config: Config,
    handles: ServiceHandles,
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServiceError> {
    if config.streams.is_empty() {
        return Err(ServiceError::NoStreams);
    }
    for (key, warning) in config.warnings() {
        tracing::warn!(key = %key, "{warning}");
    }
    let (tx, mut rx) = mpsc::channel::<ScoredWindow>(REPORT_QUEUE);
    let monitor = Monitor::new(&config, &handles.telemetry, handles.health.clone(), tx, options.fresh_state)?;
    let (engine, trigger_handle) = if config.triggers.is_empty() {
        (None, None)
    } else {
        let (engine, handle) = TriggerEngine::open(
            &config.triggers,
            &config.state.dir,
            Some(&config.kafka),
            handles.telemetry.clone(),
        )?;
        for problem in handle.problems() {
            tracing::error!(problem = %problem, "trigger state");
        }
        let names: Vec<&str> = config.triggers.iter().map(|t| t.name.as_str()).collect();
        handles.telemetry.init_series(&[], &names, &[]);
        (Some(engine), Some(handle))
    };
    let mut outputs = Outputs::new(
        handles.telemetry.clone(),
        handles.history.clone(),
        config.outputs.reports_file.clone(),
        engine,
    )
    .map_err(ServiceError::Outputs)?;
    // Listen before consuming, so a taken port fails start-up instead of a running monitor.
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = match config.http.listen.as_str() {
        "" => None,
        listen => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| ServiceError::Http(listen.to_owned(), e))?;
            let local = listener.local_addr().map_err(|e| ServiceError::Http(listen.to_owned(), e))?;
            tracing::info!(address = %local, "http server listening: /metrics /healthz /readyz /api/v1");
            let _ = handles.http_addr.set(local);
            let state = http_state(&config, &handles, trigger_handle.clone());
            let app = crate::outputs::http::router(state);
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = http_stop_rx.await;
                    })
                    .await;
            }))
        }
    };
    let stop = Arc::new(Stop::default());
    let monitor_stop = stop.clone();
    let monitor_thread = std::thread::Builder::new()
        .name("driftscope-monitor".into())
        .spawn(move || monitor.run(monitor_stop))
        .map_err(ServiceError::Outputs)?;
    let drain = tokio::spawn(async move {
        while let Some(window) = rx.recv().await {
            outputs.handle(window);
        }
    });
    let (delivery_stop_tx, delivery_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let delivery = trigger_handle.as_ref().map(|h| {
        h.spawn_delivery(async move {
            let _ = delivery_stop_rx.await;
        })
    });
    shutdown.await;
    let bound = config.state.shutdown_timeout;
    tracing::info!(timeout = %humantime::format_duration(bound), "shutting down");
    stop.request(bound);
    handles.health.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    // The monitor bounds its own waits (commit, consumer close) by the deadline.
    let result = tokio::task::spawn_blocking(move || monitor_thread.join())
        .await
        .map_err(|_| ServiceError::Panicked)?
        .map_err(|_| ServiceError::Panicked)?;
    // The monitor's sender is gone, so the outputs end once they have what it sent.
    if tokio::time::timeout(stop.remaining(), drain).await.is_err() {
        tracing::warn!(
            "the outputs did not take every report within state.shutdown_timeout; the checkpoint holds them and sends them again on the next start"
        );
    }
    // Deliveries in flight get what time is left; the outbox keeps every trigger not
    // delivered for the next start.
    let _ = delivery_stop_tx.send(());
    if let Some(delivery) = delivery
        && tokio::time::timeout(stop.remaining(), delivery).await.is_err()
    {
        tracing::warn!(
            "trigger deliveries still in flight at state.shutdown_timeout: left in the outbox for the next start"
        );
    }
    let _ = http_stop_tx.send(());
    if let Some(http) = http {
        // Open connections (a dashboard's event stream) are not waited for past the bound.
        let _ = tokio::time::timeout(stop.remaining(), http).await;
    }
    result.map_err(ServiceError::from)
}

fn http_state(
    config: &Config,
    handles: &ServiceHandles,
    triggers: Option<TriggerHandle>,
) -> crate::outputs::http::HttpState {
    crate::outputs::http::HttpState {
        telemetry: handles.telemetry.clone(),
        history: handles.history.clone(),
        health: handles.health.clone(),
        streams: Arc::new(
            config
                .streams
                .iter()
                .map(|s| crate::outputs::http::StreamInfo {
                    name: s.name.clone(),
                    topics: s.topics.clone(),
                    format: format!("{:?}", s.format).to_lowercase(),
                })
                .collect(),
        ),
        api_token: config.http.api_token.clone().map(Arc::new),
        triggers,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
