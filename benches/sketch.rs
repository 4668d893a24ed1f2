//! Micro-benchmarks of the hot functions: one value into each sketch (one feature, whose
//! tables stay in L1, and 21 features taken record by record as a decoder hands them
//! over, whose tables do not), and scoring one feature at a window close.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use driftscope::stats::profile::{FeatureSpec, ProfileBuilder};
use driftscope::stats::{DriftSettings, FeatureKind, Reference, ValueSink, WindowInfo, score_window};
use std::collections::BTreeMap;
use std::hint::black_box;

/// A small deterministic generator, so the benchmark needs no RNG crate.
struct Lcg(u64);
impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn reference(resolution: usize) -> Reference {
    let mut rng = Lcg(7);
    let specs = vec![
        FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
        FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
    ];
    let mut b = ProfileBuilder::new(specs, resolution, 1000);
    b.add_records(100_000);
    for i in 0..100_000 {
        b.numeric(0, rng.normal());
        b.category(1, &format!("category-{}", i % 20));
    }
    let settings = DriftSettings { cdf_resolution: resolution, ..Default::default() };
    Reference::new(b.finish("bench".into(), "now".into()), settings, &BTreeMap::new()).unwrap()
}

/// A value of numeric feature `i` of 21, drawn like the harness's bench schema: normal,
/// log-normal, uniform and count features in turn, the last a model score.
fn draw(rng: &mut Lcg, i: usize) -> f64 {
    if i == 20 {
        return 1.0 / (1.0 + (-1.5 * rng.normal()).exp());
    }
    match i % 4 {
        0 => i as f64 + (1.0 + (i % 7) as f64) * rng.normal(),
        1 => (3.0 + 0.5 * rng.normal()).exp(),
        2 => 100.0 * rng.next_f64(),
        _ => (-20.0 * (1.0 - rng.next_f64()).ln()).floor(),
    }
}

const WIDE: usize = 21;

fn wide_reference() -> Reference {
    let mut rng = Lcg(17);
    let specs = (0..WIDE)
        .map(|i| FeatureSpec { name: format!("f{i}"), kind: FeatureKind::Numeric, bins: 10 })
        .collect();
    let mut b = ProfileBuilder::new(specs, 1024, 1000);
    b.add_records(100_000);
    for _ in 0..100_000 {
        for i in 0..WIDE {
            b.numeric(i, draw(&mut rng, i));
        }
    }
    Reference::new(b.finish("bench".into(), "now".into()), DriftSettings::default(), &BTreeMap::new())
        .unwrap()
}

fn sketch_updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("sketch_update");
    let mut rng = Lcg(11);
    let values: Vec<f64> = (0..10_000).map(|_| rng.normal() * 1.1 + 0.1).collect();
    for resolution in [256usize, 1024, 4096] {
        let r = reference(resolution);
        let mut window = r.new_window();
        group.throughput(Throughput::Elements(values.len() as u64));
        group.bench_with_input(BenchmarkId::new("numeric", resolution), &values, |b, values| {
            b.iter(|| {
                for &x in values {
                    window.numeric(0, black_box(x));
                }
            })
        });
    }
    let r = wide_reference();
    let mut window = r.new_window();
    let mut rng = Lcg(19);
    let records: Vec<f64> =
        (0..10_000).flat_map(|_| (0..WIDE).map(|i| draw(&mut rng, i)).collect::<Vec<_>>()).collect();
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function(BenchmarkId::new("numeric_21_features", 1024), |b| {
        b.iter(|| {
            for record in records.chunks_exact(WIDE) {
                for (i, &x) in record.iter().enumerate() {
                    window.numeric(i, black_box(x));
                }
            }
        })
    });
    // The pipeline's fold: a batch of 512 records staged as a column per feature,
    // each column handed over as one slice.
    let columns: Vec<Vec<f64>> =
        (0..WIDE).map(|i| records.iter().skip(i).step_by(WIDE).take(512).copied().collect()).collect();
    group.throughput(Throughput::Elements((WIDE * 512) as u64));
    group.bench_function(BenchmarkId::new("numeric_21_columns_of_512", 1024), |b| {
        b.iter(|| {
            for (i, column) in columns.iter().enumerate() {
                window.numeric_slice(i, black_box(column));
            }
        })
    });
    let r = reference(1024);
    let mut window = r.new_window();
    let categories: Vec<String> = (0..10_000).map(|i| format!("category-{}", (i * 7) % 21)).collect();
    group.throughput(Throughput::Elements(categories.len() as u64));
    group.bench_function("categorical", |b| {
        b.iter(|| {
            for c in &categories {
                window.category(1, black_box(c));
            }
        })
    });
    group.finish();
}

fn scoring(c: &mut Criterion) {
    let mut group = c.benchmark_group("score_one_feature");
    let mut rng = Lcg(13);
    for resolution in [256usize, 1024, 4096] {
        let r = reference(resolution);
        let mut window = r.new_window();
        window.add_records(10_000);
        for i in 0..10_000 {
            window.numeric(0, rng.normal() + 0.2);
            window.category(1, &format!("category-{}", i % 25));
        }
        // Two features scored: the per-feature cost is half of this.
        group.bench_function(BenchmarkId::new("numeric_and_categorical", resolution), |b| {
            b.iter(|| black_box(score_window(&r, &window, WindowInfo::default())))
        });
    }
    group.finish();
}

criterion_group!(benches, sketch_updates, scoring);
criterion_main!(benches);
