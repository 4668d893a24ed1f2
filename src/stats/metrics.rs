//! The drift scores of `drift-metrics.md`, as pure functions of counts and CDFs.
//!
//! Binned scores take the reference and window counts of the same bins (or categories)
//! and carry no sketch error. `ks` and `wasserstein` walk two grid CDFs (see
//! [`crate::stats::grid`]). Distributions come from `statrs`; the Kolmogorov
//! distribution is not in statrs, so its survival function is written here.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Shares below this floor are raised to it in psi and kl_divergence (no renormalisation).
pub const SHARE_FLOOR: f64 = 1e-4;

/// The spec's floor on the reference std by which wasserstein is normalised.
pub const WASSERSTEIN_STD_FLOOR: f64 = 0.001;

/// p-values below this are reported as exactly 0.
pub const P_VALUE_FLOOR: f64 = 1e-300;

/// Scores computed from paired bin counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinnedScores {
    pub psi: f64,
    pub jensen_shannon: f64,
    pub hellinger: f64,
    pub kl_divergence: f64,
    pub tvd: f64,
}

/// psi, kl_divergence, jensen_shannon, hellinger and tvd of the window counts against
/// the reference counts, bin by bin. Both totals must be positive.
pub fn binned_scores(reference: &[u64], window: &[u64]) -> BinnedScores {
    debug_assert_eq!(reference.len(), window.len());
    let n: u64 = reference.iter().sum();
    let m: u64 = window.iter().sum();
    let (n, m) = (n.max(1) as f64, m.max(1) as f64);
    let mut psi = 0.0;
    let mut kl = 0.0;
    let mut js = 0.0;
    let mut bhattacharyya = 0.0;
    let mut tvd = 0.0;
    for (&r, &c) in reference.iter().zip(window) {
        let p = r as f64 / n;
        let q = c as f64 / m;
        let pf = p.max(SHARE_FLOOR);
        let qf = q.max(SHARE_FLOOR);
        let log_ratio = (qf / pf).ln();
        psi += (qf - pf) * log_ratio;
        kl += qf * log_ratio;
        let mid = 0.5 * (p + q);
        js += relative_entropy_term(p, mid) + relative_entropy_term(q, mid);
        bhattacharyya += (p * q).sqrt();
        tvd += (p - q).abs();
    }
    BinnedScores {
        psi,
        // scipy.spatial.distance.jensenshannon(p, q, base=2)
        jensen_shannon: (0.5 * js / std::f64::consts::LN_2).max(0.0).sqrt(),
        hellinger: (1.0 - bhattacharyya).max(0.0).sqrt(),
        kl_divergence: kl,
        tvd: 0.5 * tvd,
    }
}

/// `x ln(x / y)` with scipy's `rel_entr` convention that a zero share contributes 0.
fn relative_entropy_term(x: f64, y: f64) -> f64 {
    if x > 0.0 { x * (x / y).ln() } else { 0.0 }
}

/// Pearson's chi-square test of homogeneity on the 2 x k table whose rows are the
/// reference and window counts (columns with a zero total must already be dropped).
/// Returns (statistic, p-value); a table with one column has statistic 0 and p 1.
pub fn chi_square_homogeneity(reference: &[u64], window: &[u64]) -> (f64, f64) {
    debug_assert_eq!(reference.len(), window.len());
    let k = reference.len();
    let n: u64 = reference.iter().sum();
    let m: u64 = window.iter().sum();
    if k < 2 || n == 0 || m == 0 {
        return (0.0, 1.0);
    }
    let total = (n + m) as f64;
    let (n, m) = (n as f64, m as f64);
    let mut statistic = 0.0;
    for (&r, &c) in reference.iter().zip(window) {
        let column = (r + c) as f64;
        let expected_r = n * column / total;
        let expected_c = m * column / total;
        statistic += (r as f64 - expected_r).powi(2) / expected_r;
        statistic += (c as f64 - expected_c).powi(2) / expected_c;
    }
    let p = match ChiSquared::new((k - 1) as f64) {
        Ok(dist) => dist.sf(statistic),
        Err(_) => 1.0,
    };
    (statistic, floor_p_value(p))
}

/// The asymptotic two-sample KS p-value `Q(sqrt(n m / (n + m)) D)`.
pub fn ks_p_value(statistic: f64, n: u64, m: u64) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let (n, m) = (n as f64, m as f64);
    let en = n * m / (n + m);
    floor_p_value(kolmogorov_sf(en.sqrt() * statistic))
}

/// Survival function of the Kolmogorov distribution, `Q(t) = P(K > t)`
/// (scipy's `kstwobign.sf`). statrs has no Kolmogorov distribution.
pub fn kolmogorov_sf(t: f64) -> f64 {
    if t.is_nan() {
        return 1.0;
    }
    if t <= 0.0 {
        return 1.0;
    }
    if t < 1.0 {
        // The alternating series converges slowly below 1: use the theta-function form.
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        let mut sum = 0.0;
        for k in 1..=64u32 {
            let odd = f64::from(2 * k - 1);
            let term = (-(odd * odd) * pi2 / (8.0 * t * t)).exp();
            sum += term;
            if term < 1e-18 * sum {
                break;
            }
        }
        (1.0 - (2.0 * std::f64::consts::PI).sqrt() / t * sum).clamp(0.0, 1.0)
    } else {
        let mut sum = 0.0;
        for k in 1..=128u32 {
            let kf = f64::from(k);
            let term = (-2.0 * kf * kf * t * t).exp();
            if k % 2 == 1 {
                sum += term;
            } else {
                sum -= term;
            }
            if term < 1e-300 || term < 1e-18 * sum.abs() {
                break;
            }
        }
        (2.0 * sum).clamp(0.0, 1.0)
    }
}

/// Reports p-values below 1e-300 as 0, as the spec asks, and never NaN.
pub fn floor_p_value(p: f64) -> f64 {
    if p.is_nan() {
        1.0
    } else if p < P_VALUE_FLOOR {
        0.0
    } else {
        p.min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_counts_score_zero() {
        let s = binned_scores(&[10, 20, 30], &[1, 2, 3]);
        assert!(s.psi.abs() < 1e-15);
        assert!(s.jensen_shannon.abs() < 1e-7);
        assert!(s.hellinger.abs() < 1e-7);
        assert!(s.tvd.abs() < 1e-15);
    }

    #[test]
    fn disjoint_counts_reach_the_maximum_distances() {
        let s = binned_scores(&[10, 0], &[0, 10]);
        assert!((s.jensen_shannon - 1.0).abs() < 1e-12);
        assert!((s.hellinger - 1.0).abs() < 1e-12);
        assert!((s.tvd - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kolmogorov_matches_known_values() {
        // scipy.stats.kstwobign.sf at 0.5, 1.0, 1.36, 2.0
        assert!((kolmogorov_sf(0.5) - 0.963_945_243_664_875_1).abs() < 1e-12);
        assert!((kolmogorov_sf(1.0) - 0.269_999_671_677_354_56).abs() < 1e-12);
        assert!((kolmogorov_sf(1.36) - 0.049_485_876_755_377_876).abs() < 1e-9);
        assert!((kolmogorov_sf(2.0) - 0.000_670_925_255_779_695_3).abs() < 1e-12);
        assert_eq!(kolmogorov_sf(0.0), 1.0);
        assert_eq!(kolmogorov_sf(40.0), 0.0);
    }

    #[test]
    fn chi_square_single_column_is_no_evidence() {
        assert_eq!(chi_square_homogeneity(&[5], &[7]), (0.0, 1.0));
    }
}
