//! The fixed workload: a seeded generator of records of a schema (the "bench schema":
//! 20 numeric features f0..f19, 5 categorical c0..c4 with 10 values each, a numeric
//! prediction `score`, plus an unmonitored id and timestamp), their JSON and Arrow IPC
//! encodings, the reference profile taken from the same generator with another seed,
//! and the driftscope configuration that monitors them.

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use driftscope::stats::profile::{FeatureSpec, Profile, ProfileBuilder};
use driftscope::stats::{DriftSettings, FeatureKind, ValueSink};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

/// Tumbling count window of the harness's pipelines (records).
pub const WINDOW_RECORDS: u64 = 10_000;

/// The categories of every categorical feature (skewed: the first is the most frequent).
pub const WORDS: [&str; 10] =
    ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"];

/// SplitMix64: small, seeded, good enough for workload generation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// How a numeric feature's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Dist {
    Normal {
        mean: f64,
        sd: f64,
    },
    LogNormal,
    Uniform,
    /// Whole numbers (counts), written without a fraction.
    Count,
    /// A model score in (0, 1).
    Score,
}

#[derive(Clone, Debug)]
pub struct Feature {
    pub name: String,
    pub kind: FeatureKind,
    dist: Dist,
}

/// An ordered list of monitored features; the order is the reference's feature order.
#[derive(Clone, Debug)]
pub struct Schema {
    pub features: Vec<Feature>,
}

fn numeric_dist(i: usize) -> Dist {
    match i % 4 {
        0 => Dist::Normal { mean: i as f64, sd: 1.0 + (i % 7) as f64 },
        1 => Dist::LogNormal,
        2 => Dist::Uniform,
        _ => Dist::Count,
    }
}

impl Schema {
    /// 20 numeric f0..f19, 5 categorical c0..c4, then the numeric `score`.
    pub fn bench() -> Schema {
        let mut features: Vec<Feature> = (0..20)
            .map(|i| Feature { name: format!("f{i}"), kind: FeatureKind::Numeric, dist: numeric_dist(i) })
            .collect();
        features.extend((0..5).map(|i| Feature {
            name: format!("c{i}"),
            kind: FeatureKind::Categorical,
            dist: Dist::Uniform,
        }));
        features.push(Feature { name: "score".into(), kind: FeatureKind::Numeric, dist: Dist::Score });
        Schema { features }
    }

    /// `n` features: the first half numeric (f0..), the rest categorical (c0..).
    pub fn wide(n: usize) -> Schema {
        let numeric = n / 2;
        let mut features: Vec<Feature> = (0..numeric)
            .map(|i| Feature { name: format!("f{i}"), kind: FeatureKind::Numeric, dist: numeric_dist(i) })
            .collect();
        features.extend((0..n - numeric).map(|i| Feature {
            name: format!("c{i}"),
            kind: FeatureKind::Categorical,
            dist: Dist::Uniform,
        }));
        Schema { features }
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }
}

/// One generated value.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    Num(f64),
    /// Index into [`WORDS`].
    Cat(u8),
}

/// Draws records of a schema from a seed.
pub struct Generator {
    schema: Schema,
    rng: Rng,
    /// Cumulative Zipf(1) weights over the 10 categories.
    cumulative: [f64; WORDS.len()],
    next_id: u64,
}

impl Generator {
    pub fn new(schema: &Schema, seed: u64) -> Generator {
        let weights: Vec<f64> = (0..WORDS.len()).map(|k| 1.0 / (k + 1) as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = [0.0; WORDS.len()];
        let mut acc = 0.0;
        for (c, w) in cumulative.iter_mut().zip(&weights) {
            acc += w / total;
            *c = acc;
        }
        cumulative[WORDS.len() - 1] = 1.0;
        Generator { schema: schema.clone(), rng: Rng::new(seed), cumulative, next_id: 0 }
    }

    /// The next record's values, in schema order, into `out`.
    pub fn record(&mut self, out: &mut Vec<Value>) {
        out.clear();
        self.next_id += 1;
        for i in 0..self.schema.features.len() {
            let f = &self.schema.features[i];
            let v = match f.kind {
                FeatureKind::Numeric => Value::Num(match f.dist {
                    Dist::Normal { mean, sd } => mean + sd * self.rng.normal(),
                    Dist::LogNormal => (3.0 + 0.5 * self.rng.normal()).exp(),
                    Dist::Uniform => 100.0 * self.rng.unit(),
                    Dist::Count => (-20.0 * (1.0 - self.rng.unit()).ln()).floor(),
                    Dist::Score => 1.0 / (1.0 + (-1.5 * self.rng.normal()).exp()),
                }),
                FeatureKind::Categorical => {
                    let u = self.rng.unit();
                    Value::Cat(self.cumulative.iter().position(|&c| u < c).unwrap_or(WORDS.len() - 1) as u8)
                }
            };
            out.push(v);
        }
    }

    /// A millisecond timestamp for the current record (2024-05-01 plus id * 7 ms).
    pub fn timestamp_ms(&self) -> i64 {
        1_714_564_800_000 + self.next_id as i64 * 7
    }

    /// The next record as one JSON object.
    pub fn json(&mut self, values: &mut Vec<Value>, out: &mut String) {
        self.record(values);
        out.clear();
        let ts = self.timestamp_ms();
        let (secs, ms) = (ts / 1000, ts % 1000);
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let day = (secs - 1_714_521_600) / 86_400 + 1; // 2024-05-01 00:00:00Z = 1714521600
        let _ = write!(
            out,
            "{{\"id\":\"evt-{:016x}\",\"ts\":\"2024-05-{:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z\"",
            self.next_id,
            day.clamp(1, 31)
        );
        for (f, v) in self.schema.features.iter().zip(values.iter()) {
            match (*v, f.dist) {
                (Value::Num(x), Dist::Count) => {
                    let _ = write!(out, ",\"{}\":{}", f.name, x as i64);
                }
                (Value::Num(x), Dist::Score) => {
                    let _ = write!(out, ",\"{}\":{x:.5}", f.name);
                }
                (Value::Num(x), _) => {
                    let _ = write!(out, ",\"{}\":{x:.5}", f.name);
                }
                (Value::Cat(c), _) => {
                    let _ = write!(out, ",\"{}\":\"{}\"", f.name, WORDS[c as usize]);
                }
            }
        }
        out.push('}');
    }

    /// `n` JSON messages.
    pub fn json_messages(&mut self, n: usize) -> Vec<Vec<u8>> {
        let (mut values, mut text) = (Vec::new(), String::new());
        (0..n)
            .map(|_| {
                self.json(&mut values, &mut text);
                text.as_bytes().to_vec()
            })
            .collect()
    }

    /// One Arrow IPC stream (schema, one batch of `rows`, end marker): id and ts columns
    /// plus one column per feature (Float64 or Utf8).
    pub fn arrow_message(&mut self, rows: usize) -> Vec<u8> {
        let n = self.schema.features.len();
        let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(rows); n];
        let mut ids = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut values = Vec::with_capacity(n);
        for _ in 0..rows {
            self.record(&mut values);
            ids.push(format!("evt-{:016x}", self.next_id));
            ts.push(self.timestamp_ms());
            for (c, v) in columns.iter_mut().zip(&values) {
                c.push(*v);
            }
        }
        let mut fields = vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        ];
        let mut arrays: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(ids)), Arc::new(TimestampMillisecondArray::from(ts))];
        for (f, column) in self.schema.features.iter().zip(columns) {
            match f.kind {
                FeatureKind::Numeric => {
                    fields.push(Field::new(&f.name, DataType::Float64, true));
                    let xs: Vec<f64> =
                        column.iter().map(|v| if let Value::Num(x) = v { *x } else { f64::NAN }).collect();
                    arrays.push(Arc::new(Float64Array::from(xs)));
                }
                FeatureKind::Categorical => {
                    fields.push(Field::new(&f.name, DataType::Utf8, true));
                    let xs: Vec<&str> = column
                        .iter()
                        .map(|v| if let Value::Cat(c) = v { WORDS[*c as usize] } else { "" })
                        .collect();
                    arrays.push(Arc::new(StringArray::from(xs)));
                }
            }
        }
        let schema = Arc::new(ArrowSchema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays).expect("bench batch");
        let mut out = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut out, &schema).expect("ipc writer");
            w.write(&batch).expect("ipc write");
            w.finish().expect("ipc finish");
        }
        out
    }

    /// Feeds `n` records straight into a sink (no encoding).
    pub fn fold_into<S: ValueSink>(&mut self, n: usize, sink: &mut S) {
        let mut values = Vec::with_capacity(self.schema.features.len());
        for _ in 0..n {
            self.record(&mut values);
            sink.add_records(1);
            for (i, v) in values.iter().enumerate() {
                match *v {
                    Value::Num(x) => sink.numeric(i, x),
                    Value::Cat(c) => sink.category(i, WORDS[c as usize]),
                }
            }
        }
    }
}

/// The reference profile: `records` records of the schema from `seed`.
pub fn profile(schema: &Schema, seed: u64, records: usize) -> Profile {
    let settings = DriftSettings::default();
    let specs = schema
        .features
        .iter()
        .map(|f| FeatureSpec { name: f.name.clone(), kind: f.kind, bins: settings.bins })
        .collect();
    let mut builder = ProfileBuilder::new(specs, settings.cdf_resolution, settings.max_categories);
    Generator::new(schema, seed).fold_into(records, &mut builder);
    builder.finish(format!("bench:seed={seed}"), "2024-05-01T00:00:00Z".into())
}

/// A TOML basic string.
fn lit(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A driftscope configuration: one stream `bench` on `topic`, every feature of the
/// profile at `profile_path`, tumbling count windows, HTTP off, reports to `reports`.
/// Checkpoints every 200 ms: reports wait for the checkpoint that holds them, and the
/// harness times consumption by the reports, so the default 1 s would add up to a
/// second of report latency to a run of a few seconds.
#[allow(clippy::too_many_arguments)]
pub fn config_toml(
    brokers: &str,
    group: &str,
    topic: &str,
    format: &str,
    profile_path: &Path,
    state_dir: &Path,
    reports: &Path,
    kafka_properties: &[(String, String)],
) -> String {
    format!(
        "[kafka]\nbrokers = {}\ngroup_id = {}\n{}\n[http]\nlisten = \"\"\n\n[state]\ndir = {}\ncheckpoint_interval = \"200ms\"\n\n\
         [outputs]\nreports_file = {}\n\n[[streams]]\nname = \"bench\"\ntopics = [{}]\nformat = {}\n\
         window = {{ type = \"tumbling_count\", size = {WINDOW_RECORDS} }}\nreference = {{ profile = {} }}\n",
        lit(brokers),
        lit(group),
        if kafka_properties.is_empty() {
            String::new()
        } else {
            let lines: Vec<String> =
                kafka_properties.iter().map(|(k, v)| format!("{} = {}\n", lit(k), lit(v))).collect();
            format!("\n[kafka.properties]\n{}", lines.concat())
        },
        lit(&state_dir.display().to_string()),
        lit(&reports.display().to_string()),
        lit(topic),
        lit(format),
        lit(&profile_path.display().to_string()),
    )
}
