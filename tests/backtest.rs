//! `driftscope backtest` end to end through the binary: a data file with a known change
//! point and clean span, the null replay, the CI exit code, bad files named by row and
//! column, and a topic replayed read-only from the real broker.

mod common;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A small deterministic generator (no dependency on the test's thread order).
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

/// `rows` rows of `x` (numeric), `c` (categorical) and `ts` (epoch ms, one a second);
/// from row `change` on, `x` moves by one standard deviation and `c` leans on `d`.
fn csv(rows: usize, change: usize, seed: u64) -> String {
    let mut rng = Rng(seed);
    let mut out = String::from("x,c,ts\n");
    for i in 0..rows {
        let shifted = i >= change;
        let x = rng.normal() + if shifted { 1.0 } else { 0.0 };
        let u = rng.unit();
        let c = if shifted && u < 0.5 { "d" } else { ["a", "b", "c", "d"][(u * 4.0) as usize % 4] };
        out.push_str(&format!("{x},{c},{}\n", 1_700_000_000_000i64 + i as i64 * 1000));
    }
    out
}

fn write_config(dir: &Path, window: &str, extra: &str) -> std::path::PathBuf {
    let reference = dir.join("train.csv");
    std::fs::write(&reference, csv(5_000, usize::MAX, 1)).unwrap();
    let config = dir.join("driftscope.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[[streams]]\nname = \"features\"\ntopics = [\"features\"]\nformat = \"json\"\n\
             event_time_field = \"/ts\"\nwindow = {window}\nreference = {{ data = \"{}\" }}\n\
             [[streams.fields]]\nname = \"x\"\n[[streams.fields]]\nname = \"c\"\n{extra}",
            std::env::var("DRIFTSCOPE_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into()),
            reference.display()
        ),
    )
    .unwrap();
    config
}

const TRIGGER: &str = "\n[[triggers]]\nname = \"retrain\"\ncondition = { sequential = true, features = [\"x\"] }\n\
    kind = { type = \"webhook\", url = \"http://127.0.0.1:9/hook\", secret = \"whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=\" }\n";

fn backtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftscope")).arg("backtest").args(args).output().unwrap()
}

fn json(out: &Output) -> Value {
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_known_change_is_caught_within_two_windows_and_clean_spans_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "{ type = \"tumbling_count\", size = 500 }", TRIGGER);
    let data = dir.path().join("history.csv");
    std::fs::write(&data, csv(10_000, 6_000, 2)).unwrap();
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--clean",
        "0..6000",
        "--change-at",
        "6000",
        "--null",
        "300",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = json(&out);
    assert_eq!(s["windows"], 20, "{s:#}");
    assert_eq!(s["rule"], "significant_effect");
    let x = &s["features"][0];
    assert_eq!(x["name"], "x");
    assert_eq!(x["clean_windows"], 12, "{s:#}");
    assert_eq!(x["clean_alarms"], 0, "{s:#}");
    assert!(x["delays_windows"][0].as_u64().is_some_and(|d| d <= 2), "{s:#}");
    assert!(x["alarms"].as_u64().is_some_and(|a| a >= 7), "the 8 shifted windows: {s:#}");
    let trigger = &s["triggers"][0];
    assert_eq!(trigger["name"], "retrain");
    assert_eq!(trigger["clean_alarms"], 0, "{s:#}");
    assert!(trigger["delays_windows"][0].as_u64().is_some_and(|d| d <= 2), "{s:#}");
    assert_eq!(s["null_windows"], 300);
    assert_eq!(s["null_records_per_window"], 500);
    assert!(s["null_false_alarm_rate"].as_f64().is_some_and(|r| r <= 0.02), "{s:#}");

    // The table says the same in words.
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--clean",
        "0..6000",
        "--change-at",
        "6000",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("backtest of stream `features` (20 windows"), "{table}");
    assert!(table.contains("trigger retrain"), "{table}");
}

#[test]
fn the_exit_code_gates_ci_on_the_false_alarm_rate() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "{ type = \"tumbling_count\", size = 500 }", "");
    let data = dir.path().join("history.csv");
    // Everything shifted but marked clean: every window is a "false" alarm.
    std::fs::write(&data, csv(3_000, 0, 3)).unwrap();
    let (config, data) = (config.to_str().unwrap(), data.to_str().unwrap());
    let out = backtest(&[
        "--config",
        config,
        "--data",
        data,
        "--clean",
        "0..3000",
        "--max-false-alarm-rate",
        "0.1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("false-alarm rate"));
    let out =
        backtest(&["--config", config, "--data", data, "--clean", "0..3000", "--max-false-alarm-rate", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn time_windows_replay_by_event_time_and_refuse_unordered_rows() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        write_config(dir.path(), "{ type = \"tumbling_time\", size = \"10m\", time = \"event\" }", "");
    let data = dir.path().join("history.csv");
    std::fs::write(&data, csv(6_000, 3_000, 4)).unwrap();
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let s = json(&out);
    // 6,000 rows a second apart: nine full 10-minute windows close (the tenth stays open).
    assert!(s["windows"].as_u64().is_some_and(|w| (8..=10).contains(&w)), "{s:#}");

    // Processing-time windows replay on the event times too (a file has no other clock).
    let processing = write_config(dir.path(), "{ type = \"tumbling_time\", size = \"10m\" }", "");
    let out = backtest(&[
        "--config",
        processing.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let p = json(&out);
    assert_eq!(p["windows"], s["windows"], "{p:#}");

    let mut text = csv(20, usize::MAX, 5);
    text.push_str("0.1,a,1600000000000\n");
    std::fs::write(&data, text).unwrap();
    let out = backtest(&["--config", config.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("row 20") && err.contains("`ts`") && err.contains("sort"), "{err}");
}

#[test]
fn bad_inputs_name_the_column_or_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "{ type = \"tumbling_count\", size = 500 }", "");
    let data = dir.path().join("history.csv");
    std::fs::write(&data, "x,ts\n1.0,1\n").unwrap();
    let out = backtest(&["--config", config.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("column `c`"), "{err}");

    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--change-at",
        "soon",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`soon`"));

    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--stream",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nope`"));
}

#[test]
fn a_topic_is_replayed_read_only() {
    let Some(bootstrap) = common::broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = common::unique("backtest");
    common::create_topic(&bootstrap, &topic, 1);
    let mut rng = Rng(9);
    let payloads: Vec<Vec<u8>> = (0..4_000)
        .map(|i| {
            let x = rng.normal() + if i >= 2_000 { 1.0 } else { 0.0 };
            let c = ["a", "b", "c", "d"][(rng.unit() * 4.0) as usize % 4];
            format!("{{\"x\": {x}, \"c\": \"{c}\", \"ts\": {}}}", 1_700_000_000_000i64 + i * 1000)
                .into_bytes()
        })
        .collect();
    common::produce(&bootstrap, &topic, 0, &payloads);
    let config = write_config(dir.path(), "{ type = \"tumbling_count\", size = 500 }", TRIGGER);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("topics = [\"features\"]", &format!("topics = [\"{topic}\"]"));
    std::fs::write(&config, text).unwrap();
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--topic",
        &topic,
        "--from",
        "0",
        "--to",
        "4000",
        "--clean",
        "0..2000",
        "--change-at",
        "2000",
        "--format",
        "json",
    ]);
    let s = json(&out);
    assert_eq!(s["windows"], 8, "{s:#}");
    assert_eq!(s["invalid_records"], 0);
    assert_eq!(s["features"][0]["clean_alarms"], 0, "{s:#}");
    assert!(s["features"][0]["delays_windows"][0].as_u64().is_some_and(|d| d <= 2), "{s:#}");

    // A part of the topic by offsets.
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--topic",
        &topic,
        "--from",
        "1000",
        "--to",
        "2000",
        "--format",
        "json",
    ]);
    assert_eq!(json(&out)["windows"], 2);

    // Nothing was committed for the configured group.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "driftscope")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let offset = committed.find_partition(&topic, 0).map(|e| e.offset());
    assert!(matches!(offset, Some(Offset::Invalid) | None), "committed {offset:?}");
}

/// `rows` rows as `csv` gives them, plus a model's `score` and the true `label`: the
/// score is calibrated before row `change` and says nothing after it (a harmful shift
/// in the concept, not in the inputs).
fn labelled_csv(rows: usize, change: usize, seed: u64) -> (String, Vec<(f64, bool)>) {
    let inputs = csv(rows, usize::MAX, seed);
    let mut rng = Rng(seed ^ 0x1abe1);
    let mut pairs = Vec::with_capacity(rows);
    let mut out = String::from("x,c,ts,score,label\n");
    for (i, line) in inputs.lines().skip(1).enumerate() {
        let score = 1.0 / (1.0 + (-1.5 * rng.normal()).exp());
        let truth = if i >= change { 0.5 } else { score };
        let label = rng.unit() < truth;
        out.push_str(&format!("{line},{score},{}\n", u8::from(label)));
        pairs.push((score, label));
    }
    (out, pairs)
}

#[test]
fn a_labelled_file_replays_realized_performance_and_performance_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let labels = "[streams.labels]\ntopics = [\"labels\"]\nprediction_id = \"key\"\nlabel_id = \"key\"\n\
        label = \"/label\"\nttl = \"1h\"\ntask = { type = \"binary\", score = \"/score\", threshold = 0.5 }\n\
        \n[[triggers]]\nname = \"model-worse\"\n\
        condition = { performance = { metric = \"accuracy\", drop = 0.1 } }\n\
        kind = { type = \"webhook\", url = \"http://127.0.0.1:9/hook\", secret = \"whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=\" }\n";
    let config = write_config(dir.path(), "{ type = \"tumbling_count\", size = 500 }", labels);
    // Training data with the model's scores and labels: the reference's figures are the
    // condition's baseline, its calibration gives the estimate.
    std::fs::write(dir.path().join("train.csv"), labelled_csv(5_000, usize::MAX, 1).0).unwrap();
    let data = dir.path().join("history.csv");
    let (text, pairs) = labelled_csv(6_000, 3_000, 5);
    std::fs::write(&data, text).unwrap();
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--clean",
        "0..3000",
        "--change-at",
        "3000",
        "--format",
        "json",
    ]);
    let s = json(&out);
    let performance = s["performance"].as_array().unwrap_or_else(|| panic!("no performance: {s:#}"));
    assert_eq!(performance.len(), 12, "{s:#}");
    for (i, w) in performance.iter().enumerate() {
        let rows = &pairs[i * 500..(i + 1) * 500];
        let correct = rows.iter().filter(|(score, label)| (*score >= 0.5) == *label).count();
        let accuracy = w["metrics"]["accuracy"].as_f64().unwrap();
        assert!((accuracy - correct as f64 / 500.0).abs() < 1e-12, "window {i}: {accuracy} vs {correct}/500");
        assert_eq!(w["first_row"], i * 500);
        assert_eq!(w["labelled"], 500);
        // The estimate assumes calibration holds: it tracks the realized figure before
        // the change and cannot see the concept shift after it.
        let estimated = w["estimated"]["accuracy"].as_f64().unwrap_or_else(|| panic!("no estimate: {w}"));
        if i < 6 {
            assert!(
                (estimated - accuracy).abs() < 0.06,
                "window {i}: estimated {estimated}, realized {accuracy}"
            );
        } else {
            assert!(estimated - accuracy > 0.15, "window {i}: estimated {estimated}, realized {accuracy}");
        }
    }
    // Before the change the model is right about 3 times in 4; after it, half the time.
    let trigger = &s["triggers"][0];
    assert_eq!(trigger["name"], "model-worse");
    assert_eq!(trigger["clean_alarms"], 0, "{s:#}");
    // Two windows: the condition holds in consecutive windows by default.
    assert!(trigger["delays_windows"][0].as_u64().is_some_and(|d| d <= 2), "{s:#}");

    // The table lists the windows' figures.
    let out = backtest(&["--config", config.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("realized performance per window"), "{table}");
    assert!(table.contains("window   11 rows 5500-5999"), "{table}");

    // A file without the label column is refused by name.
    let unlabelled = dir.path().join("unlabelled.csv");
    std::fs::write(&unlabelled, csv(1_000, usize::MAX, 6)).unwrap();
    let out = backtest(&["--config", config.to_str().unwrap(), "--data", unlabelled.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`score`") && stderr.contains("labels"), "{stderr}");
}

#[test]
fn a_labelled_file_replays_sliding_windows_each_over_the_rows_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let labels = "[streams.labels]\ntopics = [\"labels\"]\nprediction_id = \"key\"\nlabel_id = \"key\"\n\
        label = \"/label\"\nttl = \"1h\"\ntask = { type = \"binary\", score = \"/score\", threshold = 0.5 }\n";
    let config = write_config(dir.path(), "{ type = \"sliding_count\", size = 1000, slide = 500 }", labels);
    std::fs::write(dir.path().join("train.csv"), labelled_csv(5_000, usize::MAX, 1).0).unwrap();
    let data = dir.path().join("history.csv");
    let (text, pairs) = labelled_csv(6_000, 3_000, 7);
    std::fs::write(&data, text).unwrap();
    let out = backtest(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let s = json(&out);
    let performance = s["performance"].as_array().unwrap_or_else(|| panic!("no performance: {s:#}"));
    // Windows of 1,000 rows every 500: they end at rows 1,000, 1,500, ..., 6,000.
    assert_eq!(performance.len(), 11, "{s:#}");
    for (i, w) in performance.iter().enumerate() {
        assert_eq!(w["first_row"], i * 500, "{w}");
        let rows = &pairs[i * 500..i * 500 + 1000];
        let correct = rows.iter().filter(|(score, label)| (*score >= 0.5) == *label).count();
        let accuracy = w["metrics"]["accuracy"].as_f64().unwrap();
        assert!(
            (accuracy - correct as f64 / 1000.0).abs() < 1e-12,
            "window {i}: {accuracy} vs {correct}/1000"
        );
        assert_eq!(w["labelled"], 1000, "{w}");
    }
}
