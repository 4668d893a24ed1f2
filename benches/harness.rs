//! driftscope's benchmark harness (issue 6): one run measures, side by side, the
//! in-process pipeline (JSON and Arrow IPC) against the JSON parse-only ceiling, the
//! end-to-end rate on a real Kafka broker against a bare consumer, the cost of scoring
//! one window, and the peak memory of a long run; and prints one table with the
//! targets. Speed is reported, never asserted: a MISS does not fail the run, but a stage
//! that was asked for and cannot run does (non-zero exit).
//!
//!   cargo bench --bench harness [-- OPTIONS]      (scripts/bench.sh wraps it)
//!
//! OPTIONS
//!   --quick               short run: small message sets, memory at 100k/1M records,
//!                         no end-to-end stage (unless asked for with --stages)
//!   --messages N          end-to-end and scale messages (default 2,000,000)
//!   --e2e-rounds N        end-to-end and scale rounds, each reading the topic with (a),
//!                         (a2) and (b) in turn (scale: local, global, three global);
//!                         ratios per round and their median (default 5)
//!   --stages LIST         comma list of inprocess,open_inference,confluent,labels,e2e,
//!                         scale,scoring,memory,soundness,offline
//!                         (default: all);
//!                         a stage named here must run or the harness fails
//!   --require-broker      fail (instead of skipping end-to-end) when no broker answers
//!   --bootstrap ADDR      broker (default $DRIFTSCOPE_KAFKA_BOOTSTRAP or 127.0.0.1:19092)
//!   --driftscope PATH     the binary for end-to-end (default: target/release/driftscope
//!                         next to this harness)
//!   --scale-baseline PATH another driftscope binary (e.g. a build of the commit before a
//!                         change) that the scale stage runs too, its (a), (b), (c) in
//!                         the same rounds, interleaved, so the two compare under one load
//!   --kafka-property K=V  a librdkafka consumer property for both end-to-end consumers
//!                         (driftscope's `[kafka.properties]`), repeatable
//!   --memory-records A,B  record counts of the memory stage (default 1000000,10000000)
//!   --offline-rows N      rows of the offline stage's reference and current Parquet
//!                         files (default 1,000,000; --quick 100,000)
//!   --evidently-python P  a Python with Evidently and pandas: the offline stage runs
//!                         DataDriftPreset on the same files (scripts/bench.sh --evidently
//!                         makes one); without it that comparison is skipped
//!
//! The work directory (profiles, configs, driftscope's log and reports) is kept when a
//! stage fails or DRIFTSCOPE_BENCH_KEEP is set.

#[path = "harness/confluent.rs"]
mod confluent;
#[path = "harness/kafka.rs"]
mod kafka;
#[path = "harness/labels.rs"]
mod labels;
#[path = "harness/offline.rs"]
mod offline;
#[path = "harness/open_inference.rs"]
mod open_inference;
#[path = "harness/pipeline.rs"]
mod pipeline;
#[path = "harness/scale.rs"]
mod scale;
#[path = "harness/soundness.rs"]
mod soundness;
#[path = "harness/sys.rs"]
mod sys;
#[path = "harness/workload.rs"]
mod workload;

use anyhow::{Context, bail};
use driftscope::decode::arrow::{ColumnBinding, decode_ipc_message, fold_batch};
use driftscope::decode::json::{JsonDecoder, JsonField};
use driftscope::stats::{DriftSettings, FeatureKind, Reference, ValueSink, WindowInfo, score_window};
use pipeline::Pipeline;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use sys::Timing;
use workload::{Generator, Schema, WINDOW_RECORDS};

const REFERENCE_SEED: u64 = 1;
const STREAM_SEED: u64 = 2;
const ARROW_ROWS: usize = 1_000;
const MEMORY_FEATURES: usize = 100;
const MEMORY_POOL: usize = 2_000;

// ---------------------------------------------------------------------------------
// Options

#[derive(Debug)]
struct Options {
    quick: bool,
    messages: u64,
    e2e_rounds: usize,
    stages: Vec<String>,
    explicit_stages: bool,
    require_broker: bool,
    bootstrap: String,
    driftscope: Option<PathBuf>,
    scale_baseline: Option<PathBuf>,
    memory_records: Vec<u64>,
    kafka_properties: Vec<(String, String)>,
    offline_rows: u64,
    evidently_python: Option<PathBuf>,
}

const STAGES: [&str; 10] = [
    "inprocess",
    "open_inference",
    "confluent",
    "labels",
    "e2e",
    "scale",
    "scoring",
    "memory",
    "soundness",
    "offline",
];

fn parse_count(s: &str) -> anyhow::Result<u64> {
    let t = s.replace(['_', ','], "");
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1_000),
        Some('m' | 'M') => (&t[..t.len() - 1], 1_000_000),
        _ => (&t[..], 1),
    };
    Ok(num.parse::<u64>().with_context(|| format!("not a count: {s:?}"))? * mult)
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        quick: false,
        messages: 2_000_000,
        e2e_rounds: 5,
        stages: STAGES.iter().map(|s| s.to_string()).collect(),
        explicit_stages: false,
        require_broker: false,
        bootstrap: std::env::var("DRIFTSCOPE_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into()),
        driftscope: None,
        scale_baseline: None,
        memory_records: Vec::new(),
        kafka_properties: Vec::new(),
        offline_rows: 0,
        evidently_python: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--quick" => o.quick = true,
            "--messages" => o.messages = parse_count(&value()?)?,
            "--e2e-rounds" => {
                o.e2e_rounds = parse_count(&value()?)? as usize;
                if o.e2e_rounds == 0 {
                    bail!("--e2e-rounds must be at least 1");
                }
            }
            "--stages" => {
                let v = value()?;
                o.stages = v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
                if let Some(bad) = o.stages.iter().find(|s| !STAGES.contains(&s.as_str())) {
                    bail!("unknown stage {bad:?} (stages: {})", STAGES.join(","));
                }
                o.explicit_stages = true;
            }
            "--require-broker" => o.require_broker = true,
            "--kafka-property" => {
                let v = value()?;
                let (k, v) = v.split_once('=').context("--kafka-property takes KEY=VALUE")?;
                o.kafka_properties.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "--bootstrap" => o.bootstrap = value()?,
            "--offline-rows" => o.offline_rows = parse_count(&value()?)?,
            "--evidently-python" => o.evidently_python = Some(PathBuf::from(value()?)),
            "--driftscope" => o.driftscope = Some(PathBuf::from(value()?)),
            "--scale-baseline" => o.scale_baseline = Some(PathBuf::from(value()?)),
            "--memory-records" => {
                o.memory_records =
                    value()?.split(',').map(parse_count).collect::<anyhow::Result<Vec<u64>>>()?;
                if o.memory_records.len() != 2 {
                    bail!("--memory-records takes two counts, e.g. 1000000,10000000");
                }
            }
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("harness.rs")
                        .lines()
                        .take_while(|l| l.starts_with("//!"))
                        .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?} (see --help)"),
        }
    }
    if o.offline_rows == 0 {
        o.offline_rows = if o.quick { 100_000 } else { 1_000_000 };
    }
    if o.memory_records.is_empty() {
        o.memory_records = if o.quick { vec![100_000, 1_000_000] } else { vec![1_000_000, 10_000_000] };
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------
// The result table

struct Row {
    section: &'static str,
    label: String,
    value: String,
    target: String,
    verdict: Option<bool>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn info(&mut self, section: &'static str, label: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            section,
            label: label.into(),
            value: value.into(),
            target: String::new(),
            verdict: None,
        });
    }
    fn check(
        &mut self,
        section: &'static str,
        label: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: bool,
    ) {
        self.rows.push(Row {
            section,
            label: label.into(),
            value: value.into(),
            target: target.into(),
            verdict: Some(pass),
        });
    }

    fn print(&self) {
        let w_label = self.rows.iter().map(|r| r.label.len()).max().unwrap_or(10).max(10);
        let w_value = self.rows.iter().map(|r| r.value.len()).max().unwrap_or(10).max(10);
        let w_target = self.rows.iter().map(|r| r.target.len()).max().unwrap_or(6).max(6);
        let line = "-".repeat(w_label + w_value + w_target + 12);
        println!("{line}");
        println!("  {:<w_label$}  {:<w_value$}  {:<w_target$}  verdict", "measure", "value", "target");
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                println!("{line}\n{section}");
            }
            let verdict = match r.verdict {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            println!("  {:<w_label$}  {:<w_value$}  {:<w_target$}  {verdict}", r.label, r.value, r.target);
        }
        println!("{line}");
        let checked = self.rows.iter().filter(|r| r.verdict.is_some()).count();
        let missed = self.rows.iter().filter(|r| r.verdict == Some(false)).count();
        println!("targets: {} checked, {} PASS, {} MISS", checked, checked - missed, missed);
    }
}

fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.1} ")
    }
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[harness] {}", msg.as_ref());
}

// ---------------------------------------------------------------------------------
// Stage 1: in-process throughput

/// Discards everything (the decoder alone is measured).
struct Noop;
impl ValueSink for Noop {
    fn add_records(&mut self, n: u64) {
        black_box(n);
    }
    fn numeric(&mut self, feature: usize, x: f64) {
        black_box((feature, x));
    }
    fn category(&mut self, feature: usize, value: &str) {
        black_box((feature, value));
    }
    fn missing(&mut self, feature: usize) {
        black_box(feature);
    }
    fn invalid(&mut self, feature: usize) {
        black_box(feature);
    }
}

/// One measured variant: a pass over its message set returns (messages, records).
struct Variant<'a> {
    name: &'static str,
    pass: Box<dyn FnMut() -> (u64, u64) + 'a>,
    timings: Vec<(Timing, u64, u64)>,
}

struct Measured {
    msgs_wall: f64,
    msgs_cpu: f64,
    records_cpu: f64,
}

fn measured(v: &Variant) -> Measured {
    let rate = |f: &dyn Fn(&(Timing, u64, u64)) -> f64| median(v.timings.iter().map(f).collect());
    Measured {
        msgs_wall: rate(&|(t, m, _)| *m as f64 / t.wall.as_secs_f64()),
        msgs_cpu: rate(&|(t, m, _)| *m as f64 / t.cpu.as_secs_f64()),
        records_cpu: rate(&|(t, _, r)| *r as f64 / t.cpu.as_secs_f64()),
    }
}

/// Runs every variant `passes` times per round, rounds interleaved, so that a busy
/// machine slows all variants alike.
fn run_rounds(variants: &mut [Variant], rounds: usize, passes: usize) {
    for v in variants.iter_mut() {
        (v.pass)(); // warm-up
    }
    for _ in 0..rounds {
        for v in variants.iter_mut() {
            let ((m, r), t) = sys::timed(|| {
                let (mut m, mut r) = (0, 0);
                for _ in 0..passes {
                    let (a, b) = (v.pass)();
                    m += a;
                    r += b;
                }
                (m, r)
            });
            v.timings.push((t, m, r));
        }
    }
}

fn json_fields(schema: &Schema) -> Vec<JsonField> {
    schema
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| JsonField { pointer: format!("/{}", f.name), feature: i, kind: f.kind })
        .collect()
}

fn bindings(schema: &Schema) -> Vec<ColumnBinding> {
    schema
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| ColumnBinding { column: f.name.clone(), feature: i, kind: f.kind })
        .collect()
}

fn stage_inprocess(o: &Options, dir: &Path, table: &mut Table) -> anyhow::Result<()> {
    const S: &str =
        "1. in-process, one thread (bench schema: 26 monitored values per record; window = 10,000 records)";
    let schema = Schema::bench();
    let values_per_record = schema.len() as f64;
    let (json_count, arrow_count, rounds, passes) =
        if o.quick { (20_000, 20, 3, 2) } else { (100_000, 100, 5, 3) };
    progress(format!(
        "in-process: generating {json_count} JSON messages and {arrow_count} Arrow IPC messages of {ARROW_ROWS} rows"
    ));
    let profile_path = dir.join("bench.profile");
    std::fs::write(&profile_path, workload::profile(&schema, REFERENCE_SEED, 100_000).to_json())?;
    let json = Generator::new(&schema, STREAM_SEED).json_messages(json_count);
    let mut gen_arrow = Generator::new(&schema, STREAM_SEED);
    let arrow: Vec<Vec<u8>> = (0..arrow_count).map(|_| gen_arrow.arrow_message(ARROW_ROWS)).collect();
    let json_bytes = json.iter().map(Vec::len).sum::<usize>() as f64 / json.len() as f64;
    let arrow_bytes = arrow.iter().map(Vec::len).sum::<usize>() as f64 / arrow.len() as f64;

    let fields = json_fields(&schema);
    let bindings = bindings(&schema);
    let mut decoder_only = JsonDecoder::new(&fields, None)?;
    let mut decoder_noop = JsonDecoder::new(&fields, None)?;
    let mut decoder_sketch = JsonDecoder::new(&fields, None)?;
    let mut json_pipeline = Pipeline::new("json", &profile_path, dir)?;
    let mut arrow_pipeline = Pipeline::new("arrow_ipc", &profile_path, dir)?;
    let mut json_pipeline_v1 = Pipeline::with_defaults("json", &profile_path, dir, "rule = \"threshold\"")?;
    let reference: std::sync::Arc<Reference> = json_pipeline.reference().clone();
    let mut json_sketch = reference.new_window();
    let mut arrow_sketch = reference.new_window();
    let n_json = json.len() as u64;
    let rows_per_arrow = ARROW_ROWS as u64;
    let n_arrow = arrow.len() as u64;

    let mut json_variants = vec![
        Variant {
            name: "serde_json parse only (IgnoredAny) = ceiling",
            pass: Box::new(|| {
                for m in &json {
                    black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(m)).is_ok());
                }
                (n_json, n_json)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "JsonDecoder::decode only",
            pass: Box::new(|| {
                for m in &json {
                    black_box(decoder_only.decode(black_box(m)).is_ok());
                }
                (n_json, n_json)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "decode + apply to a no-op sink",
            pass: Box::new(|| {
                for m in &json {
                    if decoder_noop.decode(black_box(m)).is_ok() {
                        decoder_noop.apply(&mut Noop);
                    }
                }
                (n_json, n_json)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "decode + apply to a WindowSketch (no windowing)",
            pass: Box::new(|| {
                for m in &json {
                    if decoder_sketch.decode(black_box(m)).is_ok() {
                        decoder_sketch.apply(&mut json_sketch);
                    }
                }
                (n_json, n_json)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "PIPELINE: StreamState::process + score at close",
            pass: Box::new(|| {
                for m in &json {
                    json_pipeline.process(black_box(m));
                }
                (n_json, n_json)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "the same, version-1 verdicts (rule = threshold) beside",
            pass: Box::new(|| {
                for m in &json {
                    json_pipeline_v1.process(black_box(m));
                }
                (n_json, n_json)
            }),
            timings: Vec::new(),
        },
    ];
    progress(format!(
        "in-process JSON: {rounds} rounds x {passes} passes x {json_count} messages per variant"
    ));
    run_rounds(&mut json_variants, rounds, passes);

    let mut arrow_variants = vec![
        Variant {
            name: "decode_ipc_message only",
            pass: Box::new(|| {
                for m in &arrow {
                    black_box(decode_ipc_message(black_box(m), &bindings).map(|b| b.len()).ok());
                }
                (n_arrow, n_arrow * rows_per_arrow)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "decode + fold_batch to a no-op sink",
            pass: Box::new(|| {
                for m in &arrow {
                    if let Ok(batches) = decode_ipc_message(black_box(m), &bindings) {
                        for b in &batches {
                            fold_batch(b, &bindings, &mut Noop);
                        }
                    }
                }
                (n_arrow, n_arrow * rows_per_arrow)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "decode + fold_batch to a WindowSketch",
            pass: Box::new(|| {
                for m in &arrow {
                    if let Ok(batches) = decode_ipc_message(black_box(m), &bindings) {
                        for b in &batches {
                            fold_batch(b, &bindings, &mut arrow_sketch);
                        }
                    }
                }
                (n_arrow, n_arrow * rows_per_arrow)
            }),
            timings: Vec::new(),
        },
        Variant {
            name: "PIPELINE: StreamState::process + score at close",
            pass: Box::new(|| {
                for m in &arrow {
                    arrow_pipeline.process(black_box(m));
                }
                (n_arrow, n_arrow * rows_per_arrow)
            }),
            timings: Vec::new(),
        },
    ];
    progress(format!(
        "in-process Arrow: {rounds} rounds x {passes} passes x {arrow_count} messages per variant"
    ));
    run_rounds(&mut arrow_variants, rounds, passes * 2);

    // Per-round share of the ceiling (CPU time), then the median over rounds.
    let share_rounds: Vec<f64> = json_variants[0]
        .timings
        .iter()
        .zip(&json_variants[4].timings)
        .map(|((tp, mp, _), (tq, mq, _))| {
            (*mq as f64 / tq.cpu.as_secs_f64()) / (*mp as f64 / tp.cpu.as_secs_f64())
        })
        .collect();
    let share = median(share_rounds);
    let cpu_share = {
        let (w, c): (f64, f64) = json_variants
            .iter()
            .chain(arrow_variants.iter())
            .flat_map(|v| v.timings.iter())
            .fold((0.0, 0.0), |(w, c), (t, _, _)| (w + t.wall.as_secs_f64(), c + t.cpu.as_secs_f64()));
        c / w
    };
    let json_figures: Vec<(&str, Measured)> = json_variants.iter().map(|v| (v.name, measured(v))).collect();
    let arrow_figures: Vec<(&str, Measured)> = arrow_variants.iter().map(|v| (v.name, measured(v))).collect();
    drop(json_variants);
    drop(arrow_variants);
    if json_pipeline.bad > 0 || arrow_pipeline.bad > 0 {
        bail!(
            "in-process: the pipeline refused bench messages (json {}, arrow {})",
            json_pipeline.bad,
            arrow_pipeline.bad
        );
    }
    if json_pipeline.windows == 0 || arrow_pipeline.windows == 0 {
        bail!("in-process: no window closed");
    }

    table.info(
        S,
        "message size: JSON / Arrow IPC (1,000 rows)",
        format!("{json_bytes:.0} B / {:.0} kB", arrow_bytes / 1e3),
    );
    table.info(S, "thread CPU time / wall time over the stage", format!("{cpu_share:.2}"));
    table.info(S, "JSON (rates per CPU-second; wall-clock in brackets)", "");
    let ceiling = json_figures[0].1.msgs_cpu;
    for (name, m) in &json_figures {
        let of = if m.msgs_cpu == ceiling {
            String::new()
        } else {
            format!(", {:.0}% of ceiling", 100.0 * m.msgs_cpu / ceiling)
        };
        table.info(S, format!("  {name}"), format!("{}msg/s [{}msg/s]{of}", si(m.msgs_cpu), si(m.msgs_wall)));
    }
    let pipe = &json_figures[4].1;
    table.check(
        S,
        "  JSON pipeline messages/s",
        format!("{}msg/s", si(pipe.msgs_cpu)),
        ">= 1 M msg/s",
        pipe.msgs_cpu >= 1e6,
    );
    table.info(S, "  JSON pipeline values/s", format!("{}values/s", si(pipe.msgs_cpu * values_per_record)));
    let v1 = &json_figures[5].1;
    table.check(
        S,
        "  JSON pipeline, version-2 verdicts against version 1 side by side",
        format!("{:.1}%", 100.0 * pipe.msgs_cpu / v1.msgs_cpu),
        ">= 95%",
        pipe.msgs_cpu >= 0.95 * v1.msgs_cpu,
    );
    table.check(
        S,
        "  JSON pipeline share of parse-only rate",
        format!("{:.1}%", 100.0 * share),
        ">= 60%",
        share >= 0.60,
    );
    table.info(S, "Arrow IPC (rates per CPU-second; wall-clock in brackets)", "");
    for (name, m) in &arrow_figures {
        table.info(
            S,
            format!("  {name}"),
            format!(
                "{}values/s [{}values/s]",
                si(m.records_cpu * values_per_record),
                si(m.records_cpu * values_per_record * m.msgs_wall / m.msgs_cpu)
            ),
        );
    }
    let pipe = &arrow_figures[3].1;
    table.info(
        S,
        "  Arrow pipeline messages/s (1,000 rows each)",
        format!("{}msg/s = {}rows/s", si(pipe.msgs_cpu), si(pipe.records_cpu)),
    );
    let values = pipe.records_cpu * values_per_record;
    table.check(
        S,
        "  Arrow pipeline values/s",
        format!("{}values/s", si(values)),
        ">= 50 M values/s",
        values >= 50e6,
    );
    // Where the sketch time goes: one value into a WindowSketch, by kind.
    let (numeric_ns, categorical_ns) =
        sketch_update_costs(&schema, &reference, if o.quick { 50_000 } else { 200_000 });
    let numeric_features = schema.features.iter().filter(|f| f.kind == FeatureKind::Numeric).count() as f64;
    let categorical_features = schema.len() as f64 - numeric_features;
    table.info(
        S,
        "sketch update, one value (numeric / categorical)",
        format!(
            "{numeric_ns:.1} ns / {categorical_ns:.1} ns = {:.0} ns per bench record",
            numeric_ns * numeric_features + categorical_ns * categorical_features
        ),
    );
    table.info(
        S,
        "windows scored (JSON / Arrow)",
        format!("{} / {}", json_pipeline.windows, arrow_pipeline.windows),
    );
    Ok(())
}

/// Median ns per value of `WindowSketch::numeric` and `::category` on the bench
/// schema's values (already decoded), 3 rounds.
fn sketch_update_costs(schema: &Schema, reference: &Reference, records: usize) -> (f64, f64) {
    let mut generator = Generator::new(schema, STREAM_SEED);
    let mut numeric: Vec<(usize, f64)> = Vec::new();
    let mut categorical: Vec<(usize, &'static str)> = Vec::new();
    let mut values = Vec::new();
    for _ in 0..records {
        generator.record(&mut values);
        for (i, v) in values.iter().enumerate() {
            match *v {
                workload::Value::Num(x) => numeric.push((i, x)),
                workload::Value::Cat(c) => categorical.push((i, workload::WORDS[c as usize])),
            }
        }
    }
    let mut sketch = reference.new_window();
    let (mut n_ns, mut c_ns) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (_, t) = sys::timed(|| {
            for &(i, x) in &numeric {
                sketch.numeric(i, black_box(x));
            }
        });
        n_ns.push(t.cpu.as_secs_f64() * 1e9 / numeric.len() as f64);
        let (_, t) = sys::timed(|| {
            for &(i, c) in &categorical {
                sketch.category(i, black_box(c));
            }
        });
        c_ns.push(t.cpu.as_secs_f64() * 1e9 / categorical.len() as f64);
    }
    black_box(sketch.records);
    (median(n_ns), median(c_ns))
}

// ---------------------------------------------------------------------------------
// Stage 3: scoring one window

fn stage_scoring(o: &Options, table: &mut Table) -> anyhow::Result<()> {
    const S: &str = "3. scoring one window (half numeric, half categorical with 10 categories; window of 10,000 records; default settings)";
    let reference_records = if o.quick { 10_000 } else { 20_000 };
    let budget = if o.quick { Duration::from_millis(200) } else { Duration::from_secs(1) };
    for (features, limit_ms) in [(10usize, None), (100, Some(5.0)), (1000, Some(50.0))] {
        progress(format!("scoring: {features} features (reference of {reference_records} records)"));
        let schema = Schema::wide(features);
        let profile = workload::profile(&schema, REFERENCE_SEED, reference_records);
        let reference = Reference::new(profile, DriftSettings::default(), &BTreeMap::new())
            .map_err(|e| anyhow::anyhow!("reference: {e}"))?;
        let mut window = reference.new_window();
        Generator::new(&schema, STREAM_SEED).fold_into(WINDOW_RECORDS as usize, &mut window);
        // The first window draws the version-2 nulls of its size (once per size rung;
        // the monitor draws a count window's ahead of it, on every core).
        let t = Instant::now();
        black_box(score_window(&reference, &window, WindowInfo::default()));
        table.info(
            S,
            format!("{features} features: first window of its size (bootstrap nulls drawn, one thread)"),
            format!("{:.1} ms", t.elapsed().as_secs_f64() * 1e3),
        );
        for _ in 0..3 {
            black_box(score_window(&reference, &window, WindowInfo::default()));
        }
        let mut calls = Vec::new();
        let started = Instant::now();
        while calls.len() < 10 || started.elapsed() < budget {
            let t = Instant::now();
            let report = score_window(&reference, black_box(&window), WindowInfo::default());
            calls.push(t.elapsed().as_secs_f64() * 1e3);
            if report.features.len() != features {
                bail!("scoring: {} feature reports for {features} features", report.features.len());
            }
            black_box(report);
        }
        let n = calls.len();
        let ms = median(calls);
        let v1 = Reference::new(
            workload::profile(&schema, REFERENCE_SEED, reference_records),
            DriftSettings { rule: driftscope::stats::Rule::Threshold, ..DriftSettings::default() },
            &BTreeMap::new(),
        )
        .map_err(|e| anyhow::anyhow!("reference: {e}"))?;
        let mut v1_calls = Vec::new();
        for _ in 0..n.min(200) {
            let t = Instant::now();
            black_box(score_window(&v1, black_box(&window), WindowInfo::default()));
            v1_calls.push(t.elapsed().as_secs_f64() * 1e3);
        }
        table.info(
            S,
            format!("{features} features, version 1 (rule = threshold) beside"),
            format!("{:.3} ms", median(v1_calls)),
        );
        let value = format!("{ms:.3} ms ({:.1} us/feature, median of {n})", 1e3 * ms / features as f64);
        match limit_ms {
            Some(limit) => {
                table.check(S, format!("{features} features"), value, format!("< {limit} ms"), ms < limit)
            }
            None => table.info(S, format!("{features} features"), value),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Stage 4: memory

/// The hidden child mode: folds `records` generated JSON records (100 features) through
/// the in-process pipeline and prints its peak RSS.
fn memory_child(dir: &Path, records: u64) -> anyhow::Result<()> {
    let schema = Schema::wide(MEMORY_FEATURES);
    let mut pipeline = Pipeline::new("json", &dir.join("memory.profile"), dir)?;
    let pool = Generator::new(&schema, STREAM_SEED).json_messages(MEMORY_POOL);
    let baseline = sys::status_kib("self", "VmRSS").unwrap_or(0);
    let started = Instant::now();
    for i in 0..records {
        pipeline.process(&pool[(i % MEMORY_POOL as u64) as usize]);
    }
    let secs = started.elapsed().as_secs_f64();
    if pipeline.bad > 0 {
        bail!("memory child: {} records refused", pipeline.bad);
    }
    println!(
        "MEMCHILD records={records} hwm_kib={} rss_kib={} baseline_rss_kib={baseline} windows={} secs={secs:.3}",
        sys::status_kib("self", "VmHWM").unwrap_or(0),
        sys::status_kib("self", "VmRSS").unwrap_or(0),
        pipeline.windows
    );
    Ok(())
}

struct ChildMemory {
    hwm_kib: u64,
    baseline_kib: u64,
    rate: f64,
}

fn run_memory_child(dir: &Path, records: u64) -> anyhow::Result<ChildMemory> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(&exe)
        .arg("--memory-child")
        .arg(dir)
        .arg(records.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("re-exec {}", exe.display()))?;
    if !out.status.success() {
        bail!("memory child for {records} records failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("MEMCHILD ")).context("memory child printed no result")?;
    let field = |k: &str| -> Option<f64> {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    let (Some(hwm), Some(base), Some(secs)) = (field("hwm_kib"), field("baseline_rss_kib"), field("secs"))
    else {
        bail!("memory child: unreadable result {line:?}");
    };
    Ok(ChildMemory { hwm_kib: hwm as u64, baseline_kib: base as u64, rate: records as f64 / secs })
}

fn stage_memory(o: &Options, dir: &Path, table: &mut Table) -> anyhow::Result<()> {
    const S: &str = "4. memory: peak RSS of a child process folding JSON records with 100 features (50 numeric, 50 categorical) through the pipeline";
    let schema = Schema::wide(MEMORY_FEATURES);
    std::fs::write(dir.join("memory.profile"), workload::profile(&schema, REFERENCE_SEED, 20_000).to_json())?;
    let (a, b) = (o.memory_records[0], o.memory_records[1]);
    let mut results = Vec::new();
    for n in [a, b] {
        progress(format!("memory: child folding {} records", count(n)));
        results.push(run_memory_child(dir, n)?);
    }
    let limit = 64.0;
    for (n, r) in [a, b].iter().zip(&results) {
        let mib = r.hwm_kib as f64 / 1024.0;
        table.check(
            S,
            format!("peak RSS after {} records", count(*n)),
            format!(
                "{mib:.1} MiB (RSS {:.1} MiB before folding; {}rec/s)",
                r.baseline_kib as f64 / 1024.0,
                si(r.rate)
            ),
            format!("< {limit} MiB"),
            mib < limit,
        );
    }
    let growth = 100.0 * (results[1].hwm_kib as f64 - results[0].hwm_kib as f64) / results[0].hwm_kib as f64;
    table.check(
        S,
        format!("growth {} -> {} records", count(a), count(b)),
        format!("{growth:+.2}%"),
        "< 5%",
        growth < 5.0,
    );
    let sample = Generator::new(&schema, STREAM_SEED).json_messages(200);
    let avg = sample.iter().map(Vec::len).sum::<usize>() as f64 / sample.len() as f64;
    table.info(S, "message pool the child cycles through", format!("{MEMORY_POOL} messages of ~{avg:.0} B"));
    Ok(())
}

// ---------------------------------------------------------------------------------
// Stage 5: soundness of the verdicts

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn stage_soundness(o: &Options, table: &mut Table) -> anyhow::Result<()> {
    const S: &str = "5. soundness of the verdicts (credit schema, 10 features; v2 | v1 side by side)";
    // 100 windows in quick mode: one alarm is then 1%, the target's resolution.
    let windows = if o.quick { 100 } else { 400 };
    let sizes: &[u64] = &[100, 500, 2_000, 10_000, 100_000];
    let mut population = soundness::Population::credit();
    let mut worst_null = (0.0f64, 0.0f64);
    let mut worst_dataset = (0.0f64, 0.0f64);
    let mut worst_rescale = (0.0f64, 0.0f64);
    for (r, &reference) in [1_000u64, 50_000].iter().enumerate() {
        for (w, &size) in sizes.iter().enumerate() {
            progress(format!("soundness: reference {reference}, windows of {size}"));
            let c = soundness::run_cell(&mut population, 100 + (r * 10 + w) as u64, reference, size, windows);
            let label = format!("ref {} x window {}", count(reference), count(size));
            table.info(
                S,
                format!("{label}: no change, features | dataset flagged"),
                format!(
                    "v2 {} (worst feature {}) | {}; v1 {} (worst {}) | {}",
                    pct(c.null_feature_rate.0),
                    pct(c.null_worst_feature_rate.0),
                    pct(c.null_dataset_rate.0),
                    pct(c.null_feature_rate.1),
                    pct(c.null_worst_feature_rate.1),
                    pct(c.null_dataset_rate.1)
                ),
            );
            table.info(
                S,
                format!("{label}: 1% rescaling | 0.5 sigma shift flagged"),
                format!(
                    "v2 {} | {}; v1 {} | {}",
                    pct(c.rescale_rate.0),
                    pct(c.shift_rate.0),
                    pct(c.rescale_rate.1),
                    pct(c.shift_rate.1)
                ),
            );
            table.info(
                S,
                format!("{label}: sequential false alarms per 1,000 | delay at 0.5 sigma"),
                format!(
                    "{:.1} | median {}, {} within 2 windows, worst {}",
                    c.sequential_false_per_1000,
                    c.median_delay().map_or("never".to_owned(), |d| d.to_string()),
                    pct(c.share_within(2)),
                    c.worst_delay().map_or("over 10".to_owned(), |d| d.to_string())
                ),
            );
            worst_null.0 = worst_null.0.max(c.null_worst_feature_rate.0);
            worst_null.1 = worst_null.1.max(c.null_worst_feature_rate.1);
            worst_dataset.0 = worst_dataset.0.max(c.null_dataset_rate.0);
            worst_dataset.1 = worst_dataset.1.max(c.null_dataset_rate.1);
            worst_rescale.0 = worst_rescale.0.max(c.rescale_rate.0);
            worst_rescale.1 = worst_rescale.1.max(c.rescale_rate.1);
            let shift_target = if size >= 500 { 0.95 } else { 0.5 };
            table.check(
                S,
                format!("{label}: 0.5 sigma shift caught (v2)"),
                pct(c.shift_rate.0),
                format!(">= {}", pct(shift_target)),
                c.shift_rate.0 >= shift_target,
            );
            if size == 100 {
                table.check(
                    S,
                    format!("{label}: sequential delay at 0.5 sigma (median over features x 10 shifts)"),
                    format!(
                        "{} windows ({} within 2)",
                        c.median_delay().map_or("never".to_owned(), |d| d.to_string()),
                        pct(c.share_within(2))
                    ),
                    "<= 2 windows",
                    c.median_delay().is_some_and(|d| d <= 2),
                );
            }
        }
    }
    table.check(
        S,
        "worst feature's null alarm rate, any cell (v2; v1 beside)",
        format!("{} (v1 {})", pct(worst_null.0), pct(worst_null.1)),
        "<= 1%",
        worst_null.0 <= 0.01,
    );
    table.check(
        S,
        "null dataset alarm rate, any cell (v2; v1 beside)",
        format!("{} (v1 {})", pct(worst_dataset.0), pct(worst_dataset.1)),
        "<= 1%",
        worst_dataset.0 <= 0.01,
    );
    table.check(
        S,
        "1% rescaling flagged, any cell (v2; v1 beside)",
        format!("{} (v1 {})", pct(worst_rescale.0), pct(worst_rescale.1)),
        "<= 2%",
        worst_rescale.0 <= 0.02,
    );
    let long = if o.quick { 1_000 } else { 10_000 };
    for (reference, size) in [(1_000u64, 100_000u64), (50_000, 100), (1_000, 100)] {
        progress(format!(
            "soundness: sequential, {long} null windows, reference {reference}, windows of {size}"
        ));
        let by_feature = soundness::sequential_null_run(&mut population, 7 + size, reference, size, long, 10);
        let alarms: usize = by_feature.values().sum();
        let worst = by_feature.values().copied().max().unwrap_or(0);
        let allowed = long as f64 * DriftSettings::default().alpha_sequential;
        table.check(
            S,
            format!(
                "sequential false alarms per feature over {} null windows (10 references), ref {} x window {}",
                count(long as u64),
                count(reference),
                count(size)
            ),
            if by_feature.is_empty() {
                "none".to_owned()
            } else {
                format!("worst {worst}; all features {alarms} ({by_feature:?})")
            },
            format!("<= {allowed:.0} per feature (alpha_sequential per window)"),
            worst as f64 <= allowed.max(1.0),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Stage 6: offline scoring

fn stage_offline(o: &Options, dir: &Path, table: &mut Table) -> anyhow::Result<()> {
    const S: &str = "6. offline: `driftscope score` and `reference build` on Parquet files of the bench schema (20 numeric, 5 categorical, a score), vs Evidently DataDriftPreset";
    let rows = o.offline_rows as usize;
    let schema = Schema::bench();
    let reference = dir.join("offline-reference.parquet");
    let current = dir.join("offline-current.parquet");
    progress(format!("offline: writing {} + {} rows of Parquet", count(rows as u64), count(rows as u64)));
    offline::write_parquet(&schema, REFERENCE_SEED, rows, &reference)?;
    offline::write_parquet(&schema, STREAM_SEED, rows, &current)?;
    let binary = driftscope_binary(o)?;
    let size = format!("{} x {}", count(rows as u64), count(rows as u64));
    let mib = |m: &offline::Measured| {
        m.peak_mib.map_or("n/a (no /usr/bin/time)".to_owned(), |p| format!("{p:.1} MiB"))
    };
    // The bound: 64 MiB plus one reference column (8 bytes a row).
    let column_mib = rows as f64 * 8.0 / (1024.0 * 1024.0);
    let limit = 64.0 + column_mib;
    progress("offline: driftscope score");
    let score = offline::measure(
        &binary,
        &[
            "score".as_ref(),
            "--reference".as_ref(),
            reference.as_os_str(),
            "--current".as_ref(),
            current.as_os_str(),
            "--format".as_ref(),
            "json".as_ref(),
        ],
        // Exit 1 is the drift verdict, not a failure.
        &[0, 1],
    )?;
    if !score.stdout.contains("\"dataset\"") {
        bail!("driftscope score printed no report");
    }
    table.info(S, format!("score {size}: wall time"), format!("{:.2} s", score.wall_s));
    match score.peak_mib {
        Some(p) => table.check(
            S,
            format!("score {size}: peak RSS"),
            mib(&score),
            format!("<= {limit:.0} MiB (64 + one column)"),
            p <= limit,
        ),
        None => table.info(S, format!("score {size}: peak RSS"), mib(&score)),
    }
    progress("offline: driftscope reference build");
    let profile = dir.join("offline.profile");
    let build = offline::measure(
        &binary,
        &[
            "reference".as_ref(),
            "build".as_ref(),
            "--input".as_ref(),
            reference.as_os_str(),
            "--output".as_ref(),
            profile.as_os_str(),
        ],
        &[0],
    )?;
    table.info(
        S,
        format!("reference build {}: wall time", count(rows as u64)),
        format!("{:.2} s", build.wall_s),
    );
    match build.peak_mib {
        Some(p) => table.check(
            S,
            format!("reference build {}: peak RSS", count(rows as u64)),
            mib(&build),
            format!("<= {limit:.0} MiB"),
            p <= limit,
        ),
        None => table.info(S, format!("reference build {}: peak RSS", count(rows as u64)), mib(&build)),
    }
    match &o.evidently_python {
        None => table.info(
            S,
            "Evidently DataDriftPreset",
            "SKIPPED: no --evidently-python (scripts/bench.sh -- --stages offline --evidently makes one)",
        ),
        Some(python) => {
            progress("offline: Evidently DataDriftPreset (this takes a while)");
            let (evidently, compute) = offline::evidently(python, dir, &reference, &current)?;
            table.info(
                S,
                format!("Evidently {size}: compute (process)"),
                format!("{compute:.2} s ({:.1} s)", evidently.wall_s),
            );
            table.info(S, format!("Evidently {size}: peak RSS"), mib(&evidently));
            let ratio = compute / score.wall_s;
            table.check(
                S,
                "Evidently compute / driftscope score (whole process)",
                format!("{ratio:.0}x"),
                ">= 100x",
                ratio >= 100.0,
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Stage 2: end-to-end

fn driftscope_binary(o: &Options) -> anyhow::Result<PathBuf> {
    let path = match &o.driftscope {
        Some(p) => p.clone(),
        None => {
            // <target>/release/deps/harness-<hash>  ->  <target>/release/driftscope
            let exe = std::env::current_exe()?;
            exe.parent().and_then(Path::parent).map(|d| d.join("driftscope")).context("no target dir")?
        }
    };
    if !path.is_file() {
        bail!(
            "the driftscope binary is not at {} (build it with `cargo build --release --bin driftscope`, or pass --driftscope PATH)",
            path.display()
        );
    }
    Ok(path)
}

fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn stage_e2e(o: &Options, dir: &Path, table: &mut Table) -> anyhow::Result<()> {
    const S: &str =
        "2. end-to-end on the real broker (JSON bench schema, 4 partitions, fresh topic and groups)";
    let binary = driftscope_binary(o)?;
    let n = o.messages;
    if n < 2 * WINDOW_RECORDS {
        bail!("--messages must be at least {}", 2 * WINDOW_RECORDS);
    }
    let schema = Schema::bench();
    let profile_path = dir.join("e2e.profile");
    std::fs::write(&profile_path, workload::profile(&schema, REFERENCE_SEED, 100_000).to_json())?;
    let topic = kafka::Topic::create(&o.bootstrap, &unique("driftscope-bench"))?;
    progress(format!(
        "e2e: producing {} messages to {} ({} partitions)",
        count(n),
        topic.name,
        kafka::PARTITIONS
    ));
    let produce_time = {
        let pool = Generator::new(&schema, STREAM_SEED).json_messages(100_000);
        kafka::produce(&o.bootstrap, &topic.name, &pool, n)?
    };
    let timeout = Duration::from_secs(120 + n / 10_000);
    // Rounds alternate the three readers on the same topic, so a slow spell of the
    // shared machine (or of the broker) lands on all of them, and each round's ratios
    // compare neighbours in time.
    let (mut bare, mut batched, mut ds) = (Vec::new(), Vec::new(), Vec::new());
    // The broker's CPU while each reader reads, when it runs here: on two cores it
    // shares the CPU with the reader, so its cost per message bounds the rates.
    let broker = sys::find_process("kafka.Kafka");
    let broker_cpu = || broker.as_deref().and_then(sys::cpu_seconds);
    let mut broker_per_m: [Vec<f64>; 3] = Default::default();
    let mut measure_broker = |which: usize, before: Option<f64>| {
        if let (Some(b0), Some(b1)) = (before, broker_cpu()) {
            broker_per_m[which].push((b1 - b0) * 1e6 / n as f64);
        }
    };
    for round in 1..=o.e2e_rounds {
        let tag = format!("round {round}/{}", o.e2e_rounds);
        progress(format!("e2e {tag}: (a) bare consumer reading to the end"));
        let b0 = broker_cpu();
        bare.push(kafka::bare_consume(
            &o.bootstrap,
            &topic.name,
            &unique("bench-bare"),
            &o.kafka_properties,
            n,
            timeout,
        )?);
        measure_broker(0, b0);
        progress(format!("e2e {tag}: (a2) bare consumer reading in batches, to the end"));
        let b0 = broker_cpu();
        batched.push(kafka::bare_consume_batched(
            &o.bootstrap,
            &topic.name,
            &unique("bench-bare-batched"),
            &o.kafka_properties,
            n,
            timeout,
        )?);
        measure_broker(1, b0);
        progress(format!("e2e {tag}: (b) {} run reading to the end", binary.display()));
        let b0 = broker_cpu();
        let round_dir = dir.join(format!("e2e-{round}"));
        std::fs::create_dir_all(&round_dir)?;
        let reports = round_dir.join("reports.jsonl");
        let config_path = round_dir.join("driftscope.toml");
        std::fs::write(
            &config_path,
            workload::config_toml(
                &o.bootstrap,
                &unique("bench-driftscope"),
                &topic.name,
                "json",
                &profile_path,
                &round_dir.join("state"),
                &reports,
                &o.kafka_properties,
            ),
        )?;
        ds.push(kafka::driftscope_consume(
            &binary,
            &config_path,
            &reports,
            &round_dir.join("driftscope.log"),
            n,
            timeout,
        )?);
        measure_broker(2, b0);
    }
    drop(topic);

    let incl = |r: &kafka::ConsumeResult| n as f64 / r.total.as_secs_f64();
    let steady = |r: &kafka::ConsumeResult| r.steady_rate;
    let cpu_per_m = |r: &kafka::ConsumeResult| r.cpu_seconds * 1e6 / n as f64;
    // "median X (x1, x2, ...)" of one figure over the rounds.
    let over_rounds = |v: Vec<f64>, fmt: &dyn Fn(f64) -> String| -> String {
        if v.len() == 1 {
            return fmt(v[0]);
        }
        let each: Vec<String> = v.iter().map(|&x| fmt(x)).collect();
        format!("median {} ({})", fmt(median(v)), each.join(", "))
    };
    let rate = |x: f64| format!("{}msg/s", si(x));
    let secs = |x: f64| format!("{x:.2}");
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    table.info(
        S,
        "messages produced, then read by (a), (a2), (b) in turn",
        format!(
            "{} in {:.1} s ({}msg/s); {} round(s)",
            count(n),
            produce_time.as_secs_f64(),
            si(n as f64 / produce_time.as_secs_f64()),
            o.e2e_rounds
        ),
    );
    table.info(
        S,
        "(a) bare BaseConsumer, read and drop: steady",
        over_rounds(bare.iter().map(steady).collect(), &rate),
    );
    table.info(S, "(a) incl. start-up", over_rounds(bare.iter().map(incl).collect(), &rate));
    table.info(
        S,
        "(a) CPU-s per 1M msgs (harness process)",
        over_rounds(bare.iter().map(cpu_per_m).collect(), &secs),
    );
    table.info(
        S,
        "(a2) bare consumer reading in batches, as (b): steady",
        over_rounds(batched.iter().map(steady).collect(), &rate),
    );
    table.info(S, "(a2) CPU-s per 1M msgs", over_rounds(batched.iter().map(cpu_per_m).collect(), &secs));
    table.info(S, "(b) driftscope run: steady", over_rounds(ds.iter().map(steady).collect(), &rate));
    table.info(S, "(b) incl. start-up", over_rounds(ds.iter().map(incl).collect(), &rate));
    let ds_cpu = median(ds.iter().map(cpu_per_m).collect());
    table.check(
        S,
        "(b) CPU-s per 1M msgs (utime+stime, whole run)",
        over_rounds(ds.iter().map(cpu_per_m).collect(), &secs),
        "<= 1.2 median",
        ds_cpu <= 1.2,
    );
    table.info(
        S,
        "(b) CPU-s per 1M msgs, steady phase (first report to last)",
        over_rounds(ds.iter().filter_map(|r| r.steady_cpu_per_m).collect(), &secs),
    );
    table.info(
        S,
        "(b) driftscope peak RSS (VmHWM), highest",
        ds.iter()
            .filter_map(|r| r.peak_rss_kib)
            .max()
            .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    for (which, reader) in ["(a)", "(a2)", "(b)"].iter().enumerate() {
        if !broker_per_m[which].is_empty() {
            table.info(
                S,
                format!("broker CPU-s per 1M msgs while {reader} read"),
                over_rounds(broker_per_m[which].clone(), &secs),
            );
        }
    }
    let ratios: Vec<f64> = ds.iter().zip(&bare).map(|(d, a)| d.steady_rate / a.steady_rate).collect();
    let ratio = median(ratios.clone());
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    table.check(S, "ratio b/a (steady state)", over_rounds(ratios, &pct), ">= 85% median", ratio >= 0.85);
    table.check(S, "ratio b/a, lowest round", pct(lowest), ">= 70%", lowest >= 0.70);
    table.info(
        S,
        "ratio b/a (incl. start-up)",
        over_rounds(ds.iter().zip(&bare).map(|(d, a)| incl(d) / incl(a)).collect(), &pct),
    );
    table.info(
        S,
        "ratio b/a2 (steady; reading costs alike)",
        over_rounds(ds.iter().zip(&batched).map(|(d, a)| d.steady_rate / a.steady_rate).collect(), &pct),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------

fn run(o: &Options) -> anyhow::Result<(Table, Vec<String>)> {
    let dir = tempfile::Builder::new().prefix("driftscope-bench-").tempdir()?;
    let mut table = Table::default();
    let mut failures: Vec<String> = Vec::new();
    let started = Instant::now();
    let wants = |s: &str| o.stages.iter().any(|x| x == s);
    println!("driftscope benchmark harness{}", if o.quick { " (--quick)" } else { "" });
    println!("  machine : {} CPUs (nproc), {}", sys::nproc(), sys::cpu_model());
    println!("  commit  : {}", sys::git_commit());
    println!("  load avg: {} at start", sys::loadavg());
    println!("  in-process rates are per CPU-second of the measuring thread (wall-clock rates in");
    println!("  brackets) and the targets are checked on them, so a busy machine cannot turn a PASS");
    println!("  into a MISS; end-to-end rates are wall-clock.");

    let mut stage = |name: &str, table: &mut Table, f: &mut dyn FnMut(&mut Table) -> anyhow::Result<()>| {
        let t = Instant::now();
        match f(table) {
            Err(e) => {
                eprintln!("[harness] stage {name} FAILED: {e:#}");
                failures.push(format!("{name}: {e:#}"));
            }
            Ok(()) => progress(format!("stage {name} done in {:.1} s", t.elapsed().as_secs_f64())),
        }
    };
    if wants("inprocess") {
        stage("inprocess", &mut table, &mut |t| stage_inprocess(o, dir.path(), t));
    }
    if wants("open_inference") {
        stage("open_inference", &mut table, &mut |t| {
            let profile = workload::profile(&Schema::bench(), REFERENCE_SEED, 100_000);
            let profile_path = dir.path().join("open_inference.profile");
            std::fs::write(&profile_path, profile.to_json())?;
            let reference = Reference::new(profile, DriftSettings::default(), &BTreeMap::new())
                .map_err(|e| anyhow::anyhow!("reference: {e}"))?;
            open_inference::stage(o.quick, &profile_path, dir.path(), &reference, STREAM_SEED, t)
        });
    }
    if wants("confluent") {
        stage("confluent", &mut table, &mut |t| confluent::stage(o.quick, dir.path(), t));
    }
    if wants("labels") {
        stage("labels", &mut table, &mut |t| labels::stage(o.quick, t));
    }
    if wants("e2e") {
        let asked = o.explicit_stages || o.require_broker;
        const S: &str = "2. end-to-end on the real broker";
        if o.quick && !o.explicit_stages {
            table.info(S, "SKIPPED", "--quick mode (run without --quick, or with --stages e2e)");
        } else {
            match kafka::broker_answers(&o.bootstrap) {
                Err(e) if !asked => table.info(
                    S,
                    "SKIPPED",
                    format!(
                        "no broker answers at {} ({e}); start one with scripts/kafka.sh start",
                        o.bootstrap
                    ),
                ),
                Err(e) => {
                    stage("e2e", &mut table, &mut |_| bail!("no broker answers at {} ({e})", o.bootstrap));
                }
                Ok(()) => stage("e2e", &mut table, &mut |t| stage_e2e(o, dir.path(), t)),
            }
        }
    }
    if wants("scale") {
        const S: &str = "2b. global windows on the real broker";
        if o.quick && !o.explicit_stages {
            table.info(S, "SKIPPED", "--quick mode (run without --quick, or with --stages scale)");
        } else {
            match kafka::broker_answers(&o.bootstrap) {
                Err(e) if !(o.explicit_stages || o.require_broker) => table.info(
                    S,
                    "SKIPPED",
                    format!(
                        "no broker answers at {} ({e}); start one with scripts/kafka.sh start",
                        o.bootstrap
                    ),
                ),
                Err(e) => {
                    stage("scale", &mut table, &mut |_| bail!("no broker answers at {} ({e})", o.bootstrap));
                }
                Ok(()) => stage("scale", &mut table, &mut |t| scale::stage(o, dir.path(), t)),
            }
        }
    }
    if wants("scoring") {
        stage("scoring", &mut table, &mut |t| stage_scoring(o, t));
    }
    if wants("memory") {
        stage("memory", &mut table, &mut |t| stage_memory(o, dir.path(), t));
    }
    if wants("soundness") {
        stage("soundness", &mut table, &mut |t| stage_soundness(o, t));
    }
    if wants("offline") {
        stage("offline", &mut table, &mut |t| stage_offline(o, dir.path(), t));
    }
    // Ends the closure's mutable borrow of `failures` before it is read below.
    #[allow(clippy::drop_non_drop)]
    drop(stage);
    println!("  load avg: {} at end; harness ran {:.0} s", sys::loadavg(), started.elapsed().as_secs_f64());
    if !failures.is_empty() || std::env::var_os("DRIFTSCOPE_BENCH_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!("[harness] work files kept in {}", kept.display());
    }
    Ok((table, failures))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--memory-child") {
        let (Some(dir), Some(records)) = (args.get(1), args.get(2).and_then(|r| r.parse().ok())) else {
            eprintln!("usage: --memory-child DIR RECORDS");
            return ExitCode::from(2);
        };
        return match memory_child(Path::new(dir), records) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("memory child: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary with
    // no arguments in a debug build, where figures mean nothing and a full run would
    // take minutes: say how to run it and stop.
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "benchmark harness: run `scripts/bench.sh` (or `cargo bench --bench harness`); nothing to do under `cargo test`"
        );
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = args.into_iter().filter(|a| a != "--bench").collect();
    let options = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("harness: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok((table, failures)) => {
            table.print();
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                for f in &failures {
                    println!("STAGE FAILED: {f}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("harness: {e:#}");
            ExitCode::FAILURE
        }
    }
}
