//! Outputs: where scored windows go. Every report updates the Prometheus gauges, is
//! kept in a bounded history for the API, and is appended to the reports file when
//! one is configured.

pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod triggers;

use crate::monitor::ScoredWindow;
use crate::stats::report::Report;
use crate::telemetry::Telemetry;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The recent reports of every stream, newest last, for the HTTP API and dashboard.
#[derive(Default)]
pub struct History {
    capacity: usize,
    streams: RwLock<BTreeMap<String, VecDeque<Arc<Report>>>>,
    distributions: RwLock<BTreeMap<String, LatestDistributions>>,
}

/// The newest window's distributions of one stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatestDistributions {
    pub stream: String,
    pub window: crate::stats::WindowInfo,
    pub features: Arc<Vec<crate::stats::distribution::FeatureDistribution>>,
}

impl History {
    pub fn new(capacity: usize, streams: impl IntoIterator<Item = String>) -> Self {
        History {
            capacity: capacity.max(1),
            streams: RwLock::new(streams.into_iter().map(|s| (s, VecDeque::new())).collect()),
            distributions: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn push(&self, report: Arc<Report>) {
        let Ok(mut streams) = self.streams.write() else {
            return;
        };
        let list = streams.entry(report.stream.clone().unwrap_or_default()).or_default();
        if list.len() == self.capacity {
            list.pop_front();
        }
        list.push_back(report);
    }

    /// The newest `limit` reports of `stream`, oldest first; `None` for an unknown stream.
    pub fn recent(&self, stream: &str, limit: usize) -> Option<Vec<Arc<Report>>> {
        let streams = self.streams.read().ok()?;
        let list = streams.get(stream)?;
        Some(list.iter().skip(list.len().saturating_sub(limit)).cloned().collect())
    }

    pub fn latest(&self, stream: &str) -> Option<Option<Arc<Report>>> {
        let streams = self.streams.read().ok()?;
        Some(streams.get(stream)?.back().cloned())
    }

    pub fn set_distributions(&self, latest: LatestDistributions) {
        if let Ok(mut map) = self.distributions.write() {
            map.insert(latest.stream.clone(), latest);
        }
    }

    pub fn distributions(&self, stream: &str) -> Option<LatestDistributions> {
        self.distributions.read().ok()?.get(stream).cloned()
    }

    pub fn stream_names(&self) -> Vec<String> {
        self.streams.read().map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }
}

/// Fans a scored window out to every output.
pub struct Outputs {
    pub telemetry: Arc<Telemetry>,
    pub history: Arc<History>,
    triggers: Option<triggers::TriggerEngine>,
    reports_file: Option<(PathBuf, std::fs::File)>,
}

impl Outputs {
    pub fn new(
        telemetry: Arc<Telemetry>,
        history: Arc<History>,
        reports_file: Option<PathBuf>,
        triggers: Option<triggers::TriggerEngine>,
    ) -> std::io::Result<Outputs> {
        let reports_file = match reports_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                Some((path, file))
            }
            None => None,
        };
        Ok(Outputs { telemetry, history, triggers, reports_file })
    }

    pub fn handle(&mut self, window: ScoredWindow) {
        let report = window.report;
        metrics::record_report(&self.telemetry, &report);
        self.telemetry.scoring_seconds.observe(report.stream.as_deref().unwrap_or(""), window.scoring);
        if let Some((path, file)) = &mut self.reports_file {
            let mut line = serde_json::to_vec(&*report).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = file.write_all(&line).and_then(|_| file.flush()) {
                tracing::error!(path = %path.display(), error = %e, "cannot append to the reports file");
            }
        }
        if let Some(engine) = &mut self.triggers {
            match engine.on_report(&report) {
                Ok(fired) => {
                    for id in fired {
                        tracing::info!(trigger = %id, stream = report.stream.as_deref().unwrap_or(""), "retraining trigger fired");
                    }
                }
                // The fired event is still queued in memory; its durable copy failed.
                Err(e) => tracing::error!(error = %e, "cannot persist a fired trigger to the outbox"),
            }
        }
        self.history.set_distributions(LatestDistributions {
            stream: report.stream.clone().unwrap_or_default(),
            window: report.window.clone(),
            features: window.distributions,
        });
        self.history.push(report);
    }
}
