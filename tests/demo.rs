//! `driftscope demo` as a new user runs it: no external services, quiet during the clean
//! phase, the injected drift detected and its trigger delivered with a valid signature.

use std::process::{Command, Stdio};

#[test]
fn the_demo_detects_injected_drift_and_delivers_verified_triggers() {
    let out = Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["demo", "--duration", "40s", "--port", "0", "--rate", "2000", "--seed", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("dashboard: http://127.0.0.1:"), "{stdout}");
    // Windows 0..3 are the clean phase (2,000 records each after a 5,000-record reference).
    let drift_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("DRIFT in")).collect();
    assert!(!drift_lines.is_empty(), "no drift detected:\n{stdout}");
    for line in &drift_lines {
        let window: u64 = line
            .split("window ")
            .nth(1)
            .and_then(|w| w.split(':').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        assert!(window >= 4, "drift reported during the clean phase: {line}");
    }
    for stream in ["features", "predictions"] {
        assert!(
            stdout.lines().any(|l| l.starts_with("TRIGGER DELIVERED")
                && l.contains(&format!("`{stream}`"))
                && l.ends_with("signature verified")),
            "no verified trigger for {stream}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("TRIGGER REJECTED"), "{stdout}");
    // The features stream drifts in the features the generator shifted.
    let features = drift_lines.iter().find(|l| l.contains("`features`")).unwrap();
    for name in ["age", "income", "country"] {
        assert!(features.contains(name), "{features}");
    }
    assert!(stdout.contains("missing values in `tenure_months`"), "{stdout}");
}
