//! The offline scorer's streamed paths (a file read in batches, the reference profiled a
//! group of columns per pass on several threads) give the same profile and the same
//! report, bit for bit, as the whole file read into memory: every fixture case, from
//! CSV, Parquet, Arrow IPC (file and stream) and JSON Lines, with groups of one column.

use driftscope::config::Config;
use driftscope::ingest::files::{DataSource, read_data_file};
use driftscope::offline::{
    ReferenceSource, build_profile, build_profile_in_groups, prepare_reference, score_file, score_source,
};
use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 13, "fixture cases missing: {cases:?}");
    cases
}

/// `csv` rewritten as Arrow IPC (file and stream) and JSON Lines next to `dir`.
fn other_formats(csv: &Path, dir: &Path, stem: &str) -> Vec<PathBuf> {
    let file = read_data_file(csv).unwrap();
    let ipc = dir.join(format!("{stem}.arrow"));
    let mut w =
        arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(&ipc).unwrap(), &file.schema).unwrap();
    let stream = dir.join(format!("{stem}.arrows"));
    let mut s =
        arrow::ipc::writer::StreamWriter::try_new(std::fs::File::create(&stream).unwrap(), &file.schema)
            .unwrap();
    let jsonl = dir.join(format!("{stem}.jsonl"));
    let mut j = arrow::json::LineDelimitedWriter::new(std::fs::File::create(&jsonl).unwrap());
    for batch in &file.batches {
        w.write(batch).unwrap();
        s.write(batch).unwrap();
        j.write(batch).unwrap();
    }
    w.finish().unwrap();
    s.finish().unwrap();
    j.finish().unwrap();
    vec![ipc, stream, jsonl]
}

#[test]
fn streamed_profiles_and_reports_equal_the_in_memory_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for case in cases() {
        let config_path = case.join("config.toml");
        let config =
            if config_path.exists() { Config::load(&config_path).unwrap() } else { Config::default() };
        let overrides = config.overrides();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let dir = tmp.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut pairs = vec![
            (case.join("reference.csv"), case.join("current.csv")),
            (case.join("reference.parquet"), case.join("current.parquet")),
        ];
        let refs = other_formats(&case.join("reference.csv"), &dir, "reference");
        let curs = other_formats(&case.join("current.csv"), &dir, "current");
        pairs.extend(refs.into_iter().zip(curs));
        for (reference_path, current_path) in pairs {
            let ctx = format!("{name}: {}", reference_path.display());
            let whole = read_data_file(&reference_path).unwrap();
            let (mut in_memory, notes) = build_profile(&whole, &config.defaults, &overrides);
            let source = DataSource::open(&reference_path).unwrap();
            assert_eq!(source.rows(), whole.rows(), "{ctx}: rows");
            // One byte per group: every column gets its own pass.
            let (mut streamed, streamed_notes) =
                build_profile_in_groups(&source, &config.defaults, &overrides, 1).unwrap();
            in_memory.created_at.clear();
            streamed.created_at.clear();
            assert_eq!(streamed, in_memory, "{ctx}: profile");
            assert_eq!(streamed_notes, notes, "{ctx}: notes");

            let (reference, _) =
                prepare_reference(ReferenceSource::Data(whole), &config.defaults, &overrides).unwrap();
            let (streamed_reference, _) =
                prepare_reference(ReferenceSource::File(source), &config.defaults, &overrides).unwrap();
            let current = read_data_file(&current_path).unwrap();
            let mut want = serde_json::to_value(score_file(&reference, &current)).unwrap();
            let mut got = serde_json::to_value(
                score_source(&streamed_reference, &DataSource::open(&current_path).unwrap()).unwrap(),
            )
            .unwrap();
            // When the reference was profiled is the one field that may differ.
            want["reference"]["created_at"] = serde_json::Value::Null;
            got["reference"]["created_at"] = serde_json::Value::Null;
            assert_eq!(got, want, "{ctx}: report");
            compared += 1;
        }
    }
    assert!(compared >= 13 * 5, "{compared} comparisons");
}
