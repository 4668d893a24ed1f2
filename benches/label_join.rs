//! The label join's speed, in process, one core (issue 15): predictions and their labels
//! through `stats::label_join` (ids hashed beforehand, and with the hashing), the
//! monitor's per-message path (`monitor::labels`, JSON read with serde_json), and a
//! binary window's metrics at its close; with a calibrated reference, the same path
//! estimating performance per prediction, and the estimate's own per-row cost (a
//! lookup in a 256-breakpoint calibration and four sums). Printed, never asserted; the
//! harness's `labels` stage measures the issue's figures (with the metrics beside
//! scoring a window) against their targets. Last, the handover copies a commit writes
//! with `labels.handover_topic` (a million entries over 16 partitions): bytes per entry,
//! raw and lz4-compressed, and the time to encode and compress them.
//!
//!   cargo bench --bench label_join

use driftscope::config::Config;
use driftscope::ingest::handover::HandoverRecord;
use driftscope::monitor::labels::StreamLabels;
use driftscope::stats::estimate::EstimateSketch;
use driftscope::stats::isotonic::Calibration;
use driftscope::stats::label_join::{JoinSettings, LabelJoin, id_hash};
use driftscope::stats::model_profile::{Cell, ModelProfileBuilder, ModelTask};
use driftscope::stats::performance::{BinarySketch, PerformanceSketch};
use driftscope::telemetry::Telemetry;
use std::hint::black_box;
use std::time::Instant;

const N: usize = 1_000_000;
/// Labels arrive this many predictions after their own.
const LAG: usize = 10_000;

fn rate(what: &str, n: usize, started: Instant) {
    let s = started.elapsed().as_secs_f64();
    println!("{what:<58} {:>8.2} M/s  ({:.0} ns each)", n as f64 / s / 1e6, s * 1e9 / n as f64);
}

fn main() {
    let ids: Vec<u64> = (0..N).map(|i| id_hash(format!("req-{i}").as_bytes())).collect();
    // A small state (in cache) and a million entries (the index and ring out of cache).
    for max_pending in [2 * LAG, N] {
        let settings = JoinSettings { ttl_ms: 600_000, max_pending, sample: 1.0 };
        let mut join = LabelJoin::new(settings);
        let mut events = Vec::with_capacity(16);
        let started = Instant::now();
        for i in 0..N {
            join.prediction(ids[i], (i / 10_000) as i64, 0.5, i as i64, &mut events);
            if i >= LAG && i % 10 != 0 {
                join.label(ids[i - LAG], 1.0, i as i64, &mut events);
            }
            events.clear();
        }
        rate(&format!("join, max_pending {max_pending}: prediction + 90% of labels"), N, started);
        println!(
            "  joined {}, entries {}, {:.1} bytes each",
            join.counts().joined,
            join.len(),
            join.allocated_bytes() as f64 / join.len() as f64
        );
    }

    let keys: Vec<String> = (0..N).map(|i| format!("req-{i}")).collect();
    let started = Instant::now();
    let mut h = 0u64;
    for k in &keys {
        h ^= id_hash(k.as_bytes());
    }
    black_box(h);
    rate("id_hash of a 9-11 byte id", N, started);

    let text = "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\n\
                window = { type = \"tumbling_count\", size = 10000 }\nreference = { from_stream = 10 }\n\
                [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n[streams.labels]\ntopics = [\"l\"]\n\
                prediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\nttl = \"10m\"\n\
                task = { type = \"binary\", score = \"/score\" }\n";
    let config = Config::from_toml(text, std::path::Path::new("bench.toml")).expect("config");
    let stream = &config.streams[0];
    let telemetry = Telemetry::new();
    // A reference's model figures, with a calibration of the full 256 breakpoints
    // (y = s^2), the most a profile keeps.
    let mut reference = ModelProfileBuilder::new(ModelTask::Binary { threshold: 0.5 }, "y", "score");
    for i in 0..1000 {
        reference.add(Cell::Number(f64::from(i % 2)), Cell::Number(f64::from(i) / 1000.0));
    }
    let mut model = reference.finish().expect("rows");
    let x: Vec<f64> = (0..256).map(|i| f64::from(i) / 255.0).collect();
    let y: Vec<f64> = x.iter().map(|v| v * v).collect();
    let calibration = Calibration { x, y, rows: 1000, max_error: 0.0 };
    model.calibration = Some(calibration.clone());
    let m = N / 4;
    let predictions: Vec<Vec<u8>> = (0..m)
        .map(|i| {
            format!(r#"{{"id":"req-{i}","x":{},"score":{}}}"#, i % 97, (i % 1000) as f64 / 1000.0)
                .into_bytes()
        })
        .collect();
    let label = br#"{"y":1}"#;
    for estimating in [false, true] {
        let mut labels =
            StreamLabels::new("s", stream.labels.as_ref().expect("labels"), &stream.window, &telemetry)
                .map_err(|e| e.message)
                .expect("labels");
        if estimating {
            labels.use_reference(Some(&model), &telemetry);
        }
        let started = Instant::now();
        for (i, p) in predictions.iter().enumerate() {
            let _ = labels.prediction(p, None, i as i64);
            if i >= LAG {
                let _ = labels.label_message(label, Some(keys[i - LAG].as_bytes()), i as i64);
            }
            if i % 1000 == 0 {
                labels.tick(i as i64);
            }
        }
        let what = if estimating { ", estimating" } else { "" };
        rate(&format!("monitor path: JSON prediction + JSON label message{what}"), m, started);
    }
    let scores: Vec<f64> = (0..N).map(|i| (i.wrapping_mul(7919) % 100_003) as f64 / 100_003.0).collect();
    let mut estimate = EstimateSketch::default();
    let started = Instant::now();
    for &s in &scores {
        estimate.add(calibration.apply(s), s >= 0.5);
    }
    black_box(estimate);
    rate("estimate: calibrate a score (256 breakpoints) and add it", N, started);

    let mut sketch = BinarySketch::new(0.5);
    for i in 0..10_000 {
        sketch.add((i % 1000) as f64 / 1000.0, i % 3 == 0).expect("valid");
    }
    let sketch = PerformanceSketch::Binary(sketch);
    let reps = 10_000;
    let started = Instant::now();
    for _ in 0..reps {
        black_box(sketch.metrics());
    }
    let each = started.elapsed().as_secs_f64() / reps as f64;
    println!("{:<58} {:>8.1} us", "binary window metrics at close (10,000 rows)", each * 1e6);

    copies(&ids);
}

/// The handover copies of a join of `N` entries (predictions over 16 partitions, 90% of
/// them joined `LAG` later: waiting predictions and joined ids' markers), as a commit
/// writes them when every partition changed: one record per partition.
fn copies(ids: &[u64]) {
    let mut join = LabelJoin::new(JoinSettings { ttl_ms: 600_000, max_pending: N, sample: 1.0 });
    let mut events = Vec::with_capacity(16);
    // Deadlines as wall-clock milliseconds, a thousand predictions per millisecond.
    let clock = |i: usize| 1_764_000_000_000 + (i / 1000) as i64;
    for i in 0..N {
        let score = (ids[i] >> 11) as f64 / (1u64 << 53) as f64;
        join.prediction_in((i % 16) as i32, ids[i], (i / 10_000) as i64, score, clock(i), &mut events);
        if i >= LAG && i % 10 != 0 {
            let j = i - LAG;
            join.label_in((j % 16) as i32, ids[j], (j % 2) as f64, clock(i), &mut events);
        }
        events.clear();
    }
    let started = Instant::now();
    let records: Vec<Vec<u8>> = join
        .snapshot()
        .entries()
        .by_partition()
        .into_values()
        .map(|entries| {
            let record = HandoverRecord {
                positions: vec![("predictions".into(), 123_456_789), ("labels".into(), 123_456_789)],
                classes: Vec::new(),
                entries,
                writer: 1,
                copy: true,
            };
            rmp_serde::to_vec_named(&record).expect("encoded")
        })
        .collect();
    let encode = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let compressed: usize = records.iter().map(|r| lz4_flex::block::compress(r).len()).sum();
    let compress = started.elapsed().as_secs_f64();
    let raw: usize = records.iter().map(Vec::len).sum();
    let entries = join.len() as f64;
    println!(
        "handover copies of {} entries: {:.1} bytes each, {:.1} lz4-compressed; encode {:.1} ms, lz4 {:.1} ms",
        join.len(),
        raw as f64 / entries,
        compressed as f64 / entries,
        encode * 1e3,
        compress * 1e3
    );
}
