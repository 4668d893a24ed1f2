//! Stopping within `state.shutdown_timeout` on the real broker, one test per state a
//! SIGTERM can meet: joining a group (a SIGKILLed predecessor without static
//! membership, so the broker holds the join until its session expires), broker down,
//! trigger receiver down, and a state directory that cannot be written. Each asserts
//! the exit status (0, or 3 when the last checkpoint could not be written) and that the
//! next start loses nothing: every window is reported once, with every record.
//!
//! Each test also prints how long the stop took (`shutdown-time state=... seconds=...`)
//! for `scripts/shutdown-times.sh`; the time is measured, never asserted here.

mod common;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Records per tumbling window.
const WINDOW: usize = 100;
/// The group session of these configs: long enough that a join waiting for a killed
/// member's session outlasts the stop's bound by far.
const SESSION_TIMEOUT_MS: u64 = 20_000;
/// `state.shutdown_timeout` of these configs.
const SHUTDOWN_TIMEOUT: &str = "3s";

fn json_records(range: std::ops::Range<usize>, shift: usize) -> Vec<Vec<u8>> {
    range
        .map(|i| {
            format!(r#"{{"x":{},"c":"{}"}}"#, (i * 7919) % 1000 + shift, ["a", "b", "c"][i % 3]).into_bytes()
        })
        .collect()
}

struct Case {
    dir: tempfile::TempDir,
    bootstrap: String,
    topic: String,
    group: String,
    profile: PathBuf,
    reports: PathBuf,
    state: PathBuf,
}

impl Case {
    fn new(name: &str, bootstrap: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("x,c\n");
        for i in 0..3_000usize {
            csv.push_str(&format!("{},{}\n", (i * 104_729) % 1000, ["a", "b", "c"][i % 3]));
        }
        let profile = build_profile(dir.path(), &csv);
        let topic = unique(name);
        create_topic(bootstrap, &topic, 1);
        Case {
            reports: dir.path().join("reports.jsonl"),
            state: dir.path().join("state"),
            bootstrap: bootstrap.to_owned(),
            group: unique(name),
            topic,
            profile,
            dir,
        }
    }

    /// A config without `group.instance.id` (no static membership); `extra` is
    /// appended (triggers).
    fn config(&self, extra: &str) -> PathBuf {
        let config = self.dir.path().join("driftscope.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
properties = {{ "session.timeout.ms" = "{SESSION_TIMEOUT_MS}" }}
[state]
dir = "{state}"
checkpoint_interval = "50ms"
shutdown_timeout = "{SHUTDOWN_TIMEOUT}"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
{stream}
{extra}"#,
                bootstrap = self.bootstrap,
                group = self.group,
                state = self.state.display(),
                reports = self.reports.display(),
                stream = xc_stream_toml(
                    "s",
                    &self.topic,
                    &format!(r#"{{ type = "tumbling_count", size = {WINDOW} }}"#),
                    &format!(r#"{{ profile = "{}" }}"#, self.profile.display()),
                ),
            ),
        )
        .unwrap();
        config
    }

    fn produce(&self, range: std::ops::Range<usize>, shift: usize) {
        produce(&self.bootstrap, &self.topic, 0, &json_records(range, shift));
    }

    fn start(&self, config: &Path) -> (Driftscope, String) {
        let run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], self.dir.path());
        let addr = http_address(&run);
        (run, addr)
    }

    fn windows(&self) -> Vec<(u64, u64, i64, i64)> {
        report_windows(&self.reports)
    }

    /// Starts again and runs until `records` are all in windows, then stops (exit 0):
    /// every window reported once, none missing, none with a record twice.
    fn next_start_loses_nothing(&self, config: &Path, records: usize) {
        let (mut run, _addr) = self.start(config);
        let windows = records / WINDOW;
        run.wait_reports(&self.reports, windows, Duration::from_secs(180));
        let status = run.terminate();
        assert!(status.success(), "the next start stops cleanly: {status}");
        let expected: Vec<(u64, u64, i64, i64)> = (0..windows)
            .map(|i| (i as u64, WINDOW as u64, (i * WINDOW) as i64, (i * WINDOW + WINDOW - 1) as i64))
            .collect();
        assert_eq!(self.windows(), expected, "every record in exactly one window");
    }
}

/// SIGTERM, the exit status, and how long the stop took (printed for
/// `scripts/shutdown-times.sh`, not asserted).
fn stop_and_time(run: Driftscope, state: &str) -> (std::process::ExitStatus, String) {
    let log = run.log.clone();
    let started = Instant::now();
    let status = run.terminate();
    println!("shutdown-time state={state} seconds={:.2} status={status}", started.elapsed().as_secs_f64());
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

fn ready(addr: &str) -> bool {
    http("GET", addr, "/readyz", None).0 == 200
}

/// The group's state as the broker describes it (`PreparingRebalance` while a join
/// waits for members).
fn group_state(bootstrap: &str, group: &str) -> Option<String> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().ok()?;
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(5)).ok()?;
    list.groups().first().map(|g| g.state().to_owned())
}

#[test]
fn sigterm_while_joining_a_group_exits_0_and_loses_nothing() {
    let Some(bootstrap) = broker() else { return };
    let case = Case::new("stop-join", &bootstrap);
    let config = case.config("");
    case.produce(0..1_000, 0);
    let (mut first, _) = case.start(&config);
    first.wait_reports(&case.reports, 10, Duration::from_secs(120));
    // Crashed: the group keeps its member until the session expires.
    kill_hard(first);
    case.produce(1_000..1_550, 0);
    let (joining, _) = case.start(&config);
    wait_for("the group to wait for members (a join in progress)", Duration::from_secs(30), || {
        (group_state(&bootstrap, &case.group)? == "PreparingRebalance").then_some(())
    });
    assert!(!joining.log_text().contains("partitions assigned"), "still joining when stopped");
    let (status, log) = stop_and_time(joining, "joining");
    assert!(status.success(), "exit 0 while joining: {status}\n{log}");
    assert!(log.contains("monitor stopped"), "{log}");
    case.next_start_loses_nothing(&config, 1_500);
}

#[test]
fn sigterm_with_the_broker_down_exits_0_and_loses_nothing() {
    if broker().is_none() {
        return;
    }
    let kafka = OwnBroker::start("faults-stop", "");
    let case = Case::new("stop-broker", &kafka.bootstrap);
    let config = case.config("");
    case.produce(0..1_050, 0);
    let (mut run, addr) = case.start(&config);
    run.wait_reports(&case.reports, 10, Duration::from_secs(120));
    kafka.script(&["kill"]);
    wait_for("not ready without the broker", Duration::from_secs(60), || (!ready(&addr)).then_some(()));
    let (status, log) = stop_and_time(run, "broker_down");
    assert!(status.success(), "exit 0 with the broker down: {status}\n{log}");
    kafka.start_again();
    case.produce(1_050..1_500, 0);
    case.next_start_loses_nothing(&config, 1_500);
}

#[test]
fn sigterm_with_the_trigger_receiver_down_exits_0_and_keeps_the_triggers() {
    let Some(bootstrap) = broker() else { return };
    let case = Case::new("stop-hook", &bootstrap);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let trigger = |url: &str| {
        format!(
            r#"
[[triggers]]
name = "retrain"
kind = {{ type = "webhook", url = "{url}", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }}
condition = {{ dataset_drift = true, consecutive_windows = 1, clear_windows = 1, cooldown = "0s" }}
"#
        )
    };
    let config = case.config(&trigger(&format!("http://{closed}/hook")));
    // Shifted far from the reference: every window drifts.
    case.produce(0..1_000, 5_000);
    let (mut run, addr) = case.start(&config);
    run.wait_reports(&case.reports, 10, Duration::from_secs(120));
    let pending: Vec<String> = wait_for("undelivered triggers", Duration::from_secs(60), || {
        let (status, body) = http("GET", &addr, "/api/v1/triggers", None);
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        let ids: Vec<String> =
            list.as_array()?.iter().filter_map(|t| Some(t["id"].as_str()?.to_owned())).collect();
        (status == 200 && !ids.is_empty()).then_some(ids)
    });
    let (status, log) = stop_and_time(run, "trigger_receiver_down");
    assert!(status.success(), "exit 0 with the receiver down: {status}\n{log}");
    // The receiver is up for the next start: the outbox delivers what was left.
    let sink = WebhookSink::start();
    let config = case.config(&trigger(&sink.url));
    case.produce(1_000..1_500, 5_000);
    let (mut run, _) = case.start(&config);
    run.wait_reports(&case.reports, 15, Duration::from_secs(120));
    wait_for("the left triggers delivered", Duration::from_secs(60), || {
        let got = sink.ids();
        pending.iter().all(|id| got.contains(id)).then_some(())
    });
    assert!(run.terminate().success());
    let expected: Vec<(u64, u64, i64, i64)> = (0..15)
        .map(|i| (i as u64, WINDOW as u64, (i * WINDOW) as i64, (i * WINDOW + WINDOW - 1) as i64))
        .collect();
    assert_eq!(case.windows(), expected, "every record in exactly one window");
}

#[test]
fn sigterm_when_the_checkpoint_cannot_be_written_exits_3_and_loses_nothing() {
    let Some(bootstrap) = broker() else { return };
    let case = Case::new("stop-state", &bootstrap);
    let config = case.config("");
    case.produce(0..1_000, 0);
    let (mut run, addr) = case.start(&config);
    run.wait_reports(&case.reports, 10, Duration::from_secs(120));
    wait_for("ready", Duration::from_secs(60), || ready(&addr).then_some(()));
    // Permission bits do not stop root: the directory is replaced by a plain file, so
    // every write below it fails, as on a read-only or vanished volume.
    let moved = case.dir.path().join("state-moved");
    std::fs::rename(&case.state, &moved).unwrap();
    std::fs::write(&case.state, b"not a directory").unwrap();
    case.produce(1_000..1_050, 0);
    wait_for("not ready: the checkpoint fails", Duration::from_secs(60), || (!ready(&addr)).then_some(()));
    let (status, log) = stop_and_time(run, "checkpoint_failing");
    assert_eq!(status.code(), Some(3), "exit 3 without the last checkpoint: {status}\n{log}");
    assert!(log.contains("the last checkpoint could not be written"), "{log}");
    std::fs::remove_file(&case.state).unwrap();
    std::fs::rename(&moved, &case.state).unwrap();
    case.produce(1_050..1_500, 0);
    case.next_start_loses_nothing(&config, 1_500);
}
