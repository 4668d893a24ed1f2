//! Crash safety on the real broker: `driftscope run` is killed with SIGKILL at seeded
//! random points while records arrive, a dozen times over two streams (tumbling and
//! sliding count windows), then run to the end. Its window reports must equal, window
//! for window, those of an uninterrupted run over the same topics, with no window
//! missing or repeated, and each retraining trigger must reach the webhook receiver
//! exactly once under the same id as in the uninterrupted run.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const CHUNKS: usize = 12;
/// Not a multiple of the tumbling window: every other chunk ends mid-window, so a kill
/// after a chunk was read and checkpointed finds a half-full window, however large the
/// batches the consumer reads the chunk in.
const CHUNK: usize = 2_250;
const RECORDS: usize = CHUNKS * CHUNK;
/// Tumbling windows of 500 records; sliding windows of 1,000 records every 250.
const TUMBLING_WINDOWS: usize = RECORDS / 500;
const SLIDING_WINDOWS: usize = RECORDS / 250 - 3;

/// xorshift64*: a seeded generator, so every run of the test sees the same records.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal: the sum of four uniforms, centred and scaled.
    fn normal(&mut self) -> f64 {
        ((0..4).map(|_| self.unit()).sum::<f64>() - 2.0) * 1.7
    }
}

/// Record `i` of the stream: clean, except records 10,000 to 16,000, where `x` shifts
/// and category `d` dominates.
fn record(rng: &mut Rng, i: usize) -> (f64, &'static str) {
    let drifted = (10_000..16_000).contains(&i);
    let x = rng.normal() + if drifted { 2.5 } else { 0.0 };
    let u = rng.unit();
    let c = if drifted {
        if u < 0.7 { "d" } else { "a" }
    } else {
        ["a", "a", "b", "b", "c", "d"][(u * 6.0) as usize % 6]
    };
    (x, c)
}

fn payloads(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..RECORDS)
        .map(|i| {
            let (x, c) = record(&mut rng, i);
            format!(r#"{{"x":{x},"c":"{c}"}}"#).into_bytes()
        })
        .collect()
}

fn build_reference(dir: &Path) -> std::path::PathBuf {
    let mut rng = Rng(99);
    let mut csv = String::from("x,c\n");
    for _ in 0..5_000 {
        let (x, c) = record(&mut rng, 0);
        csv.push_str(&format!("{x},{c}\n"));
    }
    build_profile(dir, &csv)
}

struct Setup<'a> {
    bootstrap: &'a str,
    topics: (&'a str, &'a str),
    profile: &'a Path,
}

/// A config of its own (group, state dir, reports file, receiver) in `dir`.
fn write_config(setup: &Setup, dir: &Path, webhook: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let group = unique("crash");
    let reports = dir.join("reports.jsonl");
    let config = dir.join("driftscope.toml");
    let reference = format!(r#"{{ profile = "{}" }}"#, setup.profile.display());
    let stream = |name: &str, topic: &str, window: &str| xc_stream_toml(name, topic, window, &reference);
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
# Static membership: a restarted instance takes its partitions back at once instead of
# waiting for the killed one's session to time out.
properties = {{ "group.instance.id" = "{group}-0", "session.timeout.ms" = "10000" }}
[state]
dir = "{state}"
checkpoint_interval = "50ms"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
{tumbling}
{sliding}
[[triggers]]
name = "retrain"
kind = {{ type = "webhook", url = "{webhook}", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }}
condition = {{ dataset_drift = true, consecutive_windows = 2, clear_windows = 2, cooldown = "0s" }}
"#,
            bootstrap = setup.bootstrap,
            state = dir.join("state").display(),
            reports = reports.display(),
            tumbling = stream("tumbling", setup.topics.0, r#"{ type = "tumbling_count", size = 500 }"#),
            sliding =
                stream("sliding", setup.topics.1, r#"{ type = "sliding_count", size = 1000, slide = 250 }"#),
        ),
    )
    .unwrap();
    (config, reports)
}

fn start(config: &Path, dir: &Path) -> (Driftscope, String) {
    let run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir);
    let addr = http_address(&run);
    (run, addr)
}

fn wait_ready(run: &mut Driftscope, addr: &str) {
    wait_for("/readyz 200", Duration::from_secs(90), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        (http("GET", addr, "/readyz", None).0 == 200).then_some(())
    });
}

/// Reports by stream, in file order, without the processing-time bounds (the only
/// fields that depend on when records were read).
fn by_stream(path: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for mut report in read_reports(path) {
        let window = report["window"].as_object_mut().unwrap();
        window.remove("start");
        window.remove("end");
        out.entry(report["stream"].as_str().unwrap().to_owned()).or_default().push(report);
    }
    out
}

/// Runs to the end of the topics: every window reported and every fired trigger
/// delivered. Returns the reports.
fn finish(mut run: Driftscope, addr: &str, reports: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    wait_for("every window reported", Duration::from_secs(120), || {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!("driftscope exited early ({status}):\n{}", run.log_text());
        }
        let got = by_stream(reports);
        let count = |s: &str| got.get(s).map_or(0, Vec::len);
        (count("tumbling") >= TUMBLING_WINDOWS && count("sliding") >= SLIDING_WINDOWS).then_some(())
    });
    wait_for("every fired trigger delivered", Duration::from_secs(60), || {
        let (status, body) = http("GET", addr, "/api/v1/triggers", None);
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        let list = list.as_array()?;
        (status == 200 && list.iter().all(|t| t["status"] == "delivered")).then_some(())
    });
    assert!(run.terminate().success());
    by_stream(reports)
}

#[test]
fn sigkill_at_random_points_changes_no_report_and_fires_each_trigger_once() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (topic_a, topic_b) = (unique("crash-a"), unique("crash-b"));
    create_topic(&bootstrap, &topic_a, 1);
    create_topic(&bootstrap, &topic_b, 1);
    let profile = build_reference(dir.path());
    let setup = Setup { bootstrap: &bootstrap, topics: (&topic_a, &topic_b), profile: &profile };
    let (records_a, records_b) = (payloads(1), payloads(2));

    // Killed run: each round starts driftscope, produces the next chunk while it runs
    // and kills it after a seeded random delay.
    let killed_dir = dir.path().join("killed");
    let killed_sink = WebhookSink::start();
    let (config, reports) = write_config(&setup, &killed_dir, &killed_sink.url);
    let mut kill_rng = Rng(0x5eed);
    let mut delays = Vec::new();
    for round in 0..CHUNKS {
        let (mut run, addr) = start(&config, &killed_dir);
        wait_ready(&mut run, &addr);
        let chunk = round * CHUNK..(round + 1) * CHUNK;
        let producer = {
            let (bootstrap, a, b) = (bootstrap.clone(), topic_a.clone(), topic_b.clone());
            let (ra, rb) = (records_a[chunk.clone()].to_vec(), records_b[chunk].to_vec());
            std::thread::spawn(move || {
                produce(&bootstrap, &a, 0, &ra);
                produce(&bootstrap, &b, 0, &rb);
            })
        };
        // The kill point (not a synchronisation): somewhere in the chunk's consumption,
        // between checkpoints, or after it.
        let delay = Duration::from_millis(kill_rng.next() % 400);
        delays.push(delay.as_millis());
        std::thread::sleep(delay);
        kill_hard(run);
        producer.join().unwrap();
    }
    let restored: Vec<String> = std::fs::read_dir(&killed_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|log| {
            log.lines().filter(|l| l.contains("checkpoint restored")).map(str::to_owned).collect::<Vec<_>>()
        })
        .collect();
    // A kill before the first record leaves no checkpoint to restore.
    assert!(restored.len() >= CHUNKS / 2, "restarts restored the checkpoint: {restored:#?}");
    let mid_window = restored.iter().filter(|l| !l.contains("(\"tumbling\", 0)")).count();
    assert!(mid_window > 0, "some kills hit half-full tumbling windows: {restored:#?}");
    let (run, addr) = start(&config, &killed_dir);
    let killed = finish(run, &addr, &reports);

    // Uninterrupted run over the same topics, in a group and state of its own.
    let whole_dir = dir.path().join("whole");
    let whole_sink = WebhookSink::start();
    let (config, reports) = write_config(&setup, &whole_dir, &whole_sink.url);
    let (run, addr) = start(&config, &whole_dir);
    let whole = finish(run, &addr, &reports);

    for stream in ["tumbling", "sliding"] {
        let (k, w) = (&killed[stream], &whole[stream]);
        let indexes: Vec<u64> = k.iter().map(|r| r["window"]["index"].as_u64().unwrap()).collect();
        assert_eq!(indexes, (0..w.len() as u64).collect::<Vec<_>>(), "{stream}: each window once, in order");
        assert_eq!(k.len(), if stream == "tumbling" { TUMBLING_WINDOWS } else { SLIDING_WINDOWS });
        for (a, b) in k.iter().zip(w) {
            assert_eq!(
                a, b,
                "{stream}: window {} differs after {} kills (delays {delays:?} ms)",
                b["window"]["index"], CHUNKS
            );
        }
    }
    assert!(
        whole["tumbling"].iter().any(|r| r["dataset"]["drifted"] == true),
        "the drifted records are flagged (else the trigger check proves nothing)"
    );
    // The reports carry each feature's sequential detector, so the equality above also
    // proves that kills neither reset it nor folded a window into it twice; it must
    // have moved for that to mean anything.
    assert!(
        whole["tumbling"].iter().any(|r| r["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["sequential"]["alarm"] == true))),
        "the sequential detectors alarmed on the drift"
    );

    let killed_ids = killed_sink.ids();
    let mut whole_ids = whole_sink.ids();
    let mut distinct = killed_ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), killed_ids.len(), "each trigger delivered once: {killed_ids:?}");
    whole_ids.sort();
    assert!(!whole_ids.is_empty(), "the drift fired a trigger");
    assert_eq!(distinct, whole_ids, "the same triggers, with the same ids, as the uninterrupted run");
}
