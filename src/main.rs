//! The `driftscope` binary: command-line parsing, logging set-up and exit codes. The
//! work itself lives in the library; errors become messages here.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// driftscope watches the data an ML model sees and says, with numbers, when it has
/// drifted from what the model was trained on.
#[derive(Parser, Debug)]
#[command(name = "driftscope", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr: `text` (human-readable) or `json`. Levels follow RUST_LOG.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run everything on this machine: a Kafka mock cluster, synthetic streams with injected drift, the dashboard.
    Demo(cli::demo::DemoArgs),
    /// Produce the demo's synthetic streams to a real Kafka (the compose stack's producer).
    ProduceDemo(cli::demo::ProduceDemoArgs),
    /// Consume Kafka streams and score every window against its reference.
    Run(cli::run::RunArgs),
    /// Score a data file against a reference, as one window (exit 0: no drift, 1: drift, 2: error).
    Score(cli::score::ScoreArgs),
    /// Replay history (a data file or a topic) through a config's windows, verdicts and triggers: alarm rates, delays, false alarms.
    Backtest(cli::backtest::BacktestArgs),
    /// Build and save reference profiles.
    #[command(subcommand)]
    Reference(cli::reference::ReferenceCommand),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(cli::config_check::ConfigCommand),
    /// GET one of driftscope's HTTP endpoints; exit 0 on 2xx (the image's health check: it has no shell or curl).
    Probe(cli::probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its logs stay at warnings unless RUST_LOG says otherwise.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    init_logging(&cli.log_format, default_level);
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::ProduceDemo(args) => cli::demo::produce(args),
        Command::Run(args) => cli::run::run(args),
        Command::Score(args) => cli::score::run(args),
        Command::Backtest(args) => cli::backtest::run(args),
        Command::Reference(cmd) => cli::reference::run(cmd),
        Command::Config(cmd) => cli::config_check::run(cmd),
        Command::Probe(args) => cli::probe::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
