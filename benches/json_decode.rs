//! Throughput of the JSON record decoder on "bench schema" messages (20 numeric
//! features f0..f19, 5 categorical c0..c4, a numeric `score`, plus unmonitored keys;
//! ~400 bytes each), against two baselines: serde_json skimming the same bytes without
//! building anything (the parse-only ceiling) and serde_json building a `Value` DOM.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftscope::decode::json::{JsonDecoder, JsonField};
use driftscope::stats::profile::{FeatureSpec, ProfileBuilder};
use driftscope::stats::{DriftSettings, FeatureKind, Reference, ValueSink};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts allocations while `COUNTING` is set, to check the decoder's steady state
/// allocates nothing; otherwise one relaxed load per allocation.
struct CountingAlloc;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const MESSAGES: usize = 10_000;
const NUMERIC: usize = 20;
const CATEGORICAL: usize = 5;
const WORDS: [&str; 10] =
    ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"];

/// A small deterministic generator, so the benchmark needs no RNG crate.
struct Lcg(u64);
impl Lcg {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn next_f64(&mut self) -> f64 {
        self.next_u64() as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn messages(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            let mut m = format!(
                "{{\"id\":\"evt-{i:08}\",\"ts\":\"2024-05-01T12:{:02}:{:02}.{:03}Z\"",
                (i / 60) % 60,
                i % 60,
                rng.next_u64() % 1000
            );
            for f in 0..NUMERIC {
                let x = rng.normal() * (f as f64 + 1.0) + f as f64;
                m.push_str(&format!(",\"f{f}\":{x:.3}"));
            }
            for c in 0..CATEGORICAL {
                let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
                m.push_str(&format!(",\"c{c}\":\"{w}\""));
            }
            m.push_str(&format!(
                ",\"score\":{:.5},\"model\":{{\"name\":\"ranker\",\"version\":7}}}}",
                rng.next_f64()
            ));
            m.into_bytes()
        })
        .collect()
}

fn fields() -> Vec<JsonField> {
    let mut fields: Vec<JsonField> = (0..NUMERIC)
        .map(|f| JsonField { pointer: format!("/f{f}"), feature: f, kind: FeatureKind::Numeric })
        .collect();
    fields.extend((0..CATEGORICAL).map(|c| JsonField {
        pointer: format!("/c{c}"),
        feature: NUMERIC + c,
        kind: FeatureKind::Categorical,
    }));
    fields.push(JsonField {
        pointer: "/score".into(),
        feature: NUMERIC + CATEGORICAL,
        kind: FeatureKind::Numeric,
    });
    fields
}

fn reference(fields: &[JsonField], decoder: &mut JsonDecoder) -> Reference {
    let mut specs: Vec<(usize, FeatureSpec)> = fields
        .iter()
        .map(|f| {
            let name = f.pointer.trim_start_matches('/').to_string();
            let spec = FeatureSpec { name, kind: f.kind, bins: 10 };
            (f.feature, spec)
        })
        .collect();
    specs.sort_by_key(|(i, _)| *i);
    let settings = DriftSettings::default();
    let mut builder = ProfileBuilder::new(
        specs.into_iter().map(|(_, s)| s).collect(),
        settings.cdf_resolution,
        settings.max_categories,
    );
    for m in messages(99, 20_000) {
        if decoder.decode(&m).is_ok() {
            decoder.apply(&mut builder);
        }
    }
    Reference::new(builder.finish("bench".into(), "now".into()), settings, &BTreeMap::new())
        .expect("bench reference")
}

/// Discards everything, so that the decoder alone is measured.
struct NoopSink;
impl ValueSink for NoopSink {
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

fn json_decode(c: &mut Criterion) {
    let msgs = messages(42, MESSAGES);
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    println!("{} messages, {:.0} bytes on average", msgs.len(), bytes as f64 / msgs.len() as f64);
    let fields = fields();
    let mut decoder = JsonDecoder::new(&fields, Some("/ts")).expect("bench fields");

    // Steady-state allocation check: one pass to warm the buffers, one counted.
    let mut sink = NoopSink;
    for m in &msgs {
        decoder.decode(m).expect("bench message decodes");
        decoder.apply(&mut sink);
    }
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for m in &msgs {
        let _ = black_box(decoder.decode(m));
        decoder.apply(&mut sink);
        black_box(decoder.event_time_ms());
    }
    COUNTING.store(false, Ordering::Relaxed);
    println!("allocations in {} steady-state decodes: {}", msgs.len(), ALLOCATIONS.load(Ordering::Relaxed));

    let mut group = c.benchmark_group("json_decode");
    group.throughput(Throughput::Elements(msgs.len() as u64));
    group.bench_function("a_serde_ignored_any", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(m)).ok());
            }
        })
    });
    group.bench_function("b_serde_value_dom", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(m)).ok());
            }
        })
    });
    group.bench_function("c_decoder_noop_sink", |b| {
        b.iter(|| {
            for m in &msgs {
                if decoder.decode(black_box(m)).is_ok() {
                    decoder.apply(&mut sink);
                }
            }
        })
    });
    let reference = reference(&fields, &mut decoder);
    let mut window = reference.new_window();
    group.bench_function("d_decoder_window_sketch", |b| {
        b.iter(|| {
            for m in &msgs {
                if decoder.decode(black_box(m)).is_ok() {
                    decoder.apply(&mut window);
                }
            }
        })
    });
    group.finish();
    black_box(window.records);
}

criterion_group!(benches, json_decode);
criterion_main!(benches);
