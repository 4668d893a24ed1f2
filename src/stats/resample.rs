//! Null windows resampled from a reference profile itself: what windows look like when
//! nothing changed, for `driftscope backtest --null N` (the false-alarm rate a config
//! would have on its own reference) and the soundness checks.
//!
//! Each feature's window is a multinomial draw over the reference's own support (a
//! numeric grid's cells at their mean and their edges, a categorical's categories), with
//! the reference's missing share, added to the sketch as counts: O(cells) per feature
//! and window whatever the window's size, no raw data.

use super::grid;
use super::profile::FeatureStats;
use super::reference::Reference;
use super::sampling::{binomial, multinomial};
use super::sketch::{ValueSink, WindowSketch};
use rand::Rng;

/// One feature's support: values (or category names) and their shares.
enum Support {
    Numeric { values: Vec<f64>, shares: Vec<f64> },
    Categorical { names: Vec<String>, shares: Vec<f64> },
}

/// Draws null windows of a reference.
pub struct NullWindows {
    features: Vec<(Support, f64)>,
    counts: Vec<u64>,
}

impl NullWindows {
    pub fn new(reference: &Reference) -> NullWindows {
        let profile = &reference.profile;
        let features = profile
            .features
            .iter()
            .map(|f| {
                let support = match &f.stats {
                    FeatureStats::Numeric(p) => {
                        let points = grid::support(&p.grid_edges, &p.grid_cells);
                        let n = points.iter().map(|&(_, c)| c).sum::<u64>().max(1) as f64;
                        Support::Numeric {
                            values: points.iter().map(|&(v, _)| v).collect(),
                            shares: points.iter().map(|&(_, c)| c as f64 / n).collect(),
                        }
                    }
                    FeatureStats::Categorical(p) => {
                        let n = p.n.max(1) as f64;
                        let mut names: Vec<String> = p.categories.iter().map(|c| c.name.clone()).collect();
                        let mut shares: Vec<f64> = p.categories.iter().map(|c| c.count as f64 / n).collect();
                        if p.other > 0 {
                            names.push(super::categorical::OTHER_CATEGORY.to_owned());
                            shares.push(p.other as f64 / n);
                        }
                        Support::Categorical { names, shares }
                    }
                };
                (support, profile.missing_share(f).clamp(0.0, 1.0))
            })
            .collect();
        NullWindows { features, counts: Vec::new() }
    }

    /// Fills `sketch` (fresh from `reference.new_window()`) with a null window of
    /// `records` records.
    pub fn draw<R: Rng>(&mut self, rng: &mut R, records: u64, sketch: &mut WindowSketch) {
        sketch.add_records(records);
        for (feature, (support, missing_share)) in self.features.iter().enumerate() {
            let missing = binomial(rng, records, *missing_share);
            for _ in 0..missing {
                sketch.missing(feature);
            }
            let present = records - missing;
            match support {
                Support::Numeric { values, shares } => {
                    multinomial(rng, present, shares, &mut self.counts);
                    for (&value, &count) in values.iter().zip(&self.counts) {
                        sketch.numeric_repeated(feature, value, count);
                    }
                }
                Support::Categorical { names, shares } => {
                    multinomial(rng, present, shares, &mut self.counts);
                    for (name, &count) in names.iter().zip(&self.counts) {
                        sketch.category_repeated(feature, name, count);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::profile::{FeatureSpec, ProfileBuilder};
    use crate::stats::{DriftSettings, FeatureKind};
    use rand::SeedableRng;

    #[test]
    fn null_windows_keep_sizes_and_missing_shares() {
        let specs = vec![
            FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
            FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
        ];
        let mut b = ProfileBuilder::new(specs, 1024, 100);
        b.add_records(2_000);
        for i in 0..2_000 {
            if i % 10 == 0 {
                b.missing(0);
            } else {
                b.numeric(0, (i % 97) as f64 * 0.5);
            }
            b.category(1, ["a", "b", "c"][i % 3]);
        }
        let reference = crate::stats::Reference::new(
            b.finish("t".into(), "t".into()),
            DriftSettings::default(),
            &Default::default(),
        )
        .unwrap();
        let mut null = NullWindows::new(&reference);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut sketch = reference.new_window();
        null.draw(&mut rng, 100_000, &mut sketch);
        assert_eq!(sketch.records, 100_000);
        let report = crate::stats::score_window(&reference, &sketch, Default::default());
        let x = &report.features[0];
        assert_eq!(x.samples + x.missing, 100_000);
        assert!((x.missing_share - 0.1).abs() < 0.01, "{}", x.missing_share);
        assert!(x.scores["wasserstein"] < 0.02);
        assert_eq!(report.features[1].samples, 100_000);
        assert!(!report.dataset.drifted);
    }
}
