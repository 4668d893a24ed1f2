//! Stage 6 of the harness: the offline scorer (`driftscope score`, `driftscope reference
//! build`) on Parquet files of the bench schema, side by side with Evidently's
//! DataDriftPreset on the same files when a Python with Evidently is given
//! (`--evidently-python`; `scripts/bench.sh --evidently` makes one in a virtual
//! environment). Wall time and peak RSS of each process come from `/usr/bin/time`.

use super::workload::{Generator, Schema, Value, WORDS};
use anyhow::{Context, bail};
use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::record_batch::RecordBatch;
use driftscope::stats::FeatureKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Rows per written batch (and row group: the writer's default caps row groups at
/// 1,048,576 rows).
const WRITE_ROWS: usize = 65_536;

/// Writes `rows` records of `schema` from `seed` as Parquet: one column per feature.
pub fn write_parquet(schema: &Schema, seed: u64, rows: usize, path: &Path) -> anyhow::Result<()> {
    let fields: Vec<Field> = schema
        .features
        .iter()
        .map(|f| {
            let t = if f.kind == FeatureKind::Numeric { DataType::Float64 } else { DataType::Utf8 };
            Field::new(&f.name, t, true)
        })
        .collect();
    let arrow_schema = Arc::new(ArrowSchema::new(fields));
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, arrow_schema.clone(), None)?;
    let mut generator = Generator::new(schema, seed);
    let mut values = Vec::new();
    let mut left = rows;
    while left > 0 {
        let n = left.min(WRITE_ROWS);
        let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(n); schema.features.len()];
        for _ in 0..n {
            generator.record(&mut values);
            for (c, v) in columns.iter_mut().zip(&values) {
                c.push(*v);
            }
        }
        let arrays: Vec<ArrayRef> = columns
            .iter()
            .map(|column| -> ArrayRef {
                match column.first() {
                    Some(Value::Cat(_)) => Arc::new(StringArray::from_iter_values(
                        column.iter().map(|v| if let Value::Cat(c) = v { WORDS[*c as usize] } else { "" }),
                    )),
                    _ => Arc::new(Float64Array::from_iter_values(
                        column.iter().map(|v| if let Value::Num(x) = v { *x } else { f64::NAN }),
                    )),
                }
            })
            .collect();
        writer.write(&RecordBatch::try_new(arrow_schema.clone(), arrays)?)?;
        left -= n;
    }
    writer.close()?;
    Ok(())
}

/// A finished process: wall seconds and peak RSS, and what it printed.
pub struct Measured {
    pub wall_s: f64,
    pub peak_mib: Option<f64>,
    pub stdout: String,
}

/// Runs `program` under `/usr/bin/time` (when it exists) for its peak RSS; an exit
/// status other than `ok` is a failure.
pub fn measure(program: &Path, args: &[&std::ffi::OsStr], ok: &[i32]) -> anyhow::Result<Measured> {
    let time = Path::new("/usr/bin/time");
    let report = tempfile::NamedTempFile::new()?;
    let mut command = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(report.path()).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args);
    let started = std::time::Instant::now();
    let out = command.output().with_context(|| format!("run {}", program.display()))?;
    let wall_s = started.elapsed().as_secs_f64();
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        bail!("{} failed ({}): {}", program.display(), out.status, String::from_utf8_lossy(&out.stderr));
    }
    let peak_mib = std::fs::read_to_string(report.path())
        .ok()
        .and_then(|t| t.lines().last()?.trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0);
    Ok(Measured { wall_s, peak_mib, stdout: String::from_utf8_lossy(&out.stdout).into_owned() })
}

/// Evidently's DataDriftPreset on the two files; prints `EVIDENTLY compute_s=... version=...`.
pub const EVIDENTLY_SCRIPT: &str = r#"
import sys, time
import pandas as pd
reference = pd.read_parquet(sys.argv[1])
current = pd.read_parquet(sys.argv[2])
import evidently
started = time.perf_counter()
try:
    from evidently import Report
    from evidently.presets import DataDriftPreset
    result = Report([DataDriftPreset()]).run(current, reference)
except ImportError:
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    result = Report(metrics=[DataDriftPreset()])
    result.run(reference_data=reference, current_data=current)
compute = time.perf_counter() - started
print(f"EVIDENTLY compute_s={compute:.3f} version={evidently.__version__}")
"#;

pub fn evidently(
    python: &Path,
    dir: &Path,
    reference: &Path,
    current: &Path,
) -> anyhow::Result<(Measured, f64)> {
    let script: PathBuf = dir.join("evidently_drift.py");
    std::fs::write(&script, EVIDENTLY_SCRIPT)?;
    let m = measure(python, &[script.as_os_str(), reference.as_os_str(), current.as_os_str()], &[0])?;
    let compute = m
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("EVIDENTLY compute_s=")?.split_whitespace().next()?.parse::<f64>().ok())
        .context("the Evidently script printed no compute time")?;
    Ok((m, compute))
}
