//! Protobuf messages: the Confluent wire format (magic byte 0, a 4-byte big-endian
//! schema id, the message-index list as zigzag varints, then the message), with the
//! schema by id from a [`SchemaSource`] (`.proto` text compiled at run time with
//! `protox`, or the base64 serialized `FileDescriptorProto` that confluent-kafka's
//! serializer registers), or bare messages of one type from a descriptor-set file.
//!
//! Only the monitored scalar fields are read. Per (schema id, message index) the
//! monitored paths (`/user/country`, by field name) are bound to field numbers and
//! compiled into a [`MessagePlan`]: a table by tag of what to read; every other field
//! is skipped by its wire type without being looked at. Presence follows the
//! language: a field with presence (proto2, `optional`, a oneof member, a message) is
//! missing when absent; a proto3 scalar without presence is its default (0, "", the
//! first enum value), since that is what the writer meant. Repeated and map fields
//! cannot be monitored (invalid when present).
//!
//! Bounds: lengths are checked against the bytes left before anything is read,
//! message nesting and groups are limited to [`MAX_DEPTH`], nothing is allocated per
//! message beyond the reused row text and index list.

mod descriptors;

use super::confluent::{
    Cell, Row, Rows, SchemaKind, SchemaLookupError, SchemaSource, SchemaTracker, epoch_ms_from_text,
    path_steps, split_frame,
};
use super::{DecodeContext, Decoder, DecoderSetupError, EventTime, FieldBinding, Message, Refusal};
use crate::config::StreamConfig;
use crate::stats::settings::FeatureKind;
use crate::stats::sketch::ValueSink;
use prost_reflect::{Kind, MessageDescriptor};
use rustc_hash::FxHashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

pub use descriptors::{message_from_descriptor_set, message_from_registered};

/// Every reason a Confluent-framed Protobuf message can be refused for.
pub const REASONS: [&str; 4] =
    ["wrong_magic_byte", "unknown_schema", "unusable_schema", "malformed_protobuf"];
/// With a descriptor set (`protobuf.descriptor_set`), only this.
pub const FIXED_REASONS: [&str; 1] = ["malformed_protobuf"];

/// Most (schema id, message index) plans remembered per stream.
pub const MAX_SCHEMAS: usize = 4096;
/// Deepest nesting of messages and groups read or skipped.
pub const MAX_DEPTH: usize = 64;

/// Where a message's type comes from.
pub enum ProtobufSchemas {
    /// Confluent framing; the schema by id from the registry.
    Registry(Arc<dyn SchemaSource>),
    /// Bare messages of this type (from a descriptor set file).
    Fixed(MessageDescriptor),
}

/// A monitored field: its path (`/a/b` or a bare name) and what it feeds.
#[derive(Debug, Clone)]
pub struct ProtobufField {
    pub path: String,
    pub feature: usize,
    pub kind: FeatureKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Slot(u32),
    EventTime,
}

/// The scalar types, by how they are read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    /// An enum: its value names by number.
    Enum(u32),
    /// `google.protobuf.Timestamp` (read as an event time; invalid as a feature).
    Timestamp,
    /// Bytes, repeated, map or a message: present means invalid.
    Unsupported,
}

impl Scalar {
    fn wire_type(self) -> Option<u8> {
        Some(match self {
            Scalar::Double | Scalar::Fixed64 | Scalar::Sfixed64 => 1,
            Scalar::Float | Scalar::Fixed32 | Scalar::Sfixed32 => 5,
            Scalar::String | Scalar::Timestamp => 2,
            Scalar::Unsupported => return None,
            _ => 0,
        })
    }
}

#[derive(Debug)]
enum FieldStep {
    Leaf { scalar: Scalar, targets: Box<[Target]> },
    Message(Box<MessagePlan>),
}

/// What to read of one message type: steps by field number, and the defaults of the
/// monitored fields without presence (written when the message is entered).
#[derive(Debug, Default)]
pub struct MessagePlan {
    by_tag: Vec<Option<FieldStep>>,
    /// Slot and default value, for proto3 scalars without presence.
    defaults: Vec<(Target, Default)>,
}

#[derive(Debug, Clone)]
enum Default {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// The compiled plan of one schema id and message index, or why it cannot be used.
struct Compiled {
    plan: Result<MessagePlan, Refusal>,
}

/// The decoder of one stream's Protobuf messages.
pub struct ProtobufDecoder {
    source: Option<Arc<dyn SchemaSource>>,
    wanted: Vec<(Vec<String>, Target)>,
    /// Enum value names by enum (index = `Scalar::Enum`'s number).
    enums: Vec<FxHashMap<i32, String>>,
    by_key: FxHashMap<(u32, Vec<u32>), usize>,
    compiled: Vec<Compiled>,
    /// Key and compiled index of the last message.
    last: Option<(u32, Vec<u32>, usize)>,
    indexes: Vec<u32>,
    /// Descriptors by schema id (one compile per id, whatever the message index).
    files: FxHashMap<u32, Result<prost_reflect::FileDescriptor, Refusal>>,
    tracker: SchemaTracker,
    row: Row,
    /// Rows of the messages decoded since the stream last folded (the trait's rows).
    held: Rows,
}

impl ProtobufDecoder {
    pub fn new(
        schemas: ProtobufSchemas,
        fields: &[ProtobufField],
        event_time: Option<&str>,
        tracker: SchemaTracker,
    ) -> Result<ProtobufDecoder, String> {
        let mut wanted: Vec<(Vec<String>, Target)> =
            fields.iter().enumerate().map(|(i, f)| (path_steps(&f.path), Target::Slot(i as u32))).collect();
        if let Some(path) = event_time {
            wanted.push((path_steps(path), Target::EventTime));
        }
        let row =
            Row::new(fields.iter().map(|f| f.feature).collect(), fields.iter().map(|f| f.kind).collect());
        let mut decoder = ProtobufDecoder {
            source: None,
            wanted,
            enums: Vec::new(),
            by_key: FxHashMap::default(),
            compiled: Vec::new(),
            last: None,
            indexes: Vec::new(),
            files: FxHashMap::default(),
            tracker,
            row,
            held: Rows::default(),
        };
        match schemas {
            ProtobufSchemas::Registry(source) => decoder.source = Some(source),
            ProtobufSchemas::Fixed(message) => {
                let plan = decoder.plan(&message);
                decoder.compiled.push(Compiled { plan: Ok(plan) });
                decoder.last = Some((0, Vec::new(), 0));
            }
        }
        Ok(decoder)
    }

    fn plan(&mut self, message: &MessageDescriptor) -> MessagePlan {
        let wanted: Vec<(Vec<String>, Target)> = self.wanted.clone();
        let refs: Vec<(&[String], Target)> = wanted.iter().map(|(s, t)| (&s[..], *t)).collect();
        self.compile(message, &refs, 0)
    }

    fn compile(
        &mut self,
        message: &MessageDescriptor,
        wanted: &[(&[String], Target)],
        depth: usize,
    ) -> MessagePlan {
        let mut plan = MessagePlan::default();
        if depth > MAX_DEPTH {
            return plan;
        }
        let mut names: Vec<&str> = wanted.iter().filter_map(|(s, _)| s.first().map(String::as_str)).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            // A path naming a field this message lacks stays missing.
            let Some(field) = message.get_field_by_name(name) else { continue };
            let here: Vec<Target> =
                wanted.iter().filter(|(s, _)| s.len() == 1 && s[0] == name).map(|(_, t)| *t).collect();
            let below: Vec<(&[String], Target)> = wanted
                .iter()
                .filter(|(s, _)| s.len() > 1 && s[0] == name)
                .map(|(s, t)| (&s[1..], *t))
                .collect();
            let tag = field.number() as usize;
            let step = if !here.is_empty() {
                let scalar = if field.is_list() || field.is_map() {
                    Scalar::Unsupported
                } else {
                    self.scalar(&field.kind())
                };
                if !field.supports_presence()
                    && let Some(default) = default_of(&field, scalar, &self.enums)
                {
                    plan.defaults.extend(here.iter().map(|&t| (t, default.clone())));
                }
                FieldStep::Leaf { scalar, targets: here.into() }
            } else {
                match field.kind() {
                    Kind::Message(inner) if !field.is_list() && !field.is_map() => {
                        FieldStep::Message(Box::new(self.compile(&inner, &below, depth + 1)))
                    }
                    // A path through a scalar or a list: missing.
                    _ => continue,
                }
            };
            if plan.by_tag.len() <= tag {
                plan.by_tag.resize_with(tag + 1, || None);
            }
            plan.by_tag[tag] = Some(step);
        }
        plan
    }

    fn scalar(&mut self, kind: &Kind) -> Scalar {
        match kind {
            Kind::Double => Scalar::Double,
            Kind::Float => Scalar::Float,
            Kind::Int32 => Scalar::Int32,
            Kind::Int64 => Scalar::Int64,
            Kind::Uint32 => Scalar::Uint32,
            Kind::Uint64 => Scalar::Uint64,
            Kind::Sint32 => Scalar::Sint32,
            Kind::Sint64 => Scalar::Sint64,
            Kind::Fixed32 => Scalar::Fixed32,
            Kind::Fixed64 => Scalar::Fixed64,
            Kind::Sfixed32 => Scalar::Sfixed32,
            Kind::Sfixed64 => Scalar::Sfixed64,
            Kind::Bool => Scalar::Bool,
            Kind::String => Scalar::String,
            Kind::Enum(e) => {
                self.enums.push(e.values().map(|v| (v.number(), v.name().to_owned())).collect());
                Scalar::Enum(self.enums.len() as u32 - 1)
            }
            Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => Scalar::Timestamp,
            Kind::Bytes | Kind::Message(_) => Scalar::Unsupported,
        }
    }

    /// The plan for the message at `self.indexes` of schema `id`.
    fn plan_for(&mut self, id: u32) -> Result<usize, Refusal> {
        let key = (id, self.indexes.clone());
        if let Some(&i) = self.by_key.get(&key) {
            return Ok(i);
        }
        if self.compiled.len() >= MAX_SCHEMAS || self.files.len() >= MAX_SCHEMAS {
            // Memory stays bounded whatever ids and index lists messages carry: start
            // over; the registry client keeps the good schemas.
            self.compiled.clear();
            self.by_key.clear();
            self.files.clear();
            self.last = None;
        }
        if !self.files.contains_key(&id) {
            let Some(source) = &self.source else {
                return Err(Refusal::new("unknown_schema", "no registry"));
            };
            let file = match source.schema(id) {
                Ok(s) if s.kind != SchemaKind::Protobuf => Err(Refusal::new(
                    "unusable_schema",
                    format!("schema id {id} is {:?}, not Protobuf", s.kind),
                )),
                Ok(s) => descriptors::file_from_registered(&s.text)
                    .map_err(|e| Refusal::new("unusable_schema", format!("schema id {id}: {e}"))),
                Err(SchemaLookupError::NotFound(_)) => {
                    Err(Refusal::new("unknown_schema", format!("schema id {id} is not in the registry")))
                }
                // Not remembered: the next message asks again.
                Err(e @ SchemaLookupError::Unavailable(_)) => {
                    return Err(Refusal::new(crate::decode::REGISTRY_UNAVAILABLE, e.to_string()));
                }
            };
            self.files.insert(id, file);
        }
        let plan = match &self.files[&id] {
            Err(refusal) => Err(refusal.clone()),
            Ok(file) => match descriptors::message_at(file, &self.indexes) {
                Some(message) => Ok(self.plan(&message)),
                None => Err(Refusal::new(
                    "unusable_schema",
                    format!("schema id {id} has no message at index {:?}", self.indexes),
                )),
            },
        };
        self.compiled.push(Compiled { plan });
        self.by_key.insert(key, self.compiled.len() - 1);
        Ok(self.compiled.len() - 1)
    }

    /// Decodes one message into the held row.
    pub fn decode(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        self.row.clear();
        let (index, body, id) = if self.source.is_none() {
            (0, payload, None)
        } else {
            let Some((id, rest)) = split_frame(payload) else {
                return Err(Refusal::new(
                    "wrong_magic_byte",
                    format!("first byte {:?}, not the Confluent framing's 0", payload.first()),
                ));
            };
            let mut cur = Cursor { bytes: rest, pos: 0 };
            read_indexes(&mut cur, &mut self.indexes).map_err(|Malformed(what)| {
                Refusal::new("malformed_protobuf", format!("message-index list: {what}"))
            })?;
            let body = &rest[cur.pos..];
            let index = match &self.last {
                Some((last, indexes, index)) if *last == id && *indexes == self.indexes => *index,
                _ => {
                    let index = self.plan_for(id)?;
                    self.last = Some((id, self.indexes.clone(), index));
                    index
                }
            };
            (index, body, Some(id))
        };
        let plan = match &self.compiled[index].plan {
            Ok(plan) => plan,
            Err(refusal) => return Err(refusal.clone()),
        };
        // A schema change is a switch between usable schemas (an unknown id is refused).
        if let Some(id) = id {
            self.tracker.see(id);
        }
        let mut cur = Cursor { bytes: body, pos: 0 };
        let result = read_message(plan, &self.enums, &mut cur, body.len(), &mut self.row, 0);
        result.map_err(|Malformed(what)| {
            self.row.clear();
            Refusal::new("malformed_protobuf", format!("{what} at byte {}", cur.pos))
        })
    }

    pub fn row(&self) -> &Row {
        &self.row
    }
}

impl ProtobufDecoder {
    /// The decoder of a `protobuf` stream: Confluent framing with the context's
    /// registry, or bare messages of `protobuf.message` from `protobuf.descriptor_set`
    /// (read here, once).
    pub fn for_stream(
        context: &DecodeContext,
        stream: &StreamConfig,
        fields: &[FieldBinding],
    ) -> Result<ProtobufDecoder, DecoderSetupError> {
        let options = stream.protobuf.clone().unwrap_or_default();
        let setup = |key: &str, message: String| DecoderSetupError { key: key.into(), message };
        let schemas = match (&options.descriptor_set, &context.schemas) {
            (Some(path), _) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| setup("protobuf.descriptor_set", format!("{}: {e}", path.display())))?;
                let name = options.message.as_deref().unwrap_or_default();
                ProtobufSchemas::Fixed(
                    message_from_descriptor_set(&bytes, name)
                        .map_err(|e| setup("protobuf.message", format!("{}: {e}", path.display())))?,
                )
            }
            (None, Some(source)) => ProtobufSchemas::Registry(source.clone()),
            (None, None) => {
                return Err(setup(
                    "format",
                    "Confluent-framed Protobuf needs a `[registry]` (or set `protobuf.descriptor_set`)"
                        .into(),
                ));
            }
        };
        let fields: Vec<ProtobufField> = fields
            .iter()
            .map(|f| ProtobufField {
                path: f.path.clone().unwrap_or_else(|| f.name.clone()),
                feature: f.feature,
                kind: f.kind,
            })
            .collect();
        let tracker = SchemaTracker::new(&stream.name, context.schema_events.clone());
        ProtobufDecoder::new(schemas, &fields, stream.event_time_field.as_deref(), tracker)
            .map_err(|e| setup("protobuf", e))
    }
}

impl<W: ValueSink, R: ValueSink> Decoder<W, R> for ProtobufDecoder {
    fn reasons(&self) -> &'static [&'static str] {
        if self.source.is_some() { &REASONS } else { &FIXED_REASONS }
    }

    fn decode(&mut self, message: &Message<'_>) -> Result<usize, Refusal> {
        ProtobufDecoder::decode(self, message.payload)?;
        self.held.push(&self.row);
        Ok(1)
    }

    fn appends(&self) -> bool {
        true
    }

    fn clear(&mut self) {
        self.held.clear();
    }

    fn event_time_ms(&self, row: usize) -> EventTime {
        self.held.event_time_ms(row)
    }

    fn fold_window(&self, rows: Range<usize>, sink: &mut W) {
        self.held.fold(rows, &self.row.features, sink);
    }

    fn fold_reference(&self, rows: Range<usize>, sink: &mut R) {
        self.held.fold(rows, &self.row.features, sink);
    }
}

fn default_of(
    field: &prost_reflect::FieldDescriptor,
    scalar: Scalar,
    enums: &[FxHashMap<i32, String>],
) -> Option<Default> {
    Some(match scalar {
        Scalar::String => Default::Text(String::new()),
        Scalar::Bool => Default::Bool(false),
        Scalar::Enum(e) => {
            let number = match field.default_value() {
                prost_reflect::Value::EnumNumber(n) => n,
                _ => 0,
            };
            Default::Text(enums[e as usize].get(&number).cloned().unwrap_or_else(|| number.to_string()))
        }
        Scalar::Timestamp | Scalar::Unsupported => return None,
        _ => Default::Number(0.0),
    })
}

/// Reads the message-index list: a zigzag count, then that many zigzag indexes; a
/// count of 0 means `[0]`, the first message of the file.
fn read_indexes(cur: &mut Cursor<'_>, out: &mut Vec<u32>) -> Result<(), Malformed> {
    out.clear();
    let count = zigzag(cur.varint()?);
    if count == 0 {
        out.push(0);
        return Ok(());
    }
    if !(1..=MAX_DEPTH as i64).contains(&count) {
        return Err(Malformed("bad count"));
    }
    for _ in 0..count {
        let i = zigzag(cur.varint()?);
        out.push(u32::try_from(i).map_err(|_| Malformed("negative index"))?);
    }
    Ok(())
}

fn zigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

struct Malformed(&'static str);

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&b) = self.bytes.get(self.pos) else { return Err(Malformed("truncated varint")) };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(Malformed("varint longer than 10 bytes"));
            }
        }
    }

    #[inline]
    fn take(&mut self, n: usize, end: usize) -> Result<&'a [u8], Malformed> {
        let stop = self.pos.checked_add(n).filter(|&e| e <= end).ok_or(Malformed("truncated field"))?;
        let out = &self.bytes[self.pos..stop];
        self.pos = stop;
        Ok(out)
    }

    #[inline]
    fn len(&mut self, end: usize) -> Result<usize, Malformed> {
        let n = self.varint()?;
        usize::try_from(n).ok().filter(|&n| n <= end.saturating_sub(self.pos)).ok_or(Malformed("bad length"))
    }
}

/// Reads the fields of a message up to byte `end`.
fn read_message(
    plan: &MessagePlan,
    enums: &[FxHashMap<i32, String>],
    cur: &mut Cursor<'_>,
    end: usize,
    row: &mut Row,
    depth: usize,
) -> Result<(), Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("nested too deeply"));
    }
    for (target, default) in &plan.defaults {
        let value = match default {
            Default::Number(x) => Value::Number(*x),
            Default::Text(s) => Value::Text(s),
            Default::Bool(b) => Value::Bool(*b),
        };
        store(row, *target, &value);
    }
    while cur.pos < end {
        let key = cur.varint()?;
        let wire = (key & 7) as u8;
        let tag = key >> 3;
        if tag == 0 || tag > 0x1FFF_FFFF {
            return Err(Malformed("bad field number"));
        }
        let step = usize::try_from(tag).ok().and_then(|t| plan.by_tag.get(t)).and_then(Option::as_ref);
        match step {
            None => skip(cur, wire, tag, end, depth)?,
            Some(FieldStep::Message(inner)) => {
                if wire != 2 {
                    skip(cur, wire, tag, end, depth)?;
                    continue;
                }
                let n = cur.len(end)?;
                let inner_end = cur.pos + n;
                read_message(inner, enums, cur, inner_end, row, depth + 1)?;
            }
            Some(FieldStep::Leaf { scalar, targets }) => {
                // A wire type other than the schema's (a packed list where a scalar was
                // expected, say) is not a value this field can have: invalid.
                let value = if scalar.wire_type() == Some(wire) {
                    read_scalar(*scalar, enums, cur, end)?
                } else {
                    skip(cur, wire, tag, end, depth)?;
                    Value::Other
                };
                for &t in targets.iter() {
                    store(row, t, &value);
                }
            }
        }
    }
    if cur.pos != end {
        return Err(Malformed("field runs past its message"));
    }
    Ok(())
}

enum Value<'a> {
    Number(f64),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Text(&'a str),
    TimestampMs(Result<i64, ()>),
    Other,
}

fn read_scalar<'a, 'b: 'a>(
    scalar: Scalar,
    enums: &'a [FxHashMap<i32, String>],
    cur: &mut Cursor<'b>,
    end: usize,
) -> Result<Value<'a>, Malformed> {
    let fixed64 = |cur: &mut Cursor<'b>| -> Result<[u8; 8], Malformed> {
        let b = cur.take(8, end)?;
        Ok([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    };
    let fixed32 = |cur: &mut Cursor<'b>| -> Result<[u8; 4], Malformed> {
        let b = cur.take(4, end)?;
        Ok([b[0], b[1], b[2], b[3]])
    };
    Ok(match scalar {
        Scalar::Double => Value::Number(f64::from_le_bytes(fixed64(cur)?)),
        Scalar::Float => Value::Number(f64::from(f32::from_le_bytes(fixed32(cur)?))),
        Scalar::Int32 => Value::Int(i64::from(cur.varint()? as i32)),
        Scalar::Int64 => Value::Int(cur.varint()? as i64),
        Scalar::Uint32 => Value::Uint(u64::from(cur.varint()? as u32)),
        Scalar::Uint64 => Value::Uint(cur.varint()?),
        Scalar::Sint32 | Scalar::Sint64 => Value::Int(zigzag(cur.varint()?)),
        Scalar::Fixed32 => Value::Uint(u64::from(u32::from_le_bytes(fixed32(cur)?))),
        Scalar::Fixed64 => Value::Uint(u64::from_le_bytes(fixed64(cur)?)),
        Scalar::Sfixed32 => Value::Int(i64::from(i32::from_le_bytes(fixed32(cur)?))),
        Scalar::Sfixed64 => Value::Int(i64::from_le_bytes(fixed64(cur)?)),
        Scalar::Bool => Value::Bool(cur.varint()? != 0),
        Scalar::String => {
            let n = cur.len(end)?;
            match std::str::from_utf8(cur.take(n, end)?) {
                Ok(s) => Value::Text(s),
                Err(_) => Value::Other,
            }
        }
        Scalar::Enum(e) => {
            let number = cur.varint()? as i32;
            match enums[e as usize].get(&number) {
                Some(name) => Value::Text(name),
                None => Value::Int(i64::from(number)),
            }
        }
        Scalar::Timestamp => {
            let n = cur.len(end)?;
            let inner_end = cur.pos + n;
            let (mut seconds, mut nanos) = (0i64, 0i64);
            while cur.pos < inner_end {
                let key = cur.varint()?;
                match (key >> 3, key & 7) {
                    (1, 0) => seconds = cur.varint()? as i64,
                    (2, 0) => nanos = i64::from(cur.varint()? as i32),
                    (tag, wire) => skip(cur, wire as u8, tag, inner_end, 0)?,
                }
            }
            if cur.pos != inner_end {
                return Err(Malformed("timestamp runs past its message"));
            }
            Value::TimestampMs(
                seconds.checked_mul(1000).and_then(|s| s.checked_add(nanos / 1_000_000)).ok_or(()),
            )
        }
        Scalar::Unsupported => Value::Other,
    })
}

fn store(row: &mut Row, target: Target, value: &Value<'_>) {
    match target {
        Target::Slot(slot) => {
            let slot = slot as usize;
            match *value {
                Value::Number(x) => row.number(slot, x, |t| {
                    let _ = write!(t, "{x}");
                }),
                Value::Int(v) => row.number(slot, v as f64, |t| {
                    let _ = write!(t, "{v}");
                }),
                Value::Uint(v) => row.number(slot, v as f64, |t| {
                    let _ = write!(t, "{v}");
                }),
                Value::Bool(b) => match row.kinds[slot] {
                    FeatureKind::Numeric => row.cells[slot] = Cell::Invalid,
                    FeatureKind::Categorical => row.text(slot, if b { "true" } else { "false" }),
                },
                Value::Text(s) => row.text(slot, s),
                Value::TimestampMs(_) | Value::Other => row.cells[slot] = Cell::Invalid,
            }
        }
        Target::EventTime => {
            row.event = Some(match *value {
                Value::Number(x) if x.is_finite() && x.abs() < 9.2e18 => Ok(x as i64),
                Value::Int(v) => Ok(v),
                Value::Uint(v) => i64::try_from(v).map_err(|_| ()),
                Value::Text(s) => epoch_ms_from_text(s),
                Value::TimestampMs(ms) => ms,
                Value::Number(_) | Value::Bool(_) | Value::Other => Err(()),
            })
        }
    }
}

/// Skips a field's value by its wire type (a group up to its end marker).
fn skip(cur: &mut Cursor<'_>, wire: u8, tag: u64, end: usize, depth: usize) -> Result<(), Malformed> {
    match wire {
        0 => cur.varint().map(drop),
        1 => cur.take(8, end).map(drop),
        2 => {
            let n = cur.len(end)?;
            cur.take(n, end).map(drop)
        }
        5 => cur.take(4, end).map(drop),
        3 => {
            if depth >= MAX_DEPTH {
                return Err(Malformed("groups nested too deeply"));
            }
            loop {
                if cur.pos >= end {
                    return Err(Malformed("unterminated group"));
                }
                let key = cur.varint()?;
                let (inner_tag, inner_wire) = (key >> 3, (key & 7) as u8);
                if inner_wire == 4 {
                    return if inner_tag == tag { Ok(()) } else { Err(Malformed("mismatched end of group")) };
                }
                skip(cur, inner_wire, inner_tag, end, depth + 1)?;
            }
        }
        _ => Err(Malformed("bad wire type")),
    }
}

#[cfg(test)]
mod tests;
