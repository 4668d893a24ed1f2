//! `driftscope demo` as a new user runs it: no external services, quiet during the clean
//! phase, the injected drift detected and its trigger delivered with a valid signature;
//! and `demo --instances N --brokers` on the real broker, merging across instances.

mod common;

use std::collections::{BTreeMap, BTreeSet};
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

/// `--instances` without `--brokers` is refused, naming why (the mock cluster has no
/// transactions) and what to do.
#[test]
fn the_multi_instance_demo_without_a_broker_is_refused_with_the_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["demo", "--instances", "2", "--duration", "5s", "--port", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for part in ["--brokers", "mock cluster", "does not implement transactions", "scripts/kafka.sh start"] {
        assert!(stderr.contains(part), "`{part}` missing: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing ran: {}", String::from_utf8_lossy(&out.stdout));
}

/// A `MERGED` line of the demo: window index, the instance that scored it, its partitions.
type Merged = (u64, String, String);

/// `demo --instances 3 --brokers` on the real broker: every instance's API names the
/// same owner of each stream, each window is merged and reported once across the
/// instances, by the owner, from the topic's partitions, and the injected drift is
/// caught after the clean phase and its trigger delivered.
#[test]
fn the_multi_instance_demo_merges_each_window_once_and_every_instance_names_the_owner() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let Some(bootstrap) = common::broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(dir.path().join("demo.err")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftscope"))
        .args(["demo", "--instances", "3", "--brokers", &bootstrap])
        .args(["--duration", "40s", "--port", "0", "--rate", "1000", "--seed", "5"])
        .env("RUST_LOG", "warn,librdkafka=error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the demo");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let text = || lines.lock().unwrap().join("\n");
    let apis: Vec<String> = common::wait_for("every instance's address", Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the demo exited ({status}):\n{}", text());
        }
        let apis: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("instance `demo-"))
            .filter_map(|l| l.split("API http://").nth(1)?.split('/').next().map(str::to_owned))
            .collect();
        (apis.len() == 3).then_some(apis)
    });
    // Once windows are merged (every instance has joined: the first owner may be the
    // first instance up, until the others join the partials group), every instance's
    // /api/v1/streams names the same owner of each stream, the one instance that says
    // it owns it.
    common::wait_for("three merged windows of each stream", Duration::from_secs(90), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the demo exited ({status}):\n{}", text());
        }
        let lines = lines.lock().unwrap();
        let merged =
            |stream: &str| lines.iter().filter(|l| l.starts_with(&format!("MERGED `{stream}`"))).count();
        (merged("features") >= 3 && merged("predictions") >= 3).then_some(())
    });
    let owners: BTreeMap<String, String> =
        common::wait_for("every instance to name the same owners", Duration::from_secs(90), || {
            let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut owned_here: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for api in &apis {
                let (status, body) = common::http("GET", api, "/api/v1/streams", None);
                if status != 200 {
                    return None;
                }
                let streams: serde_json::Value = serde_json::from_str(&body).ok()?;
                for s in streams.as_array()? {
                    let name = s["name"].as_str()?.to_owned();
                    named.entry(name.clone()).or_default().insert(s["global"]["owner"].as_str()?.to_owned());
                    if s["global"]["owned_here"].as_bool()? {
                        owned_here
                            .entry(name)
                            .or_default()
                            .push(s["global"]["instance"].as_str()?.to_owned());
                    }
                }
            }
            let owners: BTreeMap<String, String> = named
                .into_iter()
                .filter(|(_, owners)| owners.len() == 1)
                .filter_map(|(stream, owners)| Some((stream, owners.into_iter().next()?)))
                .collect();
            let agreed = owners.len() == 2
                && owners.iter().all(|(stream, owner)| owned_here.get(stream) == Some(&vec![owner.clone()]));
            agreed.then_some(owners)
        });
    assert_eq!(owners.keys().collect::<Vec<_>>(), ["features", "predictions"]);
    let status = common::wait_for("the demo to end", Duration::from_secs(120), || child.try_wait().unwrap());
    reader.join().unwrap();
    let stdout = text();
    assert!(status.success(), "demo failed:\n{stdout}");
    assert!(!stdout.contains("WINDOW SCORED TWICE"), "{stdout}");
    let mut merged: BTreeMap<(String, String), Vec<Merged>> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("MERGED `")) {
        let stream = line.split('`').nth(1).unwrap().to_owned();
        let index: u64 = line.split("window ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        let start = line.split('[').nth(1).unwrap().split(" ..").next().unwrap().to_owned();
        let partitions =
            line.split("partitions ").nth(1).unwrap().split(", scored").next().unwrap().to_owned();
        let by = line.rsplit('`').nth(1).unwrap().to_owned();
        merged.entry((stream, start)).or_default().push((index, by, partitions));
    }
    for (stream, owner) in &owners {
        let windows: Vec<&Vec<Merged>> =
            merged.iter().filter(|((s, _), _)| s == stream).map(|(_, v)| v).collect();
        assert!(windows.len() >= 3, "few merged windows of {stream}:\n{stdout}");
        assert!(windows.iter().all(|w| w.len() == 1), "a window of {stream} reported twice:\n{stdout}");
        // The windows after the group settled are the owner's, over every partition,
        // and the demo names the same owner.
        let last = &windows[windows.len() - 1][0];
        assert_eq!(&last.1, owner, "{stdout}");
        assert_eq!(last.2, "{0, 1, 2, 3, 4, 5}", "{stdout}");
        let named = stdout.lines().rfind(|l| l.starts_with(&format!("OWNER of `{stream}`"))).unwrap();
        assert!(named.contains(&format!(": `{owner}` merges")), "{named}");
    }
    // Drift: not in the clean phase (20 s of records: the first three windows at least),
    // then caught and its trigger delivered.
    let first = merged.iter().find(|((s, _), _)| s == "features").map(|(_, v)| v[0].0).unwrap();
    let drift: Vec<&str> = stdout.lines().filter(|l| l.starts_with("DRIFT in `features`")).collect();
    assert!(!drift.is_empty(), "no drift detected:\n{stdout}");
    for line in drift {
        let window: u64 = line.split("window ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
        assert!(window >= first + 3, "drift reported during the clean phase: {line}\n{stdout}");
        for name in ["age", "income", "country"] {
            assert!(line.contains(name), "{line}");
        }
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("TRIGGER DELIVERED")
            && l.contains("`features`")
            && l.ends_with("verified")),
        "{stdout}"
    );
}
