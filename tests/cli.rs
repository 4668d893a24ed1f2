//! The command line as a user meets it: help texts, exit codes, errors that name the
//! file or key at fault, profiles saved and refused, secrets redacted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn driftscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftscope")).args(args).env("RUST_LOG", "warn").output().unwrap()
}

fn fixture(case: &str, file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stats")
        .join(case)
        .join(file)
        .display()
        .to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn help_lists_every_command_and_each_has_examples() {
    let help = text(&driftscope(&["--help"]));
    for command in ["run", "demo", "score", "reference", "config"] {
        assert!(help.contains(command), "{help}");
    }
    for args in [
        &["run", "--help"][..],
        &["demo", "--help"],
        &["score", "--help"],
        &["reference", "build", "--help"],
        &["config", "check", "--help"],
    ] {
        let out = driftscope(args);
        assert!(out.status.success());
        assert!(text(&out).contains("Examples:"), "{args:?} has no examples");
    }
}

#[test]
fn score_exit_codes_gate_ci_jobs() {
    let drift = driftscope(&[
        "score",
        "--reference",
        &fixture("normal_shift", "reference.csv"),
        "--current",
        &fixture("normal_shift", "current.parquet"),
    ]);
    assert_eq!(drift.status.code(), Some(1), "{}", text(&drift));
    let report: serde_json::Value = serde_json::from_slice(&drift.stdout).unwrap();
    assert_eq!(report["dataset"]["drifted"], true);
    let quiet = driftscope(&[
        "score",
        "--reference",
        &fixture("uniform_identical", "reference.parquet"),
        "--current",
        &fixture("uniform_identical", "current.csv"),
        "--format",
        "table",
    ]);
    assert_eq!(quiet.status.code(), Some(0), "{}", text(&quiet));
    assert!(text(&quiet).contains("no dataset drift"));
    let missing = driftscope(&[
        "score",
        "--reference",
        "/nonexistent/train.csv",
        "--current",
        &fixture("ties", "current.csv"),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("/nonexistent/train.csv"), "{}", text(&missing));
}

#[test]
fn unmatched_columns_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("r.csv");
    let current = dir.path().join("c.csv");
    std::fs::write(&reference, "a,b\n1,x\n2,y\n3,x\n").unwrap();
    std::fs::write(&current, "a,z\n1,9\n2,8\n").unwrap();
    let out = driftscope(&[
        "score",
        "--reference",
        reference.to_str().unwrap(),
        "--current",
        current.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = report["notes"].to_string();
    assert!(notes.contains("`z` is in the current data but not in the reference"), "{notes}");
    assert!(notes.contains("`b` is in the reference but not in the current data"), "{notes}");
    assert_eq!(report["features"][1]["missing_share"], 1.0);
}

#[test]
fn a_bad_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[[fields]]\nname = \"x\"\nprimary_metric = \"ks\"\nkind = \"categorical\"\n")
        .unwrap();
    let out = driftscope(&[
        "score",
        "--reference",
        &fixture("ties", "reference.csv"),
        "--current",
        &fixture("ties", "current.csv"),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out);
    assert!(err.contains("bad.toml") && err.contains("fields[0].primary_metric"), "{err}");
}

#[test]
fn profiles_are_saved_reused_and_newer_versions_refused() {
    let dir = tempfile::tempdir().unwrap();
    let profile: PathBuf = dir.path().join("model.profile");
    let build = driftscope(&[
        "reference",
        "build",
        "--input",
        &fixture("normal_shift", "reference.parquet"),
        "--output",
        profile.to_str().unwrap(),
    ]);
    assert!(build.status.success(), "{}", text(&build));
    let from_profile = driftscope(&[
        "score",
        "--reference",
        profile.to_str().unwrap(),
        "--current",
        &fixture("normal_shift", "current.csv"),
    ]);
    let from_data = driftscope(&[
        "score",
        "--reference",
        &fixture("normal_shift", "reference.parquet"),
        "--current",
        &fixture("normal_shift", "current.csv"),
    ]);
    let a: serde_json::Value = serde_json::from_slice(&from_profile.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&from_data.stdout).unwrap();
    assert_eq!(a["features"], b["features"]);

    let newer = std::fs::read_to_string(&profile).unwrap().replacen(
        "\"format_version\":1",
        "\"format_version\":99",
        1,
    );
    let newer_path = dir.path().join("newer.profile");
    std::fs::write(&newer_path, newer).unwrap();
    let out = driftscope(&[
        "score",
        "--reference",
        newer_path.to_str().unwrap(),
        "--current",
        &fixture("normal_shift", "current.csv"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out);
    assert!(err.contains("newer.profile") && err.contains("version 99"), "{err}");
}

#[test]
fn config_check_prints_the_resolved_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[http]\napi_token = \"${DS_TEST_TOKEN}\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2-secret\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["config", "check", "--config", config.to_str().unwrap()])
        .env("DS_TEST_TOKEN", "tok-abcdef-123")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(!printed.contains("hunter2-secret") && !printed.contains("tok-abcdef-123"), "{printed}");
    assert!(printed.contains("<redacted>"));
    assert!(printed.contains("min_samples = 100"), "defaults are filled in: {printed}");
}

#[test]
fn run_refuses_global_count_windows_by_key_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("global.toml");
    std::fs::write(
        &config,
        "[scale]\nmode = \"global\"\n[[streams]]\nname = \"credit\"\ntopics = [\"t\"]\nformat = \"json\"\n\
         reference = { profile = \"p.profile\" }\nwindow = { type = \"tumbling_count\", size = 100 }\n",
    )
    .unwrap();
    let out = driftscope(&["run", "--config", config.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out);
    assert!(
        err.contains("streams[0].window.type") && err.contains("count windows cannot be global"),
        "{err}"
    );
}

/// `reference build --config` keeps the model's figures when the data has the label
/// and score columns of the stream's labels table, and `run` refuses a performance
/// condition without a baseline whose stream's profile lacks them, naming the key.
#[test]
fn the_reference_keeps_the_models_figures_and_a_performance_condition_needs_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.csv");
    std::fs::write(&data, "x,score,y\n0.1,0.2,0\n0.5,0.9,1\n0.3,0.6,0\n0.2,0.3,1\n0.4,0.8,1\n").unwrap();
    let profile = dir.path().join("model.profile");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[state]\ndir = {state:?}\n\
             [[streams]]\nname = \"s\"\ntopics = [\"p\"]\nformat = \"json\"\n\
             window = {{ type = \"tumbling_count\", size = 10 }}\nreference = {{ profile = {profile:?} }}\n\
             [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n\
             [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\n\
             ttl = \"10s\"\ntask = {{ type = \"binary\", score = \"/score\", threshold = 0.5 }}\n\
             [[triggers]]\nname = \"t\"\nkind = {{ type = \"webhook\", url = \"http://127.0.0.1:1/\", \
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n\
             condition = {{ performance = {{ metric = \"f1\", drop = 0.05 }} }}\n",
            state = dir.path().join("state").display().to_string(),
            profile = profile.display().to_string(),
        ),
    )
    .unwrap();
    let (data, profile_arg, config_arg) =
        (data.to_str().unwrap(), profile.to_str().unwrap(), config.to_str().unwrap());
    // Without the config: a plain profile, and `run` names the missing baseline.
    let plain = driftscope(&["reference", "build", "--input", data, "--output", profile_arg]);
    assert!(plain.status.success(), "{}", text(&plain));
    let run = driftscope(&["run", "--config", config_arg]);
    assert!(!run.status.success());
    let err = text(&run);
    assert!(err.contains("triggers[0].condition.performance.baseline") && err.contains("label `y`"), "{err}");
    // With it: the model's figures and calibration, the label no longer a feature.
    let build =
        driftscope(&["reference", "build", "--input", data, "--output", profile_arg, "--config", config_arg]);
    let out = text(&build);
    assert!(build.status.success() && out.contains("model (binary, 5 rows)"), "{out}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    assert_eq!(saved["format_version"], 2);
    // Rows (0.2, 0) (0.3, 1) (0.6, 0) (0.8, 1) (0.9, 1) at 0.5: tp 2, fp 1, tn 1, fn 1.
    assert_eq!(saved["model"]["confusion"], serde_json::json!([2, 1, 1, 1]));
    assert_eq!(saved["model"]["metrics"]["f1"], 2.0 / 3.0);
    // Isotonic: 0.3 and 0.6 pool to 1/2, 0.8 and 0.9 to 1; each run keeps its ends.
    assert_eq!(saved["model"]["calibration"]["x"], serde_json::json!([0.2, 0.3, 0.6, 0.8, 0.9]));
    assert_eq!(saved["model"]["calibration"]["y"], serde_json::json!([0.0, 0.5, 0.5, 1.0, 1.0]));
    let names: Vec<&str> =
        saved["features"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["x", "score"]);
    let unknown = driftscope(&[
        "reference",
        "build",
        "--input",
        data,
        "--output",
        profile_arg,
        "--config",
        config_arg,
        "--stream",
        "nope",
    ]);
    assert!(!unknown.status.success() && text(&unknown).contains("no stream `nope`"), "{}", text(&unknown));
}
