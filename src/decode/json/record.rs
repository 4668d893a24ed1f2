//! The record being decoded (captured values reused from record to record), and the
//! search for non-standard tokens (Python's bare NaN/Infinity) for the tolerant re-parse.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Captured {
    Absent,
    Null,
    Number(f64),
    /// A range of `Record::text`.
    Text(usize, usize),
    Invalid,
}

#[derive(Debug, Clone)]
pub(super) struct Record {
    /// Per configured field.
    pub(super) values: Vec<Captured>,
    pub(super) event: Captured,
    /// The text of every categorical value (and event-time string) of the record.
    pub(super) text: String,
    /// Per trie node: the generation in which it was met, so that a duplicate key is
    /// recognised without clearing anything between records.
    pub(super) stamps: Vec<u32>,
    pub(super) generation: u32,
}

impl Record {
    pub(super) fn start(&mut self) {
        self.values.fill(Captured::Absent);
        self.event = Captured::Absent;
        self.text.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamps.fill(0);
            self.generation = 1;
        }
    }

    /// Whether this is the first time `node` is met in the record (the first
    /// occurrence of a duplicated key wins).
    #[inline]
    pub(super) fn first_visit(&mut self, node: u32) -> bool {
        match self.stamps.get_mut(node as usize) {
            Some(stamp) if *stamp != self.generation => {
                *stamp = self.generation;
                true
            }
            _ => false,
        }
    }

    pub(super) fn push_text(&mut self, text: &str) -> Captured {
        let start = self.text.len();
        self.text.push_str(text);
        Captured::Text(start, self.text.len())
    }

    pub(super) fn invalidate_under(&mut self, plan: &Plan, node: u32) {
        if let Some(Node::Inner { fields_under, event_time_under, .. }) = plan.nodes.get(node as usize) {
            for &f in fields_under.iter() {
                if let Some(v) = self.values.get_mut(f as usize) {
                    *v = Captured::Invalid;
                }
            }
            if *event_time_under {
                self.event = Captured::Invalid;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Non-standard tokens.

/// A bare token Python's `json.dumps` writes for a non-finite float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NonFinite {
    NaN,
    Infinity,
    NegInfinity,
}

impl NonFinite {
    pub(super) fn value(self) -> f64 {
        match self {
            NonFinite::NaN => f64::NAN,
            NonFinite::Infinity => f64::INFINITY,
            NonFinite::NegInfinity => f64::NEG_INFINITY,
        }
    }

    pub(super) fn token(self) -> &'static str {
        match self {
            NonFinite::NaN => "NaN",
            NonFinite::Infinity => "Infinity",
            NonFinite::NegInfinity => "-Infinity",
        }
    }
}

/// Copies `payload` into `out` with every bare `NaN`, `Infinity` and `-Infinity`
/// outside strings replaced by a `0` padded with spaces to the same length, so offsets
/// are unchanged and the tolerant parse can recognise the token by where it stood.
/// Returns whether any was found.
pub(super) fn find_non_standard(
    payload: &[u8],
    out: &mut Vec<u8>,
    marks: &mut Vec<(usize, NonFinite)>,
) -> bool {
    marks.clear();
    out.clear();
    out.extend_from_slice(payload);
    let mut i = 0;
    let mut in_string = false;
    while i < out.len() {
        let b = out[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let token = match b {
            b'"' => {
                in_string = true;
                None
            }
            b'N' if out[i..].starts_with(b"NaN") => Some(NonFinite::NaN),
            b'I' if out[i..].starts_with(b"Infinity") => Some(NonFinite::Infinity),
            b'-' if out[i..].starts_with(b"-Infinity") => Some(NonFinite::NegInfinity),
            _ => None,
        };
        match token {
            Some(token) => {
                let len = token.token().len();
                out[i] = b'0';
                out[i + 1..i + len].fill(b' ');
                marks.push((i, token));
                i += len;
            }
            None => i += 1,
        }
    }
    !marks.is_empty()
}
