//! Delayed labels on the real broker: a predictions topic and a labels topic keyed by
//! request id; labels delayed by a seeded number of rounds, 10% never sent, some sent
//! before their prediction, some sent twice, and some predictions sent twice.
//! `driftscope run` is killed with SIGKILL at seeded points in every round and started
//! again. Every window's final performance must equal the exact figures computed here
//! on the window's labelled rows, with each prediction counted once (labelled or
//! expired), so a kill that lost or doubled a prediction or a label would show.
//!
//! With two instances of one group on four co-partitioned partitions, a rebalance (an
//! instance joins), a clean stop (SIGTERM: the other takes every partition) and a
//! restart move partitions mid-join: through `labels.handover_topic` each prediction
//! is resolved once by one instance or the other, every label of a prediction read is
//! joined (no orphan), and the confusion counts over both instances' final windows are
//! those of every labelled row. Without the handover the moved predictions expire at
//! the old owner and their labels are orphans at the new one.
//!
//! That run's reference is built by `driftscope reference build --config` from data
//! with the label and score columns, drawn from the same law as the stream (the score
//! is not calibrated: `P(y | s) = 0.8 s + 0.1`): the reports carry the reference's
//! figures, and each window's `estimated` performance (from the isotonic calibration
//! fitted on the reference) covers each prediction once and is within tolerance of the
//! realized figures.

mod common;
mod labels_common;

use common::*;
use labels_common::*;
use rdkafka::producer::{BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const WINDOW: usize = 500;
const WINDOWS: usize = 10;
const PREDICTIONS: usize = WINDOW * WINDOWS;
/// Rounds of producing: one window of predictions each, then two of late labels only.
const ROUNDS: usize = WINDOWS + 2;
const THRESHOLD: f64 = 0.5;

/// One prediction and the fate of its label.
struct Row {
    id: String,
    x: f64,
    c: &'static str,
    score: f64,
    label: bool,
    /// The round its label is sent in (`None`: never); may be before its own round.
    label_round: Option<usize>,
    /// Sent twice.
    label_twice: bool,
    prediction_twice: bool,
}

fn rows() -> Vec<Row> {
    let mut rng = Rng(0x1abe1);
    (0..PREDICTIONS)
        .map(|i| {
            let round = i / WINDOW;
            let score = (rng.unit() * 0.98 + 0.01 * (1 + i % 2) as f64).min(1.0);
            // The model is imperfect: labels follow the score, with noise.
            let label = rng.unit() < (score * 0.8 + 0.1);
            let delivered = rng.unit() >= 0.1;
            let early = rng.unit() < 0.1 && round > 0;
            let delay = (rng.next() % 3) as usize;
            let label_round = delivered.then(|| if early { round - 1 } else { round + delay });
            Row {
                id: format!("req-{i}"),
                x: rng.unit() * 2.0 - 1.0,
                c: ["a", "b", "c"][(rng.next() % 3) as usize],
                score,
                label,
                label_round,
                label_twice: rng.unit() < 0.1,
                prediction_twice: rng.unit() < 0.03,
            }
        })
        .collect()
}

fn prediction(row: &Row) -> Vec<u8> {
    format!(r#"{{"id":"{}","x":{},"c":"{}","score":{}}}"#, row.id, row.x, row.c, row.score).into_bytes()
}

/// Produces keyed messages to partition 0 of `topic`, waiting for every acknowledgement.
fn produce_keyed(bootstrap: &str, topic: &str, messages: &Keyed) {
    let p = producer(bootstrap);
    for (key, payload) in messages {
        let mut record = BaseRecord::to(topic).key(key.as_bytes()).payload(payload.as_slice()).partition(0);
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

/// The messages of round `round`: its labels (some early, some late, some twice), then
/// its predictions (some twice).
/// Keyed messages: (key, payload).
type Keyed = Vec<(String, Vec<u8>)>;

fn round_messages(rows: &[Row], round: usize) -> (Keyed, Keyed) {
    let mut labels = Vec::new();
    for row in rows {
        if row.label_round == Some(round) {
            let payload = format!(r#"{{"y":{}}}"#, u8::from(row.label)).into_bytes();
            labels.push((row.id.clone(), payload.clone()));
            if row.label_twice {
                labels.push((row.id.clone(), payload));
            }
        }
    }
    let mut predictions = Vec::new();
    if round < WINDOWS {
        for row in &rows[round * WINDOW..(round + 1) * WINDOW] {
            predictions.push((row.id.clone(), prediction(row)));
            if row.prediction_twice {
                predictions.push((row.id.clone(), prediction(row)));
            }
        }
    }
    (labels, predictions)
}

/// The rows of each full window of the predictions topic: windows are `WINDOW`
/// messages, duplicates included (they are records of the stream); a window's
/// predictions are the rows first seen in it.
fn windows_of(rows: &[Row]) -> Vec<Vec<usize>> {
    let sequence: Vec<usize> = (0..rows.len())
        .flat_map(|i| std::iter::repeat_n(i, 1 + usize::from(rows[i].prediction_twice)))
        .collect();
    let mut seen = std::collections::HashSet::new();
    sequence
        .chunks_exact(WINDOW)
        .map(|chunk| chunk.iter().copied().filter(|&i| seen.insert(i)).collect())
        .collect()
}

/// A config of its own in `dir`; `join` is the labels table's `ttl` and `max_pending` lines.
fn write_config(
    bootstrap: &str,
    dir: &Path,
    topics: (&str, &str),
    profile: &Path,
    join: &str,
) -> std::path::PathBuf {
    let window = format!(r#"{{ type = "tumbling_count", size = {WINDOW} }}"#);
    write_config_with_window(bootstrap, dir, topics, profile, join, &window)
}

/// [`write_config`] with the stream's `window`.
fn write_config_with_window(
    bootstrap: &str,
    dir: &Path,
    topics: (&str, &str),
    profile: &Path,
    join: &str,
    window: &str,
) -> std::path::PathBuf {
    write_labels_config(bootstrap, dir, topics, profile, window, "", join, THRESHOLD)
}

/// The value of a series in the Prometheus text, when present.
fn series(addr: &str, line_start: &str) -> Option<f64> {
    let (status, text) = http("GET", addr, "/metrics", None);
    if status != 200 {
        return None;
    }
    text.lines().find(|l| l.starts_with(line_start))?.rsplit(' ').next()?.parse().ok()
}

fn reference(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::from("x,c\n");
    let mut rng = Rng(7);
    for _ in 0..2_000 {
        csv.push_str(&format!("{},{}\n", rng.unit() * 2.0 - 1.0, ["a", "b", "c"][(rng.next() % 3) as usize]));
    }
    build_profile(dir, &csv)
}

/// A reference with the model's label and score, `P(y | s) = 0.8 s + 0.1` as in
/// [`rows`], profiled by `reference build` with `config`'s labels table; written to
/// `profile` (the path the config names).
fn labelled_reference(dir: &Path, config: &Path, profile: &Path) {
    let mut csv = String::from("x,c,score,y\n");
    let mut rng = Rng(0x7e1);
    for i in 0..20_000 {
        let score = (rng.unit() * 0.98 + 0.01 * (1 + i % 2) as f64).min(1.0);
        let label = rng.unit() < score * 0.8 + 0.1;
        let (x, c) = (rng.unit() * 2.0 - 1.0, ["a", "b", "c"][(rng.next() % 3) as usize]);
        csv.push_str(&format!("{x},{c},{score},{}\n", u8::from(label)));
    }
    let data = dir.join("train-labelled.csv");
    std::fs::write(&data, csv).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["reference", "build", "--input"])
        .arg(&data)
        .arg("--output")
        .arg(profile)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reference build: {stderr}");
    assert!(stderr.contains("model (binary, 20000 rows)"), "{stderr}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(profile).unwrap()).unwrap();
    let model = &saved["model"];
    assert_eq!(
        (model["label_column"].as_str(), model["prediction_column"].as_str()),
        (Some("y"), Some("score"))
    );
    let breakpoints = model["calibration"]["x"].as_array().map_or(0, Vec::len);
    assert!(breakpoints > 2 && breakpoints <= 256, "{breakpoints} breakpoints");
    let features: Vec<&str> =
        saved["features"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(features, ["x", "c", "score"], "the label is no feature");
}

/// A window of predictions without labels, to close one more window whose report
/// carries the windows settled since the previous one.
fn tail(bootstrap: &str, topic: &str, name: &str) {
    let tail: Keyed = (0..WINDOW)
        .map(|i| {
            let id = format!("{name}-{i}");
            let payload = format!(r#"{{"id":"{id}","x":0.1,"c":"a","score":0.5}}"#).into_bytes();
            (id, payload)
        })
        .collect();
    produce_keyed(bootstrap, topic, &tail);
}

#[test]
fn with_a_small_max_pending_evictions_are_counted_and_every_prediction_resolves() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (predictions_topic, labels_topic) = (unique("preds-cap"), unique("labels-cap"));
    create_topic(&bootstrap, &predictions_topic, 1);
    create_topic(&bootstrap, &labels_topic, 1);
    let profile = reference(dir.path());
    let join = "ttl = \"2s\"\nmax_pending = 100";
    let config = write_config(&bootstrap, dir.path(), (&predictions_topic, &labels_topic), &profile, join);
    let rows = rows();
    let (mut run, addr) = start(&config, dir.path());
    for round in 0..ROUNDS {
        let (labels, predictions) = round_messages(&rows, round);
        produce_keyed(&bootstrap, &labels_topic, &labels);
        produce_keyed(&bootstrap, &predictions_topic, &predictions);
    }
    let evicted_series = r#"driftscope_labels_total{outcome="evicted",stream="s"}"#;
    let expired_series = r#"driftscope_labels_total{outcome="expired",stream="s"}"#;
    let joined_series = r#"driftscope_labels_total{outcome="joined",stream="s"}"#;
    // Every prediction is joined, expired or evicted: nothing waits after the ttl.
    let predictions = PREDICTIONS as f64;
    let (joined_total, evicted_total) =
        wait_for("every prediction resolved", Duration::from_secs(120), || {
            let (joined, expired, evicted) = (
                series(&addr, joined_series)?,
                series(&addr, expired_series)?,
                series(&addr, evicted_series)?,
            );
            (joined + expired + evicted >= predictions).then_some((joined, evicted))
        });
    tail(&bootstrap, &predictions_topic, "tail");
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), WINDOWS + 1, Duration::from_secs(120));
    let finals = final_windows(&reports);
    let windows = windows_of(&rows);
    let mut evicted = 0;
    let mut labelled = 0;
    for (k, expected) in windows.iter().enumerate() {
        let w = finals.get(&(k as u64)).unwrap_or_else(|| panic!("window {k} final: {:?}", finals.keys()));
        assert_eq!(w["predictions"], expected.len() as u64, "window {k}: {w}");
        let resolved =
            w["labelled"].as_u64().unwrap() + w["expired"].as_u64().unwrap() + w["evicted"].as_u64().unwrap();
        assert_eq!(resolved, expected.len() as u64, "window {k}: each prediction resolved once: {w}");
        evicted += w["evicted"].as_u64().unwrap();
        labelled += w["labelled"].as_u64().unwrap();
    }
    // Labels come a round (500 predictions) late or more: with 100 entries most
    // predictions are evicted first, and every eviction is counted.
    assert!(evicted > PREDICTIONS as u64 / 2, "{evicted} evictions");
    // The series before the tail (whose predictions are evicted in turn) agree, but for
    // the real predictions of the last, partial window (not final, not summed here).
    let partial = (PREDICTIONS - windows.iter().map(Vec::len).sum::<usize>()) as f64;
    assert!(evicted_total >= evicted as f64 && evicted_total <= evicted as f64 + partial, "{evicted_total}");
    assert!(joined_total >= labelled as f64 && joined_total <= labelled as f64 + partial, "{joined_total}");
    let counts = &reports.last().unwrap()["performance"]["counts"];
    assert!(counts["labels_evicted"].as_u64().unwrap() + counts["orphan"].as_u64().unwrap() > 0, "{counts}");
    assert!(run.terminate().success());
}

#[test]
fn final_window_performance_is_exact_through_sigkills() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (predictions_topic, labels_topic) = (unique("preds"), unique("labels"));
    create_topic(&bootstrap, &predictions_topic, 1);
    create_topic(&bootstrap, &labels_topic, 1);
    let profile = dir.path().join("labelled.profile");
    let config =
        write_config(&bootstrap, dir.path(), (&predictions_topic, &labels_topic), &profile, "ttl = \"30s\"");
    labelled_reference(dir.path(), &config, &profile);
    let rows = rows();

    // Each round starts driftscope, produces the round's labels and predictions while
    // it runs, and kills it at a seeded point (not a synchronisation).
    let mut kill_rng = Rng(0x5eed);
    for round in 0..ROUNDS {
        let (run, _addr) = start(&config, dir.path());
        let (labels, predictions) = round_messages(&rows, round);
        produce_keyed(&bootstrap, &labels_topic, &labels);
        produce_keyed(&bootstrap, &predictions_topic, &predictions);
        // Not a synchronisation: a seeded point to kill at.
        std::thread::sleep(Duration::from_millis(kill_rng.next() % 400));
        kill_hard(run);
    }
    let restored = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|log| log.contains("checkpoint restored"))
        .count();
    assert!(restored >= ROUNDS / 2, "restarts restored the checkpoint ({restored} of {ROUNDS})");
    let (mut run, addr) = start(&config, dir.path());
    // Every prediction is resolved once the undelivered labels' predictions expired.
    let undelivered = rows.iter().filter(|r| r.label_round.is_none()).count() as f64;
    let expired_series = r#"driftscope_labels_total{outcome="expired",stream="s"}"#;
    wait_for("every unlabelled prediction expired", Duration::from_secs(120), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        (series(&addr, expired_series)? >= undelivered).then_some(())
    });
    tail(&bootstrap, &predictions_topic, "tail");
    let reports_path = dir.path().join("reports.jsonl");
    let reports = run.wait_reports(&reports_path, WINDOWS + 1, Duration::from_secs(120));
    assert!(reports.iter().all(|r| !r["notes"].to_string().contains("co-partitioned")), "1 and 1 partitions");
    let finals = final_windows(&reports);
    let windows = windows_of(&rows);
    assert_eq!(windows.len(), WINDOWS, "the duplicates make less than a window");
    // Realized and expected confusion counts summed over the windows.
    let (mut realized, mut expected) = ([0.0f64; 4], [0.0f64; 4]);
    let mut worst = 0.0f64;
    for (k, members) in windows.iter().enumerate() {
        let w = finals.get(&(k as u64)).unwrap_or_else(|| panic!("window {k} final: {:?}", finals.keys()));
        let labelled: Vec<(f64, bool)> = members
            .iter()
            .map(|&i| &rows[i])
            .filter(|r| r.label_round.is_some())
            .map(|r| (r.score, r.label))
            .collect();
        assert_eq!(w["predictions"], members.len() as u64, "window {k}: each prediction once: {w}");
        assert_eq!(w["labelled"], labelled.len() as u64, "window {k}: each label once: {w}");
        assert_eq!(w["expired"], (members.len() - labelled.len()) as u64, "window {k}: {w}");
        assert_eq!(w["evicted"], 0, "window {k}: {w}");
        let want = exact(&labelled, THRESHOLD);
        for (metric, value) in &want {
            let got = w["metrics"][metric].as_f64().unwrap_or(f64::NAN);
            let tolerance = if *metric == "roc_auc" {
                w["metrics"]["roc_auc_bound"].as_f64().unwrap() + 1e-12
            } else {
                1e-9
            };
            assert!((got - value).abs() <= tolerance, "window {k}: {metric} {got}, exact {value}");
        }
        // The estimate covers every prediction once, through the kills, and tracks
        // the realized figures. Tolerance per window: the realized accuracy of about
        // 450 labelled rows strays from its expectation by about sqrt(0.21 / 450) =
        // 0.022; 0.1 is over four of that.
        let estimated = &w["estimated"];
        assert_eq!(estimated["predictions"], members.len() as u64, "window {k}: {w}");
        for metric in ["accuracy", "precision", "recall", "f1"] {
            let (e, r) =
                (estimated["metrics"][metric].as_f64().unwrap(), w["metrics"][metric].as_f64().unwrap());
            assert!((e - r).abs() < 0.1, "window {k}: {metric} estimated {e}, realized {r}");
            worst = worst.max((e - r).abs());
        }
        for j in 0..4 {
            realized[j] += w["confusion"][j].as_f64().unwrap();
            expected[j] += estimated["expected_confusion"][j].as_f64().unwrap();
        }
    }
    // Over the ten windows (about 4,500 labelled rows, a deviation of about 0.007 in
    // accuracy): within 0.03. Realized counts cover the labelled rows, expected ones
    // every prediction: compared as shares.
    let share = |c: &[f64; 4]| {
        let n: f64 = c.iter().sum();
        let [tp, fp, tn, fn_] = *c;
        [(tp + tn) / n, tp / (tp + fp), tp / (tp + fn_), 2.0 * tp / (2.0 * tp + fp + fn_)]
    };
    eprintln!("largest distance of a window's estimate from its realized figure: {worst:.4}");
    let (r, e) = (share(&realized), share(&expected));
    for (i, metric) in ["accuracy", "precision", "recall", "f1"].iter().enumerate() {
        eprintln!("all windows: {metric} realized {:.4}, estimated {:.4}", r[i], e[i]);
        assert!((r[i] - e[i]).abs() < 0.03, "all windows: {metric} realized {}, estimated {}", r[i], e[i]);
    }
    let last = reports.last().unwrap();
    // The reference's own figures ride in every report (the baseline of a performance
    // condition without one) and in the series.
    let reference_accuracy = last["performance"]["reference"]["metrics"]["accuracy"].as_f64().unwrap();
    assert!((reference_accuracy - r[0]).abs() < 0.05, "reference {reference_accuracy}, stream {}", r[0]);
    let reference_series = r#"driftscope_performance_reference{metric="accuracy",stream="s"}"#;
    assert_eq!(series(&addr, reference_series), Some(reference_accuracy));
    assert!(series(&addr, r#"driftscope_performance_estimated{metric="f1",stream="s"}"#).is_some());
    let counts = &last["performance"]["counts"];
    let sent_twice = rows.iter().filter(|r| r.label_round.is_some() && r.label_twice).count()
        + rows.iter().filter(|r| r.prediction_twice).count();
    assert_eq!(counts["duplicate"], sent_twice as u64, "every redelivery recognised once: {counts}");
    let early = rows
        .iter()
        .filter(|r| matches!(r.label_round, Some(l) if l < r.id[4..].parse::<usize>().unwrap() / WINDOW))
        .count();
    assert!(early > 100, "some labels were sent before their prediction ({early})");
    assert!(run.terminate().success());
}

/// Sliding count windows of two panes of `WINDOW` records: window `k` (its last pane)
/// holds the predictions of panes `k - 1` and `k`, each counted in both, and settles
/// once both are resolved; exact through a SIGKILL in every round.
#[test]
fn sliding_count_window_performance_is_exact_through_sigkills() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (predictions_topic, labels_topic) = (unique("preds-slide"), unique("labels-slide"));
    create_topic(&bootstrap, &predictions_topic, 1);
    create_topic(&bootstrap, &labels_topic, 1);
    let profile = reference(dir.path());
    let window = format!(r#"{{ type = "sliding_count", size = {}, slide = {WINDOW} }}"#, 2 * WINDOW);
    let topics = (predictions_topic.as_str(), labels_topic.as_str());
    let config = write_config_with_window(&bootstrap, dir.path(), topics, &profile, "ttl = \"30s\"", &window);
    let rows = rows();
    let mut kill_rng = Rng(0x51de);
    for round in 0..ROUNDS {
        let (run, _addr) = start(&config, dir.path());
        let (labels, predictions) = round_messages(&rows, round);
        produce_keyed(&bootstrap, &labels_topic, &labels);
        produce_keyed(&bootstrap, &predictions_topic, &predictions);
        // Not a synchronisation: a seeded point to kill at.
        std::thread::sleep(Duration::from_millis(kill_rng.next() % 400));
        kill_hard(run);
    }
    let (mut run, addr) = start(&config, dir.path());
    let undelivered = rows.iter().filter(|r| r.label_round.is_none()).count() as f64;
    let expired_series = r#"driftscope_labels_total{outcome="expired",stream="s"}"#;
    wait_for("every unlabelled prediction expired", Duration::from_secs(120), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        (series(&addr, expired_series)? >= undelivered).then_some(())
    });
    tail(&bootstrap, &predictions_topic, "tail");
    let reports_path = dir.path().join("reports.jsonl");
    let panes = windows_of(&rows);
    let finals = wait_for("every sliding window final", Duration::from_secs(120), || {
        let finals = final_windows(&read_reports(&reports_path));
        (1..WINDOWS as u64).all(|k| finals.contains_key(&k)).then_some(finals)
    });
    assert!(!finals.contains_key(&0), "count windows start full: the first ends with pane 1");
    for k in 1..WINDOWS {
        let w = &finals[&(k as u64)];
        let members: Vec<usize> = panes[k - 1].iter().chain(&panes[k]).copied().collect();
        let labelled: Vec<(f64, bool)> = members
            .iter()
            .map(|&i| &rows[i])
            .filter(|r| r.label_round.is_some())
            .map(|r| (r.score, r.label))
            .collect();
        assert_eq!(w["predictions"], members.len() as u64, "window {k}: {w}");
        assert_eq!(w["labelled"], labelled.len() as u64, "window {k}: {w}");
        assert_eq!(w["expired"], (members.len() - labelled.len()) as u64, "window {k}: {w}");
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
    assert!(run.terminate().success());
}

#[test]
fn topics_that_are_not_co_partitioned_are_reported() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (predictions_topic, labels_topic) = (unique("preds-2p"), unique("labels-1p"));
    create_topic(&bootstrap, &predictions_topic, 2);
    create_topic(&bootstrap, &labels_topic, 1);
    let profile = reference(dir.path());
    let config =
        write_config(&bootstrap, dir.path(), (&predictions_topic, &labels_topic), &profile, "ttl = \"30s\"");
    let (mut run, _addr) = start(&config, dir.path());
    tail(&bootstrap, &predictions_topic, "p");
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), 1, Duration::from_secs(120));
    let notes = reports[0]["notes"].to_string();
    assert!(notes.contains("not co-partitioned"), "{}", reports[0]);
    assert!(notes.contains("has 1 partitions") && notes.contains("has 2"), "{notes}");
    assert!(run.log_text().contains("not co-partitioned"));
    assert!(run.terminate().success());
}

/// A config for one instance of a two-instance group, with a handover topic.
fn write_group_config(
    bootstrap: &str,
    dir: &Path,
    name: &str,
    group: &str,
    topics: (&str, &str, &str),
    profile: &Path,
    ttl: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = dir.join(format!("{name}.toml"));
    let reports = dir.join(format!("{name}.reports.jsonl"));
    let stream = xc_stream_toml(
        "s",
        topics.0,
        &format!(r#"{{ type = "tumbling_count", size = {WINDOW} }}"#),
        &format!(r#"{{ profile = "{}" }}"#, profile.display()),
    );
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
properties = {{ "session.timeout.ms" = "10000" }}
[state]
dir = "{state}"
checkpoint_interval = "50ms"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
{stream}
[streams.labels]
topics = ["{labels}"]
prediction_id = "/id"
label_id = "key"
label = "/y"
ttl = "{ttl}"
handover_topic = "{handover}"
task = {{ type = "binary", score = "/score", threshold = {THRESHOLD} }}
"#,
            state = dir.join(format!("{name}-state")).display(),
            reports = reports.display(),
            labels = topics.1,
            handover = topics.2,
        ),
    )
    .unwrap();
    (config, reports)
}

/// Produces keyed messages, partitioned by key (the same partitioner on both topics:
/// co-partitioned by request id), waiting for every acknowledgement.
fn produce_by_key(bootstrap: &str, topic: &str, messages: &Keyed) {
    let p = producer(bootstrap);
    for (key, payload) in messages {
        let mut record = BaseRecord::to(topic).key(key.as_bytes()).payload(payload.as_slice());
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

/// A label join series of one instance (0 when absent).
fn outcome(addr: &str, name: &str) -> f64 {
    series(addr, &format!(r#"driftscope_labels_total{{outcome="{name}",stream="s"}}"#)).unwrap_or(0.0)
}

#[test]
fn a_rebalance_and_a_clean_stop_mid_join_lose_and_double_nothing() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (predictions_topic, labels_topic, handover_topic) =
        (unique("preds-4p"), unique("labels-4p"), unique("handover"));
    create_topic(&bootstrap, &predictions_topic, 4);
    create_topic(&bootstrap, &labels_topic, 4);
    create_topic(&bootstrap, &handover_topic, 1);
    let profile = reference(dir.path());
    let group = unique("labels-group");
    let topics = (predictions_topic.as_str(), labels_topic.as_str(), handover_topic.as_str());
    let (config_a, reports_a) =
        write_group_config(&bootstrap, dir.path(), "a", &group, topics, &profile, "20s");
    let (config_b, reports_b) =
        write_group_config(&bootstrap, dir.path(), "b", &group, topics, &profile, "20s");
    let rows = rows();

    // A alone reads the first rounds: predictions wait for their delayed labels.
    let (a, addr_a) = start(&config_a, dir.path());
    let produce_rounds = |rounds: std::ops::Range<usize>| {
        for round in rounds {
            let (labels, predictions) = round_messages(&rows, round);
            produce_by_key(&bootstrap, &labels_topic, &labels);
            produce_by_key(&bootstrap, &predictions_topic, &predictions);
        }
    };
    produce_rounds(0..3);
    wait_for("A read the first rounds' predictions", Duration::from_secs(120), || {
        (outcome(&addr_a, "predictions") >= (3 * WINDOW) as f64).then_some(())
    });
    // B joins mid-join: half the partitions move to it, with predictions waiting.
    let (b, addr_b) = start(&config_b, dir.path());
    let assigned = |run: &Driftscope, partitions: &str| {
        run.log_text().lines().any(|l| l.contains("partitions assigned") && l.contains(partitions))
    };
    wait_for("B to get partitions", Duration::from_secs(120), || {
        b.log_text()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.contains("partitions=0"))
            .then_some(())
    });
    produce_rounds(3..6);
    // A stops cleanly mid-join: B takes every partition, and A's waiting entries.
    assert!(a.terminate().success());
    wait_for("B to get all 8 partitions", Duration::from_secs(120), || {
        assigned(&b, "partitions=8").then_some(())
    });
    produce_rounds(6..9);
    // A comes back (its checkpoint holds its windows and counts): partitions move again.
    let (a, addr_a) = start(&config_a, dir.path());
    wait_for("A to get partitions again", Duration::from_secs(120), || {
        a.log_text()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.contains("partitions=0"))
            .then_some(())
    });
    produce_rounds(9..ROUNDS);
    // Every prediction is resolved once, by one instance or the other.
    let predictions = PREDICTIONS as f64;
    let resolved = |name: &str| outcome(&addr_a, name) + outcome(&addr_b, name);
    wait_for("every prediction resolved", Duration::from_secs(180), || {
        (resolved("joined") + resolved("expired") + resolved("evicted") >= predictions).then_some(())
    });
    let delivered = rows.iter().filter(|r| r.label_round.is_some()).count() as f64;
    let (joined, expired, evicted) = (resolved("joined"), resolved("expired"), resolved("evicted"));
    eprintln!(
        "A: joined {} expired {} handed_over {} adopted {}; B: joined {} expired {} handed_over {} adopted {}",
        outcome(&addr_a, "joined"),
        outcome(&addr_a, "expired"),
        outcome(&addr_a, "handed_over"),
        outcome(&addr_a, "adopted"),
        outcome(&addr_b, "joined"),
        outcome(&addr_b, "expired"),
        outcome(&addr_b, "handed_over"),
        outcome(&addr_b, "adopted"),
    );
    assert_eq!(joined + expired + evicted, predictions, "each prediction resolved once");
    assert_eq!(joined, delivered, "every label whose prediction was read is joined, once");
    assert_eq!(expired, predictions - delivered);
    assert_eq!(evicted, 0.0);
    assert_eq!(resolved("orphan"), 0.0, "no label of a prediction read is an orphan");
    let sent_twice = rows.iter().filter(|r| r.label_round.is_some() && r.label_twice).count()
        + rows.iter().filter(|r| r.prediction_twice).count();
    assert_eq!(resolved("duplicate"), sent_twice as f64, "every redelivery recognised once");
    let handed_over = outcome(&addr_a, "handed_over") + outcome(&addr_b, "handed_over");
    assert!(handed_over > 0.0, "predictions were waiting in the partitions that moved");
    assert_eq!(handed_over, resolved("adopted"), "every prediction handed over was adopted");

    // Records without a request id close each instance's windows (they are records
    // of the stream, no predictions): every window with real predictions is final
    // then, and its report carries it.
    let tail: Keyed = (0..4 * WINDOW)
        .map(|i| (format!("tail-{i}"), br#"{"x":0.1,"c":"a","score":0.5}"#.to_vec()))
        .collect();
    produce_by_key(&bootstrap, &predictions_topic, &tail);
    let want: Vec<(f64, bool)> =
        rows.iter().filter(|r| r.label_round.is_some()).map(|r| (r.score, r.label)).collect();
    let finals = wait_for("every labelled prediction in a final window", Duration::from_secs(120), || {
        let mut finals = final_windows(&read_reports(&reports_a));
        let b_finals = final_windows(&read_reports(&reports_b));
        let labelled = |f: &BTreeMap<u64, serde_json::Value>| {
            f.values().map(|w| w["labelled"].as_u64().unwrap()).sum::<u64>()
        };
        if labelled(&finals) + labelled(&b_finals) < want.len() as u64 {
            return None;
        }
        let offset = finals.keys().max().map_or(0, |k| k + 1);
        finals.extend(b_finals.into_iter().map(|(k, w)| (k + offset, w)));
        Some(finals)
    });
    // Over both instances' final windows: each prediction counted once where it was
    // resolved, and the realized confusion counts those of every joined row.
    let (mut confusion, mut handed, mut adopted) = ([0u64; 4], 0, 0);
    for w in finals.values() {
        let resolved = ["labelled", "expired", "evicted", "handed_over"]
            .iter()
            .map(|k| w[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        assert_eq!(resolved, w["predictions"].as_u64().unwrap(), "{w}");
        handed += w["handed_over"].as_u64().unwrap_or(0);
        adopted += w["adopted"].as_u64().unwrap_or(0);
        for (j, c) in confusion.iter_mut().enumerate() {
            *c += w["confusion"][j].as_u64().unwrap();
        }
    }
    assert_eq!((handed, adopted), (handed_over as u64, handed_over as u64));
    let exact_confusion = want.iter().fold([0u64; 4], |mut c, &(s, y)| {
        c[match (s >= THRESHOLD, y) {
            (true, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
            (false, true) => 3,
        }] += 1;
        c
    });
    assert_eq!(confusion, exact_confusion, "[tp, fp, tn, fn] over all windows");
    let metrics = exact(&want, THRESHOLD);
    let [tp, fp, tn, fn_] = confusion.map(|c| c as f64);
    assert!(((tp + tn) / (tp + fp + tn + fn_) - metrics["accuracy"]).abs() < 1e-12);
    assert!((2.0 * tp / (2.0 * tp + fp + fn_) - metrics["f1"]).abs() < 1e-12);
    assert!(b.log_text().contains("label join entries taken over"), "{}", b.log_text());
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// Whether the group has committed every partition of `topics` up to its end (every
/// message read, checkpointed and committed, with the join's copies written first).
fn committed_to_the_end(bootstrap: &str, group: &str, topics: &[&str], partitions: i32) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    // Not subscribed: it asks for the group's offsets without joining the group.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
    }
    let Ok(committed) = consumer.committed_offsets(list, Duration::from_secs(10)) else { return false };
    committed.elements().iter().all(|e| {
        let Ok((_, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
        else {
            return false;
        };
        match e.offset() {
            Offset::Offset(o) => o == high,
            _ => high == 0,
        }
    })
}

#[test]
fn a_sigkill_mid_join_loses_and_doubles_nothing() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (predictions_topic, labels_topic, handover_topic) =
        (unique("preds-kill"), unique("labels-kill"), unique("handover-kill"));
    create_topic(&bootstrap, &predictions_topic, 4);
    create_topic(&bootstrap, &labels_topic, 4);
    create_topic(&bootstrap, &handover_topic, 1);
    let profile = reference(dir.path());
    let group = unique("labels-kill-group");
    let topics = (predictions_topic.as_str(), labels_topic.as_str(), handover_topic.as_str());
    // A ttl well over the group's session timeout: the predictions of the killed
    // instance wait through it for their labels.
    let (config_a, reports_a) =
        write_group_config(&bootstrap, dir.path(), "a", &group, topics, &profile, "45s");
    let (config_b, reports_b) =
        write_group_config(&bootstrap, dir.path(), "b", &group, topics, &profile, "45s");
    let rows = rows();
    let produce_rounds = |rounds: std::ops::Range<usize>| {
        for round in rounds {
            let (labels, predictions) = round_messages(&rows, round);
            produce_by_key(&bootstrap, &labels_topic, &labels);
            produce_by_key(&bootstrap, &predictions_topic, &predictions);
        }
    };
    let assigned_some = |run: &Driftscope| {
        run.log_text().lines().any(|l| l.contains("partitions assigned") && !l.contains("partitions=0"))
    };

    // A and B share the four partitions; predictions wait for their delayed labels.
    let (a, addr_a) = start(&config_a, dir.path());
    let (b, addr_b) = start(&config_b, dir.path());
    wait_for("both instances to get partitions", Duration::from_secs(120), || {
        (assigned_some(&a) && assigned_some(&b)).then_some(())
    });
    produce_rounds(0..4);
    // Killed once every message produced is read, checkpointed and committed (so after
    // periodic commits, and not between a checkpoint and its commit, where what a
    // killed instance read since its last commit is in its checkpoint and read again by
    // the new owner: see the README).
    let both = [predictions_topic.as_str(), labels_topic.as_str()];
    wait_for("the group committed every message", Duration::from_secs(120), || {
        committed_to_the_end(&bootstrap, &group, &both, 4).then_some(())
    });
    let waiting_a = ["predictions", "adopted"].iter().map(|o| outcome(&addr_a, o)).sum::<f64>()
        - ["joined", "expired", "evicted", "handed_over"].iter().map(|o| outcome(&addr_a, o)).sum::<f64>();
    assert!(waiting_a > 0.0, "A's predictions are waiting for labels when it is killed");
    kill_hard(a);
    wait_for("B to get all 8 partitions", Duration::from_secs(120), || {
        b.log_text()
            .lines()
            .any(|l| l.contains("partitions assigned") && l.contains("partitions=8"))
            .then_some(())
    });
    // The labels of A's waiting predictions are read by B now.
    produce_rounds(4..8);
    // A starts again from its checkpoint, which still holds the entries B took over.
    let (a, addr_a) = start(&config_a, dir.path());
    wait_for("A to get partitions again", Duration::from_secs(120), || assigned_some(&a).then_some(()));
    produce_rounds(8..ROUNDS);

    let predictions = PREDICTIONS as f64;
    let resolved = |name: &str| outcome(&addr_a, name) + outcome(&addr_b, name);
    // (An orphan ends the wait: a label whose prediction was lost with the kill.)
    wait_for("every prediction resolved", Duration::from_secs(180), || {
        let done = resolved("joined") + resolved("expired") + resolved("evicted") >= predictions;
        (done || resolved("orphan") > 0.0).then_some(())
    });
    let delivered = rows.iter().filter(|r| r.label_round.is_some()).count() as f64;
    let (joined, expired, evicted) = (resolved("joined"), resolved("expired"), resolved("evicted"));
    let handed_over = resolved("handed_over");
    eprintln!(
        "A: joined {} expired {} orphan {} handed_over {} adopted {}; B: joined {} expired {} orphan {} handed_over {} adopted {}",
        outcome(&addr_a, "joined"),
        outcome(&addr_a, "expired"),
        outcome(&addr_a, "orphan"),
        outcome(&addr_a, "handed_over"),
        outcome(&addr_a, "adopted"),
        outcome(&addr_b, "joined"),
        outcome(&addr_b, "expired"),
        outcome(&addr_b, "orphan"),
        outcome(&addr_b, "handed_over"),
        outcome(&addr_b, "adopted"),
    );
    assert_eq!(
        resolved("orphan"),
        0.0,
        "no label of a prediction read is an orphan (none lost with the kill)"
    );
    assert_eq!(joined, delivered, "every label whose prediction was read is joined, once");
    assert_eq!(joined + expired + evicted, predictions, "each prediction resolved once");
    assert_eq!(expired, predictions - delivered);
    let sent_twice = rows.iter().filter(|r| r.label_round.is_some() && r.label_twice).count()
        + rows.iter().filter(|r| r.prediction_twice).count();
    assert_eq!(resolved("duplicate"), sent_twice as f64, "every redelivery recognised once");
    assert!(outcome(&addr_b, "adopted") >= waiting_a, "B adopted A's waiting predictions from its copies");
    assert_eq!(handed_over, resolved("adopted"), "each prediction that moved left one instance, reached one");

    // Records without a request id close each instance's windows.
    let tail: Keyed = (0..4 * WINDOW)
        .map(|i| (format!("tail-{i}"), br#"{"x":0.1,"c":"a","score":0.5}"#.to_vec()))
        .collect();
    produce_by_key(&bootstrap, &predictions_topic, &tail);
    let want: Vec<(f64, bool)> =
        rows.iter().filter(|r| r.label_round.is_some()).map(|r| (r.score, r.label)).collect();
    let finals = wait_for("every labelled prediction in a final window", Duration::from_secs(120), || {
        let finals = final_windows(&read_reports(&reports_a));
        let b_finals = final_windows(&read_reports(&reports_b));
        let labelled = |f: &BTreeMap<u64, serde_json::Value>| {
            f.values().map(|w| w["labelled"].as_u64().unwrap()).sum::<u64>()
        };
        (labelled(&finals) + labelled(&b_finals) >= want.len() as u64)
            .then(|| finals.into_values().chain(b_finals.into_values()).collect::<Vec<_>>())
    });
    // Over both instances' final windows (A's from before and after the kill): each
    // prediction counted once where it was resolved, the confusion counts those of
    // every labelled row.
    let mut confusion = [0u64; 4];
    let mut labelled = 0;
    for w in &finals {
        let resolved = ["labelled", "expired", "evicted", "handed_over"]
            .iter()
            .map(|k| w[k].as_u64().unwrap_or(0))
            .sum::<u64>();
        assert_eq!(resolved, w["predictions"].as_u64().unwrap(), "{w}");
        labelled += w["labelled"].as_u64().unwrap();
        for (j, c) in confusion.iter_mut().enumerate() {
            *c += w["confusion"][j].as_u64().unwrap();
        }
    }
    assert_eq!(labelled, want.len() as u64, "each labelled prediction in one final window");
    let exact_confusion = want.iter().fold([0u64; 4], |mut c, &(s, y)| {
        c[match (s >= THRESHOLD, y) {
            (true, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
            (false, true) => 3,
        }] += 1;
        c
    });
    assert_eq!(confusion, exact_confusion, "[tp, fp, tn, fn] over all windows");
    assert!(b.log_text().contains("label join entries taken over"), "{}", b.log_text());
    assert!(a.terminate().success());
    let b_log = b.log.clone();
    assert!(b.terminate().success());
    let copies = std::fs::read_to_string(b_log)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("label join copies written"))
        .map(str::to_owned);
    eprintln!("B: {}", copies.unwrap_or_default());
}
