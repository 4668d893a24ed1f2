//! The streaming parse: serde_json driven through `DeserializeSeed`s along the pointer
//! trie; it decides every record the scanner declines, and re-parses tolerantly the
//! records strict JSON refuses but the spec wants counted.

use super::*;

/// Set for the fallback parse: containers on the pointer paths are taken as raw text
/// first, and leaves are checked against the blanked-out tokens.
#[derive(Clone, Copy)]
pub(super) struct Tolerant<'m> {
    /// The address of the parsed buffer, to turn a raw value into an offset.
    pub(super) base: usize,
    pub(super) marks: &'m [(usize, NonFinite)],
}

pub(super) struct Ctx<'a> {
    pub(super) plan: &'a Plan,
    pub(super) record: &'a mut Record,
    pub(super) tolerant: Option<Tolerant<'a>>,
    /// Whether a key with escapes was met (see [`KeySeed`]).
    pub(super) escaped_key: bool,
}

pub(super) fn parse_object(
    plan: &Plan,
    record: &mut Record,
    buf: &[u8],
    tolerant: Option<Tolerant<'_>>,
) -> Result<(), serde_json::Error> {
    let mut ctx = Ctx { plan, record, tolerant, escaped_key: false };
    let mut de = serde_json::Deserializer::from_slice(buf);
    de::Deserializer::deserialize_map(&mut de, ObjectVisitor { ctx: &mut ctx, node: 0 })?;
    de.end()?;
    // An escaped key reaches `KeySeed` unescaped, where a raw control character can no
    // longer be told from an escaped one; the payload itself tells (rare: the check
    // runs only for records with an escaped key that the scanner declined).
    if ctx.escaped_key && raw_control_in_string(buf) {
        return Err(de::Error::custom("control character (\\u0000-\\u001F) found while parsing a string"));
    }
    Ok(())
}

/// Whether a string of `buf`, JSON text that parsed, holds a raw control character
/// (JSON allows them only escaped).
pub(super) fn raw_control_in_string(buf: &[u8]) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for &b in buf {
        if !in_string {
            in_string = b == b'"';
        } else if escaped {
            escaped = false;
        } else {
            match b {
                b'\\' => escaped = true,
                b'"' => in_string = false,
                0..0x20 => return true,
                _ => {}
            }
        }
    }
    false
}

/// Looks a key up among a node's children. The key is taken as bytes, borrowed from the
/// payload (or from serde_json's scratch when escaped): never allocated, and not
/// UTF-8-checked, like every other value serde_json skims (a key that is not UTF-8 cannot
/// equal a configured one anyway).
pub(super) struct KeySeed<'p> {
    pub(super) table: &'p KeyTable,
    /// Set when a key with escapes arrives (in `visit_bytes`), for `parse_object` to
    /// check the payload for raw control characters.
    pub(super) escaped: &'p mut bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<u32>;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<u32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    #[inline]
    fn visit_borrowed_bytes<E: de::Error>(self, key: &'de [u8]) -> Result<Option<u32>, E> {
        // Taken as bytes, serde_json lets raw control characters through; JSON does not.
        // (A key with escapes arrives unescaped in `visit_bytes`, where an escaped
        // control character is legitimate.)
        if key.iter().any(|&b| b < 0x20) {
            return Err(E::custom("control character in an object key"));
        }
        Ok(self.table.get(key))
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<u32>, E> {
        *self.escaped = true;
        Ok(self.table.get(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<u32>, E> {
        Ok(self.table.get(key.as_bytes()))
    }
}

/// The value at an inner trie node: an object to descend into.
pub(super) struct ObjectSeed<'c, 'a> {
    pub(super) ctx: &'c mut Ctx<'a>,
    pub(super) node: u32,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.ctx.tolerant.is_none() {
            return d.deserialize_any(ObjectVisitor { ctx: self.ctx, node: self.node });
        }
        // A number out of f64 range here would make deserialize_any fail, so the value
        // is skimmed as raw text and only an object is parsed (again).
        let raw = <&RawValue>::deserialize(d)?;
        match raw.get().as_bytes().first() {
            Some(b'{') => {
                let mut inner = serde_json::Deserializer::from_str(raw.get());
                de::Deserializer::deserialize_map(
                    &mut inner,
                    ObjectVisitor { ctx: self.ctx, node: self.node },
                )
                .map_err(de::Error::custom)
            }
            // A null parent: the fields under it are absent, as in `visit_unit`.
            Some(b'n') => Ok(()),
            _ => {
                self.ctx.record.invalidate_under(self.ctx.plan, self.node);
                Ok(())
            }
        }
    }
}

impl Tolerant<'_> {
    pub(super) fn lookup(&self, raw: &str) -> Option<NonFinite> {
        if self.marks.is_empty() {
            return None;
        }
        let offset = raw.as_ptr().addr().wrapping_sub(self.base);
        self.marks.binary_search_by_key(&offset, |&(at, _)| at).ok().map(|i| self.marks[i].1)
    }
}

pub(super) struct ObjectVisitor<'c, 'a> {
    pub(super) ctx: &'c mut Ctx<'a>,
    pub(super) node: u32,
}

impl ObjectVisitor<'_, '_> {
    pub(super) fn not_an_object<E>(self) -> Result<(), E> {
        self.ctx.record.invalidate_under(self.ctx.plan, self.node);
        Ok(())
    }
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let plan = self.ctx.plan;
        let Some(Node::Inner { children, .. }) = plan.nodes.get(self.node as usize) else {
            return Err(de::Error::custom("internal: not an inner node"));
        };
        while let Some(child) =
            map.next_key_seed(KeySeed { table: children, escaped: &mut self.ctx.escaped_key })?
        {
            match child {
                Some(child) if self.ctx.record.first_visit(child) => match &plan.nodes[child as usize] {
                    Node::Inner { .. } => {
                        map.next_value_seed(ObjectSeed { ctx: &mut *self.ctx, node: child })?
                    }
                    Node::Leaf { field: Some(field), plain_numeric: true, .. }
                        if self.ctx.tolerant.is_none() =>
                    {
                        let value = map.next_value_seed(NumberSeed)?;
                        if let Some(slot) = self.ctx.record.values.get_mut(*field as usize) {
                            *slot = value;
                        }
                    }
                    Node::Leaf { field, event_time, .. } => map.next_value_seed(LeafSeed {
                        ctx: &mut *self.ctx,
                        field: *field,
                        event_time: *event_time,
                    })?,
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        // A null parent: the fields under it are absent, like an absent parent.
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object()
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_an_object()
    }
}

/// The value of a numeric-only leaf in the strict parse, parsed by serde_json in place.
/// A number beyond f64 fails the parse here; the tolerant parse then reads it as text.
pub(super) struct NumberSeed;

impl<'de> DeserializeSeed<'de> for NumberSeed {
    type Value = Captured;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Captured, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed {
    type Value = Captured;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_f64<E>(self, x: f64) -> Result<Captured, E> {
        Ok(Captured::Number(x))
    }

    fn visit_i64<E>(self, x: i64) -> Result<Captured, E> {
        Ok(Captured::Number(x as f64))
    }

    fn visit_u64<E>(self, x: u64) -> Result<Captured, E> {
        Ok(Captured::Number(x as f64))
    }

    fn visit_unit<E>(self) -> Result<Captured, E> {
        Ok(Captured::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Captured, E> {
        Ok(Captured::Invalid)
    }

    fn visit_str<E>(self, _: &str) -> Result<Captured, E> {
        Ok(Captured::Invalid)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Captured, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Captured::Invalid)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Captured, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Captured::Invalid)
    }
}

/// The value at a leaf, taken as raw text: numbers are parsed here (serde_json refuses
/// numbers beyond f64, std's parser saturates them to infinity) and a categorical
/// number keeps its exact JSON spelling.
pub(super) struct LeafSeed<'c, 'a> {
    pub(super) ctx: &'c mut Ctx<'a>,
    pub(super) field: Option<u32>,
    pub(super) event_time: bool,
}

/// What a raw JSON value is, by its first byte.
pub(super) enum Raw<'r> {
    Null,
    /// `true`, `false` or a number: kept as spelled.
    Literal(&'r str),
    Number(&'r str),
    NonFinite(NonFinite),
    /// A string, with its quotes.
    Str(&'r str),
    /// A string's text, known to hold no escapes (the scanner saw them all).
    PlainStr(&'r str),
    Container,
}

impl<'de> DeserializeSeed<'de> for LeafSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let raw = <&RawValue>::deserialize(d)?.get();
        let kind = match self.ctx.tolerant.and_then(|t| t.lookup(raw)) {
            Some(token) => Raw::NonFinite(token),
            None => match raw.as_bytes().first() {
                Some(b'n') => Raw::Null,
                Some(b't' | b'f') => Raw::Literal(raw),
                Some(b'"') => Raw::Str(raw),
                Some(b'{' | b'[') | None => Raw::Container,
                Some(_) => Raw::Number(raw),
            },
        };
        capture(self.ctx.plan, self.ctx.record, self.field, self.event_time, &kind);
        Ok(())
    }
}

/// Records a leaf's value for its field and/or the event time; shared by the scanner and
/// the serde_json paths so that both read a value identically.
pub(super) fn capture(plan: &Plan, record: &mut Record, field: Option<u32>, event_time: bool, raw: &Raw<'_>) {
    if let Some(f) = field {
        let captured = match plan.fields.get(f as usize).map(|t| t.kind) {
            Some(FeatureKind::Numeric) => numeric_value(raw),
            Some(FeatureKind::Categorical) => categorical_value(record, raw),
            None => Captured::Invalid,
        };
        if let Some(slot) = record.values.get_mut(f as usize) {
            *slot = captured;
        }
    }
    if event_time {
        record.event = match raw {
            Raw::Null => Captured::Null,
            Raw::Number(_) | Raw::NonFinite(_) => numeric_value(raw),
            Raw::Str(quoted) => unescape_into(record, quoted),
            Raw::PlainStr(text) => record.push_text(text),
            Raw::Literal(_) | Raw::Container => Captured::Invalid,
        };
    }
}

pub(super) fn numeric_value(raw: &Raw<'_>) -> Captured {
    match raw {
        Raw::Null => Captured::Null,
        // Validated by serde_json as a JSON number, which std's grammar includes.
        Raw::Number(text) => text.parse::<f64>().map_or(Captured::Invalid, Captured::Number),
        Raw::NonFinite(token) => Captured::Number(token.value()),
        Raw::Literal(_) | Raw::Str(_) | Raw::PlainStr(_) | Raw::Container => Captured::Invalid,
    }
}

pub(super) fn categorical_value(record: &mut Record, raw: &Raw<'_>) -> Captured {
    match raw {
        Raw::Null => Captured::Null,
        Raw::Literal(text) | Raw::Number(text) => record.push_text(text),
        Raw::NonFinite(token) => record.push_text(token.token()),
        Raw::Str(quoted) => unescape_into(record, quoted),
        Raw::PlainStr(text) => record.push_text(text),
        Raw::Container => Captured::Invalid,
    }
}

/// Appends a raw JSON string's value to the record's text.
pub(super) fn unescape_into(record: &mut Record, quoted: &str) -> Captured {
    let inner = quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or("");
    if !inner.contains('\\') {
        return record.push_text(inner);
    }
    // Escapes are rare: let serde_json decode them rather than keep a second decoder.
    let start = record.text.len();
    let mut de = serde_json::Deserializer::from_str(quoted);
    match de::Deserializer::deserialize_str(&mut de, AppendStr(&mut record.text)) {
        Ok(()) => Captured::Text(start, record.text.len()),
        Err(_) => {
            // e.g. a lone surrogate escape, which serde_json's skimming lets through.
            record.text.truncate(start);
            Captured::Invalid
        }
    }
}

pub(super) struct AppendStr<'t>(&'t mut String);

impl<'de> Visitor<'de> for AppendStr<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}
