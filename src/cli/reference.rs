//! `driftscope reference build`: a data file profiled and saved, so production needs
//! no raw training data.

use super::load_config;
use anyhow::Context;
use clap::{Args, Subcommand};
use driftscope::ingest::files::DataSource;
use driftscope::offline::build_profile_streamed;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ReferenceCommand {
    /// Profile a data file and save the profile.
    #[command(after_help = "Examples:
  driftscope reference build --input train.parquet --output model-v3.profile
  driftscope reference build --input train.csv --output model-v3.profile --config driftscope.toml")]
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Training data: CSV, Parquet, Arrow IPC or JSON Lines.
    #[arg(long, value_name = "PATH")]
    input: PathBuf,
    /// Where to write the profile (replaced atomically).
    #[arg(long, value_name = "PATH")]
    output: PathBuf,
    /// Configuration file: `[defaults]` (bins, cdf_resolution, max_categories) and
    /// `[[fields]]` (kind, bins) shape the profile.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(cmd: ReferenceCommand) -> anyhow::Result<ExitCode> {
    let ReferenceCommand::Build(args) = cmd;
    let config = load_config(args.config.as_deref())?;
    let file = DataSource::open(&args.input).context("cannot read the input")?;
    let (profile, notes) = build_profile_streamed(&file, &config.defaults, &config.overrides())
        .context("cannot read the input")?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    driftscope::fsutil::write_atomically(&args.output, &profile.to_json())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "wrote {}: {} features from {} records",
        args.output.display(),
        profile.features.len(),
        profile.records
    );
    Ok(ExitCode::SUCCESS)
}
