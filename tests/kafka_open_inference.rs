//! `driftscope run` on Open Inference Protocol requests on the real broker, written by
//! a real client library (tritonclient's generated `ModelInferRequest`, typed contents
//! and raw contents alternating, `scripts/python/oip_produce.py`) in batches of 32
//! rows: every window report equals `score` on the same rows written as Parquet, and
//! the refused messages (a truncated request, a tensor of an unsupported datatype) are
//! counted by their reason and dead-lettered.
//!
//! Labels on an `open_inference` stream: tritonclient's `ModelInferResponse`s (typed and
//! raw contents alternating, `scripts/python/oip_responses.py`) in batches of 1 to 32
//! rows, every message with the same Kafka key, so only the protocol's `id` tells them
//! apart; a JSON labels topic keyed `<id>` (a response of one row) or `<id>/<row>`.
//! Each window's realized performance equals the figures computed here on its rows.

mod common;

use common::*;
use driftscope::decode::open_inference::proto::ModelInferResponse;
use driftscope::decode::open_inference::proto::model_infer_response::InferOutputTensor;
use driftscope::ingest::files::{DataFile, read_data_file};
use driftscope::offline::{ReferenceSource, prepare_reference, score_file};
use driftscope::stats::DriftSettings;
use driftscope::stats::sequential::SequentialState;
use prost::Message as _;
use rdkafka::producer::{BaseRecord, Producer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats/normal_shift").join(file)
}

/// The Python that has the client libraries (scripts/test-venv.sh, set by
/// scripts/test.sh). Without it the test fails in CI and is skipped elsewhere.
fn python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("DRIFTSCOPE_TEST_PYTHON") {
        return Some(python.into());
    }
    let message = "DRIFTSCOPE_TEST_PYTHON is not set: it names the Python with the client libraries that \
                   write this test's messages (`export DRIFTSCOPE_TEST_PYTHON=$(scripts/test-venv.sh)`; \
                   scripts/test.sh sets it)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

/// The value of series `name` with all of `labels` on a Prometheus text page (0 when absent).
fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn write_parquet(path: &Path, file: &DataFile, batch: arrow::record_batch::RecordBatch) {
    let out = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(out, file.schema.clone(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn seldon_style_requests_score_like_the_same_rows_offline() {
    let Some(bootstrap) = broker() else { return };
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("seldon.ns.model.income.inputs");
    let dead_letters = unique("driftscope-dlq");
    create_topic(&bootstrap, &topic, 1);

    // The rows, handed to the producer as JSON Lines.
    let reference_path = fixture("reference.parquet");
    let current = read_data_file(&fixture("current.parquet")).unwrap();
    let batch = arrow::compute::concat_batches(&current.schema, &current.batches).unwrap();
    let rows_path = dir.path().join("rows.jsonl");
    let mut writer = arrow::json::LineDelimitedWriter::new(std::fs::File::create(&rows_path).unwrap());
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python/oip_produce.py");
    let produced = Command::new(&python)
        .arg(&script)
        .args(["--bootstrap", &bootstrap, "--topic", &topic, "--rows"])
        .arg(&rows_path)
        .args(["--matrix", "x,y", "--bytes", "country", "--int", "count", "--batch", "32", "--bad"])
        .output()
        .expect("run the producer");
    assert!(
        produced.status.success(),
        "oip_produce.py failed:\n{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let messages: usize = String::from_utf8_lossy(&produced.stdout).trim().parse().unwrap();
    assert_eq!(messages, batch.num_rows().div_ceil(32) + 2);

    // A Seldon Core 2 model's input topic: the model's input tensors named in config.
    let config = dir.path().join("driftscope.toml");
    let reports_path = dir.path().join("reports.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
dead_letter_topic = "{dead_letters}"

[state]
dir = "{state}"

[http]
listen = "127.0.0.1:0"

[outputs]
reports_file = "{reports}"

[[streams]]
name = "income"
topics = ["{topic}"]
format = "open_inference"
window = {{ type = "tumbling_count", size = 500 }}
reference = {{ data = "{reference}" }}

[streams.open_inference]
message = "request"
columns = {{ features = ["x", "y"] }}
"#,
            group = unique("g"),
            state = dir.path().join("state").display(),
            reports = reports_path.display(),
            reference = reference_path.display(),
        ),
    )
    .unwrap();
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    // 2,000 rows in 63 messages of up to 32 rows: four windows of 500, split mid-message.
    let reports = run.wait_reports(&reports_path, 4, Duration::from_secs(120));
    let addr = http_address(&run);
    let counted = wait_for("the refused messages dead-lettered", Duration::from_secs(60), || {
        let (status, text) = http("GET", &addr, "/metrics", None);
        assert_eq!(status, 200);
        (metric(&text, "driftscope_dead_lettered_total", &["stream=\"income\""]) == 2).then_some(text)
    });
    for reason in ["malformed_open_inference", "unsupported_datatype"] {
        let labels = ["stream=\"income\"", &format!("reason=\"{reason}\"")];
        assert_eq!(metric(&counted, "driftscope_records_invalid_total", &labels), 1, "{reason}");
    }
    for reason in ["shape_mismatch", "wrong_datatype", "no_monitored_tensor"] {
        let labels = ["stream=\"income\"", &format!("reason=\"{reason}\"")];
        assert!(counted.contains(&format!("reason=\"{reason}\"")), "{reason}: a series at zero");
        assert_eq!(metric(&counted, "driftscope_records_invalid_total", &labels), 0, "{reason}");
    }
    assert!(run.terminate().success());

    let (reference, _) = prepare_reference(
        ReferenceSource::Data(read_data_file(&reference_path).unwrap()),
        &DriftSettings::default(),
        &BTreeMap::new(),
    )
    .unwrap();
    let mut sequential = SequentialState::default();
    assert_eq!(reports.len(), 4, "2,000 rows make four windows");
    for (i, report) in reports.iter().enumerate() {
        // The window's rows as Parquet, scored as `driftscope score` does.
        let path = dir.path().join(format!("window-{i}.parquet"));
        write_parquet(&path, &current, batch.slice(500 * i, 500));
        let rows = read_data_file(&path).unwrap();
        let mut offline = score_file(&reference, &rows);
        offline.window.index = i as u64;
        sequential.update(&mut offline, reference.settings.alpha_sequential);
        let offline = serde_json::to_value(offline).unwrap();
        assert_eq!(report["window"]["records"], 500, "window {i}");
        assert_eq!(report["features"], offline["features"], "window {i}: features differ from `score`");
        assert_eq!(report["dataset"], offline["dataset"], "window {i}");
    }
}

/// Produces keyed messages to partition 0 of `topic`, waiting for every acknowledgement.
fn produce_keyed(bootstrap: &str, topic: &str, messages: &[(String, Vec<u8>)]) {
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

/// xorshift64*: seeded, so every run sees the same rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A response of `rows` rows with no labels (score 0.5), encoded here: it only closes
/// a window, so that the next report carries the windows settled before it.
fn tail_response(id: &str, rows: usize) -> Vec<u8> {
    let tensor = |name: &str, datatype: &str| InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![rows as i64],
        ..Default::default()
    };
    let mut x = tensor("x", "FP64");
    x.contents = Some(driftscope::decode::open_inference::proto::InferTensorContents {
        fp64_contents: vec![0.0; rows],
        ..Default::default()
    });
    let mut p = tensor("probability", "FP32");
    p.contents = Some(driftscope::decode::open_inference::proto::InferTensorContents {
        fp32_contents: vec![0.5; rows],
        ..Default::default()
    });
    ModelInferResponse { id: id.into(), outputs: vec![x, p], ..Default::default() }.encode_to_vec()
}

#[test]
fn responses_join_labels_by_protocol_id_and_each_window_performance_is_exact() {
    const WINDOW: usize = 200;
    const WINDOWS: usize = 3;
    let Some(bootstrap) = broker() else { return };
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (topic, labels_topic) = (unique("model.fraud.outputs"), unique("fraud-labels"));
    create_topic(&bootstrap, &topic, 1);
    create_topic(&bootstrap, &labels_topic, 1);

    // The rows: (row id, x, score as the FP32 tensor holds it, label), in batches of
    // 1 to 32 rows whose ids are the response's id, or `<id>/<row>` in a batch.
    let mut rng = Rng(0x0e1d);
    let mut rows: Vec<(String, f64, f64, bool)> = Vec::new();
    let mut messages = String::new();
    let sizes = [1, 5, 16, 3, 32, 1, 7, 2];
    let mut m = 0;
    while rows.len() < WINDOW * WINDOWS {
        let n = sizes[m % sizes.len()].min(WINDOW * WINDOWS - rows.len());
        let id = format!("resp-{m:04}");
        let (mut xs, mut ps) = (Vec::new(), Vec::new());
        for i in 0..n {
            let score = f64::from(rng.unit() as f32);
            let label = rng.unit() < score * 0.8 + 0.1;
            let x = rng.unit() * 2.0 - 1.0;
            let row_id = if n == 1 { id.clone() } else { format!("{id}/{i}") };
            rows.push((row_id, x, score, label));
            xs.push(x);
            ps.push(score);
        }
        messages.push_str(&serde_json::json!({ "id": id, "x": xs, "p": ps }).to_string());
        messages.push('\n');
        m += 1;
    }
    let messages_path = dir.path().join("responses.jsonl");
    std::fs::write(&messages_path, messages).unwrap();

    let mut csv = String::from("x\n");
    for _ in 0..2_000 {
        csv.push_str(&format!("{}\n", rng.unit() * 2.0 - 1.0));
    }
    let profile = build_profile(dir.path(), &csv);
    let config = dir.path().join("driftscope.toml");
    let reports_path = dir.path().join("reports.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"

[state]
dir = "{state}"

[http]
listen = "127.0.0.1:0"

[outputs]
reports_file = "{reports}"

[[streams]]
name = "fraud"
topics = ["{topic}"]
format = "open_inference"
window = {{ type = "tumbling_count", size = {WINDOW} }}
reference = {{ profile = "{profile}" }}

[streams.open_inference]
message = "response"

[[streams.fields]]
name = "x"
kind = "numeric"

[streams.labels]
topics = ["{labels_topic}"]
prediction_id = "protocol"
label_id = "key"
label = "/y"
ttl = "10m"
task = {{ type = "binary", score = "probability", threshold = 0.5 }}
"#,
            group = unique("g"),
            state = dir.path().join("state").display(),
            reports = reports_path.display(),
            profile = profile.display(),
        ),
    )
    .unwrap();
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python/oip_responses.py");
    let produced = Command::new(&python)
        .arg(&script)
        .args(["--bootstrap", &bootstrap, "--topic", &topic, "--key", "model-fraud", "--messages"])
        .arg(&messages_path)
        .output()
        .expect("run the producer");
    assert!(
        produced.status.success(),
        "oip_responses.py failed:\n{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&produced.stdout).trim(), m.to_string());
    let labels: Vec<(String, Vec<u8>)> = rows
        .iter()
        .map(|(id, _, _, label)| (id.clone(), format!(r#"{{"y":{label}}}"#).into_bytes()))
        .collect();
    produce_keyed(&bootstrap, &labels_topic, &labels);

    // A window's report carries the windows settled before it: windows of unlabelled
    // rows close more windows until the three labelled ones are final (their labels
    // may be read after their predictions).
    let mut finals: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    let mut last = serde_json::Value::Null;
    for tail in 0..10 {
        produce(&bootstrap, &topic, 0, &[tail_response(&format!("tail-{tail}"), WINDOW)]);
        let reports = run.wait_reports(&reports_path, WINDOWS + 1 + tail, Duration::from_secs(120));
        for report in &reports {
            for w in report["performance"]["windows"].as_array().into_iter().flatten() {
                if w["status"] == "final" {
                    finals.insert(w["index"].as_u64().unwrap(), w.clone());
                }
            }
        }
        last = reports.last().cloned().unwrap_or_default();
        if (0..WINDOWS as u64).all(|i| finals.contains_key(&i)) {
            break;
        }
    }
    assert!(run.terminate().success());

    for (i, chunk) in rows.chunks(WINDOW).enumerate() {
        let w = finals.get(&(i as u64)).unwrap_or_else(|| panic!("window {i} never final: {finals:?}"));
        let (mut tp, mut fp, mut tn, mut fn_) = (0u64, 0u64, 0u64, 0u64);
        for &(_, _, score, label) in chunk {
            match (score >= 0.5, label) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, false) => tn += 1,
                (false, true) => fn_ += 1,
            }
        }
        assert_eq!((w["predictions"].as_u64(), w["labelled"].as_u64()), (Some(200), Some(200)), "window {i}");
        assert_eq!(w["confusion"], serde_json::json!([tp, fp, tn, fn_]), "window {i}");
        let (tp, fp, tn, fn_) = (tp as f64, fp as f64, tn as f64, fn_ as f64);
        for (metric, expected) in [
            ("accuracy", (tp + tn) / WINDOW as f64),
            ("precision", tp / (tp + fp)),
            ("recall", tp / (tp + fn_)),
            ("f1", 2.0 * tp / (2.0 * tp + fp + fn_)),
        ] {
            let got = w["metrics"][metric].as_f64().unwrap_or(f64::NAN);
            assert!((got - expected).abs() < 1e-12, "window {i} {metric}: {got} != {expected}");
        }
    }
    let counts = &last["performance"]["counts"];
    for (outcome, expected) in [("joined", rows.len()), ("orphan", 0), ("bad_id", 0), ("bad_prediction", 0)] {
        assert_eq!(counts[outcome].as_u64().unwrap_or(0), expected as u64, "{outcome}: {counts}");
    }
}
