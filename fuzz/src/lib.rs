//! The bodies of driftscope's fuzz targets: one function per target, taking the raw
//! input bytes and panicking only when an invariant is broken.
//!
//! Two callers share them, so that what libFuzzer explores and what the test suite
//! replays are the very same code:
//! * `fuzz/fuzz_targets/<target>.rs`, the libFuzzer entry points run by `cargo fuzz`
//!   (nightly, see `scripts/fuzz.sh`);
//! * `tests/fuzz_corpus.rs` in the main crate, which includes this file as a module
//!   (`#[path]`) and replays every committed corpus and regression input on stable Rust.
//!
//! Only driftscope's public API, `arrow`, `serde_json` and `toml` are used here, because
//! both crates must compile this file with their own dependencies.
//!
//! # Adding a target (as `checkpoint` was)
//! 1. Here: `pub fn checkpoint(data: &[u8])` that feeds `data` to the loader and
//!    asserts its contract (a typed error naming the problem, or a value that passes
//!    the loader's own validation and survives a save/load round trip), and add it to
//!    [`TARGETS`].
//! 2. `fuzz/fuzz_targets/checkpoint.rs`: a copy of `profile.rs` calling
//!    `driftscope_fuzz::checkpoint`, and a `[[bin]]` entry in `fuzz/Cargo.toml`.
//! 3. Seeds in `fuzz/corpus/checkpoint/` (a few valid checkpoints written by the real
//!    code), then `scripts/fuzz.sh 300 checkpoint` grows and minimises the corpus.
//!
//! `tests/fuzz_corpus.rs` and `scripts/fuzz.sh` pick the new target up from
//! [`TARGETS`] and `fuzz_targets/` respectively.

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use driftscope::config::{Config, ConfigError, MessageFormat};
use driftscope::decode::arrow::{ColumnBinding, decode_ipc_message, event_times_ms, fold_batch};
use driftscope::decode::json::{JsonDecoder, JsonField, RecordError};
use driftscope::decode::open_inference::{OpenInference, REASONS as OIP_REASONS, TensorField};
use driftscope::stats::report::WindowInfo;
use driftscope::stats::sketch::FeatureSketch;
use driftscope::stats::{
    DriftSettings, FeatureKind, FeatureSpec, Profile, ProfileBuilder, Reference, ValueSink, WindowSketch,
    score_window,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A target's body: panics when an invariant fails on `data`.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz_targets/` file and `fuzz/corpus/` folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("json_decode", json_decode),
    ("arrow_ipc", arrow_ipc),
    ("config", config),
    ("profile", profile),
    ("checkpoint", checkpoint),
    ("open_inference", open_inference),
    ("avro", avro),
    ("protobuf", protobuf),
];

/// Settings for the fuzzed references: one value is enough to be scored, so every
/// input that yields a value reaches the metrics, not just those with 100 rows.
fn fuzz_settings() -> DriftSettings {
    DriftSettings { min_samples: 1, cdf_resolution: 256, max_categories: 8, ..DriftSettings::default() }
}

// ---------------------------------------------------------------------------------
// JSON records.

/// A cut-down version of the benchmark's record shape (`benches/json_decode.rs`): a few
/// numeric and categorical top-level fields, a nested object, and a key that needs a
/// pointer escape. Kept small so that the fuzzer finds the monitored keys often.
pub const JSON_FIELDS: &[(&str, FeatureKind)] = &[
    ("/f0", FeatureKind::Numeric),
    ("/f1", FeatureKind::Numeric),
    ("/c0", FeatureKind::Categorical),
    ("/c1", FeatureKind::Categorical),
    ("/score", FeatureKind::Numeric),
    ("/model/version", FeatureKind::Numeric),
    ("/model/name", FeatureKind::Categorical),
    ("/a~1b", FeatureKind::Numeric),
];

/// The event-time pointer of the JSON target.
pub const JSON_EVENT_TIME: &str = "/ts";

/// One call a decoder made on a sink, with floats as bits so NaN compares equal to itself.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Records(u64),
    Numeric(usize, u64),
    Category(usize, String),
    Missing(usize),
    Invalid(usize),
}

#[derive(Default)]
struct Recorder(Vec<Call>);

impl ValueSink for Recorder {
    fn add_records(&mut self, n: u64) {
        self.0.push(Call::Records(n));
    }
    fn numeric(&mut self, feature: usize, x: f64) {
        self.0.push(Call::Numeric(feature, x.to_bits()));
    }
    fn category(&mut self, feature: usize, value: &str) {
        self.0.push(Call::Category(feature, value.to_owned()));
    }
    fn missing(&mut self, feature: usize) {
        self.0.push(Call::Missing(feature));
    }
    fn invalid(&mut self, feature: usize) {
        self.0.push(Call::Invalid(feature));
    }
}

impl Call {
    fn feature(&self) -> Option<usize> {
        match self {
            Call::Records(_) => None,
            Call::Numeric(f, _) | Call::Category(f, _) | Call::Missing(f) | Call::Invalid(f) => Some(*f),
        }
    }
}

/// What one message gave: the decode result, the sink calls and the event time.
type Decoded = (Result<(), RecordError>, Vec<Call>, Option<Result<i64, ()>>);

/// Decodes, applies and reads the event time: what the monitor does per message.
fn decode_once(decoder: &mut JsonDecoder, payload: &[u8]) -> Decoded {
    let result = decoder.decode(payload);
    let mut sink = Recorder::default();
    decoder.apply(&mut sink);
    (result, sink.0, decoder.event_time_ms())
}

/// `JsonDecoder` on arbitrary bytes. Invariants:
/// * no panic, and an error is one of the three typed reasons;
/// * a rejected record reaches no sink and has no event time; an accepted one is one
///   record with exactly one call per field, in configuration order;
/// * decoding is a function of the payload: the same bytes decoded again after another
///   record give the same calls (no state leaks through the reused buffers);
/// * agreement with serde_json: every payload serde_json reads as an object is accepted,
///   every other JSON value is `not_an_object`, and anything accepted that serde_json's
///   grammar check refuses contains one of the spec's non-standard tokens
///   (`NaN`/`Infinity`), the only extension the decoder makes to the grammar.
pub fn json_decode(payload: &[u8]) {
    let fields: Vec<JsonField> = JSON_FIELDS
        .iter()
        .enumerate()
        .map(|(feature, (pointer, kind))| JsonField { pointer: (*pointer).into(), feature, kind: *kind })
        .collect();
    let mut decoder = JsonDecoder::new(&fields, Some(JSON_EVENT_TIME)).expect("the target's own fields");
    let first = decode_once(&mut decoder, payload);
    let (result, calls, event_time) = &first;
    match result {
        Ok(()) => {
            assert_eq!(calls.first(), Some(&Call::Records(1)), "an accepted record counts once");
            let features: Vec<Option<usize>> = calls[1..].iter().map(Call::feature).collect();
            let expected: Vec<Option<usize>> = (0..fields.len()).map(Some).collect();
            assert_eq!(features, expected, "one call per field, in configuration order");
        }
        Err(e) => {
            assert!(calls.is_empty(), "a rejected record reached the sink: {calls:?}");
            assert_eq!(*event_time, None, "a rejected record has no event time");
            assert!(["empty", "malformed_json", "not_an_object"].contains(&e.reason()), "{e}");
        }
    }

    // The same bytes again, after a record that fills every scratch buffer.
    let other = br#"{"f0": 1.5, "f1": "x", "c0": "red", "c1": 7, "score": 0.25,
        "model": {"version": 3, "name": "ranker"}, "a/b": -1, "ts": "2024-05-01T12:00:00Z"}"#;
    assert_eq!(decoder.decode(other), Ok(()));
    assert_eq!(decode_once(&mut decoder, payload), first, "decoding depends on the previous record");

    let only_whitespace = payload.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if only_whitespace {
        assert_eq!(*result, Err(RecordError::Empty));
    }
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(_)) => {
            assert_eq!(*result, Ok(()), "serde_json reads an object the decoder refused");
        }
        Ok(_) => assert_eq!(*result, Err(RecordError::NotAnObject)),
        Err(_) => {}
    }
    if result.is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        let has = |token: &[u8]| payload.windows(token.len()).any(|w| w == token);
        assert!(
            has(b"NaN") || has(b"Infinity"),
            "accepted a record that is not JSON and has no NaN/Infinity token"
        );
    }
}

// ---------------------------------------------------------------------------------
// Arrow IPC messages.

/// The columns the Arrow target monitors: a numeric, a categorical, and a numeric one
/// that the seeds send as text (the parse-numbers-from-strings path). Event time: `ts`.
pub fn arrow_bindings() -> Vec<ColumnBinding> {
    vec![
        ColumnBinding { column: "x".into(), feature: 0, kind: FeatureKind::Numeric },
        ColumnBinding { column: "c".into(), feature: 1, kind: FeatureKind::Categorical },
        ColumnBinding { column: "y".into(), feature: 2, kind: FeatureKind::Numeric },
    ]
}

/// The event-time column of the Arrow target.
pub const ARROW_EVENT_TIME: &str = "ts";

/// A reference for the Arrow target's columns, built once from a few values through
/// the same builder `reference build` uses.
fn arrow_reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let settings = fuzz_settings();
        let specs = vec![
            FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
            FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
            FeatureSpec { name: "y".into(), kind: FeatureKind::Numeric, bins: 10 },
        ];
        let mut builder = ProfileBuilder::new(specs, settings.cdf_resolution, settings.max_categories);
        builder.add_records(200);
        for i in 0..200u32 {
            builder.numeric(0, f64::from(i % 17) - 8.0);
            builder.category(1, ["a", "b", "c", "d"][i as usize % 4]);
            builder.numeric(2, f64::from(i) * 0.5);
        }
        let profile = builder.finish("fuzz".into(), "2024-05-01T00:00:00Z".into());
        Reference::new(profile, settings, &BTreeMap::new()).expect("the target's own reference")
    })
}

/// Per feature: (values counted, non-finite, missing, invalid).
fn tallies(sketch: &WindowSketch) -> Vec<(u64, u64, u64, u64)> {
    sketch
        .features
        .iter()
        .map(|f| match f {
            FeatureSketch::Numeric(s) => (s.count(), s.non_finite, s.missing, s.invalid),
            FeatureSketch::Categorical(s) => (s.count(), 0, s.missing, s.invalid),
        })
        .collect()
}

/// `decode_ipc_message`, then the event times and the fold into a window sketch, then
/// scoring, as `run` does for an Arrow stream. Invariants:
/// * no panic escapes (the decoder catches arrow's own panics on corrupt buffers), and
///   an error is one of the two typed reasons;
/// * every row of a decoded batch is accounted for exactly once per feature (a value,
///   a non-finite, a missing or an invalid), and folding a batch in two slices (as the
///   monitor does at pane boundaries) counts the same as folding it whole;
/// * one event time slot per row; the window scores and its report serialises.
pub fn arrow_ipc(payload: &[u8]) {
    let bindings = arrow_bindings();
    let reference = arrow_reference();
    let batches = match decode_ipc_message(payload, &bindings) {
        Ok(batches) => batches,
        Err(e) => {
            assert!(["undecodable_arrow", "wrong_schema"].contains(&e.reason()), "{e}");
            return;
        }
    };
    let mut whole = reference.new_window();
    let mut sliced = reference.new_window();
    let mut rows = 0u64;
    for batch in &batches {
        assert_eq!(event_times_ms(batch, ARROW_EVENT_TIME).len(), batch.num_rows());
        fold_batch(batch, &bindings, &mut whole);
        let cut = batch.num_rows() / 2;
        fold_batch(&batch.slice(0, cut), &bindings, &mut sliced);
        fold_batch(&batch.slice(cut, batch.num_rows() - cut), &bindings, &mut sliced);
        rows += batch.num_rows() as u64;
    }
    assert_eq!(whole.records, rows);
    assert_eq!(sliced.records, rows);
    let counts = tallies(&whole);
    for (feature, (values, non_finite, missing, invalid)) in counts.iter().enumerate() {
        assert_eq!(values + non_finite + missing + invalid, rows, "feature {feature}: rows lost or doubled");
    }
    assert_eq!(tallies(&sliced), counts, "folding in slices differs from folding whole");
    let report = score_window(reference, &whole, WindowInfo::default());
    assert_eq!(report.window.records, rows);
    for f in &report.features {
        assert!((0.0..=1.0).contains(&f.missing_share), "{}: missing_share {}", f.name, f.missing_share);
    }
    serde_json::to_vec(&report).expect("a report serialises");
}

/// A small valid Arrow IPC stream with the target's columns, for seeds and tests.
pub fn arrow_seed_message(rows: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
        Field::new("y", DataType::Utf8, true),
        Field::new(ARROW_EVENT_TIME, DataType::Int64, true),
    ]));
    let x: Float64Array =
        (0..rows).map(|i| if i % 5 == 4 { None } else { Some(i as f64 * 0.75 - 2.0) }).collect();
    let c: StringArray =
        (0..rows).map(|i| if i % 7 == 6 { None } else { Some(["a", "b", "z"][i % 3]) }).collect();
    let y: StringArray =
        (0..rows).map(|i| Some(if i % 4 == 3 { "n/a".to_string() } else { i.to_string() })).collect();
    let ts: Int64Array = (0..rows).map(|i| Some(1_714_564_800_000 + i as i64 * 1000)).collect();
    let columns: Vec<ArrayRef> = vec![Arc::new(x), Arc::new(c), Arc::new(y), Arc::new(ts)];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("seed batch");
    let mut buf = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).expect("seed writer");
    writer.write(&batch).expect("seed batch written");
    writer.finish().expect("seed stream finished");
    drop(writer);
    buf
}

// ---------------------------------------------------------------------------------
// The configuration.

/// `Config::from_toml` on arbitrary text, then what start-up does with a valid config.
/// Invariants:
/// * no panic; an error is a syntax or validation error naming the file (never an I/O
///   error: nothing was read);
/// * a valid config redacts, prints (`config check`) and yields its overrides; each of
///   its JSON streams compiles a decoder for its fields or refuses them with a typed
///   error (as `run` does at start-up);
/// * a printed valid config without triggers or `$` reads back to the same printout
///   (trigger secrets are never printed, and `${ENV}` expansion is not idempotent).
pub fn config(data: &[u8]) {
    // The loader reads the file as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let config = match Config::from_toml(text, path) {
        Ok(config) => config,
        Err(e @ ConfigError::Read { .. }) => panic!("an I/O error from parsing text: {e}"),
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.toml: "), "the error does not name the file: {e}");
            return;
        }
    };
    let _ = config.overrides();
    let printed = toml::to_string_pretty(&config.redacted());
    for stream in config.streams.iter().filter(|s| s.format == MessageFormat::Json) {
        let fields: Vec<JsonField> = stream
            .fields
            .iter()
            .enumerate()
            .map(|(feature, f)| JsonField {
                pointer: f
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("/{}", f.name.replace('~', "~0").replace('/', "~1"))),
                feature,
                kind: f.kind.unwrap_or(FeatureKind::Numeric),
            })
            .collect();
        let _ = JsonDecoder::new(&fields, stream.event_time_field.as_deref());
    }
    if let Ok(printed) = printed
        && config.triggers.is_empty()
        && !text.contains('$')
    {
        let again = Config::from_toml(&printed, path)
            .unwrap_or_else(|e| panic!("a printed config does not read back: {e}\n{printed}"));
        let reprinted = toml::to_string_pretty(&again.redacted()).expect("printed once already");
        assert_eq!(reprinted, printed, "a printed config reads back differently");
    }
}

// ---------------------------------------------------------------------------------
// Reference profiles.

/// `Profile::from_json` on arbitrary bytes, then what `run` and `score` do with a
/// loaded profile: a `Reference` for scoring, a window sketch fed with values at and
/// around the profile's own edges and categories, and a scored report. Invariants:
/// * no panic, and errors are typed (`ProfileError`);
/// * a loaded profile passes its own validation and survives a save/load round trip;
/// * a reference can be built from any loaded profile with no overrides, and scoring a
///   window against it yields no NaN score and shares in [0, 1].
pub fn profile(data: &[u8]) {
    let Ok(profile) = Profile::from_json(data) else {
        return;
    };
    profile.validate().expect("a loaded profile is valid");
    let saved = profile.to_json();
    let again = Profile::from_json(&saved).expect("a saved profile loads");
    assert_eq!(again, profile, "a profile changed in a save/load round trip");

    // A loaded calibration maps every score, however odd, into [0, 1], monotonically.
    if let Some(c) = profile.model.as_ref().and_then(|m| m.calibration.as_ref()) {
        let mut probes: Vec<f64> = c.x.iter().flat_map(|&x| [x, x - 1e-9, x + 1e-9]).collect();
        probes.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, 0.5, 1.0, 2.0]);
        for &s in &probes {
            let p = c.apply(s);
            assert!((0.0..=1.0).contains(&p), "calibrated {s} to {p}");
        }
        let finite: Vec<f64> = probes.iter().copied().filter(|s| s.is_finite()).collect();
        let mut sorted = finite.clone();
        sorted.sort_by(f64::total_cmp);
        let mapped: Vec<f64> = sorted.iter().map(|&s| c.apply(s)).collect();
        assert!(mapped.windows(2).all(|w| w[0] <= w[1]), "calibration not monotone: {mapped:?}");
    }
    let mut settings = fuzz_settings();
    settings.cdf_resolution = profile.cdf_resolution;
    let reference = match Reference::new(profile, settings, &BTreeMap::new()) {
        Ok(reference) => reference,
        Err(e) => panic!("a valid profile makes no reference: {e}"),
    };
    let mut window = reference.new_window();
    for (i, f) in reference.profile.features.iter().enumerate() {
        match &f.stats {
            driftscope::stats::profile::FeatureStats::Numeric(p) => {
                let probes = [p.min, p.max, p.mean, p.mean + p.std, f64::NAN, f64::MAX, -f64::MAX];
                for x in probes.iter().chain(&p.bin_edges).chain(p.grid_edges.iter().take(64)) {
                    window.add_records(1);
                    window.numeric(i, *x);
                }
            }
            driftscope::stats::profile::FeatureStats::Categorical(p) => {
                for c in p.categories.iter().take(64) {
                    window.add_records(1);
                    window.category(i, &c.name);
                }
                window.add_records(2);
                window.category(i, "a category the reference never saw");
                window.missing(i);
            }
        }
    }
    let report = score_window(&reference, &window, WindowInfo::default());
    for f in &report.features {
        assert!((0.0..=1.0).contains(&f.missing_share), "{}: missing_share {}", f.name, f.missing_share);
        // Infinite scores are possible and decided as drift (a value near f64::MAX
        // against a reference std near the floor overflows wasserstein); NaN never is,
        // as it compares false with every threshold and would hide drift.
        for (metric, score) in &f.scores {
            assert!(!score.is_nan(), "{}: {metric} is NaN", f.name);
        }
    }
    serde_json::to_vec(&report).expect("a report serialises");
}

// ---------------------------------------------------------------------------------
// Checkpoints.

/// The checkpoint loader. The first byte picks what the rest is: 0, a whole file
/// (header checks: magic, version, length, checksum); otherwise a payload framed with a
/// valid header, so the fuzzer reaches the MessagePack decoder and the restore checks
/// past the checksum. Contract: a typed error naming the file, or a checkpoint that
/// encodes and decodes to the same, whose open windows either restore onto the
/// reference they fit (and snapshot back to the same state) or are refused by message.
pub fn checkpoint(data: &[u8]) {
    use driftscope::monitor::checkpoint::{self as ckpt, CheckpointError};
    use driftscope::stats::window::{PaneClock, WindowSpec, Windower};
    let Some((&mode, rest)) = data.split_first() else { return };
    let path = Path::new("/state/checkpoint.bin");
    let bytes = if mode == 0 { rest.to_vec() } else { ckpt::frame(rest) };
    let saved = match ckpt::decode(path, &bytes) {
        Ok(saved) => saved,
        Err(e) => {
            assert!(e.to_string().contains("/state/checkpoint.bin"), "error does not name the file: {e}");
            if mode != 0 {
                assert!(
                    matches!(e, CheckpointError::Corrupt { .. }),
                    "a framed payload is only ever corrupt: {e}"
                );
            }
            return;
        }
    };
    let again = ckpt::encode(&saved).expect("a decoded checkpoint encodes");
    let back = ckpt::decode(path, &again).expect("and decodes again");
    assert_eq!(back.sources, saved.sources);
    assert_eq!(back.streams.len(), saved.streams.len());
    let reference = arrow_reference();
    for stream in &saved.streams {
        let _ = stream.recent.iter().map(|r| r.window.index).max();
        let _ = saved.open_records();
        let Some(state) = &stream.windower else { continue };
        for spec in [
            WindowSpec { clock: PaneClock::Records(10), panes_per_window: 1 },
            WindowSpec { clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 0 }, panes_per_window: 3 },
        ] {
            let mut windower = Windower::new(spec);
            if windower.restore(reference, state).is_ok() {
                assert_eq!(&windower.snapshot(), state, "a restored windower snapshots back to its state");
            }
        }
    }
}

/// Seeds for the `checkpoint` corpus: checkpoints the real code writes (empty, with
/// open windows on the fuzz reference, with positions), whole (mode 0) and as payloads.
pub fn checkpoint_seeds() -> Vec<Vec<u8>> {
    use driftscope::monitor::checkpoint::{self as ckpt, Checkpoint, SourcePosition, StreamCheckpoint};
    use driftscope::stats::window::{PaneClock, WindowSpec, Windower};
    let reference = arrow_reference();
    let mut windower = Windower::new(WindowSpec { clock: PaneClock::Records(10), panes_per_window: 1 });
    if let Ok(pane) = windower.pane_for(0, reference) {
        pane.cover(0, 7, 1_700_000_000_000);
        pane.sketch.add_records(3);
        for (feature, f) in reference.features.iter().enumerate() {
            match f.kind {
                FeatureKind::Numeric => pane.sketch.numeric(feature, 1.5),
                FeatureKind::Categorical => pane.sketch.category(feature, "new-category"),
            }
            pane.sketch.missing(feature);
        }
    }
    let with_windows = Checkpoint {
        written_at_ms: 1_700_000_000_000,
        sources: vec![SourcePosition { topic: "t".into(), partition: 0, stream: "s".into(), position: 8 }],
        streams: vec![StreamCheckpoint {
            name: "s".into(),
            window: "Records(10) x 1 pane(s)".into(),
            reference: 1,
            windower: Some(windower.snapshot()),
            recent: Vec::new(),
            latest_distributions: None,
            sequential: Default::default(),
            labels: None,
        }],
    };
    let empty = Checkpoint { written_at_ms: 0, sources: Vec::new(), streams: Vec::new() };
    let mut seeds = Vec::new();
    for checkpoint in [empty, with_windows] {
        let file = ckpt::encode(&checkpoint).expect("encodes");
        let mut whole = vec![0u8];
        whole.extend_from_slice(&file);
        seeds.push(whole);
        let mut payload = vec![1u8];
        payload.extend_from_slice(&file[24..]);
        seeds.push(payload);
        // Cut short, as by a crash mid-write of a non-atomic copy.
        seeds.push([&[0u8][..], &file[..file.len() / 2]].concat());
    }
    seeds
}

// ---------------------------------------------------------------------------------
// Open Inference Protocol messages.

/// The tensors the `open_inference` target monitors: a one-column numeric tensor `x`,
/// columns 1 and 0 of a matrix `m` (numeric and categorical), a categorical `c`.
/// Event time: tensor `ts`.
pub fn oip_fields() -> Vec<TensorField> {
    let field =
        |feature, kind, tensor: &str, column| TensorField { feature, kind, tensor: tensor.into(), column };
    vec![
        field(0, FeatureKind::Numeric, "x", None),
        field(1, FeatureKind::Numeric, "m", Some(1)),
        field(2, FeatureKind::Categorical, "m", Some(0)),
        field(3, FeatureKind::Categorical, "c", None),
    ]
}

/// The event-time tensor of the `open_inference` target.
pub const OIP_EVENT_TIME: &str = "ts";

fn oip_decoder(message: driftscope::config::InferenceMessage) -> OpenInference {
    let config = driftscope::config::OpenInferenceConfig {
        message,
        encoding: driftscope::config::InferenceEncoding::Auto,
        columns: BTreeMap::new(),
    };
    OpenInference::new(&config, Some(OIP_EVENT_TIME), oip_fields())
}

/// What one message gave: rows or the refusal's reason, the sink calls, event times.
type OipDecoded = (Result<usize, &'static str>, Vec<Call>, Vec<Option<Result<i64, ()>>>);

fn oip_decode_once(decoder: &mut OpenInference, payload: &[u8]) -> OipDecoded {
    let result = decoder.decode_message(payload, Some(b"key")).map_err(|(reason, _)| reason);
    let mut sink = Recorder::default();
    // Past the held rows on purpose: the fold must clamp.
    decoder.fold(0..decoder.rows() + 3, &mut sink);
    let times = (0..decoder.rows()).map(|row| decoder.event_time_ms(row)).collect();
    (result, sink.0, times)
}

/// `OpenInference` on arbitrary bytes, read as a request and as a response. Invariants:
/// * no panic; a refusal is one of the declared reasons, holds no rows and reaches no
///   sink;
/// * memory is bounded by the message: no more rows than payload bytes;
/// * an accepted message of n rows is `add_records(n)`, then n calls per field in field
///   order;
/// * decoding is a function of the payload: the same bytes again, after a message that
///   fills every buffer, give the same rows, calls and event times.
pub fn open_inference(payload: &[u8]) {
    use driftscope::config::InferenceMessage;
    let other = br#"{"id": "r", "inputs": [
        {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, null]},
        {"name": "m", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
        {"name": "c", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "ts", "shape": [2], "datatype": "INT64", "data": [1714564800000, 0]}],
        "outputs": [
        {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.5, null]}]}"#;
    for message in [InferenceMessage::Request, InferenceMessage::Response] {
        let mut decoder = oip_decoder(message);
        let first = oip_decode_once(&mut decoder, payload);
        let (result, calls, times) = &first;
        match result {
            Ok(rows) => {
                assert!(*rows <= payload.len(), "{rows} rows from {} bytes", payload.len());
                assert_eq!(calls.first(), Some(&Call::Records(*rows as u64)), "the rows are counted once");
                if *rows > 0 {
                    let features: Vec<Option<usize>> = calls[1..].iter().map(Call::feature).collect();
                    let expected: Vec<Option<usize>> =
                        (0..oip_fields().len()).flat_map(|f| std::iter::repeat_n(Some(f), *rows)).collect();
                    assert_eq!(features, expected, "n calls per field, in field order");
                }
                assert_eq!(times.len(), *rows);
            }
            Err(reason) => {
                assert!(OIP_REASONS.contains(reason), "undeclared reason {reason}");
                assert_eq!(decoder.rows(), 0, "a refused message holds no rows");
                assert_eq!(calls, &vec![Call::Records(0)], "a refused message reached the sink");
            }
        }
        assert_eq!(decoder.decode_message(other, None).map_err(|(r, _)| r), Ok(2));
        assert_eq!(oip_decode_once(&mut decoder, payload), first, "decoding depends on the previous message");
    }
}
// Confluent-framed Avro and Protobuf.

/// The Avro target's schemas by id: 1 exercises every type (nested record in a
/// nullable union, map, array, enum, fixed, bytes, a timestamp), 2 is recursive.
pub const AVRO_SCHEMAS: &[(u32, &str)] = &[
    (
        1,
        r#"{"type":"record","name":"F","namespace":"fz","fields":[
        {"name":"id","type":"string"},
        {"name":"age","type":"int"},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"user","type":["null",{"type":"record","name":"U","fields":[
            {"name":"country","type":"string"},
            {"name":"extra","type":{"type":"map","values":"double"}}]}]},
        {"name":"income","type":["null","double"]},
        {"name":"plan","type":{"type":"enum","name":"P","symbols":["FREE","PRO"]}},
        {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
        {"name":"flag","type":"boolean"},
        {"name":"ratio","type":"float"},
        {"name":"hash","type":{"type":"fixed","name":"H","size":4}},
        {"name":"blob","type":"bytes"},
        {"name":"nulls","type":{"type":"array","items":"null"}}]}"#,
    ),
    (
        2,
        r#"{"type":"record","name":"L","fields":[{"name":"age","type":"long"},
        {"name":"next","type":["null","L"]}]}"#,
    ),
];

/// The monitored paths of the Avro target (and of the Protobuf one).
pub const CONFLUENT_FIELDS: &[(&str, FeatureKind)] = &[
    ("age", FeatureKind::Numeric),
    ("/user/country", FeatureKind::Categorical),
    ("income", FeatureKind::Numeric),
    ("plan", FeatureKind::Categorical),
    ("flag", FeatureKind::Categorical),
    ("ratio", FeatureKind::Numeric),
    ("/next/next/age", FeatureKind::Numeric),
    ("hash", FeatureKind::Categorical),
];

/// The Protobuf target's schema (id 1; `Features` is message index [1]). The base64
/// `FileDescriptorProto` form only changes how the schema is compiled, not how
/// messages are read; its unit and end-to-end tests cover it.
pub const PROTOBUF_SCHEMA: &str = r#"
syntax = "proto3";
package fz;
import "google/protobuf/timestamp.proto";
message Other { int32 unused = 1; }
message Features {
  string id = 1;
  int64 age = 2;
  User user = 3;
  optional double income = 4;
  Plan plan = 5;
  repeated string tags = 6;
  google.protobuf.Timestamp ts = 7;
  float ratio = 8;
  bool flag = 9;
  sint32 delta = 10;
  fixed64 hash = 11;
  message User { string country = 1; map<string, double> extra = 2; }
  enum Plan { FREE = 0; PRO = 1; }
}
"#;

fn confluent_check(reasons: &[&str], result: Result<(), String>, calls: &[Call], fields: usize) {
    match result {
        Ok(()) => {
            assert_eq!(calls.first(), Some(&Call::Records(1)), "an accepted message is one record");
            let features: Vec<Option<usize>> = calls[1..].iter().map(Call::feature).collect();
            let expected: Vec<Option<usize>> = (0..fields).map(Some).collect();
            assert_eq!(features, expected, "one call per field, in configuration order");
        }
        Err(reason) => assert!(reasons.contains(&reason.as_str()), "undeclared reason {reason}"),
    }
}

/// `AvroDecoder` (Confluent framing, schemas 1 and 2) on arbitrary bytes. Invariants:
/// no panic; a refusal has a declared reason; an accepted message folds as one record
/// with one call per field in order; the same bytes after another message give the
/// same calls (no state leaks through the reused row).
pub fn avro(data: &[u8]) {
    use driftscope::decode::avro::{AvroDecoder, AvroField, AvroSchemas, REASONS};
    use driftscope::decode::confluent::{FixedSchemas, SchemaKind, SchemaTracker};
    let mut source = FixedSchemas::new();
    for (id, text) in AVRO_SCHEMAS {
        source = source.with(*id, SchemaKind::Avro, *text);
    }
    let fields: Vec<AvroField> = CONFLUENT_FIELDS
        .iter()
        .enumerate()
        .map(|(feature, (path, kind))| AvroField { path: (*path).into(), feature, kind: *kind })
        .collect();
    let mut decoder = AvroDecoder::new(
        AvroSchemas::Registry(Arc::new(source)),
        &fields,
        Some("ts"),
        SchemaTracker::new("f", None),
    )
    .expect("the target's own schemas");
    let once = |d: &mut AvroDecoder| {
        let result = d.decode(data).map_err(|r| r.reason.to_owned());
        let mut sink = Recorder::default();
        if result.is_ok() {
            d.row().fold(&mut sink);
        }
        (result, sink.0, d.row().event)
    };
    let first = once(&mut decoder);
    confluent_check(&REASONS, first.0.clone(), &first.1, fields.len());
    // A valid message of schema 2 in between (age 1, next null).
    assert!(decoder.decode(&[0, 0, 0, 0, 2, 2, 0]).is_ok());
    assert_eq!(once(&mut decoder), first, "decoding depends on the previous message");
}

/// `ProtobufDecoder` (Confluent framing, schema 1) on arbitrary bytes; the invariants
/// of [`avro`]. The decoder is kept between inputs (compiling the schema is the slow
/// part), which also checks that no input leaves it in a bad state.
pub fn protobuf(data: &[u8]) {
    use driftscope::decode::confluent::{FixedSchemas, SchemaKind, SchemaTracker};
    use driftscope::decode::protobuf::{ProtobufDecoder, ProtobufField, ProtobufSchemas, REASONS};
    static DECODER: OnceLock<std::sync::Mutex<ProtobufDecoder>> = OnceLock::new();
    let fields = CONFLUENT_FIELDS.len();
    let decoder = DECODER.get_or_init(|| {
        let source = FixedSchemas::new().with(1, SchemaKind::Protobuf, PROTOBUF_SCHEMA);
        let fields: Vec<ProtobufField> = CONFLUENT_FIELDS
            .iter()
            .enumerate()
            .map(|(feature, (path, kind))| ProtobufField { path: (*path).into(), feature, kind: *kind })
            .collect();
        let decoder = ProtobufDecoder::new(
            ProtobufSchemas::Registry(Arc::new(source)),
            &fields,
            Some("ts"),
            SchemaTracker::new("f", None),
        )
        .expect("the target's own schema");
        std::sync::Mutex::new(decoder)
    });
    let mut decoder = decoder.lock().unwrap_or_else(|p| p.into_inner());
    let once = |d: &mut ProtobufDecoder| {
        let result = d.decode(data).map_err(|r| r.reason.to_owned());
        let mut sink = Recorder::default();
        if result.is_ok() {
            d.row().fold(&mut sink);
        }
        (result, sink.0, d.row().event)
    };
    let first = once(&mut decoder);
    confluent_check(&REASONS, first.0.clone(), &first.1, fields);
    // A valid Features message in between (age 5, user.country "DE").
    assert!(decoder.decode(&[0, 0, 0, 0, 1, 2, 2, 0x10, 5, 0x1a, 4, 0x0a, 2, b'D', b'E']).is_ok());
    assert_eq!(once(&mut decoder), first, "decoding depends on the previous message");
}
