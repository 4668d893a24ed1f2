//! The state directory under faults, on the real broker: records the checkpoint already
//! holds are skipped when the committed offsets lag behind it; a corrupt, truncated or
//! newer-version checkpoint is refused by name and `--fresh-state` sets it aside; a full
//! disk or an unusable state directory makes driftscope not ready and pauses it (no
//! report, no commit) until the checkpoint can be written, then nothing is missing.

mod common;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn json_records(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!(r#"{{"x":{},"c":"{}"}}"#, (i * 7919) % 1000, ["a", "b", "c"][i % 3]).into_bytes())
        .collect()
}

fn build_reference(dir: &Path) -> PathBuf {
    let mut csv = String::from("x,c\n");
    for i in 0..3_000usize {
        csv.push_str(&format!("{},{}\n", (i * 104_729) % 1000, ["a", "b", "c"][i % 3]));
    }
    build_profile(dir, &csv)
}

/// One tumbling-count stream of 500 records; returns (config, reports file, state dir).
fn write_config(dir: &Path, bootstrap: &str, topic: &str, group: &str, state: &Path) -> (PathBuf, PathBuf) {
    let profile = build_reference(dir);
    let reports = dir.join("reports.jsonl");
    let config = dir.join("driftscope.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
[state]
dir = "{state}"
checkpoint_interval = "50ms"
[outputs]
reports_file = "{reports}"
[http]
listen = "127.0.0.1:0"
{stream}"#,
            state = state.display(),
            reports = reports.display(),
            stream = xc_stream_toml(
                "s",
                topic,
                r#"{ type = "tumbling_count", size = 500 }"#,
                &format!(r#"{{ profile = "{}" }}"#, profile.display()),
            ),
        ),
    )
    .unwrap();
    (config, reports)
}

fn start(config: &Path, dir: &Path, extra: &[&str]) -> (Driftscope, String) {
    let mut args = vec!["run", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = Driftscope::start(&args, dir);
    let addr = http_address(&run);
    (run, addr)
}

fn metric(addr: &str, series: &str) -> Option<f64> {
    let (_, text) = http("GET", addr, "/metrics", None);
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn readyz(addr: &str) -> (u16, String) {
    http("GET", addr, "/readyz", None)
}

fn expected_windows(n: u64) -> Vec<(u64, u64, i64, i64)> {
    (0..n).map(|i| (i, 500, i as i64 * 500, i as i64 * 500 + 499)).collect()
}

/// Runs `driftscope run` to its exit; returns (success, stderr).
fn run_to_exit(config: &Path, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["run", "--config", config.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn held_records_are_skipped_and_bad_checkpoints_are_refused_by_name() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("state");
    let group = unique("g-state");
    create_topic(&bootstrap, &topic, 1);
    let state = dir.path().join("state");
    let (config, reports) = write_config(dir.path(), &bootstrap, &topic, &group, &state);
    produce(&bootstrap, &topic, 0, &json_records(0..1_750));

    let (mut run, _) = start(&config, dir.path(), &[]);
    run.wait_reports(&reports, 3, Duration::from_secs(120));
    assert!(run.terminate().success());
    assert_eq!(report_windows(&reports), expected_windows(3));

    // As after a crash between writing a checkpoint and committing: the group's offset
    // is behind what the checkpoint holds (250 records of the open window included).
    let rewind: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", &group).create().unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&topic, 0, Offset::Offset(0)).unwrap();
    rewind.commit(&list, CommitMode::Sync).unwrap();
    drop(rewind);

    let (mut run, addr) = start(&config, dir.path(), &[]);
    wait_for("1,750 records skipped as already held", Duration::from_secs(90), || {
        (metric(&addr, "driftscope_records_skipped_replayed_total{stream=\"s\"}") == Some(1750.0))
            .then_some(())
    });
    produce(&bootstrap, &topic, 0, &json_records(1_750..2_000));
    run.wait_reports(&reports, 4, Duration::from_secs(60));
    assert!(run.terminate().success());
    assert_eq!(report_windows(&reports), expected_windows(4), "no window repeated, none counted twice");

    // Unusable checkpoints are refused, naming the file and the way out.
    let path = state.join("checkpoint.bin");
    let good = std::fs::read(&path).unwrap();
    let mut newer = good.clone();
    newer[8] = 99;
    for (what, bytes) in [("truncated", &good[..good.len() / 2]), ("corrupt", b"not a checkpoint".as_slice())]
    {
        std::fs::write(&path, bytes).unwrap();
        let (ok, stderr) = run_to_exit(&config, &[]);
        assert!(!ok, "{what}: must not start");
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains("--fresh-state"),
            "{what}: {stderr}"
        );
    }
    std::fs::write(&path, &newer).unwrap();
    let (ok, stderr) = run_to_exit(&config, &[]);
    assert!(!ok && stderr.contains("format version 99"), "{stderr}");

    // --fresh-state starts without it, keeps it aside and says what is lost.
    std::fs::write(&path, &good).unwrap();
    let (mut run, addr) = start(&config, dir.path(), &["--fresh-state"]);
    wait_for("ready", Duration::from_secs(90), || (readyz(&addr).0 == 200).then_some(()));
    let log = run.log_text();
    assert!(log.contains("--fresh-state") && log.contains("lost"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("checkpoint.bin.discarded-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(run.child.try_wait().unwrap().is_none());
    assert!(run.terminate().success());
}

/// A small tmpfs mounted on a directory for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Breaks the state directory while driftscope runs; `repair` undoes it.
fn unusable_state_dir_pauses_until_repaired(
    name: &str,
    break_it: impl FnOnce(&Path),
    repair: impl FnOnce(&Path),
    state: &Path,
    dir: &Path,
) {
    let bootstrap = broker().unwrap();
    let topic = unique(name);
    create_topic(&bootstrap, &topic, 1);
    let (config, reports) = write_config(dir, &bootstrap, &topic, &unique(name), state);
    produce(&bootstrap, &topic, 0, &json_records(0..1_000));
    let (mut run, addr) = start(&config, dir, &[]);
    run.wait_reports(&reports, 2, Duration::from_secs(120));
    wait_for("ready", Duration::from_secs(60), || (readyz(&addr).0 == 200).then_some(()));

    break_it(state);
    produce(&bootstrap, &topic, 0, &json_records(1_000..1_250));
    let (_, body) = wait_for("not ready, naming the checkpoint", Duration::from_secs(60), || {
        let (status, body) = readyz(&addr);
        (status == 503).then_some((status, body))
    });
    assert!(
        body.contains("cannot write the checkpoint") && body.contains("checkpoint.bin"),
        "{name}: {body}"
    );
    // It keeps trying (and failing) while consumption is paused: nothing reported.
    wait_for("checkpoint retries", Duration::from_secs(60), || {
        (metric(&addr, "driftscope_checkpoints_total{outcome=\"failed\"}")? >= 3.0).then_some(())
    });
    assert_eq!(
        report_windows(&reports),
        expected_windows(2),
        "{name}: nothing reported without a checkpoint"
    );
    assert!(run.child.try_wait().unwrap().is_none(), "{name}: still running");
    assert!(run.log_text().contains("consumption paused"), "{name}");

    repair(state);
    produce(&bootstrap, &topic, 0, &json_records(1_250..1_500));
    wait_for("ready again", Duration::from_secs(60), || (readyz(&addr).0 == 200).then_some(()));
    run.wait_reports(&reports, 3, Duration::from_secs(60));
    assert!(run.terminate().success());
    assert_eq!(report_windows(&reports), expected_windows(3), "{name}: no record lost");
}

#[test]
fn a_full_disk_makes_it_not_ready_and_nothing_is_lost() {
    if broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let Some(_tmpfs) = Tmpfs::mount(&state, "4m") else {
        // Mounting needs root (CAP_SYS_ADMIN); the next test covers the same path
        // with a state directory that cannot be written at all.
        eprintln!("cannot mount a tmpfs here: skipping the disk-full variant");
        return;
    };
    let filler = state.join("filler");
    unusable_state_dir_pauses_until_repaired(
        "disk-full",
        |_| {
            // Fill the file system to the last byte.
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![0u8; 64 * 1024];
            while f.write_all(&block).is_ok() {}
            let _ = f.write_all(&[0]);
            let _ = f.flush();
        },
        |_| std::fs::remove_file(&filler).unwrap(),
        &state,
        dir.path(),
    );
}

#[test]
fn a_state_dir_that_cannot_be_written_makes_it_not_ready_and_nothing_is_lost() {
    if broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let moved = dir.path().join("state-moved");
    // Permission bits do not stop root, so the directory is replaced by a plain file:
    // every write below it fails, as on a read-only or vanished volume.
    unusable_state_dir_pauses_until_repaired(
        "no-dir",
        |state| {
            std::fs::rename(state, &moved).unwrap();
            std::fs::write(state, b"not a directory").unwrap();
        },
        |state| {
            std::fs::remove_file(state).unwrap();
            std::fs::rename(&moved, state).unwrap();
        },
        &state,
        dir.path(),
    );
}
