//! `driftscope demo`: see driftscope catch drift in a minute, with nothing installed.

use anyhow::Context;
use clap::Args;
use driftscope::demo::{self, DemoOptions};
use driftscope::service::{self, ServiceHandles};
use driftscope::stats::Status;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod cluster;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  driftscope demo                       # runs 3 minutes, dashboard on http://127.0.0.1:9464/
  driftscope demo --rate 5000 --duration 10m --port 8080 --seed 7
  scripts/kafka.sh start                # a local broker, prints its address
  driftscope demo --instances 3 --brokers 127.0.0.1:19092

The demo starts an in-process Kafka mock cluster, a synthetic model's feature and
prediction streams, the monitor, the HTTP server and dashboard, and a local webhook
receiver. Drift is injected after a clean phase; Ctrl-C ends it cleanly.

With --instances N (and --brokers) it runs N monitors in global mode on a real
broker instead: fresh 6-partition topics, one consumer group and one partials topic
per run, 5 s event-time windows, references from files and no labels (global mode
has no label joins yet). Each monitor serves its own dashboard and API (ports from
--port up, printed); the owner of each stream merges every instance's partial windows
and scores them once. The mock cluster cannot run this: it does not implement Kafka
transactions, which global mode publishes its partials in; start a broker with
`scripts/kafka.sh start` (or use any Kafka 2.5+).")]
pub struct DemoArgs {
    /// How long to run (e.g. 90s, 10m).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Records per second on each stream.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=200_000))]
    rate: u64,
    /// HTTP port for the dashboard, metrics and API (0 picks a free one).
    #[arg(long, default_value_t = 9464)]
    port: u16,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Monitors to run in global mode, sharing the streams (needs --brokers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    instances: u16,
    /// A real Kafka broker (`scripts/kafka.sh start` starts one) instead of the mock
    /// cluster: the demo runs --instances monitors in global mode on it.
    #[arg(long)]
    brokers: Option<String>,
}

/// Why `--instances` needs `--brokers`, and what to do.
const NEEDS_BROKER: &str = "--instances needs a real Kafka broker (--brokers HOST:PORT): the monitors run \
     in global mode, which publishes partial windows in Kafka transactions, and the demo's in-process mock \
     cluster (librdkafka's) does not implement transactions (it commits nothing at EndTxn). Start a broker \
     with `scripts/kafka.sh start` and pass the address it prints, e.g. \
     `driftscope demo --instances 3 --brokers 127.0.0.1:19092`";

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.instances > 1 && args.brokers.is_none() {
        anyhow::bail!(NEEDS_BROKER);
    }
    let options = DemoOptions { duration: args.duration, rate: args.rate, port: args.port, seed: args.seed };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.brokers {
        Some(brokers) => runtime.block_on(cluster::run(options, brokers, usize::from(args.instances)))?,
        None => runtime.block_on(run_demo(options))?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(options: DemoOptions) -> anyhow::Result<()> {
    let cluster = demo::mock_cluster().context("cannot start the Kafka mock cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    let state = tempfile::tempdir().context("cannot create a state directory")?;
    let mut config = demo::demo_config(&bootstrap, options.port, state.path());
    let secret = demo::new_webhook_secret(options.seed);
    let (received_tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel();
    let (receiver_addr, receiver) =
        demo::webhook_receiver(&secret, received_tx).await.context("cannot start the webhook receiver")?;
    config.triggers.push(
        demo::demo_trigger(&format!("http://{receiver_addr}/hooks/retrain"), &secret)
            .context("demo trigger config")?,
    );
    let handles = ServiceHandles::new(&config);
    let printer = tokio::spawn(async move {
        while let Some(t) = received_rx.recv().await {
            if std::io::stdout().is_terminal() {
                print!("\r\x1b[2K");
            }
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
    let producer = tokio::spawn(demo::produce(
        bootstrap,
        demo::ProduceTarget::single(),
        options.rate,
        options.seed,
        demo::CLEAN_RECORDS,
        produced.clone(),
        stop.clone(),
    ));
    let reporter = tokio::spawn(report_progress(handles.clone(), produced, options.rate, stop.clone()));

    let duration = options.duration;
    // Ends at --duration or on Ctrl-C / SIGTERM, whichever comes first.
    let shutdown = async move {
        let _ = tokio::time::timeout(duration, service::shutdown_signal()).await;
    };
    let result = service::run(config, handles, service::RunOptions::default(), shutdown).await;
    stop.store(true, Ordering::SeqCst);
    let _ = producer.await;
    let _ = reporter.await;
    receiver.abort();
    let _ = printer.await;
    println!();
    result.context("the monitor failed")?;
    println!("demo finished");
    drop(cluster);
    Ok(())
}

/// Prints the dashboard address, then a live status line (a plain line every few
/// seconds when not on a terminal), and a message whenever a window drifts.
async fn report_progress(
    handles: ServiceHandles,
    produced: Arc<AtomicU64>,
    rate: u64,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while handles.http_addr.get().is_none() && !stop.load(Ordering::SeqCst) {
        tick.tick().await;
    }
    if let Some(addr) = handles.http_addr.get() {
        println!("dashboard: http://{addr}/");
        println!("metrics:   http://{addr}/metrics");
        println!(
            "streams `features` and `predictions` at {rate} records/s each; references from the first {} records, \
             drift injected after {} records",
            demo::REFERENCE_RECORDS,
            demo::CLEAN_RECORDS
        );
        let _ = std::io::stdout().flush();
    }
    let terminal = std::io::stdout().is_terminal();
    let mut seen: std::collections::BTreeMap<String, u64> = Default::default();
    // Streams in a drift episode: the details are printed once, when it starts.
    let mut drifting: std::collections::BTreeSet<String> = Default::default();
    let mut last_line = Instant::now();
    let mut last_count = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        for stream in handles.history.stream_names() {
            let Some(Some(report)) = handles.history.latest(&stream) else { continue };
            if seen.get(&stream) == Some(&(report.window.index + 1)) {
                continue;
            }
            seen.insert(stream.clone(), report.window.index + 1);
            if !report.dataset.drifted && drifting.remove(&stream) {
                if terminal {
                    print!("\r\x1b[2K");
                }
                println!("`{stream}` is back within thresholds (window {})", report.window.index);
            }
            if report.dataset.drifted && drifting.insert(stream.clone()) {
                if terminal {
                    print!("\r\x1b[2K");
                }
                print_drift(&stream, &report);
            }
        }
        let elapsed = last_line.elapsed().as_secs_f64();
        let count = produced.load(Ordering::SeqCst);
        let status = format!(
            "[{:>4}s] {:>6.0} records/s | windows: {} | drift share: {}",
            started.elapsed().as_secs(),
            (count - last_count) as f64 / elapsed.max(1e-3),
            handles
                .history
                .stream_names()
                .iter()
                .map(|s| format!(
                    "{s} {}",
                    handles.telemetry.windows_closed.with_label_values(&[s.as_str()]).get()
                ))
                .collect::<Vec<_>>()
                .join(", "),
            handles
                .history
                .stream_names()
                .iter()
                .map(|s| {
                    let share = handles.history.latest(s).flatten().map(|r| r.dataset.drift_share);
                    format!("{s} {}", share.map_or("-".into(), |v| format!("{v:.2}")))
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        if terminal {
            print!("\r\x1b[2K{status}");
            let _ = std::io::stdout().flush();
            last_line = Instant::now();
            last_count = count;
        } else if elapsed >= 5.0 {
            println!("{status}");
            last_line = Instant::now();
            last_count = count;
        }
    }
}

/// Prints a drifted window: which features drifted, by how much, and missing values
/// that drifted.
fn print_drift(stream: &str, report: &driftscope::stats::Report) {
    let features: Vec<String> = report
        .features
        .iter()
        .filter(|f| f.drifted && f.status == Status::Ok)
        .map(|f| {
            let key = f.primary_metric.decision_key();
            let value = f.scores.get(key).copied().unwrap_or(f64::NAN);
            match (f.p_value, f.effect, f.min_effect) {
                // Version 2: the effect against its floor, and the p-value.
                (Some(p), Some(effect), Some(floor)) => format!(
                    "{} ({} {effect:.3}, floor {floor}; p {})",
                    f.name,
                    driftscope::stats::verdict::effect_key(f.primary_metric),
                    if p < 1e-4 { "< 0.0001".to_owned() } else { format!("{p:.4}") }
                ),
                _ => format!("{} ({key} {value:.3} vs threshold {})", f.name, f.threshold),
            }
        })
        .collect();
    println!(
        "DRIFT in `{stream}` window {}: {} of {} features drifted: {}",
        report.window.index,
        report.dataset.features_drifted,
        report.dataset.features_evaluated,
        features.join(", ")
    );
    for f in report.features.iter().filter(|f| f.missing_drifted) {
        println!(
            "  missing values in `{}`: {:.1}% (reference {:.1}%)",
            f.name,
            100.0 * f.missing_share,
            100.0 * f.reference_missing_share
        );
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  driftscope produce-demo --brokers localhost:9092 --rate 500
  driftscope produce-demo --brokers kafka:9092 --drift-after 20000

Writes the demo's synthetic model traffic to the topics `demo-features` and
`demo-predictions` of a real Kafka cluster (the compose stack's producer), until
Ctrl-C. Drift is injected after --drift-after records on each topic.")]
pub struct ProduceDemoArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Records per second on each topic.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    rate: u64,
    /// Clean records per topic before drift is injected.
    #[arg(long, default_value_t = demo::CLEAN_RECORDS)]
    drift_after: u64,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn produce(args: ProduceDemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(demo::produce(
            args.brokers.clone(),
            demo::ProduceTarget::single(),
            args.rate,
            args.seed,
            args.drift_after,
            produced.clone(),
            stop.clone(),
        ));
        eprintln!(
            "producing to {} at {} records/s per topic; drift after {} records",
            args.brokers, args.rate, args.drift_after
        );
        service::shutdown_signal().await;
        stop.store(true, Ordering::SeqCst);
        let result = task.await.context("producer task failed")?;
        result.context("kafka producer failed")?;
        eprintln!("produced {} records per topic", produced.load(Ordering::SeqCst));
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
