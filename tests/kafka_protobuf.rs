//! `format = "protobuf"` end to end on the real broker and the real schema registry:
//! messages written by confluent-kafka's ProtobufSerializer with its registry client
//! (which registers the schema as a base64 `FileDescriptorProto`; the message is the
//! second of its file, so the message-index list matters), the schema evolving
//! mid-stream (a field removed, one added, int32 widened to int64), a nested field by
//! path and an optional field left unset; reports equal `score` on the same rows as
//! Parquet; the schema change, an unknown schema id and a wrong magic byte counted.

mod common;
mod confluent;

use common::*;
use confluent::*;
use serde_json::{Value, json};
use std::time::Duration;

fn spec(version: u32) -> Value {
    let user = json!({"User": [["tier", "int32", 1], ["country", "string", 2]]});
    let fields = if version == 1 {
        json!([
            ["id", "string", 1],
            ["x", "double", 2],
            ["y", "double", 3],
            ["user", "message:User", 4],
            ["count", "int32", 5]
        ])
    } else {
        json!([
            ["x", "double", 2],
            ["y", "double", 3],
            ["user", "message:User", 4],
            ["count", "int64", 5],
            ["extra", "string", 6]
        ])
    };
    json!({"file": "shop/features.proto", "package": "shop", "message": "Features", "messages": user, "fields": fields})
}

#[test]
fn protobuf_reports_equal_score_across_a_schema_change_and_bad_messages_are_refused_by_reason() {
    let Some(bootstrap) = broker() else { return };
    let Some((registry, python)) = registry_and_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("protobuf-in");
    create_topic(&bootstrap, &topic, 1);
    let parquet = as_parquet(&current_with_missing_y(5, 1), &dir.path().join("current.parquet"));
    let rows = rows_of(&parquet);
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
    let (s1, s2) = (dir.path().join("v1.json"), dir.path().join("v2.json"));
    std::fs::write(&s1, spec(1).to_string()).unwrap();
    std::fs::write(&s2, spec(2).to_string()).unwrap();
    let (r1, r2) = (dir.path().join("v1.jsonl"), dir.path().join("v2.jsonl"));
    write_jsonl(&r1, &v1_rows);
    write_jsonl(&r2, &v2_rows);
    let ids = produce_confluent(&python, &bootstrap, &registry, &topic, "protobuf", &[(s1, r1), (s2, r2)]);
    assert!(ids[0].len() == 1 && ids[1].len() == 1 && ids[0] != ids[1], "two schema ids: {ids:?}");
    let unknown_id: Vec<u8> = [0u8, 0x7f, 0xff, 0xff, 0xf1, 0, 0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f].to_vec();
    produce(&bootstrap, &topic, 0, &[b"\x08\x01".to_vec(), unknown_id]);

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
    let config = run_config(dir.path(), &bootstrap, &registry, &topic, "protobuf", fields);
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    let reports = run.wait_reports(&dir.path().join("reports.jsonl"), 4, Duration::from_secs(120));
    let addr = http_address(&run);
    let stream = "stream=\"features\"";
    wait_metric(&addr, "driftscope_records_invalid_total", &[stream, "reason=\"unknown_schema\""], 1.0);
    wait_metric(&addr, "driftscope_records_invalid_total", &[stream, "reason=\"wrong_magic_byte\""], 1.0);
    for reason in ["malformed_protobuf", "unusable_schema"] {
        assert_eq!(
            metric(&addr, "driftscope_records_invalid_total", &[stream, &format!("reason=\"{reason}\"")]),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(metric(&addr, "driftscope_schema_changes_total", &[stream]), Some(1.0));
    assert_eq!(metric(&addr, "driftscope_schema_registry_lookups_total", &[]), Some(3.0));
    assert!(run.terminate().success());
    // An unset optional field is missing.
    assert_eq!(reports[0]["features"][1]["name"], "y");
    assert_eq!(reports[0]["features"][1]["missing"], 100);
    assert_reports_equal_score(&reports, &parquet, 4);
}
