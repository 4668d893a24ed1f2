//! Stage `confluent`: Confluent-framed Avro and Protobuf beside JSON on the same rows
//! (the bench schema's generator, same seed), one thread, rates per CPU-second. For
//! Avro also the alternative the decoder was chosen against: `arrow-avro` with a
//! projecting reader schema, decoding into Arrow batches folded into the same sketch.
//! The messages are encoded here by the Avro and Protobuf binary rules (a benchmark
//! input; the tests use confluent-kafka's serializers).

use super::pipeline::Pipeline;
use super::workload::{self, Generator, Schema, Value, WORDS};
use super::{Noop, Table, Variant, measured, progress, run_rounds, si};
use anyhow::bail;
use driftscope::decode::DecodeContext;
use driftscope::decode::arrow::{ColumnBinding, fold_batch};
use driftscope::decode::avro::{AvroDecoder, AvroField, AvroSchemas};
use driftscope::decode::confluent::{FixedSchemas, SchemaKind, SchemaSource, SchemaTracker};
use driftscope::decode::json::{JsonDecoder, JsonField};
use driftscope::decode::protobuf::{ProtobufDecoder, ProtobufField, ProtobufSchemas};
use driftscope::stats::FeatureKind;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const S: &str = "1b. Confluent-framed Avro and Protobuf beside JSON, same rows, one thread";

/// The writer's Avro schema: id and ts (not monitored) then every feature.
fn avro_schema(schema: &Schema, only_monitored: bool) -> String {
    let mut fields: Vec<String> = Vec::new();
    if !only_monitored {
        fields.push(r#"{"name":"id","type":"string"}"#.into());
        fields.push(r#"{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}"#.into());
    }
    for f in &schema.features {
        let ty = if f.kind == FeatureKind::Numeric { "double" } else { "string" };
        fields.push(format!(r#"{{"name":"{}","type":"{ty}"}}"#, f.name));
    }
    format!(r#"{{"type":"record","name":"Bench","namespace":"bench","fields":[{}]}}"#, fields.join(","))
}

/// The same record as Protobuf (`.proto` text): id = 1, ts = 2, features from 3.
fn proto_schema(schema: &Schema) -> String {
    let mut text = String::from(
        "syntax = \"proto3\";\npackage bench;\nmessage Bench {\n  string id = 1;\n  int64 ts = 2;\n",
    );
    for (i, f) in schema.features.iter().enumerate() {
        let ty = if f.kind == FeatureKind::Numeric { "double" } else { "string" };
        text.push_str(&format!("  {ty} {} = {};\n", f.name, i + 3));
    }
    text.push_str("}\n");
    text
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(out: &mut Vec<u8>, v: i64) {
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Confluent framing with schema id 1.
fn framed(prefix_extra: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0, 1];
    out.extend_from_slice(prefix_extra);
    out
}

/// The same records in the three encodings.
struct Messages {
    json: Vec<Vec<u8>>,
    avro: Vec<Vec<u8>>,
    proto: Vec<Vec<u8>>,
}

fn messages(schema: &Schema, n: usize) -> Messages {
    let mut generator = Generator::new(schema, workload_seed());
    let mut json_gen = Generator::new(schema, workload_seed());
    let (mut values, mut text, mut json_values) = (Vec::new(), String::new(), Vec::new());
    let (mut avro, mut proto, mut json) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        json_gen.json(&mut json_values, &mut text);
        json.push(text.as_bytes().to_vec());
        generator.record(&mut values);
        let ts = generator.timestamp_ms();
        let id = format!("evt-{ts:016x}");
        let mut a = framed(&[]);
        zigzag(&mut a, id.len() as i64);
        a.extend_from_slice(id.as_bytes());
        zigzag(&mut a, ts);
        // Message index [0]: one 0 byte.
        let mut p = framed(&[0]);
        p.push(0x0a);
        varint(&mut p, id.len() as u64);
        p.extend_from_slice(id.as_bytes());
        p.push(0x10);
        varint(&mut p, ts as u64);
        for (i, v) in values.iter().enumerate() {
            let tag = (i + 3) as u64;
            match *v {
                Value::Num(x) => {
                    a.extend_from_slice(&x.to_le_bytes());
                    varint(&mut p, tag << 3 | 1);
                    p.extend_from_slice(&x.to_le_bytes());
                }
                Value::Cat(c) => {
                    let word = WORDS[c as usize];
                    zigzag(&mut a, word.len() as i64);
                    a.extend_from_slice(word.as_bytes());
                    varint(&mut p, tag << 3 | 2);
                    varint(&mut p, word.len() as u64);
                    p.extend_from_slice(word.as_bytes());
                }
            }
        }
        avro.push(a);
        proto.push(p);
    }
    Messages { json, avro, proto }
}

fn workload_seed() -> u64 {
    super::STREAM_SEED
}

pub fn stage(quick: bool, dir: &Path, table: &mut Table) -> anyhow::Result<()> {
    let schema = Schema::bench();
    let values_per_record = schema.len() as f64;
    let (count, rounds, passes) = if quick { (20_000, 3, 2) } else { (100_000, 5, 3) };
    progress(format!("confluent: generating {count} records as JSON, Avro and Protobuf"));
    let profile_path = dir.join("bench-confluent.profile");
    std::fs::write(&profile_path, workload::profile(&schema, super::REFERENCE_SEED, 100_000).to_json())?;
    let Messages { json, avro, proto } = messages(&schema, count);
    let n = count as u64;
    let size = |m: &[Vec<u8>]| m.iter().map(Vec::len).sum::<usize>() as f64 / m.len() as f64;

    let source = Arc::new(FixedSchemas::new().with(1, SchemaKind::Avro, avro_schema(&schema, false)).with(
        2,
        SchemaKind::Protobuf,
        proto_schema(&schema),
    ));
    // Protobuf messages carry schema id 2.
    let proto: Vec<Vec<u8>> = proto
        .into_iter()
        .map(|mut m| {
            m[4] = 2;
            m
        })
        .collect();
    let avro_fields: Vec<AvroField> = schema
        .features
        .iter()
        .enumerate()
        .map(|(feature, f)| AvroField { path: f.name.clone(), feature, kind: f.kind })
        .collect();
    let proto_fields: Vec<ProtobufField> = schema
        .features
        .iter()
        .enumerate()
        .map(|(feature, f)| ProtobufField { path: f.name.clone(), feature, kind: f.kind })
        .collect();
    let json_fields: Vec<JsonField> = schema
        .features
        .iter()
        .enumerate()
        .map(|(feature, f)| JsonField { pointer: format!("/{}", f.name), feature, kind: f.kind })
        .collect();
    let registry = |s: &Arc<FixedSchemas>| AvroSchemas::Registry(s.clone() as Arc<dyn SchemaSource>);
    let new_avro = || {
        AvroDecoder::new(registry(&source), &avro_fields, None, SchemaTracker::new("bench", None))
            .map_err(anyhow::Error::msg)
    };
    let new_proto = || {
        ProtobufDecoder::new(
            ProtobufSchemas::Registry(source.clone()),
            &proto_fields,
            None,
            SchemaTracker::new("bench", None),
        )
        .map_err(anyhow::Error::msg)
    };
    let (mut avro_only, mut avro_noop, mut avro_sketch_dec) = (new_avro()?, new_avro()?, new_avro()?);
    let (mut proto_noop, mut proto_sketch_dec) = (new_proto()?, new_proto()?);
    let mut json_sketch_dec = JsonDecoder::new(&json_fields, None)?;
    let context = DecodeContext { schemas: Some(source.clone()), schema_events: None };
    let preamble = "[registry]\nurl = \"http://127.0.0.1:1\"\n";
    let mut avro_pipeline = Pipeline::with_context("avro", &profile_path, dir, preamble, &context)?;
    let mut proto_pipeline = Pipeline::with_context("protobuf", &profile_path, dir, preamble, &context)?;
    let mut json_pipeline = Pipeline::new("json", &profile_path, dir)?;
    let reference = json_pipeline.reference().clone();
    let (mut json_sketch, mut avro_sketch, mut proto_sketch, mut arrow_avro_sketch) =
        (reference.new_window(), reference.new_window(), reference.new_window(), reference.new_window());

    // arrow-avro: the writer schema by Confluent id, a reader schema of the monitored
    // fields only (projection), batches of 1,024 rows folded like Arrow IPC batches.
    let new_arrow_avro = || -> anyhow::Result<arrow_avro::reader::Decoder> {
        use arrow_avro::reader::ReaderBuilder;
        use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store.set(Fingerprint::Id(1), AvroSchema::new(avro_schema(&schema, false)))?;
        Ok(ReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_reader_schema(AvroSchema::new(avro_schema(&schema, true)))
            .with_batch_size(1024)
            .build_decoder()?)
    };
    let (mut arrow_avro, mut arrow_avro_single) = (new_arrow_avro()?, new_arrow_avro()?);
    let mut arrow_avro_single_sketch = reference.new_window();
    let bindings: Vec<ColumnBinding> = schema
        .features
        .iter()
        .enumerate()
        .map(|(feature, f)| ColumnBinding { column: f.name.clone(), feature, kind: f.kind })
        .collect();
    let (mut arrow_avro_bad, mut arrow_avro_single_bad) = (0u64, 0u64);

    let mut variants = vec![
        Variant {
            name: "JSON: decode + apply to a WindowSketch",
            pass: Box::new(|| {
                for m in &json {
                    if json_sketch_dec.decode(black_box(m)).is_ok() {
                        json_sketch_dec.apply(&mut json_sketch);
                    }
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "JSON PIPELINE: StreamState::process + score at close",
            pass: Box::new(|| {
                for m in &json {
                    json_pipeline.process(black_box(m));
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Avro (projection decoder): decode only",
            pass: Box::new(|| {
                for m in &avro {
                    black_box(avro_only.decode(black_box(m)).is_ok());
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Avro (projection decoder): decode + fold to a no-op sink",
            pass: Box::new(|| {
                for m in &avro {
                    if avro_noop.decode(black_box(m)).is_ok() {
                        avro_noop.row().fold(&mut Noop);
                    }
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Avro (projection decoder): decode + fold to a WindowSketch",
            pass: Box::new(|| {
                for m in &avro {
                    if avro_sketch_dec.decode(black_box(m)).is_ok() {
                        avro_sketch_dec.row().fold(&mut avro_sketch);
                    }
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Avro (arrow-avro, projecting reader schema): decode + fold_batch to a WindowSketch",
            pass: Box::new(|| {
                for m in &avro {
                    if arrow_avro.decode(black_box(m)).is_err() {
                        arrow_avro_bad += 1;
                    }
                    if arrow_avro.batch_is_full()
                        && let Ok(Some(batch)) = arrow_avro.flush()
                    {
                        fold_batch(&batch, &bindings, &mut arrow_avro_sketch);
                    }
                }
                if let Ok(Some(batch)) = arrow_avro.flush() {
                    fold_batch(&batch, &bindings, &mut arrow_avro_sketch);
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Avro (arrow-avro), one batch per message as the pipeline needs: + fold_batch",
            pass: Box::new(|| {
                for m in &avro {
                    if arrow_avro_single.decode(black_box(m)).is_err() {
                        arrow_avro_single_bad += 1;
                    }
                    if let Ok(Some(batch)) = arrow_avro_single.flush() {
                        fold_batch(&batch, &bindings, &mut arrow_avro_single_sketch);
                    }
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Avro PIPELINE: StreamState::process + score at close",
            pass: Box::new(|| {
                for m in &avro {
                    avro_pipeline.process(black_box(m));
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Protobuf: decode + fold to a no-op sink",
            pass: Box::new(|| {
                for m in &proto {
                    if proto_noop.decode(black_box(m)).is_ok() {
                        proto_noop.row().fold(&mut Noop);
                    }
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Protobuf: decode + fold to a WindowSketch",
            pass: Box::new(|| {
                for m in &proto {
                    if proto_sketch_dec.decode(black_box(m)).is_ok() {
                        proto_sketch_dec.row().fold(&mut proto_sketch);
                    }
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "Protobuf PIPELINE: StreamState::process + score at close",
            pass: Box::new(|| {
                for m in &proto {
                    proto_pipeline.process(black_box(m));
                }
                (n, n)
            }),
            timings: Vec::new(),
        },
    ];
    progress(format!("confluent: {rounds} rounds x {passes} passes x {count} messages per variant"));
    run_rounds(&mut variants, rounds, passes);
    let figures: Vec<(&str, super::Measured)> = variants.iter().map(|v| (v.name, measured(v))).collect();
    drop(variants);
    if avro_pipeline.bad > 0
        || proto_pipeline.bad > 0
        || json_pipeline.bad > 0
        || arrow_avro_bad + arrow_avro_single_bad > 0
    {
        bail!(
            "confluent: messages refused (avro {}, protobuf {}, json {}, arrow-avro {arrow_avro_bad} + {arrow_avro_single_bad})",
            avro_pipeline.bad,
            proto_pipeline.bad,
            json_pipeline.bad
        );
    }
    if avro_sketch.records != json_sketch.records || proto_sketch.records != json_sketch.records {
        bail!("confluent: the formats folded different record counts");
    }
    table.info(
        S,
        "message size: JSON / Avro / Protobuf",
        format!("{:.0} B / {:.0} B / {:.0} B", size(&json), size(&avro), size(&proto)),
    );
    for (name, m) in &figures {
        table.info(
            S,
            format!("  {name}"),
            format!(
                "{}records/s [{}records/s] = {}values/s",
                si(m.records_cpu),
                si(m.msgs_wall),
                si(m.records_cpu * values_per_record)
            ),
        );
    }
    let sketch = &figures[4].1;
    table.check(
        S,
        "  Avro into the sketches (projection decoder), records/s",
        format!("{}records/s", si(sketch.records_cpu)),
        ">= 1.5 M records/s",
        sketch.records_cpu >= 1.5e6,
    );
    table.info(
        S,
        "  projection decoder / arrow-avro (into the sketches): batched; per message",
        format!(
            "{:.2}x; {:.2}x",
            sketch.records_cpu / figures[5].1.records_cpu,
            sketch.records_cpu / figures[6].1.records_cpu
        ),
    );
    table.info(
        S,
        "  Avro / JSON (into the sketches; pipelines)",
        format!(
            "{:.2}x; {:.2}x",
            sketch.records_cpu / figures[0].1.records_cpu,
            figures[7].1.records_cpu / figures[1].1.records_cpu
        ),
    );
    Ok(())
}
