//! The categorical feature sketch: exact counts for the reference's categories and for
//! at most `max_categories` distinct values per window, then one `__other__` bucket.

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
        index
    }

    #[inline]
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
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
        if let Some(id) = self.index.id(value) {
            let count = &mut self.reference_counts[id as usize];
            if *count == 0 {
                self.distinct += 1;
            }
            *count += 1;
        } else if let Some(count) = self.new_counts.get_mut(value) {
            *count += 1;
        } else if self.distinct < self.max_categories {
            self.new_counts.insert(value.into(), 1);
            self.distinct += 1;
        } else {
            self.overflow += 1;
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
