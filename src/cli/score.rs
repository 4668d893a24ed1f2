//! `driftscope score`: a data file scored against a reference as one window.

use super::load_config;
use anyhow::Context;
use clap::{Args, ValueEnum};
use driftscope::ingest::files::DataSource;
use driftscope::offline::{prepare_reference, read_reference_source, score_source};
use driftscope::stats::report::{Report, Status};
use driftscope::stats::verdict::DecidedBy;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  driftscope score --reference train.parquet --current today.csv
  driftscope score --reference model-v3.profile --current today.parquet --format table
  driftscope score --reference train.csv --current today.csv --config driftscope.toml || echo drift

Exit status: 0 no dataset drift, 1 dataset drift, 2 error.")]
pub struct ScoreArgs {
    /// Reference: a data file (CSV, Parquet, Arrow IPC, JSON Lines) or a saved profile.
    #[arg(long, value_name = "PATH")]
    reference: PathBuf,
    /// Current data file, scored as one window.
    #[arg(long, value_name = "PATH")]
    current: PathBuf,
    /// Configuration file: `[defaults]` and `[[fields]]` overrides are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    format: OutputFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    Json,
    Table,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.as_deref())?;
    let overrides = config.overrides();
    let source = read_reference_source(&args.reference).context("cannot read the reference")?;
    let (reference, notes) = prepare_reference(source, &config.defaults, &overrides)
        .context("the configuration does not fit the reference")?;
    let current = DataSource::open(&args.current).context("cannot read the current data")?;
    let mut report = score_source(&reference, &current).context("cannot read the current data")?;
    report.notes.splice(0..0, notes);
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!("{}", render_table(&report)),
    }
    Ok(if report.dataset.drifted { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// A terminal table: one row per feature, then the dataset verdict and notes.
pub fn render_table(report: &Report) -> String {
    let header = [
        "feature",
        "kind",
        "samples",
        "missing",
        "metric",
        "score",
        "threshold",
        "p-value",
        "effect",
        "drift",
        "missing drift",
    ];
    let mut rows: Vec<[String; 11]> = Vec::new();
    for f in &report.features {
        let score = f.scores.get(f.primary_metric.decision_key()).map_or("-".into(), |v| format_number(*v));
        let drift = match f.status {
            Status::InsufficientData => "n/a (too few samples)".to_owned(),
            Status::Ok if f.drifted => "DRIFT".to_owned(),
            // Version 2: say which condition held when only one did.
            Status::Ok => match f.decided_by {
                Some(DecidedBy::Significance) => "ok (too small to matter)".to_owned(),
                Some(DecidedBy::Effect) => "ok (within sampling noise)".to_owned(),
                _ => "ok".to_owned(),
            },
        };
        rows.push([
            f.name.clone(),
            f.kind.to_string(),
            f.samples.to_string(),
            format!("{:.1}%", 100.0 * f.missing_share),
            f.primary_metric.decision_key().to_owned(),
            score,
            format_number(f.threshold),
            f.p_value.map_or("-".into(), format_number),
            f.effect.map_or("-".into(), format_number),
            drift,
            if f.missing_drifted { "DRIFT".into() } else { "ok".into() },
        ]);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header, &mut out);
    line(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &mut out,
    );
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>(), &mut out);
    }
    let d = &report.dataset;
    out.push_str(&format!(
        "\n{} records; {} of {} evaluated features drifted (share {:.3}, threshold {}): {}\n",
        report.window.records,
        d.features_drifted,
        d.features_evaluated,
        d.drift_share,
        d.threshold,
        if d.drifted { "DATASET DRIFT" } else { "no dataset drift" }
    ));
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

fn format_number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) { format!("{v:.3e}") } else { format!("{v:.4}") }
}
