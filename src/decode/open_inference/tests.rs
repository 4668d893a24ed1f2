//! Unit tests of the `open_inference` decoder: messages built with the generated
//! protocol types (encoded by prost) or written as JSON, decoded, folded into a sink
//! that records every call.

use super::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use super::*;
use crate::config::{InferenceEncoding, InferenceMessage, OpenInferenceConfig};
use prost::Message as _;
use prost::bytes::Bytes;
use std::collections::BTreeMap;

/// What a sink was given, per feature, in order.
#[derive(Debug, Default, PartialEq)]
struct Recorder {
    records: u64,
    values: BTreeMap<usize, Vec<Seen>>,
    slices: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    N(f64),
    C(String),
    Missing,
    Invalid,
}

impl ValueSink for Recorder {
    fn add_records(&mut self, n: u64) {
        self.records += n;
    }
    fn numeric(&mut self, feature: usize, x: f64) {
        self.values.entry(feature).or_default().push(Seen::N(x));
    }
    fn numeric_slice(&mut self, feature: usize, values: &[f64]) {
        self.slices += 1;
        values.iter().for_each(|&x| self.numeric(feature, x));
    }
    fn category(&mut self, feature: usize, value: &str) {
        self.values.entry(feature).or_default().push(Seen::C(value.into()));
    }
    fn missing(&mut self, feature: usize) {
        self.values.entry(feature).or_default().push(Seen::Missing);
    }
    fn invalid(&mut self, feature: usize) {
        self.values.entry(feature).or_default().push(Seen::Invalid);
    }
}

use FeatureKind::{Categorical as Cat, Numeric as Num};
use Seen::{C, Invalid, Missing, N};

fn config(message: InferenceMessage) -> OpenInferenceConfig {
    OpenInferenceConfig { message, encoding: InferenceEncoding::Auto, columns: BTreeMap::new() }
}

fn field(feature: usize, kind: FeatureKind, tensor: &str, column: Option<usize>) -> TensorField {
    TensorField { feature, kind, tensor: tensor.into(), column }
}

fn decoder(message: InferenceMessage, fields: Vec<TensorField>) -> OpenInference {
    OpenInference::new(&config(message), None, fields)
}

fn input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: Default::default(),
        contents,
    }
}

fn request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> Vec<u8> {
    ModelInferRequest {
        model_name: "income".into(),
        model_version: "1".into(),
        id: "req-1".into(),
        parameters: Default::default(),
        inputs,
        outputs: vec![InferRequestedOutputTensor { name: "predict".into(), parameters: Default::default() }],
        raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
    }
    .encode_to_vec()
}

fn fp32(values: &[f32]) -> Option<InferTensorContents> {
    Some(InferTensorContents { fp32_contents: values.to_vec(), ..Default::default() })
}

/// Decodes `payload` and folds every held row.
fn run(d: &mut OpenInference, payload: &[u8]) -> Result<Recorder, &'static str> {
    let rows = d.decode_message(payload, None).map_err(|(reason, _)| reason)?;
    assert_eq!(rows, d.rows());
    let mut sink = Recorder::default();
    d.fold(0..rows, &mut sink);
    Ok(sink)
}

fn values(sink: &Recorder, feature: usize) -> Vec<Seen> {
    sink.values.get(&feature).cloned().unwrap_or_default()
}

#[test]
fn typed_fp32_batch_is_rows_and_columns_are_features() {
    let mut d = decoder(
        InferenceMessage::Request,
        vec![field(0, Num, "input-0", Some(2)), field(1, Num, "input-0", Some(0))],
    );
    let payload =
        request(vec![input("input-0", "FP32", &[2, 3], fp32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))], vec![]);
    let sink = run(&mut d, &payload).unwrap();
    assert_eq!(sink.records, 2);
    assert_eq!(values(&sink, 0), vec![N(3.0), N(6.0)]);
    assert_eq!(values(&sink, 1), vec![N(1.0), N(4.0)]);
    assert_eq!(sink.slices, 2, "a column of numbers is folded as one slice");
    assert_eq!(d.request_id(), Some("req-1"));
}

#[test]
fn every_datatype_from_raw_contents() {
    let f16 = |x: f32| half::f16::from_f32(x).to_le_bytes();
    let cases: Vec<(&str, Vec<u8>, Vec<f64>)> = vec![
        ("BOOL", vec![1, 0, 7], vec![1.0, 0.0, 1.0]),
        ("INT8", vec![0xff, 2, 0x80], vec![-1.0, 2.0, -128.0]),
        ("UINT8", vec![0xff, 2, 0], vec![255.0, 2.0, 0.0]),
        ("INT16", [-2i16, 300, 0].iter().flat_map(|x| x.to_le_bytes()).collect(), vec![-2.0, 300.0, 0.0]),
        ("UINT16", [65535u16, 1, 0].iter().flat_map(|x| x.to_le_bytes()).collect(), vec![65535.0, 1.0, 0.0]),
        (
            "INT32",
            [-5i32, 7, 1 << 30].iter().flat_map(|x| x.to_le_bytes()).collect(),
            vec![-5.0, 7.0, 1073741824.0],
        ),
        (
            "UINT32",
            [u32::MAX, 1, 0].iter().flat_map(|x| x.to_le_bytes()).collect(),
            vec![4294967295.0, 1.0, 0.0],
        ),
        (
            "INT64",
            [-9i64, 1 << 40, 0].iter().flat_map(|x| x.to_le_bytes()).collect(),
            vec![-9.0, 1099511627776.0, 0.0],
        ),
        ("UINT64", [3u64, 4, 5].iter().flat_map(|x| x.to_le_bytes()).collect(), vec![3.0, 4.0, 5.0]),
        ("FP16", [0.5f32, -2.0, 1024.0].iter().flat_map(|&x| f16(x)).collect(), vec![0.5, -2.0, 1024.0]),
        ("FP32", [0.25f32, -1.5, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect(), vec![0.25, -1.5, 3.0]),
        (
            "FP64",
            [0.1f64, -1e300, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
            vec![0.1, -1e300, 2.0],
        ),
    ];
    for (datatype, raw, expected) in cases {
        let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None)]);
        let payload = request(vec![input("x", datatype, &[3], None)], vec![raw]);
        let sink = run(&mut d, &payload).unwrap_or_else(|r| panic!("{datatype}: {r}"));
        assert_eq!(values(&sink, 0), expected.into_iter().map(N).collect::<Vec<_>>(), "{datatype}");
    }
}

#[test]
fn every_typed_contents_field() {
    let c = |f: fn(&mut InferTensorContents)| {
        let mut c = InferTensorContents::default();
        f(&mut c);
        Some(c)
    };
    let cases = vec![
        ("BOOL", c(|c| c.bool_contents = vec![true, false])),
        ("INT8", c(|c| c.int_contents = vec![1, 0])),
        ("INT16", c(|c| c.int_contents = vec![1, 0])),
        ("INT32", c(|c| c.int_contents = vec![1, 0])),
        ("INT64", c(|c| c.int64_contents = vec![1, 0])),
        ("UINT8", c(|c| c.uint_contents = vec![1, 0])),
        ("UINT16", c(|c| c.uint_contents = vec![1, 0])),
        ("UINT32", c(|c| c.uint_contents = vec![1, 0])),
        ("UINT64", c(|c| c.uint64_contents = vec![1, 0])),
        ("FP32", c(|c| c.fp32_contents = vec![1.0, 0.0])),
        ("FP64", c(|c| c.fp64_contents = vec![1.0, 0.0])),
    ];
    for (datatype, contents) in cases {
        let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None)]);
        let sink = run(&mut d, &request(vec![input("x", datatype, &[2, 1], contents)], vec![])).unwrap();
        assert_eq!(values(&sink, 0), vec![N(1.0), N(0.0)], "{datatype}");
    }
}

#[test]
fn bytes_tensors_are_categories_typed_or_raw() {
    let fields = vec![field(0, Cat, "city", None), field(1, Num, "city", None)];
    let typed = InferTensorContents {
        bytes_contents: vec![
            Bytes::from_static(b"Paris"),
            Bytes::from_static(b"\xff\xfe"),
            Bytes::from_static(b""),
        ],
        ..Default::default()
    };
    let mut d = decoder(InferenceMessage::Request, fields.clone());
    let sink = run(&mut d, &request(vec![input("city", "BYTES", &[3], Some(typed))], vec![])).unwrap();
    assert_eq!(values(&sink, 0), vec![C("Paris".into()), Invalid, C(String::new())]);
    // A BYTES tensor read as a numeric feature: every value invalid, the message kept.
    assert_eq!(values(&sink, 1), vec![Invalid, Invalid, Invalid]);

    let mut raw = Vec::new();
    for s in ["Oslo", "Lima", "Zürich"] {
        raw.extend((s.len() as u32).to_le_bytes());
        raw.extend(s.as_bytes());
    }
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Cat, "city", Some(1))]);
    let sink = run(&mut d, &request(vec![input("city", "BYTES", &[1, 3], None)], vec![raw])).unwrap();
    assert_eq!(values(&sink, 0), vec![C("Lima".into())]);
}

#[test]
fn numeric_tensor_as_categories_is_its_numbers_text() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Cat, "k", None), field(1, Cat, "b", None)]);
    let ints = InferTensorContents { int64_contents: vec![3, -1], ..Default::default() };
    let bools: Vec<u8> = vec![1, 0];
    let payload =
        request(vec![input("k", "INT64", &[2], Some(ints)), input("b", "BOOL", &[2], None)], vec![]);
    let sink = run(&mut d, &payload);
    // Typed and raw contents cannot be mixed in one message: the b tensor has no data.
    assert_eq!(sink.unwrap_err(), REASON_SHAPE);
    let raw_ints: Vec<u8> = [3i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
    let payload =
        request(vec![input("k", "INT64", &[2], None), input("b", "BOOL", &[2], None)], vec![raw_ints, bools]);
    let sink = run(&mut d, &payload).unwrap();
    assert_eq!(values(&sink, 0), vec![C("3".into()), C("-1".into())]);
    assert_eq!(values(&sink, 1), vec![C("true".into()), C("false".into())]);
}

#[test]
fn response_reads_outputs_and_raw_output_contents() {
    let response = ModelInferResponse {
        model_name: "income".into(),
        model_version: String::new(),
        id: String::new(),
        parameters: Default::default(),
        outputs: vec![InferOutputTensor {
            name: "predict".into(),
            datatype: "FP64".into(),
            shape: vec![2, 2],
            parameters: Default::default(),
            contents: None,
        }],
        raw_output_contents: vec![Bytes::from(
            [0.9f64, 0.1, 0.2, 0.8].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
        )],
    }
    .encode_to_vec();
    let mut d = decoder(InferenceMessage::Response, vec![field(0, Num, "predict", Some(1))]);
    let rows = d.decode_message(&response, Some(b"key-7")).unwrap();
    assert_eq!(rows, 2);
    let mut sink = Recorder::default();
    d.fold(0..2, &mut sink);
    assert_eq!(values(&sink, 0), vec![N(0.1), N(0.8)]);
    assert_eq!(d.request_id(), Some("key-7"), "no protocol id: the message key");
}

#[test]
fn fold_takes_a_range_of_the_held_rows() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None)]);
    let payload = request(vec![input("x", "FP32", &[4], fp32(&[1.0, 2.0, 3.0, 4.0]))], vec![]);
    assert_eq!(d.decode_message(&payload, None), Ok(4));
    let mut sink = Recorder::default();
    d.fold(1..3, &mut sink);
    assert_eq!(sink.records, 2);
    assert_eq!(values(&sink, 0), vec![N(2.0), N(3.0)]);
}

#[test]
fn absent_tensor_is_missing_and_no_monitored_tensor_refuses() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None), field(1, Num, "y", None)]);
    let sink = run(&mut d, &request(vec![input("x", "FP32", &[2], fp32(&[1.0, 2.0]))], vec![])).unwrap();
    assert_eq!(values(&sink, 1), vec![Missing, Missing]);
    let err = run(&mut d, &request(vec![input("z", "FP32", &[2], fp32(&[1.0, 2.0]))], vec![]));
    assert_eq!(err.unwrap_err(), REASON_NO_TENSOR);
    assert_eq!(d.rows(), 0);
}

#[test]
fn bad_messages_are_refused_with_their_reason() {
    let fields = || vec![field(0, Num, "x", None), field(1, Num, "y", None)];
    let ok = request(vec![input("x", "FP32", &[2], fp32(&[1.0, 2.0]))], vec![]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", ok[..ok.len() - 3].to_vec(), REASON_MALFORMED),
        ("not protobuf", b"\xff\xff\xff\xff".to_vec(), REASON_MALFORMED),
        ("short data", request(vec![input("x", "FP32", &[3], fp32(&[1.0, 2.0]))], vec![]), REASON_SHAPE),
        ("long data", request(vec![input("x", "FP32", &[1], fp32(&[1.0, 2.0]))], vec![]), REASON_SHAPE),
        ("raw not whole", request(vec![input("x", "FP32", &[1], None)], vec![vec![0; 5]]), REASON_SHAPE),
        (
            "raw missing",
            request(vec![input("y", "FP32", &[1], None), input("x", "FP32", &[1], None)], vec![vec![0; 4]]),
            REASON_MALFORMED,
        ),
        (
            "raw bytes overrun",
            request(vec![input("x", "BYTES", &[1], None)], vec![vec![9, 0, 0, 0, b'a']]),
            REASON_MALFORMED,
        ),
        ("bf16", request(vec![input("x", "BF16", &[1], None)], vec![vec![0; 2]]), REASON_UNSUPPORTED),
        (
            "wrong field",
            request(
                vec![input(
                    "x",
                    "FP32",
                    &[2],
                    Some(InferTensorContents { int_contents: vec![1, 2], ..Default::default() }),
                )],
                vec![],
            ),
            REASON_WRONG_DATATYPE,
        ),
        (
            "rows disagree",
            request(
                vec![input("x", "FP32", &[2], fp32(&[1.0, 2.0])), input("y", "FP32", &[1], fp32(&[1.0]))],
                vec![],
            ),
            REASON_SHAPE,
        ),
        (
            "two columns, none named",
            request(vec![input("x", "FP32", &[1, 2], fp32(&[1.0, 2.0]))], vec![]),
            REASON_SHAPE,
        ),
        (
            "negative dimension",
            request(vec![input("x", "FP32", &[-2], fp32(&[1.0, 2.0]))], vec![]),
            REASON_SHAPE,
        ),
        ("no batch dimension", request(vec![input("x", "FP32", &[], fp32(&[1.0]))], vec![]), REASON_SHAPE),
        // A shape declaring more elements than any message holds sizes nothing.
        ("huge shape", request(vec![input("x", "FP32", &[1 << 60, 1], fp32(&[1.0]))], vec![]), REASON_SHAPE),
        (
            "overflowing shape",
            request(vec![input("x", "FP32", &[1 << 40, 1 << 40, 1 << 40], fp32(&[1.0]))], vec![]),
            REASON_SHAPE,
        ),
        (
            "rows without columns",
            request(vec![input("x", "FP32", &[1 << 50, 0], None)], vec![]),
            REASON_SHAPE,
        ),
    ];
    for (what, payload, reason) in cases {
        let mut d = decoder(InferenceMessage::Request, fields());
        // A message decoded before must not leak rows into the refused one.
        d.decode_message(&ok, None).unwrap();
        assert_eq!(d.decode_message(&payload, None).map_err(|(r, _)| r), Err(reason), "{what}");
        assert_eq!(d.rows(), 0, "{what}");
        let mut sink = Recorder::default();
        d.fold(0..2, &mut sink);
        assert_eq!(sink, Recorder::default(), "{what}: a refused message folds nothing");
    }
}

#[test]
fn column_beyond_the_tensor_is_refused() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", Some(2))]);
    let payload = request(vec![input("x", "FP32", &[1, 2], fp32(&[1.0, 2.0]))], vec![]);
    assert_eq!(run(&mut d, &payload).unwrap_err(), REASON_SHAPE);
}

#[test]
fn unmonitored_tensors_of_any_type_are_ignored() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None)]);
    let payload = request(
        vec![input("img", "BF16", &[1, 1 << 40], None), input("x", "FP32", &[1], fp32(&[5.0]))],
        vec![],
    );
    assert_eq!(values(&run(&mut d, &payload).unwrap(), 0), vec![N(5.0)]);
}

#[test]
fn columns_by_name_from_config_and_field_addressing_wins() {
    let mut config = config(InferenceMessage::Request);
    config.columns.insert("input-0".into(), vec!["age".into(), "income".into()]);
    let income = TensorField::resolve("income", 0, Num, None, None, &config);
    assert_eq!(income, field(0, Num, "input-0", Some(1)));
    let own = TensorField::resolve("income", 0, Num, Some("other"), Some(4), &config);
    assert_eq!(own, field(0, Num, "other", Some(4)));
    let by_name = TensorField::resolve("score", 1, Num, None, None, &config);
    assert_eq!(by_name, field(1, Num, "score", None));
}

#[test]
fn json_v2_tensors_flat_or_nested_with_nulls_and_bytes() {
    let mut d = decoder(
        InferenceMessage::Request,
        vec![field(0, Num, "input-0", Some(1)), field(1, Cat, "city", None), field(2, Num, "city", None)],
    );
    let payload = br#"{"id": "j-1", "inputs": [
        {"name": "input-0", "shape": [3, 2], "datatype": "FP32", "data": [[1, 2], [3, null], [5, "x"]]},
        {"name": "city", "shape": [3], "datatype": "BYTES", "data": ["Oslo", null, "Lima"]},
        {"name": "ignored", "shape": [1], "datatype": "BF16", "data": [1]}
    ], "outputs": [{"name": "predict"}]}"#;
    let sink = run(&mut d, payload).unwrap();
    assert_eq!(sink.records, 3);
    assert_eq!(values(&sink, 0), vec![N(2.0), Missing, Invalid]);
    assert_eq!(values(&sink, 1), vec![C("Oslo".into()), Missing, C("Lima".into())]);
    assert_eq!(values(&sink, 2), vec![Invalid, Invalid, Invalid]);
    assert_eq!(d.request_id(), Some("j-1"));
    let flat =
        br#"{"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]}]}"#;
    assert_eq!(values(&run(&mut d, flat).unwrap(), 0), vec![N(2.0), N(4.0)]);
    let short =
        br#"{"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3]}]}"#;
    assert_eq!(run(&mut d, short).unwrap_err(), REASON_SHAPE);
    assert_eq!(run(&mut d, b"{\"inputs\": [").unwrap_err(), REASON_MALFORMED);
    assert_eq!(run(&mut d, b"{\"something\": 1}").unwrap_err(), REASON_MALFORMED);
}

#[test]
fn json_v2_response_reads_outputs() {
    let mut d = decoder(InferenceMessage::Response, vec![field(0, Num, "predict", None)]);
    let payload = br#"{"model_name": "m", "outputs": [{"name": "predict", "shape": [2, 1], "datatype": "FP64", "data": [0.5, 0.25]}]}"#;
    assert_eq!(values(&run(&mut d, payload).unwrap(), 0), vec![N(0.5), N(0.25)]);
}

#[test]
fn kserve_v1_instances_and_predictions() {
    let mut d = decoder(
        InferenceMessage::Request,
        vec![field(0, Num, "age", None), field(1, Cat, "city", None), field(2, Num, "v", Some(1))],
    );
    let objects = br#"{"instances": [{"age": 30, "city": "Oslo", "v": [1, 2]}, {"age": null, "city": 7}, {"age": true, "v": [3, 4]}]}"#;
    let sink = run(&mut d, objects).unwrap();
    assert_eq!(values(&sink, 0), vec![N(30.0), Missing, N(1.0)]);
    assert_eq!(values(&sink, 1), vec![C("Oslo".into()), C("7".into()), Missing]);
    assert_eq!(values(&sink, 2), vec![N(2.0), Missing, N(4.0)]);

    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "instances", Some(1))]);
    let lists = br#"{"instances": [[1, 2, 3], [4, 5, 6]]}"#;
    assert_eq!(values(&run(&mut d, lists).unwrap(), 0), vec![N(2.0), N(5.0)]);
    let ragged = br#"{"instances": [[1, 2, 3], [4, 5]]}"#;
    assert_eq!(run(&mut d, ragged).unwrap_err(), REASON_SHAPE);

    let mut d = decoder(InferenceMessage::Response, vec![field(0, Num, "predictions", None)]);
    let scalars = br#"{"predictions": [0.1, 0.9, 0.5]}"#;
    assert_eq!(values(&run(&mut d, scalars).unwrap(), 0), vec![N(0.1), N(0.9), N(0.5)]);
}

#[test]
fn auto_encoding_tells_json_from_protobuf_by_the_first_byte() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None)]);
    let json =
        b" \r\n\t{\"inputs\": [{\"name\": \"x\", \"shape\": [1], \"datatype\": \"FP32\", \"data\": [7]}]}";
    assert_eq!(values(&run(&mut d, json).unwrap(), 0), vec![N(7.0)]);
    // A protobuf request whose model name is 123 bytes long starts with "\n{".
    let mut named =
        ModelInferRequest::decode(&*request(vec![input("x", "FP32", &[1], fp32(&[8.0]))], vec![])).unwrap();
    named.model_name = "m".repeat(123);
    let payload = named.encode_to_vec();
    assert_eq!(&payload[..2], b"\n{");
    assert_eq!(values(&run(&mut d, &payload).unwrap(), 0), vec![N(8.0)]);

    let forced =
        OpenInferenceConfig { encoding: InferenceEncoding::Protobuf, ..config(InferenceMessage::Request) };
    let mut d = OpenInference::new(&forced, None, vec![field(0, Num, "x", None)]);
    assert_eq!(run(&mut d, json).unwrap_err(), REASON_MALFORMED);
}

#[test]
fn event_times_from_a_tensor_of_milliseconds_or_rfc3339_text() {
    let fields = vec![field(0, Num, "x", None)];
    let mut d = OpenInference::new(&config(InferenceMessage::Request), Some("ts"), fields.clone());
    let ms = InferTensorContents { int64_contents: vec![1_714_564_800_000, -5], ..Default::default() };
    let payload = request(
        vec![input("x", "FP32", &[2], fp32(&[1.0, 2.0])), input("ts", "INT64", &[2], Some(ms))],
        vec![],
    );
    assert_eq!(d.decode_message(&payload, None), Ok(2));
    assert_eq!(d.event_time_ms(0), Some(Ok(1_714_564_800_000)));
    assert_eq!(d.event_time_ms(1), Some(Ok(-5)));

    let json = br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
        {"name": "ts", "shape": [3], "datatype": "BYTES", "data": ["2024-05-01T12:00:00Z", "soon", null]}]}"#;
    assert_eq!(d.decode_message(json, None), Ok(3));
    assert_eq!(d.event_time_ms(0), Some(Ok(1_714_564_800_000)));
    assert_eq!(d.event_time_ms(1), Some(Err(())));
    assert_eq!(d.event_time_ms(2), None);

    let rows_disagree = request(
        vec![
            input("x", "FP32", &[1], fp32(&[1.0])),
            input(
                "ts",
                "INT64",
                &[2],
                Some(InferTensorContents { int64_contents: vec![1, 2], ..Default::default() }),
            ),
        ],
        vec![],
    );
    assert_eq!(d.decode_message(&rows_disagree, None).map_err(|(r, _)| r), Err(REASON_SHAPE));
    // Without an event-time tensor in the message: no event times.
    assert_eq!(d.decode_message(&request(vec![input("x", "FP32", &[1], fp32(&[1.0]))], vec![]), None), Ok(1));
    assert_eq!(d.event_time_ms(0), None);
}

#[test]
fn an_empty_batch_holds_no_rows() {
    let mut d = decoder(InferenceMessage::Request, vec![field(0, Num, "x", None)]);
    let sink = run(&mut d, &request(vec![input("x", "FP32", &[0], None)], vec![])).unwrap();
    assert_eq!(sink.records, 0);
    // No rows and no columns: nothing to read, nothing to step over.
    for shape in [&[0, 0][..], &[0, 0, 5]] {
        let mut d =
            OpenInference::new(&config(InferenceMessage::Request), Some("x"), vec![field(0, Cat, "x", None)]);
        let sink = run(&mut d, &request(vec![input("x", "BYTES", shape, None)], vec![])).unwrap();
        assert_eq!(sink.records, 0, "{shape:?}");
    }
}

#[test]
fn the_label_joins_prediction_is_read_in_the_same_decode_and_never_refuses_a_message() {
    let mut d = decoder(InferenceMessage::Response, vec![field(0, Num, "x", None)]).with_prediction(field(
        0,
        Num,
        "prob",
        Some(1),
    ));
    let held = |d: &OpenInference| -> Vec<Option<HeldValue<'static>>> {
        (0..d.rows())
            .map(|r| match HeldPredictions::prediction(d, r) {
                Some(HeldValue::Number(x)) => Some(HeldValue::Number(x)),
                _ => None,
            })
            .collect()
    };
    // JSON v2: the prediction's column 1, the protocol's id, folded features unchanged.
    let v2 = br#"{"id": "r-1", "outputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]},
        {"name": "prob", "shape": [2, 2], "datatype": "FP32", "data": [0.75, 0.25, 0.5, 0.5]}]}"#;
    let sink = run(&mut d, v2).unwrap();
    assert_eq!((values(&sink, 0), sink.values.len()), (vec![N(1.0), N(2.0)], 1));
    assert_eq!(held(&d), vec![Some(HeldValue::Number(0.25)), Some(HeldValue::Number(0.5))]);
    assert_eq!(d.protocol_id(), Some("r-1"));
    // KServe v1 predictions: the id from the key is a request id, not the protocol's.
    let v1 = br#"{"predictions": [{"x": 3, "prob": [0.5, 0.125]}]}"#;
    assert_eq!(d.decode_message(v1, Some(b"key-1")), Ok(1));
    assert_eq!(held(&d), vec![Some(HeldValue::Number(0.125))]);
    assert_eq!((d.request_id(), d.protocol_id()), (Some("key-1"), None));
    // Unusable predictions: missing, of other rows, of an unread datatype, a column too
    // far: the message is still the stream's, its rows have no prediction.
    for prob in [
        "",
        r#", {"name": "prob", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 0.5]}"#,
        r#", {"name": "prob", "shape": [2, 2], "datatype": "BF16", "data": [0, 0, 0, 0]}"#,
        r#", {"name": "prob", "shape": [2, 1], "datatype": "FP32", "data": [0.5, 0.5]}"#,
    ] {
        let payload = format!(
            r#"{{"id": "r-2", "outputs": [{{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}}{prob}]}}"#
        );
        assert_eq!(d.decode_message(payload.as_bytes(), None), Ok(2), "{prob}");
        assert_eq!(held(&d), vec![None, None], "{prob}");
    }
    // Protobuf: the same, one decode.
    let response = ModelInferResponse {
        id: "r-3".into(),
        outputs: vec![
            InferOutputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1],
                contents: fp32(&[4.0]),
                ..Default::default()
            },
            InferOutputTensor {
                name: "prob".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                contents: fp32(&[0.5, 0.75]),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(values(&run(&mut d, &response).unwrap(), 0), vec![N(4.0)]);
    assert_eq!((held(&d), d.protocol_id()), (vec![Some(HeldValue::Number(0.75))], Some("r-3")));
}
