//! The categorical feature sketch: exact counts for the reference's categories and for
//! at most `max_categories` distinct values per window, then one `__other__` bucket.
//!
//! Finding a value's reference category is the per-value cost, so a reference whose
//! category names are all short (at most 16 bytes: the usual case) and few enough gets
//! a [`ShortNames`] table: one probe that compares the name as two words, no hashing
//! of bytes and no `memcmp`; other references use a general hash map.

use rustc_hash::FxHashMap;
use std::sync::Arc;

/// The bucket that collects categories arriving after the cap is reached.
pub const OTHER_CATEGORY: &str = "__other__";

/// The reference's categories, numbered once so a window counts them in a plain vector
/// and looks them up without allocating.
#[derive(Debug, Default)]
pub struct CategoryIndex {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    /// The fast path of `id`, when every name fits it.
    short: Option<ShortNames>,
}

impl CategoryIndex {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = CategoryIndex::default();
        for name in names {
            if !index.ids.contains_key(name) {
                index.ids.insert(name.into(), index.names.len() as u32);
                index.names.push(name.into());
            }
        }
        index.short = ShortNames::new(&index.names);
        index
    }

    #[inline]
    pub fn id(&self, name: &str) -> Option<u32> {
        match &self.short {
            Some(short) => short.id(name),
            None => self.ids.get(name).copied(),
        }
    }

    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// An exact map from short names (at most 16 bytes) to ids, for a fixed set of names
/// placed so that each sits in the slot its hash points to: a lookup is one hash of
/// two machine words and one slot compared, hit or miss.
///
/// Hand-written because general maps (std, hashbrown, rustc-hash) hash every byte and
/// end in a `memcmp` call, and the crates for fixed key sets build at compile time or
/// for large sets; this is the lookup that runs once per categorical value.
#[derive(Debug)]
struct ShortNames {
    slots: Box<[Slot]>,
    /// `64 - log2(slots.len())`: the hash's top bits pick the slot.
    shift: u32,
    seed: u64,
}

/// One name, as [`name_key`] packs it, and its id. An empty slot has `len == u64::MAX`,
/// which no name's length equals.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    key: (u64, u64),
    len: u64,
    id: u64,
}

const EMPTY: Slot = Slot { key: (0, 0), len: u64::MAX, id: 0 };

/// Names a [`ShortNames`] table takes at most: beyond that the chance that some seed
/// places every name in its own slot falls, and the general map is as good.
const SHORT_NAMES_MAX: usize = 64;

/// Seeds tried before giving up on a table.
const SHORT_NAMES_SEEDS: u64 = 256;

/// Two words that, with the length, identify a name of at most 16 bytes: its first and
/// last 8 bytes (overlapping when shorter than 16), or first and last 4, or for fewer
/// than 4 bytes its first, middle and last byte; `None` when longer than 16 bytes.
/// Two names of one length share a key only if they are equal.
#[inline]
fn name_key(s: &[u8]) -> Option<(u64, u64)> {
    let n = s.len();
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let half = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64;
    if n >= 8 {
        (n <= 16).then(|| (word(&s[..8]), word(&s[n - 8..])))
    } else if n >= 4 {
        Some((half(&s[..4]), half(&s[n - 4..])))
    } else if n > 0 {
        Some((s[0] as u64 | (s[n / 2] as u64) << 8 | (s[n - 1] as u64) << 16, 0))
    } else {
        Some((0, 0))
    }
}

impl ShortNames {
    /// A table of distinct `names`, or `None` when one is longer than 16 bytes, there
    /// are more than [`SHORT_NAMES_MAX`], or no seed tried places them all.
    fn new(names: &[Box<str>]) -> Option<ShortNames> {
        if names.len() > SHORT_NAMES_MAX {
            return None;
        }
        let keys: Vec<((u64, u64), u64)> = names
            .iter()
            .map(|n| name_key(n.as_bytes()).map(|k| (k, n.len() as u64)))
            .collect::<Option<_>>()?;
        // With four slots per name, and then eight, some seed places every name in a
        // slot of its own with high probability (for 64 names, about 0.99 at eight).
        for per_name in [4, 8] {
            let size = (names.len() * per_name).next_power_of_two().max(8);
            let shift = 64 - size.trailing_zeros();
            'seed: for seed in 0..SHORT_NAMES_SEEDS {
                let mut slots = vec![EMPTY; size].into_boxed_slice();
                for (id, &(key, len)) in keys.iter().enumerate() {
                    let slot = &mut slots[slot_of(key, len, seed, shift)];
                    if slot.len != u64::MAX {
                        continue 'seed;
                    }
                    *slot = Slot { key, len, id: id as u64 };
                }
                return Some(ShortNames { slots, shift, seed });
            }
        }
        None
    }

    #[inline]
    fn id(&self, name: &str) -> Option<u32> {
        let key = name_key(name.as_bytes())?;
        let len = name.len() as u64;
        let slot = &self.slots[slot_of(key, len, self.seed, self.shift)];
        (slot.key == key && slot.len == len).then_some(slot.id as u32)
    }
}

/// The slot of a key: a multiplicative hash, top bits.
#[inline]
fn slot_of((first, last): (u64, u64), len: u64, seed: u64, shift: u32) -> usize {
    let h = (first ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ last ^ len;
    (h.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> shift) as usize
}

/// A bounded summary of one categorical feature over one window.
#[derive(Debug, Clone)]
pub struct CategoricalSketch {
    index: Arc<CategoryIndex>,
    max_categories: usize,
    reference_counts: Vec<u64>,
    new_counts: FxHashMap<Box<str>, u64>,
    distinct: usize,
    /// Records whose category arrived after the cap was reached (counted in `__other__`).
    pub overflow: u64,
    pub missing: u64,
    pub invalid: u64,
}

impl CategoricalSketch {
    pub fn new(index: Arc<CategoryIndex>, max_categories: usize) -> Self {
        let reference_counts = vec![0; index.len()];
        CategoricalSketch {
            index,
            max_categories,
            reference_counts,
            new_counts: FxHashMap::default(),
            distinct: 0,
            overflow: 0,
            missing: 0,
            invalid: 0,
        }
    }

    /// Counts one value. Allocates only the first time a new category is admitted,
    /// at most `max_categories` times per window.
    #[inline]
    pub fn observe(&mut self, value: &str) {
        self.observe_n(value, 1);
    }

    /// Counts `n` copies of one value at once (`observe` is `n = 1`, inlined).
    #[inline(always)]
    pub fn observe_n(&mut self, value: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(id) = self.index.id(value) {
            let count = &mut self.reference_counts[id as usize];
            if *count == 0 {
                self.distinct += 1;
            }
            *count += n;
        } else if let Some(count) = self.new_counts.get_mut(value) {
            *count += n;
        } else if self.distinct < self.max_categories {
            self.new_counts.insert(value.into(), n);
            self.distinct += 1;
        } else {
            self.overflow += n;
        }
    }

    /// Values counted (every non-missing, valid value, including `__other__`).
    pub fn count(&self) -> u64 {
        self.reference_counts.iter().sum::<u64>() + self.new_counts.values().sum::<u64>() + self.overflow
    }

    pub fn index(&self) -> &Arc<CategoryIndex> {
        &self.index
    }

    /// Counts of the reference's categories, in the index's order.
    pub fn reference_counts(&self) -> &[u64] {
        &self.reference_counts
    }

    /// Categories the reference does not know, with their counts, sorted by name.
    pub fn new_categories(&self) -> Vec<(&str, u64)> {
        let mut out: Vec<(&str, u64)> = self.new_counts.iter().map(|(k, &v)| (&**k, v)).collect();
        out.sort_unstable();
        out
    }

    /// Folds another window's sketch in; new categories beyond the cap join `__other__`.
    pub fn merge(&mut self, other: &CategoricalSketch) {
        debug_assert!(Arc::ptr_eq(&self.index, &other.index));
        for (a, &b) in self.reference_counts.iter_mut().zip(&other.reference_counts) {
            if *a == 0 && b > 0 {
                self.distinct += 1;
            }
            *a += b;
        }
        for (name, count) in other.new_categories() {
            if let Some(mine) = self.new_counts.get_mut(name) {
                *mine += count;
            } else if self.distinct < self.max_categories {
                self.new_counts.insert(name.into(), count);
                self.distinct += 1;
            } else {
                self.overflow += count;
            }
        }
        self.overflow += other.overflow;
        self.missing += other.missing;
        self.invalid += other.invalid;
    }

    /// Empties the sketch, keeping the reference counts' allocation.
    pub fn reset(&mut self) {
        self.reference_counts.fill(0);
        self.new_counts.clear();
        self.distinct = 0;
        self.overflow = 0;
        self.missing = 0;
        self.invalid = 0;
    }
}

/// The state of a [`CategoricalSketch`] without its reference index, for checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CategoricalSketchState {
    /// `(reference category id, count)` of every category seen, ascending.
    pub reference_counts: Vec<(u32, u64)>,
    /// Categories the reference does not know, sorted by name.
    pub new_counts: Vec<(String, u64)>,
    pub overflow: u64,
    pub missing: u64,
    pub invalid: u64,
}

impl CategoricalSketch {
    pub fn snapshot(&self) -> CategoricalSketchState {
        CategoricalSketchState {
            reference_counts: self
                .reference_counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u32, *c))
                .collect(),
            new_counts: self.new_categories().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            overflow: self.overflow,
            missing: self.missing,
            invalid: self.invalid,
        }
    }

    /// Rebuilds a sketch on `index` from a snapshot taken on the same index.
    pub fn restore(
        index: Arc<CategoryIndex>,
        max_categories: usize,
        state: &CategoricalSketchState,
    ) -> Result<Self, String> {
        let mut sketch = CategoricalSketch::new(index, max_categories);
        let known = sketch.reference_counts.len();
        for &(id, count) in &state.reference_counts {
            let slot = sketch
                .reference_counts
                .get_mut(id as usize)
                .ok_or_else(|| format!("category {id} is outside the reference's {known} categories"))?;
            *slot = count;
            if count > 0 {
                sketch.distinct += 1;
            }
        }
        for (name, count) in &state.new_counts {
            if sketch.index.id(name).is_some() || sketch.new_counts.contains_key(name.as_str()) {
                return Err(format!("category `{name}` is listed twice"));
            }
            sketch.new_counts.insert(name.as_str().into(), *count);
            sketch.distinct += 1;
        }
        if state.new_counts.len() > max_categories {
            return Err(format!(
                "{} new categories, over the cap of {max_categories}",
                state.new_counts.len()
            ));
        }
        sketch.overflow = state.overflow;
        sketch.missing = state.missing;
        sketch.invalid = state.invalid;
        Ok(sketch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name of `names` finds its id, and every other string of `probes` none,
    /// exactly as the general map says.
    fn check(names: &[&str], probes: &[&str]) {
        let index = CategoryIndex::new(names.iter().copied());
        for (i, name) in index.names().iter().enumerate() {
            assert_eq!(index.id(name), Some(i as u32), "{name:?}");
        }
        for probe in probes {
            assert_eq!(index.id(probe), index.ids.get(*probe).copied(), "{probe:?}");
        }
    }

    #[test]
    fn short_names_are_found_exactly() {
        let words =
            ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"];
        assert!(CategoryIndex::new(words).short.is_some());
        // Near misses: other lengths, one byte changed at either end or in the middle,
        // a trailing NUL (keys are not NUL-padded, the length tells them apart).
        let probes = [
            "",
            "a",
            "alph",
            "alphaa",
            "alphA",
            "Alpha",
            "juliet",
            "julietT",
            "juliett\0",
            "charlie\0\0",
            "\0",
            "echo\0",
            "ech",
            "golf ",
            " golf",
            "x".repeat(16).as_str(),
            "x".repeat(17).as_str(),
        ]
        .map(str::to_owned);
        check(&words, &probes.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn every_length_up_to_sixteen_is_exact() {
        // Names of every length 0..=16 that differ in one byte at every position.
        let mut names = Vec::new();
        for len in 0..=16usize {
            let base: String = (0..len).map(|i| (b'a' + i as u8) as char).collect();
            names.push(base.clone());
            for pos in 0..len {
                let mut bytes = base.clone().into_bytes();
                bytes[pos] = b'Z';
                names.push(String::from_utf8(bytes).unwrap());
            }
        }
        let (kept, probes) = names.split_at(names.len() / 2);
        let kept: Vec<&str> = kept.iter().step_by(3).map(String::as_str).take(SHORT_NAMES_MAX).collect();
        let probes: Vec<&str> = probes.iter().chain(names.iter()).map(String::as_str).collect();
        assert!(CategoryIndex::new(kept.iter().copied()).short.is_some());
        check(&kept, &probes);
    }

    #[test]
    fn long_or_many_names_use_the_general_map() {
        let long = ["short", "a name longer than sixteen bytes"];
        assert!(CategoryIndex::new(long).short.is_none());
        check(
            &long,
            &["short", "a name longer than sixteen bytes", "a name longer than sixteen byte", "shor"],
        );
        let many: Vec<String> = (0..SHORT_NAMES_MAX + 1).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(CategoryIndex::new(many.iter().copied()).short.is_none());
        check(&many, &["c0", "c65", "c1000", ""]);
    }

    proptest::proptest! {
        #[test]
        fn the_short_table_agrees_with_the_map(
            names in proptest::collection::vec("[a-c\\x00]{0,16}", 0..40),
            probes in proptest::collection::vec("[a-c\\x00é]{0,18}", 0..40),
        ) {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            proptest::prop_assert!(CategoryIndex::new(refs.iter().copied()).short.is_some());
            let all: Vec<&str> = probes.iter().chain(&names).map(String::as_str).collect();
            check(&refs, &all);
        }
    }
}
