//! What the two label test files on the real broker share (`kafka_labels.rs`, count
//! windows; `kafka_labels_event_time.rs`, event-time windows): the seeded generator,
//! the exact binary metrics a window's report must equal, a config, starting
//! driftscope, and reading the final windows of a reports file.

use super::common::{Driftscope, http, http_address, unique, wait_for, xc_stream_toml};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// xorshift64*: seeded, so every run sees the same messages.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The exact binary metrics of `(score, label)` rows at the decision `threshold`;
/// ROC AUC by counting every pair.
pub fn exact(rows: &[(f64, bool)], threshold: f64) -> BTreeMap<&'static str, f64> {
    let n = rows.len() as f64;
    let (mut tp, mut fp, mut tn, mut fn_) = (0.0, 0.0, 0.0, 0.0);
    let mut log_loss = 0.0;
    for &(s, y) in rows {
        match (s >= threshold, y) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fn_ += 1.0,
        }
        let p: f64 = s.clamp(1e-15, 1.0 - 1e-15);
        log_loss -= if y { p.ln() } else { (1.0 - p).ln() };
    }
    let mut ece = 0.0;
    for b in 0..10 {
        let in_bin: Vec<&(f64, bool)> =
            rows.iter().filter(|(s, _)| ((s * 10.0) as usize).min(9) == b).collect();
        if !in_bin.is_empty() {
            let m = in_bin.len() as f64;
            let positives = in_bin.iter().filter(|(_, y)| *y).count() as f64;
            let scores: f64 = in_bin.iter().map(|(s, _)| s).sum();
            ece += (positives / m - scores / m).abs() * m / n;
        }
    }
    let (mut wins, mut pairs) = (0.0, 0.0);
    for &(sp, _) in rows.iter().filter(|(_, y)| *y) {
        for &(sn, _) in rows.iter().filter(|(_, y)| !*y) {
            pairs += 1.0;
            wins += if sp > sn {
                1.0
            } else if sp == sn {
                0.5
            } else {
                0.0
            };
        }
    }
    BTreeMap::from([
        ("accuracy", (tp + tn) / n),
        ("precision", tp / (tp + fp)),
        ("recall", tp / (tp + fn_)),
        ("f1", 2.0 * tp / (2.0 * tp + fp + fn_)),
        ("log_loss", log_loss / n),
        ("ece", ece),
        ("roc_auc", wins / pairs),
    ])
}

/// A config of its own in `dir`: stream `s` reads `topics.0` (JSON) in `window` against
/// the `profile`, with its predictions' labels on `topics.1` (binary, scores at
/// `threshold`); `stream_extra` are lines added to the stream's table (e.g. its event
/// time) and `join` to its labels table (`ttl`, `max_pending`).
#[allow(clippy::too_many_arguments)]
pub fn write_labels_config(
    bootstrap: &str,
    dir: &Path,
    topics: (&str, &str),
    profile: &Path,
    window: &str,
    stream_extra: &str,
    join: &str,
    threshold: f64,
) -> PathBuf {
    let group = unique("labels");
    let config = dir.join("driftscope.toml");
    let stream =
        xc_stream_toml("s", topics.0, window, &format!(r#"{{ profile = "{}" }}"#, profile.display()))
            .replace("format = \"json\"\n", &format!("format = \"json\"\n{stream_extra}"));
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
properties = {{ "group.instance.id" = "{group}-0", "session.timeout.ms" = "10000" }}
[state]
dir = "{state}"
checkpoint_interval = "50ms"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
{stream}
[streams.labels]
topics = ["{labels}"]
prediction_id = "/id"
label_id = "key"
label = "/y"
{join}
task = {{ type = "binary", score = "/score", threshold = {threshold} }}
"#,
            state = dir.join("state").display(),
            reports = dir.join("reports.jsonl").display(),
            labels = topics.1,
        ),
    )
    .unwrap();
    config
}

/// `driftscope run` with `config`, once its /readyz answers 200; and its HTTP address.
pub fn start(config: &Path, dir: &Path) -> (Driftscope, String) {
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir);
    let addr = http_address(&run);
    wait_for("/readyz 200", Duration::from_secs(90), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        (http("GET", &addr, "/readyz", None).0 == 200).then_some(())
    });
    (run, addr)
}

/// Final windows of a reports file by index; fails on a window reported final twice.
pub fn final_windows(reports: &[serde_json::Value]) -> BTreeMap<u64, serde_json::Value> {
    let mut finals = BTreeMap::new();
    for report in reports {
        for w in report["performance"]["windows"].as_array().into_iter().flatten() {
            if w["status"] == "final" {
                let index = w["index"].as_u64().unwrap();
                assert!(finals.insert(index, w.clone()).is_none(), "window {index} reported final twice");
            }
        }
    }
    finals
}
