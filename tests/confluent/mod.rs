//! Helpers of the Confluent-format tests (tests/kafka_avro.rs, tests/kafka_protobuf.rs):
//! the real schema registry and the Python that writes messages with confluent-kafka's
//! serializers (scripts/python/confluent_produce.py), the rows of a stats fixture as
//! JSON and as Parquet, the run's config, and reading its metrics.
#![allow(dead_code)]

use crate::common::*;
use driftscope::ingest::files::{DataFile, read_data_file};
use driftscope::offline::{ReferenceSource, prepare_reference, score_file};
use driftscope::stats::DriftSettings;
use driftscope::stats::sequential::SequentialState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The registry URL and the test venv's Python, from `DRIFTSCOPE_REGISTRY_URL` and
/// `DRIFTSCOPE_TEST_PYTHON` (scripts/test.sh sets both). Missing: a failure under
/// `CI=true`, else the test is skipped with a message.
pub fn registry_and_python() -> Option<(String, String)> {
    let url = std::env::var("DRIFTSCOPE_REGISTRY_URL").ok();
    let python = std::env::var("DRIFTSCOPE_TEST_PYTHON").ok();
    match (url, python) {
        (Some(url), Some(python)) => Some((url, python)),
        _ => {
            let message = "DRIFTSCOPE_REGISTRY_URL and DRIFTSCOPE_TEST_PYTHON are needed: start the registry \
                           with `scripts/registry.sh start` (its `url` command prints the URL) and make the \
                           venv with `scripts/test-venv.sh`, or run scripts/test.sh, which does both";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message}");
            }
            eprintln!("skipping: {message}");
            None
        }
    }
}

/// Runs the Python producer; returns the schema ids each phase's messages carry.
pub fn produce_confluent(
    python: &str,
    bootstrap: &str,
    registry: &str,
    topic: &str,
    format: &str,
    phases: &[(PathBuf, PathBuf)],
) -> Vec<Vec<u32>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python/confluent_produce.py");
    let mut command = std::process::Command::new(python);
    command.arg(&script).args([
        "--bootstrap",
        bootstrap,
        "--registry",
        registry,
        "--topic",
        topic,
        "--format",
        format,
    ]);
    for (schema, rows) in phases {
        command.arg("--phase").arg(format!("{}:{}", schema.display(), rows.display()));
    }
    let out = command.output().expect("run the Python producer");
    assert!(
        out.status.success(),
        "confluent_produce.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the producer's JSON line");
    answer["schema_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect())
        .collect()
}

pub fn fixture(case: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats").join(case).join(file)
}

/// The rows of a data file as JSON objects (column name to value; nulls kept).
pub fn rows_of(file: &DataFile) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut out = Vec::new();
    for batch in &file.batches {
        let mut buf = Vec::new();
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).unwrap());
        }
    }
    out
}

pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

/// The same rows as Parquet, read back: what `score` gets.
pub fn as_parquet(file: &DataFile, path: &Path) -> DataFile {
    let out = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(out, file.schema.clone(), None).unwrap();
    for batch in &file.batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
    read_data_file(path).unwrap()
}

/// A run's config: one stream of `format` with `options` (its format table and
/// fields), reports to `dir/reports.jsonl`.
pub fn run_config(
    dir: &Path,
    bootstrap: &str,
    registry: &str,
    topic: &str,
    format: &str,
    stream_extra: &str,
) -> PathBuf {
    let path = dir.join("run.toml");
    let text = format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
properties = {{ "group.instance.id" = "{group}-0" }}

[registry]
url = "{registry}"
max_backoff = "200ms"

[state]
dir = "{state}"

[http]
listen = "127.0.0.1:0"

[outputs]
reports_file = "{reports}"

[[streams]]
name = "features"
topics = ["{topic}"]
format = "{format}"
window = {{ type = "tumbling_count", size = 500 }}
reference = {{ data = "{reference}" }}
{stream_extra}
"#,
        group = unique("g"),
        state = dir.join("state").display(),
        reports = dir.join("reports.jsonl").display(),
        reference = fixture("normal_shift", "reference.parquet").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts the first `n` reports equal `score` on the same rows (Parquet) in slices
/// of 500, sequential detectors included.
pub fn assert_reports_equal_score(reports: &[serde_json::Value], current: &DataFile, n: usize) {
    let (reference, _) = prepare_reference(
        ReferenceSource::Data(read_data_file(&fixture("normal_shift", "reference.parquet")).unwrap()),
        &DriftSettings::default(),
        &BTreeMap::new(),
    )
    .unwrap();
    let batch = arrow::compute::concat_batches(&current.schema, &current.batches).unwrap();
    let mut sequential = SequentialState::default();
    for (i, report) in reports.iter().take(n).enumerate() {
        let slice = DataFile {
            path: "slice".into(),
            schema: current.schema.clone(),
            batches: vec![batch.slice(500 * i, 500)],
        };
        let mut offline = score_file(&reference, &slice);
        offline.window.index = i as u64;
        sequential.update(&mut offline, reference.settings.alpha_sequential);
        let offline = serde_json::to_value(offline).unwrap();
        assert_eq!(report["features"], offline["features"], "window {i}: features differ from `score`");
        assert_eq!(report["dataset"], offline["dataset"], "window {i}");
        assert_eq!(report["window"]["records"], 500, "window {i}");
    }
}

/// A metric's value from `/metrics`: the series of `name` with every label of `labels`
/// (`stream="features"`, ...).
pub fn metric(addr: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let (status, body) = http("GET", addr, "/metrics", None);
    assert_eq!(status, 200);
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) || !labels.iter().all(|l| rest.contains(l)) {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}

/// Waits until a series reaches `value`.
pub fn wait_metric(addr: &str, name: &str, labels: &[&str], value: f64) {
    wait_for(&format!("{name}{labels:?} = {value}"), Duration::from_secs(60), || {
        (metric(addr, name, labels) == Some(value)).then_some(())
    });
}

/// The fixture's current rows with `y` missing in every row `r` where `r % every == at`
/// (a union's null branch in Avro, an unset optional field in Protobuf).
pub fn current_with_missing_y(every: usize, at: usize) -> DataFile {
    use arrow::array::{Array, ArrayRef, Float64Array};
    use std::sync::Arc;
    let file = read_data_file(&fixture("normal_shift", "current.csv")).unwrap();
    let batch = arrow::compute::concat_batches(&file.schema, &file.batches).unwrap();
    let i = file.schema.index_of("y").unwrap();
    let y = batch.column(i).as_any().downcast_ref::<Float64Array>().unwrap();
    let missing: Float64Array = (0..y.len()).map(|r| (r % every != at).then(|| y.value(r))).collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[i] = Arc::new(missing);
    let schema = Arc::new(arrow::datatypes::Schema::new(
        file.schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    DataFile {
        path: file.path,
        schema: schema.clone(),
        batches: vec![arrow::record_batch::RecordBatch::try_new(schema, columns).unwrap()],
    }
}
