//! Outputs: where scored windows go. Every report updates the Prometheus gauges, is
//! kept in a bounded history for the API, and is appended to the reports file when
//! one is configured. Reports the monitor sends again after a restart (`replayed`)
//! are taken only where they are new: the history and the reports file keep one copy
//! per window, and the triggers do not evaluate a window twice.

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

    /// Appends a report; a report of a window the stream's history already holds (or
    /// an older one) is ignored when `replayed`.
    pub fn push(&self, report: Arc<Report>, replayed: bool) {
        let Ok(mut streams) = self.streams.write() else {
            return;
        };
        let list = streams.entry(report.stream.clone().unwrap_or_default()).or_default();
        if replayed && list.back().is_some_and(|newest| newest.window.index >= report.window.index) {
            return;
        }
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
    reports_file: Option<ReportsFile>,
}

struct ReportsFile {
    path: PathBuf,
    file: std::fs::File,
    /// Per stream, the newest window index in the file (replayed reports up to it are
    /// already there).
    newest: BTreeMap<String, u64>,
}

/// How much of the end of an existing reports file is read at start-up to find the
/// newest window of each stream: far more than the reports a restart can replay.
const REPORTS_FILE_TAIL: u64 = 16 << 20;

/// The newest window index per stream among the complete lines at the end of a
/// reports file.
fn newest_in_reports_file(file: &mut std::fs::File) -> std::io::Result<BTreeMap<String, u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(REPORTS_FILE_TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(default)]
        stream: Option<String>,
        window: crate::stats::WindowInfo,
    }
    let mut newest = BTreeMap::new();
    // The first line may be cut by the tail's start, the last by a crash: both fail to
    // parse and are skipped.
    for line in tail.split(|&b| b == b'\n') {
        if let Ok(l) = serde_json::from_slice::<Line>(line) {
            let entry = newest.entry(l.stream.unwrap_or_default()).or_insert(0);
            *entry = (*entry).max(l.window.index);
        }
    }
    Ok(newest)
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
                let mut file =
                    std::fs::OpenOptions::new().create(true).read(true).append(true).open(&path)?;
                let newest = newest_in_reports_file(&mut file)?;
                Some(ReportsFile { path, file, newest })
            }
            None => None,
        };
        Ok(Outputs { telemetry, history, triggers, reports_file })
    }

    pub fn handle(&mut self, window: ScoredWindow) {
        let report = window.report;
        let stream = report.stream.clone().unwrap_or_default();
        metrics::record_report(&self.telemetry, &report);
        if !window.replayed {
            self.telemetry.scoring_seconds.observe(&stream, window.scoring);
        }
        if let Some(out) = &mut self.reports_file {
            let written = out.newest.get(&stream).is_some_and(|&newest| newest >= report.window.index);
            if !(window.replayed && written) {
                let mut line = serde_json::to_vec(&*report).unwrap_or_default();
                line.push(b'\n');
                match out.file.write_all(&line).and_then(|_| out.file.flush()) {
                    Ok(()) => {
                        out.newest.insert(stream.clone(), report.window.index);
                    }
                    Err(e) => {
                        tracing::error!(path = %out.path.display(), error = %e, "cannot append to the reports file")
                    }
                }
            }
        }
        if let Some(engine) = &mut self.triggers {
            let evaluated =
                if window.replayed { engine.on_replayed_report(&report) } else { engine.on_report(&report) };
            match evaluated {
                Ok(fired) => {
                    for id in fired {
                        tracing::info!(trigger = %id, stream = %stream, "retraining trigger fired");
                    }
                }
                // The fired event is still queued in memory; its durable copy failed.
                Err(e) => tracing::error!(error = %e, "cannot persist a fired trigger to the outbox"),
            }
        }
        if !window.distributions.is_empty() {
            self.history.set_distributions(LatestDistributions {
                stream,
                window: report.window.clone(),
                features: window.distributions,
            });
        }
        self.history.push(report, window.replayed);
    }
}
