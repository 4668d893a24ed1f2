//! Tests of the performance accumulators against scikit-learn's figures on seeded rows
//! (`tests/fixtures/performance.json`, written by `tests/fixtures/performance_fixture.py`).

use super::*;

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    task: String,
    #[serde(default)]
    threshold: f64,
    #[serde(default)]
    score: Vec<f64>,
    #[serde(default)]
    predicted: Vec<serde_json::Value>,
    label: Vec<serde_json::Value>,
    expected: BTreeMap<String, f64>,
}

fn fixture() -> Vec<Case> {
    let text = include_str!("../../tests/fixtures/performance.json");
    serde_json::from_str::<Fixture>(text).expect("fixture").cases
}

/// The sketch of rows `range` of a case.
fn sketch(case: &Case, range: std::ops::Range<usize>) -> PerformanceSketch {
    match case.task.as_str() {
        "binary" => {
            let mut b = BinarySketch::new(case.threshold);
            for i in range {
                b.add(case.score[i], case.label[i].as_i64() == Some(1)).expect("valid row");
            }
            PerformanceSketch::Binary(b)
        }
        "multiclass" => {
            let mut m = MulticlassSketch::default();
            for i in range {
                m.add(case.predicted[i].as_str().expect("class"), case.label[i].as_str().expect("class"));
            }
            PerformanceSketch::Multiclass(m)
        }
        _ => {
            let mut r = RegressionSketch::default();
            for i in range {
                r.add(case.predicted[i].as_f64().expect("number"), case.label[i].as_f64().expect("number"))
                    .expect("valid row");
            }
            PerformanceSketch::Regression(r)
        }
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1.0)
}

#[test]
fn every_metric_equals_scikit_learn_on_the_fixture_rows() {
    for case in fixture() {
        let n = case.label.len();
        let metrics = sketch(&case, 0..n).metrics();
        for (name, expected) in &case.expected {
            let got = metrics.get(name).copied().unwrap_or(f64::NAN);
            if name == "roc_auc" {
                let bound = metrics["roc_auc_bound"];
                // Exact ties count in the bound too; with spread scores it is small.
                if case.name == "binary_smooth" {
                    assert!(bound < 2e-3, "{}: the grid bound {bound} is loose", case.name);
                }
                assert!(
                    (got - expected).abs() <= bound + 1e-12,
                    "{}: auc {got} vs {expected} (bound {bound})",
                    case.name
                );
            } else {
                assert!(
                    close(got, *expected, 1e-9),
                    "{}: {name} = {got}, scikit-learn {expected}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn tied_scores_give_the_exact_auc() {
    // Scores rounded to 0.01: every tie is an exact tie, and no cell mixes two values.
    let case = fixture().into_iter().find(|c| c.name == "binary_ties").expect("case");
    let metrics = sketch(&case, 0..case.label.len()).metrics();
    assert!((metrics["roc_auc"] - case.expected["roc_auc"]).abs() < 1e-12);
}

#[test]
fn merged_parts_equal_the_whole() {
    for case in fixture() {
        let n = case.label.len();
        let whole = sketch(&case, 0..n);
        for cuts in [[0, n / 3, n / 2, n], [0, 1, n - 1, n]] {
            let mut merged = whole.empty_like();
            for w in cuts.windows(2) {
                merged.merge(&sketch(&case, w[0]..w[1]));
            }
            assert_eq!(merged.rows(), whole.rows());
            for (name, value) in whole.metrics() {
                let got = merged.metrics()[&name];
                assert!(close(got, value, 1e-12), "{}: {name} merged {got} vs whole {value}", case.name);
            }
        }
    }
}

#[test]
fn undefined_metrics_are_absent_not_zero() {
    let mut b = BinarySketch::new(0.5);
    b.add(0.2, false).expect("row");
    b.add(0.3, false).expect("row");
    let m = PerformanceSketch::Binary(b).metrics();
    assert_eq!(m["accuracy"], 1.0);
    for absent in ["precision", "recall", "f1", "roc_auc"] {
        assert!(!m.contains_key(absent), "{absent} is undefined with no positives: {m:?}");
    }
    assert!(PerformanceSketch::Regression(RegressionSketch::default()).metrics().is_empty());
}

#[test]
fn bad_scores_are_refused_and_leave_the_sketch_unchanged() {
    let mut b = BinarySketch::new(0.5);
    assert_eq!(b.add(1.5, true), Err(PairError::ScoreOutOfRange));
    assert_eq!(b.add(f64::NAN, true), Err(PairError::NotFinite));
    assert_eq!(b, BinarySketch::new(0.5));
    let mut r = RegressionSketch::default();
    assert_eq!(r.add(1.0, f64::INFINITY), Err(PairError::NotFinite));
    assert_eq!(r.rows, 0);
}

#[test]
fn classes_beyond_the_cap_share_one_bucket() {
    let mut m = MulticlassSketch::default();
    for i in 0..MAX_CLASSES + 10 {
        let c = format!("c{i}");
        m.add(&c, &c);
    }
    assert_eq!(m.classes.len(), MAX_CLASSES + 1);
    assert_eq!(m.classes[OTHER_CLASS][0], 10);
    assert_eq!(m.overflow, 10);
}

#[test]
fn the_wilson_bound_matches_an_independent_computation() {
    // Python's statistics.NormalDist for z, the Wilson formula written out.
    assert!((wilson_upper(0.8, 1000.0, 0.95) - 0.8199841357782135).abs() < 1e-9);
    assert!((wilson_upper(0.5, 10.0, 0.99) - 0.796289765144384).abs() < 1e-9);
    let w = WindowPerformance {
        index: 0,
        start: String::new(),
        end: String::new(),
        status: PerformanceStatus::Final,
        predictions: 10,
        labelled: 10,
        expired: 0,
        evicted: 0,
        handed_over: 0,
        adopted: 0,
        label_coverage: 1.0,
        metrics: BTreeMap::new(),
        confusion: Some([4, 2, 3, 1]),
        estimated: None,
    };
    // Recall 4 of 5; F1 = 8 / 11 = tp / (tp + (fp + fn) / 2) on 5.5 trials.
    assert_eq!(w.upper_bound("recall", 0.95), Some(wilson_upper(0.8, 5.0, 0.95)));
    assert_eq!(w.upper_bound("f1", 0.95), Some(wilson_upper(4.0 / 5.5, 5.5, 0.95)));
    assert_eq!(w.upper_bound("mae", 0.95), None);
}

#[test]
fn auc_cells_are_written_sparse_and_read_back_as_before() {
    let mut sketch = BinarySketch::new(0.5);
    for (score, label) in [(0.1, false), (0.1, false), (0.7, true), (0.95, true), (0.4, true)] {
        sketch.add(score, label).expect("valid");
    }
    let json = serde_json::to_value(&sketch).expect("serializes");
    // The format checkpoints and profiles had with a sparse map: non-empty cells only.
    assert_eq!(json["auc_negatives"], serde_json::json!({"100": 2}));
    assert_eq!(json["auc_positives"], serde_json::json!({"400": 1, "700": 1, "950": 1}));
    let back: BinarySketch = serde_json::from_value(json.clone()).expect("reads back");
    assert_eq!(back, sketch);
    assert_eq!(back.roc_auc(), sketch.roc_auc());
    // An idle sketch holds no cells and writes empty maps.
    let idle = serde_json::to_value(BinarySketch::new(0.5)).expect("serializes");
    assert_eq!(idle["auc_positives"], serde_json::json!({}));
    // A cell outside the grid is refused, not indexed.
    let mut bad = json;
    bad["auc_positives"] = serde_json::json!({"1000": 1});
    let e = serde_json::from_value::<BinarySketch>(bad).unwrap_err().to_string();
    assert!(e.contains("outside the 1000 cells"), "{e}");
}
