//! Stage `scale`: global windows on the real broker. The same records (the bench
//! schema, a numeric event time `t` added so every instance windows them alike) are
//! read to the end, in turn, by (a) one `driftscope run` in local mode, (b) one in
//! global mode, (c) three in global mode sharing the consumer group; each in a fresh
//! group with a fresh partials topic. Reported: the rate from start to the last
//! window's report, the CPU-seconds of all instances per million records over the whole
//! run and over its steady phase (from the report of the third of the windows on, once
//! every instance is reading, per record the instances counted as read: the cost of global mode per record, set
//! against local mode's: the target is at most 10% more; the whole run also
//! holds each instance's start-up and, with several, the partitions re-read when a
//! later join moves them), and the partials traffic (bytes per partial, partials per
//! window and partition).
//!
//! Every instance is a separate process on this machine, so with fewer cores than
//! instances the rates share the CPU: the total rate of (c) is reported, not checked.

use super::kafka::{self, Topic};
use super::sys;
use super::workload::{self, Generator, Schema};
use super::{Options, REFERENCE_SEED, STREAM_SEED, Table, count, median, progress, si, unique};
use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const S: &str = "2b. global windows on the real broker (JSON bench schema, 6 partitions, event-time windows)";
const PARTITIONS: i32 = 6;
/// Records per millisecond of event time: 10 s windows of 100,000 records.
const RECORDS_PER_MS: u64 = 10;
const WINDOW_RECORDS: u64 = 100_000;
/// The first record's event time, on a window boundary.
const BASE_MS: u64 = 1_714_564_800_000;
/// How often the instances' counts are read while the steady phase's start is sought.
const ANCHOR_SAMPLE: Duration = Duration::from_millis(100);

/// One variant's reading: wall time to the last expected report, CPU of every
/// instance, and how many reports came.
struct Run {
    total: Duration,
    steady_rate: f64,
    cpu_seconds: f64,
    per_instance_cpu: Vec<f64>,
    /// CPU-seconds per million records read from the third of the windows on, once every
    /// instance is reading (after start-up and the group's assignments): the CPU of every
    /// instance and the records they counted (`driftscope_records_total`) between the
    /// two readings; `None` when the instances never all read at once.
    steady_cpu_per_m: Option<f64>,
}

pub fn stage(o: &Options, dir: &Path, table: &mut Table) -> anyhow::Result<()> {
    let binary = super::driftscope_binary(o)?;
    let n = o.messages.max(3 * WINDOW_RECORDS);
    // The last window stays open (no later record closes it).
    let expected = n / WINDOW_RECORDS - 1;
    let schema = Schema::bench();
    let profile_path = dir.join("scale.profile");
    std::fs::write(&profile_path, workload::profile(&schema, REFERENCE_SEED, 100_000).to_json())?;
    let topic = Topic::create_with(&o.bootstrap, &unique("driftscope-scale"), PARTITIONS)?;
    progress(format!("scale: producing {} messages to {} ({PARTITIONS} partitions)", count(n), topic.name));
    let pool = Generator::new(&schema, STREAM_SEED).json_messages(100_000);
    // Each record gets the event time `t` of its position (10 per millisecond), so every
    // partition's event time rises and every window but the last is closed by the
    // records after it.
    kafka::produce_with(&o.bootstrap, &topic.name, PARTITIONS, n, |i, payload| {
        let base = &pool[(i % pool.len() as u64) as usize];
        payload.extend_from_slice(format!("{{\"t\":{},", BASE_MS + i / RECORDS_PER_MS).as_bytes());
        payload.extend_from_slice(base.get(1..).unwrap_or_default());
    })?;
    let timeout = Duration::from_secs(180 + n / 5_000);

    let variants: [(&str, usize, bool); 3] = [
        ("(a) one instance, local mode", 1, false),
        ("(b) one instance, global mode", 1, true),
        ("(c) three instances, global mode", 3, true),
    ];
    // This build, and the baseline's (if given) under the same load: interleaved, the
    // order swapped every round.
    let mut builds: Vec<Build> = vec![Build::new("", binary)];
    if let Some(baseline) = &o.scale_baseline {
        if !baseline.is_file() {
            bail!("--scale-baseline {}: no such file", baseline.display());
        }
        builds.push(Build::new("baseline ", baseline.clone()));
    }
    for round in 1..=o.e2e_rounds {
        let order: Vec<usize> =
            if round % 2 == 0 { (0..builds.len()).rev().collect() } else { (0..builds.len()).collect() };
        for b in order {
            let build = &mut builds[b];
            for (v, (label, instances, global)) in variants.iter().enumerate() {
                progress(format!("scale round {round}/{}: {}{label}", o.e2e_rounds, build.name));
                let run_dir = dir.join(format!("scale-{round}-{b}-{v}"));
                std::fs::create_dir_all(&run_dir)?;
                let group = unique("bench-scale");
                let partials_topic = global.then(|| unique("bench-partials"));
                let configs: Vec<(PathBuf, PathBuf)> = (0..*instances)
                    .map(|i| {
                        let reports = run_dir.join(format!("i{i}.reports.jsonl"));
                        let config = run_dir.join(format!("i{i}.toml"));
                        let text = config_toml(
                            o,
                            &group,
                            &topic.name,
                            &profile_path,
                            &run_dir.join(format!("state-{i}")),
                            &reports,
                            partials_topic.as_deref().map(|p| (p, format!("i{i}"))),
                        );
                        std::fs::write(&config, text).map(|()| (config, reports))
                    })
                    .collect::<Result<_, _>>()?;
                build.runs[v].push(run_instances(&build.binary, &configs, &run_dir, expected, timeout)?);
                build.scored[v] = configs.iter().map(|(_, r)| window_records(r)).sum();
                if let Some(p) = &partials_topic {
                    build.partials = Some(partials_traffic(&o.bootstrap, p)?);
                }
            }
        }
    }
    drop(topic);

    table.info(
        S,
        "records, windows scored per run",
        format!(
            "{} records, {expected} windows of {} ({} round(s))",
            count(n),
            count(WINDOW_RECORDS),
            o.e2e_rounds
        ),
    );
    for (b, build) in builds.iter().enumerate() {
        report(build, b == 0, n, expected, &variants, table);
    }
    if let [now, base] = &builds[..] {
        for (v, (label, _, _)) in variants.iter().enumerate() {
            let per = |b: &Build| -> Vec<f64> {
                b.runs[v].iter().map(|r| r.cpu_seconds * 1e6 / n as f64).collect()
            };
            table.info(
                S,
                format!("{label}: CPU per record, this build vs baseline"),
                format!("{:+.1}%", 100.0 * (median(per(now)) / median(per(base)) - 1.0)),
            );
        }
    }
    table.info(S, "cores here (instances share them)", sys::nproc().to_string());
    Ok(())
}

/// One driftscope binary's runs of the variants.
struct Build {
    /// Prefixed to its rows: "" for the build measured, "baseline " for the other.
    name: &'static str,
    binary: PathBuf,
    runs: [Vec<Run>; 3],
    /// (partials, bytes) of its last global run.
    partials: Option<(u64, u64)>,
    /// Records in the reports of its last run of each variant.
    scored: [u64; 3],
}

impl Build {
    fn new(name: &'static str, binary: PathBuf) -> Self {
        Build { name, binary, runs: Default::default(), partials: None, scored: [0; 3] }
    }
}

/// The rows of one build; `checked`: the build the targets are checked on.
fn report(
    build: &Build,
    checked: bool,
    n: u64,
    expected: u64,
    variants: &[(&str, usize, bool); 3],
    table: &mut Table,
) {
    let name = build.name;
    let runs = &build.runs;
    let over_rounds = |v: Vec<f64>, fmt: &dyn Fn(f64) -> String| -> String {
        if v.len() == 1 {
            return fmt(v[0]);
        }
        let each: Vec<String> = v.iter().map(|&x| fmt(x)).collect();
        format!("median {} ({})", fmt(median(v)), each.join(", "))
    };
    let rate = |x: f64| format!("{}msg/s", si(x));
    let secs = |x: f64| format!("{x:.2}");
    let pct = |x: f64| format!("{:+.1}%", 100.0 * (x - 1.0));
    let per_m = |r: &Run| r.cpu_seconds * 1e6 / n as f64;
    for (v, (label, _, _)) in variants.iter().enumerate() {
        table.info(
            S,
            format!("{name}{label}: steady"),
            over_rounds(runs[v].iter().map(|r| r.steady_rate).collect(), &rate),
        );
        table.info(
            S,
            format!("{name}{label}: incl. start-up"),
            over_rounds(runs[v].iter().map(|r| n as f64 / r.total.as_secs_f64()).collect(), &rate),
        );
        table.info(
            S,
            format!("{name}{label}: CPU-s per 1M records, all instances"),
            over_rounds(runs[v].iter().map(per_m).collect(), &secs),
        );
        table.info(
            S,
            format!("{name}{label}: steady phase, CPU-s per 1M records read"),
            over_rounds(runs[v].iter().map(|r| r.steady_cpu_per_m.unwrap_or(f64::NAN)).collect(), &secs),
        );
        table.info(
            S,
            format!("{name}{label}: records in its windows (last round)"),
            format!(
                "{} ({:.1}% of the windows' records late)",
                count(build.scored[v]),
                100.0 * (1.0 - build.scored[v] as f64 / (expected * WINDOW_RECORDS) as f64)
            ),
        );
    }
    let spread: Vec<String> = runs[2]
        .last()
        .map(|r| r.per_instance_cpu.iter().map(|c| format!("{c:.2}")).collect())
        .unwrap_or_default();
    table.info(S, format!("{name}(c) CPU-s of each instance, last round"), spread.join(", "));
    let cost =
        |v: usize| -> Vec<f64> { runs[v].iter().zip(&runs[0]).map(|(g, l)| per_m(g) / per_m(l)).collect() };
    let one = cost(1);
    let three = cost(2);
    let steady = |v: usize| -> Vec<f64> {
        runs[v]
            .iter()
            .zip(&runs[0])
            .map(|(g, l)| match (g.steady_cpu_per_m, l.steady_cpu_per_m) {
                (Some(g), Some(l)) => g / l,
                _ => f64::NAN,
            })
            .collect()
    };
    // The whole run (start-up, joins and the partition moves they cause included) is
    // reported; the target is checked on the steady phase, the cost per record read.
    table.info(S, format!("{name}(b) CPU per record vs (a), whole run"), over_rounds(one, &pct));
    table.info(S, format!("{name}(c) CPU per record vs (a), whole run"), over_rounds(three, &pct));
    let one = steady(1);
    let three = steady(2);
    if checked {
        let one_median = median(one.clone());
        let three_median = median(three.clone());
        table.check(
            S,
            "(b) CPU per record read vs (a), steady phase",
            over_rounds(one, &pct),
            "<= +10%",
            one_median <= 1.10,
        );
        table.check(
            S,
            "(c) CPU per record read vs (a), steady phase",
            over_rounds(three, &pct),
            "<= +10%",
            three_median <= 1.10,
        );
    } else {
        table.info(S, format!("{name}(b) CPU per record read vs (a), steady phase"), over_rounds(one, &pct));
        table.info(
            S,
            format!("{name}(c) CPU per record read vs (a), steady phase"),
            over_rounds(three, &pct),
        );
    }
    table.info(
        S,
        format!("{name}(c) total rate vs (a), steady"),
        over_rounds(
            runs[2].iter().zip(&runs[0]).map(|(c, a)| c.steady_rate / a.steady_rate).collect(),
            &|x| format!("{x:.2}x"),
        ),
    );
    if let Some((partial_count, bytes)) = build.partials {
        table.info(
            S,
            format!("{name}partials per window per partition (last run)"),
            format!("{:.2}", partial_count as f64 / (expected as f64 * PARTITIONS as f64)),
        );
        table.info(
            S,
            format!("{name}bytes per partial (key + value, last run)"),
            format!("{} ({} partials)", count(bytes / partial_count.max(1)), count(partial_count)),
        );
    }
}

/// The config of one instance; `global` is (partials topic, instance name).
fn config_toml(
    o: &Options,
    group: &str,
    topic: &str,
    profile: &Path,
    state: &Path,
    reports: &Path,
    global: Option<(&str, String)>,
) -> String {
    let lit = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut text = format!("[kafka]\nbrokers = {}\ngroup_id = {}\n", lit(&o.bootstrap), lit(group));
    if !o.kafka_properties.is_empty() {
        text.push_str("[kafka.properties]\n");
        for (k, v) in &o.kafka_properties {
            text.push_str(&format!("{} = {}\n", lit(k), lit(v)));
        }
    }
    if let Some((partials, instance)) = global {
        text.push_str(&format!(
            "[scale]\nmode = \"global\"\npartials_topic = {}\nidle_timeout = \"10m\"\ninstance = {}\n",
            lit(partials),
            lit(&instance)
        ));
    }
    text.push_str(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = {}\ncheckpoint_interval = \"1s\"\n[outputs]\nreports_file = {}\n\
         [[streams]]\nname = \"bench\"\ntopics = [{}]\nformat = \"json\"\nevent_time_field = \"/t\"\n\
         window = {{ type = \"tumbling_time\", size = \"10s\", time = \"event\" }}\nreference = {{ profile = {} }}\n",
        lit(&state.display().to_string()),
        lit(&reports.display().to_string()),
        lit(topic),
        lit(&profile.display().to_string()),
    ));
    text
}

/// Starts one `driftscope run` per config, waits until their reports files hold
/// `expected` reports in all, reads every instance's CPU, and stops them.
fn run_instances(
    binary: &Path,
    configs: &[(PathBuf, PathBuf)],
    dir: &Path,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut children: Vec<Child> = Vec::new();
    for (i, (config, _)) in configs.iter().enumerate() {
        let log = dir.join(format!("i{i}.log"));
        children.push(
            Command::new(binary)
                .args(["run", "--config"])
                .arg(config)
                .env("RUST_LOG", "info,librdkafka=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("start {}", binary.display()))?,
        );
    }
    let mut first: Option<Instant> = None;
    // (CPU-seconds, records read) of all instances at the anchor: the first time, from
    // the report of the third of the windows on, that every instance has read records
    // since the reading before (a late join can leave one instance reading everything
    // for a while, and then the phase would not measure instances sharing the work).
    let anchor_reports = (expected / 3).max(1);
    let mut anchor: Option<(f64, f64)> = None;
    let mut previous: Option<Vec<f64>> = None;
    let mut last_sample = started;
    let log_paths: Vec<PathBuf> = (0..children.len()).map(|i| dir.join(format!("i{i}.log"))).collect();
    let result = loop {
        let reports: u64 = configs.iter().map(|(_, r)| count_lines(r)).sum();
        let now = Instant::now();
        if reports >= 1 && first.is_none() {
            first = Some(now);
        }
        if reports >= anchor_reports
            && anchor.is_none()
            && reports < expected
            && now - last_sample >= ANCHOR_SAMPLE
        {
            last_sample = now;
            if let Some((cpu, each)) = cpu_and_records(&children, &log_paths) {
                let all_reading = previous
                    .as_ref()
                    .is_some_and(|p| p.iter().zip(&each).all(|(before, after)| after > before));
                if all_reading {
                    anchor = Some((cpu, each.iter().sum()));
                }
                previous = Some(each);
            }
        }
        if reports >= expected {
            let at_end = cpu_and_records(&children, &log_paths);
            let per_instance_cpu: Vec<f64> =
                children.iter().map(|c| sys::cpu_seconds(&c.id().to_string()).unwrap_or(f64::NAN)).collect();
            let t1 = first.unwrap_or(started);
            let steady_cpu_per_m = match (anchor, at_end) {
                (Some((cpu0, read0)), Some((cpu1, each))) if each.iter().sum::<f64>() > read0 => {
                    Some((cpu1 - cpu0) * 1e6 / (each.iter().sum::<f64>() - read0))
                }
                _ => None,
            };
            break Ok(Run {
                total: now - started,
                steady_rate: ((expected - 1) * WINDOW_RECORDS) as f64 / (now - t1).as_secs_f64().max(1e-9),
                cpu_seconds: per_instance_cpu.iter().sum(),
                per_instance_cpu,
                steady_cpu_per_m,
            });
        }
        if let Some((i, status)) =
            children.iter_mut().enumerate().find_map(|(i, c)| c.try_wait().ok().flatten().map(|s| (i, s)))
        {
            break Err(anyhow::anyhow!(
                "instance {i} exited ({status}) after {reports} of {expected} reports; logs in {}",
                dir.display()
            ));
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!(
                "timed out after {timeout:?} with {reports} of {expected} reports; logs in {}",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for child in &children {
        sys::signal(child.id(), 15);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for child in &mut children {
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait()?.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    result
}

/// The CPU-seconds of all instances and the records each has read (its
/// `driftscope_records_total`, from `/metrics` at the address it logged); `None` when
/// an instance cannot be read.
fn cpu_and_records(children: &[Child], logs: &[PathBuf]) -> Option<(f64, Vec<f64>)> {
    let mut cpu = 0.0;
    let mut records = Vec::with_capacity(children.len());
    for (child, log) in children.iter().zip(logs) {
        cpu += sys::cpu_seconds(&child.id().to_string())?;
        let text = std::fs::read_to_string(log).ok()?;
        let line = text.lines().find(|l| l.contains("http server listening"))?;
        let start = line.find("address=")? + "address=".len();
        let address = line[start..].split_whitespace().next()?;
        records.push(metric_sum(&http_get(address, "/metrics")?, "driftscope_records_total"));
    }
    Some((cpu, records))
}

/// The body of `GET path` from `address` (HTTP/1.0, so the server closes the
/// connection at the end).
fn http_get(address: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}

/// The sum of every series of `name` in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The records of the windows in a reports file (local mode drops the records of a
/// partition that lags the instance's one watermark as late; global mode's watermarks
/// are per partition).
fn window_records(path: &Path) -> u64 {
    let Ok(file) = std::fs::File::open(path) else { return 0 };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .filter_map(|r| r.pointer("/window/records").and_then(serde_json::Value::as_u64))
        .sum()
}

fn count_lines(path: &Path) -> u64 {
    std::fs::File::open(path).map(|f| BufReader::new(f).lines().count() as u64).unwrap_or(0)
}

/// (partials, bytes of their keys and values) on the partials topic, read committed
/// from the start to the high watermarks.
fn partials_traffic(bootstrap: &str, topic: &str) -> anyhow::Result<(u64, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("bench-partials-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut list = TopicPartitionList::new();
    let mut remaining = 0i64;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(15))?;
        if high > low {
            list.add_partition_offset(topic, p, Offset::Beginning)?;
            remaining += high - low;
        }
    }
    if remaining == 0 {
        return Ok((0, 0));
    }
    consumer.assign(&list)?;
    // High watermarks count transaction markers too: read until nothing comes for a
    // while after the last record, bounded.
    let (mut partials, mut bytes) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(3) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                partials += 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                quiet_since = Instant::now();
            }
            Some(Err(e)) => bail!("reading the partials topic: {e}"),
            None => {}
        }
    }
    Ok((partials, bytes))
}
