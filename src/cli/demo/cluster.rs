//! `driftscope demo --instances N --brokers HOST:PORT`: the demo's streams on a real
//! broker, read by N monitors in global mode in this process, each with its own HTTP
//! server; the owner of each stream merges the partial windows of every instance and
//! scores each window once. Prints where each instance serves, who owns each stream
//! (as every instance names it) and each merged window with the partitions it covers.

use super::print_drift;
use anyhow::Context;
use driftscope::demo::{self, ClusterNames, DemoOptions};
use driftscope::service::{self, ServiceHandles};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One monitor of the demo: its instance name and handles.
struct Monitor {
    name: String,
    handles: ServiceHandles,
}

pub async fn run(options: DemoOptions, brokers: String, instances: usize) -> anyhow::Result<()> {
    let probe = brokers.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &probe).create()?;
        consumer.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(())
    })
    .await
    .context("the broker check panicked")?
    .with_context(|| {
        format!("no Kafka broker answers at {brokers}; start one with `scripts/kafka.sh start` and pass its address")
    })?;
    let names = ClusterNames::fresh();
    demo::create_cluster_topics(&brokers, &names).await.context("cannot create the demo's topics")?;
    let dir = tempfile::tempdir().context("cannot create a state directory")?;
    let references =
        demo::write_references(dir.path(), options.seed).context("cannot write the references")?;
    let secret = demo::new_webhook_secret(options.seed);
    let (received_tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel();
    let (receiver_addr, receiver) =
        demo::webhook_receiver(&secret, received_tx).await.context("cannot start the webhook receiver")?;
    let trigger = demo::demo_trigger(&format!("http://{receiver_addr}/hooks/retrain"), &secret)
        .context("demo trigger config")?;

    let (stop_monitors, stopped) = tokio::sync::watch::channel(false);
    // Each monitor says when it ends, so one failing at start ends the demo.
    let (exited_tx, mut exited) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut monitors = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..instances {
        let name = demo::instance_name(i);
        let state = dir.path().join(&name);
        std::fs::create_dir_all(&state).context("cannot create a state directory")?;
        let port = match options.port {
            0 => 0,
            base => {
                u16::try_from(usize::from(base) + i).context("--port leaves no room for every instance")?
            }
        };
        let mut config = demo::cluster_config(&brokers, &names, &name, port, &state, &references)
            .context("the demo's config")?;
        // Every instance has the trigger; only the owner scores, so only it fires.
        config.triggers.push(trigger.clone());
        let handles = ServiceHandles::new(&config);
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let run = service::run(config, handles.clone(), service::RunOptions::default(), shutdown);
        let exited_tx = exited_tx.clone();
        let task_name = name.clone();
        tasks.push((
            name.clone(),
            tokio::spawn(async move {
                let result = run.await;
                let _ = exited_tx.send(task_name);
                result
            }),
        ));
        monitors.push(Monitor { name, handles });
    }
    let printer = tokio::spawn(async move {
        while let Some(t) = received_rx.recv().await {
            println!(
                "{} webhook received by the local receiver: trigger {} for `{}` window {} (drifted: {}), signature {}",
                if t.verified { "TRIGGER DELIVERED:" } else { "TRIGGER REJECTED:" },
                t.id,
                t.stream,
                t.window_index,
                t.drifted.join(", "),
                if t.verified { "verified" } else { "INVALID" }
            );
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let clean_records = options.rate * demo::CLUSTER_WINDOW.as_secs() * demo::CLUSTER_CLEAN_WINDOWS;
    let producer = tokio::spawn(demo::produce(
        brokers.clone(),
        demo::ProduceTarget {
            features: names.features.clone(),
            predictions: names.predictions.clone(),
            labels: None,
            event_time: true,
        },
        options.rate,
        options.seed,
        clean_records,
        produced.clone(),
        stop.clone(),
    ));
    let intro = format!(
        "streams `features` and `predictions` on topics `{}` and `{}` ({} partitions each) at {} records/s each; \
         {} s event-time windows; consumer group `{}`, partials topic `{}`; references from {} clean records; \
         drift injected after {clean_records} records; labels are left out (global mode has no label joins yet)",
        names.features,
        names.predictions,
        demo::CLUSTER_PARTITIONS,
        options.rate,
        demo::CLUSTER_WINDOW.as_secs(),
        names.group,
        names.partials,
        demo::REFERENCE_RECORDS,
    );
    let reporter = tokio::spawn(report_progress(monitors, intro, produced, stop.clone()));

    let duration = options.duration;
    let early = tokio::select! {
        _ = tokio::time::timeout(duration, service::shutdown_signal()) => None,
        name = exited.recv() => name,
    };
    if let Some(name) = &early {
        println!("instance `{name}` stopped early; stopping the others");
    }
    let _ = stop_monitors.send(true);
    stop.store(true, Ordering::SeqCst);
    let _ = producer.await;
    let _ = reporter.await;
    let mut failure = None;
    for (name, task) in tasks {
        let result = task.await.with_context(|| format!("instance `{name}` panicked"))?;
        if let Err(e) = result
            && failure.is_none()
        {
            failure = Some(anyhow::Error::new(e).context(format!("instance `{name}` failed")));
        }
    }
    receiver.abort();
    let _ = printer.await;
    if let Some(e) = failure {
        return Err(e);
    }
    println!("demo finished");
    Ok(())
}

/// The owner of `stream` if every instance names the same one.
fn agreed_owner(monitors: &[Monitor], stream: &str) -> Option<String> {
    let mut owners = monitors.iter().map(|m| {
        let global = m.handles.health.global.lock().ok()?;
        global.as_ref()?.owners.get(stream).cloned().flatten()
    });
    let first = owners.next()??;
    owners.all(|o| o.as_deref() == Some(first.as_str())).then_some(first)
}

/// Prints each instance's addresses, then whenever every instance names a (new) owner
/// of a stream, each merged window once with the instance that scored it and the
/// partitions it covers, drift, and a status line every few seconds.
async fn report_progress(
    monitors: Vec<Monitor>,
    intro: String,
    produced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while monitors.iter().any(|m| m.handles.http_addr.get().is_none()) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tick.tick().await;
    }
    for m in &monitors {
        if let Some(addr) = m.handles.http_addr.get() {
            println!("instance `{}`: dashboard http://{addr}/ API http://{addr}/api/v1/streams", m.name);
        }
    }
    println!("{intro}");
    let _ = std::io::stdout().flush();
    let streams = monitors.first().map(|m| m.handles.history.stream_names()).unwrap_or_default();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    // Every window printed, by (stream, start), with the instance that scored it.
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    let mut drifting: BTreeSet<String> = BTreeSet::new();
    let mut last_line = Instant::now();
    let mut last_count = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        for stream in &streams {
            if let Some(owner) = agreed_owner(&monitors, stream)
                && owners.get(stream) != Some(&owner)
            {
                println!("OWNER of `{stream}`: `{owner}` merges and scores it (every instance names it)");
                owners.insert(stream.clone(), owner);
            }
        }
        for m in &monitors {
            for stream in &streams {
                let reports = m.handles.history.recent(stream, usize::MAX).unwrap_or_default();
                for report in reports {
                    let key = (stream.clone(), report.window.start.clone());
                    if let Some(first) = seen.get(&key) {
                        if first != &m.name {
                            println!(
                                "WINDOW SCORED TWICE: `{stream}` window {} by `{first}` and `{}`",
                                report.window.start, m.name
                            );
                        }
                        continue;
                    }
                    seen.insert(key, m.name.clone());
                    *merged.entry(stream.clone()).or_default() += 1;
                    let partitions: BTreeSet<i32> =
                        report.window.offsets.iter().map(|o| o.partition).collect();
                    println!(
                        "MERGED `{stream}` window {} [{} .. {}): {} records from partitions {:?}, scored by `{}`",
                        report.window.index,
                        report.window.start,
                        report.window.end,
                        report.window.records,
                        partitions,
                        m.name
                    );
                    if report.dataset.drifted && drifting.insert(stream.clone()) {
                        print_drift(stream, &report);
                    } else if !report.dataset.drifted && drifting.remove(stream) {
                        println!("`{stream}` is back within thresholds (window {})", report.window.index);
                    }
                }
            }
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            let count = produced.load(Ordering::SeqCst);
            println!(
                "[{:>4}s] {:>6.0} records/s | windows merged: {} | owners: {}",
                started.elapsed().as_secs(),
                (count - last_count) as f64 / last_line.elapsed().as_secs_f64(),
                streams
                    .iter()
                    .map(|s| format!("{s} {}", merged.get(s).copied().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join(", "),
                streams
                    .iter()
                    .map(|s| format!("{s} {}", owners.get(s).map_or("-", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = std::io::stdout().flush();
            last_line = Instant::now();
            last_count = count;
        }
    }
}
