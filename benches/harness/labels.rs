//! Stage `labels`: the label join in process, one thread, rates per CPU-second of the
//! thread: the join itself (ids hashed beforehand) with a million entries held, the
//! monitor's per-message path (JSON prediction and JSON label messages read at their
//! pointers, joined, windowed), the memory per waiting entry, and a binary window's
//! metrics at its close beside scoring the same window's features.

use super::sys;
use super::{Table, count, median, si};
use driftscope::config::Config;
use driftscope::monitor::labels::StreamLabels;
use driftscope::stats::label_join::{JoinSettings, LabelJoin, id_hash};
use driftscope::stats::performance::{BinarySketch, PerformanceSketch};
use driftscope::stats::{
    DriftSettings, FeatureKind, FeatureSpec, ProfileBuilder, Reference, ValueSink, WindowInfo, score_window,
};
use driftscope::telemetry::Telemetry;
use std::collections::BTreeMap;
use std::hint::black_box;

const S: &str = "1c. label join, in process, one thread (binary task, labels 10,000 predictions late)";
/// Labels arrive this many predictions after their own.
const LAG: usize = 10_000;

pub fn stage(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let n = if quick { 200_000 } else { 1_000_000 };
    let rounds = if quick { 3 } else { 5 };
    let ids: Vec<u64> = (0..n).map(|i| id_hash(format!("req-{i}").as_bytes())).collect();

    // The join: every prediction, 90% of the labels, the entries out of cache.
    let mut rates = Vec::new();
    let mut bytes_per_entry = 0.0;
    for _ in 0..rounds {
        let mut join = LabelJoin::new(JoinSettings { ttl_ms: 600_000, max_pending: n, sample: 1.0 });
        let mut events = Vec::with_capacity(16);
        let (_, t) = sys::timed(|| {
            for i in 0..n {
                join.prediction(ids[i], (i / 10_000) as i64, 0.5, i as i64, &mut events);
                if i >= LAG && i % 10 != 0 {
                    join.label(ids[i - LAG], 1.0, i as i64, &mut events);
                }
                events.clear();
            }
        });
        rates.push(n as f64 / t.cpu.as_secs_f64());
        bytes_per_entry = join.allocated_bytes() as f64 / join.len().max(1) as f64;
        black_box(join.counts().joined);
    }
    let join_rate = median(rates);
    table.check(
        S,
        format!("join: predictions/s + 90% of labels, {} held", count(n as u64)),
        format!("{}/s per CPU-s", si(join_rate)),
        ">= 1 M/s",
        join_rate >= 1e6,
    );
    table.check(
        S,
        "bytes per waiting entry (ring + index)",
        format!("{bytes_per_entry:.1}"),
        "<= 64",
        bytes_per_entry <= 64.0,
    );

    // The monitor's path: a JSON prediction message and a JSON label message each.
    let text = "[[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\n\
                window = { type = \"tumbling_count\", size = 10000 }\nreference = { from_stream = 10 }\n\
                [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n[streams.labels]\ntopics = [\"l\"]\n\
                prediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\nttl = \"10m\"\n\
                task = { type = \"binary\", score = \"/score\" }\n";
    let config = Config::from_toml(text, std::path::Path::new("bench.toml"))
        .map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let stream = &config.streams[0];
    let labels_config = stream.labels.as_ref().ok_or_else(|| anyhow::anyhow!("no labels table"))?;
    let telemetry = Telemetry::new();
    let m = n / 4;
    let keys: Vec<String> = (0..m).map(|i| format!("req-{i}")).collect();
    let predictions: Vec<Vec<u8>> = (0..m)
        .map(|i| {
            format!(r#"{{"id":"req-{i}","x":{},"score":{}}}"#, i % 97, (i % 1000) as f64 / 1000.0)
                .into_bytes()
        })
        .collect();
    let label = br#"{"y":1}"#;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let mut labels = StreamLabels::new("s", labels_config, &stream.window, &telemetry)
            .map_err(|e| anyhow::anyhow!("labels: {}", e.message))?;
        let (_, t) = sys::timed(|| {
            for (i, p) in predictions.iter().enumerate() {
                let _ = labels.prediction(p, None, i as i64);
                if i >= LAG {
                    let _ = labels.label_message(label, Some(keys[i - LAG].as_bytes()), i as i64);
                }
                if i % 1000 == 0 {
                    labels.tick(i as i64);
                }
            }
        });
        rates.push(m as f64 / t.cpu.as_secs_f64());
    }
    let path_rate = median(rates);
    table.check(
        S,
        "monitor path: JSON prediction + its JSON label message",
        format!("{} pairs/s per CPU-s", si(path_rate)),
        ">= 1 M/s",
        path_rate >= 1e6,
    );

    // A binary window's metrics at its close, beside scoring a small stream's window.
    let mut sketch = BinarySketch::new(0.5);
    for i in 0..10_000 {
        let _ = sketch.add((i % 1000) as f64 / 1000.0, i % 3 == 0);
    }
    let sketch = PerformanceSketch::Binary(sketch);
    let reps = if quick { 2_000 } else { 10_000 };
    let (_, t) = sys::timed(|| {
        for _ in 0..reps {
            black_box(sketch.metrics());
        }
    });
    let metrics_s = t.cpu.as_secs_f64() / reps as f64;
    let settings = DriftSettings::default();
    let specs: Vec<FeatureSpec> = (0..10)
        .map(|f| FeatureSpec {
            name: format!("f{f}"),
            kind: if f < 5 { FeatureKind::Numeric } else { FeatureKind::Categorical },
            bins: settings.bins,
        })
        .collect();
    let fill = |sink: &mut dyn ValueSink, rows: usize, seed: usize| {
        for i in 0..rows {
            sink.add_records(1);
            for f in 0..10 {
                let u =
                    ((i + seed).wrapping_mul(2_654_435_761).wrapping_add(f * 97) % 10_007) as f64 / 10_007.0;
                if f < 5 {
                    sink.numeric(f, u * 100.0);
                } else {
                    sink.category(f, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"][(u * 10.0) as usize]);
                }
            }
        }
    };
    let mut builder = ProfileBuilder::new(specs, settings.cdf_resolution, settings.max_categories);
    fill(&mut builder, 20_000, 0);
    let reference = Reference::new(builder.finish("labels".into(), "now".into()), settings, &BTreeMap::new())
        .map_err(|e| anyhow::anyhow!("reference: {e}"))?;
    let mut window = reference.new_window();
    fill(&mut window, 10_000, 7);
    // The first window of a size draws its nulls (the monitor does that ahead).
    black_box(score_window(&reference, &window, WindowInfo::default()));
    let reps = if quick { 50 } else { 200 };
    let (_, t) = sys::timed(|| {
        for _ in 0..reps {
            black_box(score_window(&reference, black_box(&window), WindowInfo::default()));
        }
    });
    let scoring_s = t.cpu.as_secs_f64() / reps as f64;
    let share = metrics_s / scoring_s;
    table.check(
        S,
        "binary metrics at close (10,000 rows) / scoring the window (10 features)",
        format!("{:.1} us / {:.0} us = {:.1}%", metrics_s * 1e6, scoring_s * 1e6, 100.0 * share),
        "<= 5%",
        share <= 0.05,
    );
    Ok(())
}
