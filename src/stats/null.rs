//! Null distributions of the distance scores, for version-2 verdicts: how large a score
//! gets between two samples of sizes n and m drawn from the reference's own
//! distribution, when nothing changed.
//!
//! `ks` and `chi_square` have known null distributions (their p-values in
//! [`crate::stats::metrics`]); the distances (`psi`, `jensen_shannon`, `hellinger`,
//! `kl_divergence`, `tvd`, `wasserstein`) get a seeded multinomial bootstrap on the
//! reference's bins, categories or grid: each draw takes a reference sample of n and a
//! window sample of m from the reference's shares (O(bins) with conditional binomials,
//! no raw data) and scores one against the other. The sorted draws are computed once
//! per window-size rung (a ladder of sizes 10% apart; a window's size is rounded down
//! to its rung, which only widens the null) and cached, so scoring a window costs a
//! binary search. Bootstrap p-values are `(1 + exceedances) / (1 + draws)`.
//!
//! Beyond the draws' reach (fewer than 10 exceedances) the p-value comes from an
//! exponential fitted to the top 5% of the draws (peaks over threshold): 2,000 draws
//! then serve every correction level (the Bonferroni level of 1,000 features is 1e-5)
//! and the sequential detector's small p-values, at a tenth of the cost of drawing
//! enough to count that far. The scores' tails are exponential (the squared-difference
//! scores) or lighter (wasserstein, tvd), so the fit errs towards larger p-values.

use super::metrics;
use super::sampling::multinomial;
use super::settings::Metric;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

/// Ratio between consecutive window-size rungs.
const RUNG_RATIO: f64 = 1.1;
/// Support points a numeric reference is grouped into for the wasserstein bootstrap.
/// Grouping neighbours of similar value loses only variation inside a group (each holds
/// under 1% of the reference), and keeps a draw at O(points).
const WASSERSTEIN_POINTS: usize = 128;
/// Draws per feature and rung.
pub const DRAWS: usize = 2_000;
/// Rungs kept per feature: a time window's size wanders over a few neighbouring rungs;
/// past this many the rung farthest from the one asked for is dropped, so memory stays
/// bounded (16 KB a rung) whatever the traffic does.
const MAX_RUNGS: usize = 16;
/// Exceedances below which the tail fit gives the p-value.
const TAIL_MIN_EXCEEDANCES: usize = 10;
/// The share of the draws the tail is fitted to.
const TAIL_SHARE: usize = 20;

/// What a score's null is drawn from.
#[derive(Debug, Clone)]
enum Shape {
    /// Shares of the reference's bins or categories; the score is a binned metric.
    Binned { shares: Vec<f64>, metric: Metric },
    /// Grouped support points of a numeric reference and their shares; the score is
    /// wasserstein divided by `scale` (the reference's std, floored).
    Points { points: Vec<f64>, shares: Vec<f64>, scale: f64 },
}

/// The null distribution of one feature's primary score, drawn lazily per window-size
/// rung. Shared by every window of the feature (hence the lock, taken once per feature
/// and window, never per record).
#[derive(Debug)]
pub struct NullModel {
    shape: Shape,
    reference_n: u64,
    draws: usize,
    seed: u64,
    cache: Mutex<FxHashMap<u32, Arc<[f64]>>>,
}

/// The rung of a window size: the largest `k` with `floor(1.1^k) <= m`.
pub fn rung_of(m: u64) -> u32 {
    let m = m.max(1);
    let mut k = ((m as f64).ln() / RUNG_RATIO.ln()).floor().max(0.0) as u32;
    while k > 0 && rung_size(k) > m {
        k -= 1;
    }
    while rung_size(k + 1) <= m {
        k += 1;
    }
    k
}

/// The window size a rung stands for.
pub fn rung_size(k: u32) -> u64 {
    (RUNG_RATIO.powi(k as i32).floor() as u64).max(1)
}

impl NullModel {
    /// A null for a binned metric over the reference's bin or category counts.
    pub fn binned(metric: Metric, reference_counts: &[u64], draws: usize, seed: u64) -> NullModel {
        let n: u64 = reference_counts.iter().sum();
        let shares = shares_of(reference_counts.iter().map(|&c| c as f64), n as f64);
        NullModel::new(Shape::Binned { shares, metric }, n, draws, seed)
    }

    /// A null for wasserstein over a numeric reference given as sorted `(value, count)`
    /// support points, normalised by `scale`.
    pub fn wasserstein(support: &[(f64, u64)], scale: f64, draws: usize, seed: u64) -> NullModel {
        let n: u64 = support.iter().map(|&(_, c)| c).sum();
        let (points, counts) = group_support(support, n, WASSERSTEIN_POINTS);
        let shares = shares_of(counts.iter().copied(), n as f64);
        NullModel::new(Shape::Points { points, shares, scale }, n, draws, seed)
    }

    fn new(shape: Shape, reference_n: u64, draws: usize, seed: u64) -> NullModel {
        NullModel { shape, reference_n, draws: draws.max(1), seed, cache: Mutex::new(FxHashMap::default()) }
    }

    pub fn draws(&self) -> usize {
        self.draws
    }

    /// The bootstrap p-value of `score` in a window of `m` values:
    /// `(1 + draws >= score) / (1 + draws)`, or the tail fit's beyond the draws' reach.
    pub fn p_value(&self, m: u64, score: f64) -> f64 {
        let sorted = self.sorted_draws(m);
        let d = sorted.len();
        // A draw equal to the score (up to rounding) counts as an exceedance: ties never
        // make a score look more extreme than it is.
        let cut = score - 1e-12 * score.abs().max(1e-12);
        let exceedances = d - sorted.partition_point(|&x| x < cut);
        let empirical = (1 + exceedances) as f64 / (1 + d) as f64;
        if exceedances >= TAIL_MIN_EXCEEDANCES || d < TAIL_SHARE * TAIL_MIN_EXCEEDANCES {
            return empirical;
        }
        let k = d / TAIL_SHARE;
        let threshold = sorted[d - k];
        let scale = sorted[d - k..].iter().map(|x| x - threshold).sum::<f64>() / k as f64;
        if scale.is_nan() || scale <= 0.0 || score <= threshold {
            return empirical;
        }
        super::metrics::floor_p_value((k as f64 / (1 + d) as f64) * (-(score - threshold) / scale).exp())
    }

    /// The sorted draws for `m`'s rung, drawn on first use.
    pub fn sorted_draws(&self, m: u64) -> Arc<[f64]> {
        let rung = rung_of(m);
        if let Ok(cache) = self.cache.lock()
            && let Some(draws) = cache.get(&rung)
        {
            return draws.clone();
        }
        let draws: Arc<[f64]> = self.draw(rung_size(rung), rung).into();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_RUNGS
                && let Some(&farthest) = cache.keys().max_by_key(|&&k| k.abs_diff(rung))
            {
                cache.remove(&farthest);
            }
            cache.insert(rung, draws.clone());
        }
        draws
    }

    /// Rungs drawn so far.
    pub fn cached_rungs(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    fn draw(&self, m: u64, rung: u32) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (u64::from(rung) << 40) ^ 0x9e37_79b9_7f4a_7c15);
        let n = self.reference_n;
        let mut out = Vec::with_capacity(self.draws);
        match &self.shape {
            Shape::Binned { shares, metric } => {
                let (mut r, mut c) = (Vec::new(), Vec::new());
                for _ in 0..self.draws {
                    multinomial(&mut rng, n, shares, &mut r);
                    multinomial(&mut rng, m, shares, &mut c);
                    let s = metrics::binned_scores(&r, &c);
                    out.push(match metric {
                        Metric::Psi => s.psi,
                        Metric::JensenShannon => s.jensen_shannon,
                        Metric::Hellinger => s.hellinger,
                        Metric::KlDivergence => s.kl_divergence,
                        _ => s.tvd,
                    });
                }
            }
            Shape::Points { points, shares, scale } => {
                let (mut r, mut c) = (Vec::new(), Vec::new());
                let (nf, mf) = (n.max(1) as f64, m.max(1) as f64);
                for _ in 0..self.draws {
                    multinomial(&mut rng, n, shares, &mut r);
                    multinomial(&mut rng, m, shares, &mut c);
                    let (mut cum_r, mut cum_c, mut distance) = (0u64, 0u64, 0.0);
                    for j in 0..points.len().saturating_sub(1) {
                        cum_r += r[j];
                        cum_c += c[j];
                        distance +=
                            (cum_r as f64 / nf - cum_c as f64 / mf).abs() * (points[j + 1] - points[j]);
                    }
                    out.push(distance / scale);
                }
            }
        }
        out.sort_by(f64::total_cmp);
        out
    }
}

fn shares_of(counts: impl Iterator<Item = f64>, n: f64) -> Vec<f64> {
    counts.map(|c| if n > 0.0 { c / n } else { 0.0 }).collect()
}

/// Groups sorted `(value, count)` points into at most `groups` runs of neighbours of
/// about equal mass, each represented by its mean value.
fn group_support(support: &[(f64, u64)], n: u64, groups: usize) -> (Vec<f64>, Vec<f64>) {
    let target = (n as f64 / groups as f64).max(1.0);
    let (mut points, mut counts) = (Vec::with_capacity(groups + 1), Vec::with_capacity(groups + 1));
    let (mut sum, mut count) = (0.0f64, 0u64);
    for &(value, c) in support {
        if c == 0 {
            continue;
        }
        sum += value * c as f64;
        count += c;
        if count as f64 >= target {
            points.push(sum / count as f64);
            counts.push(count as f64);
            (sum, count) = (0.0, 0);
        }
    }
    if count > 0 {
        points.push(sum / count as f64);
        counts.push(count as f64);
    }
    (points, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_are_at_most_ten_percent_apart_and_round_down() {
        for m in [1u64, 2, 9, 10, 99, 100, 101, 500, 10_000, 123_456, 10_000_000] {
            let k = rung_of(m);
            assert!(rung_size(k) <= m, "m {m}");
            assert!(rung_size(k + 1) > m, "m {m}");
            if m >= 100 {
                assert!(rung_size(k) as f64 >= m as f64 / 1.1 - 1.0, "m {m}");
            }
        }
    }

    #[test]
    fn bootstrap_p_values_are_seeded_and_ordered() {
        let counts = [100u64, 200, 300, 400];
        let a = NullModel::binned(Metric::JensenShannon, &counts, 2_000, 7);
        let b = NullModel::binned(Metric::JensenShannon, &counts, 2_000, 7);
        assert_eq!(a.p_value(500, 0.05), b.p_value(500, 0.05));
        assert!(a.p_value(500, 0.0) > 0.99);
        assert!(a.p_value(500, 0.01) > a.p_value(500, 0.1));
        // Beyond the draws: the tail fit, smaller the further out, never above the
        // empirical p-value's reach by much.
        let (far, farther) = (a.p_value(500, 0.2), a.p_value(500, 0.3));
        assert!(far < 10.0 / 2_001.0 && farther < far && farther > 0.0, "{far} {farther}");
        // The same rung is drawn once.
        a.p_value(510, 0.05);
        assert_eq!(a.cached_rungs(), 1);
        // Wandering sizes keep at most MAX_RUNGS rungs.
        for m in (0..40).map(|k| rung_size(60 + k)) {
            a.p_value(m, 0.05);
        }
        assert_eq!(a.cached_rungs(), MAX_RUNGS);
    }

    #[test]
    fn wasserstein_null_shrinks_with_the_window() {
        let support: Vec<(f64, u64)> = (0..1000).map(|i| (i as f64 / 100.0, 50)).collect();
        let null = NullModel::wasserstein(&support, 2.9, 2_000, 3);
        let median = |m| {
            let d = null.sorted_draws(m);
            d[d.len() / 2]
        };
        assert!(median(100) > 2.0 * median(10_000));
        assert!(median(100) > 0.0);
    }
}
