//! The deploy files say only true things: the Grafana dashboard and the alert rules
//! query only metrics driftscope exports, and the config the compose stack mounts
//! passes `driftscope config check`.

use driftscope::monitor::INVALID_REASONS;
use driftscope::telemetry::Telemetry;
use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Metric names driftscope exports once every series exists.
fn exported() -> BTreeSet<String> {
    let t = Telemetry::new();
    t.init_series(&["s"], &["t"], &INVALID_REASONS);
    t.drift_score.with_label_values(&["s", "f", "psi"]).set(0.0);
    for gauge in [&t.drift_threshold, &t.missing_share] {
        gauge.with_label_values(&["s", "f"]).set(0.0);
    }
    t.drift_detected.with_label_values(&["s", "f"]).set(0);
    t.window_samples.with_label_values(&["s", "f"]).set(0);
    t.dataset_drift_share.with_label_values(&["s"]).set(0.0);
    t.dataset_drifted.with_label_values(&["s"]).set(0);
    t.consumer_lag.with_label_values(&["t", "0"]).set(0);
    t.scoring_seconds.observe("s", std::time::Duration::from_millis(1));
    t.event_lag_seconds.observe("s", std::time::Duration::from_millis(1));
    let mut names = BTreeSet::new();
    for line in t.render().lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap().to_owned();
        names.insert(name);
    }
    names
}

fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("driftscope_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana/dashboards/driftscope.json")).unwrap();
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        exprs.push_str(var["definition"].as_str().unwrap());
    }
    let names = referenced(&exprs);
    assert!(names.len() >= 10, "{names:?}");
    let exported = exported();
    let unknown: Vec<_> = names.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics driftscope does not export: {unknown:?}");
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let rules = repo("deploy/prometheus/alerts.yml");
    let exprs: String =
        rules.lines().filter(|l| l.trim_start().starts_with("expr:")).collect::<Vec<_>>().join("\n");
    let names = referenced(&exprs);
    assert!(names.len() >= 5, "{names:?}");
    let exported = exported();
    let unknown: Vec<_> = names.difference(&exported).collect();
    assert!(unknown.is_empty(), "alerts use metrics driftscope does not export: {unknown:?}");
}

#[test]
fn the_compose_config_passes_config_check() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["config", "check", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/driftscope.toml"))
        .env("KAFKA_BROKERS", "kafka:9092")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("brokers = \"kafka:9092\""), "{printed}");
    // docker-compose.yml mounts this file and sets the variable it expands.
    let compose = repo("docker-compose.yml");
    assert!(compose.contains("./deploy/driftscope.toml:/etc/driftscope/driftscope.toml"));
    assert!(compose.contains("KAFKA_BROKERS: kafka:9092"));
}
