//! Harness stage `open_inference`: Open Inference Protocol requests of 32 rows (the
//! bench schema's rows: 21 numeric features as one FP64 [32, 21] tensor, 5 categorical
//! ones as one BYTES [32, 5] tensor, as a Seldon model's input topic carries them)
//! decoded and folded into a window sketch, side by side with the JSON decoder on the
//! same rows (one record per message). Rates per CPU-second of the measuring thread;
//! the 60 M values/s target is printed, never asserted.

use super::pipeline::Pipeline;
use super::workload::{Generator, Schema, Value, WORDS};
use super::{Noop, Table, Variant, json_fields, measured, progress, run_rounds, si};
use driftscope::config::{InferenceEncoding, InferenceMessage, OpenInferenceConfig};
use driftscope::decode::json::JsonDecoder;
use driftscope::decode::open_inference::proto::model_infer_request::InferInputTensor;
use driftscope::decode::open_inference::proto::{InferTensorContents, ModelInferRequest};
use driftscope::decode::open_inference::{OpenInference, TensorField};
use driftscope::stats::{FeatureKind, Reference};
use prost::Message as _;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

const S: &str = "1b. in-process Open Inference Protocol, one thread (bench schema, 32 rows per request)";
pub const ROWS: usize = 32;

/// The bench rows as requests of `ROWS` rows: raw contents (what tritonclient and
/// Seldon's gateway send) or typed contents.
fn requests(schema: &Schema, seed: u64, messages: usize, raw: bool) -> Vec<Vec<u8>> {
    let numeric: Vec<usize> =
        (0..schema.len()).filter(|&i| schema.features[i].kind == FeatureKind::Numeric).collect();
    let categorical: Vec<usize> =
        (0..schema.len()).filter(|&i| schema.features[i].kind == FeatureKind::Categorical).collect();
    let mut generator = Generator::new(schema, seed);
    let mut values = Vec::new();
    (0..messages)
        .map(|m| {
            let (mut numbers, mut words) = (Vec::new(), Vec::new());
            for _ in 0..ROWS {
                generator.record(&mut values);
                numbers.extend(numeric.iter().map(|&i| match values[i] {
                    Value::Num(x) => x,
                    Value::Cat(_) => f64::NAN,
                }));
                words.extend(categorical.iter().map(|&i| match values[i] {
                    Value::Cat(c) => WORDS[c as usize],
                    Value::Num(_) => "",
                }));
            }
            let tensor = |name: &str, datatype: &str, width: usize, contents| InferInputTensor {
                name: name.into(),
                datatype: datatype.into(),
                shape: vec![ROWS as i64, width as i64],
                parameters: Default::default(),
                contents,
            };
            let mut request = ModelInferRequest {
                model_name: "bench".into(),
                id: format!("req-{m}"),
                ..Default::default()
            };
            if raw {
                request.inputs = vec![
                    tensor("features", "FP64", numeric.len(), None),
                    tensor("words", "BYTES", categorical.len(), None),
                ];
                let mut text = Vec::new();
                for w in &words {
                    text.extend((w.len() as u32).to_le_bytes());
                    text.extend(w.as_bytes());
                }
                request.raw_input_contents = vec![
                    numbers.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
                    text.into(),
                ];
            } else {
                let fp64 = InferTensorContents { fp64_contents: numbers, ..Default::default() };
                let bytes = InferTensorContents {
                    bytes_contents: words.iter().map(|w| w.as_bytes().to_vec().into()).collect(),
                    ..Default::default()
                };
                request.inputs = vec![
                    tensor("features", "FP64", numeric.len(), Some(fp64)),
                    tensor("words", "BYTES", categorical.len(), Some(bytes)),
                ];
            }
            request.encode_to_vec()
        })
        .collect()
}

/// The decoder of the bench schema's features, by column of the two tensors.
fn decoder(schema: &Schema) -> OpenInference {
    let (mut numeric, mut categorical) = (Vec::new(), Vec::new());
    for f in &schema.features {
        match f.kind {
            FeatureKind::Numeric => numeric.push(f.name.clone()),
            FeatureKind::Categorical => categorical.push(f.name.clone()),
        }
    }
    let config = OpenInferenceConfig {
        message: InferenceMessage::Request,
        encoding: InferenceEncoding::Auto,
        columns: BTreeMap::from([("features".to_string(), numeric), ("words".to_string(), categorical)]),
    };
    let fields = schema
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| TensorField::resolve(&f.name, i, f.kind, None, None, &config))
        .collect();
    OpenInference::new(&config, None, fields)
}

/// `[streams.open_inference]` for the bench schema's requests.
fn stream_lines(schema: &Schema) -> String {
    let names = |kind| {
        let names: Vec<String> =
            schema.features.iter().filter(|f| f.kind == kind).map(|f| format!("{:?}", f.name)).collect();
        names.join(", ")
    };
    format!(
        "[streams.open_inference]\nmessage = \"request\"\ncolumns = {{ features = [{}], words = [{}] }}\n",
        names(FeatureKind::Numeric),
        names(FeatureKind::Categorical)
    )
}

pub fn stage(
    quick: bool,
    profile: &Path,
    dir: &Path,
    reference: &Reference,
    seed: u64,
    table: &mut Table,
) -> anyhow::Result<()> {
    let schema = Schema::bench();
    let values_per_row = schema.len() as f64;
    let (messages, rounds, passes) = if quick { (3_000, 3, 2) } else { (20_000, 5, 3) };
    progress(format!(
        "open_inference: generating {messages} requests of {ROWS} rows, raw and typed, and JSON"
    ));
    let raw = requests(&schema, seed, messages, true);
    let typed = requests(&schema, seed, messages, false);
    // The same rows, one JSON record per message (values printed to 5 decimals).
    let json = Generator::new(&schema, seed).json_messages(messages * ROWS);
    let raw_bytes = raw.iter().map(Vec::len).sum::<usize>() as f64 / raw.len() as f64;
    let typed_bytes = typed.iter().map(Vec::len).sum::<usize>() as f64 / typed.len() as f64;

    let (mut only, mut noop, mut raw_sketch, mut typed_sketch) =
        (decoder(&schema), decoder(&schema), decoder(&schema), decoder(&schema));
    let mut json_decoder = JsonDecoder::new(&json_fields(&schema), None)?;
    let (mut sketch_a, mut sketch_b, mut sketch_c) =
        (reference.new_window(), reference.new_window(), reference.new_window());
    let mut pipeline = Pipeline::with_stream_lines("open_inference", profile, dir, &stream_lines(&schema))?;
    let (n, rows) = (messages as u64, (messages * ROWS) as u64);
    let (refused_raw, refused_typed) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    let mut variants = vec![
        Variant {
            name: "OIP raw: decode only",
            pass: Box::new(|| {
                for m in &raw {
                    black_box(only.decode_message(black_box(m), None).is_ok());
                }
                (n, rows)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "OIP raw: decode + fold to a no-op sink",
            pass: Box::new(|| {
                for m in &raw {
                    if let Ok(r) = noop.decode_message(black_box(m), None) {
                        noop.fold(0..r, &mut Noop);
                    }
                }
                (n, rows)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "OIP raw: decode + fold to a WindowSketch",
            pass: Box::new(|| {
                for m in &raw {
                    match raw_sketch.decode_message(black_box(m), None) {
                        Ok(r) => raw_sketch.fold(0..r, &mut sketch_a),
                        Err(_) => refused_raw.set(refused_raw.get() + 1),
                    }
                }
                (n, rows)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "OIP typed: decode + fold to a WindowSketch",
            pass: Box::new(|| {
                for m in &typed {
                    match typed_sketch.decode_message(black_box(m), None) {
                        Ok(r) => typed_sketch.fold(0..r, &mut sketch_b),
                        Err(_) => refused_typed.set(refused_typed.get() + 1),
                    }
                }
                (n, rows)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "OIP raw PIPELINE: StreamState stage/flush + score at close",
            pass: Box::new(|| {
                for m in &raw {
                    pipeline.process(black_box(m));
                }
                (n, rows)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "JSON, same rows: decode + apply to a WindowSketch",
            pass: Box::new(|| {
                for m in &json {
                    if json_decoder.decode(black_box(m)).is_ok() {
                        json_decoder.apply(&mut sketch_c);
                    }
                }
                (json.len() as u64, rows)
            }),
            timings: Vec::new(),
        },
    ];
    progress(format!("open_inference: {rounds} rounds x {passes} passes per variant"));
    run_rounds(&mut variants, rounds, passes);
    let figures: Vec<(&str, f64)> =
        variants.iter().map(|v| (v.name, measured(v).records_cpu * values_per_row)).collect();
    drop(variants);
    let refused = refused_raw.get() + refused_typed.get();
    if refused > 0 {
        anyhow::bail!("open_inference: the decoder refused {refused} bench requests");
    }
    table.info(
        S,
        "request size: raw / typed contents (32 rows)",
        format!("{raw_bytes:.0} B / {typed_bytes:.0} B"),
    );
    for (name, values) in &figures {
        table.info(
            S,
            format!("  {name}"),
            format!("{}values/s = {}rows/s", si(*values), si(values / values_per_row)),
        );
    }
    if pipeline.bad > 0 || pipeline.windows == 0 {
        anyhow::bail!("open_inference pipeline: {} refused, {} windows", pipeline.bad, pipeline.windows);
    }
    let (raw_rate, json_rate) = (figures[2].1, figures[5].1);
    table.check(
        S,
        "  OIP raw into the sketches",
        format!("{}values/s", si(raw_rate)),
        ">= 60 M values/s",
        raw_rate >= 60e6,
    );
    table.info(S, "  OIP raw against JSON on the same rows", format!("{:.1}x", raw_rate / json_rate));
    Ok(())
}
