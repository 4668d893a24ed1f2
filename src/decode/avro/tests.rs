//! The Avro decoder's unit tests: projection, nesting, unions, evolution across schema
//! ids, framing and refusals, bounds. Messages are built with a small encoder of the
//! Avro binary rules here (the end-to-end tests use confluent-kafka's serializer).

use super::*;
use crate::decode::confluent::{FixedSchemas, RecordedSchemaEvents};

/// Test sink: every call as text.
#[derive(Default)]
pub(crate) struct Calls(pub Vec<String>);

impl crate::stats::ValueSink for Calls {
    fn add_records(&mut self, n: u64) {
        self.0.push(format!("records {n}"));
    }
    fn numeric(&mut self, feature: usize, x: f64) {
        self.0.push(format!("{feature}={x}"));
    }
    fn category(&mut self, feature: usize, value: &str) {
        self.0.push(format!("{feature}={value:?}"));
    }
    fn missing(&mut self, feature: usize) {
        self.0.push(format!("{feature} missing"));
    }
    fn invalid(&mut self, feature: usize) {
        self.0.push(format!("{feature} invalid"));
    }
}

/// Avro binary, written by hand.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn long(mut self, v: i64) -> Enc {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                self.0.push(z as u8);
                return self;
            }
            self.0.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }
    fn double(mut self, x: f64) -> Enc {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Enc {
        let mut e = self.long(s.len() as i64);
        e.0.extend_from_slice(s.as_bytes());
        e
    }
    fn framed(self, id: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend(self.0);
        out
    }
}

const V1: &str = r#"{"type":"record","name":"Features","fields":[
    {"name":"id","type":"string"},
    {"name":"age","type":"int"},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"user","type":["null",{"type":"record","name":"User","fields":[
        {"name":"country","type":"string"},
        {"name":"extra","type":{"type":"map","values":"double"}}]}]},
    {"name":"income","type":["null","double"]},
    {"name":"plan","type":{"type":"enum","name":"Plan","symbols":["FREE","PRO"]}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

/// V1 evolved: `age` promoted to long, `income` removed, `score` added.
const V2: &str = r#"{"type":"record","name":"Features","fields":[
    {"name":"id","type":"string"},
    {"name":"age","type":"long"},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"user","type":["null",{"type":"record","name":"User","fields":[
        {"name":"country","type":"string"},
        {"name":"extra","type":{"type":"map","values":"double"}}]}]},
    {"name":"plan","type":{"type":"enum","name":"Plan","symbols":["FREE","PRO"]}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"score","type":"double","default":0}]}"#;

fn fields() -> Vec<AvroField> {
    let f = |path: &str, feature, kind| AvroField { path: path.into(), feature, kind };
    vec![
        f("age", 0, FeatureKind::Numeric),
        f("/user/country", 1, FeatureKind::Categorical),
        f("income", 2, FeatureKind::Numeric),
        f("plan", 3, FeatureKind::Categorical),
        f("score", 4, FeatureKind::Numeric),
        f("id", 5, FeatureKind::Numeric),
    ]
}

fn v1_message(user: bool, income: Option<f64>) -> Enc {
    let mut e = Enc::default().str("id-1").long(42).long(2).str("a").str("b").long(0);
    if user {
        // A map block with a negative count and its byte size (skipped whole).
        let block = Enc::default().str("k").double(1.5);
        e = e.long(1).str("DE").long(-1).long(block.0.len() as i64);
        e.0.extend(block.0);
        e = e.long(0);
    } else {
        e = e.long(0);
    }
    e = match income {
        Some(x) => e.long(1).double(x),
        None => e.long(0),
    };
    e.long(1).long(1_500_000)
}

fn folded(d: &AvroDecoder) -> Vec<String> {
    let mut calls = Calls::default();
    d.row().fold(&mut calls);
    calls.0
}

fn registry_decoder() -> (AvroDecoder, Arc<FixedSchemas>, Arc<RecordedSchemaEvents>) {
    let source =
        Arc::new(FixedSchemas::new().with(1, SchemaKind::Avro, V1).with(2, SchemaKind::Avro, V2).with(
            3,
            SchemaKind::Protobuf,
            "syntax = \"proto3\";",
        ));
    let events = Arc::new(RecordedSchemaEvents::default());
    let decoder = AvroDecoder::new(
        AvroSchemas::Registry(source.clone()),
        &fields(),
        Some("/ts"),
        SchemaTracker::new("s", Some(events.clone())),
    )
    .unwrap();
    (decoder, source, events)
}

#[test]
fn reads_monitored_fields_by_path_and_skips_the_rest() {
    let (mut d, _, _) = registry_decoder();
    d.decode(&v1_message(true, Some(1234.5)).framed(1)).unwrap();
    assert_eq!(
        folded(&d),
        ["records 1", "0=42", "1=\"DE\"", "2=1234.5", "3=\"PRO\"", "4 missing", "5 invalid"]
    );
    assert_eq!(d.row().event, Some(Ok(1500)), "timestamp-micros read as ms");
    // A union branch null is missing, and so is everything below it.
    d.decode(&v1_message(false, None).framed(1)).unwrap();
    assert_eq!(
        folded(&d),
        ["records 1", "0=42", "1 missing", "2 missing", "3=\"PRO\"", "4 missing", "5 invalid"]
    );
}

#[test]
fn evolution_binds_fields_by_name_per_schema_id_and_counts_the_change() {
    let (mut d, source, events) = registry_decoder();
    d.decode(&v1_message(true, Some(1.0)).framed(1)).unwrap();
    let v2 = Enc::default().str("x").long(1 << 40).long(0).long(0).long(0).long(99).double(0.25).framed(2);
    d.decode(&v2).unwrap();
    // age promoted to long, income removed (missing), score added.
    assert_eq!(
        folded(&d),
        [
            "records 1",
            &format!("0={}", (1u64 << 40) as f64),
            "1 missing",
            "2 missing",
            "3=\"FREE\"",
            "4=0.25",
            "5 invalid"
        ]
    );
    d.decode(&v1_message(true, Some(1.0)).framed(1)).unwrap();
    for _ in 0..100 {
        d.decode(&v1_message(true, Some(1.0)).framed(1)).unwrap();
        d.decode(&v2).unwrap();
    }
    assert_eq!(source.lookups(), 2, "each schema fetched once, none per message after that");
    let seen = events.0.lock().unwrap();
    assert_eq!(seen[..2], [("s".into(), 1, 2), ("s".into(), 2, 1)]);
}

#[test]
fn framing_and_schema_refusals_have_their_reasons() {
    let (mut d, source, events) = registry_decoder();
    let reason = |d: &mut AvroDecoder, m: &[u8]| d.decode(m).unwrap_err().reason;
    d.decode(&v1_message(true, None).framed(1)).unwrap();
    assert_eq!(reason(&mut d, b"{\"json\": 1}"), "wrong_magic_byte");
    assert_eq!(reason(&mut d, &[0, 0, 0]), "wrong_magic_byte");
    assert_eq!(reason(&mut d, &v1_message(true, None).framed(77)), "unknown_schema");
    assert_eq!(reason(&mut d, &v1_message(true, None).framed(77)), "unknown_schema");
    assert_eq!(reason(&mut d, &v1_message(true, None).framed(3)), "unusable_schema");
    assert_eq!(source.lookups(), 3, "an unknown id is asked for once");
    assert!(events.0.lock().unwrap().is_empty(), "a refused schema id is no schema change");
    let good = v1_message(true, Some(2.0)).framed(1);
    for cut in 5..good.len() {
        assert_eq!(reason(&mut d, &good[..cut]), "malformed_avro", "cut at {cut}");
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(reason(&mut d, &long), "malformed_avro");
    d.decode(&good).unwrap();
}

#[test]
fn declared_lengths_beyond_the_message_are_refused_without_allocating() {
    let (mut d, _, _) = registry_decoder();
    for m in [
        Enc::default().long(i64::MAX).framed(1),
        Enc::default().str("id").long(1).long(i64::MAX).framed(1),
        Enc::default().str("id").long(1).long(-1).long(1 << 40).framed(1),
        Enc::default().str("id").long(1).long(0).long(7).framed(1),
    ] {
        assert_eq!(d.decode(&m).unwrap_err().reason, "malformed_avro");
    }
    let nulls = r#"{"type":"record","name":"N","fields":[{"name":"n","type":{"type":"array","items":"null"}},{"name":"x","type":"double"}]}"#;
    let mut d = AvroDecoder::new(
        AvroSchemas::Fixed(nulls.into()),
        &[AvroField { path: "x".into(), feature: 0, kind: FeatureKind::Numeric }],
        None,
        SchemaTracker::new("s", None),
    )
    .unwrap();
    let bomb = Enc::default().long(i64::MAX / 4).long(0).double(1.0);
    assert_eq!(d.decode(&bomb.0).unwrap_err().reason, "malformed_avro");
    let fine = Enc::default().long(3).long(0).double(1.0);
    d.decode(&fine.0).unwrap();
    assert_eq!(folded(&d), ["records 1", "0=1"]);
}

#[test]
fn a_fixed_schema_reads_bare_avro() {
    let mut d =
        AvroDecoder::new(AvroSchemas::Fixed(V1.into()), &fields(), None, SchemaTracker::new("s", None))
            .unwrap();
    d.decode(&v1_message(true, None).0).unwrap();
    assert_eq!(folded(&d)[..3], ["records 1", "0=42", "1=\"DE\""]);
    assert!(
        AvroDecoder::new(AvroSchemas::Fixed("{".into()), &fields(), None, SchemaTracker::new("s", None))
            .is_err()
    );
}

#[test]
fn recursive_schemas_are_bounded() {
    let list = r#"{"type":"record","name":"L","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","L"]}]}"#;
    let mut d = AvroDecoder::new(
        AvroSchemas::Fixed(list.into()),
        &[AvroField { path: "/next/next/v".into(), feature: 0, kind: FeatureKind::Numeric }],
        None,
        SchemaTracker::new("s", None),
    )
    .unwrap();
    let mut e = Enc::default();
    for i in 0..3 {
        e = e.long(i).long(1);
    }
    e = e.long(3).long(0);
    d.decode(&e.0).unwrap();
    assert_eq!(folded(&d), ["records 1", "0=2"]);
    let mut deep = Enc::default();
    for i in 0..1000 {
        deep = deep.long(i).long(1);
    }
    deep = deep.long(0).long(0);
    assert_eq!(d.decode(&deep.0).unwrap_err().reason, "malformed_avro");
}

#[test]
fn through_the_trait_messages_append_and_fold_feature_by_feature() {
    use crate::decode::{Decoder, Message};
    let (d, _, _) = registry_decoder();
    let mut d: Box<dyn Decoder<Calls, Calls>> = Box::new(d);
    assert!(d.appends());
    assert_eq!(d.decode(&Message::value(&v1_message(true, Some(1.0)).framed(1))).unwrap(), 1);
    assert!(d.decode(&Message::value(b"junk")).is_err(), "a refused message adds no row");
    let mut second = v1_message(false, None);
    second.0[5] = 2 * 7; // age 7 (after the 5 bytes of "id-1")
    assert_eq!(d.decode(&Message::value(&second.framed(1))).unwrap(), 1);
    assert_eq!(d.event_time_ms(1), Some(Ok(1500)));
    let mut calls = Calls::default();
    d.fold_window(0..2, &mut calls);
    assert_eq!(
        calls.0[..5],
        ["records 2", "0=42", "0=7", "1=\"DE\"", "1 missing"],
        "feature by feature, the first message's text kept"
    );
    d.clear();
    assert_eq!(d.event_time_ms(0), None);
}

#[test]
fn remembered_schema_ids_are_bounded() {
    let (mut d, source, _) = registry_decoder();
    for id in 100..(100 + MAX_SCHEMAS as u32 + 10) {
        assert_eq!(d.decode(&v1_message(true, None).framed(id)).unwrap_err().reason, "unknown_schema");
    }
    assert!(d.compiled.len() <= MAX_SCHEMAS && d.by_id.len() <= MAX_SCHEMAS);
    d.decode(&v1_message(true, None).framed(1)).unwrap();
    assert_eq!(source.lookups(), MAX_SCHEMAS as u64 + 11);
}
