//! A hand-written scanner for the common record, tried before serde_json because
//! driving serde_json through visitors costs about twice what skimming the same bytes
//! does (see `benches/json_decode.rs`); the scanner reads a record member by member in
//! ~1.4x, and by the layout of the records before it ([`scan::Layout`]) in about what
//! serde_json takes to skim it. It validates everything it reads, to serde_json's
//! rules, and declines (`None`) at anything it does not handle or that might be an
//! error: escapes in keys, non-standard tokens, a control character in a string,
//! nesting deeper than 64 in a skipped value, trailing bytes. A declined record is decoded again by serde_json from scratch, so
//! the scanner only has to be right about the records it accepts, and tests check it
//! against the serde_json path. Leaf values go through [`capture`], the same code as on
//! the serde_json path, except plain numeric and categorical fields, whose numbers and
//! unescaped strings are read in place.

use super::{Captured, Node, Plan, Raw, Record, capture};

/// Bytes that end the plain run of a string: `"`, `\` and control characters.
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The powers of ten that are exact in f64.
static POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// 10^n for the digit counts `leading_digits` returns.
static POW10_U64: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` that ends a string's plain run (`"`, `\`,
/// a control character); bits above the first such byte may be spurious (borrows),
/// so only the lowest set bit is meaningful. Hand-written SWAR: the usual
/// "has zero byte" test, which no crate offers for this set of bytes.
#[inline(always)]
pub(super) fn string_stops(word: u64) -> u64 {
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero_byte(quote) | zero_byte(backslash) | (word.wrapping_sub(ONES * 0x20) & !word)) & HIGHS
}

/// The value of the ASCII digits at the start of `word` (bytes in string order,
/// the first lowest) and how many there are (0 to 8). Hand-written SWAR as in
/// fast_float's `parse_eight_digits_unrolled`.
#[inline(always)]
pub(super) fn leading_digits(word: u64) -> (u64, u32) {
    // A byte is a digit exactly when its high nibble is 3 and, after adding 6, still
    // 3. A carry out of a non-digit byte only reaches later bytes, past the digits.
    let nibbles = (word & 0xF0F0_F0F0_F0F0_F0F0)
        | ((word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
    let not_digit = nibbles ^ 0x3333_3333_3333_3333;
    let n = not_digit.trailing_zeros() / 8;
    if n == 0 {
        return (0, 0);
    }
    // Digit values; the borrows of non-digit bytes only reach later bytes, which the
    // shift drops, and it puts zero digits in front of the `n` kept.
    let mut v = word.wrapping_sub(ONES * u64::from(b'0')) << (8 * (8 - n));
    v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let v = ((v & 0x0000_00FF_0000_00FF)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32))))
        >> 32;
    (v, n)
}

/// The deepest nesting a skipped value may have here (one bit per level).
const MAX_SKIP_DEPTH: u32 = 64;

/// Decodes `buf` (a payload whose first non-blank byte is `{`) into `record`, member
/// by member.
pub(super) fn record(plan: &Plan, record: &mut Record, buf: &[u8]) -> Option<()> {
    Scanner { buf, pos: 0, plan, record, spans: None }.whole_record()
}

/// Decodes `buf` as [`record`] does, first trying the layout of the records before
/// it (`layout`), and learning the layout of this one when that did not fit.
pub(super) fn record_with_layout(
    plan: &Plan,
    record: &mut Record,
    layout: &mut Layout,
    buf: &[u8],
) -> Option<()> {
    if layout.paused > 0 {
        layout.paused -= 1;
        if layout.paused > 0 {
            return self::record(plan, record, buf);
        }
    } else if layout.ready {
        let mut scanner = Scanner { buf, pos: 0, plan, record, spans: None };
        if scanner.replay(layout).is_some() {
            layout.tries += 1;
            return Some(());
        }
        record.start();
    }
    let mut spans = std::mem::take(&mut layout.spans);
    spans.clear();
    let decoded = Scanner { buf, pos: 0, plan, record, spans: Some(&mut spans) }.whole_record();
    if decoded.is_some() {
        if layout.ready {
            layout.tries += 1;
            layout.misses += 1;
        }
        layout.learn(buf, &spans);
    }
    layout.spans = spans;
    if layout.tries >= LAYOUT_BLOCK {
        // Records that rarely share a layout would pay for a failed replay and a
        // relearning each: stop trying for a while.
        if layout.misses * 4 > layout.tries {
            layout.paused = LAYOUT_PAUSE;
            layout.ready = false;
        }
        layout.tries = 0;
        layout.misses = 0;
    }
    decoded
}

/// Replays are judged in blocks of this many records.
const LAYOUT_BLOCK: u32 = 256;
/// Records decoded member by member after a block where over a quarter of the
/// replays missed.
const LAYOUT_PAUSE: u32 = 4096;
/// A record with more structure than this between its top-level values is not
/// learned (the layout is for the common, compact record).
const LAYOUT_MAX_BYTES: usize = 4096;

/// The layout of a record, learned from the last one decoded member by member:
/// the exact bytes between its top-level values (blanks, punctuation and the key)
/// and the trie child each key leads to. Records from one producer usually repeat
/// it, and then decoding one is: compare the bytes before each value (one or two
/// machine words for a short key), read the value. Bytes equal to a record the
/// scanner already accepted are accepted the same way in the same place, so the
/// replay reads exactly what the member-by-member scan would; anything else (a
/// different key, order, spacing or member count) is a mismatch and the record is
/// scanned member by member, and its layout learned. Hand-written: no JSON crate
/// decodes by a remembered layout.
#[derive(Debug, Clone, Default)]
pub(super) struct Layout {
    /// Per top-level member, the bytes before its value and where its key leads.
    members: Vec<LayoutMember>,
    /// The bytes after the last value: the closing brace and any blanks.
    tail: Literal,
    /// Every literal's bytes, back to back.
    text: Vec<u8>,
    ready: bool,
    tries: u32,
    misses: u32,
    paused: u32,
    /// Scratch for learning: per top-level member, where its value starts and ends
    /// and the child it was read for (`None`: skipped).
    spans: Vec<(usize, usize, Option<u32>)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LayoutMember {
    prefix: Literal,
    child: Option<u32>,
}

/// A run of bytes of the layout: its place in `Layout::text`, and its words as the
/// key table computes them (exact for up to 16 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Literal {
    start: u32,
    len: u32,
    words: (u64, u64),
}

impl Layout {
    fn learn(&mut self, buf: &[u8], spans: &[(usize, usize, Option<u32>)]) {
        self.ready = false;
        self.members.clear();
        self.text.clear();
        if spans.is_empty() {
            return;
        }
        let mut previous_end = 0;
        for &(start, end, child) in spans {
            let Some(prefix) = self.literal(buf.get(previous_end..start)) else { return };
            self.members.push(LayoutMember { prefix, child });
            previous_end = end;
        }
        let Some(tail) = self.literal(buf.get(previous_end..)) else { return };
        self.tail = tail;
        self.ready = true;
    }

    fn literal(&mut self, bytes: Option<&[u8]>) -> Option<Literal> {
        let bytes = bytes?;
        if self.text.len() + bytes.len() > LAYOUT_MAX_BYTES {
            return None;
        }
        let start = self.text.len() as u32;
        self.text.extend_from_slice(bytes);
        Some(Literal { start, len: bytes.len() as u32, words: super::key_words(bytes) })
    }
}

struct Scanner<'b, 'p> {
    buf: &'b [u8],
    pos: usize,
    plan: &'p Plan,
    record: &'p mut Record,
    /// Set while learning a layout: the top-level members' value spans.
    spans: Option<&'p mut Vec<(usize, usize, Option<u32>)>>,
}

impl Scanner<'_, '_> {
    fn whole_record(mut self) -> Option<()> {
        self.ws();
        self.eat(b'{')?;
        self.object(0)?;
        self.ws();
        (self.pos == self.buf.len()).then_some(())
    }

    /// Decodes the record by `layout`; `None` when it does not fit (or declines).
    fn replay(&mut self, layout: &Layout) -> Option<()> {
        for member in &layout.members {
            self.literal_of(&layout.text, member.prefix)?;
            self.member_value(member.child)?;
        }
        self.literal_of(&layout.text, layout.tail)?;
        (self.pos == self.buf.len()).then_some(())
    }

    /// Steps over `literal` when the bytes here are exactly it.
    #[inline(always)]
    fn literal_of(&mut self, text: &[u8], literal: Literal) -> Option<()> {
        let len = literal.len as usize;
        let end = self.pos.checked_add(len)?;
        let here = self.buf.get(self.pos..end)?;
        if super::key_words(here) != literal.words {
            return None;
        }
        if len > 16 {
            let start = literal.start as usize;
            if text.get(start..start + len)? != here {
                return None;
            }
        }
        self.pos = end;
        Some(())
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        (self.buf.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// The next 8 bytes as a little-endian word (the first byte lowest), when there
    /// are 8 left.
    #[inline(always)]
    fn word(&self) -> Option<u64> {
        let end = self.pos.checked_add(8)?;
        Some(u64::from_le_bytes(self.buf.get(self.pos..end)?.try_into().ok()?))
    }

    /// The rest of a string after its opening quote; returns whether it had escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            // Eight bytes at a time while they are plain, then byte by byte to the stop.
            while let Some(word) = self.word() {
                let stops = string_stops(word);
                if stops != 0 {
                    self.pos += (stops.trailing_zeros() / 8) as usize;
                    break;
                }
                self.pos += 8;
            }
            while !STRING_STOP[usize::from(self.peek()?)] {
                self.pos += 1;
            }
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// Checked as serde_json checks the escapes it skims: surrogates are not paired
    /// here, and [`super::unescape_into`] decides about them where it matters.
    fn escape(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
            b'u' => {
                let hex = self.buf.get(self.pos + 1..self.pos + 5)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                self.pos += 5;
            }
            _ => return None,
        }
        Some(())
    }

    #[inline(always)]
    fn digits(&mut self) -> Option<()> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// Digits from the current position into `significand` (wrapping: more than 19
    /// digits make the caller fall back to std's parser); returns how many. Eight at
    /// a time while eight bytes are left, which covers the usual short number.
    #[inline(always)]
    fn digits_value(&mut self, significand: &mut u64) -> u32 {
        let mut count = 0;
        while let Some(word) = self.word() {
            let (value, n) = leading_digits(word);
            *significand = significand.wrapping_mul(POW10_U64[n as usize]).wrapping_add(value);
            count += n;
            self.pos += n as usize;
            if n < 8 {
                return count;
            }
        }
        while let Some(d @ b'0'..=b'9') = self.peek() {
            *significand = significand.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            count += 1;
            self.pos += 1;
        }
        count
    }

    /// A number's value, read while it is validated. The common case takes the exact
    /// fast path (a significand up to 2^53 and a power of ten up to 10^22 are both
    /// exact in f64, so one correctly rounded operation gives the correctly rounded
    /// result); anything else goes to std's parser, which saturates beyond f64 as
    /// the serde_json path does. Either way the same bits as serde_json's reading.
    #[inline(always)]
    fn number_value(&mut self) -> Option<f64> {
        let start = self.pos;
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let mut significand: u64 = 0;
        let mut digits = 0u32;
        let mut exponent: i64 = 0;
        match self.peek()? {
            b'0' => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => digits = self.digits_value(&mut significand),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let fraction = self.digits_value(&mut significand);
            if fraction == 0 {
                return None;
            }
            digits += fraction;
            exponent -= i64::from(fraction);
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let sign = match self.peek()? {
                b'-' => {
                    self.pos += 1;
                    -1
                }
                b'+' => {
                    self.pos += 1;
                    1
                }
                _ => 1,
            };
            let first = self.pos;
            let mut e: i64 = 0;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                e = (e * 10 + i64::from(d - b'0')).min(1 << 32);
                self.pos += 1;
            }
            if self.pos == first {
                return None;
            }
            exponent += sign * e;
        }
        if digits <= 19 && significand <= 1 << 53 && (-22..=22).contains(&exponent) {
            let magnitude = significand as f64;
            let power = POW10[exponent.unsigned_abs() as usize];
            let x = if exponent < 0 { magnitude / power } else { magnitude * power };
            return Some(if negative { -x } else { x });
        }
        std::str::from_utf8(self.buf.get(start..self.pos)?).ok()?.parse::<f64>().ok()
    }

    /// `"key"` then `:`, with the blanks around them.
    fn member_key(&mut self) -> Option<()> {
        self.eat(b'"')?;
        self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }

    /// Validates and steps over one value, iteratively.
    fn skip_value(&mut self) -> Option<()> {
        // One bit per open container, set for an object.
        let mut objects: u64 = 0;
        let mut depth = 0u32;
        loop {
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.pos += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.pos += 1;
                    } else {
                        if depth == MAX_SKIP_DEPTH {
                            return None;
                        }
                        depth += 1;
                        objects = objects << 1 | u64::from(open == b'{');
                        if open == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.pos += 1;
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // After a value: close containers until one continues.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                let in_object = objects & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        self.ws();
                        if in_object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                self.pos += 1;
                objects >>= 1;
                depth -= 1;
            }
        }
    }

    /// The members of an object at trie node `node`, after its `{`.
    fn object(&mut self, node: u32) -> Option<()> {
        let plan = self.plan;
        let Node::Inner { children, .. } = plan.nodes.get(node as usize)? else {
            return None;
        };
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let start = self.pos;
            if self.string()? {
                return None;
            }
            let child = children.get(self.buf.get(start..self.pos - 1)?);
            self.ws();
            self.eat(b':')?;
            self.ws();
            let value_start = self.pos;
            let read_for = self.member_value(child)?;
            if node == 0
                && let Some(spans) = self.spans.as_deref_mut()
            {
                spans.push((value_start, self.pos, read_for));
            }
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member's value, for the trie child its key leads to (`None`: not
    /// monitored). Returns the child it was read for: `None` when skipped, which a
    /// repeated key is (the first occurrence wins).
    #[inline(always)]
    fn member_value(&mut self, child: Option<u32>) -> Option<Option<u32>> {
        let plan = self.plan;
        match child {
            Some(child) if self.record.first_visit(child) => {
                match plan.nodes.get(child as usize)? {
                    Node::Inner { .. } => match self.peek()? {
                        b'{' => {
                            self.pos += 1;
                            self.object(child)?;
                        }
                        b'n' => self.literal(b"null")?,
                        _ => {
                            self.skip_value()?;
                            self.record.invalidate_under(plan, child);
                        }
                    },
                    Node::Leaf { field: Some(field), plain_numeric: true, .. }
                        if matches!(self.peek(), Some(b'-' | b'0'..=b'9')) =>
                    {
                        let x = self.number_value()?;
                        if let Some(slot) = self.record.values.get_mut(*field as usize) {
                            *slot = Captured::Number(x);
                        }
                    }
                    Node::Leaf { field: Some(field), plain_categorical: true, .. }
                        if self.peek() == Some(b'"') =>
                    {
                        self.category(*field)?;
                    }
                    Node::Leaf { field, event_time, .. } => self.leaf(*field, *event_time)?,
                }
                Some(Some(child))
            }
            _ => {
                self.skip_value()?;
                Some(None)
            }
        }
    }

    /// A string for a categorical field, at its opening quote: its text goes to the
    /// record as [`capture`] would put it there.
    #[inline(always)]
    fn category(&mut self, field: u32) -> Option<()> {
        let start = self.pos;
        self.pos += 1;
        if self.string()? {
            self.pos = start;
            return self.leaf(Some(field), false);
        }
        let bytes = self.buf.get(start + 1..self.pos - 1)?;
        let text = if bytes.is_ascii() {
            // SAFETY: ASCII is UTF-8. Checked inline because category names are
            // short and mostly ASCII, where the call to the general check costs
            // more than the check itself.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            // serde_json checks UTF-8 in a monitored value; let it report.
            std::str::from_utf8(bytes).ok()?
        };
        let captured = self.record.push_text(text);
        if let Some(slot) = self.record.values.get_mut(field as usize) {
            *slot = captured;
        }
        Some(())
    }

    #[inline(always)]
    fn leaf(&mut self, field: Option<u32>, event_time: bool) -> Option<()> {
        let start = self.pos;
        let raw = match self.peek()? {
            b'"' => {
                self.pos += 1;
                let escaped = self.string()?;
                // serde_json checks UTF-8 in a monitored value; let it report.
                let quoted = std::str::from_utf8(self.buf.get(start..self.pos)?).ok()?;
                if escaped { Raw::Str(quoted) } else { Raw::PlainStr(quoted.get(1..quoted.len() - 1)?) }
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Raw::Number(std::str::from_utf8(self.buf.get(start..self.pos)?).ok()?)
            }
            b't' => {
                self.literal(b"true")?;
                Raw::Literal("true")
            }
            b'f' => {
                self.literal(b"false")?;
                Raw::Literal("false")
            }
            b'n' => {
                self.literal(b"null")?;
                Raw::Null
            }
            b'{' | b'[' => {
                self.skip_value()?;
                Raw::Container
            }
            _ => return None,
        };
        capture(self.plan, self.record, field, event_time, &raw);
        Some(())
    }
}
