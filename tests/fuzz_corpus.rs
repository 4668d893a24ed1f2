//! The bounded fuzz run of the test command: every committed libFuzzer input
//! (`fuzz/corpus/<target>/`, the minimised corpus, and `fuzz/regressions/<target>/`,
//! inputs that once crashed) replayed through the very functions the libFuzzer targets
//! call (`fuzz/src/lib.rs`, included here as a module). Runs on stable Rust; growing the
//! corpus needs cargo-fuzz and nightly (`scripts/fuzz.sh`).
//!
//! `write_seed_corpus` (ignored) writes the valid inputs the corpus was grown from;
//! `scripts/fuzz.sh --seed` runs it.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("corpus entry").path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Runs one input, naming the file when its invariants fail.
fn replay(target: &str, run: fn(&[u8]), path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if std::panic::catch_unwind(|| run(&bytes)).is_err() {
        panic!("fuzz target `{target}` fails on {} (see the panic above)", path.display());
    }
}

#[test]
fn every_target_has_a_committed_corpus_and_an_entry_point() {
    for (target, _) in targets::TARGETS {
        let corpus = fuzz_dir().join("corpus").join(target);
        assert!(files(&corpus).len() >= 5, "{}: no corpus (or a tiny one)", corpus.display());
        let entry = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        assert!(entry.is_file(), "{} is missing", entry.display());
    }
}

#[test]
fn committed_corpus_replays_without_a_failure() {
    let mut total = 0;
    for (target, run) in targets::TARGETS {
        for dir in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(dir).join(target)) {
                replay(target, *run, &path);
                total += 1;
            }
        }
    }
    println!("replayed {total} inputs");
}

/// Writes the seed inputs, from the repository's own valid inputs and generated ones,
/// into `fuzz/seeds/<target>/` (or `$DRIFTSCOPE_FUZZ_SEEDS`), each checked to pass its
/// target first.
#[test]
#[ignore = "writes files; run by scripts/fuzz.sh --seed"]
fn write_seed_corpus() {
    let root =
        std::env::var_os("DRIFTSCOPE_FUZZ_SEEDS").map_or_else(|| fuzz_dir().join("seeds"), PathBuf::from);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();

    for (i, m) in seeds::json_messages().into_iter().enumerate() {
        seeds.push(("json_decode", format!("seed-{i:02}.json"), m));
    }
    for (name, m) in seeds::arrow_messages(repo) {
        seeds.push(("arrow_ipc", format!("seed-{name}.arrows"), m));
    }
    for (name, text) in seeds::configs(repo) {
        seeds.push(("config", format!("seed-{name}.toml"), text.into_bytes()));
    }
    for (name, p) in seeds::profiles(repo) {
        seeds.push(("profile", format!("seed-{name}.json"), p));
    }
    for (i, c) in targets::checkpoint_seeds().into_iter().enumerate() {
        seeds.push(("checkpoint", format!("seed-{i}.bin"), c));
    }
    for (name, m) in seeds::oip_messages() {
        seeds.push(("open_inference", format!("seed-{name}"), m));
    }

    for (target, name, bytes) in &seeds {
        let run = targets::TARGETS.iter().find(|(t, _)| t == target).expect("known target").1;
        run(bytes);
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
    println!("{} seeds in {}", seeds.len(), root.display());
}

mod seeds {
    use super::targets;
    use arrow::array::{ArrayRef, BooleanArray, DictionaryArray, Int32Array, LargeStringArray, StringArray};
    use arrow::array::{Float64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Int8Type, Schema};
    use arrow::record_batch::RecordBatch;
    use driftscope::stats::DriftSettings;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    /// Records like the benchmark's, then the spec's awkward cases.
    pub fn json_messages() -> Vec<Vec<u8>> {
        let mut out: Vec<String> = vec![
            r#"{"id":"evt-00000001","ts":"2024-05-01T12:00:01.123Z","f0":0.512,"f1":-3.25,"c0":"alpha","c1":"echo","score":0.73161,"model":{"name":"ranker","version":7},"a/b":12}"#.into(),
            r#"{"ts":1714564800000,"f0":1e3,"f1":12,"c0":"bravo","c1":"golf","score":0.5,"model":{"name":"ranker","version":8}}"#.into(),
            r#"{"ts":"2024-05-01T14:00:00+02:00","f0":null,"c0":null,"model":null}"#.into(),
            r#"{"f0":NaN,"f1":Infinity,"score":-Infinity,"c0":"NaN","u":[NaN,1e400]}"#.into(),
            r#"{"f0":1e400,"f1":-1e400,"score":123456789012345678901234567890,"model":{"version":1e-400}}"#.into(),
            r#"{"f0":"12.5","f1":true,"c0":3,"c1":{"nested":[1,2]},"score":[0.1],"model":"flat"}"#.into(),
            r#"{"c0":"Z\u00fcrich \ud83d\ude00","c1":"\"quoted\"\n","a\/b":2,"f\u0030":4}"#.into(),
            r#"{"f0":1,"f0":2,"c0":"first","c0":"second","ts":"not a time"}"#.into(),
            r#"{"u":{"v":{"w":[[[[{"x":[]}]]]]}},"model":{"version":-0.0,"name":""}}"#.into(),
            "  {\"f0\" : 1 , \"c0\" : \"x\" }\r\n".into(),
            "{}".into(),
            "[1,2,3]".into(),
            "\"a string\"".into(),
            "   ".into(),
            "{\"f0\": 1".into(),
        ];
        out.push(format!("{{\"u\": {}{}, \"f0\": 2}}", "[".repeat(100), "]".repeat(100)));
        out.into_iter().map(String::into_bytes).collect()
    }

    fn ipc_stream(batch: &RecordBatch) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema()).expect("writer");
        w.write(batch).expect("batch");
        w.finish().expect("finish");
        drop(w);
        buf
    }

    fn ipc_file(batch: &RecordBatch) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = arrow::ipc::writer::FileWriter::try_new(&mut buf, &batch.schema()).expect("writer");
        w.write(batch).expect("batch");
        w.finish().expect("finish");
        drop(w);
        buf
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> =
            columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("seed batch")
    }

    /// Generated messages with the target's columns in several types, and the stats
    /// fixtures' reference data as messages (mostly other column names: wrong schema).
    pub fn arrow_messages(repo: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = vec![
            ("rows-0".to_string(), targets::arrow_seed_message(0)),
            ("rows-1".to_string(), targets::arrow_seed_message(1)),
            ("rows-9".to_string(), targets::arrow_seed_message(9)),
        ];
        let typed = batch(vec![
            ("x", Arc::new(Int32Array::from(vec![Some(1), None, Some(-7), Some(i32::MAX)])) as ArrayRef),
            (
                "c",
                Arc::new(
                    vec![Some("a"), Some("b"), None, Some("a")]
                        .into_iter()
                        .collect::<DictionaryArray<Int8Type>>(),
                ),
            ),
            ("y", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false), Some(true)]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(0),
                    Some(1_714_564_800_000),
                    None,
                    Some(-5),
                ])),
            ),
        ]);
        out.push(("typed".into(), ipc_stream(&typed)));
        out.push(("typed-file".into(), ipc_file(&typed)));
        let text = batch(vec![
            ("x", Arc::new(StringArray::from(vec![Some("1.5"), Some("NaN"), Some("x"), None])) as ArrayRef),
            ("c", Arc::new(LargeStringArray::from(vec![Some("é"), Some(""), None, Some("c")]))),
            ("y", Arc::new(Float64Array::from(vec![f64::INFINITY, -0.0, f64::NAN, 1e308]))),
            (
                "ts",
                Arc::new(StringArray::from(vec![Some("2024-05-01T12:00:00Z"), Some("bad"), None, Some("")])),
            ),
        ]);
        out.push(("text".into(), ipc_stream(&text)));
        out.push((
            "typed-sliced".into(),
            ipc_stream(&typed.slice(1, 2)), // written from an offset: exercises slice handling
        ));
        for name in ["normal_shift", "new_categories", "missing_and_nonfinite"] {
            let path = repo.join("tests/fixtures/stats").join(name).join("reference.csv");
            let file = driftscope::ingest::files::read_data_file(&path).expect("fixture");
            if let Some(first) = file.batches.first() {
                out.push((format!("fixture-{name}"), ipc_stream(&first.slice(0, first.num_rows().min(20)))));
            }
        }
        out
    }

    /// The repository's configs: the deploy file, the fixtures' and the README's.
    pub fn configs(repo: &Path) -> Vec<(String, String)> {
        let read = |p: &str| std::fs::read_to_string(repo.join(p)).expect("config seed");
        let mut out = vec![
            ("deploy".to_string(), read("deploy/driftscope.toml")),
            ("fixture-overrides".to_string(), read("tests/fixtures/stats/overrides/config.toml")),
            ("fixture-category-cap".to_string(), read("tests/fixtures/stats/category_cap/config.toml")),
        ];
        let readme = read("README.md");
        for (i, block) in readme.split("```toml\n").skip(1).enumerate() {
            let body = block.split("```").next().unwrap_or_default();
            out.push((format!("readme-{i}"), body.to_string()));
        }
        out.push((
            "all-windows".into(),
            r#"
[defaults]
bins = 12
cdf_resolution = 512
min_samples = 10
[http]
listen = "127.0.0.1:0"
[[streams]]
name = "a"
topics = ["t1", "t2"]
format = "arrow_ipc"
window = { type = "sliding_count", size = 100, slide = 25 }
reference = { from_stream = 10 }
[[streams.fields]]
name = "x"
path = "col_x"
kind = "numeric"
primary_metric = "wasserstein"
threshold = 0.2
[[streams]]
name = "b"
topics = ["t3"]
format = "json"
event_time_field = "/meta/ts"
window = { type = "tumbling_time", size = "1h", time = "event", allowed_lateness = "30s" }
reference = { profile = "ref.profile" }
[[streams.fields]]
name = "user/age"
path = "/user/age"
bins = 20
[[streams]]
name = "c"
topics = ["t4"]
format = "json"
window = { type = "sliding_time", size = "10m", slide = "1m" }
reference = { data = "ref.parquet" }
"#
            .into(),
        ));
        out
    }

    /// Open Inference Protocol messages with the target's tensors (`x`, `m`, `c`, `ts`):
    /// protobuf requests and responses encoded by prost from the generated types
    /// (typed contents, raw contents, every datatype), v2 and v1 JSON, and the bad
    /// cases the decoder refuses.
    pub fn oip_messages() -> Vec<(String, Vec<u8>)> {
        use driftscope::decode::open_inference::proto::model_infer_request::InferInputTensor;
        use driftscope::decode::open_inference::proto::model_infer_response::InferOutputTensor;
        use driftscope::decode::open_inference::proto::{
            InferTensorContents, ModelInferRequest, ModelInferResponse,
        };
        use prost::Message as _;
        let input = |name: &str, datatype: &str, shape: &[i64], contents: Option<InferTensorContents>| {
            InferInputTensor {
                name: name.into(),
                datatype: datatype.into(),
                shape: shape.to_vec(),
                parameters: Default::default(),
                contents,
            }
        };
        let request = |inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>| {
            ModelInferRequest {
                model_name: "m".into(),
                id: "req-1".into(),
                inputs,
                raw_input_contents: raw.into_iter().map(Into::into).collect(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let contents = |f: fn(&mut InferTensorContents)| {
            let mut c = InferTensorContents::default();
            f(&mut c);
            Some(c)
        };
        let typed = request(
            vec![
                input("x", "FP32", &[3], contents(|c| c.fp32_contents = vec![0.5, -1.0, f32::NAN])),
                input("m", "INT64", &[3, 2], contents(|c| c.int64_contents = vec![1, 2, 3, 4, 5, 6])),
                input(
                    "c",
                    "BYTES",
                    &[3, 1],
                    contents(|c| c.bytes_contents = vec!["a".into(), "\u{e9}".into(), vec![0xff].into()]),
                ),
                input("ts", "INT64", &[3], contents(|c| c.int64_contents = vec![1_714_564_800_000, 0, -1])),
            ],
            vec![],
        );
        let le = |values: &[f64]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        let mut bytes_raw = Vec::new();
        for s in ["2024-05-01T12:00:00Z", "later"] {
            bytes_raw.extend((s.len() as u32).to_le_bytes());
            bytes_raw.extend(s.as_bytes());
        }
        let raw = request(
            vec![
                input("x", "FP64", &[2], None),
                input("m", "UINT8", &[2, 2], None),
                input("c", "BOOL", &[2], None),
                input("ts", "BYTES", &[2], None),
            ],
            vec![le(&[1.0, 2.0]), vec![1, 2, 3, 4], vec![1, 0], bytes_raw],
        );
        let half = request(vec![input("x", "FP16", &[2, 1], None)], vec![vec![0x00, 0x3c, 0x00, 0xc0]]);
        let response = ModelInferResponse {
            model_name: "m".into(),
            outputs: vec![InferOutputTensor {
                name: "x".into(),
                datatype: "FP64".into(),
                shape: vec![2, 1],
                parameters: Default::default(),
                contents: None,
            }],
            raw_output_contents: vec![le(&[0.25, 0.75]).into()],
            ..Default::default()
        }
        .encode_to_vec();
        let mut out: Vec<(String, Vec<u8>)> = vec![
            ("typed.pb".into(), typed.clone()),
            ("raw.pb".into(), raw),
            ("fp16.pb".into(), half),
            ("response.pb".into(), response),
            ("truncated.pb".into(), typed[..typed.len() / 2].to_vec()),
            (
                "short-data.pb".into(),
                request(vec![input("x", "FP32", &[4], contents(|c| c.fp32_contents = vec![1.0]))], vec![]),
            ),
            ("bf16.pb".into(), request(vec![input("x", "BF16", &[1], None)], vec![vec![0, 0]])),
            (
                "wrong-field.pb".into(),
                request(vec![input("x", "FP32", &[1], contents(|c| c.int_contents = vec![1]))], vec![]),
            ),
            (
                "huge-shape.pb".into(),
                request(vec![input("m", "FP32", &[1 << 62, 2], None)], vec![vec![0; 8]]),
            ),
        ];
        let json = [
            r#"{"id": "j", "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, null]},
               {"name": "m", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, "4"]]},
               {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
               {"name": "ts", "shape": [2], "datatype": "BYTES", "data": ["2024-05-01T12:00:00Z", 5]}]}"#,
            r#"{"outputs": [{"name": "x", "shape": [1, 1], "datatype": "BOOL", "data": [true]}]}"#,
            r#"{"instances": [{"x": 1, "m": [1, 2], "c": "a"}, {"x": null, "c": 3, "ts": "2024-05-01T12:00:00Z"}]}"#,
            r#"{"instances": [[1, 2], [3, 4]]}"#,
            r#"{"predictions": [0.1, 0.9]}"#,
            r#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#,
            r#"{"inputs": [{"name": "x"}]}"#,
        ];
        for (i, text) in json.iter().enumerate() {
            out.push((format!("{i:02}.json"), text.as_bytes().to_vec()));
        }
        out
    }

    /// Profiles built by the real builder from the stats fixtures' reference data.
    pub fn profiles(repo: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let settings = DriftSettings { cdf_resolution: 256, max_categories: 4, ..DriftSettings::default() };
        for name in
            ["normal_shift", "new_categories", "missing_and_nonfinite", "constant", "ties", "one_value"]
        {
            let path = repo.join("tests/fixtures/stats").join(name).join("reference.csv");
            let file = driftscope::ingest::files::read_data_file(&path).expect("fixture");
            let (profile, _) = driftscope::offline::build_profile(&file, &settings, &BTreeMap::new());
            out.push((name.to_string(), profile.to_json()));
        }
        let empty = driftscope::stats::ProfileBuilder::new(
            vec![driftscope::stats::FeatureSpec {
                name: "x".into(),
                kind: driftscope::stats::FeatureKind::Numeric,
                bins: 10,
            }],
            256,
            10,
        )
        .finish("empty".into(), "2024-05-01T00:00:00Z".into());
        out.push(("empty".into(), empty.to_json()));
        out
    }
}
