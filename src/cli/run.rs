//! `driftscope run`: the long-running monitor.

use anyhow::Context;
use clap::Args;
use driftscope::config::Config;
use driftscope::monitor::{EXIT_NO_CHECKPOINT, MonitorError};
use driftscope::service::{self, ServiceError, ServiceHandles};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  driftscope run --config driftscope.toml
  RUST_LOG=driftscope=debug driftscope run --config driftscope.toml --log-format json

Stops cleanly on SIGTERM or Ctrl-C, within state.shutdown_timeout (10s): the record in
hand is finished, the open windows are checkpointed to state.dir and offsets committed up
to the checkpoint; the next start continues the same windows. A commit or consumer close
that cannot finish in time (a group join, no broker) is left, as are triggers not yet
delivered (the outbox keeps them). Exit status 3: the last checkpoint could not be
written (the next start continues from the previous one; nothing is lost). After a crash (kill -9, power loss) the next start continues
from the last checkpoint (every state.checkpoint_interval): no record is lost or counted
twice in a window.")]
pub struct RunArgs {
    /// Configuration file (TOML). See the README's configuration reference.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Start without the checkpoint in state.dir (it is renamed to
    /// checkpoint.bin.discarded-<ms>, not deleted). Loses the open windows (their
    /// records' offsets are already committed, so they are not read again) and the
    /// API's report history; a warning says how many records that was. Use it when the
    /// checkpoint is refused as corrupt or as not fitting a changed configuration.
    #[arg(long)]
    fresh_state: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config).context("invalid configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handles = ServiceHandles::new(&config);
    let options = service::RunOptions { fresh_state: args.fresh_state };
    let result = runtime.block_on(service::run(config, handles, options, service::shutdown_signal()));
    // Tasks abandoned at the bound (a delivery in flight, an open connection) are
    // cancelled here, not waited for; a consumer left closing is a plain thread, which
    // the process exit ends.
    runtime.shutdown_background();
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(ServiceError::Monitor(MonitorError::LastCheckpoint(e))) => {
            eprintln!("error: the last checkpoint could not be written: {e}");
            Ok(ExitCode::from(EXIT_NO_CHECKPOINT))
        }
        Err(e) => Err(e.into()),
    }
}
