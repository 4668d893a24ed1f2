//! Bounded fuzzing (proptest) of the loaders that read untrusted bytes: the config
//! parser, the profile loader and the Arrow IPC decoder. Each must return an error or a
//! value, never panic; mutated valid inputs exercise the deeper paths.

use driftscope::config::Config;
use driftscope::decode::arrow::{ColumnBinding, decode_ipc_message};
use driftscope::stats::{FeatureKind, Profile};
use proptest::prelude::*;
use std::path::Path;

fn valid_profile() -> Vec<u8> {
    use driftscope::stats::ValueSink;
    let specs = vec![
        driftscope::stats::FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
        driftscope::stats::FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
    ];
    let mut b = driftscope::stats::ProfileBuilder::new(specs, 256, 10);
    b.add_records(50);
    for i in 0..50 {
        b.numeric(0, f64::from(i % 7));
        b.category(1, ["a", "b", "c"][i as usize % 3]);
    }
    b.finish("fuzz".into(), "now".into()).to_json()
}

fn valid_ipc() -> Vec<u8> {
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
    ]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

/// A valid input with a few bytes overwritten.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (i, b) in edits {
            bytes[i] = b;
        }
        bytes
    })
}

const CONFIG: &str = r#"
[defaults]
bins = 10
[kafka]
brokers = "127.0.0.1:9092"
[[streams]]
name = "s"
topics = ["t"]
format = "json"
window = { type = "sliding_time", size = "10m", slide = "1m", time = "event", allowed_lateness = "5s" }
event_time_field = "/ts"
reference = { from_stream = 100 }
[[streams.fields]]
name = "x"
kind = "numeric"
[[triggers]]
name = "t"
kind = { type = "webhook", url = "http://127.0.0.1:1/h", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
condition = { dataset_drift = true }
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn config_parser_never_panics(text in "\\PC{0,400}") {
        let _ = Config::from_toml(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn mutated_configs_never_panic(bytes in mutated(CONFIG.as_bytes().to_vec())) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Config::from_toml(text, Path::new("fuzz.toml"));
        }
    }

    #[test]
    fn profile_loader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Profile::from_json(&bytes);
    }

    #[test]
    fn mutated_profiles_are_loaded_consistently_or_refused(bytes in mutated(valid_profile())) {
        // A damaged profile either fails to load or passes validation, never panics.
        if let Ok(profile) = Profile::from_json(&bytes) {
            prop_assert!(profile.validate().is_ok());
        }
    }

    #[test]
    fn arrow_decoder_never_panics(bytes in mutated(valid_ipc())) {
        let bindings = vec![
            ColumnBinding { column: "x".into(), feature: 0, kind: FeatureKind::Numeric },
            ColumnBinding { column: "c".into(), feature: 1, kind: FeatureKind::Categorical },
        ];
        let _ = decode_ipc_message(&bytes, &bindings);
    }
}

#[test]
fn the_seeds_themselves_are_valid() {
    assert!(Config::from_toml(CONFIG, Path::new("seed.toml")).is_ok());
    assert!(Profile::from_json(&valid_profile()).is_ok());
    let bindings = vec![ColumnBinding { column: "x".into(), feature: 0, kind: FeatureKind::Numeric }];
    assert_eq!(decode_ipc_message(&valid_ipc(), &bindings).unwrap()[0].num_rows(), 3);
}

/// An Arrow IPC file whose footer declares a record batch body of 1 TiB: refused before
/// the file reader allocates it (found by the arrow_ipc libFuzzer target, where the
/// allocation aborted the process).
#[test]
fn arrow_file_with_a_block_beyond_the_message_is_refused() {
    let batch = {
        let stream = valid_ipc();
        let reader = arrow::ipc::reader::StreamReader::try_new(&stream[..], None).unwrap();
        reader.into_iter().next().unwrap().unwrap()
    };
    let mut file = Vec::new();
    let mut w = arrow::ipc::writer::FileWriter::try_new(&mut file, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    let bindings = vec![ColumnBinding { column: "x".into(), feature: 0, kind: FeatureKind::Numeric }];
    assert_eq!(decode_ipc_message(&file, &bindings).unwrap()[0].num_rows(), 3);

    // Patch the block's bodyLength (an i64 in the footer, near the end) to 1 TiB.
    let trailer = file.len() - 10;
    let footer_len = i32::from_le_bytes(file[trailer..trailer + 4].try_into().unwrap()) as usize;
    let footer = arrow::ipc::root_as_footer(&file[trailer - footer_len..trailer]).unwrap();
    let body = footer.recordBatches().unwrap().get(0).bodyLength().to_le_bytes();
    let at = (trailer - footer_len..trailer - 8).rev().find(|&i| file[i..i + 8] == body).expect("bodyLength");
    file[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let e = decode_ipc_message(&file, &bindings).unwrap_err();
    assert_eq!(e.reason(), "undecodable_arrow", "{e}");
    // Refused by the footer check, not by a failed allocation.
    assert!(e.to_string().contains("a block lies outside the message"), "{e}");
}
