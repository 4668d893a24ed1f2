//! The durable side of triggers, under `<state dir>/triggers/`: one JSON file per
//! fired event in `outbox/` (written and fsync'd before any delivery attempt, updated
//! after each attempt, kept a while once delivered), and `episodes.json` with every
//! trigger's episode state. All writes go through [`write_atomically`], so a crash
//! leaves either the old or the new file.

use super::TriggerError;
use super::condition::Episode;
use super::payload::{Evidence, is_valid_id};
use crate::fsutil::write_atomically;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Delivered entries kept on disk (newest first) before the oldest are pruned.
pub const KEEP_DONE: usize = 100;

/// Where an event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its next delivery attempt.
    Pending,
    /// Failed permanently or gave up; waits for a manual retry.
    Dead,
    /// Delivered.
    Done,
}

/// One fired event, as stored in `outbox/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// File format version.
    pub version: u32,
    /// The trigger id (idempotency key).
    pub id: String,
    /// Trigger name.
    pub trigger: String,
    /// Stream name.
    pub stream: String,
    /// Order of firing across the engine's life.
    pub seq: u64,
    /// The condition clock (ms since epoch) when it fired; drives the cooldown.
    pub clock_ms: i64,
    /// Wall-clock time it fired (ms since epoch).
    pub created_ms: i64,
    /// What is delivered.
    pub evidence: Evidence,
    /// Pending, dead or done.
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts since it was fired or last retried by hand (what `max_attempts`
    /// counts).
    pub round_attempts: u32,
    /// First attempt since it was fired or last retried by hand (what
    /// `give_up_after` counts from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_started_ms: Option<i64>,
    /// When the next attempt is due (ms since epoch).
    pub next_attempt_ms: i64,
    /// What went wrong last (secrets scrubbed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was delivered or dead-lettered (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
}

/// The outbox directory. Writes are serialised, and each writes the entry's latest
/// in-memory state, so the file never goes back to an older state.
pub struct Outbox {
    dir: PathBuf,
    io: Mutex<()>,
}

/// What [`Outbox::load`] found.
pub struct Loaded {
    /// Entries that parsed.
    pub entries: Vec<Entry>,
    /// Files that did not, each with a message naming it (they are renamed to
    /// `*.corrupt` so they are kept but not read again).
    pub problems: Vec<String>,
}

impl Outbox {
    /// Creates the directory when missing.
    pub fn open(dir: PathBuf) -> Result<Outbox, TriggerError> {
        std::fs::create_dir_all(&dir).map_err(|source| TriggerError::Io { path: dir.clone(), source })?;
        Ok(Outbox { dir, io: Mutex::new(()) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Reads every entry; unreadable files are reported, not fatal.
    pub fn load(&self) -> Result<Loaded, TriggerError> {
        let io_err = |source| TriggerError::Io { path: self.dir.clone(), source };
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        let mut paths: Vec<PathBuf> =
            std::fs::read_dir(&self.dir).map_err(io_err)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if name.starts_with(".tmp") {
                // A temporary file of a write that a crash interrupted.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string()))
                .and_then(|entry| {
                    if is_valid_id(&entry.id) && name == format!("{}.json", entry.id) {
                        Ok(entry)
                    } else {
                        Err("its id does not match its file name".to_owned())
                    }
                });
            match parsed {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    let aside = path.with_extension("json.corrupt");
                    let moved = match std::fs::rename(&path, &aside) {
                        Ok(()) => format!("; moved to {}", aside.display()),
                        Err(e) => format!("; could not move it aside: {e}"),
                    };
                    let message = format!("corrupt trigger outbox file {}: {error}{moved}", path.display());
                    tracing::error!(file = %path.display(), error = %error, "corrupt trigger outbox file; it is not delivered");
                    problems.push(message);
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        Ok(Loaded { entries, problems })
    }

    /// Writes `entry` (fsync'd).
    pub fn write(&self, entry: &Entry) -> Result<(), TriggerError> {
        let _guard = self.io.lock().unwrap_or_else(|p| p.into_inner());
        self.write_locked(entry)
    }

    fn write_locked(&self, entry: &Entry) -> Result<(), TriggerError> {
        let path = self.path(&entry.id);
        let bytes = serde_json::to_vec_pretty(entry)
            .map_err(|e| TriggerError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
        write_atomically(&path, &bytes).map_err(|source| TriggerError::Io { path, source })
    }

    /// Brings the files of `ids` in line with their current state as `current` reads
    /// it (under the write lock): written when present, removed when gone.
    pub fn sync(&self, ids: &[String], current: impl Fn(&str) -> Option<Entry>) -> Result<(), TriggerError> {
        let _guard = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let mut result = Ok(());
        for id in ids {
            let outcome = match current(id) {
                Some(entry) => self.write_locked(&entry),
                None => match std::fs::remove_file(self.path(id)) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(TriggerError::Io { path: self.path(id), source }),
                },
            };
            if let Err(e) = outcome {
                tracing::error!(error = %e, "cannot update the trigger outbox");
                result = Err(e);
            }
        }
        result
    }
}

/// `episodes.json`: the episode state of every trigger and stream, and the next
/// outbox sequence number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeFile {
    /// File format version.
    pub version: u32,
    /// The sequence number the next fired event gets.
    pub next_seq: u64,
    /// By trigger name, then stream name.
    pub episodes: BTreeMap<String, BTreeMap<String, Episode>>,
}

/// Reads `episodes.json`; a missing file is an empty state, a corrupt one is moved
/// aside and reported (the outbox still restores cooldowns of recent firings).
pub fn load_episodes(path: &Path) -> Result<(EpisodeFile, Option<String>), TriggerError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((EpisodeFile::default(), None));
        }
        Err(source) => {
            return Err(TriggerError::Io { path: path.into(), source });
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(file) => Ok((file, None)),
        Err(error) => {
            let aside = path.with_extension("json.corrupt");
            let moved = match std::fs::rename(path, &aside) {
                Ok(()) => format!("; moved to {}", aside.display()),
                Err(e) => format!("; could not move it aside: {e}"),
            };
            tracing::error!(file = %path.display(), error = %error, "corrupt trigger episode state; starting from the outbox");
            Ok((
                EpisodeFile::default(),
                Some(format!("corrupt trigger episode file {}: {error}{moved}", path.display())),
            ))
        }
    }
}

/// Writes `episodes.json` (fsync'd).
pub fn save_episodes(path: &Path, file: &EpisodeFile) -> Result<(), TriggerError> {
    let bytes = serde_json::to_vec_pretty(file)
        .map_err(|e| TriggerError::Io { path: path.into(), source: std::io::Error::other(e) })?;
    write_atomically(path, &bytes).map_err(|source| TriggerError::Io { path: path.into(), source })
}
