//! Retraining triggers: conditions evaluated on every window report, fired once per
//! drift episode, written to a durable outbox before anything is sent, and delivered
//! by a tokio task with retries, dead letters and manual retry.
//!
//! * [`TriggerEngine`] (owned by the outputs, called in report order) evaluates each
//!   trigger's [`condition`] per stream, keeps the episode state (consecutive windows,
//!   cooldown, re-arming) in `episodes.json`, and writes fired events to the
//!   [`outbox`] before [`TriggerEngine::on_report`] returns.
//! * [`TriggerHandle`] (cloneable, for the delivery task and the HTTP API) delivers
//!   pending events through their [`kinds`], lists pending and dead ones, and retries
//!   dead ones by hand.
//!
//! Delivery is at least once: an event is marked done only after the receiver
//! accepted it, so a crash between the two re-sends it after restart with the same
//! id (the webhook-id / `trigger_id`), which receivers use to deduplicate.

#![warn(missing_docs)]

pub mod condition;
mod delivery;
pub mod kinds;
pub mod outbox;
pub mod payload;
pub mod signing;

pub use crate::config::triggers::{
    ConditionConfig, DeliveryConfig, GithubConfig, GitlabConfig, KafkaTriggerConfig, KindConfig, Require,
    TriggerConfig, WebhookConfig, validate,
};
pub use delivery::{backoff_cap, next_delay};
pub use outbox::Status;
pub use payload::Evidence;

use crate::config::KafkaConfig;
use crate::stats::report::Report;
use crate::telemetry::Telemetry;
use condition::{Episode, Step};
use kinds::Target;
use outbox::{Entry, EpisodeFile, Outbox};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::{Notify, watch};

/// Errors of opening the engine and of persisting its state. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A trigger's configuration cannot be used (named by key path).
    #[error("`{key}`: {message}")]
    Config {
        /// Key path, e.g. `triggers[0].kind.secret_file`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A state file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The Kafka producer of a `kafka` trigger could not be created.
    #[error("kafka producer: {0}")]
    Kafka(String),
    /// The HTTP client could not be created.
    #[error("http client: {0}")]
    Http(String),
}

/// Why [`TriggerHandle::retry`] refused.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// No pending or dead event has this id (HTTP 404).
    #[error("no pending or dead trigger has id `{0}`")]
    NotFound(String),
    /// The event was already delivered (HTTP 409).
    #[error("trigger `{0}` was already delivered")]
    AlreadyDelivered(String),
    /// The retry was accepted in memory but could not be written to the outbox.
    #[error(transparent)]
    Persist(TriggerError),
}

/// A pending or dead event as the API shows it (`GET /api/v1/triggers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerView {
    /// The trigger id (idempotency key); what `POST /api/v1/triggers/{id}/retry` takes.
    pub id: String,
    /// Trigger name.
    pub trigger: String,
    /// Stream name.
    pub stream: String,
    /// `pending` or `dead` in [`TriggerHandle::list`]; [`TriggerHandle::get`] also
    /// shows `done` for recently delivered events.
    pub status: Status,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last attempt's error (secrets scrubbed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (RFC 3339); absent for dead events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// When it was dead-lettered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<String>,
    /// When it fired (RFC 3339).
    pub fired_at: String,
    /// Index of the window that fired it.
    pub window_index: u64,
    /// What is delivered.
    pub evidence: Evidence,
}

impl TriggerView {
    fn of(e: &Entry) -> TriggerView {
        TriggerView {
            id: e.id.clone(),
            trigger: e.trigger.clone(),
            stream: e.stream.clone(),
            status: e.status,
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            next_attempt_at: (e.status == Status::Pending).then(|| format_ms(e.next_attempt_ms)),
            dead_at: (e.status == Status::Dead).then_some(e.finished_ms).flatten().map(format_ms),
            fired_at: e.evidence.fired_at.clone(),
            window_index: e.evidence.window.index,
            evidence: e.evidence.clone(),
        }
    }
}

/// State shared by the engine, the delivery task and API handles. Locks are held only
/// for in-memory updates, never across an await or a file write.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the delivery loop (new event, manual retry).
    notify: Notify,
    /// Bumped on every change, for waiters (tests, long polls).
    changes: watch::Sender<u64>,
    outbox: Outbox,
    targets: BTreeMap<String, Arc<Target>>,
    telemetry: Arc<Telemetry>,
    problems: Vec<String>,
}

#[derive(Default)]
struct Queue {
    /// Every known event by id: pending, dead, and the newest done ones.
    entries: BTreeMap<String, Entry>,
    /// Ids with an attempt under way.
    in_flight: HashSet<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, queue: &Queue) {
        let pending = queue.entries.values().filter(|e| e.status == Status::Pending).count();
        self.telemetry.trigger_queue_depth.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn count(&self, trigger: &str, outcome: &str) {
        self.telemetry.triggers.with_label_values(&[trigger, outcome]).inc();
    }

    /// Removes the oldest done entries beyond [`outbox::KEEP_DONE`]; returns their ids.
    fn prune(queue: &mut Queue) -> Vec<String> {
        let mut done: Vec<(i64, u64, String)> = queue
            .entries
            .values()
            .filter(|e| e.status == Status::Done)
            .map(|e| (e.finished_ms.unwrap_or(0), e.seq, e.id.clone()))
            .collect();
        if done.len() <= outbox::KEEP_DONE {
            return Vec::new();
        }
        done.sort();
        let excess = done.len() - outbox::KEEP_DONE;
        done.into_iter()
            .take(excess)
            .map(|(_, _, id)| {
                queue.entries.remove(&id);
                id
            })
            .collect()
    }

    /// Writes the current state of `ids` to the outbox off the async threads.
    async fn flush(self: &Arc<Self>, ids: Vec<String>) -> Result<(), TriggerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let shared = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            shared.outbox.sync(&ids, |id| shared.lock().entries.get(id).cloned())
        })
        .await;
        match result {
            Ok(r) => r,
            Err(e) => Err(TriggerError::Io {
                path: self.outbox.dir().to_owned(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// Evaluates trigger conditions on reports and fires events into the outbox. Owned by
/// whoever sees every report in order.
pub struct TriggerEngine {
    shared: Arc<Shared>,
    triggers: Vec<TriggerConfig>,
    state: EpisodeFile,
    episodes_path: PathBuf,
}

impl std::fmt::Debug for TriggerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.triggers.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("TriggerEngine")
            .field("triggers", &names)
            .field("outbox", &self.shared.outbox.dir())
            .finish_non_exhaustive()
    }
}

/// The delivery and inspection side of the triggers; cheap to clone.
#[derive(Clone)]
pub struct TriggerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TriggerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerHandle").field("outbox", &self.shared.outbox.dir()).finish_non_exhaustive()
    }
}

use crate::clock::{format_ms, now_ms, to_ms};

/// The condition clock of a report: its window's end time when that is an RFC 3339
/// time (stream windows), else the wall clock (e.g. `score` reports).
pub fn report_clock(report: &Report) -> SystemTime {
    humantime::parse_rfc3339_weak(&report.window.end).unwrap_or_else(|_| SystemTime::now())
}

impl TriggerEngine {
    /// Opens the triggers' state under `state_dir/triggers/` (created when missing):
    /// loads the outbox (pending and dead events survive restarts; corrupt files are
    /// moved aside and reported by [`TriggerHandle::problems`]) and the episode state,
    /// reconciles the two (an event fired just before a crash still starts its
    /// cooldown), resolves secrets and creates the Kafka producer when a `kafka`
    /// trigger needs `kafka_brokers`. `configs` are validated again (all but their
    /// stream names, which the engine does not know).
    pub fn open(
        configs: &[TriggerConfig],
        state_dir: &Path,
        kafka_brokers: Option<&KafkaConfig>,
        telemetry: Arc<Telemetry>,
    ) -> Result<(TriggerEngine, TriggerHandle), TriggerError> {
        crate::config::triggers::validate_inner(configs, None)
            .map_err(|(key, message)| TriggerError::Config { key, message })?;
        let dir = state_dir.join("triggers");
        let outbox = Outbox::open(dir.join("outbox"))?;
        let http = kinds::http_client()?;
        let mut targets = BTreeMap::new();
        for (i, config) in configs.iter().enumerate() {
            let target = Target::build(i, config, &http, kafka_brokers)?;
            targets.insert(config.name.clone(), Arc::new(target));
        }
        let episodes_path = dir.join("episodes.json");
        let (mut state, episode_problem) = outbox::load_episodes(&episodes_path)?;
        let loaded = outbox.load()?;
        let mut problems: Vec<String> = episode_problem.into_iter().collect();
        problems.extend(loaded.problems);

        // Reconcile: events newer than the episode state fired just before a crash.
        let before = state.clone();
        state.version = 1;
        for entry in &loaded.entries {
            state.next_seq = state.next_seq.max(entry.seq.saturating_add(1));
            if let Some(config) = configs.iter().find(|c| c.name == entry.trigger) {
                let episode = state
                    .episodes
                    .entry(entry.trigger.clone())
                    .or_default()
                    .entry(entry.stream.clone())
                    .or_default();
                if entry.seq > episode.last_fired_seq {
                    episode.fired(entry.clock_ms, entry.seq, &config.condition);
                }
            }
        }
        state.next_seq = state.next_seq.max(1);
        if state != before {
            outbox::save_episodes(&episodes_path, &state)?;
        }

        let mut queue = Queue::default();
        for entry in loaded.entries {
            queue.entries.insert(entry.id.clone(), entry);
        }
        let pruned = Shared::prune(&mut queue);
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            notify: Notify::new(),
            changes,
            outbox,
            targets,
            telemetry,
            problems,
        });
        shared.outbox.sync(&pruned, |id| shared.lock().entries.get(id).cloned())?;
        {
            let queue = shared.lock();
            shared.changed(&queue);
        }
        let engine =
            TriggerEngine { shared: shared.clone(), triggers: configs.to_vec(), state, episodes_path };
        Ok((engine, TriggerHandle { shared }))
    }

    /// Evaluates every trigger on `report`, on the report's own clock (see
    /// [`report_clock`]). See [`TriggerEngine::on_report_at`].
    pub fn on_report(&mut self, report: &Report) -> Result<Vec<String>, TriggerError> {
        self.on_report_at(report, report_clock(report))
    }

    /// Evaluates every trigger watching the report's stream, with `now` as the
    /// condition clock (cooldowns are measured on it). Fired events are written to the
    /// outbox (fsync'd) and the episode state saved before this returns; then the
    /// delivery task is woken. Returns the ids of the events fired. Blocks on file
    /// writes (a few per window at most). When a write fails the error is returned,
    /// but the events fired are still queued for delivery by this process.
    pub fn on_report_at(&mut self, report: &Report, now: SystemTime) -> Result<Vec<String>, TriggerError> {
        self.evaluate(report, now, false)
    }

    /// Like [`TriggerEngine::on_report`] for a report sent again from the monitor's
    /// checkpoint after a restart: triggers that already evaluated this window (or a
    /// later one) of the stream skip it, so a restart neither fires twice nor counts a
    /// window twice towards `consecutive_windows`.
    pub fn on_replayed_report(&mut self, report: &Report) -> Result<Vec<String>, TriggerError> {
        self.evaluate(report, report_clock(report), true)
    }

    fn evaluate(
        &mut self,
        report: &Report,
        now: SystemTime,
        replayed: bool,
    ) -> Result<Vec<String>, TriggerError> {
        let stream = report.stream.clone().unwrap_or_default();
        let clock_ms = to_ms(now);
        let mut fired = Vec::new();
        let mut first_error = None;
        let mut changed = false;
        for trigger in &self.triggers {
            let condition = &trigger.condition;
            if !condition.streams.is_empty() && !condition.streams.contains(&stream) {
                continue;
            }
            let episode = self
                .state
                .episodes
                .entry(trigger.name.clone())
                .or_default()
                .entry(stream.clone())
                .or_default();
            let (verdict, observed) = match &condition.labels {
                Some(labels) => (episode.labels_verdict(labels.at_least, report), Vec::new()),
                None => condition::evaluate(condition, report),
            };
            if replayed && episode.last_window.is_some_and(|w| w >= report.window.index) {
                continue;
            }
            let mut before = episode.clone();
            episode.last_window = Some(report.window.index);
            before.last_window = episode.last_window;
            match episode.step(verdict, clock_ms, condition) {
                Step::Quiet => {}
                Step::Suppressed => {
                    self.shared.count(&trigger.name, "suppressed");
                    tracing::debug!(trigger = %trigger.name, stream = %stream, window = report.window.index, "trigger condition holds during cooldown; not fired");
                }
                Step::Fire => {
                    let seq = self.state.next_seq.max(1);
                    self.state.next_seq = seq + 1;
                    episode.fired(clock_ms, seq, condition);
                    if let Some(joined) = condition::joined_labels(report) {
                        episode.labels_mark = joined;
                    }
                    let id = payload::trigger_id(&trigger.name, &stream, &report.window);
                    if self.shared.lock().entries.contains_key(&id) {
                        // Fired before a crash that came before its episode was saved.
                        tracing::info!(trigger = %trigger.name, id = %id, "trigger already fired for this window");
                        changed = true;
                        continue;
                    }
                    let wall = SystemTime::now();
                    let evidence =
                        Evidence::from_report(id.clone(), &trigger.name, condition, report, observed, wall);
                    let entry = Entry {
                        version: 1,
                        id: id.clone(),
                        trigger: trigger.name.clone(),
                        stream: stream.clone(),
                        seq,
                        clock_ms,
                        created_ms: to_ms(wall),
                        evidence,
                        status: Status::Pending,
                        attempts: 0,
                        round_attempts: 0,
                        round_started_ms: None,
                        next_attempt_ms: to_ms(wall),
                        last_error: None,
                        finished_ms: None,
                    };
                    if let Err(e) = self.shared.outbox.write(&entry) {
                        tracing::error!(trigger = %trigger.name, id = %id, error = %e, "cannot write a fired trigger to the outbox; it is delivered only if this process lives");
                        first_error.get_or_insert(e);
                    }
                    self.shared.count(&trigger.name, "fired");
                    tracing::info!(trigger = %trigger.name, stream = %stream, window = report.window.index, id = %id, "trigger fired");
                    fired.push(entry);
                }
            }
            changed |= *episode != before;
        }
        if changed {
            self.state.version = 1;
            if let Err(e) = outbox::save_episodes(&self.episodes_path, &self.state) {
                tracing::error!(error = %e, "cannot save the trigger episode state");
                first_error.get_or_insert(e);
            }
        }
        let ids: Vec<String> = fired.iter().map(|e| e.id.clone()).collect();
        if !fired.is_empty() {
            let mut queue = self.shared.lock();
            for entry in fired {
                queue.entries.insert(entry.id.clone(), entry);
            }
            self.shared.changed(&queue);
            drop(queue);
            self.shared.notify.notify_one();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }

    /// The episode state of `trigger` on `stream`, if it has seen a window.
    pub fn episode(&self, trigger: &str, stream: &str) -> Option<&Episode> {
        self.state.episodes.get(trigger)?.get(stream)
    }

    /// A handle on the same triggers.
    pub fn handle(&self) -> TriggerHandle {
        TriggerHandle { shared: self.shared.clone() }
    }
}

impl TriggerHandle {
    /// Pending and dead events, oldest first.
    pub fn list(&self) -> Vec<TriggerView> {
        let queue = self.shared.lock();
        let mut entries: Vec<&Entry> = queue.entries.values().filter(|e| e.status != Status::Done).collect();
        entries.sort_by_key(|e| e.seq);
        entries.into_iter().map(TriggerView::of).collect()
    }

    /// One event by id, delivered ones included while they are kept.
    pub fn get(&self, id: &str) -> Option<TriggerView> {
        self.shared.lock().entries.get(id).map(TriggerView::of)
    }

    /// Makes a dead (or pending) event due now with a fresh retry budget
    /// (`max_attempts`, `give_up_after` count again), writes that to the outbox and
    /// wakes the delivery task.
    pub async fn retry(&self, id: &str) -> Result<TriggerView, RetryError> {
        let view = {
            let mut queue = self.shared.lock();
            let entry = queue.entries.get_mut(id).ok_or_else(|| RetryError::NotFound(id.to_owned()))?;
            if entry.status == Status::Done {
                return Err(RetryError::AlreadyDelivered(id.to_owned()));
            }
            entry.status = Status::Pending;
            entry.round_attempts = 0;
            entry.round_started_ms = None;
            entry.next_attempt_ms = now_ms();
            entry.finished_ms = None;
            let view = TriggerView::of(entry);
            self.shared.count(&view.trigger, "manual_retry");
            self.shared.changed(&queue);
            view
        };
        tracing::info!(trigger = %view.trigger, id = %view.id, "trigger retry requested");
        let persisted = self.shared.flush(vec![id.to_owned()]).await;
        self.shared.notify.notify_one();
        persisted.map_err(RetryError::Persist)?;
        Ok(view)
    }

    /// Problems found when opening (corrupt outbox or episode files, each naming the
    /// file); empty when all was well.
    pub fn problems(&self) -> Vec<String> {
        self.shared.problems.clone()
    }

    /// Events waiting for delivery (the `driftscope_trigger_queue_depth` gauge).
    pub fn queue_depth(&self) -> usize {
        self.shared.lock().entries.values().filter(|e| e.status == Status::Pending).count()
    }

    /// A receiver whose value changes whenever an event is fired, attempted, retried
    /// or finished: await `changed()` on it instead of polling.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Delivers due events until `shutdown` resolves, then stops starting attempts and
    /// waits for those under way (each bounded by its `timeout`); undelivered events
    /// stay in the outbox for the next start.
    pub async fn run_delivery(&self, shutdown: impl std::future::Future<Output = ()>) {
        delivery::run(self.shared.clone(), shutdown).await
    }

    /// [`TriggerHandle::run_delivery`] as a tokio task.
    pub fn spawn_delivery(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move { handle.run_delivery(shutdown).await })
    }
}
