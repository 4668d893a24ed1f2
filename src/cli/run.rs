//! `driftscope run`: the long-running monitor.

use anyhow::Context;
use clap::Args;
use driftscope::config::Config;
use driftscope::service::{self, ServiceHandles};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  driftscope run --config driftscope.toml
  RUST_LOG=driftscope=debug driftscope run --config driftscope.toml --log-format json

Stops cleanly on SIGTERM or Ctrl-C: the record in hand is finished, offsets of emitted
windows are committed, open windows are read again on the next start.")]
pub struct RunArgs {
    /// Configuration file (TOML). See the README's configuration reference.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).context("invalid configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handles = ServiceHandles::new(&config);
    runtime.block_on(service::run(config, handles, service::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
