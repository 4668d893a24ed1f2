//! The compiled pointers: the monitored fields as a trie over object keys, with a
//! hash table per object node for routing a key to its child.

use super::*;

/// The pointers as a trie over object keys. Node 0 is the top-level object.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) nodes: Vec<Node>,
    /// Per configured field, in configuration order (the order of the sink calls).
    pub(super) fields: Vec<FieldTarget>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct FieldTarget {
    pub(super) feature: usize,
    pub(super) kind: FeatureKind,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    /// A value that must be an object for the fields under it to be found.
    Inner {
        children: KeyTable,
        /// The fields (indices into `Plan::fields`) anywhere below, made invalid
        /// together when this value is not an object.
        fields_under: Box<[u32]>,
        event_time_under: bool,
    },
    /// A monitored value: a field's, the event time's, or both.
    Leaf {
        field: Option<u32>,
        event_time: bool,
        /// Only a numeric field reads it, so its number can be read in place (by the
        /// scanner, or by serde_json in the strict parse) instead of as raw text.
        plain_numeric: bool,
        /// Only a categorical field reads it, so the scanner copies an unescaped string
        /// straight into the record's text.
        plain_categorical: bool,
    },
}

impl Plan {
    pub(super) fn new(fields: &[JsonField], event_time: Option<&str>) -> Result<Plan, JsonFieldsError> {
        let mut nodes = vec![Node::Inner {
            children: KeyTable::default(),
            fields_under: Box::new([]),
            event_time_under: false,
        }];
        // For error messages: the first pointer that created each node.
        let mut pointers = vec![String::new()];
        let mut feature_pointer: FxHashMap<usize, &str> = FxHashMap::default();
        let targets = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.pointer.as_str(), Some(i)))
            .chain(event_time.map(|p| (p, None)));
        for (pointer, field) in targets {
            let segments = parse_pointer(pointer)?;
            if let Some(i) = field {
                let feature = fields[i].feature;
                if let Some(first) = feature_pointer.insert(feature, pointer) {
                    return Err(JsonFieldsError::DuplicateFeature {
                        feature,
                        first: first.to_string(),
                        second: pointer.to_string(),
                    });
                }
            }
            let mut node = 0usize;
            for (depth, segment) in segments.iter().enumerate() {
                let last = depth + 1 == segments.len();
                let existing = match &nodes[node] {
                    Node::Inner { children, .. } => children.get(segment.as_bytes()),
                    Node::Leaf { .. } => None,
                };
                node = match existing {
                    Some(child) => child as usize,
                    None => {
                        let child = nodes.len();
                        nodes.push(if last {
                            Node::Leaf {
                                field: None,
                                event_time: false,
                                plain_numeric: false,
                                plain_categorical: false,
                            }
                        } else {
                            Node::Inner {
                                children: KeyTable::default(),
                                fields_under: Box::new([]),
                                event_time_under: false,
                            }
                        });
                        pointers.push(pointer.to_string());
                        if let Node::Inner { children, .. } = &mut nodes[node] {
                            children.insert(segment, child as u32);
                        }
                        child
                    }
                };
                let overlap = match (&nodes[node], last) {
                    (Node::Leaf { .. }, false) => Some((pointers[node].clone(), pointer)),
                    (Node::Inner { .. }, true) => Some((pointer.to_string(), &*pointers[node])),
                    _ => None,
                };
                if let Some((outer, inner)) = overlap {
                    return Err(JsonFieldsError::Overlap { outer, inner: inner.to_string() });
                }
            }
            if let Node::Leaf { field: leaf_field, event_time: leaf_event, .. } = &mut nodes[node] {
                match field {
                    Some(i) if leaf_field.is_none() => *leaf_field = Some(i as u32),
                    Some(_) => {
                        return Err(JsonFieldsError::DuplicatePointer { pointer: pointer.to_string() });
                    }
                    None => *leaf_event = true,
                }
            }
        }
        fill_under(&mut nodes, 0);
        for node in &mut nodes {
            if let Node::Leaf { field: Some(f), event_time: false, plain_numeric, plain_categorical } = node {
                *plain_numeric = fields.get(*f as usize).is_some_and(|f| f.kind == FeatureKind::Numeric);
                *plain_categorical =
                    fields.get(*f as usize).is_some_and(|f| f.kind == FeatureKind::Categorical);
            }
        }
        Ok(Plan {
            nodes,
            fields: fields.iter().map(|f| FieldTarget { feature: f.feature, kind: f.kind }).collect(),
        })
    }

    /// Whether some record value is read as the event time.
    pub(super) fn reads_event_time(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n, Node::Leaf { event_time: true, .. }))
    }
}

/// The keys of one object node: open addressing over a hash of at most 16 bytes of the
/// key. A general-purpose map was the decoder's largest cost (hashing every byte, then
/// a `memcmp` call); here a key of up to 16 bytes is hashed and compared as two
/// machine words.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyTable {
    /// A power of two long, at most a quarter full, so that probes are short and
    /// always end.
    pub(super) slots: Box<[KeySlot]>,
    /// The full key per slot, compared only for keys longer than 16 bytes.
    pub(super) keys: Box<[Box<[u8]>]>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct KeySlot {
    pub(super) words: (u64, u64),
    pub(super) len: usize,
    /// `VACANT` for an empty slot.
    pub(super) child: u32,
}

pub(super) const VACANT: u32 = u32::MAX;

impl KeyTable {
    #[inline(always)]
    pub(super) fn get(&self, key: &[u8]) -> Option<u32> {
        let mask = self.slots.len().checked_sub(1)?;
        let words = key_words(key);
        let mut i = slot_index(key_hash(words, key.len()), mask);
        loop {
            let slot = self.slots.get(i)?;
            if slot.child == VACANT {
                return None;
            }
            if slot.words == words
                && slot.len == key.len()
                && (key.len() <= 16 || self.keys.get(i).is_some_and(|k| **k == *key))
            {
                return Some(slot.child);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds a key (configuration time only: the table is rebuilt).
    pub(super) fn insert(&mut self, key: &str, child: u32) {
        let mut entries: Vec<(Box<[u8]>, u32)> = self
            .slots
            .iter()
            .zip(self.keys.iter())
            .filter(|(slot, _)| slot.child != VACANT)
            .map(|(slot, key)| (key.clone(), slot.child))
            .collect();
        entries.push((key.as_bytes().into(), child));
        let size = (entries.len() * 4).next_power_of_two();
        let vacant = KeySlot { words: (0, 0), len: 0, child: VACANT };
        let mut slots = vec![vacant; size];
        let mut keys: Vec<Box<[u8]>> = vec![Box::default(); size];
        for (key, child) in entries {
            let words = key_words(&key);
            let mut i = slot_index(key_hash(words, key.len()), size - 1);
            while slots[i].child != VACANT {
                i = (i + 1) & (size - 1);
            }
            slots[i] = KeySlot { words, len: key.len(), child };
            keys[i] = key;
        }
        self.slots = slots.into_boxed_slice();
        self.keys = keys.into_boxed_slice();
    }

    pub(super) fn children(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().map(|s| s.child).filter(|&c| c != VACANT)
    }
}

/// Two words that, with the length, identify a key of up to 16 bytes exactly (the
/// loads overlap to cover every byte); for a longer key its first and last 8 bytes.
#[inline]
pub(super) fn key_words(key: &[u8]) -> (u64, u64) {
    let n = key.len();
    if let (Some(first), Some(last)) = (key.first_chunk::<8>(), key.last_chunk::<8>()) {
        (u64::from_le_bytes(*first), u64::from_le_bytes(*last))
    } else if let (Some(first), Some(last)) = (key.first_chunk::<4>(), key.last_chunk::<4>()) {
        (u64::from(u32::from_le_bytes(*first)), u64::from(u32::from_le_bytes(*last)))
    } else if n > 0 {
        let b = |i: usize| u64::from(key[i]);
        (b(0) | b(n / 2) << 8 | b(n - 1) << 16, 0)
    } else {
        (0, 0)
    }
}

/// The top bits of the hash: the low bits of a product depend on the low bits of the
/// key only, which are the same for keys like `f0`, `f1`, ...
#[inline(always)]
pub(super) fn slot_index(hash: u64, mask: usize) -> usize {
    (hash >> (64 - mask.count_ones().max(1))) as usize & mask
}

#[inline(always)]
pub(super) fn key_hash((w0, w1): (u64, u64), len: usize) -> u64 {
    let product =
        u128::from(w0 ^ 0x243f_6a88_85a3_08d3) * u128::from(w1 ^ 0x1319_8a2e_0370_7344 ^ len as u64);
    (product as u64) ^ ((product >> 64) as u64)
}

/// The fields and whether the event time are below `node`.
pub(super) fn collect_under(nodes: &[Node], node: usize) -> (Vec<u32>, bool) {
    match &nodes[node] {
        Node::Leaf { field, event_time, .. } => (field.iter().copied().collect(), *event_time),
        Node::Inner { children, .. } => {
            let mut fields = Vec::new();
            let mut event = false;
            for child in children.children() {
                let (f, e) = collect_under(nodes, child as usize);
                fields.extend(f);
                event |= e;
            }
            fields.sort_unstable();
            (fields, event)
        }
    }
}

pub(super) fn fill_under(nodes: &mut [Node], node: usize) {
    let (fields, event) = collect_under(nodes, node);
    let children: Vec<u32> = match &mut nodes[node] {
        Node::Leaf { .. } => return,
        Node::Inner { children, fields_under, event_time_under } => {
            *fields_under = fields.into_boxed_slice();
            *event_time_under = event;
            children.children().collect()
        }
    };
    for child in children {
        fill_under(nodes, child as usize);
    }
}

/// Splits an RFC 6901 pointer into its unescaped segments.
pub(super) fn parse_pointer(pointer: &str) -> Result<Vec<String>, JsonFieldsError> {
    let syntax = |problem| JsonFieldsError::Syntax { pointer: pointer.to_string(), problem };
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(syntax(if pointer.is_empty() {
            "the empty pointer names the whole record, not a field"
        } else {
            "a pointer must start with '/'"
        }));
    };
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        let mut segment = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '~' {
                match chars.next() {
                    Some('0') => segment.push('~'),
                    Some('1') => segment.push('/'),
                    _ => return Err(syntax("'~' must be followed by '0' or '1'")),
                }
            } else {
                segment.push(c);
            }
        }
        segments.push(segment);
    }
    if segments.len() > MAX_POINTER_SEGMENTS {
        return Err(syntax("more than 64 segments"));
    }
    Ok(segments)
}
