//! Offline scoring: reference profiles from data files, and a whole data file scored
//! as one window. Shared by `driftscope score`, `driftscope reference build` and the
//! streaming monitor's data-file references.
//!
//! Files opened as a [`DataSource`] are read in batches: the current file streams
//! through the window sketch (memory does not grow with its length), and a reference
//! is profiled a group of columns per pass, the group no larger than
//! [`PROFILE_GROUP_BYTES`] of values (one column when columns are larger), on
//! [`PROFILE_WORKERS`] threads. The exact quantiles need every value of a column
//! sorted, so one column's values is the floor; the profile is the same, bit for bit,
//! as one built from the whole file in memory.

use crate::config::labels::{LabelsConfig, TaskConfig};
use crate::decode::arrow::{ColumnBinding, fold_batch, infer_kind};
use crate::ingest::files::{DataFile, DataSource, FileError};
use crate::stats::model_profile::{Cell, ModelProfileBuilder, ModelTask};
use crate::stats::profile::{FeatureSpec, Profile, ProfileBuilder, ProfileError};
use crate::stats::reference::{OverrideError, Reference};
use crate::stats::report::{Report, WindowInfo};
use crate::stats::score_window;
use crate::stats::settings::FeatureKind;
use crate::stats::settings::{DriftSettings, FeatureOverride};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: {error}")]
    Profile { path: PathBuf, error: ProfileError },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Override(#[from] OverrideError),
}

/// A reference as given on the command line or in config: a saved profile or data.
pub enum ReferenceSource {
    Profile(Profile),
    /// Data read whole into memory.
    Data(DataFile),
    /// A data file read in batches, a group of columns at a time.
    File(DataSource),
}

/// Values (8 bytes each) one profiling pass holds at most, unless one column alone is
/// larger: then a pass holds that one column.
pub const PROFILE_GROUP_BYTES: usize = 8 << 20;
/// Threads that profile column groups side by side (each holds one group).
pub const PROFILE_WORKERS: usize = 2;

/// Reads `path` as a saved profile if it is one (by extension or content), otherwise
/// as a data file.
pub fn read_reference_source(path: &Path) -> Result<ReferenceSource, OfflineError> {
    let is_profile = path.extension().is_some_and(|e| e == "profile") || {
        let mut head = [0u8; 256];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|error| OfflineError::Io { path: path.into(), error })?;
        head[..n].windows(18).any(|w| w == b"driftscope-profile")
    };
    if is_profile {
        let bytes = std::fs::read(path).map_err(|error| OfflineError::Io { path: path.into(), error })?;
        let profile =
            Profile::from_json(&bytes).map_err(|error| OfflineError::Profile { path: path.into(), error })?;
        Ok(ReferenceSource::Profile(profile))
    } else {
        Ok(ReferenceSource::File(DataSource::open(path)?))
    }
}

/// The features of a data file: each column whose type (or override) gives a kind.
/// Columns that cannot be scored are returned as notes.
pub fn feature_specs(
    file: &DataFile,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> (Vec<FeatureSpec>, Vec<String>) {
    let (specs, notes) = schema_specs(&file.schema, settings, overrides);
    (specs.into_iter().map(|(_, spec)| spec).collect(), notes)
}

/// [`feature_specs`] of a schema, each with its column's index.
fn schema_specs(
    schema: &arrow::datatypes::Schema,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> (Vec<(usize, FeatureSpec)>, Vec<String>) {
    let mut specs = Vec::new();
    let mut notes = Vec::new();
    for (column, field) in schema.fields().iter().enumerate() {
        let over = overrides.get(field.name());
        match over.and_then(|o| o.kind).or_else(|| infer_kind(field.data_type())) {
            Some(kind) => specs.push((
                column,
                FeatureSpec {
                    name: field.name().clone(),
                    kind,
                    bins: over.and_then(|o| o.bins).unwrap_or(settings.bins),
                },
            )),
            None => notes.push(format!(
                "column `{}` has type {} which is not scored; set its `kind` in [[fields]] to score it",
                field.name(),
                field.data_type()
            )),
        }
    }
    (specs, notes)
}

/// Profiles every scorable column of a data file.
pub fn build_profile(
    file: &DataFile,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> (Profile, Vec<String>) {
    let (specs, notes) = feature_specs(file, settings, overrides);
    let bindings: Vec<ColumnBinding> = specs
        .iter()
        .enumerate()
        .map(|(feature, s)| ColumnBinding { column: s.name.clone(), feature, kind: s.kind })
        .collect();
    let mut builder = ProfileBuilder::new(specs, settings.cdf_resolution, settings.max_categories);
    for batch in &file.batches {
        fold_batch(batch, &bindings, &mut builder);
    }
    let profile = builder.finish(file.path.display().to_string(), now_rfc3339());
    (profile, notes)
}

/// Profiles every scorable column of an opened data file, a group of columns per pass
/// over the file and [`PROFILE_WORKERS`] passes at a time; equal to [`build_profile`]
/// of the whole file.
pub fn build_profile_streamed(
    source: &DataSource,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> Result<(Profile, Vec<String>), OfflineError> {
    build_profile_in_groups(source, settings, overrides, PROFILE_GROUP_BYTES)
}

/// [`build_profile_streamed`] with another group size (tests use a small one to make
/// many passes over small files).
pub fn build_profile_in_groups(
    source: &DataSource,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
    group_bytes: usize,
) -> Result<(Profile, Vec<String>), OfflineError> {
    let (specs, notes) = schema_specs(&source.schema, settings, overrides);
    let per_group = (group_bytes / source.rows().saturating_mul(8).max(1)).max(1);
    let groups: Vec<&[(usize, FeatureSpec)]> = specs.chunks(per_group).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let profile_group = |group: &[(usize, FeatureSpec)]| -> Result<Profile, OfflineError> {
        let columns: Vec<usize> = group.iter().map(|(c, _)| *c).collect();
        let bindings: Vec<ColumnBinding> = group
            .iter()
            .enumerate()
            .map(|(feature, (_, s))| ColumnBinding { column: s.name.clone(), feature, kind: s.kind })
            .collect();
        let specs = group.iter().map(|(_, s)| s.clone()).collect();
        let mut builder = ProfileBuilder::new(specs, settings.cdf_resolution, settings.max_categories);
        for batch in source.batches(Some(&columns))? {
            fold_batch(&batch?, &bindings, &mut builder);
        }
        Ok(builder.finish(source.path.display().to_string(), now_rfc3339()))
    };
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(group) = groups.get(i) else { return done };
            done.push((i, profile_group(group)));
        }
    };
    let mut parts: Vec<(usize, Result<Profile, OfflineError>)> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..PROFILE_WORKERS.min(groups.len())).map(|_| scope.spawn(worker)).collect();
        let mut parts = worker();
        for helper in helpers {
            // A panic in a helper is a bug: carried on into this thread.
            parts.extend(helper.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    parts.sort_by_key(|(i, _)| *i);
    let mut features = Vec::with_capacity(specs.len());
    let mut records = None;
    for (_, part) in parts {
        let part = part?;
        records.get_or_insert(part.records);
        features.extend(part.features);
    }
    let profile = Profile {
        format: crate::stats::profile::PROFILE_FORMAT.to_owned(),
        format_version: crate::stats::profile::PROFILE_VERSION_WITHOUT_MODEL,
        created_at: now_rfc3339(),
        source: source.path.display().to_string(),
        // Without a scorable column, no pass counted the rows.
        records: records.unwrap_or(source.rows() as u64),
        cdf_resolution: settings.cdf_resolution,
        max_categories: settings.max_categories,
        features,
        model: None,
    };
    Ok((profile, notes))
}

/// One reference column's value as [`fold_batch`] hands it over.
enum Slot {
    Missing,
    Invalid,
    Number(f64),
    Text(String),
}

/// Collects the label column (feature 0) and the prediction column (feature 1) of a
/// batch, to pair them by row.
#[derive(Default)]
struct PairSink {
    columns: [Vec<Slot>; 2],
}

impl crate::stats::ValueSink for PairSink {
    fn add_records(&mut self, _: u64) {}
    fn numeric(&mut self, feature: usize, x: f64) {
        self.columns[feature].push(Slot::Number(x));
    }
    fn category(&mut self, feature: usize, value: &str) {
        self.columns[feature].push(Slot::Text(value.to_owned()));
    }
    fn missing(&mut self, feature: usize) {
        self.columns[feature].push(Slot::Missing);
    }
    fn invalid(&mut self, feature: usize) {
        self.columns[feature].push(Slot::Invalid);
    }
}

fn cell(slot: &Slot) -> Cell<'_> {
    match slot {
        Slot::Missing => Cell::Missing,
        Slot::Invalid => Cell::Invalid,
        Slot::Number(x) => Cell::Number(*x),
        Slot::Text(t) => Cell::Text(t),
    }
}

/// Adds the model's side to a profile of `source` ([`crate::stats::model_profile::ModelProfile`]: its performance
/// on the reference, and for a binary task its score's calibration) when the data has
/// the label and prediction columns of the stream's `labels` table; the label column
/// then leaves the profile's features (labels arrive on their own topic, never in a
/// prediction message). Returns notes on what was done or why not.
pub fn add_model_profile(
    profile: &mut Profile,
    source: &DataSource,
    labels: &LabelsConfig,
) -> Result<Vec<String>, OfflineError> {
    let Some((label, prediction)) = labels.reference_columns() else {
        return Ok(vec![format!(
            "the label pointer `{}` or the prediction pointer `{}` is not one column name: \
             the profile has no model performance",
            labels.label,
            labels.task.prediction_pointer()
        )]);
    };
    let (Ok(l), Ok(p)) = (source.schema.index_of(&label), source.schema.index_of(&prediction)) else {
        return Ok(vec![format!(
            "the reference has no column `{label}` (label) or `{prediction}` (prediction): \
             the profile has no model performance"
        )]);
    };
    let (task, label_kind, prediction_kind) = match &labels.task {
        TaskConfig::Binary { threshold, .. } => {
            (ModelTask::Binary { threshold: *threshold }, FeatureKind::Categorical, FeatureKind::Numeric)
        }
        TaskConfig::Multiclass { .. } => {
            (ModelTask::Multiclass, FeatureKind::Categorical, FeatureKind::Categorical)
        }
        TaskConfig::Regression { .. } => (ModelTask::Regression, FeatureKind::Numeric, FeatureKind::Numeric),
    };
    let bindings = [
        ColumnBinding { column: label.clone(), feature: 0, kind: label_kind },
        ColumnBinding { column: prediction.clone(), feature: 1, kind: prediction_kind },
    ];
    let mut columns = [l, p];
    columns.sort_unstable();
    let mut builder = ModelProfileBuilder::new(task, &label, &prediction);
    let mut sink = PairSink::default();
    for batch in source.batches(Some(&columns))? {
        sink.columns.iter_mut().for_each(Vec::clear);
        fold_batch(&batch?, &bindings, &mut sink);
        for (l, p) in sink.columns[0].iter().zip(&sink.columns[1]) {
            builder.add(cell(l), cell(p));
        }
    }
    let Some(model) = builder.finish() else {
        return Ok(vec![format!(
            "no row of the reference has both a usable `{label}` and `{prediction}`: the profile has no model performance"
        )]);
    };
    let mut notes = Vec::new();
    if profile.features.iter().any(|f| f.name == label) {
        profile.features.retain(|f| f.name != label);
        notes.push(format!(
            "column `{label}` is the model's label: kept in the profile's `model`, not as a feature"
        ));
    }
    let skipped: u64 = model.skipped.values().sum();
    if skipped > 0 {
        notes.push(format!("{skipped} reference rows without a usable label or prediction left out of the model's figures: {:?}", model.skipped));
    }
    profile.set_model(model);
    Ok(notes)
}

/// The reference for `source`, with the settings and overrides applied.
pub fn prepare_reference(
    source: ReferenceSource,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> Result<(Reference, Vec<String>), OfflineError> {
    let (profile, notes) = match source {
        ReferenceSource::Profile(p) => (p, Vec::new()),
        ReferenceSource::Data(file) => build_profile(&file, settings, overrides),
        ReferenceSource::File(source) => build_profile_streamed(&source, settings, overrides)?,
    };
    // A saved profile fixes the sketch layout; the scoring settings still apply.
    let mut settings = settings.clone();
    settings.cdf_resolution = profile.cdf_resolution;
    // Overrides for columns the reference lacks are reported, not fatal, like the columns.
    let mut known = overrides.clone();
    let mut notes = notes;
    known.retain(|name, _| {
        let present = profile.feature(name).is_some();
        if !present {
            notes.push(format!("[[fields]] `{name}` is not a column of the reference: ignored"));
        }
        present
    });
    Ok((Reference::new(profile, settings, &known)?, notes))
}

/// Scores a whole data file as one window.
pub fn score_file(reference: &Reference, current: &DataFile) -> Report {
    let bindings = bindings(reference);
    let mut sketch = reference.new_window();
    for batch in &current.batches {
        fold_batch(batch, &bindings, &mut sketch);
    }
    window_report(reference, &sketch, &current.schema)
}

/// Scores an opened data file as one window, its batches streamed through the sketch.
pub fn score_source(reference: &Reference, current: &DataSource) -> Result<Report, OfflineError> {
    let bindings = bindings(reference);
    let mut sketch = reference.new_window();
    for batch in current.batches(None)? {
        fold_batch(&batch?, &bindings, &mut sketch);
    }
    Ok(window_report(reference, &sketch, &current.schema))
}

fn bindings(reference: &Reference) -> Vec<ColumnBinding> {
    reference
        .features
        .iter()
        .enumerate()
        .map(|(feature, f)| ColumnBinding { column: f.name.clone(), feature, kind: f.kind })
        .collect()
}

/// The report of a whole file's sketch, with notes on columns only one side has.
fn window_report(
    reference: &Reference,
    sketch: &crate::stats::sketch::WindowSketch,
    schema: &arrow::datatypes::Schema,
) -> Report {
    let current = schema;
    let rows = sketch.records;
    let window =
        WindowInfo { start: "0".into(), end: rows.saturating_sub(1).to_string(), ..WindowInfo::default() };
    let mut report = score_window(reference, sketch, window);
    for field in current.fields() {
        if reference.feature_index(field.name()).is_none() {
            report.notes.push(format!(
                "column `{}` is in the current data but not in the reference: not scored",
                field.name()
            ));
        }
    }
    for f in &reference.features {
        if current.field_with_name(&f.name).is_err() {
            report.notes.push(format!(
                "column `{}` is in the reference but not in the current data: every record counts it as missing",
                f.name
            ));
        }
    }
    report
}

pub use crate::clock::now_rfc3339;
