//! One module per subcommand: argument structs (their doc comments are the `--help`)
//! and the glue from arguments to the library.

pub mod backtest;
pub mod config_check;
pub mod demo;
pub mod probe;
pub mod reference;
pub mod run;
pub mod score;

use anyhow::Context;
use driftscope::config::Config;
use std::path::Path;

/// The config at `path`, or the defaults when none was given.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p).context("invalid configuration"),
        None => Ok(Config::default()),
    }
}
