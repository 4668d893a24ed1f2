//! `format = "avro"` end to end on the real broker and the real schema registry
//! (scripts/registry.sh): messages written by confluent-kafka's AvroSerializer with its
//! registry client, the writer's schema evolving mid-stream (a field removed, one
//! added, an int promoted to long), a nested field read by path and a nullable union;
//! the window reports equal `score` on the same rows as Parquet; the schema change,
//! an unknown schema id and a wrong magic byte are counted.

mod common;
mod confluent;

use common::*;
use confluent::*;
use driftscope::ingest::files::read_data_file;
use serde_json::{Value, json};
use std::time::Duration;

const V1: &str = r#"{"type": "record", "name": "Features", "namespace": "shop", "fields": [
  {"name": "id", "type": "string"},
  {"name": "x", "type": "double"},
  {"name": "y", "type": ["null", "double"], "default": null},
  {"name": "user", "type": {"type": "record", "name": "User", "fields": [
     {"name": "tier", "type": "int"}, {"name": "country", "type": "string"}]}},
  {"name": "count", "type": "int"}]}"#;

/// `id` removed, `extra` added, `count` promoted to long.
const V2: &str = r#"{"type": "record", "name": "Features", "namespace": "shop", "fields": [
  {"name": "x", "type": "double"},
  {"name": "extra", "type": "string", "default": ""},
  {"name": "y", "type": ["null", "double"], "default": null},
  {"name": "user", "type": {"type": "record", "name": "User", "fields": [
     {"name": "tier", "type": "int"}, {"name": "country", "type": "string"}]}},
  {"name": "count", "type": "long"}]}"#;

#[test]
fn avro_reports_equal_score_across_a_schema_change_and_bad_messages_are_refused_by_reason() {
    let Some(bootstrap) = broker() else { return };
    let Some((registry, python)) = registry_and_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("avro-in");
    create_topic(&bootstrap, &topic, 1);
    let parquet = as_parquet(&current_with_missing_y(7, 3), &dir.path().join("current.parquet"));
    let rows = rows_of(&parquet);
    assert_eq!(rows.len(), 2000);
    let get = |r: &serde_json::Map<String, Value>, k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    let v1_rows: Vec<Value> = rows[..1000]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"id": format!("r{i}"), "x": get(r, "x"), "y": get(r, "y"),
                   "user": {"tier": 1, "country": get(r, "country")}, "count": get(r, "count")})
        })
        .collect();
    let v2_rows: Vec<Value> = rows[1000..]
        .iter()
        .map(|r| {
            json!({"x": get(r, "x"), "extra": "e", "y": get(r, "y"),
                   "user": {"tier": 2, "country": get(r, "country")}, "count": get(r, "count")})
        })
        .collect();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (s1, s2) = (file("v1.avsc", V1), file("v2.avsc", V2));
    let (r1, r2) = (dir.path().join("v1.jsonl"), dir.path().join("v2.jsonl"));
    write_jsonl(&r1, &v1_rows);
    write_jsonl(&r2, &v2_rows);
    let ids = produce_confluent(&python, &bootstrap, &registry, &topic, "avro", &[(s1, r1), (s2, r2)]);
    assert_eq!(ids.len(), 2);
    assert!(ids[0].len() == 1 && ids[1].len() == 1 && ids[0] != ids[1], "two schema ids: {ids:?}");
    // Bad messages after the good ones: not Confluent-framed, and an id the registry
    // does not have (framing written here on purpose: no serializer writes it).
    let unknown_id: Vec<u8> = [0u8, 0x7f, 0xff, 0xff, 0xf0, 2, 0, 0, 0].to_vec();
    produce(&bootstrap, &topic, 0, &[b"{\"x\": 1.0}".to_vec(), unknown_id]);

    let fields = r#"
[[streams.fields]]
name = "x"
[[streams.fields]]
name = "y"
[[streams.fields]]
name = "country"
path = "/user/country"
[[streams.fields]]
name = "count"
"#;
    let config = run_config(dir.path(), &bootstrap, &registry, &topic, "avro", fields);
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), 4, Duration::from_secs(120));
    let addr = http_address(&run);
    let stream = "stream=\"features\"";
    wait_metric(&addr, "driftscope_records_invalid_total", &[stream, "reason=\"unknown_schema\""], 1.0);
    wait_metric(&addr, "driftscope_records_invalid_total", &[stream, "reason=\"wrong_magic_byte\""], 1.0);
    assert_eq!(
        metric(&addr, "driftscope_records_invalid_total", &[stream, "reason=\"malformed_avro\""]),
        Some(0.0)
    );
    assert_eq!(metric(&addr, "driftscope_schema_changes_total", &[stream]), Some(1.0));
    assert_eq!(
        metric(&addr, "driftscope_schema_registry_lookups_total", &[]),
        Some(3.0),
        "one lookup per schema id (two schemas, one unknown id), none per message"
    );
    let (status, ready) = http("GET", &addr, "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    assert!(run.terminate().success());
    // The null branch of `y`'s union arrives as missing (every 7th row).
    assert_eq!(reports[0]["features"][1]["name"], "y");
    assert_eq!(reports[0]["features"][1]["missing"], 71);
    assert_reports_equal_score(&reports, &parquet, 4);
    // The change is listed in the report of the window that holds its first message
    // (row 1000, the first of window 2), and only there.
    let change = &reports[2]["schema_changes"];
    assert_eq!(change.as_array().map(Vec::len), Some(1), "{change}");
    assert_eq!(change[0]["from"], ids[0][0], "{change}");
    assert_eq!(change[0]["to"], ids[1][0], "{change}");
    assert_eq!(change[0]["topic"], topic.as_str());
    assert_eq!(change[0]["offset"], 1000, "{change}");
    assert!(reports[2]["notes"].to_string().contains("schema change"), "{}", reports[2]["notes"]);
    for i in [0, 1, 3] {
        assert!(reports[i].get("schema_changes").is_none(), "window {i}: {}", reports[i]);
    }
}

/// Forwards every connection on `listener` to `target` (host:port), both ways.
fn forward(listener: std::net::TcpListener, target: String) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

/// The registry away at start-up (its address refuses connections): the pipeline waits
/// on the first message, `/readyz` says why, nothing is refused or scored; once the
/// address answers (a forwarder to the real registry starts listening there) every
/// record is read, none skipped.
#[test]
fn an_unreachable_registry_holds_consumption_and_readiness_until_it_answers() {
    let Some(bootstrap) = broker() else { return };
    let Some((registry, python)) = registry_and_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("avro-noreg");
    produce_rows(dir.path(), &python, &bootstrap, &registry, &topic, 500);
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = reqwest_free_url(&registry, port);
    let config = run_config(dir.path(), &bootstrap, &url, &topic, "avro", TWO_FIELDS);
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let addr = http_address(&run);
    let reason = wait_for("readyz to name the registry", Duration::from_secs(60), || {
        let (status, body) = http("GET", &addr, "/readyz", None);
        (status == 503 && body.contains("schema registry unavailable")).then_some(body)
    });
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    wait_for("a few failed lookups", Duration::from_secs(60), || {
        (metric(&addr, "driftscope_schema_registry_lookups_total", &[]).unwrap_or(0.0) >= 3.0).then_some(())
    });
    assert_eq!(invalid_records(&addr, "features"), 0.0, "nothing refused while waiting");
    assert!(read_reports(&dir.path().join("reports.jsonl")).is_empty(), "nothing scored without the schema");
    // The registry comes back at that address.
    let target = registry.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    forward(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(), target);
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), 1, Duration::from_secs(120));
    assert_eq!(reports[0]["window"]["records"], 500, "every record read, none skipped");
    let (status, body) = http("GET", &addr, "/readyz", None);
    assert_eq!(status, 200, "{body}");
    assert!(run.terminate().success());
}

/// A stop while the registry is away (the pipeline waiting on the first message): the
/// monitor stops, exit status 0, without refusing or counting that message; the next
/// start, with the registry back, reads every record from the first.
#[test]
fn a_stop_while_the_registry_is_away_leaves_every_record_for_the_next_start() {
    let Some(bootstrap) = broker() else { return };
    let Some((registry, python)) = registry_and_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("avro-noreg-stop");
    produce_rows(dir.path(), &python, &bootstrap, &registry, &topic, 500);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let away =
        run_config(dir.path(), &bootstrap, &reqwest_free_url(&registry, port), &topic, "avro", TWO_FIELDS);
    let run = Driftscope::start(&["run", "--config", away.to_str().unwrap()], dir.path());
    let addr = http_address(&run);
    wait_for("a few failed lookups", Duration::from_secs(60), || {
        (metric(&addr, "driftscope_schema_registry_lookups_total", &[]).unwrap_or(0.0) >= 2.0).then_some(())
    });
    assert_eq!(invalid_records(&addr, "features"), 0.0);
    assert!(run.terminate().success(), "a stop is not held by the wait");

    // The same group and state directory, the registry back.
    let back = run_config(dir.path(), &bootstrap, &registry, &topic, "avro", TWO_FIELDS);
    let mut run = Driftscope::start(&["run", "--config", back.to_str().unwrap()], dir.path());
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), 1, Duration::from_secs(120));
    assert_eq!(reports[0]["window"]["records"], 500, "every record read, none skipped");
    assert_eq!(reports[0]["window"]["offsets"][0]["first"], 0, "{}", reports[0]["window"]);
    assert_eq!(invalid_records(&http_address(&run), "features"), 0.0);
    assert!(run.terminate().success());
}

/// A registry away for longer than `max.poll.interval.ms` with more records than the
/// batches in flight hold (so the consumer thread has to wait on the pipeline): the
/// partitions are paused and the consumer keeps its group membership (no revocation,
/// nothing read twice), and every record is read once the registry answers.
#[test]
fn a_registry_away_longer_than_the_poll_interval_keeps_the_group_membership() {
    let Some(bootstrap) = broker() else { return };
    let Some((registry, python)) = registry_and_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("avro-noreg-long");
    // More than the batches in flight (`ingest::feed`: 4 of up to 2,048 records), the
    // one being filled and the one the pipeline holds: 6 x 2,048 = 12,288.
    produce_rows(dir.path(), &python, &bootstrap, &registry, &topic, 15_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config =
        run_config(dir.path(), &bootstrap, &reqwest_free_url(&registry, port), &topic, "avro", TWO_FIELDS);
    // The shortest poll interval the broker's default session bounds allow.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "properties = { ",
        "properties = { \"max.poll.interval.ms\" = \"6000\", \"session.timeout.ms\" = \"6000\", ",
    );
    std::fs::write(&config, text).unwrap();
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let addr = http_address(&run);
    // Lookups are 200 ms apart at most (`registry.max_backoff`): 50 take 9 s or more,
    // half as long again as the poll interval.
    wait_for("50 failed lookups", Duration::from_secs(60), || {
        (metric(&addr, "driftscope_schema_registry_lookups_total", &[]).unwrap_or(0.0) >= 50.0).then_some(())
    });
    let target = registry.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    forward(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(), target);
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), 6, Duration::from_secs(120));
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(report["window"]["records"], 500, "window {i}");
        assert_eq!(report["window"]["offsets"][0]["first"], 500 * i, "window {i}: {}", report["window"]);
    }
    assert_eq!(
        metric(&addr, "driftscope_records_skipped_replayed_total", &["stream=\"features\""]),
        Some(0.0)
    );
    let log = run.log_text();
    assert!(log.contains("partitions paused"), "the stall was waited out with the partitions paused:\n{log}");
    assert!(!log.contains("partitions revoked"), "the group membership was lost:\n{log}");
    assert!(run.terminate().success());
}

const TWO_FIELDS: &str =
    "[[streams.fields]]\nname = \"x\"\n[[streams.fields]]\nname = \"country\"\npath = \"/user/country\"\n";

/// Writes `n` rows (the fixture's, from the first, repeated as needed) with the V1
/// schema to a new one-partition topic.
fn produce_rows(dir: &std::path::Path, python: &str, bootstrap: &str, registry: &str, topic: &str, n: usize) {
    create_topic(bootstrap, topic, 1);
    let rows: Vec<Value> = rows_of(&read_data_file(&fixture("normal_shift", "current.csv")).unwrap())
        .iter()
        .cycle()
        .take(n)
        .enumerate()
        .map(|(i, r)| {
            json!({"id": format!("r{i}"), "x": r["x"], "y": r["y"],
                   "user": {"tier": 1, "country": r["country"]}, "count": r["count"]})
        })
        .collect();
    let schema = dir.join("v1.avsc");
    std::fs::write(&schema, V1).unwrap();
    let jsonl = dir.join("rows.jsonl");
    write_jsonl(&jsonl, &rows);
    produce_confluent(python, bootstrap, registry, topic, "avro", &[(schema, jsonl)]);
}

/// Every `driftscope_records_invalid_total` series of `stream`, summed.
fn invalid_records(addr: &str, stream: &str) -> f64 {
    let (status, body) = http("GET", addr, "/metrics", None);
    assert_eq!(status, 200);
    let label = format!("stream=\"{stream}\"");
    body.lines()
        .filter(|l| l.starts_with("driftscope_records_invalid_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `registry` (the real one's URL) with its host and port replaced by 127.0.0.1:`port`.
fn reqwest_free_url(registry: &str, port: u16) -> String {
    let rest = registry.trim_start_matches("http://");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("http://127.0.0.1:{port}{path}")
}
