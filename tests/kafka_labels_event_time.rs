//! Delayed labels on event-time windows, on the real broker: a predictions topic and a
//! labels topic of three co-partitioned partitions (request `i` on partition `i % 3` of
//! both), predictions carrying an event time `/ts`, out of order within each partition
//! and across them (a window's 200 event times are a permutation of its second).
//! Windows are 1 s of event time with 4 s of allowed lateness, `ttl` is 5 s: the join's
//! clock is the watermark (highest event time minus the lateness), so a prediction
//! expires when the watermark reaches its event time + 5 s, and a label waits from the
//! watermark at its arrival.
//!
//! Labels come 0 to 2 rounds (one window of predictions each) after their prediction,
//! 10% never, some a round before their prediction, some twice; some predictions twice.
//! Some labels come 6 rounds late, when the watermark is 2 to 3 s past their
//! prediction's event time: still joined (had the ttl run from the watermark at the
//! prediction's arrival, they would not be). A few come 11 rounds late, when the
//! watermark is past their prediction's event time + ttl: their predictions have
//! expired and they are orphans. A few predictions are 9 windows behind the
//! watermark: counted `late`.
//!
//! Each round is produced once the monitor has read every earlier message (each
//! message is counted under one outcome; after a restart that includes what it read
//! again), so what crosses the watermark does not depend on how the consumer
//! interleaves partitions: every outcome is fixed by the seeds, with margins of about
//! a second of event time.
//!
//! Every window's final performance must equal the exact figures computed here on its
//! labelled rows, each prediction counted once (labelled or expired), straight through
//! and through a SIGKILL in every round; and the same on sliding windows of 2 s every
//! second, where window `k` holds the rows of seconds `k - 1` and `k`.

mod common;
mod labels_common;

use common::*;
use labels_common::*;
use rdkafka::producer::{BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const PER_WINDOW: usize = 200;
/// Windows of predictions checked (rounds `0..CHECKED`).
const CHECKED: usize = 8;
/// Rounds produced: the later ones carry predictions of their own (no labels) that
/// move the watermark on, so every checked window becomes final.
const ROUNDS: usize = 22;
const PARTITIONS: i32 = 3;
/// Event time of window 0's start (a whole second).
const T0: i64 = 1_700_000_000_000;
const WINDOW_MS: i64 = 1_000;
/// Labels this many rounds after their prediction come after it expired.
const TOO_LATE: usize = 11;
/// Labels this many rounds after their prediction come when the watermark is 2 to 3 s
/// past its event time: joined, because the ttl runs from the prediction's event time
/// (from the watermark at its arrival, 4 s earlier, they would have expired).
const NEAR_TTL: usize = 6;
/// Rounds in which a few predictions 9 windows old are sent (late).
const LATE_ROUNDS: std::ops::Range<usize> = 10..13;
const LATE_PER_ROUND: usize = 5;
const THRESHOLD: f64 = 0.5;

/// How a prediction's label fares.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    /// Sent in this round (before, with or after the prediction's own): joined.
    Delivered(usize),
    /// Sent `TOO_LATE` rounds later: the prediction expired, the label is an orphan.
    TooLate(usize),
    Never,
}

struct Row {
    id: String,
    partition: i32,
    ts: i64,
    x: f64,
    c: &'static str,
    score: f64,
    label: bool,
    fate: Fate,
    label_twice: bool,
    prediction_twice: bool,
}

impl Row {
    fn window(&self) -> usize {
        ((self.ts - T0) / WINDOW_MS) as usize
    }
    fn labelled(&self) -> bool {
        matches!(self.fate, Fate::Delivered(_))
    }
}

fn rows() -> Vec<Row> {
    let mut rng = Rng(0xe7e7);
    (0..CHECKED * PER_WINDOW)
        .map(|i| {
            let (round, j) = (i / PER_WINDOW, i % PER_WINDOW);
            let score = (rng.unit() * 0.98 + 0.01 * (1 + i % 2) as f64).min(1.0);
            let label = rng.unit() < score * 0.8 + 0.1;
            let u = rng.unit();
            let delay = (rng.next() % 3) as usize;
            let fate = if u < 0.1 {
                Fate::Never
            } else if u < 0.15 && round < 2 {
                Fate::TooLate(round + TOO_LATE)
            } else if u < 0.25 && round > 0 {
                Fate::Delivered(round - 1)
            } else if u < 0.3 {
                Fate::Delivered(round + NEAR_TTL)
            } else {
                Fate::Delivered(round + delay)
            };
            Row {
                id: format!("req-{i}"),
                partition: (i % PARTITIONS as usize) as i32,
                // 389 is prime to 1000: the window's event times in a scrambled order.
                ts: T0 + round as i64 * WINDOW_MS + (j as i64 * 389) % WINDOW_MS,
                x: rng.unit() * 2.0 - 1.0,
                c: ["a", "b", "c"][(rng.next() % 3) as usize],
                score,
                label,
                fate,
                label_twice: rng.unit() < 0.1,
                prediction_twice: rng.unit() < 0.03,
            }
        })
        .collect()
}

fn prediction(id: &str, ts: i64, x: f64, c: &str, score: f64) -> Vec<u8> {
    format!(r#"{{"id":"{id}","ts":{ts},"x":{x},"c":"{c}","score":{score}}}"#).into_bytes()
}

/// Messages to one partition: (partition, key, payload).
type Keyed = Vec<(i32, String, Vec<u8>)>;

fn produce_keyed(bootstrap: &str, topic: &str, messages: &Keyed) {
    let p = producer(bootstrap);
    for (partition, key, payload) in messages {
        let mut record =
            BaseRecord::to(topic).key(key.as_bytes()).payload(payload.as_slice()).partition(*partition);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    p.poll(Duration::from_millis(50));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("all messages acknowledged");
}

/// Round `round`'s labels, then its predictions: the checked rows of its window, or
/// (later rounds) predictions that move the watermark on, and in `LATE_ROUNDS` a few
/// predictions 9 windows old.
fn round_messages(rows: &[Row], round: usize) -> (Keyed, Keyed) {
    let mut labels = Vec::new();
    for row in rows {
        if matches!(row.fate, Fate::Delivered(r) | Fate::TooLate(r) if r == round) {
            let payload = format!(r#"{{"y":{}}}"#, u8::from(row.label)).into_bytes();
            for _ in 0..1 + usize::from(row.label_twice) {
                labels.push((row.partition, row.id.clone(), payload.clone()));
            }
        }
    }
    let mut predictions = Vec::new();
    if round < CHECKED {
        for row in &rows[round * PER_WINDOW..(round + 1) * PER_WINDOW] {
            let payload = prediction(&row.id, row.ts, row.x, row.c, row.score);
            for _ in 0..1 + usize::from(row.prediction_twice) {
                predictions.push((row.partition, row.id.clone(), payload.clone()));
            }
        }
    } else {
        for j in 0..30 {
            let id = format!("tail-{round}-{j}");
            let ts = T0 + round as i64 * WINDOW_MS + (j as i64 * 33) % WINDOW_MS;
            predictions.push((j % PARTITIONS, id.clone(), prediction(&id, ts, 0.1, "a", 0.5)));
        }
    }
    if LATE_ROUNDS.contains(&round) {
        for j in 0..LATE_PER_ROUND {
            let id = format!("late-{round}-{j}");
            let ts = T0 + (round as i64 - 9) * WINDOW_MS + 500;
            predictions.push((j as i32 % PARTITIONS, id.clone(), prediction(&id, ts, 0.1, "a", 0.5)));
        }
    }
    (labels, predictions)
}

/// Tumbling event-time windows of 1 s.
const TUMBLING: &str = r#"{ type = "tumbling_time", size = "1s", time = "event", allowed_lateness = "4s" }"#;
/// Sliding event-time windows of 2 s, one every second: window `k` holds panes `k - 1`
/// and `k`.
const SLIDING: &str =
    r#"{ type = "sliding_time", size = "2s", slide = "1s", time = "event", allowed_lateness = "4s" }"#;

fn write_config(
    bootstrap: &str,
    dir: &Path,
    topics: (&str, &str),
    profile: &Path,
    window: &str,
) -> std::path::PathBuf {
    let event_time = "event_time_field = \"/ts\"\n";
    write_labels_config(bootstrap, dir, topics, profile, window, event_time, "ttl = \"5s\"", THRESHOLD)
}

/// The outcome totals of the stream's labels, from the Prometheus text.
fn outcomes(addr: &str) -> Option<BTreeMap<String, f64>> {
    let (status, text) = http("GET", addr, "/metrics", None);
    if status != 200 {
        return None;
    }
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("driftscope_labels_total{")) {
        let outcome = line.split("outcome=\"").nth(1)?.split('"').next()?;
        out.insert(outcome.to_owned(), line.rsplit(' ').next()?.parse().ok()?);
    }
    Some(out)
}

/// Waits until the monitor has counted `messages` messages of both topics: each
/// prediction is counted `predictions`, `duplicate` or `late`, each label `labels` or
/// `duplicate`.
fn wait_read(run: &mut Driftscope, addr: &str, messages: usize) {
    wait_for(&format!("{messages} messages read"), Duration::from_secs(90), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        let o = outcomes(addr)?;
        let read: f64 =
            ["predictions", "labels", "duplicate", "late"].iter().map(|k| o.get(*k).unwrap_or(&0.0)).sum();
        (read >= messages as f64).then_some(())
    });
}

/// Produces every round, each once the previous one is read; with `kill`, driftscope is
/// started before and SIGKILLed at a seeded point after each round. Returns the running
/// instance that read the last round.
fn produce_rounds(
    bootstrap: &str,
    config: &Path,
    dir: &Path,
    topics: (&str, &str),
    rows: &[Row],
    kill: bool,
) -> (Driftscope, String) {
    let mut kill_rng = Rng(0x5eed);
    let mut current = Some(start(config, dir));
    let mut sent = 0;
    for round in 0..ROUNDS {
        let (mut run, addr) = match current.take() {
            Some(running) => running,
            None => {
                let (mut run, addr) = start(config, dir);
                // What it reads again from its checkpoint's positions comes first.
                wait_read(&mut run, &addr, sent);
                (run, addr)
            }
        };
        let (labels, predictions) = round_messages(rows, round);
        produce_keyed(bootstrap, topics.1, &labels);
        produce_keyed(bootstrap, topics.0, &predictions);
        sent += labels.len() + predictions.len();
        wait_read(&mut run, &addr, sent);
        if kill && round + 1 < ROUNDS {
            // Not a synchronisation: a seeded point after the round was read, before or
            // after its checkpoint.
            std::thread::sleep(Duration::from_millis(kill_rng.next() % 300));
            kill_hard(run);
        } else {
            current = Some((run, addr));
        }
    }
    current.expect("the last round's instance")
}

/// Checks every checked window (of `panes` panes of 1 s) against the rows, and the
/// totals.
fn check(rows: &[Row], run: &mut Driftscope, addr: &str, dir: &Path, panes: usize) {
    let reports_path = dir.join("reports.jsonl");
    let finals = wait_for("every checked window final", Duration::from_secs(60), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        let reports = read_reports(&reports_path);
        let finals = final_windows(&reports);
        (0..CHECKED).all(|k| finals.contains_key(&index(k))).then_some(finals)
    });
    for k in 0..CHECKED {
        let w = &finals[&index(k)];
        // Window k ends with pane k; the panes before 0 hold nothing.
        let members: Vec<&Row> = rows.iter().filter(|r| r.window() <= k && r.window() + panes > k).collect();
        let labelled: Vec<(f64, bool)> =
            members.iter().filter(|r| r.labelled()).map(|r| (r.score, r.label)).collect();
        let start = clock_text(T0 + (k as i64 + 1 - panes as i64) * WINDOW_MS);
        assert_eq!(w["start"], start.as_str(), "window {k}: {w}");
        assert_eq!(w["predictions"], members.len() as u64, "window {k}: each prediction once: {w}");
        assert_eq!(w["labelled"], labelled.len() as u64, "window {k}: each label once: {w}");
        assert_eq!(w["expired"], (members.len() - labelled.len()) as u64, "window {k}: {w}");
        assert_eq!(w["evicted"], 0, "window {k}: {w}");
        for (metric, value) in exact(&labelled, THRESHOLD) {
            let got = w["metrics"][metric].as_f64().unwrap_or(f64::NAN);
            let tolerance = if metric == "roc_auc" {
                w["metrics"]["roc_auc_bound"].as_f64().unwrap() + 1e-12
            } else {
                1e-9
            };
            assert!((got - value).abs() <= tolerance, "window {k}: {metric} {got}, exact {value}");
        }
    }
    let too_late = rows.iter().filter(|r| matches!(r.fate, Fate::TooLate(_))).count();
    let early = rows.iter().filter(|r| matches!(r.fate, Fate::Delivered(l) if l < r.window())).count();
    let near =
        rows.iter().filter(|r| matches!(r.fate, Fate::Delivered(l) if l == r.window() + NEAR_TTL)).count();
    assert!(
        too_late > 10 && early > 50 && near > 50,
        "{too_late} labels too late, {early} before their prediction, {near} near the ttl"
    );
    // The labels that came after their prediction's event time + ttl wait as orphans,
    // until the watermark passes the watermark at their arrival + ttl.
    let o = wait_for("the too-late labels orphaned", Duration::from_secs(60), || {
        let o = outcomes(addr)?;
        (o.get("orphan").copied().unwrap_or(0.0) >= too_late as f64).then_some(o)
    });
    let sent_twice = rows.iter().filter(|r| r.fate != Fate::Never && r.label_twice).count()
        + rows.iter().filter(|r| r.prediction_twice).count();
    let late = LATE_ROUNDS.len() * LATE_PER_ROUND;
    for (outcome, want) in
        [("orphan", too_late), ("duplicate", sent_twice), ("late", late), ("bad_event_time", 0)]
    {
        assert_eq!(o.get(outcome).copied(), Some(want as f64), "{outcome}: {o:?}");
    }
    let joined = rows.iter().filter(|r| r.labelled()).count();
    assert_eq!(o.get("joined").copied(), Some(joined as f64), "{o:?}");
}

/// The index of checked window `k` in the reports: a time window's index is its start
/// over its size.
fn index(k: usize) -> u64 {
    (T0 / WINDOW_MS) as u64 + k as u64
}

/// `ms` as the reports write a window's start.
fn clock_text(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn setup(bootstrap: &str, dir: &Path, name: &str, window: &str) -> (std::path::PathBuf, String, String) {
    let (predictions_topic, labels_topic) =
        (unique(&format!("preds-{name}")), unique(&format!("labels-{name}")));
    create_topic(bootstrap, &predictions_topic, PARTITIONS);
    create_topic(bootstrap, &labels_topic, PARTITIONS);
    let mut csv = String::from("x,c\n");
    let mut rng = Rng(7);
    for _ in 0..2_000 {
        csv.push_str(&format!("{},{}\n", rng.unit() * 2.0 - 1.0, ["a", "b", "c"][(rng.next() % 3) as usize]));
    }
    let profile = build_profile(dir, &csv);
    let config = write_config(bootstrap, dir, (&predictions_topic, &labels_topic), &profile, window);
    (config, predictions_topic, labels_topic)
}

#[test]
fn event_time_window_performance_is_exact() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, predictions, labels) = setup(&bootstrap, dir.path(), "et", TUMBLING);
    let rows = rows();
    let (mut run, addr) =
        produce_rounds(&bootstrap, &config, dir.path(), (&predictions, &labels), &rows, false);
    check(&rows, &mut run, &addr, dir.path(), 1);
    let reports = read_reports(&dir.path().join("reports.jsonl"));
    assert!(reports.iter().all(|r| !r["notes"].to_string().contains("co-partitioned")), "3 and 3 partitions");
    assert!(run.terminate().success());
}

#[test]
fn event_time_window_performance_is_exact_through_sigkills() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, predictions, labels) = setup(&bootstrap, dir.path(), "et-kill", TUMBLING);
    let rows = rows();
    let (mut run, addr) =
        produce_rounds(&bootstrap, &config, dir.path(), (&predictions, &labels), &rows, true);
    let restored = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|log| log.contains("checkpoint restored"))
        .count();
    assert!(restored >= ROUNDS / 2, "restarts restored the checkpoint ({restored} of {ROUNDS})");
    check(&rows, &mut run, &addr, dir.path(), 1);
    assert!(run.terminate().success());
}

#[test]
fn sliding_event_time_window_performance_is_exact_through_sigkills() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, predictions, labels) = setup(&bootstrap, dir.path(), "et-slide", SLIDING);
    let rows = rows();
    let (mut run, addr) =
        produce_rounds(&bootstrap, &config, dir.path(), (&predictions, &labels), &rows, true);
    check(&rows, &mut run, &addr, dir.path(), 2);
    assert!(run.terminate().success());
}
