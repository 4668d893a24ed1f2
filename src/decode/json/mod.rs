//! JSON records into sketches: this module owns the decoding of one JSON message (a
//! Kafka record value) into the values of the monitored features, addressed by RFC 6901
//! JSON pointers, following the spec's "Which values take part" and "Categorical
//! features" rules.
//!
//! It sits on the per-message hot path, so a record is parsed once, streaming, with keys
//! routed through a trie of the configured pointers; unmonitored values are validated
//! and skipped without being built, and the captured values go into scratch buffers
//! reused from record to record (no allocation per record in the steady state). A
//! record is held by the decoder between [`JsonDecoder::decode`] and
//! [`JsonDecoder::apply`], so a record that turns out malformed halfway through never
//! reaches a sink.
//!
//! Three parses, each tried only when the one before declined:
//! 1. a hand-written scanner (`scan`) for the common record, about 1.5 times as fast
//!    as serde_json driven through serde's visitors on the benchmark's records; it first
//!    replays the layout of the previous records (the same keys in the same order with
//!    the same spacing: compare the bytes between values, read the values), which takes
//!    the benchmark's records at serde_json's skim-only rate, and scans member by
//!    member when the layout does not fit;
//! 2. serde_json's streaming `Deserializer` with `DeserializeSeed`s, which decides every
//!    record the scanner declines (it is the reference: the scanner accepts nothing
//!    that this path would reject or read differently, which the tests check);
//! 3. a tolerant re-parse for records strict JSON refuses but the spec wants counted:
//!    Python's bare `NaN`/`Infinity`/`-Infinity`, and numbers beyond f64 where an
//!    object was expected.

use super::{Decoder, DecoderSetupError, EventTime, FieldBinding, Message, Refusal};
use crate::config::StreamConfig;
use crate::stats::settings::FeatureKind;
use crate::stats::sketch::ValueSink;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

/// The most segments a pointer may have. Decoding recurses once per segment, so this
/// keeps the stack bounded by the configuration and well under serde_json's own
/// recursion limit (128), whatever the input.
pub const MAX_POINTER_SEGMENTS: usize = 64;

/// A monitored field: where it is in the record, which feature it feeds and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField {
    /// An RFC 6901 JSON pointer through object members, e.g. `/age` or
    /// `/user/country`; `~1` stands for `/` and `~0` for `~` inside a key.
    pub pointer: String,
    /// The feature's position in the reference (the index given to the sink).
    pub feature: usize,
    /// How the value is read: a number, or a category taken by its text.
    pub kind: FeatureKind,
}

/// Why a set of [`JsonField`]s (plus the event-time pointer) cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonFieldsError {
    /// The pointer is not valid RFC 6901 syntax, or is too deep.
    #[error("JSON pointer {pointer:?}: {problem}")]
    Syntax {
        /// The pointer as configured.
        pointer: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Two fields read the same place.
    #[error("JSON pointer {pointer:?} is configured for two fields")]
    DuplicatePointer {
        /// The pointer as configured.
        pointer: String,
    },
    /// One pointer names a value and another goes inside that value.
    #[error("JSON pointer {inner:?} goes inside {outer:?}, which is itself a monitored value")]
    Overlap {
        /// The pointer to the monitored value.
        outer: String,
        /// The pointer that goes inside it.
        inner: String,
    },
    /// Two fields feed the same feature, which would count it twice per record.
    #[error("JSON pointers {first:?} and {second:?} both feed feature {feature}")]
    DuplicateFeature {
        /// The feature index.
        feature: usize,
        /// The first pointer feeding it.
        first: String,
        /// The second pointer feeding it.
        second: String,
    },
}

/// Why a message was rejected as a whole. A rejected record is not counted anywhere
/// but in the caller's error metrics, labelled with [`RecordError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The payload is empty or only whitespace (e.g. a tombstone).
    #[error("empty payload")]
    Empty,
    /// The payload is not JSON (syntax error, truncated, invalid UTF-8 in a monitored
    /// value, trailing garbage).
    #[error("malformed JSON: {message}")]
    Malformed {
        /// serde_json's description, with line and column.
        message: String,
    },
    /// The payload is JSON but its top level is not an object.
    #[error("the record is not a JSON object")]
    NotAnObject,
}

impl RecordError {
    /// A short snake_case label from a fixed set, fit for a Prometheus label value.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Empty => "empty",
            RecordError::Malformed { .. } => "malformed_json",
            RecordError::NotAnObject => "not_an_object",
        }
    }

    fn malformed(e: serde_json::Error) -> RecordError {
        RecordError::Malformed { message: e.to_string() }
    }
}

/// Decodes JSON messages into feature values, reusing its buffers from one message to
/// the next. One decoder per consuming thread.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    plan: Plan,
    record: Record,
    /// Whether `record` holds a successfully decoded message.
    has_record: bool,
    /// The payload with non-standard tokens blanked out, for the fallback parse.
    rewritten: Vec<u8>,
    /// Where the fallback blanked out tokens, in payload offsets, ascending.
    marks: Vec<(usize, NonFinite)>,
    /// The layout of recent records, which the scanner tries first.
    layout: scan::Layout,
}

impl JsonDecoder {
    /// Compiles the pointers of `fields` and of the optional event-time field into a
    /// decoder. The event-time pointer may coincide with a field's pointer.
    pub fn new(fields: &[JsonField], event_time: Option<&str>) -> Result<Self, JsonFieldsError> {
        let plan = Plan::new(fields, event_time)?;
        let record = Record {
            values: vec![Captured::Absent; plan.fields.len()],
            event: Captured::Absent,
            text: String::new(),
            stamps: vec![0; plan.nodes.len()],
            generation: 0,
        };
        Ok(JsonDecoder {
            plan,
            record,
            has_record: false,
            rewritten: Vec::new(),
            marks: Vec::new(),
            layout: scan::Layout::default(),
        })
    }

    /// Parses one message. On `Ok` the record is held until the next `decode`, for
    /// [`apply`](Self::apply) and [`event_time_ms`](Self::event_time_ms); on `Err` the
    /// decoder holds no record, so nothing of it can reach a sink.
    pub fn decode(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        self.decode_with(payload, true)
    }

    /// `fast: false` skips the scanner, for tests that compare the two paths.
    fn decode_with(&mut self, payload: &[u8], fast: bool) -> Result<(), RecordError> {
        self.has_record = false;
        match payload.iter().find(|b| !is_json_whitespace(**b)) {
            None => return Err(RecordError::Empty),
            Some(b'{') => {}
            Some(_) => return Err(self.classify_non_object(payload)),
        }
        self.record.start();
        if fast && scan::record_with_layout(&self.plan, &mut self.record, &mut self.layout, payload).is_some()
        {
            self.has_record = true;
            return Ok(());
        }
        // serde_json decides every record the scanner declined, from a clean slate.
        self.record.start();
        let strict = parse_object(&self.plan, &mut self.record, payload, None);
        let Err(error) = strict else {
            self.has_record = true;
            return Ok(());
        };
        // The slow path, taken only by records strict parsing refused: either Python's
        // bare NaN/Infinity tokens, or a number beyond f64 where a container was
        // expected. Both re-parse in tolerant mode, where every monitored value is
        // first taken as raw text so that serde_json never has to materialise a number.
        let found = find_non_standard(payload, &mut self.rewritten, &mut self.marks);
        let retry = if found {
            &self.rewritten[..]
        } else if error.to_string().starts_with("number out of range") {
            self.marks.clear();
            payload
        } else {
            return Err(RecordError::malformed(error));
        };
        self.record.start();
        let tolerant = Tolerant { base: retry.as_ptr().addr(), marks: &self.marks };
        match parse_object(&self.plan, &mut self.record, retry, Some(tolerant)) {
            Ok(()) => {
                self.has_record = true;
                Ok(())
            }
            Err(e) => Err(RecordError::malformed(e)),
        }
    }

    /// The event time of the last decoded record: `None` when no event-time field is
    /// configured, no record is held, or the field is absent or null; `Some(Err(()))`
    /// when it holds something that is not a time; otherwise milliseconds since the
    /// Unix epoch, from a JSON number (epoch milliseconds, fraction floored) or an
    /// RFC 3339 string (`Z` or a numeric offset; a missing zone is taken as UTC).
    pub fn event_time_ms(&self) -> Option<Result<i64, ()>> {
        if !self.has_record {
            return None;
        }
        match &self.record.event {
            Captured::Absent | Captured::Null => None,
            Captured::Number(x) => Some(epoch_ms_from_number(*x)),
            Captured::Text(start, end) => {
                Some(self.record.text.get(*start..*end).ok_or(()).and_then(epoch_ms_from_rfc3339))
            }
            Captured::Invalid => Some(Err(())),
        }
    }

    /// Hands the last decoded record to `sink`: `add_records(1)`, then exactly one call
    /// per configured field. Does nothing when no record is held (nothing decoded yet,
    /// or the last `decode` failed).
    pub fn apply<S: ValueSink>(&self, sink: &mut S) {
        if !self.has_record {
            return;
        }
        sink.add_records(1);
        apply_values(&self.plan.fields, &self.record.values, &self.record.text, sink);
    }

    /// Tells a payload whose top level is not an object from one that is not JSON.
    fn classify_non_object(&mut self, payload: &[u8]) -> RecordError {
        match serde_json::from_slice::<IgnoredAny>(payload) {
            Ok(_) => RecordError::NotAnObject,
            Err(e) => {
                if find_non_standard(payload, &mut self.rewritten, &mut self.marks)
                    && serde_json::from_slice::<IgnoredAny>(&self.rewritten).is_ok()
                {
                    RecordError::NotAnObject
                } else {
                    RecordError::malformed(e)
                }
            }
        }
    }
}

fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Epoch milliseconds from a JSON number (the fraction floored).
pub(crate) fn epoch_ms_from_number(x: f64) -> Result<i64, ()> {
    let ms = x.floor();
    // i64::MAX as f64 rounds up to 2^63, which is already out of range.
    if ms.is_finite() && ms >= i64::MIN as f64 && ms < i64::MAX as f64 { Ok(ms as i64) } else { Err(()) }
}

/// Epoch milliseconds from RFC 3339 text. humantime only knows UTC (`Z`, `+00:00` or
/// no zone), so a numeric offset is split off here and applied to the UTC reading of
/// the rest.
pub(crate) fn epoch_ms_from_rfc3339(text: &str) -> Result<i64, ()> {
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
            let digits = |i: usize| -> Result<i64, ()> {
                match (bytes[i], bytes[i + 1]) {
                    (a @ b'0'..=b'9', b @ b'0'..=b'9') => Ok(i64::from(a - b'0') * 10 + i64::from(b - b'0')),
                    _ => Err(()),
                }
            };
            let hours = digits(bytes.len() - 5)?;
            let minutes = digits(bytes.len() - 2)?;
            if hours > 23 || minutes > 59 {
                return Err(());
            }
            offset_minutes = sign * (hours * 60 + minutes);
            stamp = text.get(..text.len() - 6).ok_or(())?;
        }
    }
    let time = humantime::parse_rfc3339_weak(stamp).map_err(|_| ())?;
    let since: Duration = time.duration_since(UNIX_EPOCH).map_err(|_| ())?;
    let utc_ms = i64::try_from(since.as_millis()).map_err(|_| ())?;
    utc_ms.checked_sub(offset_minutes * 60_000).ok_or(())
}

mod parse;
mod plan;
mod record;
mod scan;
#[cfg(test)]
mod tests;

use parse::*;
use plan::*;
use record::*;

/// One record's captured values to `sink`, one call per configured field.
fn apply_values<S: ValueSink>(fields: &[FieldTarget], values: &[Captured], text: &str, sink: &mut S) {
    for (field, value) in fields.iter().zip(values) {
        let feature = field.feature;
        match value {
            Captured::Absent | Captured::Null => sink.missing(feature),
            Captured::Number(x) => sink.numeric(feature, *x),
            Captured::Text(start, end) => match text.get(*start..*end) {
                Some(text) => sink.category(feature, text),
                None => sink.invalid(feature),
            },
            Captured::Invalid => sink.invalid(feature),
        }
    }
}

/// The JSON format of a stream: one JSON object per message, or, with
/// `[streams.json] records_path`, an array of objects (a batch of records) at that
/// JSON pointer (`""`: the message is the array).
///
/// Decoded records are appended to columns (one per field) until the stream folds
/// them: folding a batch feature by feature keeps each feature's sketch in cache,
/// where folding record by record walks every sketch once per record.
pub struct JsonMessages {
    decoder: JsonDecoder,
    /// The segments of `records_path`, when messages hold arrays of records.
    records_path: Option<Vec<String>>,
    rows: CapturedRows,
}

/// The captured values of many records, a typed column per field (numbers as `f64`,
/// categories as ranges of one text buffer), reused from batch to batch. Typed, so a
/// staged numeric value takes 8 bytes instead of a 24-byte [`Captured`], and a fold
/// hands runs of a numeric column to the sink in place, with no copy and no match per
/// value.
struct CapturedRows {
    /// Per numeric field: its index in the plan's fields, and its column.
    numbers: Vec<(usize, Vec<f64>)>,
    /// Per categorical field: its index, and a range of `text` per row (or
    /// [`NO_TEXT`] with [`MISSING_MARK`] / [`INVALID_MARK`] as its end).
    texts: Vec<(usize, Vec<(usize, usize)>)>,
    text: String,
    /// Per row, only when the plan reads an event time (otherwise every row has none).
    times: Vec<EventTime>,
    event_time: bool,
    rows: usize,
}

/// A numeric column's missing (absent or null) value: a NaN whose payload no parse
/// produces (parsed NaNs are `f64::NAN`), so it is told from a NaN datum, which the
/// sketches count as non-finite.
const MISSING_BITS: u64 = 0x7FF4_D1F7_0000_0000;
/// A numeric column's invalid value (the wrong type for a number); differs from
/// [`MISSING_BITS`] in the lowest bit only, so one comparison finds both.
const INVALID_BITS: u64 = MISSING_BITS | 1;
/// The start of a categorical row without text; its end says why.
const NO_TEXT: usize = usize::MAX;
const MISSING_MARK: usize = 0;
const INVALID_MARK: usize = 1;

impl CapturedRows {
    fn new(plan: &Plan) -> CapturedRows {
        let mut numbers = Vec::new();
        let mut texts = Vec::new();
        for (i, field) in plan.fields.iter().enumerate() {
            match field.kind {
                FeatureKind::Numeric => numbers.push((i, Vec::new())),
                FeatureKind::Categorical => texts.push((i, Vec::new())),
            }
        }
        CapturedRows {
            numbers,
            texts,
            text: String::new(),
            times: Vec::new(),
            event_time: plan.reads_event_time(),
            rows: 0,
        }
    }

    fn len(&self) -> usize {
        self.rows
    }

    /// Appends the record `decoder` holds.
    fn push(&mut self, decoder: &JsonDecoder) {
        let shift = self.text.len();
        self.text.push_str(&decoder.record.text);
        let values = &decoder.record.values;
        for (field, column) in &mut self.numbers {
            // A numeric field is only ever captured as a number, missing or invalid;
            // text would be counted invalid by every sink, as it is here.
            column.push(match values.get(*field) {
                Some(Captured::Number(x)) => *x,
                Some(Captured::Absent | Captured::Null) | None => f64::from_bits(MISSING_BITS),
                Some(Captured::Text(..) | Captured::Invalid) => f64::from_bits(INVALID_BITS),
            });
        }
        for (field, column) in &mut self.texts {
            // Likewise a categorical field holds text, missing or invalid (a number
            // would be counted invalid by every sink).
            column.push(match values.get(*field) {
                Some(Captured::Text(start, end)) => (start + shift, end + shift),
                Some(Captured::Absent | Captured::Null) | None => (NO_TEXT, MISSING_MARK),
                Some(Captured::Number(_) | Captured::Invalid) => (NO_TEXT, INVALID_MARK),
            });
        }
        if self.event_time {
            self.times.push(decoder.event_time_ms());
        }
        self.rows += 1;
    }

    /// Back to `rows` rows and `text` bytes of text (a message refused halfway).
    fn truncate(&mut self, rows: usize, text: usize) {
        for (_, column) in &mut self.numbers {
            column.truncate(rows);
        }
        for (_, column) in &mut self.texts {
            column.truncate(rows);
        }
        self.times.truncate(rows);
        self.text.truncate(text);
        self.rows = self.rows.min(rows);
    }

    fn event_time_ms(&self, row: usize) -> EventTime {
        if row >= self.rows {
            return None;
        }
        self.times.get(row).copied().flatten()
    }
}

impl JsonMessages {
    pub fn new(stream: &StreamConfig, fields: &[FieldBinding]) -> Result<JsonMessages, DecoderSetupError> {
        let json_fields: Vec<JsonField> = fields
            .iter()
            .map(|f| JsonField {
                pointer: f
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("/{}", f.name.replace('~', "~0").replace('/', "~1"))),
                feature: f.feature,
                kind: f.kind,
            })
            .collect();
        let decoder = JsonDecoder::new(&json_fields, stream.event_time_field.as_deref())
            .map_err(|e| DecoderSetupError { key: "fields".into(), message: e.to_string() })?;
        let records_path = match stream.json.as_ref().and_then(|j| j.records_path.as_deref()) {
            None => None,
            Some("") => Some(Vec::new()),
            Some(pointer) => Some(parse_pointer(pointer).map_err(|e| DecoderSetupError {
                key: "json.records_path".into(),
                message: e.to_string(),
            })?),
        };
        let rows = CapturedRows::new(&decoder.plan);
        Ok(JsonMessages { decoder, records_path, rows })
    }

    /// Decodes every record of an array message; a record that cannot be decoded
    /// refuses the whole message (the caller rolls its rows back).
    fn decode_array(&mut self, payload: &[u8], path: &[String]) -> Result<usize, Refusal> {
        let malformed = |e: serde_json::Error| Refusal::new("malformed_json", format!("malformed JSON: {e}"));
        let mut raw: &RawValue = serde_json::from_slice(payload).map_err(malformed)?;
        for (depth, segment) in path.iter().enumerate() {
            let here = || format!("/{}", path[..depth].join("/"));
            let object: FxHashMap<String, &RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
                Refusal::new("not_an_array", format!("records_path: {} is not an object", here()))
            })?;
            raw = object.get(segment.as_str()).copied().ok_or_else(|| {
                Refusal::new("not_an_array", format!("records_path: no member {segment:?} at {}", here()))
            })?;
        }
        let records: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|_| Refusal::new("not_an_array", "records_path does not hold an array"))?;
        for (i, record) in records.iter().enumerate() {
            self.decoder
                .decode(record.get().as_bytes())
                .map_err(|e| Refusal::new(e.reason(), format!("record {i} of the array: {e}")))?;
            self.rows.push(&self.decoder);
        }
        Ok(records.len())
    }

    fn fold<S: ValueSink>(&self, rows: Range<usize>, sink: &mut S) {
        sink.add_records(rows.len() as u64);
        let fields = &self.decoder.plan.fields;
        // Numbers go to the sink in runs between missing and invalid values, in place
        // (one sketch lookup per run, the update loop inlined); missing and invalid
        // values are counts, so taking them out of the numbers' order changes
        // nothing, and the numbers keep theirs. Features are independent, so numeric
        // columns going before categorical ones changes nothing either.
        for (field, column) in &self.rows.numbers {
            let Some(feature) = fields.get(*field).map(|f| f.feature) else { continue };
            let values = column.get(rows.clone()).unwrap_or(&[]);
            let mut run = 0;
            for (i, x) in values.iter().enumerate() {
                let bits = x.to_bits();
                if bits | 1 == INVALID_BITS {
                    if run < i {
                        sink.numeric_slice(feature, &values[run..i]);
                    }
                    if bits == MISSING_BITS {
                        sink.missing(feature);
                    } else {
                        sink.invalid(feature);
                    }
                    run = i + 1;
                }
            }
            if run < values.len() {
                sink.numeric_slice(feature, &values[run..]);
            }
        }
        for (field, column) in &self.rows.texts {
            let Some(feature) = fields.get(*field).map(|f| f.feature) else { continue };
            for &(start, end) in column.get(rows.clone()).unwrap_or(&[]) {
                if start == NO_TEXT {
                    if end == MISSING_MARK {
                        sink.missing(feature);
                    } else {
                        sink.invalid(feature);
                    }
                    continue;
                }
                match self.rows.text.get(start..end) {
                    Some(text) => sink.category(feature, text),
                    None => sink.invalid(feature),
                }
            }
        }
    }
}

impl<W: ValueSink, R: ValueSink> Decoder<W, R> for JsonMessages {
    fn reasons(&self) -> &'static [&'static str] {
        if self.records_path.is_some() {
            &["empty", "malformed_json", "not_an_object", "not_an_array"]
        } else {
            &["empty", "malformed_json", "not_an_object"]
        }
    }

    fn decode(&mut self, message: &Message<'_>) -> Result<usize, Refusal> {
        let (rows, text) = (self.rows.len(), self.rows.text.len());
        let decoded = match self.records_path.take() {
            Some(path) => {
                let decoded = self.decode_array(message.payload, &path);
                self.records_path = Some(path);
                decoded
            }
            None => match self.decoder.decode(message.payload) {
                Ok(()) => {
                    self.rows.push(&self.decoder);
                    Ok(1)
                }
                Err(e) => Err(Refusal::new(e.reason(), e.to_string())),
            },
        };
        if decoded.is_err() {
            self.rows.truncate(rows, text);
        }
        decoded
    }

    fn appends(&self) -> bool {
        true
    }

    fn clear(&mut self) {
        self.rows.truncate(0, 0);
    }

    fn event_time_ms(&self, row: usize) -> EventTime {
        self.rows.event_time_ms(row)
    }

    fn fold_window(&self, rows: Range<usize>, sink: &mut W) {
        self.fold(rows, sink);
    }

    fn fold_reference(&self, rows: Range<usize>, sink: &mut R) {
        self.fold(rows, sink);
    }
}
