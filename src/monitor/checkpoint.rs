//! The monitor's checkpoint file: the open windows of every stream, the recent reports
//! (the API's history, and the reports not yet known to have reached the outputs), and
//! per topic partition the position up to which all of that accounts for the records.
//! Offsets are committed only up to a written checkpoint, so after a crash the monitor
//! resumes from the checkpoint plus the broker's committed offsets: records below a
//! position are skipped (they are already in the state), records from it on are read.
//!
//! File layout: `DRIFTCKP` magic, format version (u32 LE), payload length (u64 LE),
//! CRC-32 of the payload (u32 LE), then the payload (MessagePack, field names kept).
//! Written with write-fsync-rename, so a crash leaves the old or the new file.

use crate::stats::Report;
use crate::stats::distribution::FeatureDistribution;
use crate::stats::sequential::SequentialState;
use crate::stats::window::WindowerState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The checkpoint's file name inside `state.dir`.
pub const FILE_NAME: &str = "checkpoint.bin";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"DRIFTCKP";
const HEADER: usize = 8 + 4 + 8 + 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Wall clock when it was written (ms since the Unix epoch).
    pub written_at_ms: i64,
    pub sources: Vec<SourcePosition>,
    pub streams: Vec<StreamCheckpoint>,
}

/// Every record of the partition below `position` is accounted for by the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: i32,
    /// The stream the topic belongs to.
    pub stream: String,
    /// -1 when unknown (the partition was assigned but nothing was read yet).
    pub position: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamCheckpoint {
    pub name: String,
    /// The window settings, as text, for the mismatch message.
    pub window: String,
    /// Digest of the reference's grids and categories (0 while it is still being taken).
    pub reference: u32,
    /// The open windows; `None` while the reference is still being taken.
    pub windower: Option<WindowerState>,
    /// The newest reports, oldest first.
    pub recent: Vec<Arc<Report>>,
    /// Reference vs window shares of the newest report, for the dashboard.
    pub latest_distributions: Option<Arc<Vec<FeatureDistribution>>>,
    /// The stream's sequential detectors as of the newest report (absent in
    /// checkpoints written before there were any: they start afresh).
    #[serde(default)]
    pub sequential: SequentialState,
    /// The label join and performance windows (streams with labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<crate::monitor::labels::LabelsState>,
}

impl Checkpoint {
    pub fn stream(&self, name: &str) -> Option<&StreamCheckpoint> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Records held in open windows, per stream (what starting fresh loses).
    pub fn open_records(&self) -> Vec<(String, u64)> {
        self.streams
            .iter()
            .map(|s| {
                let records =
                    s.windower.as_ref().map_or(0, |w| w.panes.iter().map(|p| p.sketch.records).sum());
                (s.name.clone(), records)
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read the checkpoint {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the checkpoint {} is unusable ({detail}); start with `driftscope run --fresh-state` to set it aside and start without it",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the checkpoint {} has format version {found}, this driftscope reads version {VERSION}; start with `--fresh-state` to set it aside",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "the checkpoint {} does not fit the configuration: {detail}; start with `--fresh-state` to set it aside",
        path.display()
    )]
    Mismatch { path: PathBuf, detail: String },
}

/// Encodes a checkpoint into its file bytes.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, String> {
    let payload = rmp_serde::to_vec_named(checkpoint).map_err(|e| e.to_string())?;
    Ok(frame(&payload))
}

/// The file bytes of a payload: header (magic, version, length, CRC-32) and payload.
/// Public so the fuzz target can reach the payload decoder past the checksum.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Decodes file bytes; `path` only names the file in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |detail: String| CheckpointError::Corrupt { path: path.to_owned(), detail };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupt(format!("not a driftscope checkpoint ({} bytes, no header)", bytes.len())));
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = word(8);
    if version != VERSION {
        return Err(CheckpointError::Version { path: path.to_owned(), found: version });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len);
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(corrupt(format!("truncated: {} payload bytes of {len}", payload.len())));
    }
    let expected = word(20);
    let actual = crc32fast::hash(payload);
    if actual != expected {
        return Err(corrupt(format!("checksum mismatch: {actual:08x}, expected {expected:08x}")));
    }
    rmp_serde::from_slice(payload).map_err(|e| corrupt(format!("undecodable: {e}")))
}

/// Reads the checkpoint at `path`; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Read { path: path.to_owned(), source }),
    }
}

/// Writes the checkpoint durably (write, fsync, rename, fsync the directory).
pub fn save(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<usize> {
    let bytes = encode(checkpoint).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_atomically(path, &bytes)?;
    Ok(bytes.len())
}

/// Moves an unwanted checkpoint aside (`checkpoint.bin.discarded-<ms>`) instead of
/// deleting it, so it can still be inspected; returns the new name.
pub fn set_aside(path: &Path, now_ms: i64) -> std::io::Result<Option<PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".discarded-{now_ms}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(Some(aside))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            written_at_ms: 1,
            sources: vec![SourcePosition {
                topic: "t".into(),
                partition: 0,
                stream: "s".into(),
                position: 42,
            }],
            streams: vec![StreamCheckpoint {
                name: "s".into(),
                window: "w".into(),
                reference: 7,
                windower: None,
                recent: Vec::new(),
                latest_distributions: None,
                sequential: SequentialState::default(),
                labels: None,
            }],
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).unwrap();
        let back = decode(Path::new("c"), &bytes).unwrap();
        assert_eq!(back.sources, sample().sources);
        assert_eq!(back.streams[0].reference, 7);
    }

    #[test]
    fn refuses_truncated_flipped_and_foreign_files_naming_them() {
        let bytes = encode(&sample()).unwrap();
        let path = Path::new("/state/checkpoint.bin");
        for bad in [&bytes[..bytes.len() - 1], &bytes[..10], b"hello".as_slice()] {
            let err = decode(path, bad).unwrap_err();
            assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains("/state/checkpoint.bin"), "{err}");
            assert!(err.to_string().contains("--fresh-state"), "{err}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(decode(path, &flipped).unwrap_err().to_string().contains("checksum"));
        let mut newer = bytes;
        newer[8] = 9;
        assert!(matches!(decode(path, &newer).unwrap_err(), CheckpointError::Version { found: 9, .. }));
    }
}
