//! Version-2 verdicts and the sequential detector (issue 13), at small scale with fixed
//! seeds: the harness's soundness grid (`benches/harness/soundness.rs`, the same code)
//! with fewer windows, asserting rates, never times; and the config errors that name
//! the bad key.

#[path = "../benches/harness/soundness.rs"]
#[allow(dead_code)]
mod soundness;

use driftscope::config::Config;
use soundness::{Population, run_cell, sequential_null_run};

const WINDOWS: usize = 40;

#[test]
fn quiet_on_noise_and_trivial_shifts_loud_on_real_ones_at_every_size() {
    let mut population = Population::credit();
    for (r, reference) in [1_000u64, 20_000].into_iter().enumerate() {
        for (w, size) in [100u64, 500, 2_000, 100_000].into_iter().enumerate() {
            let cell = run_cell(&mut population, 1_000 + (r * 10 + w) as u64, reference, size, WINDOWS);
            let at = format!("reference {reference}, windows of {size}: {cell:?}");
            // No change: the per-feature level is alpha / 10 = 0.1%; 40 windows x 10
            // features allow a stray alarm or two, not the tens version 1 raises.
            assert!(cell.null_feature_rate.0 <= 0.02, "null feature rate, {at}");
            assert!(cell.null_dataset_rate.0 <= 0.01, "null dataset rate, {at}");
            assert!(cell.rescale_rate.0 <= 0.05, "a 1% rescaling is no practical change, {at}");
            let caught = if size >= 500 { 0.95 } else { 0.5 };
            assert!(cell.shift_rate.0 >= caught, "a 0.5 sigma shift is caught, {at}");
            if size == 100 {
                assert!(cell.median_delay().is_some_and(|d| d <= 2), "sequential delay, {at}");
                assert!(cell.worst_delay().is_some_and(|d| d <= 5), "sequential delay, {at}");
            }
            assert!(cell.sequential_false_per_1000 <= 1000.0 / WINDOWS as f64, "sequential, {at}");
        }
    }
}

#[test]
fn version_one_side_by_side_shows_the_flaw_version_two_fixes() {
    let mut population = Population::credit();
    let cell = run_cell(&mut population, 77, 20_000, 100, WINDOWS);
    assert!(cell.null_feature_rate.1 > 0.2, "version 1 flags noise in small windows: {cell:?}");
    assert!(cell.null_feature_rate.0 < 0.02, "version 2 does not: {cell:?}");
}

#[test]
fn sequential_detectors_stay_quiet_on_long_null_runs() {
    let mut population = Population::credit();
    // 1,000 windows over 2 references: at alpha_sequential = 0.001 each feature's
    // detector may false-alarm about once in a run of this length.
    for (reference, size) in [(1_000u64, 100_000u64), (20_000, 100)] {
        let alarms = sequential_null_run(&mut population, 5, reference, size, 1_000, 2);
        assert!(alarms.values().all(|&a| a <= 2), "reference {reference}, windows of {size}: {alarms:?}");
    }
}

fn config_error(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    format!("{:#}", anyhow::Error::new(Config::load(&path).unwrap_err()))
}

#[test]
fn bad_verdict_settings_name_the_key() {
    let e = config_error("[defaults]\nalpha = 0.0\n");
    assert!(e.contains("defaults.alpha"), "{e}");
    let e = config_error("[defaults]\nalpha_sequential = 1.5\n");
    assert!(e.contains("defaults.alpha_sequential"), "{e}");
    let e = config_error("[[fields]]\nname = \"x\"\nmin_effect = -0.1\n");
    assert!(e.contains("fields[0].min_effect"), "{e}");
    let e = config_error("[[fields]]\nname = \"x\"\nprimary_metric = \"ks\"\nmin_effect = 2.0\n");
    assert!(e.contains("fields[0].min_effect"), "{e}");
    let e = config_error("[defaults]\nrule = \"strict\"\n");
    assert!(e.contains("rule") && e.contains("significant_effect") && e.contains("threshold"), "{e}");
    let e = config_error("[defaults]\nmultiplicity = \"holm\"\n");
    assert!(e.contains("multiplicity") && e.contains("bonferroni"), "{e}");
}
