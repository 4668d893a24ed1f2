//! What the Avro and Protobuf decoders share: the Confluent wire format's framing
//! (magic byte 0, a 4-byte big-endian schema id), [`SchemaSource`] (schema text by
//! id, implemented by the registry client in `ingest::registry` and by fixed schemas
//! here, so that decoders stay free of I/O), [`SchemaEvents`] (schema changes told to
//! whoever counts them), and [`Row`], the one record of monitored values a message of
//! either format holds until it is folded into a sink.

use crate::stats::settings::FeatureKind;
use crate::stats::sketch::ValueSink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The Confluent framing's first byte.
pub const MAGIC_BYTE: u8 = 0;

/// Splits a Confluent-framed message into its schema id and body; `None` when it is
/// too short or its first byte is not [`MAGIC_BYTE`].
pub fn split_frame(payload: &[u8]) -> Option<(u32, &[u8])> {
    match payload {
        [MAGIC_BYTE, a, b, c, d, body @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => None,
    }
}

/// What kind of schema the registry holds under an id (Confluent's `schemaType`;
/// absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Avro,
    Protobuf,
    Json,
}

/// A schema as the registry returns it by id.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredSchema {
    pub kind: SchemaKind,
    /// The schema text: Avro JSON, `.proto` source, or a base64 serialized
    /// `FileDescriptorProto` (what confluent-kafka's Protobuf serializer registers).
    pub text: String,
}

/// Why a schema could not be had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaLookupError {
    /// The registry does not know the id (404): the message is refused as
    /// `unknown_schema`.
    #[error("schema id {0} is not in the registry")]
    NotFound(u32),
    /// The registry could not be asked (down, timed out, 5xx, 401) and retrying was
    /// given up because the monitor is stopping.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

/// Schema text by id. The registry client retries while the registry is away (the
/// pipeline waits, so nothing is skipped) and caches every schema it fetched, so a
/// decoder asks once per new id at most.
pub trait SchemaSource: Send + Sync {
    fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, SchemaLookupError>;
}

/// Schemas known up front (tests, the benchmark, the fuzz targets).
#[derive(Default)]
pub struct FixedSchemas {
    schemas: HashMap<u32, Arc<RegisteredSchema>>,
    lookups: std::sync::atomic::AtomicU64,
}

impl FixedSchemas {
    pub fn new() -> FixedSchemas {
        FixedSchemas::default()
    }

    pub fn with(mut self, id: u32, kind: SchemaKind, text: impl Into<String>) -> FixedSchemas {
        self.schemas.insert(id, Arc::new(RegisteredSchema { kind, text: text.into() }));
        self
    }

    /// How many times [`SchemaSource::schema`] was called.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl SchemaSource for FixedSchemas {
    fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, SchemaLookupError> {
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.schemas.get(&id).cloned().ok_or(SchemaLookupError::NotFound(id))
    }
}

/// Told when a stream's messages switch to another schema id.
pub trait SchemaEvents: Send + Sync {
    fn schema_changed(&self, stream: &str, from: u32, to: u32);
}

/// Remembers schema changes (tests).
#[derive(Default)]
pub struct RecordedSchemaEvents(pub Mutex<Vec<(String, u32, u32)>>);

impl SchemaEvents for RecordedSchemaEvents {
    fn schema_changed(&self, stream: &str, from: u32, to: u32) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((stream.to_owned(), from, to));
        }
    }
}

/// Tracks the schema id of a stream's last message and reports a switch once, when
/// it happens (logged here; counted by whoever implements [`SchemaEvents`]).
pub struct SchemaTracker {
    stream: String,
    current: Option<u32>,
    events: Option<Arc<dyn SchemaEvents>>,
}

impl SchemaTracker {
    pub fn new(stream: &str, events: Option<Arc<dyn SchemaEvents>>) -> SchemaTracker {
        SchemaTracker { stream: stream.to_owned(), current: None, events }
    }

    /// Notes the schema id of a decoded message.
    #[inline]
    pub fn see(&mut self, id: u32) {
        if self.current == Some(id) {
            return;
        }
        if let Some(from) = self.current {
            tracing::info!(stream = %self.stream, from, to = id, "schema change: messages now use another schema id");
            if let Some(events) = &self.events {
                events.schema_changed(&self.stream, from, id);
            }
        }
        self.current = Some(id);
    }
}

/// One monitored value of the held row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Missing,
    Number(f64),
    /// A byte range of [`Row::text`].
    Text(u32, u32),
    Invalid,
}

/// The held record: one cell per monitored feature (in feature order) and the event
/// time. Text is copied into one reused buffer, since the message is gone by the
/// time the row is folded.
#[derive(Debug, Default)]
pub struct Row {
    pub cells: Vec<Cell>,
    /// `cells[i]` goes to the sink as feature `features[i]`.
    pub features: Vec<usize>,
    pub kinds: Vec<FeatureKind>,
    pub text: String,
    pub event: Option<Result<i64, ()>>,
}

impl Row {
    pub fn new(features: Vec<usize>, kinds: Vec<FeatureKind>) -> Row {
        Row { cells: vec![Cell::Missing; features.len()], features, kinds, text: String::new(), event: None }
    }

    /// Empties the row for the next message: every value missing until read.
    #[inline]
    pub fn clear(&mut self) {
        self.cells.fill(Cell::Missing);
        self.text.clear();
        self.event = None;
    }

    /// Stores a number for feature slot `slot`, as its kind wants it.
    #[inline]
    pub fn number(&mut self, slot: usize, x: f64, as_text: impl FnOnce(&mut String)) {
        self.cells[slot] = match self.kinds[slot] {
            FeatureKind::Numeric => Cell::Number(x),
            FeatureKind::Categorical => self.push_with(as_text),
        };
    }

    /// Stores text for slot `slot`: a category, or invalid for a numeric feature.
    #[inline]
    pub fn text(&mut self, slot: usize, value: &str) {
        self.cells[slot] = match self.kinds[slot] {
            FeatureKind::Numeric => Cell::Invalid,
            FeatureKind::Categorical => self.push_with(|t| t.push_str(value)),
        };
    }

    fn push_with(&mut self, write: impl FnOnce(&mut String)) -> Cell {
        let start = self.text.len();
        write(&mut self.text);
        match (u32::try_from(start), u32::try_from(self.text.len())) {
            (Ok(a), Ok(b)) => Cell::Text(a, b),
            _ => Cell::Invalid,
        }
    }

    /// Folds the row into `sink` as one record.
    #[inline]
    pub fn fold<S: ValueSink>(&self, sink: &mut S) {
        sink.add_records(1);
        for (cell, &feature) in self.cells.iter().zip(&self.features) {
            match *cell {
                Cell::Missing => sink.missing(feature),
                Cell::Number(x) => sink.numeric(feature, x),
                Cell::Text(a, b) => match self.text.get(a as usize..b as usize) {
                    Some(s) => sink.category(feature, s),
                    None => sink.invalid(feature),
                },
                Cell::Invalid => sink.invalid(feature),
            }
        }
    }
}

/// The rows of many decoded messages, column by column (one column per monitored
/// feature), held until the stream folds them: feature by feature, so each feature's
/// sketch stays in cache while its column is folded.
#[derive(Debug, Default)]
pub struct Rows {
    columns: Vec<Vec<Cell>>,
    text: String,
    times: Vec<Option<Result<i64, ()>>>,
}

impl Rows {
    /// Appends the held record of `row`.
    #[inline]
    pub fn push(&mut self, row: &Row) {
        if self.columns.len() != row.cells.len() {
            self.columns.resize_with(row.cells.len(), Vec::new);
        }
        let base = self.text.len();
        self.text.push_str(&row.text);
        for (column, cell) in self.columns.iter_mut().zip(&row.cells) {
            column.push(match *cell {
                Cell::Text(a, b) => {
                    match (u32::try_from(a as usize + base), u32::try_from(b as usize + base)) {
                        (Ok(a), Ok(b)) => Cell::Text(a, b),
                        _ => Cell::Invalid,
                    }
                }
                other => other,
            });
        }
        self.times.push(row.event);
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    pub fn clear(&mut self) {
        self.columns.iter_mut().for_each(Vec::clear);
        self.text.clear();
        self.times.clear();
    }

    pub fn event_time_ms(&self, row: usize) -> Option<Result<i64, ()>> {
        self.times.get(row).copied().flatten()
    }

    /// Folds rows `rows` into `sink`, feature by feature; `features[i]` is column `i`'s
    /// feature.
    pub fn fold<S: ValueSink>(&self, rows: std::ops::Range<usize>, features: &[usize], sink: &mut S) {
        sink.add_records(rows.len() as u64);
        // Numbers go to the sink in slices (one sketch lookup per slice), as JSON's
        // fold does; missing and invalid values are counts, so taking them out of the
        // numbers' order changes nothing, and the numbers keep theirs.
        let mut numbers = [0.0f64; 128];
        for (column, &feature) in self.columns.iter().zip(features) {
            let mut held = 0;
            for cell in column.get(rows.clone()).unwrap_or(&[]) {
                match *cell {
                    Cell::Number(x) => {
                        numbers[held] = x;
                        held += 1;
                        if held == numbers.len() {
                            sink.numeric_slice(feature, &numbers);
                            held = 0;
                        }
                    }
                    Cell::Missing => sink.missing(feature),
                    Cell::Text(a, b) => match self.text.get(a as usize..b as usize) {
                        Some(s) => sink.category(feature, s),
                        None => sink.invalid(feature),
                    },
                    Cell::Invalid => sink.invalid(feature),
                }
            }
            if held > 0 {
                sink.numeric_slice(feature, &numbers[..held]);
            }
        }
    }
}

/// Splits a feature path into its steps: `/user/country` (a JSON pointer, with `~1`
/// for `/` and `~0` for `~` inside a name) or a bare name (one step).
pub fn path_steps(path: &str) -> Vec<String> {
    match path.strip_prefix('/') {
        None => vec![path.to_owned()],
        Some(rest) => rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect(),
    }
}

/// Epoch milliseconds from RFC 3339 text (UTC or a numeric offset).
pub(crate) fn epoch_ms_from_text(text: &str) -> Result<i64, ()> {
    let bytes = text.as_bytes();
    let mut offset_minutes = 0i64;
    let mut stamp = text;
    if bytes.len() > 6 && bytes[bytes.len() - 3] == b':' {
        let sign = match bytes[bytes.len() - 6] {
            b'+' => 1,
            b'-' => -1,
            _ => 0,
        };
        if sign != 0 {
            let two = |i: usize| -> Result<i64, ()> {
                match (bytes[i], bytes[i + 1]) {
                    (a @ b'0'..=b'9', b @ b'0'..=b'9') => Ok(i64::from(a - b'0') * 10 + i64::from(b - b'0')),
                    _ => Err(()),
                }
            };
            let (hours, minutes) = (two(bytes.len() - 5)?, two(bytes.len() - 2)?);
            if hours > 23 || minutes > 59 {
                return Err(());
            }
            offset_minutes = sign * (hours * 60 + minutes);
            stamp = text.get(..text.len() - 6).ok_or(())?;
        }
    }
    let time = humantime::parse_rfc3339_weak(stamp).map_err(|_| ())?;
    let since = time.duration_since(std::time::UNIX_EPOCH).map_err(|_| ())?;
    let utc_ms = i64::try_from(since.as_millis()).map_err(|_| ())?;
    utc_ms.checked_sub(offset_minutes * 60_000).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_and_wrong_magic_is_refused() {
        assert_eq!(split_frame(&[0, 0, 0, 1, 2, 9]), Some((258, &[9u8][..])));
        assert_eq!(split_frame(&[0, 0, 0, 1, 2]), Some((258, &[][..])));
        assert_eq!(split_frame(&[1, 0, 0, 1, 2, 9]), None);
        assert_eq!(split_frame(&[0, 0, 1]), None);
    }

    #[test]
    fn paths_are_json_pointers_or_names() {
        assert_eq!(path_steps("/user/country"), ["user", "country"]);
        assert_eq!(path_steps("a~1b/c"), ["a~1b/c"]);
        assert_eq!(path_steps("/a~1b/~0c"), ["a/b", "~c"]);
    }

    #[test]
    fn a_schema_change_is_told_once() {
        let events = Arc::new(RecordedSchemaEvents::default());
        let mut tracker = SchemaTracker::new("s", Some(events.clone()));
        for id in [1, 1, 2, 2, 2, 1] {
            tracker.see(id);
        }
        assert_eq!(*events.0.lock().unwrap(), vec![("s".into(), 1, 2), ("s".into(), 2, 1)]);
    }

    #[test]
    fn event_time_text() {
        assert_eq!(epoch_ms_from_text("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(epoch_ms_from_text("1970-01-01T01:00:01+01:00"), Ok(1000));
        assert!(epoch_ms_from_text("yesterday").is_err());
    }
}
