//! Hostile input through `driftscope run` on the real broker: every bad message is
//! counted by reason, none crashes the monitor, and memory stays bounded when a
//! categorical field receives a million distinct values.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
}

fn start(
    dir: &std::path::Path,
    bootstrap: &str,
    topic: &str,
    format: &str,
    window: u64,
    extra: &str,
) -> (Driftscope, String, std::path::PathBuf) {
    let reports = dir.join("reports.jsonl");
    let config = dir.join("driftscope.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
{extra}
[state]
dir = "{state}"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
[[streams]]
name = "s"
topics = ["{topic}"]
format = "{format}"
window = {{ type = "tumbling_count", size = {window} }}
reference = {{ from_stream = 100 }}
[[streams.fields]]
name = "x"
kind = "numeric"
[[streams.fields]]
name = "c"
kind = "categorical"
"#,
            group = unique("g"),
            state = dir.join("state").display(),
            reports = reports.display(),
        ),
    )
    .unwrap();
    let run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir);
    let addr = http_address(&run);
    (run, addr, reports)
}

#[test]
fn hostile_json_is_counted_by_reason_and_never_crashes() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("hostile-json");
    create_topic(&bootstrap, &topic, 1);
    let good = |i: usize| format!(r#"{{"x": {}, "c": "k{}"}}"#, i % 10, i % 3).into_bytes();
    let mut payloads: Vec<Vec<u8>> = (0..100).map(good).collect();
    let hostile: Vec<Vec<u8>> = vec![
        vec![b'x'; 10 * 1024 * 1024], // 10 MB: oversize
        // Deep but well-formed nesting in an unmonitored field: skimmed without recursion.
        format!(r#"{{"x": 1, "deep": {}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        Vec::new(),                                          // empty
        (0..=255u8).cycle().take(4096).collect(),            // binary
        br#"{"x": "NaN", "c": "k1"}"#.to_vec(),              // NaN spelled as a string: invalid value
        br#"{"x": "Infinity", "c": "k1"}"#.to_vec(),         // invalid value
        br#"{"x": NaN, "c": "k1"}"#.to_vec(),                // bare NaN (Python's json.dumps): non-finite
        br#"{"x": 1e400, "c": "k1"}"#.to_vec(),              // out of f64 range: non-finite
        br#"{"x": -1e400, "c": {"nested": true}}"#.to_vec(), // object in a categorical field: invalid
    ];
    payloads.extend(hostile);
    payloads.extend((0..95).map(good));
    produce(&bootstrap, &topic, 0, &payloads);
    let (mut run, addr, reports) = start(dir.path(), &bootstrap, &topic, "json", 100, "");
    let got = run.wait_reports(&reports, 1, Duration::from_secs(120));
    let x = &got[0]["features"][0];
    assert_eq!(x["invalid"], 2, "\"NaN\" and \"Infinity\" strings");
    assert_eq!(x["non_finite"], 3, "NaN, 1e400, -1e400");
    assert_eq!(got[0]["features"][1]["invalid"], 1, "an object in a categorical field");
    assert_eq!(got[0]["window"]["records"], 100);
    let (_, metrics) = http("GET", &addr, "/metrics", None);
    assert_eq!(metric(&metrics, "driftscope_records_invalid_total{reason=\"oversize\",stream=\"s\"}"), 1.0);
    assert_eq!(metric(&metrics, "driftscope_records_invalid_total{reason=\"empty\",stream=\"s\"}"), 1.0);
    let malformed =
        metric(&metrics, "driftscope_records_invalid_total{reason=\"malformed_json\",stream=\"s\"}");
    assert_eq!(malformed, 1.0, "the binary payload");
    assert_eq!(got[0]["features"][1]["missing"], 1, "the deeply nested record has no `c`");
    assert_eq!(metric(&metrics, "driftscope_records_total{stream=\"s\"}"), 204.0);
    assert!(run.terminate().success(), "still alive and exits cleanly");
}

#[test]
fn a_million_distinct_categories_stay_bounded_and_wrong_arrow_schemas_are_counted() {
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("hostile-arrow");
    create_topic(&bootstrap, &topic, 1);
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
    ]));
    let ipc = |batch: &RecordBatch| {
        let mut buf = Vec::new();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        buf
    };
    let rows = |start: usize, n: usize, distinct: bool| {
        let x = Float64Array::from_iter_values((start..start + n).map(|i| (i % 100) as f64));
        let c = StringArray::from_iter_values(
            (start..start + n).map(|i| if distinct { format!("id-{i}") } else { format!("k{}", i % 5) }),
        );
        RecordBatch::try_new(schema.clone(), vec![Arc::new(x), Arc::new(c)]).unwrap()
    };
    let mut payloads = vec![ipc(&rows(0, 100, false))]; // the reference
    let wrong = Arc::new(Schema::new(vec![Field::new("other", DataType::Float64, true)]));
    payloads.push(ipc(&RecordBatch::try_new(wrong, vec![Arc::new(Float64Array::from(vec![1.0]))]).unwrap()));
    payloads.push(b"definitely not arrow".to_vec());
    for chunk in 0..10 {
        payloads.push(ipc(&rows(100 + chunk * 100_000, 100_000, true)));
    }
    produce(&bootstrap, &topic, 0, &payloads);
    let (mut run, addr, reports) =
        start(dir.path(), &bootstrap, &topic, "arrow_ipc", 1_000_000, "max_message_bytes = 8388608");
    let got = run.wait_reports(&reports, 1, Duration::from_secs(180));
    let c = &got[0]["features"][1];
    // 1,000 distinct values tracked (the cap), the rest pooled in `__other__`.
    assert_eq!(c["category_overflow"], 1_000_000 - 1000);
    assert_eq!(c["scores"]["new_category_share"], 1.0);
    let (_, metrics) = http("GET", &addr, "/metrics", None);
    assert_eq!(
        metric(&metrics, "driftscope_records_invalid_total{reason=\"wrong_schema\",stream=\"s\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "driftscope_records_invalid_total{reason=\"undecodable_arrow\",stream=\"s\"}"),
        1.0
    );
    // Peak memory: the monitor's sketches are bounded; what remains is the decoded message.
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB after a million distinct categories");
    assert!(run.terminate().success());
}
