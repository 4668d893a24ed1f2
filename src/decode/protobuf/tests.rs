//! The Protobuf decoder's unit tests. Messages are encoded by prost-reflect's
//! `DynamicMessage` from the same compiled schema; the base64 descriptor form is made
//! with prost (the end-to-end tests use confluent-kafka's serializer).

use super::*;
use crate::decode::avro::tests::Calls;
use crate::decode::confluent::{FixedSchemas, RecordedSchemaEvents};
use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value as PValue};

const PROTO: &str = r#"
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Wrapper { int32 unused = 1; }
message Features {
  string id = 1;
  int64 age = 2;
  User user = 3;
  optional double income = 4;
  Plan plan = 5;
  repeated string tags = 6;
  google.protobuf.Timestamp ts = 7;
  float score = 8;
  sint32 delta = 9;
  message User { string country = 1; map<string, double> extra = 2; }
  enum Plan { FREE = 0; PRO = 1; }
}
"#;

/// `age` gone, `bonus` added (field 10), income no longer optional.
const PROTO_V2: &str = r#"
syntax = "proto3";
package shop;
message Wrapper { int32 unused = 1; }
message Features {
  string id = 1;
  message User { string country = 1; }
  User user = 3;
  double income = 4;
  double bonus = 10;
}
"#;

fn fields() -> Vec<ProtobufField> {
    let f = |path: &str, feature, kind| ProtobufField { path: path.into(), feature, kind };
    vec![
        f("age", 0, FeatureKind::Numeric),
        f("/user/country", 1, FeatureKind::Categorical),
        f("income", 2, FeatureKind::Numeric),
        f("plan", 3, FeatureKind::Categorical),
        f("tags", 4, FeatureKind::Categorical),
        f("score", 5, FeatureKind::Numeric),
        f("delta", 6, FeatureKind::Numeric),
        f("bonus", 7, FeatureKind::Numeric),
    ]
}

fn features_message(text: &str) -> MessageDescriptor {
    message_from_registered(text, Some("shop.Features")).unwrap()
}

fn encode(descriptor: &MessageDescriptor, set: &[(&str, PValue)]) -> Vec<u8> {
    let mut m = DynamicMessage::new(descriptor.clone());
    for (name, value) in set {
        m.set_field_by_name(name, value.clone());
    }
    m.encode_to_vec()
}

fn framed(id: u32, indexes: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(indexes);
    out.extend_from_slice(body);
    out
}

fn full(d: &MessageDescriptor) -> Vec<u8> {
    let user_desc = d.get_field_by_name("user").unwrap().kind();
    let user_desc = user_desc.as_message().unwrap();
    let mut user = DynamicMessage::new(user_desc.clone());
    user.set_field_by_name("country", PValue::String("DE".into()));
    let ts_desc = d.get_field_by_name("ts").unwrap().kind();
    let mut ts = DynamicMessage::new(ts_desc.as_message().unwrap().clone());
    ts.set_field_by_name("seconds", PValue::I64(2));
    ts.set_field_by_name("nanos", PValue::I32(5_000_000));
    encode(
        d,
        &[
            ("id", PValue::String("x".into())),
            ("age", PValue::I64(-42)),
            ("user", PValue::Message(user)),
            ("income", PValue::F64(12.5)),
            ("plan", PValue::EnumNumber(1)),
            ("tags", PValue::List(vec![PValue::String("a".into())])),
            ("ts", PValue::Message(ts)),
            ("score", PValue::F32(0.5)),
            ("delta", PValue::I32(-3)),
        ],
    )
}

fn folded(d: &ProtobufDecoder) -> Vec<String> {
    let mut calls = Calls::default();
    d.row().fold(&mut calls);
    calls.0
}

fn registry() -> (ProtobufDecoder, Arc<FixedSchemas>, Arc<RecordedSchemaEvents>) {
    let v1 = features_message(PROTO);
    // Schema 2 as confluent-kafka registers it: a base64 FileDescriptorProto.
    let v2_proto = features_message(PROTO_V2).parent_file().file_descriptor_proto().clone();
    let v2_b64 = base64::engine::general_purpose::STANDARD.encode(v2_proto.encode_to_vec());
    let source = Arc::new(
        FixedSchemas::new().with(1, SchemaKind::Protobuf, PROTO).with(2, SchemaKind::Protobuf, v2_b64).with(
            3,
            SchemaKind::Avro,
            "\"long\"",
        ),
    );
    let events = Arc::new(RecordedSchemaEvents::default());
    let d = ProtobufDecoder::new(
        ProtobufSchemas::Registry(source.clone()),
        &fields(),
        Some("ts"),
        SchemaTracker::new("s", Some(events.clone())),
    )
    .unwrap();
    drop(v1);
    (d, source, events)
}

#[test]
fn reads_monitored_scalars_by_tag_and_skips_the_rest() {
    let (mut d, _, _) = registry();
    let m = features_message(PROTO);
    // Message index [1] (Features is the second message): count 1, index 1, zigzag.
    d.decode(&framed(1, &[2, 2], &full(&m))).unwrap();
    assert_eq!(
        folded(&d),
        ["records 1", "0=-42", "1=\"DE\"", "2=12.5", "3=\"PRO\"", "4 invalid", "5=0.5", "6=-3", "7 missing"]
    );
    assert_eq!(d.row().event, Some(Ok(2005)));
    // Absent: a proto3 scalar is its default, an optional or a message's field missing.
    d.decode(&framed(1, &[2, 2], &encode(&m, &[("id", PValue::String("y".into()))]))).unwrap();
    assert_eq!(
        folded(&d),
        ["records 1", "0=0", "1 missing", "2 missing", "3=\"FREE\"", "4 missing", "5=0", "6=0", "7 missing"]
    );
    assert_eq!(d.row().event, None);
}

#[test]
fn evolution_and_the_base64_descriptor_form() {
    let (mut d, source, events) = registry();
    let m1 = features_message(PROTO);
    let m2 = features_message(PROTO_V2);
    d.decode(&framed(1, &[2, 2], &full(&m1))).unwrap();
    let v2 = encode(&m2, &[("income", PValue::F64(3.0)), ("bonus", PValue::F64(7.0))]);
    for _ in 0..50 {
        d.decode(&framed(2, &[2, 2], &v2)).unwrap();
        d.decode(&framed(1, &[2, 2], &full(&m1))).unwrap();
    }
    d.decode(&framed(2, &[2, 2], &v2)).unwrap();
    assert_eq!(
        folded(&d),
        [
            "records 1",
            "0 missing",
            "1 missing",
            "2=3",
            "3 missing",
            "4 missing",
            "5 missing",
            "6 missing",
            "7=7"
        ]
    );
    assert_eq!(source.lookups(), 2, "one lookup per schema id");
    assert_eq!(events.0.lock().unwrap().len(), 101);
    // Message index [0] (the single 0 byte): Wrapper, none of the fields.
    d.decode(&framed(1, &[0], &[8, 1])).unwrap();
    assert_eq!(folded(&d)[1], "0 missing");
}

#[test]
fn refusals_have_their_reasons() {
    let (mut d, _, _) = registry();
    let m = features_message(PROTO);
    let good = framed(1, &[2, 2], &full(&m));
    let reason = |d: &mut ProtobufDecoder, bytes: &[u8]| d.decode(bytes).unwrap_err().reason;
    assert_eq!(reason(&mut d, &[7, 0, 0, 0, 1, 0]), "wrong_magic_byte");
    assert_eq!(reason(&mut d, &framed(9, &[0], &[])), "unknown_schema");
    assert_eq!(reason(&mut d, &framed(3, &[0], &[])), "unusable_schema");
    assert_eq!(reason(&mut d, &framed(1, &[2, 40], &[])), "unusable_schema");
    assert_eq!(reason(&mut d, &framed(1, &[0xff], &[])), "malformed_protobuf");
    for cut in 7..good.len() {
        let r = d.decode(&good[..cut]);
        // Cutting a message can leave a valid shorter one; it must never panic and
        // must be refused when it ends mid-field.
        if let Err(e) = r {
            assert_eq!(e.reason, "malformed_protobuf");
        }
    }
    assert_eq!(
        reason(&mut d, &framed(1, &[2, 2], &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f])),
        "malformed_protobuf"
    );
    assert_eq!(reason(&mut d, &framed(1, &[2, 2], &[0x0b, 0x0b, 0x0b])), "malformed_protobuf");
    d.decode(&good).unwrap();
}

#[test]
fn a_descriptor_set_reads_bare_messages() {
    let m = features_message(PROTO);
    let mut set = prost_types::FileDescriptorSet::default();
    for f in m.parent_pool().files() {
        set.file.push(f.file_descriptor_proto().clone());
    }
    let bytes = set.encode_to_vec();
    let message = message_from_descriptor_set(&bytes, "shop.Features").unwrap();
    assert!(message_from_descriptor_set(&bytes, "shop.Nope").is_err());
    assert!(message_from_descriptor_set(b"junk", "shop.Features").is_err());
    let mut d =
        ProtobufDecoder::new(ProtobufSchemas::Fixed(message), &fields(), None, SchemaTracker::new("s", None))
            .unwrap();
    d.decode(&full(&m)).unwrap();
    assert_eq!(folded(&d)[..3], ["records 1", "0=-42", "1=\"DE\""]);
}
