//! The delivery loop: starts an attempt for every due pending event (a few at a
//! time), applies the outcome (delivered, retry after capped exponential backoff with
//! full jitter and `Retry-After`, or dead letter), writes it to the outbox, and sleeps
//! until the next event is due, a new one fires, or shutdown.

use super::kinds::Outcome;
use super::outbox::{Entry, Status};
use super::{DeliveryConfig, Shared, now_ms};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

/// Attempts under way at once, across all triggers.
const MAX_IN_FLIGHT: usize = 4;

/// The backoff cap of the `attempt`-th attempt (1-based): `initial_backoff * 2^(n-1)`,
/// at most `max_backoff`.
pub fn backoff_cap(policy: &DeliveryConfig, attempt: u32) -> Duration {
    let factor = 1u128 << attempt.saturating_sub(1).min(100);
    let cap = policy.initial_backoff.as_millis().saturating_mul(factor).min(policy.max_backoff.as_millis());
    Duration::from_millis(u64::try_from(cap).unwrap_or(u64::MAX))
}

/// The delay before the next attempt after the `attempt`-th failed: uniform in
/// `[0, cap]` (full jitter), but no shorter than the receiver's `Retry-After`.
pub fn next_delay(
    policy: &DeliveryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let cap = backoff_cap(policy, attempt);
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    let jittered = Duration::from_millis(rng.random_range(0..=cap_ms));
    jittered.max(retry_after.unwrap_or(Duration::ZERO))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Applies an attempt's outcome to its entry; returns the telemetry outcome label.
fn apply(entry: &mut Entry, outcome: Outcome, policy: &DeliveryConfig, now: i64) -> &'static str {
    entry.attempts = entry.attempts.saturating_add(1);
    entry.round_attempts = entry.round_attempts.saturating_add(1);
    let started = *entry.round_started_ms.get_or_insert(now);
    match outcome {
        Outcome::Delivered => {
            entry.status = Status::Done;
            entry.finished_ms = Some(now);
            entry.last_error = None;
            "delivered"
        }
        Outcome::Dead { error } => {
            entry.status = Status::Dead;
            entry.finished_ms = Some(now);
            entry.last_error = Some(error);
            "dead"
        }
        Outcome::Retry { error, retry_after } => {
            let deadline = started.saturating_add(ms(policy.give_up_after));
            if policy.max_attempts.is_some_and(|max| entry.round_attempts >= max) {
                entry.status = Status::Dead;
                entry.finished_ms = Some(now);
                entry.last_error = Some(format!("gave up after {} attempts: {error}", entry.round_attempts));
                "dead"
            } else if now >= deadline {
                entry.status = Status::Dead;
                entry.finished_ms = Some(now);
                entry.last_error = Some(format!(
                    "gave up after {}: {error}",
                    humantime::format_duration(policy.give_up_after)
                ));
                "dead"
            } else {
                let delay = next_delay(policy, entry.round_attempts, retry_after, &mut rand::rng());
                entry.next_attempt_ms = now.saturating_add(ms(delay)).min(deadline);
                entry.last_error = Some(error);
                "retry"
            }
        }
    }
}

/// Removes its id from the in-flight set when the attempt ends, however it ends.
struct InFlight {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.lock().in_flight.remove(&self.id);
    }
}

async fn attempt(shared: Arc<Shared>, id: String) {
    let guard = InFlight { shared: shared.clone(), id: id.clone() };
    let (entry, target) = {
        let queue = shared.lock();
        match queue.entries.get(&id) {
            Some(e) if e.status == Status::Pending => (e.clone(), shared.targets.get(&e.trigger).cloned()),
            _ => return,
        }
    };
    let outcome = match &target {
        Some(t) => t.send(&entry).await,
        None => Outcome::Dead { error: format!("trigger `{}` is no longer configured", entry.trigger) },
    };
    let policy = target.map(|t| t.policy.clone()).unwrap_or_default();
    let now = now_ms();
    let (label, to_write, view) = {
        let mut queue = shared.lock();
        let Some(e) = queue.entries.get_mut(&id) else {
            return;
        };
        if e.status != Status::Pending {
            return;
        }
        let label = apply(e, outcome, &policy, now);
        // Counted before the new state is visible, so watchers see both together.
        shared.count(&entry.trigger, label);
        let view = (e.attempts, e.last_error.clone(), e.next_attempt_ms);
        let mut to_write = vec![id.clone()];
        if label == "delivered" {
            to_write.extend(Shared::prune(&mut queue));
        }
        shared.changed(&queue);
        (label, to_write, view)
    };
    let (attempts, error, next) = view;
    let error = error.unwrap_or_default();
    match label {
        "delivered" => {
            tracing::info!(trigger = %entry.trigger, id = %id, attempts, "trigger delivered")
        }
        "retry" => tracing::warn!(
            trigger = %entry.trigger, id = %id, attempts, error = %error,
            retry_in_ms = next.saturating_sub(now),
            "trigger delivery failed; will retry"
        ),
        _ => tracing::error!(
            trigger = %entry.trigger, id = %id, attempts, error = %error,
            "trigger delivery failed; dead-lettered (list and retry it through the API)"
        ),
    }
    if let Err(e) = shared.flush(to_write).await {
        tracing::error!(error = %e, "cannot record a trigger delivery outcome in the outbox");
    }
    drop(guard);
    shared.notify.notify_one();
}

/// Due events to start now (marked in flight), and when the next one is due.
fn pick(shared: &Shared, now: i64, room: usize) -> (Vec<String>, Option<i64>) {
    let mut queue = shared.lock();
    let mut due = Vec::new();
    let mut wake: Option<i64> = None;
    let candidates: Vec<(i64, String)> = queue
        .entries
        .values()
        .filter(|e| e.status == Status::Pending && !queue.in_flight.contains(&e.id))
        .map(|e| (e.next_attempt_ms, e.id.clone()))
        .collect();
    let mut candidates = candidates;
    candidates.sort();
    for (at, id) in candidates {
        if at <= now && due.len() < room {
            queue.in_flight.insert(id.clone());
            due.push(id);
        } else if at > now {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    (due, wake)
}

/// The loop behind [`super::TriggerHandle::run_delivery`].
pub(super) async fn run(shared: Arc<Shared>, shutdown: impl std::future::Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = JoinSet::new();
    loop {
        let now = now_ms();
        let (due, wake) = pick(&shared, now, MAX_IN_FLIGHT.saturating_sub(tasks.len()));
        for id in due {
            tasks.spawn(attempt(shared.clone(), id));
        }
        let notified = shared.notify.notified();
        let wait = async {
            match wake {
                Some(at) => {
                    let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                    sleep_until(Instant::now() + delay).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = notified => {}
            _ = wait => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tracing::debug!(in_flight = tasks.len(), "trigger delivery stopping");
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::triggers::payload::{ConditionSummary, DatasetEvidence, Evidence, WindowEvidence};
    use rand::SeedableRng;

    fn policy() -> DeliveryConfig {
        DeliveryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_attempts: Some(5),
            give_up_after: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let caps: Vec<u128> = (1..=7).map(|n| backoff_cap(&p, n).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff_cap(&p, u32::MAX), Duration::from_secs(2));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in 1..50 {
            let d = next_delay(&p, n, None, &mut rng);
            assert!(d <= backoff_cap(&p, n));
        }
        // Retry-After wins when longer than the jittered backoff.
        let d = next_delay(&p, 1, Some(Duration::from_secs(30)), &mut rng);
        assert_eq!(d, Duration::from_secs(30));
    }

    fn entry() -> Entry {
        Entry {
            version: 1,
            id: "t-s-1-0".into(),
            trigger: "t".into(),
            stream: "s".into(),
            seq: 1,
            clock_ms: 0,
            created_ms: 0,
            evidence: Evidence {
                trigger_id: "t-s-1-0".into(),
                trigger: "t".into(),
                stream: "s".into(),
                fired_at: String::new(),
                condition: ConditionSummary::DatasetDrift { consecutive_windows: 1 },
                window: WindowEvidence {
                    index: 1,
                    start: String::new(),
                    end: String::new(),
                    records: 0,
                    offsets: vec![],
                },
                dataset: DatasetEvidence {
                    drift_share: 1.0,
                    threshold: 0.5,
                    drifted: true,
                    features_evaluated: 1,
                    features_drifted: 1,
                },
                drifted_features: vec![],
                observed: vec![],
            },
            status: Status::Pending,
            attempts: 0,
            round_attempts: 0,
            round_started_ms: None,
            next_attempt_ms: 0,
            last_error: None,
            finished_ms: None,
        }
    }

    fn retry(after: Option<u64>) -> Outcome {
        Outcome::Retry { error: "http 503".into(), retry_after: after.map(Duration::from_secs) }
    }

    #[test]
    fn outcomes() {
        let p = policy();
        let mut e = entry();
        assert_eq!(apply(&mut e, retry(Some(10)), &p, 1000), "retry");
        assert_eq!(e.next_attempt_ms, 11_000, "Retry-After honoured");
        assert_eq!(e.status, Status::Pending);
        for _ in 0..3 {
            assert_eq!(apply(&mut e, retry(None), &p, 2000), "retry");
        }
        assert_eq!(apply(&mut e, retry(None), &p, 3000), "dead");
        assert!(e.last_error.as_deref().unwrap().contains("gave up after 5 attempts"));

        let mut e = entry();
        assert_eq!(apply(&mut e, retry(Some(3600)), &p, 0), "retry");
        assert_eq!(e.next_attempt_ms, 60_000, "never past the give-up deadline");
        assert_eq!(apply(&mut e, retry(None), &p, 60_000), "dead");

        let mut e = entry();
        let dead = Outcome::Dead { error: "http 400".into() };
        assert_eq!(apply(&mut e, dead, &p, 5), "dead");
        assert_eq!(e.finished_ms, Some(5));
        let mut e = entry();
        assert_eq!(apply(&mut e, Outcome::Delivered, &p, 5), "delivered");
        assert_eq!(e.status, Status::Done);
    }
}
