//! How the monitor starts global mode: the publishing side for its pipeline thread
//! and the owner's scoring loop on a thread of its own, stopped with the monitor.

use super::publishing::Publishing;
use super::scoring::{GlobalStream, Scoring};
use crate::config::Config;
use crate::config::scale::ScaleMode;
use crate::health::Health;
use crate::monitor::{MonitorError, ScoredWindow, Stop, StreamState};
use crate::stats::partial::PartialHeader;
use crate::telemetry::Telemetry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use tokio::sync::mpsc;

/// Both sides of global mode, when any stream is global.
pub fn setup(
    config: &Config,
    health: &Arc<Health>,
    telemetry: &Arc<Telemetry>,
    streams: &[StreamState],
    reports: &mpsc::Sender<ScoredWindow>,
) -> Result<(Option<Publishing>, Option<Scoring>), MonitorError> {
    if !config.scale.any_global(&config.streams) {
        return Ok((None, None));
    }
    let publishing = Publishing::new(config, health.clone())?;
    let mut global = Vec::new();
    for (s, state) in config.streams.iter().zip(streams) {
        if config.scale.mode_of(&s.name) != ScaleMode::Global {
            continue;
        }
        // StreamState refuses a global stream without a reference at start-up.
        let Some(reference) = state.reference() else { continue };
        let (window, digest) = state.fingerprint();
        global.push(GlobalStream {
            name: s.name.clone(),
            topics: s.topics.clone(),
            header: PartialHeader::new(&s.name, &window, digest),
            spec: crate::monitor::stream::window_spec(&s.window).0,
            reference: reference.clone(),
            counters: telemetry.stream(&s.name),
        });
    }
    let scoring = Scoring::new(
        &config.kafka,
        &config.scale.partials_topic,
        config.scale.idle_timeout,
        global,
        reports.clone(),
        super::scoring::ScoringBoard {
            instance: config.scale.instance_name(),
            health: health.clone(),
            series: telemetry.global.clone(),
        },
    )?;
    tracing::info!(
        instance = %config.scale.instance_name(),
        partials_topic = %config.scale.partials_topic,
        partials_group = %format!("{}{}", config.kafka.group_id, super::publisher::PARTIALS_GROUP_SUFFIX),
        "global mode: publishing partials and scoring the streams this instance owns"
    );
    Ok((Some(publishing), Some(scoring)))
}

/// The scoring loop's thread and the flag that ends it.
pub struct ScoringThread {
    handle: JoinHandle<Result<(), super::ScaleError>>,
    done: Arc<AtomicBool>,
}

pub fn spawn_scoring(
    scoring: Option<Scoring>,
    stop: &Arc<Stop>,
) -> Result<Option<ScoringThread>, MonitorError> {
    let Some(scoring) = scoring else { return Ok(None) };
    let done = Arc::new(AtomicBool::new(false));
    let (stop, ended) = (stop.clone(), done.clone());
    let handle = std::thread::Builder::new()
        .name("driftscope-owner".into())
        .spawn(move || scoring.run(&|| stop.requested() || ended.load(Ordering::SeqCst)))
        .map_err(MonitorError::Thread)?;
    Ok(Some(ScoringThread { handle, done }))
}

/// Ends the scoring loop (after the pipeline thread ended) and waits for it.
pub fn join_scoring(thread: Option<ScoringThread>) -> Result<(), MonitorError> {
    let Some(thread) = thread else { return Ok(()) };
    thread.done.store(true, Ordering::SeqCst);
    match thread.handle.join() {
        Ok(result) => result.map_err(MonitorError::from),
        Err(_) => Err(MonitorError::Panicked),
    }
}
