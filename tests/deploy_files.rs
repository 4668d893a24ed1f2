//! The deploy files say only true things: the Grafana dashboard and the alert rules
//! query only metrics driftscope exports, and the config the compose stack mounts
//! passes `driftscope config check`; the Helm chart, the compose stack and the image
//! agree (the same config, dashboard, alert rules, probes and user); `driftscope probe`
//! (the image's health check) answers by exit code.

use driftscope::decode::COMMON_REASONS;
use driftscope::telemetry::Telemetry;
use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Metric names driftscope exports once every series exists.
fn exported() -> BTreeSet<String> {
    let t = Telemetry::new();
    t.init_series(&["s"], &["t"], &COMMON_REASONS);
    t.drift_score.with_label_values(&["s", "f", "psi"]).set(0.0);
    for gauge in [
        &t.drift_threshold,
        &t.missing_share,
        &t.drift_p_value,
        &t.drift_effect,
        &t.sequential_log_statistic,
        &t.sequential_log_threshold,
    ] {
        gauge.with_label_values(&["s", "f"]).set(0.0);
    }
    t.drift_detected.with_label_values(&["s", "f"]).set(0);
    t.sequential_alarm.with_label_values(&["s", "f"]).set(0);
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

/// The lines of the block scalar under top-level `key: |` in a YAML file, unindented.
fn yaml_block(text: &str, key: &str) -> String {
    let header = format!("{key}: |");
    let mut lines = text.lines().skip_while(|l| *l != header).skip(1);
    let mut out = String::new();
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("  ") {
            break;
        }
        out.push_str(line.strip_prefix("  ").unwrap_or(line));
        out.push('\n');
    }
    assert!(!out.trim().is_empty(), "no `{header}` block");
    out
}

/// The value of the first `key: value` line (at any indentation) of a YAML file.
fn yaml_scalar<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no `{key}:` line"))
        .trim()
}

#[test]
fn the_chart_ships_the_same_dashboard_and_alert_rules() {
    // Helm reads only files inside the chart, so it carries copies.
    for (copy, original) in [
        ("deploy/helm/driftscope/files/driftscope.json", "deploy/grafana/dashboards/driftscope.json"),
        ("deploy/helm/driftscope/files/alerts.yml", "deploy/prometheus/alerts.yml"),
    ] {
        assert!(repo(copy) == repo(original), "{copy} differs from {original}: copy it again");
    }
    let templates = "deploy/helm/driftscope/templates";
    assert!(repo(&format!("{templates}/dashboard.yaml")).contains(r#".Files.Get "files/driftscope.json""#));
    assert!(repo(&format!("{templates}/prometheusrule.yaml")).contains(r#".Files.Get "files/alerts.yml""#));
    // The rules select job="driftscope"; the ServiceMonitor takes the job from this label.
    assert!(repo("deploy/prometheus/alerts.yml").contains(r#"up{job="driftscope"}"#));
    let monitor = repo(&format!("{templates}/servicemonitor.yaml"));
    assert!(monitor.contains("jobLabel: app.kubernetes.io/name"));
    // It selects the one Service that is not headless, so no pod is scraped twice.
    assert!(monitor.contains("app.kubernetes.io/component: http"));
    assert_eq!(
        repo(&format!("{templates}/service.yaml")).matches("app.kubernetes.io/component: http").count(),
        1
    );
    assert!(repo("deploy/helm/driftscope/Chart.yaml").contains("name: driftscope\n"));
}

#[test]
fn the_chart_and_compose_run_the_same_config() {
    let values = repo("deploy/helm/driftscope/values.yaml");
    let mut chart: toml::Table = toml::from_str(&yaml_block(&values, "config")).unwrap();
    let compose: toml::Table = toml::from_str(&repo("deploy/driftscope.toml")).unwrap();
    // The chart adds static membership from the pod name (set by the StatefulSet).
    let kafka = chart["kafka"].as_table_mut().unwrap();
    let properties = kafka.remove("properties").unwrap();
    assert_eq!(properties["group.instance.id"].as_str(), Some("${POD_NAME}"));
    let statefulset = repo("deploy/helm/driftscope/templates/statefulset.yaml");
    assert!(statefulset.contains("- name: POD_NAME\n              valueFrom:\n                fieldRef:\n                  fieldPath: metadata.name"));
    assert!(statefulset.contains("- name: KAFKA_BROKERS"));
    assert_eq!(chart, compose, "the chart's default config and deploy/driftscope.toml differ");
    // state.dir is the chart's volume and the image's state directory.
    let state_dir = chart["state"]["dir"].as_str().unwrap();
    assert_eq!(yaml_scalar(&values, "mountPath"), state_dir);
    assert!(repo("Dockerfile").contains(&format!("WORKDIR {state_dir}\n")));
    assert!(repo("docker-compose.yml").contains(&format!("driftscope-state:{state_dir}\n")));
}

#[test]
fn the_chart_compose_and_image_probe_and_run_alike() {
    let values = repo("deploy/helm/driftscope/values.yaml");
    let compose = repo("docker-compose.yml");
    let dockerfile = repo("Dockerfile");
    // Liveness and readiness are the HTTP endpoints; compose checks readiness through
    // the binary (the image has no shell or curl) at the same path.
    let paths: Vec<&str> = values.lines().filter_map(|l| l.trim().strip_prefix("path: ")).collect();
    assert_eq!(paths, ["/healthz", "/readyz"]);
    assert!(compose.contains(
        r#"test: ["CMD", "/usr/local/bin/driftscope", "probe", "--url", "http://127.0.0.1:9464/readyz"]"#
    ));
    assert!(dockerfile.contains("COPY --from=build /out/driftscope /usr/local/bin/driftscope"));
    // Non-root with a read-only root filesystem everywhere: the image's user is the
    // chart's, compose mounts the root read-only.
    assert!(dockerfile.contains("USER 65532:65532"));
    assert_eq!(yaml_scalar(&values, "runAsUser"), "65532");
    assert_eq!(yaml_scalar(&values, "fsGroup"), "65532");
    assert_eq!(yaml_scalar(&values, "readOnlyRootFilesystem"), "true");
    assert!(compose.contains("read_only: true"));
    assert_eq!(yaml_scalar(&values, "httpPort"), "9464");
    // The stripped binary in the image, its debug info kept as a separate output.
    assert!(dockerfile.contains("objcopy --only-keep-debug"));
    assert!(dockerfile.contains("--add-gnu-debuglink"));
    assert!(dockerfile.contains("AS debug-symbols"));
}

/// Serves one HTTP request with `response` on 127.0.0.1, returning the URL.
fn one_answer(response: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(response.as_bytes()).unwrap();
    });
    url
}

fn probe(url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["probe", "--url", url, "--timeout", "10s"])
        .output()
        .unwrap()
}

#[test]
fn probe_is_the_health_check_of_an_image_without_a_shell() {
    let ok =
        probe(&one_answer("HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n".into()));
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let body = "consumer has not joined its group\n";
    let unready = probe(&one_answer(format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )));
    assert_eq!(unready.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unready.stderr);
    assert!(stderr.contains("503") && stderr.contains("has not joined"), "{stderr}");
    // Nothing listening: no answer at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = probe(&format!("http://127.0.0.1:{port}/readyz"));
    assert_eq!(down.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&down.stderr).contains("no answer"));
}

#[test]
fn every_chart_value_is_documented_in_the_chart_readme() {
    let values = repo("deploy/helm/driftscope/values.yaml");
    let readme = repo("deploy/helm/driftscope/README.md");
    let key = |line: &str| -> Option<String> {
        let (name, _) = line.split_once(':')?;
        name.chars().all(|c| c.is_ascii_alphanumeric()).then(|| name.to_owned())
    };
    let (mut paths, mut parent, mut in_block) = (Vec::new(), String::new(), false);
    for line in values.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(top) = key(line) {
            in_block = line.ends_with('|');
            parent.clone_from(&top);
            paths.push(top);
        } else if let Some(sub) = line.strip_prefix("  ").filter(|_| !in_block).and_then(key) {
            paths.push(format!("{parent}.{sub}"));
        }
    }
    assert!(paths.len() > 40, "{paths:?}");
    // A value is documented by its own row (`a.b`), by its parent's whole-object row
    // (`a`), or, for a map, by its children's rows (`a.x`).
    let undocumented: Vec<_> = paths
        .iter()
        .filter(|p| {
            let parent = p.split('.').next().unwrap();
            let children = !p.contains('.') && readme.contains(&format!("`{p}."));
            !children && !readme.contains(&format!("`{p}`")) && !readme.contains(&format!("`{parent}`"))
        })
        .collect();
    assert!(undocumented.is_empty(), "values missing from the chart README's table: {undocumented:?}");
}
