//! The HTTP server of a running monitor: health and readiness, Prometheus metrics that
//! `promtool check metrics` accepts, the report API, and the bearer token on `/api/*`.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "test-token-7f3a";

#[test]
fn metrics_health_and_report_api() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("http-in");
    create_topic(&bootstrap, &topic, 1);
    let mut payloads: Vec<Vec<u8>> =
        (0..450).map(|i| format!(r#"{{"x": {}, "c": "k{}"}}"#, (i * 37) % 101, i % 4).into_bytes()).collect();
    payloads.push(b"{not json".to_vec());
    produce(&bootstrap, &topic, 0, &payloads);
    let reports_file = dir.path().join("reports.jsonl");
    let config = dir.path().join("driftscope.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
[state]
dir = "{state}"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
api_token = "${{DRIFTSCOPE_TEST_API_TOKEN}}"
[[streams]]
name = "features"
topics = ["{topic}"]
format = "json"
window = {{ type = "tumbling_count", size = 100 }}
reference = {{ from_stream = 150 }}
[[streams.fields]]
name = "x"
kind = "numeric"
[[streams.fields]]
name = "c"
kind = "categorical"
"#,
            group = unique("g"),
            state = dir.path().join("state").display(),
            reports = reports_file.display(),
        ),
    )
    .unwrap();
    let mut run = {
        // SAFETY: set before the child starts; no other thread reads it.
        unsafe { std::env::set_var("DRIFTSCOPE_TEST_API_TOKEN", TOKEN) };
        Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path())
    };
    let addr = http_address(&run);
    assert_eq!(http("GET", &addr, "/healthz", None).0, 200);
    run.wait_reports(&reports_file, 3, Duration::from_secs(120));
    wait_for("ready", Duration::from_secs(60), || {
        (http("GET", &addr, "/readyz", None).0 == 200).then_some(())
    });

    // Lag comes from librdkafka's statistics, published every second.
    wait_for("consumer lag in /metrics", Duration::from_secs(30), || {
        http("GET", &addr, "/metrics", None).1.contains("driftscope_consumer_lag_records{").then_some(())
    });
    let (status, metrics) = http("GET", &addr, "/metrics", None);
    assert_eq!(status, 200);
    for series in [
        "driftscope_drift_score{feature=\"x\",metric=\"wasserstein\",stream=\"features\"}",
        "driftscope_drift_threshold{feature=\"x\",stream=\"features\"}",
        "driftscope_drift_detected{feature=\"c\",stream=\"features\"}",
        "driftscope_dataset_drift_share{stream=\"features\"}",
        "driftscope_dataset_drifted{stream=\"features\"}",
        "driftscope_window_samples{feature=\"x\",stream=\"features\"} 100",
        "driftscope_records_total{stream=\"features\"} 451",
        "driftscope_records_invalid_total{reason=\"malformed_json\",stream=\"features\"} 1",
        "driftscope_windows_closed_total{stream=\"features\"} 3",
        "driftscope_trigger_queue_depth",
        "driftscope_consumer_lag_records{partition=\"0\",topic=",
        "driftscope_window_scoring_seconds{stream=\"features\",quantile=\"0.99\"}",
        "driftscope_window_scoring_seconds_count{stream=\"features\"} 3",
        "driftscope_build_info{version=",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    promtool_accepts(&metrics, dir.path());

    // The API wants the token; the report shape is the reports file's.
    assert_eq!(http("GET", &addr, "/api/v1/streams", None).0, 401);
    assert_eq!(http("GET", &addr, "/api/v1/streams", Some("wrong")).0, 401);
    let (status, body) = http("GET", &addr, "/api/v1/reports/latest?stream=features", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let latest: serde_json::Value = serde_json::from_str(&body).unwrap();
    let from_file = read_reports(&reports_file);
    assert_eq!(&latest, from_file.last().unwrap());
    let (_, body) = http("GET", &addr, "/api/v1/reports?stream=features&limit=2", Some(TOKEN));
    let recent: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[1], latest);
    assert_eq!(http("GET", &addr, "/api/v1/reports/latest?stream=nope", Some(TOKEN)).0, 404);
    let (_, body) = http("GET", &addr, "/api/v1/streams", Some(TOKEN));
    let streams: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(streams[0]["name"], "features");
    assert_eq!(streams[0]["windows_closed"], 3);
    assert!(run.terminate().success());
}

fn promtool_accepts(metrics: &str, dir: &Path) {
    let file = dir.join("metrics.txt");
    std::fs::write(&file, metrics).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed by scripts/test.sh");
    let complaints =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && complaints.trim().is_empty(), "promtool check metrics: {complaints}");
}
