//! `driftscope reference build`: a data file profiled and saved, so production needs
//! no raw training data.

use super::load_config;
use anyhow::Context;
use clap::{Args, Subcommand};
use driftscope::ingest::files::DataSource;
use driftscope::offline::{add_model_profile, build_profile_streamed};
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
    /// `[[fields]]` (kind, bins) shape the profile; a stream's `[streams.labels]`
    /// names the label and prediction columns whose figures the profile keeps (the
    /// model's performance on the data and, for a binary task, its calibration).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The stream whose `[streams.labels]` applies, when several streams have one.
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
}

pub fn run(cmd: ReferenceCommand) -> anyhow::Result<ExitCode> {
    let ReferenceCommand::Build(args) = cmd;
    let config = load_config(args.config.as_deref())?;
    let file = DataSource::open(&args.input).context("cannot read the input")?;
    let (mut profile, mut notes) = build_profile_streamed(&file, &config.defaults, &config.overrides())
        .context("cannot read the input")?;
    let labels = match &args.stream {
        Some(name) => {
            let stream = config
                .streams
                .iter()
                .find(|s| s.name == *name)
                .with_context(|| format!("--stream: no stream `{name}` in the configuration"))?;
            Some(
                stream
                    .labels
                    .as_ref()
                    .with_context(|| format!("--stream: stream `{name}` has no [streams.labels]"))?,
            )
        }
        None => {
            let with: Vec<_> = config.streams.iter().filter_map(|s| s.labels.as_ref()).collect();
            if with.len() > 1 {
                notes.push(format!(
                    "{} streams have [streams.labels]: pass --stream NAME to keep one's model performance in the profile",
                    with.len()
                ));
            }
            (with.len() == 1).then(|| with[0])
        }
    };
    if let Some(labels) = labels {
        notes.extend(add_model_profile(&mut profile, &file, labels).context("cannot read the input")?);
    }
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
    if let Some(model) = &profile.model {
        let figures: Vec<String> = model.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        eprintln!("model ({}, {} rows): {}", model.task, model.rows, figures.join(", "));
        if let Some(c) = &model.calibration {
            eprintln!(
                "calibration: {} breakpoints, within {:.2e} of the exact isotonic fit",
                c.x.len(),
                c.max_error
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
