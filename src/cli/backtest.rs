//! `driftscope backtest`: replay history through a config's windows, reference,
//! verdicts and triggers, and say how it would have alarmed.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use driftscope::backtest::{self, BacktestOptions, Position, Replay, Span};
use driftscope::config::{Config, WindowConfig};
use driftscope::ingest::files::read_data_file;
use driftscope::ingest::replay::{Bound, replay_topic};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  # a day of features, the first 200,000 rows known clean, a change at row 350,000,
  # and the false-alarm rate over 1,000 windows resampled from the reference
  driftscope backtest --config driftscope.toml --data history.parquet \\
      --clean 0..200000 --change-at 350000 --null 1000

  # a topic's history between two times, read-only (never commits), as JSON for CI
  driftscope backtest --config driftscope.toml --stream features --topic model-features \\
      --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z --format json \\
      --max-false-alarm-rate 0.01

Spans and change points are row numbers (files; offsets on a one-partition topic) or RFC 3339
times (the event time when the stream has one, else the message time). A window is clean
when it lies inside a clean span; the delay of a change point counts windows from the first
window ending after it to the first alarm.

Exit status: 0 done, 1 a false-alarm rate above --max-false-alarm-rate, 2 error.")]
pub struct BacktestArgs {
    /// Configuration file with the stream (its window, reference and fields), `[defaults]`
    /// and `[[triggers]]`.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The stream to replay (needed when the config has several).
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
    /// Replay a data file (CSV, Parquet, Arrow IPC, JSON Lines), rows in order.
    #[arg(long, value_name = "PATH", conflicts_with = "topic", required_unless_present = "topic")]
    data: Option<PathBuf>,
    /// With --data: the event-time column (epoch ms or RFC 3339); default the stream's
    /// `event_time_field` without its leading `/`. Rows must be in event-time order.
    #[arg(long, value_name = "COLUMN", requires = "data")]
    event_time: Option<String>,
    /// Replay a topic on the configured cluster, read-only (never commits).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// With --topic: start at this offset (every partition) or RFC 3339 time; default the beginning.
    #[arg(long, value_name = "OFFSET|TIME", requires = "topic")]
    from: Option<String>,
    /// With --topic: stop before this offset or time; default the end when the replay starts.
    #[arg(long, value_name = "OFFSET|TIME", requires = "topic")]
    to: Option<String>,
    /// A span known to be clean, `FROM..TO` in rows or times (repeatable).
    #[arg(long, value_name = "ROWS|TIMES")]
    clean: Vec<String>,
    /// A known change point, a row or a time (repeatable).
    #[arg(long, value_name = "ROW|TIME")]
    change_at: Vec<String>,
    /// Also replay N windows resampled from the reference itself (the false-alarm rate
    /// when nothing changes).
    #[arg(long, value_name = "N", default_value_t = 0)]
    null: usize,
    /// Records per null window; default the count window's size, else the replayed windows' median.
    #[arg(long, value_name = "N")]
    null_records: Option<u64>,
    /// Seed of the null windows.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Exit 1 when the false-alarm rate (share of clean or null windows in which any
    /// feature drifted or any trigger fired) is above this.
    #[arg(long, value_name = "RATE")]
    max_false_alarm_rate: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    Json,
    Table,
}

fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template =
        format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

fn parse_bound(value: &str) -> anyhow::Result<Bound> {
    Ok(match Position::parse(value)? {
        Position::Row(o) => Bound::Offset(i64::try_from(o).context("offset too large")?),
        Position::TimeMs(t) => Bound::TimeMs(t),
    })
}

pub fn run(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    if let Some(r) = args.max_false_alarm_rate
        && !(0.0..=1.0).contains(&r)
    {
        bail!("--max-false-alarm-rate must be between 0 and 1, got {r}");
    }
    let config = Config::load(&args.config).context("invalid configuration")?;
    let (index, stream) = backtest::pick_stream(&config, args.stream.as_deref())?;
    let options = BacktestOptions {
        clean: args.clean.iter().map(|s| Span::parse(s)).collect::<Result<_, _>>()?,
        change_at: args.change_at.iter().map(|s| Position::parse(s)).collect::<Result<_, _>>()?,
        null_windows: args.null,
        null_records: args.null_records,
        seed: args.seed,
    };
    let pane_records = match &stream.window {
        WindowConfig::TumblingCount { size } => Some(*size),
        WindowConfig::SlidingCount { slide, .. } => Some(*slide),
        _ => None,
    };
    let count_size = match &stream.window {
        WindowConfig::TumblingCount { size } | WindowConfig::SlidingCount { size, .. } => Some(*size),
        _ => None,
    };
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let replay = match (&args.data, &args.topic) {
        (Some(path), _) => {
            let event_time = args
                .event_time
                .clone()
                .or_else(|| stream.event_time_field.as_ref().map(|f| f.trim_start_matches('/').to_owned()));
            if pane_records.is_none() && event_time.is_none() {
                bail!(
                    "stream `{}` has time windows: a file replay needs an event-time column (--event-time, or the stream's event_time_field)",
                    stream.name
                );
            }
            let file = read_data_file(path).with_context(|| format!("cannot read {}", path.display()))?;
            let mut replay = Replay::new(&config, index, Some(event_time), scratch.path())?;
            let bar = progress_bar(file.rows() as u64, "rows");
            let mut row = 0u64;
            for batch in &file.batches {
                replay.feed_batch(batch, row, pane_records).with_context(|| format!("{}", path.display()))?;
                row += batch.num_rows() as u64;
                bar.set_position(row);
            }
            bar.finish_and_clear();
            replay
        }
        (None, Some(topic)) => {
            let mut replay = Replay::new(&config, index, None, scratch.path())?;
            let from = args.from.as_deref().map(parse_bound).transpose()?;
            let to = args.to.as_deref().map(parse_bound).transpose()?;
            // The end offsets are known only once the replay has assigned its partitions.
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{elapsed_precise} {spinner} {pos} messages ({per_sec})")
            {
                bar.set_style(style);
            }
            let read = replay_topic(&config.kafka, topic, from, to, |m| {
                replay.feed_message(m.payload, m.source, m.offset, m.timestamp_ms);
                bar.inc(1);
            })
            .with_context(|| format!("cannot replay topic `{topic}`"))?;
            bar.finish_and_clear();
            tracing::info!(topic = %topic, messages = read, "topic replayed");
            replay
        }
        (None, None) => bail!("give --data FILE or --topic TOPIC"),
    };
    let Some(reference) = replay.reference().cloned() else {
        bail!(
            "the stream's reference was never complete: the replay held fewer records than `reference.from_stream`"
        );
    };
    let nulls = if options.null_windows > 0 {
        let records = options
            .null_records
            .or(count_size)
            .or_else(|| backtest::median_records(&replay.windows))
            .context("--null needs --null-records: no window was replayed to take a size from")?;
        backtest::null_outcomes(
            &reference,
            &stream.name,
            &config.triggers,
            options.null_windows,
            records,
            options.seed,
        )
    } else {
        Vec::new()
    };
    let rule = config.defaults.rule.to_string();
    let feature_names: Vec<String> = reference.features.iter().map(|f| f.name.clone()).collect();
    let trigger_names = replay.trigger_names();
    let replayed = backtest::Replayed {
        stream: &stream.name,
        rule: &rule,
        feature_names: &feature_names,
        trigger_names: &trigger_names,
        invalid_records: replay.invalid_records,
    };
    let summary = backtest::summarize(&replayed, &replay.windows, &nulls, &options);
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        OutputFormat::Table => print!("{}", summary.table()),
    }
    if let (Some(max), Some(worst)) = (args.max_false_alarm_rate, summary.worst_false_alarm_rate())
        && worst > max
    {
        eprintln!("false-alarm rate {:.4} is above --max-false-alarm-rate {max}", worst);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
