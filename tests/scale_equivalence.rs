//! Global mode's answer, without a broker: records of six partitions read by three
//! instances (two partitions each), folded into per-partition panes, published as
//! partials (through their wire encoding, in a shuffled order) and merged by the
//! owner's assembler, give the windows one instance reading all six partitions gives:
//! the same windows, the same counts, scores equal to 1e-9. The Kafka legs (the
//! transaction, read_committed) are tested in `scale_partials.rs`.

use driftscope::scale::assembler::Assembler;
use driftscope::scale::panes::PartitionPanes;
use driftscope::stats::partial::{Partial, PartialHeader, SourcePartition};
use driftscope::stats::profile::{FeatureSpec, ProfileBuilder};
use driftscope::stats::window::{ClosedWindow, PaneClock, WindowSpec, Windower};
use driftscope::stats::{DriftSettings, FeatureKind, Reference, ValueSink, WindowInfo, score_window};
use std::collections::BTreeMap;

fn reference() -> Reference {
    let specs = vec![
        FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
        FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
    ];
    let mut b = ProfileBuilder::new(specs, 256, 50);
    b.add_records(2000);
    for i in 0..2000u64 {
        b.numeric(0, (i * 7919 % 1000) as f64 / 10.0);
        b.category(1, ["a", "b", "c"][(i % 3) as usize]);
    }
    let settings = DriftSettings { cdf_resolution: 256, min_samples: 1, ..Default::default() };
    Reference::new(b.finish("t".into(), "now".into()), settings, &BTreeMap::new()).unwrap()
}

/// (partition, offset, event time ms, x, category), in event-time order, with a drift
/// segment in the second half.
fn records() -> Vec<(i32, i64, i64, f64, &'static str)> {
    let mut state = 7u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut offsets = [0i64; 6];
    (0..12_000i64)
        .map(|i| {
            let partition = (next() % 6) as i32;
            let o = offsets[partition as usize];
            offsets[partition as usize] += 1;
            let shift = if i > 6000 { 30.0 } else { 0.0 };
            let x = (next() % 1000) as f64 / 10.0 + shift;
            let c = if i > 6000 && i % 2 == 0 { "c" } else { ["a", "b", "c"][(next() % 3) as usize] };
            (partition, o, i * 5, x, c)
        })
        .collect()
}

fn fold(sink: &mut impl ValueSink, x: f64, c: &str) {
    sink.add_records(1);
    sink.numeric(0, x);
    sink.category(1, c);
}

fn scores(r: &Reference, sketch: &driftscope::stats::WindowSketch) -> Vec<(String, String, f64)> {
    let report = score_window(r, sketch, WindowInfo::default());
    report
        .features
        .iter()
        .flat_map(|f| f.scores.iter().map(|(k, v)| (f.name.clone(), k.to_string(), *v)).collect::<Vec<_>>())
        .collect()
}

fn check(panes_per_window: usize) {
    let r = reference();
    let spec = WindowSpec { clock: PaneClock::Millis { pane_ms: 4000, lateness_ms: 0 }, panes_per_window };
    let recs = records();

    // One instance reading every partition.
    let mut single = Windower::new(spec);
    let mut closed: Vec<ClosedWindow> = Vec::new();
    for &(p, o, t, x, c) in &recs {
        single.observe_event_time(t);
        let pane = single.pane_for(t, &r).expect("in order: never late");
        fold(&mut pane.sketch, x, c);
        pane.cover(p as u32, o, t);
        single.advance(0, true, &mut closed);
    }

    // Three instances, two partitions each, publishing partials.
    let header = PartialHeader::new("s", "w", 1);
    let mut instances: Vec<PartitionPanes> =
        (0..3).map(|_| PartitionPanes::new(header.clone(), spec, true).unwrap()).collect();
    let mut wire: Vec<Vec<u8>> = Vec::new();
    for &(p, o, t, x, c) in &recs {
        let source = SourcePartition { topic: "in".into(), partition: p };
        let instance = &mut instances[(p % 3) as usize];
        let pane = instance.pane_for(&source, t, &r).expect("in order within a partition");
        fold(&mut pane.sketch, x, c);
        pane.cover(0, o, t);
        wire.extend(instance.close(0).iter().map(Partial::encode));
    }
    // Sizing figure for the README (printed, not asserted).
    let bytes: usize = wire.iter().map(Vec::len).sum();
    eprintln!(
        "partials: {} of {} bytes on average (2 features: 256-cell numeric, 3-category categorical; {} records each)",
        wire.len(),
        bytes / wire.len().max(1),
        recs.len() / wire.len().max(1)
    );
    // An owner that scores as partials arrive (in publishing order) hands out the same
    // windows as one that sees them all at once.
    let sources = (0..6).map(|p| SourcePartition { topic: "in".into(), partition: p });
    let mut live = Assembler::new(header.clone(), spec, sources, 60_000, 0).unwrap();
    let mut incremental = Vec::new();
    for bytes in &wire {
        live.offer(Partial::decode(bytes).expect("decodes"), 0).expect("agrees");
        incremental.extend(live.ready(&r, 0).unwrap());
    }
    assert_eq!(live.late_partials, 0);
    // The partials topic interleaves the instances' transactions.
    wire.reverse();
    let third = wire.len() / 3;
    wire.rotate_left(third);
    let sources = (0..6).map(|p| SourcePartition { topic: "in".into(), partition: p });
    let mut owner = Assembler::new(header, spec, sources, 60_000, 0).unwrap();
    for bytes in &wire {
        owner.offer(Partial::decode(bytes).expect("decodes"), 0).expect("agrees");
    }
    let global = owner.ready(&r, 0).unwrap();
    assert_eq!(
        incremental.iter().map(|w| (w.index, w.merged.sketch.snapshot())).collect::<Vec<_>>(),
        global.iter().map(|w| (w.index, w.merged.sketch.snapshot())).collect::<Vec<_>>(),
        "scoring as partials arrive gives the same windows, bit for bit"
    );

    // Every window all six partitions passed, and only those.
    let passed = (0..6).map(|p| recs.iter().filter(|x| x.0 == p).map(|x| x.2).max().unwrap()).min().unwrap();
    let expected: Vec<&ClosedWindow> = closed.iter().filter(|w| w.end_ms <= passed).collect();
    assert!(expected.len() >= 10, "the test must cover many windows, got {}", expected.len());
    assert_eq!(global.len(), expected.len());
    let mut drifted = 0;
    for (g, s) in global.iter().zip(&expected) {
        assert_eq!((g.start_ms, g.end_ms), (s.start_ms, s.end_ms));
        assert_eq!(g.merged.sketch.records, s.sketch.records, "window {}", g.index);
        assert_eq!(g.merged.contributions.iter().map(|c| c.records).sum::<u64>(), s.sketch.records);
        for (a, b) in scores(&r, &g.merged.sketch).iter().zip(scores(&r, &s.sketch)) {
            assert_eq!((&a.0, &a.1), (&b.0, &b.1));
            assert!(
                (a.2 - b.2).abs() <= 1e-9 * b.2.abs().max(1.0),
                "window {} {} {}: {} vs {}",
                g.index,
                a.0,
                a.1,
                a.2,
                b.2
            );
        }
        let report = score_window(&r, &g.merged.sketch, WindowInfo::default());
        drifted += usize::from(report.dataset.drifted);
        // The per-partition offset ranges cover the single instance's.
        for c in &g.merged.contributions {
            let span = s.spans.iter().find(|x| x.source == c.source.partition as u32).expect("a span");
            assert_eq!(c.offsets, Some((span.first, span.last)));
        }
    }
    assert!(drifted > 0 && drifted < global.len(), "the stream has clean and drifted windows");
}

#[test]
fn three_instances_give_one_instances_tumbling_windows() {
    check(1);
}

#[test]
fn three_instances_give_one_instances_sliding_windows() {
    check(3);
}
