//! Global mode end to end on the real broker, with the real binary: three `driftscope
//! run` instances in global mode on one 6-partition topic give, window for window, the
//! reports one instance in local mode gives over the same records (exact scores:
//! integer values, a reference with an integer mean, so every sum is exact), each
//! window reported once, by one instance; and the same when the owner is killed
//! (SIGKILL) mid-stream: another instance takes the stream over from the committed
//! partials and progress, and no window is scored twice; and the same when another
//! instance is killed. A partition without records holds the windows until
//! `scale.idle_timeout`, and the reports name it.

mod common;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PARTITIONS: i32 = 6;
const RECORDS: i64 = 12_000;
/// Event times start on a window boundary.
const BASE_MS: i64 = 1_700_000_000_000;
/// 10 ms apart: 120 s of records, twelve 10 s windows.
const STEP_MS: i64 = 10;

fn partition_of(i: i64) -> i32 {
    ((i * 7 + i / 13) % PARTITIONS as i64) as i32
}

fn payload(i: i64) -> Vec<u8> {
    // A drift segment in the second half; integer values keep every sum exact.
    let x = (i * 7919) % 49 + if i >= RECORDS / 2 { 12 } else { 0 };
    let c = ["a", "b", "c"][((i * 31) % 3) as usize];
    format!(r#"{{"x": {x}, "c": "{c}", "ts": {}}}"#, BASE_MS + i * STEP_MS).into_bytes()
}

fn write_config(dir: &Path, name: &str, kafka: &str, scale: &str, stream: &str) -> (PathBuf, PathBuf) {
    let reports = dir.join(format!("{name}.reports.jsonl"));
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "{kafka}\n{scale}\n[state]\ndir = \"{state}\"\ncheckpoint_interval = \"1s\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [outputs]\nreports_file = \"{reports}\"\n{stream}\n",
        state = dir.join(format!("{name}-state")).display(),
        reports = reports.display(),
    );
    std::fs::write(&path, text).unwrap();
    (path, reports)
}

/// The group's committed offsets on `topic`, per partition.
fn committed(bootstrap: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition(topic, p);
    }
    let list = consumer.committed_offsets(list, Duration::from_secs(30)).expect("committed offsets");
    (0..PARTITIONS)
        .map(|p| match list.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}

/// A report reduced to what must be equal whoever scores it: the window's bounds,
/// records, offsets (sorted), the dataset verdict and every feature's scores.
fn essence(report: &serde_json::Value) -> ((String, String), serde_json::Value) {
    let w = &report["window"];
    let mut offsets: Vec<serde_json::Value> = w["offsets"].as_array().cloned().unwrap_or_default();
    offsets.sort_by_key(|o| (o["topic"].to_string(), o["partition"].as_i64()));
    (
        (w["start"].as_str().unwrap().to_owned(), w["end"].as_str().unwrap().to_owned()),
        serde_json::json!({
            "records": w["records"],
            "offsets": offsets,
            "late_records": w["late_records"],
            "dataset": report["dataset"],
            "features": report["features"],
        }),
    )
}

#[test]
fn three_global_instances_report_what_one_local_instance_reports() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("global-in");
    create_topic(&bootstrap, &topic, PARTITIONS);
    let reference = dir.path().join("reference.csv");
    // x: 0..=48 evenly, mean 24 (an integer: the moments' shift).
    std::fs::write(
        &reference,
        format!(
            "x,c\n{}",
            (0..4900).map(|i| format!("{},{}\n", i % 49, ["a", "b", "c"][i % 3])).collect::<String>()
        ),
    )
    .unwrap();
    let stream = format!(
        "[[streams]]\nname = \"credit\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
         window = {{ type = \"tumbling_time\", size = \"10s\", time = \"event\", allowed_lateness = \"10m\" }}\n\
         reference = {{ data = \"{}\" }}\n\
         [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n[[streams.fields]]\nname = \"c\"\nkind = \"categorical\"\n",
        reference.display()
    );
    let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    for i in 0..RECORDS {
        by_partition.entry(partition_of(i)).or_default().push(payload(i));
    }
    for (p, payloads) in &by_partition {
        produce(&bootstrap, &topic, *p, payloads);
    }
    let ends: Vec<i64> = (0..PARTITIONS).map(|p| by_partition[&p].len() as i64).collect();

    let single_group = unique("single");
    let (single_config, single_reports) = write_config(
        dir.path(),
        "single",
        &format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{single_group}\"\n"),
        "",
        &stream,
    );
    let group = unique("global");
    let partials = unique("partials");
    let mut globals = Vec::new();
    for name in ["a", "b", "c"] {
        let scale = format!(
            "[scale]\nmode = \"global\"\npartials_topic = \"{partials}\"\nidle_timeout = \"10m\"\ninstance = \"{name}\"\n"
        );
        let (config, reports) = write_config(
            dir.path(),
            name,
            &format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n"),
            &scale,
            &stream,
        );
        let run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
        globals.push((run, reports));
    }
    let single = Driftscope::start(&["run", "--config", single_config.to_str().unwrap()], dir.path());

    // The owner is settled before any window can close (the closing records below), so
    // ownership does not move while instances are still joining.
    let addrs: Vec<Option<String>> = globals.iter().map(|(run, _)| Some(http_address(run))).collect();
    wait_for("all three in the partials group, naming one owner", Duration::from_secs(180), || {
        agreed_owner_among(&addrs, "credit", 3)
    });
    // The single instance reads everything before the records that close the windows
    // come: it reads the partitions in any interleaving, so a closing record read
    // first would make the other partitions' records late there (not in global mode,
    // where each partition has its own watermark).
    wait_for("the single instance to read every record", Duration::from_secs(180), || {
        (committed(&bootstrap, &single_group, &topic) == ends).then_some(())
    });
    for p in 0..PARTITIONS {
        let closing = format!(r#"{{"x": 1, "c": "a", "ts": {}}}"#, BASE_MS + 3_600_000).into_bytes();
        produce(&bootstrap, &topic, p, &[closing]);
    }
    let windows = (RECORDS * STEP_MS / 10_000) as usize;
    let mut single = single;
    single.wait_reports(&single_reports, windows, Duration::from_secs(300));
    wait_for("the global windows", Duration::from_secs(180), || {
        for (run, _) in &mut globals {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("a global instance exited ({status}):\n{}", run.log_text());
            }
        }
        let n: usize = globals.iter().map(|(_, r)| read_reports(r).len()).sum();
        (n >= windows).then_some(())
    });
    assert!(single.terminate().success());
    let mut reporters = 0;
    let mut global: Vec<serde_json::Value> = Vec::new();
    for (run, reports) in globals {
        let log = run.log_text();
        assert!(run.terminate().success(), "{log}");
        let mine = read_reports(&reports);
        reporters += usize::from(!mine.is_empty());
        global.extend(mine);
    }
    let single = read_reports(&single_reports);
    assert_eq!(single.len(), windows, "one local window per 10 s of records");
    assert_eq!(reporters, 1, "only the owner reports the stream");
    assert_eq!(global.len(), windows, "every window reported once");
    let global: BTreeMap<_, _> = global.iter().map(essence).collect();
    assert_eq!(global.len(), windows, "no window twice");
    let mut drifted = 0;
    for report in &single {
        let (bounds, expected) = essence(report);
        let got = global.get(&bounds).unwrap_or_else(|| panic!("no global window {bounds:?}"));
        assert_eq!(got, &expected, "window {bounds:?}");
        drifted += usize::from(report["dataset"]["drifted"].as_bool().unwrap());
    }
    assert!(drifted > 0 && drifted < windows, "clean and drifted windows: {drifted} of {windows}");
}

/// The windows the partials group's committed progress says are scored (the
/// `scored_below` pane of `stream`), if any.
fn scored_below(bootstrap: &str, group: &str, partials: &str, stream: &str) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{group}.partials"))
        .create()
        .expect("consumer");
    let partition = driftscope::scale::owner_partition(stream, 8);
    let mut list = TopicPartitionList::new();
    list.add_partition(partials, partition);
    let list = consumer.committed_offsets(list, Duration::from_secs(30)).ok()?;
    let metadata = list.find_partition(partials, partition)?.metadata().to_owned();
    let progress: serde_json::Value = serde_json::from_str(&metadata).ok()?;
    progress[stream]["s"].as_i64()
}

#[test]
fn killing_the_owner_mid_stream_changes_no_report_and_scores_no_window_twice() {
    mid_stream(Event::KillOwner);
}

#[test]
fn killing_a_non_owner_mid_stream_changes_no_report_and_loses_no_record() {
    mid_stream(Event::KillOther);
}

#[test]
fn a_fourth_instance_joining_mid_stream_changes_no_report_and_loses_no_record() {
    mid_stream(Event::Join);
}

/// What happens to the instances after window 5.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Event {
    /// SIGKILL of the stream's owner.
    KillOwner,
    /// SIGKILL of another instance.
    KillOther,
    /// A fourth instance starts: both groups rebalance over four members.
    Join,
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// The owner every live instance's `/api/v1/streams` names for `stream`, once they
/// all name the same one.
fn agreed_owner(addrs: &[Option<String>], stream: &str) -> Option<String> {
    let mut named = Vec::new();
    for addr in addrs.iter().flatten() {
        let (status, body) = http("GET", addr, "/api/v1/streams", None);
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).expect("streams JSON");
        let entry = list.as_array()?.iter().find(|s| s["name"] == stream)?;
        let global = &entry["global"];
        assert_eq!(global["owned_here"].as_bool(), Some(global["owner"] == global["instance"]), "{body}");
        named.push(global["owner"].as_str()?.to_owned());
    }
    let first = named.first()?.clone();
    named.iter().all(|n| *n == first).then_some(first)
}

/// [`agreed_owner`], once every live instance also sees `members` members in the
/// partials group.
fn agreed_owner_among(addrs: &[Option<String>], stream: &str, members: usize) -> Option<String> {
    for addr in addrs.iter().flatten() {
        let (_, body) = http("GET", addr, "/api/v1/streams", None);
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        let entry = list.as_array()?.iter().find(|s| s["name"] == stream)?;
        if entry["global"]["members"].as_array()?.len() != members {
            return None;
        }
    }
    agreed_owner(addrs, stream)
}

/// (instance, window index) of every report of the global instances so far.
fn reported(globals: &[(Option<Driftscope>, PathBuf)]) -> Vec<(usize, i64)> {
    globals
        .iter()
        .enumerate()
        .flat_map(|(i, (_, r))| {
            read_reports(r).iter().map(|x| (i, x["window"]["index"].as_i64().unwrap())).collect::<Vec<_>>()
        })
        .collect()
}

/// The input partitions a log says were resumed (`committed`: from a resume point a
/// transaction committed).
fn resumed_partitions(log: &str, committed: bool) -> Vec<i64> {
    log.lines()
        .filter(|l| l.contains("global partition resumed") && (!committed || l.contains("resume=Some")))
        .filter_map(|l| l.split("partition=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// SIGKILL of the owner or of another instance, or a fourth instance joining, after
/// window 5; every instance names the stream's owner before and after.
fn mid_stream(event: Event) {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("global-kill-in");
    create_topic(&bootstrap, &topic, PARTITIONS);
    let reference = dir.path().join("reference.csv");
    std::fs::write(
        &reference,
        format!(
            "x,c\n{}",
            (0..4900).map(|i| format!("{},{}\n", i % 49, ["a", "b", "c"][i % 3])).collect::<String>()
        ),
    )
    .unwrap();
    // No allowed lateness: the records come window by window (each round read by the
    // single instance before the next is produced), so none is late anywhere.
    let stream = format!(
        "[[streams]]\nname = \"credit\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
         window = {{ type = \"tumbling_time\", size = \"10s\", time = \"event\" }}\n\
         reference = {{ data = \"{}\" }}\n\
         [[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n[[streams.fields]]\nname = \"c\"\nkind = \"categorical\"\n",
        reference.display()
    );
    // A killed member leaves its groups after this (the broker's minimum).
    let fast =
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n";
    let single_group = unique("single");
    let (single_config, single_reports) = write_config(
        dir.path(),
        "single",
        &format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{single_group}\"\n{fast}"),
        "",
        &stream,
    );
    let group = unique("global");
    let partials = unique("partials");
    let start_global = |name: &str| {
        let scale = format!(
            "[scale]\nmode = \"global\"\npartials_topic = \"{partials}\"\nidle_timeout = \"10m\"\ninstance = \"{name}\"\n"
        );
        let (config, reports) = write_config(
            dir.path(),
            name,
            &format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n{fast}"),
            &scale,
            &stream,
        );
        (Some(Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path())), reports)
    };
    let mut globals: Vec<(Option<Driftscope>, PathBuf)> =
        NAMES[..3].iter().map(|n| start_global(n)).collect();
    let mut addrs: Vec<Option<String>> =
        globals.iter().map(|(run, _)| run.as_ref().map(http_address)).collect();
    let mut single = Driftscope::start(&["run", "--config", single_config.to_str().unwrap()], dir.path());

    let windows = (RECORDS * STEP_MS / 10_000) as usize;
    let per_window = RECORDS / windows as i64;
    let mut ends = vec![0i64; PARTITIONS as usize];
    let mut happened = None;
    for w in 0..=windows as i64 {
        // Window w's records; after the last window, one record per partition closes it.
        let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
        if w < windows as i64 {
            for i in w * per_window..(w + 1) * per_window {
                by_partition.entry(partition_of(i)).or_default().push(payload(i));
            }
        } else {
            for p in 0..PARTITIONS {
                let closing = format!(r#"{{"x": 1, "c": "a", "ts": {}}}"#, BASE_MS + 3_600_000).into_bytes();
                by_partition.insert(p, vec![closing]);
            }
        }
        for (p, payloads) in &by_partition {
            produce(&bootstrap, &topic, *p, payloads);
            ends[*p as usize] += payloads.len() as i64;
        }
        wait_for("the single instance to read the round", Duration::from_secs(300), || {
            (committed(&bootstrap, &single_group, &topic) == ends).then_some(())
        });
        if w == 6 {
            // Windows 0..=4 are scored by now or soon (window 5 waits for round 6 on
            // every partition); the owner is the instance that reported the newest (the
            // stream may have moved while the instances joined).
            let (owner, newest) = wait_for("the first windows", Duration::from_secs(300), || {
                let scored = reported(&globals);
                let newest = scored.iter().max_by_key(|(_, index)| *index).copied();
                newest.filter(|_| scored.len() >= 5)
            });
            // Killed once the progress past those windows is committed: a crash
            // between reporting and committing would score them again (with the same
            // ids), which is not what this test is about.
            wait_for("the owner's committed progress", Duration::from_secs(60), || {
                scored_below(&bootstrap, &group, &partials, "credit").filter(|&s| s > newest)
            });
            // Every instance names that owner.
            let named = wait_for("every instance to name the owner", Duration::from_secs(60), || {
                agreed_owner(&addrs, "credit").filter(|o| o == NAMES[owner])
            });
            let (status, ready) = http("GET", addrs[owner].as_ref().unwrap(), "/readyz", None);
            assert_eq!(status, 200, "{ready}");
            assert!(
                ready.contains(&format!("instance `{named}` owns stream `credit`: last partial")),
                "{ready}"
            );
            let other = (owner + 1) % 3;
            let (_, ready) = http("GET", addrs[other].as_ref().unwrap(), "/readyz", None);
            assert!(ready.contains(&format!("stream `credit` is owned by instance `{named}`")), "{ready}");
            let (victim, partitions) = match event {
                Event::KillOwner | Event::KillOther => {
                    let victim = if event == Event::KillOwner { owner } else { other };
                    let run = globals[victim].0.take().unwrap();
                    addrs[victim] = None;
                    let log = run.log_text();
                    let read = resumed_partitions(&log, false);
                    assert!(!read.is_empty(), "the victim reads input partitions:\n{log}");
                    let killed_at = std::time::Instant::now();
                    kill_hard(run);
                    // The survivors name a live owner once the partials group dropped the
                    // dead member (session.timeout.ms, 6 s here): how long, for the README.
                    let named =
                        wait_for("the survivors to name a live owner", Duration::from_secs(120), || {
                            agreed_owner(&addrs, "credit").filter(|o| o != NAMES[victim])
                        });
                    eprintln!(
                        "{event:?}: every survivor names `{named}` as the owner {:.1} s after the SIGKILL",
                        killed_at.elapsed().as_secs_f64()
                    );
                    (Some(victim), read)
                }
                Event::Join => {
                    globals.push(start_global(NAMES[3]));
                    addrs.push(globals[3].0.as_ref().map(http_address));
                    // The newcomer takes input partitions over from what the others'
                    // transactions committed.
                    let joined = wait_for(
                        "the fourth instance to read input partitions",
                        Duration::from_secs(120),
                        || {
                            let log = globals[3].0.as_ref().unwrap().log_text();
                            let read = resumed_partitions(&log, false);
                            (!read.is_empty()).then_some(read)
                        },
                    );
                    (None, joined)
                }
            };
            happened = Some((owner, victim, newest, partitions));
        }
    }
    let (owner, victim, newest, moved_partitions) = happened.expect("the event happened");

    single.wait_reports(&single_reports, windows, Duration::from_secs(300));
    wait_for("every global window", Duration::from_secs(240), || {
        for run in globals.iter_mut().filter_map(|(r, _)| r.as_mut()) {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("a global instance exited ({status}):\n{}", run.log_text());
            }
        }
        let n: usize = globals.iter().map(|(_, r)| read_reports(r).len()).sum();
        (n >= windows).then_some(())
    });
    // The live instances agree on the owner again: after a kill of the owner, a new one.
    let now_owner = wait_for("every live instance to name one owner", Duration::from_secs(120), || {
        agreed_owner(&addrs, "credit").filter(|o| victim.is_none_or(|v| o != NAMES[v]))
    });
    if event == Event::KillOther {
        assert_eq!(now_owner, NAMES[owner], "the owner stays when another instance dies");
    }
    assert!(single.terminate().success());
    let by_instance = reported(&globals);
    let mut global: Vec<serde_json::Value> = Vec::new();
    let (mut took_stream, mut took_partition) = (false, false);
    for (run, reports) in globals {
        if let Some(run) = run {
            let log = run.log_text();
            // A new owner took the stream over from the committed progress.
            took_stream |=
                log.lines().any(|l| l.contains("owning stream") && l.contains("scored_below=Some"));
            // The moved partitions went on from what their transactions committed.
            took_partition |= resumed_partitions(&log, true).iter().any(|p| moved_partitions.contains(p));
            assert!(run.terminate().success(), "{log}");
        }
        global.extend(read_reports(&reports));
    }
    assert!(took_partition, "no instance resumed a partition that moved ({moved_partitions:?})");
    let after: Vec<usize> =
        by_instance.iter().filter(|(_, index)| *index > newest).map(|(i, _)| *i).collect();
    assert!(!after.is_empty(), "windows scored after the {event:?}");
    let named = NAMES.iter().position(|n| *n == now_owner).unwrap();
    match event {
        Event::KillOwner => {
            assert!(took_stream, "no instance resumed the stream from the killed owner's progress");
            assert!(!after.contains(&owner));
        }
        Event::KillOther => {
            assert!(after.iter().all(|&i| i == owner), "the owner went on scoring: {by_instance:?}");
        }
        Event::Join => {}
    }
    // The instance every other names is the one that scored the last window.
    assert_eq!(by_instance.iter().max_by_key(|(_, index)| *index).map(|(i, _)| *i), Some(named));
    let single = read_reports(&single_reports);
    assert_eq!(single.len(), windows);
    let ids: BTreeMap<u64, usize> = global.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["window"]["index"].as_u64().unwrap()).or_default() += 1;
        m
    });
    assert!(ids.values().all(|&n| n == 1), "a window scored twice: {ids:?}");
    assert_eq!(global.len(), windows, "every window reported once");
    let global: BTreeMap<_, _> = global.iter().map(essence).collect();
    for report in &single {
        let (bounds, expected) = essence(report);
        let got = global.get(&bounds).unwrap_or_else(|| panic!("no global window {bounds:?}"));
        assert_eq!(got, &expected, "window {bounds:?}");
    }
}

#[test]
fn a_partition_without_records_is_waited_for_until_the_idle_timeout_and_named() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("global-idle-in");
    create_topic(&bootstrap, &topic, PARTITIONS);
    let reference = dir.path().join("reference.csv");
    std::fs::write(
        &reference,
        format!("x\n{}", (0..490).map(|i| format!("{}\n", i % 49)).collect::<String>()),
    )
    .unwrap();
    // Partition 5 gets nothing: three 10 s windows from partitions 0 to 4.
    let records = 3000i64;
    let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    for i in 0..records {
        let x = (i * 7919) % 49;
        let payload = format!(r#"{{"x": {x}, "ts": {}}}"#, BASE_MS + i * STEP_MS).into_bytes();
        by_partition.entry((i % 5) as i32).or_default().push(payload);
    }
    for p in 0..5 {
        let closing = format!(r#"{{"x": 1, "ts": {}}}"#, BASE_MS + 3_600_000).into_bytes();
        by_partition.entry(p).or_default().push(closing);
    }
    for (p, payloads) in &by_partition {
        produce(&bootstrap, &topic, *p, payloads);
    }
    let stream = format!(
        "[[streams]]\nname = \"s\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
         window = {{ type = \"tumbling_time\", size = \"10s\", time = \"event\" }}\n\
         reference = {{ data = \"{}\" }}\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n",
        reference.display()
    );
    let scale = format!(
        "[scale]\nmode = \"global\"\npartials_topic = \"{}\"\nidle_timeout = \"2s\"\n",
        unique("partials")
    );
    let (config, reports) = write_config(
        dir.path(),
        "a",
        &format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\n", unique("idle")),
        &scale,
        &stream,
    );
    let mut run = Driftscope::start(&["run", "--config", config.to_str().unwrap()], dir.path());
    run.wait_reports(&reports, 3, Duration::from_secs(300));
    assert!(run.terminate().success());
    let got = read_reports(&reports);
    assert_eq!(got.len(), 3, "three windows, each once");
    let idle = format!("partition {topic}/5 published nothing for scale.idle_timeout");
    for r in &got {
        let notes: Vec<&str> = r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert!(notes.iter().any(|n| n.contains(&idle)), "{notes:?}");
        assert_eq!(r["window"]["offsets"].as_array().unwrap().len(), 5, "partitions 0 to 4 contributed");
    }
    let total: u64 = got.iter().map(|r| r["window"]["records"].as_u64().unwrap()).sum();
    assert_eq!(total, records as u64);
}

/// Members of `group` that have partitions of `topic` assigned.
fn members_with_partitions(bootstrap: &str, group: &str, topic: &str) -> usize {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("consumer");
    let Ok(list) = consumer.fetch_group_list(Some(group), Duration::from_secs(10)) else { return 0 };
    list.groups()
        .iter()
        .flat_map(|g| g.members())
        .filter(|m| {
            driftscope::scale::status::assignment_partitions(m.assignment().unwrap_or_default(), topic)
                .is_ok_and(|p| !p.is_empty())
        })
        .count()
}

/// `/api/v1/streams`' global part of stream `s` on `addr`.
fn global_view(addr: &str) -> serde_json::Value {
    let (status, body) = http("GET", addr, "/api/v1/streams", None);
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("streams JSON");
    list[0]["global"].clone()
}

#[test]
fn instances_that_disagree_on_the_window_hold_the_stream_and_say_who_and_what_until_they_agree() {
    disagreement(["10s", "20s"]);
}

/// The same with the windows the other way round: the partials group tends to give
/// the stream to `a` (members are ordered by id, which starts with the client.id), so
/// this is the case where the instance with the longer window owns the stream.
#[test]
fn instances_that_disagree_hold_the_stream_whichever_window_the_owner_has() {
    disagreement(["20s", "10s"]);
}

/// Instances `a` and `b` with the window sizes `sizes`.
fn disagreement(sizes: [&str; 2]) {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("global-disagree-in");
    create_topic(&bootstrap, &topic, 2);
    let reference = dir.path().join("reference.csv");
    std::fs::write(
        &reference,
        format!("x\n{}", (0..490).map(|i| format!("{}\n", i % 49)).collect::<String>()),
    )
    .unwrap();
    let stream = |size: &str| {
        format!(
            "[[streams]]\nname = \"s\"\ntopics = [\"{topic}\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
             window = {{ type = \"tumbling_time\", size = \"{size}\", time = \"event\" }}\n\
             reference = {{ data = \"{}\" }}\n[[streams.fields]]\nname = \"x\"\nkind = \"numeric\"\n",
            reference.display()
        )
    };
    let fast =
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n";
    let (group, partials) = (unique("disagree"), unique("partials"));
    // A short idle timeout: without the hold, the disagreeing partition would count as
    // idle and the windows would be scored without it.
    let config = |name: &str, size: &str| {
        let scale = format!(
            "[scale]\nmode = \"global\"\npartials_topic = \"{partials}\"\nidle_timeout = \"5s\"\ninstance = \"{name}\"\n"
        );
        write_config(
            dir.path(),
            name,
            &format!("[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n{fast}"),
            &scale,
            &stream(size),
        )
    };
    let (a_config, a_reports) = config("a", sizes[0]);
    let (b_config, b_reports) = config("b", sizes[1]);
    let start = |c: &Path| Driftscope::start(&["run", "--config", c.to_str().unwrap()], dir.path());
    let mut runs = vec![Some(start(&a_config)), Some(start(&b_config))];
    let mut addrs: Vec<String> = runs.iter().map(|r| http_address(r.as_ref().unwrap())).collect();
    // Both read a partition before any record comes, so both publish partials.
    wait_for("both instances to be assigned input partitions", Duration::from_secs(120), || {
        (members_with_partitions(&bootstrap, &group, &topic) == 2).then_some(())
    });
    let records = 3000i64;
    let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    for i in 0..records {
        let payload =
            format!(r#"{{"x": {}, "ts": {}}}"#, (i * 7919) % 49, BASE_MS + i * STEP_MS).into_bytes();
        by_partition.entry((i % 2) as i32).or_default().push(payload);
    }
    for p in 0..2 {
        let closing = format!(r#"{{"x": 1, "ts": {}}}"#, BASE_MS + 3_600_000).into_bytes();
        by_partition.entry(p).or_default().push(closing);
    }
    for (p, payloads) in &by_partition {
        produce(&bootstrap, &topic, *p, payloads);
    }
    // The owner names the other instance, what differs, and both values; the
    // disagreeing partition is idle past the timeout, yet no window is scored.
    let (owner, view) = wait_for("the owner to report the disagreement", Duration::from_secs(180), || {
        for (i, addr) in addrs.iter().enumerate() {
            let view = global_view(addr);
            let merge = &view["merge"];
            let partition = merge["disagreements"].as_array()?.first()?["partition"].clone();
            let idle =
                merge["sources"].as_array()?.iter().any(|s| s["partition"] == partition && s["idle"] == true);
            if idle {
                return Some((i, view));
            }
        }
        None
    });
    let (owner_name, other_name) = (["a", "b"][owner], ["a", "b"][1 - owner]);
    let d = &view["merge"]["disagreements"][0];
    assert_eq!(d["instance"], other_name, "{view}");
    assert_eq!(d["what"], "window", "{view}");
    assert_ne!(d["ours"], d["theirs"], "{view}");
    assert!(d["refused"].as_u64().unwrap() >= 1, "{view}");
    assert_eq!(view["owner"], owner_name);
    assert!(view["merge"]["windows_waiting"].as_u64().unwrap() >= 1, "{view}");
    assert_eq!(global_view(&addrs[1 - owner])["owner"], owner_name, "the other instance names the owner too");
    // A later view: the scoring loop went round with the partition idle.
    let age = view["merge"]["last_partial_age_ms"].as_i64().unwrap();
    wait_for("a later status", Duration::from_secs(60), || {
        let later = global_view(&addrs[owner]);
        (later["merge"]["last_partial_age_ms"].as_i64()? >= age + 1500).then_some(())
    });
    assert!(
        read_reports(&a_reports).is_empty() && read_reports(&b_reports).is_empty(),
        "a window was scored"
    );
    let (status, ready) = http("GET", &addrs[owner], "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains(&format!("stream `s` is not scored: partials of {topic}/")), "{ready}");
    assert!(
        ready.contains(&format!("from instance `{other_name}` were folded with another window")),
        "{ready}"
    );
    let (_, metrics) = http("GET", &addrs[owner], "/metrics", None);
    let value = |name: &str, extra: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("instance=\"{owner_name}\""))
                    && l.contains("stream=\"s\"")
                    && l.contains(extra)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} series:\n{metrics}"))
    };
    assert_eq!(value("driftscope_global_config_disagreements", ""), 1.0, "{metrics}");
    assert!(value("driftscope_global_partials_refused_total", "reason=\"window\"") >= 1.0, "{metrics}");
    assert_eq!(value("driftscope_global_stream_owned", ""), 1.0, "{metrics}");
    // The odd instance restarts with the owner's config and records go on: the stream
    // is scored, each window once, and the windows of the refused partials say so.
    let odd = 1 - owner;
    let size = sizes[owner];
    let run = runs[odd].take().unwrap();
    assert!(run.terminate().success());
    let (fixed, _) = config(other_name, size);
    // Its checkpoint was written with the other window: a changed window needs
    // `--fresh-state`, as a user fixing the config would be told.
    runs[odd] =
        Some(Driftscope::start(&["run", "--fresh-state", "--config", fixed.to_str().unwrap()], dir.path()));
    addrs[odd] = http_address(runs[odd].as_ref().unwrap());
    wait_for("both instances to be assigned input partitions again", Duration::from_secs(120), || {
        (members_with_partitions(&bootstrap, &group, &topic) == 2).then_some(())
    });
    for p in 0..2 {
        let more = format!(r#"{{"x": 1, "ts": {}}}"#, BASE_MS + 3_630_000).into_bytes();
        produce(&bootstrap, &topic, p, &[more]);
    }
    let data_windows = if size == "10s" { 3 } else { 2 };
    wait_for("the windows once the instances agree", Duration::from_secs(180), || {
        for run in runs.iter_mut().flatten() {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("an instance exited ({status}):\n{}", run.log_text());
            }
        }
        let n = read_reports(&a_reports).len() + read_reports(&b_reports).len();
        (n > data_windows).then_some(())
    });
    let agreed = wait_for("the disagreement to clear", Duration::from_secs(60), || {
        addrs
            .iter()
            .map(|a| global_view(a))
            .find(|v| v["owned_here"] == true && v["merge"]["disagreements"] == serde_json::json!([]))
    });
    assert_eq!(agreed["merge"]["disagreements"], serde_json::json!([]));
    for run in runs.into_iter().flatten() {
        assert!(run.terminate().success());
    }
    let mut all = read_reports(&a_reports);
    all.extend(read_reports(&b_reports));
    assert_eq!(all.len(), data_windows + 1, "the data windows and the window at +1h, each once");
    let mut indices: Vec<u64> = all.iter().map(|r| r["window"]["index"].as_u64().unwrap()).collect();
    indices.sort();
    indices.dedup();
    assert_eq!(indices.len(), all.len(), "a window scored twice");
    let mut data_records = 0;
    for r in &all {
        let notes: Vec<&str> =
            r["notes"].as_array().map(|n| n.iter().filter_map(|n| n.as_str()).collect()).unwrap_or_default();
        let refused = notes.iter().any(|n| n.contains("were refused"));
        if r["window"]["records"].as_u64() == Some(2) {
            assert!(!refused, "the window after the instances agreed has every partition: {notes:?}");
        } else {
            assert!(
                refused,
                "{notes:?} in {}",
                serde_json::json!(all.iter().map(|r| (&r["window"], &r["notes"])).collect::<Vec<_>>())
            );
            data_records += r["window"]["records"].as_u64().unwrap();
        }
    }
    assert_eq!(data_records, records as u64 / 2, "the agreeing partition's records, none twice");
}
