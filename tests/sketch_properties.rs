//! Property tests: merging the sketches of two halves of a window equals sketching the
//! whole, and the sketched CDF distances stay within the grid's error bound of the
//! exact values.

use driftscope::stats::grid::cdf_distances;
use driftscope::stats::profile::{FeatureSpec, FeatureStats, ProfileBuilder};
use driftscope::stats::sketch::FeatureSketch;
use driftscope::stats::{DriftSettings, FeatureKind, Reference, ValueSink, WindowInfo, score_window};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn reference_of(
    numeric: &[f64],
    categories: &[String],
    resolution: usize,
    max_categories: usize,
) -> Reference {
    let specs = vec![
        FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
        FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
    ];
    let mut b = ProfileBuilder::new(specs, resolution, max_categories);
    b.add_records(numeric.len().max(categories.len()) as u64);
    numeric.iter().for_each(|&x| b.numeric(0, x));
    categories.iter().for_each(|c| b.category(1, c));
    let profile = b.finish("test".into(), "now".into());
    let settings =
        DriftSettings { cdf_resolution: resolution, max_categories, min_samples: 1, ..Default::default() };
    Reference::new(profile, settings, &BTreeMap::new()).unwrap()
}

/// The exact two-sample KS statistic and unnormalised W1 (scipy's definitions).
fn exact(r: &[f64], c: &[f64]) -> (f64, f64) {
    let mut all: Vec<f64> = r.iter().chain(c).copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    let cdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
    let mut ks: f64 = 0.0;
    let mut w = 0.0;
    for (i, &x) in all.iter().enumerate() {
        let d = cdf(r, x) - cdf(c, x);
        ks = ks.max(d.abs());
        if let Some(&next) = all.get(i + 1) {
            w += d.abs() * (next - x);
        }
    }
    (ks, w)
}

fn values() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec(-1000.0..1000.0f64, 1..400),
        // Heavy ties.
        prop::collection::vec((0..8i32).prop_map(f64::from), 1..400),
    ]
}

fn categories() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((0..30u8).prop_map(|i| format!("cat{i}")), 0..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn merged_halves_equal_the_whole(
        reference in values(),
        window in values(),
        split in 0.0..1.0f64,
        ref_cats in categories(),
        win_cats in categories(),
        resolution in prop::sample::select(vec![16usize, 64, 1024]),
    ) {
        let r = reference_of(&reference, &ref_cats, resolution, 1000);
        let cut = (window.len() as f64 * split) as usize;
        let cat_cut = (win_cats.len() as f64 * split) as usize;
        let mut whole = r.new_window();
        let mut left = r.new_window();
        let mut right = r.new_window();
        for (i, &x) in window.iter().enumerate() {
            whole.numeric(0, x);
            if i < cut { left.numeric(0, x) } else { right.numeric(0, x) }
        }
        for (i, c) in win_cats.iter().enumerate() {
            whole.category(1, c);
            if i < cat_cut { left.category(1, c) } else { right.category(1, c) }
        }
        left.merge(&right);
        match (&whole.features[0], &left.features[0]) {
            (FeatureSketch::Numeric(a), FeatureSketch::Numeric(b)) => {
                let counts = |s: &driftscope::stats::numeric::NumericSketch| s.cells().iter().map(|c| (c.interior_count, c.edge_count)).collect::<Vec<_>>();
                prop_assert_eq!(counts(a), counts(b));
                prop_assert_eq!(a.count(), b.count());
            }
            _ => prop_assert!(false),
        }
        match (&whole.features[1], &left.features[1]) {
            (FeatureSketch::Categorical(a), FeatureSketch::Categorical(b)) => {
                prop_assert_eq!(a.reference_counts(), b.reference_counts());
                prop_assert_eq!(a.new_categories(), b.new_categories());
                prop_assert_eq!(a.overflow, b.overflow);
            }
            _ => prop_assert!(false),
        }
        let whole_report = score_window(&r, &whole, WindowInfo::default());
        let merged_report = score_window(&r, &left, WindowInfo::default());
        for (a, b) in whole_report.features.iter().zip(&merged_report.features) {
            for (key, va) in &a.scores {
                let vb = b.scores[key];
                prop_assert!((va - vb).abs() <= 1e-9 * va.abs().max(1.0), "{} {} vs {}", key, va, vb);
            }
        }
    }

    #[test]
    fn grid_distances_stay_within_the_error_bound(
        reference in prop::collection::vec(-100.0..100.0f64, 1..2000),
        window in values(),
        resolution in prop::sample::select(vec![16usize, 64, 256]),
    ) {
        let r = reference_of(&reference, &[], resolution, 1000);
        let mut w = r.new_window();
        window.iter().for_each(|&x| w.numeric(0, x));
        let FeatureStats::Numeric(p) = &r.profile.features[0].stats else { unreachable!() };
        let FeatureSketch::Numeric(s) = &w.features[0] else { unreachable!() };
        let d = cdf_distances(&p.grid_edges, &p.grid_cells, s.cells());
        let (ks, wd) = exact(&reference, &window);
        if resolution >= 256 {
            // Coarser grids than the minimum driftscope accepts carry no W guarantee.
            let std = p.std.max(0.001);
            prop_assert!((d.wasserstein - wd).abs() / std <= 0.01 + 0.02 * wd / std, "w {} vs {}", d.wasserstein, wd);
        }
        // At most the reference mass strictly inside one cell: about 1/resolution.
        let max_cell_mass = p.grid_cells.iter().map(|c| c.interior_count).max().unwrap_or(0) as f64 / reference.len() as f64;
        prop_assert!((d.ks_statistic - ks).abs() <= max_cell_mass + 1e-12, "ks {} vs exact {} (cell mass {})", d.ks_statistic, ks, max_cell_mass);
    }

    #[test]
    fn exact_grids_give_exact_ks_and_wasserstein_within_tolerance(reference in values(), window in values()) {
        // Fewer distinct reference values than cells: the grid holds every one.
        let r = reference_of(&reference, &[], 1 << 13, 1000);
        let mut w = r.new_window();
        window.iter().for_each(|&x| w.numeric(0, x));
        let FeatureStats::Numeric(p) = &r.profile.features[0].stats else { unreachable!() };
        let FeatureSketch::Numeric(s) = &w.features[0] else { unreachable!() };
        let d = cdf_distances(&p.grid_edges, &p.grid_cells, s.cells());
        let (ks, wd) = exact(&reference, &window);
        prop_assert!((d.ks_statistic - ks).abs() < 1e-9, "ks {} vs {}", d.ks_statistic, ks);
        // Wasserstein is exact except in cells where the two CDFs cross; the spec's
        // tolerance is 0.01 + 2% of the normalised value.
        let std = p.std.max(0.001);
        prop_assert!((d.wasserstein - wd).abs() / std <= 0.01 + 0.02 * wd / std, "w {} vs {}", d.wasserstein, wd);
    }

    #[test]
    fn category_cap_bounds_distinct_values(values in prop::collection::vec(0..10_000u32, 0..3000), cap in 1usize..50) {
        let r = reference_of(&[1.0], &["a".to_owned()], 16, cap);
        let mut w = r.new_window();
        for v in &values { w.category(1, &v.to_string()); }
        let FeatureSketch::Categorical(s) = &w.features[1] else { unreachable!() };
        prop_assert!(s.new_categories().len() <= cap);
        prop_assert_eq!(s.count(), values.len() as u64);
    }
}
