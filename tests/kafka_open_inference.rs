//! `driftscope run` on Open Inference Protocol requests on the real broker, written by
//! a real client library (tritonclient's generated `ModelInferRequest`, typed contents
//! and raw contents alternating, `scripts/python/oip_produce.py`) in batches of 32
//! rows: every window report equals `score` on the same rows written as Parquet, and
//! the refused messages (a truncated request, a tensor of an unsupported datatype) are
//! counted by their reason and dead-lettered.

mod common;

use common::*;
use driftscope::ingest::files::{DataFile, read_data_file};
use driftscope::offline::{ReferenceSource, prepare_reference, score_file};
use driftscope::stats::DriftSettings;
use driftscope::stats::sequential::SequentialState;
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
