//! Consumer-group behaviour against the real broker: two instances share partitions
//! through a rebalance without losing or double-counting records, SASL/PLAIN settings
//! pass through to librdkafka, and event-time windows honour allowed lateness.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write_config(dir: &Path, name: &str, kafka: &str, stream: &str) -> (PathBuf, PathBuf) {
    let reports = dir.join(format!("{name}.reports.jsonl"));
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "{kafka}\n[state]\ndir = \"{state}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[outputs]\nreports_file = \"{reports}\"\n{stream}\n",
        state = dir.join(format!("{name}-state")).display(),
        reports = reports.display(),
    );
    std::fs::write(&path, text).unwrap();
    (path, reports)
}

const FIELDS: &str = "[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n";

#[test]
fn two_instances_share_partitions_without_loss_or_double_counting() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("group-in");
    create_topic(&bootstrap, &topic, 4);
    let group = unique("shared");
    // The same reference for both instances: a profile built from a data file.
    let reference = dir.path().join("reference.csv");
    std::fs::write(
        &reference,
        format!("x\n{}", (0..1000).map(|i| format!("{}\n", i % 50)).collect::<String>()),
    )
    .unwrap();
    let kafka = format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n");
    let stream = format!(
        "[[streams]]\nname = \"s\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nwindow = {{ type = \"tumbling_count\", size = 200 }}\nreference = {{ data = \"{}\" }}\n{FIELDS}",
        reference.display()
    );
    let (config_a, reports_a) = write_config(dir.path(), "a", &kafka, &stream);
    let (config_b, reports_b) = write_config(dir.path(), "b", &kafka, &stream);
    let payload = |i: usize| format!(r#"{{"x": {}}}"#, i % 50).into_bytes();
    // 5,830 records: A's last window is left open (30 records) when B joins.
    for p in 0..4 {
        produce(&bootstrap, &topic, p, &(0..1457 + (p as usize % 2)).map(payload).collect::<Vec<_>>());
    }
    let mut a = Driftscope::start(&["run", "--config", config_a.to_str().unwrap()], dir.path());
    a.wait_reports(&reports_a, 29, Duration::from_secs(120));
    // B joins: the group rebalances while A holds an open window.
    let b = Driftscope::start(&["run", "--config", config_b.to_str().unwrap()], dir.path());
    wait_for("B to get partitions", Duration::from_secs(120), || {
        b.log_text()
            .lines()
            .any(|l| l.contains("partitions assigned") && !l.contains("partitions=0"))
            .then_some(())
    });
    // More records after the rebalance, on every partition.
    for p in 0..4 {
        produce(&bootstrap, &topic, p, &(1457 + (p as usize % 2)..2000).map(payload).collect::<Vec<_>>());
    }
    // Everything but the open windows gets reported: 8000 records, at most one open
    // window (< 200 records) per instance.
    wait_for("all but the open windows reported", Duration::from_secs(180), || {
        let total: u64 = read_reports(&reports_a)
            .iter()
            .chain(read_reports(&reports_b).iter())
            .map(|r| r["window"]["records"].as_u64().unwrap())
            .sum();
        (total > 8000 - 400).then_some(())
    });
    assert!(a.terminate().success());
    assert!(b.terminate().success());

    // Every partition's offsets are covered by disjoint, gap-free spans across both
    // instances' windows: nothing lost, nothing counted twice.
    let mut spans: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    let mut total = 0;
    for report in read_reports(&reports_a).iter().chain(read_reports(&reports_b).iter()) {
        total += report["window"]["records"].as_u64().unwrap();
        for o in report["window"]["offsets"].as_array().unwrap() {
            spans
                .entry(o["partition"].as_i64().unwrap())
                .or_default()
                .push((o["first"].as_i64().unwrap(), o["last"].as_i64().unwrap()));
        }
    }
    let covered: i64 = assert_contiguous_spans(spans).values().map(|last| last + 1).sum();
    assert_eq!(covered as u64, total, "each covered offset is in exactly one window");
}

#[test]
fn sasl_plain_settings_pass_through_to_librdkafka() {
    let Some(bootstrap) = broker() else { return };
    let sasl = std::env::var("DRIFTSCOPE_KAFKA_SASL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19094".into());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sasl-in");
    create_topic(&bootstrap, &topic, 1);
    produce(
        &bootstrap,
        &topic,
        0,
        &(0..300).map(|i| format!(r#"{{"x": {}}}"#, i % 7).into_bytes()).collect::<Vec<_>>(),
    );
    let stream = format!(
        "[[streams]]\nname = \"s\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nwindow = {{ type = \"tumbling_count\", size = 100 }}\nreference = {{ from_stream = 100 }}\n{FIELDS}"
    );
    let kafka = |password_var: &str, group: &str| {
        format!(
            "[kafka]\nbrokers = \"{sasl}\"\ngroup_id = \"{group}\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"driftscope\"\n\"sasl.password\" = \"${{{password_var}}}\"\n"
        )
    };
    // SAFETY: set before the children start; nothing else reads them concurrently.
    unsafe {
        std::env::set_var("DRIFTSCOPE_TEST_SASL_PASSWORD", "driftscope-secret");
        std::env::set_var("DRIFTSCOPE_TEST_SASL_WRONG", "not-the-password");
    }
    let (good, reports) =
        write_config(dir.path(), "good", &kafka("DRIFTSCOPE_TEST_SASL_PASSWORD", &unique("g")), &stream);
    let mut run = Driftscope::start(&["run", "--config", good.to_str().unwrap()], dir.path());
    let got = run.wait_reports(&reports, 2, Duration::from_secs(120));
    assert_eq!(got[0]["window"]["records"], 100);
    let log = run.log_text();
    assert!(run.terminate().success());
    assert!(!log.contains("driftscope-secret"), "the password leaked into the log");

    // A wrong password: no windows, not ready, and the password never logged.
    let (bad, _) =
        write_config(dir.path(), "bad", &kafka("DRIFTSCOPE_TEST_SASL_WRONG", &unique("g")), &stream);
    let run = Driftscope::start(&["run", "--config", bad.to_str().unwrap()], dir.path());
    let addr = http_address(&run);
    wait_for("an authentication failure in the log", Duration::from_secs(60), || {
        run.log_text().to_ascii_lowercase().contains("authentication").then_some(())
    });
    let (status, body) = http("GET", &addr, "/readyz", None);
    assert_eq!(status, 503, "{body}");
    let log = run.log_text();
    assert!(!log.contains("not-the-password"), "the password leaked into the log");
    assert!(run.terminate().success());
}

#[test]
fn event_time_windows_close_by_watermark_and_count_late_records() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("event-in");
    create_topic(&bootstrap, &topic, 1);
    let base: i64 = 1_700_000_000_000; // a multiple of 10 s
    let record = |t: i64, x: i64| format!(r#"{{"ts": {}, "x": {x}}}"#, base + t).into_bytes();
    let mut payloads = Vec::new();
    // Reference: 100 records (their times do not matter).
    payloads.extend((0..100).map(|i| record(0, i % 10)));
    // Window [0, 10s): 150 records; [10s, 20s): 120 records with some out of order but
    // within the 2 s lateness; then a record for [0, 10s) after the watermark passed it.
    payloads.extend((0..150).map(|i| record(i * 60, i % 10)));
    payloads.extend((0..120).map(|i| record(10_000 + i * 80, i % 10)));
    payloads.push(record(9_000, 3)); // 9.0 s, watermark is 19.52 - 2 = 17.52 s: late
    payloads.push(record(25_000, 4)); // moves the watermark to 23 s: closes [10 s, 20 s)
    produce(&bootstrap, &topic, 0, &payloads);
    let kafka = format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\n", unique("g"));
    let stream = format!(
        "[[streams]]\nname = \"s\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\nwindow = {{ type = \"tumbling_time\", size = \"10s\", time = \"event\", allowed_lateness = \"2s\" }}\nreference = {{ from_stream = 100 }}\n{FIELDS}"
    );
    let (config, reports) = write_config(dir.path(), "event", &kafka, &stream);
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let got = run.wait_reports(&reports, 2, Duration::from_secs(120));
    let (_, metrics) = http("GET", &http_address(&run), "/metrics", None);
    assert!(run.terminate().success());
    // Event lag is measured for every record with an event time (here years old).
    let lag_count: f64 = metrics
        .lines()
        .find(|l| l.starts_with("driftscope_event_lag_seconds_count{stream=\"s\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no event lag summary in\n{metrics}"));
    assert!(lag_count >= 270.0, "{lag_count}");
    assert_eq!(got[0]["window"]["records"], 150);
    assert_eq!(got[0]["window"]["start"], "2023-11-14T22:13:20.000Z");
    assert_eq!(got[0]["window"]["end"], "2023-11-14T22:13:30.000Z");
    assert_eq!(got[1]["window"]["records"], 120);
    assert_eq!(got[1]["window"]["late_records"], 1, "the late record is counted, not dropped silently");
}
