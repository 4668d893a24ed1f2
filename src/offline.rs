//! Offline scoring: reference profiles from data files, and a whole data file scored
//! as one window. Shared by `driftscope score`, `driftscope reference build` and the
//! streaming monitor's data-file references.

use crate::decode::arrow::{ColumnBinding, fold_batch, infer_kind};
use crate::ingest::files::{DataFile, FileError, read_data_file};
use crate::stats::profile::{FeatureSpec, Profile, ProfileBuilder, ProfileError};
use crate::stats::reference::{OverrideError, Reference};
use crate::stats::report::{Report, WindowInfo};
use crate::stats::score_window;
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
    Data(DataFile),
}

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
        Ok(ReferenceSource::Data(read_data_file(path)?))
    }
}

/// The features of a data file: each column whose type (or override) gives a kind.
/// Columns that cannot be scored are returned as notes.
pub fn feature_specs(
    file: &DataFile,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> (Vec<FeatureSpec>, Vec<String>) {
    let mut specs = Vec::new();
    let mut notes = Vec::new();
    for field in file.schema.fields() {
        let over = overrides.get(field.name());
        match over.and_then(|o| o.kind).or_else(|| infer_kind(field.data_type())) {
            Some(kind) => specs.push(FeatureSpec {
                name: field.name().clone(),
                kind,
                bins: over.and_then(|o| o.bins).unwrap_or(settings.bins),
            }),
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

/// The reference for `source`, with the settings and overrides applied.
pub fn prepare_reference(
    source: ReferenceSource,
    settings: &DriftSettings,
    overrides: &BTreeMap<String, FeatureOverride>,
) -> Result<(Reference, Vec<String>), OfflineError> {
    let (profile, notes) = match source {
        ReferenceSource::Profile(p) => (p, Vec::new()),
        ReferenceSource::Data(file) => build_profile(&file, settings, overrides),
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
    let bindings: Vec<ColumnBinding> = reference
        .features
        .iter()
        .enumerate()
        .map(|(feature, f)| ColumnBinding { column: f.name.clone(), feature, kind: f.kind })
        .collect();
    let mut sketch = reference.new_window();
    for batch in &current.batches {
        fold_batch(batch, &bindings, &mut sketch);
    }
    let rows = sketch.records;
    let window =
        WindowInfo { start: "0".into(), end: rows.saturating_sub(1).to_string(), ..WindowInfo::default() };
    let mut report = score_window(reference, &sketch, window);
    for field in current.schema.fields() {
        if reference.feature_index(field.name()).is_none() {
            report.notes.push(format!(
                "column `{}` is in the current data but not in the reference: not scored",
                field.name()
            ));
        }
    }
    for f in &reference.features {
        if current.schema.field_with_name(&f.name).is_err() {
            report.notes.push(format!(
                "column `{}` is in the reference but not in the current data: every record counts it as missing",
                f.name
            ));
        }
    }
    report
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
