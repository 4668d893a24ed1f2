//! `driftscope run` against the real Kafka broker: window reports equal `score` on the
//! same records, drift is flagged where it was injected and nowhere else, bad records
//! are counted and dead-lettered, and a stop and restart loses nothing.

mod common;

use common::*;
use driftscope::ingest::files::{DataFile, read_data_file};
use driftscope::offline::{ReferenceSource, prepare_reference, score_file};
use driftscope::stats::DriftSettings;
use driftscope::stats::sequential::SequentialState;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(case: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats").join(case).join(file)
}

/// Rows of a data file as JSON objects (nulls left out, so they arrive as missing).
fn json_rows(file: &DataFile) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for batch in &file.batches {
        let mut buf = Vec::new();
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        out.extend(buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
    out
}

struct Setup {
    dir: tempfile::TempDir,
    topic: String,
    bootstrap: String,
}

impl Setup {
    fn new(bootstrap: String, partitions: i32) -> Setup {
        let topic = unique("drift-in");
        create_topic(&bootstrap, &topic, partitions);
        Setup { dir: tempfile::tempdir().unwrap(), topic, bootstrap }
    }

    fn reports_path(&self) -> PathBuf {
        self.dir.path().join("reports.jsonl")
    }

    fn config(&self, group: &str, window: &str, reference: &str, extra_kafka: &str, fields: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{group}.toml"));
        let text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
{extra_kafka}

[state]
dir = "{state}"

[http]
listen = "127.0.0.1:0"

[outputs]
reports_file = "{reports}"

[[streams]]
name = "features"
topics = ["{topic}"]
format = "json"
window = {window}
reference = {reference}
{fields}
"#,
            brokers = self.bootstrap,
            state = self.dir.path().join("state").display(),
            reports = self.reports_path().display(),
            topic = self.topic,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[test]
fn window_reports_equal_offline_score_on_the_same_records() {
    reports_equal_offline_score("");
}

/// The same with `kafka.batch_reads = false`: messages polled one by one.
#[test]
fn reading_one_by_one_reports_the_same() {
    reports_equal_offline_score("batch_reads = false");
}

fn reports_equal_offline_score(extra_kafka: &str) {
    let Some(bootstrap) = broker() else { return };
    let setup = Setup::new(bootstrap, 1);
    let reference_path = fixture("normal_shift", "reference.parquet");
    let current = read_data_file(&fixture("normal_shift", "current.csv")).unwrap();
    produce(&setup.bootstrap, &setup.topic, 0, &json_rows(&current));
    let config = setup.config(
        &unique("g"),
        "{ type = \"tumbling_count\", size = 500 }",
        &format!("{{ data = \"{}\" }}", reference_path.display()),
        extra_kafka,
        "",
    );
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], setup.dir.path());
    let reports = run.wait_reports(&setup.reports_path(), 4, Duration::from_secs(120));
    let reading = if extra_kafka.contains("batch_reads = false") { "one by one" } else { "in batches" };
    assert!(
        run.log_text().contains(&format!("reading=\"{reading}\"")),
        "the log says how messages are read ({reading}):\n{}",
        run.log_text()
    );
    assert!(run.terminate().success());

    let (reference, _) = prepare_reference(
        ReferenceSource::Data(read_data_file(&reference_path).unwrap()),
        &DriftSettings::default(),
        &BTreeMap::new(),
    )
    .unwrap();
    let batch = &current.batches[0];
    // The stream's reports also carry its sequential detectors: the same detector run
    // over the offline reports in order must agree.
    let mut sequential = SequentialState::default();
    for (i, report) in reports.iter().take(4).enumerate() {
        let slice = DataFile {
            path: "slice".into(),
            schema: current.schema.clone(),
            batches: vec![batch.slice(500 * i, 500)],
        };
        let offline = offline_with_detector(&reference, &slice, i, &mut sequential);
        assert_eq!(report["features"], offline["features"], "window {i}: features differ from `score`");
        assert_eq!(report["dataset"], offline["dataset"], "window {i}");
        assert_eq!(report["window"]["records"], 500);
        assert_eq!(report["window"]["index"], i);
        assert_eq!(report["stream"], "features");
        let offsets = &report["window"]["offsets"][0];
        assert_eq!(
            (offsets["first"].as_i64(), offsets["last"].as_i64()),
            (Some(500 * i as i64), Some(500 * i as i64 + 499))
        );
    }
}

#[test]
fn drift_is_flagged_where_injected_and_clean_windows_stay_quiet() {
    let Some(bootstrap) = broker() else { return };
    let setup = Setup::new(bootstrap, 1);
    let reference_path = fixture("normal_shift", "reference.parquet");
    // Clean phase: records drawn from the reference itself; then the drifted data.
    let clean = read_data_file(&fixture("normal_shift", "reference.csv")).unwrap();
    let drifted = read_data_file(&fixture("normal_shift", "current.csv")).unwrap();
    let mut payloads: Vec<Vec<u8>> = json_rows(&clean).into_iter().skip(1000).take(2000).collect();
    payloads.extend(json_rows(&drifted));
    produce(&setup.bootstrap, &setup.topic, 0, &payloads);
    let config = setup.config(
        &unique("g"),
        "{ type = \"tumbling_count\", size = 1000 }",
        &format!("{{ profile = \"{}\" }}", build_profile(&reference_path, setup.dir.path()).display()),
        "",
        "",
    );
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], setup.dir.path());
    let reports = run.wait_reports(&setup.reports_path(), 4, Duration::from_secs(120));
    assert!(run.terminate().success());
    let drifted: Vec<bool> = reports.iter().map(|r| r["dataset"]["drifted"].as_bool().unwrap()).collect();
    assert_eq!(drifted, vec![false, false, true, true], "clean, clean, drifted, drifted");
    assert_eq!(reports[2]["features"][0]["name"], "x");
    assert_eq!(reports[2]["features"][0]["drifted"], true);
    assert!(reports[0]["features"].as_array().unwrap().iter().all(|f| f["drifted"] == false));
}

fn build_profile(data: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("reference.profile");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["reference", "build", "--input", data.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    out
}

#[test]
fn bad_records_are_counted_by_reason_and_dead_lettered() {
    let Some(bootstrap) = broker() else { return };
    let setup = Setup::new(bootstrap.clone(), 1);
    let dlq = unique("dlq");
    create_topic(&bootstrap, &dlq, 1);
    let good = |x: f64| format!(r#"{{"x": {x}, "c": "a"}}"#).into_bytes();
    let mut payloads: Vec<Vec<u8>> = (0..150).map(|i| good(f64::from(i % 10))).collect();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("malformed_json", b"{\"x\": 1,".to_vec()),
        ("not_an_object", b"[1, 2, 3]".to_vec()),
        ("oversize", format!(r#"{{"x": 1, "pad": "{}"}}"#, "p".repeat(5000)).into_bytes()),
        ("malformed_json", vec![0xff, 0xfe, 0x00, 0x01]),
    ];
    payloads.extend(bad.iter().map(|(_, p)| p.clone()));
    // Wrong types are not bad records: they count as invalid values of their field.
    payloads.push(br#"{"x": "seven", "c": 5}"#.to_vec());
    payloads.extend((0..49).map(|i| good(f64::from(i % 10))));
    produce(&setup.bootstrap, &setup.topic, 0, &payloads);
    let fields = r#"
[[streams.fields]]
name = "x"
kind = "numeric"
[[streams.fields]]
name = "c"
kind = "categorical"
"#;
    let config = setup.config(
        &unique("g"),
        "{ type = \"tumbling_count\", size = 100 }",
        "{ from_stream = 100 }",
        &format!("dead_letter_topic = \"{dlq}\"\nmax_message_bytes = 4096"),
        fields,
    );
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], setup.dir.path());
    let reports = run.wait_reports(&setup.reports_path(), 1, Duration::from_secs(120));
    assert!(run.terminate().success());
    // 100 reference records, then 100 good-or-invalid-valued ones in the window.
    assert_eq!(reports[0]["window"]["records"], 100);
    let x = &reports[0]["features"][0];
    assert_eq!(x["invalid"], 1, "the string in a numeric field");
    assert_eq!(reports[0]["reference"]["source"], "stream:features");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let mut reasons = Vec::new();
    wait_for("4 dead letters", Duration::from_secs(60), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m.headers().expect("dead letters carry headers");
            let reason = headers.iter().find(|h| h.key == "driftscope-reason").and_then(|h| h.value).unwrap();
            reasons.push(String::from_utf8_lossy(reason).into_owned());
            let source = headers.iter().find(|h| h.key == "driftscope-source").and_then(|h| h.value).unwrap();
            assert!(String::from_utf8_lossy(source).starts_with(&setup.topic));
        }
        (reasons.len() >= 4).then_some(())
    });
    let expected: Vec<String> = bad.iter().map(|(r, _)| r.to_string()).collect();
    assert_eq!(reasons, expected);
}

#[test]
fn stop_and_restart_loses_no_committed_record_and_windows_stay_complete() {
    let Some(bootstrap) = broker() else { return };
    let setup = Setup::new(bootstrap, 1);
    let payload = |i: usize| format!(r#"{{"x": {}, "c": "k{}"}}"#, i % 17, i % 3).into_bytes();
    let first: Vec<Vec<u8>> = (0..1150).map(payload).collect();
    produce(&setup.bootstrap, &setup.topic, 0, &first);
    let fields = "[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n[[streams.fields]]\nname = \"c\"\nkind = \"categorical\"\n";
    let group = unique("g");
    let config = setup.config(
        &group,
        "{ type = \"tumbling_count\", size = 300 }",
        "{ from_stream = 100 }",
        "",
        fields,
    );
    let args = ["run", "--config", config.to_str().unwrap()];

    // First run: reference from offsets 0..99, windows 100..399, 400..699, 700..999;
    // 1000..1149 are still in the open window when it stops, so they are not committed.
    let mut run = Driftscope::start(&args, setup.dir.path());
    run.wait_reports(&setup.reports_path(), 3, Duration::from_secs(120));
    assert!(run.terminate().success(), "SIGTERM is a clean exit");

    // More records while it is down, then a second run from the committed offsets.
    let second: Vec<Vec<u8>> = (1150..1600).map(payload).collect();
    produce(&setup.bootstrap, &setup.topic, 0, &second);
    let mut run = Driftscope::start(&args, setup.dir.path());
    run.wait_reports(&setup.reports_path(), 5, Duration::from_secs(120));
    assert!(run.terminate().success());

    let reports = read_reports(&setup.reports_path());
    let ranges: Vec<(i64, i64)> = reports
        .iter()
        .map(|r| {
            assert_eq!(r["window"]["records"], 300, "every window is complete");
            let o = &r["window"]["offsets"][0];
            (o["first"].as_i64().unwrap(), o["last"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(ranges, vec![(100, 399), (400, 699), (700, 999), (1000, 1299), (1300, 1599)]);
    // The restarted monitor scored against the reference saved by the first run.
    assert_eq!(reports[0]["reference"]["created_at"], reports[4]["reference"]["created_at"]);
}

#[test]
fn arrow_ipc_messages_score_like_the_same_rows_offline() {
    let Some(bootstrap) = broker() else { return };
    let setup = Setup::new(bootstrap, 1);
    let reference_path = fixture("normal_shift", "reference.parquet");
    let current = read_data_file(&fixture("normal_shift", "current.parquet")).unwrap();
    let batch = arrow::compute::concat_batches(&current.schema, &current.batches).unwrap();
    // 250 rows per message: two messages fill one 500-record window.
    let payloads: Vec<Vec<u8>> = (0..batch.num_rows() / 250)
        .map(|i| {
            let mut buf = Vec::new();
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &current.schema).unwrap();
            w.write(&batch.slice(250 * i, 250)).unwrap();
            w.finish().unwrap();
            drop(w);
            buf
        })
        .collect();
    produce(&setup.bootstrap, &setup.topic, 0, &payloads);
    let config = setup.config(
        &unique("g"),
        "{ type = \"tumbling_count\", size = 500 }",
        &format!("{{ data = \"{}\" }}", reference_path.display()),
        "",
        "",
    );
    let text =
        std::fs::read_to_string(&config).unwrap().replace("format = \"json\"", "format = \"arrow_ipc\"");
    std::fs::write(&config, text).unwrap();
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], setup.dir.path());
    let reports = run.wait_reports(&setup.reports_path(), 4, Duration::from_secs(120));
    assert!(run.terminate().success());
    let (reference, _) = prepare_reference(
        ReferenceSource::Data(read_data_file(&reference_path).unwrap()),
        &DriftSettings::default(),
        &BTreeMap::new(),
    )
    .unwrap();
    let mut sequential = SequentialState::default();
    for (i, report) in reports.iter().take(4).enumerate() {
        let slice = DataFile {
            path: "slice".into(),
            schema: current.schema.clone(),
            batches: vec![batch.slice(500 * i, 500)],
        };
        let offline = offline_with_detector(&reference, &slice, i, &mut sequential);
        assert_eq!(report["features"], offline["features"], "window {i}");
        // Two messages per window: the replay pointer names both offsets.
        let o = &report["window"]["offsets"][0];
        assert_eq!((o["first"].as_i64(), o["last"].as_i64()), (Some(2 * i as i64), Some(2 * i as i64 + 1)));
    }
}

/// `score` of one window's rows, folded into `sequential` as window `index`, as JSON.
fn offline_with_detector(
    reference: &driftscope::stats::Reference,
    slice: &DataFile,
    index: usize,
    sequential: &mut SequentialState,
) -> serde_json::Value {
    let mut report = score_file(reference, slice);
    report.window.index = index as u64;
    sequential.update(&mut report, reference.settings.alpha_sequential);
    serde_json::to_value(report).unwrap()
}
