//! `driftscope config check`: validate a configuration and print it resolved, with
//! secrets redacted.

use anyhow::Context;
use clap::{Args, Subcommand};
use driftscope::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file and print it with defaults filled in.
    #[command(after_help = "Examples:
  driftscope config check --config driftscope.toml")]
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check(args) = cmd;
    let config = Config::load(&args.config).context("invalid configuration")?;
    print!("{}", toml::to_string_pretty(&config.redacted()).context("cannot print the configuration")?);
    for (key, warning) in config.warnings() {
        eprintln!("warning: `{key}`: {warning}");
    }
    eprintln!("{}: ok", args.config.display());
    Ok(ExitCode::SUCCESS)
}
