//! Soundness of the verdicts (issue 13), shared by the benchmark harness (full grid) and
//! `tests/verdicts.rs` (the same grid at small scale, fixed seeds, asserting rates):
//! references and windows drawn from known distributions, scored under version 2 and
//! version 1 side by side.
//!
//! The schema is the credit model's shape: ten features, numeric (normal, lognormal,
//! discrete) and categorical (3 and 10 categories). A continuous distribution is stood
//! for by 4,096 equal-probability points (its quantiles at the cell midpoints), fine
//! enough that ties change KS by under 0.00025; windows of many records are drawn as
//! counts over those points, so a 100,000-record window costs O(points), not O(records).
//! The changes apply to the numeric features only: a 1% rescaling (no practical change)
//! and a 0.5 sigma mean shift.

use driftscope::stats::profile::{FeatureSpec, ProfileBuilder};
use driftscope::stats::sampling::multinomial;
use driftscope::stats::sequential::SequentialState;
use driftscope::stats::{
    DriftSettings, FeatureKind, Reference, Report, Rule, ValueSink, WindowInfo, score_window,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, DiscreteCDF, Normal, Poisson};
use std::collections::BTreeMap;

const POINTS: usize = 4_096;

/// A change applied to the numeric features of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    None,
    /// Every value multiplied by this factor.
    Rescale(f64),
    /// Every value moved up by this many of the feature's standard deviations.
    Shift(f64),
}

enum Shape {
    /// `continuous`: the 1% rescaling applies (on a discrete feature it moves every
    /// value off the lattice, a change any test rightly sees).
    Numeric {
        points: Vec<f64>,
        std: f64,
        continuous: bool,
    },
    Categorical {
        names: Vec<String>,
        shares: Vec<f64>,
    },
}

/// The population every reference and window is drawn from.
pub struct Population {
    features: Vec<(String, Shape)>,
    counts: Vec<u64>,
    equal: Vec<f64>,
}

fn quantile_points(inverse_cdf: impl Fn(f64) -> f64) -> Vec<f64> {
    (0..POINTS).map(|i| inverse_cdf((i as f64 + 0.5) / POINTS as f64)).collect()
}

fn numeric(points: Vec<f64>, continuous: bool) -> Shape {
    let mean = points.iter().sum::<f64>() / points.len() as f64;
    let var = points.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / points.len() as f64;
    Shape::Numeric { points, std: var.sqrt(), continuous }
}

fn categorical(shares: &[f64]) -> Shape {
    let total: f64 = shares.iter().sum();
    Shape::Categorical {
        names: (0..shares.len()).map(|i| format!("c{i}")).collect(),
        shares: shares.iter().map(|s| s / total).collect(),
    }
}

impl Population {
    /// The credit model's ten features.
    pub fn credit() -> Population {
        let standard = Normal::standard();
        let normal = |mu: f64, sigma: f64| quantile_points(|q| mu + sigma * standard.inverse_cdf(q));
        let lognormal = |sigma: f64| quantile_points(|q| (sigma * standard.inverse_cdf(q)).exp());
        // statrs 0.18's discrete inverse_cdf panics on some inputs: walk the CDF.
        let poisson = |lambda: f64| {
            let p = Poisson::new(lambda).expect("a positive rate");
            quantile_points(|q| (0u64..).find(|&k| p.cdf(k) >= q).unwrap_or(0) as f64)
        };
        let zipf10: Vec<f64> = (1..=10).map(|k| 1.0 / k as f64).collect();
        let features = vec![
            ("income".to_owned(), numeric(lognormal(0.6), true)),
            ("age".to_owned(), numeric(normal(42.0, 12.0), true)),
            ("score".to_owned(), numeric(normal(0.0, 1.0), true)),
            ("balance".to_owned(), numeric(lognormal(1.0), true)),
            ("accounts".to_owned(), numeric(poisson(3.0), false)),
            ("late_payments".to_owned(), numeric(poisson(0.7), false)),
            ("housing".to_owned(), categorical(&[0.5, 0.3, 0.2])),
            ("channel".to_owned(), categorical(&[0.6, 0.25, 0.15])),
            ("region".to_owned(), categorical(&zipf10)),
            ("product".to_owned(), categorical(&[1.0; 10])),
        ];
        Population { features, counts: Vec::new(), equal: vec![1.0 / POINTS as f64; POINTS] }
    }

    pub fn numeric_features(&self) -> Vec<usize> {
        (0..self.features.len()).filter(|&i| matches!(self.features[i].1, Shape::Numeric { .. })).collect()
    }

    pub fn continuous_features(&self) -> Vec<usize> {
        (0..self.features.len())
            .filter(|&i| matches!(self.features[i].1, Shape::Numeric { continuous: true, .. }))
            .collect()
    }

    pub fn specs(&self) -> Vec<FeatureSpec> {
        self.features
            .iter()
            .map(|(name, shape)| FeatureSpec {
                name: name.clone(),
                kind: match shape {
                    Shape::Numeric { .. } => FeatureKind::Numeric,
                    Shape::Categorical { .. } => FeatureKind::Categorical,
                },
                bins: 10,
            })
            .collect()
    }

    /// Draws `records` records into `sink`, with `change` applied to numeric values.
    pub fn draw(&mut self, rng: &mut StdRng, records: u64, change: Change, sink: &mut impl ValueSink) {
        sink.add_records(records);
        for (feature, (_, shape)) in self.features.iter().enumerate() {
            match shape {
                Shape::Numeric { points, std, continuous } => {
                    let apply = |x: f64| match change {
                        Change::None => x,
                        Change::Rescale(f) if *continuous => x * f,
                        Change::Rescale(_) => x,
                        Change::Shift(s) => x + s * std,
                    };
                    if records < POINTS as u64 {
                        for _ in 0..records {
                            sink.numeric(feature, apply(points[rng.random_range(0..POINTS)]));
                        }
                    } else {
                        multinomial(rng, records, &self.equal, &mut self.counts);
                        for (&x, &count) in points.iter().zip(&self.counts) {
                            sink.numeric_repeated(feature, apply(x), count);
                        }
                    }
                }
                Shape::Categorical { names, shares } => {
                    multinomial(rng, records, shares, &mut self.counts);
                    for (name, &count) in names.iter().zip(&self.counts) {
                        sink.category_repeated(feature, name, count);
                    }
                }
            }
        }
    }

    /// A reference of `records` records, scored under version 2 and version 1.
    pub fn references(&mut self, rng: &mut StdRng, records: u64) -> (Reference, Reference) {
        let mut builder = ProfileBuilder::new(self.specs(), 1024, 1000);
        self.draw(rng, records, Change::None, &mut builder);
        let profile = builder.finish("soundness".into(), "now".into());
        let v2 = Reference::new(profile.clone(), DriftSettings::default(), &BTreeMap::new());
        let v1 = Reference::new(
            profile,
            DriftSettings { rule: Rule::Threshold, ..DriftSettings::default() },
            &BTreeMap::new(),
        );
        (v2.expect("plain settings"), v1.expect("plain settings"))
    }
}

/// Rates of one (reference size, window size) cell.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Share of (feature, window) pairs flagged when nothing changed: version 2, 1.
    pub null_feature_rate: (f64, f64),
    /// The largest single feature's null rate: version 2, 1.
    pub null_worst_feature_rate: (f64, f64),
    /// Share of windows whose dataset verdict drifted when nothing changed.
    pub null_dataset_rate: (f64, f64),
    /// Share of (continuous feature, window) pairs flagged under a 1% rescaling.
    pub rescale_rate: (f64, f64),
    /// Share of (numeric feature, window) pairs flagged under a 0.5 sigma shift.
    pub shift_rate: (f64, f64),
    /// Sequential false alarms (any feature) per 1,000 null windows.
    pub sequential_false_per_1000: f64,
    /// Windows until the sequential detector alarmed on a shifted feature, per numeric
    /// feature and repetition of the shift (None: not within 10 windows).
    pub sequential_delays: Vec<Option<usize>>,
}

impl Cell {
    /// The median delay (None counts as never).
    pub fn median_delay(&self) -> Option<usize> {
        let mut d: Vec<usize> = self.sequential_delays.iter().map(|d| d.unwrap_or(usize::MAX)).collect();
        d.sort_unstable();
        d.get(d.len() / 2).copied().filter(|&d| d != usize::MAX)
    }

    /// The worst delay (None: some shift was never alarmed).
    pub fn worst_delay(&self) -> Option<usize> {
        self.sequential_delays.iter().try_fold(0usize, |worst, d| d.map(|d| worst.max(d)))
    }

    /// Share of (feature, repetition) pairs alarmed within `windows` windows.
    pub fn share_within(&self, windows: usize) -> f64 {
        let hits = self.sequential_delays.iter().filter(|d| d.is_some_and(|d| d <= windows)).count();
        hits as f64 / self.sequential_delays.len().max(1) as f64
    }
}

/// Repetitions of the shift for the sequential delay, each with fresh detectors.
const DELAY_REPETITIONS: usize = 10;
/// Windows each repetition runs at most.
const DELAY_WINDOWS: usize = 10;

fn score(reference: &Reference, sketch: &driftscope::stats::WindowSketch, index: u64) -> Report {
    score_window(reference, sketch, WindowInfo { index, ..WindowInfo::default() })
}

/// Runs one cell: `windows` null windows, as many rescaled and shifted ones, and a
/// sequential run over the null windows and then over shifted ones.
pub fn run_cell(
    population: &mut Population,
    seed: u64,
    reference_records: u64,
    window_records: u64,
    windows: usize,
) -> Cell {
    let mut rng = StdRng::seed_from_u64(seed);
    let (v2, v1) = population.references(&mut rng, reference_records);
    let numeric = population.numeric_features();
    let features = v2.features.len();
    let mut cell = Cell::default();
    let mut per_feature = vec![(0usize, 0usize); features];
    let (mut flagged, mut dataset) = ((0usize, 0usize), (0usize, 0usize));
    let mut sequential = SequentialState::default();
    let mut sequential_alarms = 0usize;
    let settings = v2.settings.clone();
    for w in 0..windows {
        let mut sketch = v2.new_window();
        population.draw(&mut rng, window_records, Change::None, &mut sketch);
        let mut r2 = score(&v2, &sketch, w as u64);
        let r1 = score(&v1, &sketch, w as u64);
        for (i, (a, b)) in r2.features.iter().zip(&r1.features).enumerate() {
            per_feature[i].0 += a.drifted as usize;
            per_feature[i].1 += b.drifted as usize;
        }
        flagged.0 += r2.dataset.features_drifted as usize;
        flagged.1 += r1.dataset.features_drifted as usize;
        dataset.0 += r2.dataset.drifted as usize;
        dataset.1 += r1.dataset.drifted as usize;
        sequential.update(&mut r2, settings.alpha_sequential);
        sequential_alarms += r2.features.iter().filter(|f| f.sequential.is_some_and(|s| s.alarm)).count();
    }
    let pairs = (windows * features).max(1) as f64;
    cell.null_feature_rate = (flagged.0 as f64 / pairs, flagged.1 as f64 / pairs);
    let worst = |pick: fn(&(usize, usize)) -> usize| {
        per_feature.iter().map(pick).max().unwrap_or(0) as f64 / windows.max(1) as f64
    };
    cell.null_worst_feature_rate = (worst(|p| p.0), worst(|p| p.1));
    cell.null_dataset_rate = (dataset.0 as f64 / windows as f64, dataset.1 as f64 / windows as f64);
    cell.sequential_false_per_1000 = sequential_alarms as f64 * 1000.0 / windows as f64;

    let continuous = population.continuous_features();
    let changed_rate = |population: &mut Population, rng: &mut StdRng, change: Change, watched: &[usize]| {
        let (mut a, mut b) = (0usize, 0usize);
        for w in 0..windows {
            let mut sketch = v2.new_window();
            population.draw(rng, window_records, change, &mut sketch);
            let r2 = score(&v2, &sketch, w as u64);
            let r1 = score(&v1, &sketch, w as u64);
            a += watched.iter().filter(|&&i| r2.features[i].drifted).count();
            b += watched.iter().filter(|&&i| r1.features[i].drifted).count();
        }
        let pairs = (windows * watched.len()).max(1) as f64;
        (a as f64 / pairs, b as f64 / pairs)
    };
    cell.rescale_rate = changed_rate(population, &mut rng, Change::Rescale(1.01), &continuous);
    cell.shift_rate = changed_rate(population, &mut rng, Change::Shift(0.5), &numeric);

    // Delay: fresh detectors, then shifted windows until every numeric feature alarmed.
    for _ in 0..DELAY_REPETITIONS {
        let mut detector = SequentialState::default();
        let mut first_alarm: Vec<Option<usize>> = vec![None; features];
        for w in 0..DELAY_WINDOWS {
            let mut sketch = v2.new_window();
            population.draw(&mut rng, window_records, Change::Shift(0.5), &mut sketch);
            let mut report = score(&v2, &sketch, w as u64);
            detector.update(&mut report, settings.alpha_sequential);
            for &i in &numeric {
                if first_alarm[i].is_none() && report.features[i].sequential.is_some_and(|s| s.alarm) {
                    first_alarm[i] = Some(w + 1);
                }
            }
            if numeric.iter().all(|&i| first_alarm[i].is_some()) {
                break;
            }
        }
        cell.sequential_delays.extend(numeric.iter().map(|&i| first_alarm[i]));
    }
    cell
}

/// Sequential false alarms over `windows` null windows of one configuration, per
/// feature name (features that never alarmed are left out). The guarantee is over the
/// reference's sampling too (it is a sample of the no-change distribution), so the
/// windows are spread over `references` independent references, fresh detectors each.
pub fn sequential_null_run(
    population: &mut Population,
    seed: u64,
    reference_records: u64,
    window_records: u64,
    windows: usize,
    references: usize,
) -> BTreeMap<String, usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut alarms = BTreeMap::new();
    let references = references.max(1);
    for _ in 0..references {
        sequential_null_one(
            population,
            &mut rng,
            reference_records,
            window_records,
            windows / references,
            &mut alarms,
        );
    }
    alarms
}

fn sequential_null_one(
    population: &mut Population,
    rng: &mut StdRng,
    reference_records: u64,
    window_records: u64,
    windows: usize,
    alarms: &mut BTreeMap<String, usize>,
) {
    let (v2, _) = population.references(rng, reference_records);
    let settings = v2.settings.clone();
    let mut state = SequentialState::default();
    let mut sketch = v2.new_window();
    for w in 0..windows {
        sketch.reset();
        population.draw(rng, window_records, Change::None, &mut sketch);
        let mut report = score(&v2, &sketch, w as u64);
        state.update(&mut report, settings.alpha_sequential);
        for f in report.features.iter().filter(|f| f.sequential.is_some_and(|s| s.alarm)) {
            *alarms.entry(f.name.clone()).or_insert(0) += 1;
        }
    }
}
