//! The numeric feature sketch: exact moments, exact counts of missing / non-finite /
//! invalid values, and the reference grid's cells (see [`super::grid`]).

use super::grid::{self, Cell};
use std::sync::Arc;

/// What a numeric sketch needs from the reference: the grid edges, and the reference
/// mean, by which moments are shifted so the variance stays accurate for large values.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericGrid {
    pub edges: Vec<f64>,
    pub shift: f64,
    pub index: grid::GridIndex,
}

impl NumericGrid {
    pub fn new(edges: Vec<f64>, shift: f64) -> NumericGrid {
        let index = grid::GridIndex::new(&edges);
        NumericGrid { edges, shift, index }
    }
}

/// Moments and counts that need no grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Population standard deviation (ddof = 0).
    pub std: f64,
}

/// A mergeable, fixed-size summary of one numeric feature over one window.
#[derive(Debug, Clone)]
pub struct NumericSketch {
    grid: Arc<NumericGrid>,
    /// `grid.index` and `grid.shift`, copied so that `observe` starts from them
    /// without a load of the grid first.
    index: grid::GridIndex,
    shift: f64,
    /// `index.cells()` cells, never resized.
    cells: Vec<Cell>,
    count: u64,
    min: f64,
    max: f64,
    shifted_sum: f64,
    shifted_sum_sq: f64,
    pub missing: u64,
    pub non_finite: u64,
    pub invalid: u64,
}

/// Asks for the cache line at `p` ahead of its use (a hint: no effect on results, and
/// no fault for any address).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl NumericSketch {
    pub fn new(grid: Arc<NumericGrid>) -> Self {
        let cells = vec![Cell::default(); grid.index.cells()];
        NumericSketch {
            index: grid.index.clone(),
            shift: grid.shift,
            grid,
            cells,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            shifted_sum: 0.0,
            shifted_sum_sq: 0.0,
            missing: 0,
            non_finite: 0,
            invalid: 0,
        }
    }

    /// Adds one value; NaN and infinities are counted, never sketched. Always inlined:
    /// left to itself the compiler calls it out of line from the decoders' loops
    /// (`JsonDecoder::apply`, `fold_batch`), which then run about 5% slower.
    #[inline(always)]
    pub fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            self.non_finite += 1;
            return;
        }
        let (i, on_edge) = self.index.locate(x);
        self.add_located(x, i, on_edge);
    }

    /// Adds finite `x`, which `index.locate` put in cell `i` (`on_edge`).
    #[inline(always)]
    fn add_located(&mut self, x: f64, i: usize, on_edge: bool) {
        debug_assert!(i < self.cells.len());
        // SAFETY: for a finite `x`, `locate` gives a position below `index.cells()`, the
        // length of `cells`. (A tenth of the cost of `observe` was bounds checks.)
        unsafe { self.cells.get_unchecked_mut(i) }.add(x, on_edge);
        self.count += 1;
        // `x` is finite and the extremes are never NaN, so a plain comparison is
        // `f64::min`/`max` without their NaN handling.
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        let d = x - self.shift;
        self.shifted_sum += d;
        self.shifted_sum_sq += d * d;
    }

    /// Adds a column of values, as [`observe`](Self::observe) one by one does, bit for
    /// bit (each cell and each moment sees the values in the same order). In chunks:
    /// first every value's cell is located and its cache line asked for, then the
    /// values are added. The cells are the sketch's memory (a few tens of KB per
    /// feature, more than the core's cache once several windows are open, as in global
    /// mode's pane per partition), and one value's add waited on its cell's load before
    /// the next lookup began; located ahead, the loads overlap.
    pub fn observe_slice(&mut self, values: &[f64]) {
        const CHUNK: usize = 32;
        let mut located = [(0usize, false); CHUNK];
        for chunk in values.chunks(CHUNK) {
            for (slot, &x) in located.iter_mut().zip(chunk) {
                if x.is_finite() {
                    *slot = self.index.locate(x);
                    debug_assert!(slot.0 < self.cells.len());
                    prefetch(self.cells.as_ptr().wrapping_add(slot.0));
                }
            }
            for (&(i, on_edge), &x) in located.iter().zip(chunk) {
                if !x.is_finite() {
                    self.non_finite += 1;
                    continue;
                }
                self.add_located(x, i, on_edge);
            }
        }
    }

    /// Adds `n` copies of one value at once (resampled windows, not the hot path).
    pub fn observe_n(&mut self, x: f64, n: u64) {
        if n == 0 {
            return;
        }
        if !x.is_finite() {
            self.non_finite += n;
            return;
        }
        let (i, on_edge) = self.index.locate(x);
        let Some(cell) = self.cells.get_mut(i) else { return };
        if on_edge {
            cell.edge_count += n;
        } else {
            cell.interior_count += n;
            cell.interior_sum += x * n as f64;
        }
        self.count += n;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let d = x - self.shift;
        self.shifted_sum += d * n as f64;
        self.shifted_sum_sq += d * d * n as f64;
    }

    pub fn grid(&self) -> &Arc<NumericGrid> {
        &self.grid
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// Finite values sketched.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn moments(&self) -> Option<Moments> {
        if self.count == 0 {
            return None;
        }
        let m = self.count as f64;
        let mean_shifted = self.shifted_sum / m;
        let variance = (self.shifted_sum_sq / m - mean_shifted * mean_shifted).max(0.0);
        Some(Moments {
            count: self.count,
            min: self.min,
            max: self.max,
            mean: self.grid.shift + mean_shifted,
            std: variance.sqrt(),
        })
    }

    /// Counts per bin of the binned metrics, given each cell's bin.
    pub fn bin_counts(&self, cell_bins: &[u32], bins: usize) -> Vec<u64> {
        let mut out = vec![0u64; bins];
        for (cell, &bin) in self.cells.iter().zip(cell_bins) {
            out[bin as usize] += cell.count();
        }
        out
    }

    /// Folds another sketch of the same grid into this one.
    pub fn merge(&mut self, other: &NumericSketch) {
        debug_assert!(Arc::ptr_eq(&self.grid, &other.grid) || self.grid == other.grid);
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            a.merge(b);
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.shifted_sum += other.shifted_sum;
        self.shifted_sum_sq += other.shifted_sum_sq;
        self.missing += other.missing;
        self.non_finite += other.non_finite;
        self.invalid += other.invalid;
    }

    /// Empties the sketch, keeping its allocation.
    pub fn reset(&mut self) {
        self.cells.fill(Cell::default());
        self.count = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.shifted_sum = 0.0;
        self.shifted_sum_sq = 0.0;
        self.missing = 0;
        self.non_finite = 0;
        self.invalid = 0;
    }
}

/// The state of a [`NumericSketch`] without its grid, for checkpoints: only the cells
/// that hold values (a window rarely touches all of them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NumericSketchState {
    /// `(cell index, cell)` of every non-empty cell, ascending.
    pub cells: Vec<(u32, Cell)>,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub shifted_sum: f64,
    pub shifted_sum_sq: f64,
    pub missing: u64,
    pub non_finite: u64,
    pub invalid: u64,
}

impl NumericSketch {
    pub fn snapshot(&self) -> NumericSketchState {
        NumericSketchState {
            cells: self
                .cells
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != Cell::default())
                .map(|(i, c)| (i as u32, *c))
                .collect(),
            count: self.count,
            min: self.min,
            max: self.max,
            shifted_sum: self.shifted_sum,
            shifted_sum_sq: self.shifted_sum_sq,
            missing: self.missing,
            non_finite: self.non_finite,
            invalid: self.invalid,
        }
    }

    /// Rebuilds a sketch on `grid` from a snapshot taken on the same grid.
    pub fn restore(grid: Arc<NumericGrid>, state: &NumericSketchState) -> Result<Self, String> {
        let mut sketch = NumericSketch::new(grid);
        let cells = sketch.cells.len();
        for &(i, cell) in &state.cells {
            let slot = sketch
                .cells
                .get_mut(i as usize)
                .ok_or_else(|| format!("cell {i} is outside the reference grid of {cells} cells"))?;
            *slot = cell;
        }
        let counted: u64 = sketch.cells.iter().map(Cell::count).sum();
        if counted != state.count {
            return Err(format!("cells hold {counted} values but the count is {}", state.count));
        }
        sketch.count = state.count;
        sketch.min = state.min;
        sketch.max = state.max;
        sketch.shifted_sum = state.shifted_sum;
        sketch.shifted_sum_sq = state.shifted_sum_sq;
        sketch.missing = state.missing;
        sketch.non_finite = state.non_finite;
        sketch.invalid = state.invalid;
        Ok(sketch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// The hot path (`GridIndex` and unchecked cells) fills exactly the cells that
        /// the binary search of `grid::add_value` does, sums bit for bit.
        #[test]
        fn observe_matches_the_binary_search(
            mut edges in proptest::collection::vec(
                proptest::prop_oneof![-1e3..1e3f64, (0..40i32).prop_map(f64::from)],
                0..200,
            ),
            xs in proptest::collection::vec(
                proptest::prop_oneof![-2e3..2e3f64, (-5..45i32).prop_map(f64::from)],
                0..300,
            ),
        ) {
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            let mut want = vec![Cell::default(); edges.len() + 1];
            let mut sketch = NumericSketch::new(Arc::new(NumericGrid::new(edges.clone(), 0.5)));
            for &x in xs.iter().chain(&edges).chain(&[f64::NAN, f64::INFINITY, -f64::INFINITY]) {
                if x.is_finite() {
                    grid::add_value(&edges, &mut want, x);
                }
                sketch.observe(x);
            }
            let bits = |cells: &[Cell]| cells.iter().map(|c| (c.interior_count, c.interior_sum.to_bits(), c.edge_count)).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bits(sketch.cells()), bits(&want));
            proptest::prop_assert_eq!(sketch.non_finite, 3);
        }

        /// A column folded at once (chunks located ahead) leaves the sketch one value at
        /// a time leaves, bit for bit, whatever the mix of finite and non-finite values.
        #[test]
        fn observe_slice_matches_observe_bit_for_bit(
            mut edges in proptest::collection::vec(-1e3..1e3f64, 0..100),
            xs in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -2e3..2e3f64,
                    1 => (-5..45i32).prop_map(f64::from),
                    1 => proptest::sample::select(vec![f64::NAN, f64::INFINITY, -f64::INFINITY]),
                ],
                0..200,
            ),
            split in 0usize..200,
        ) {
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            xs.iter().copied().filter(|x| x.is_finite()).take(3).for_each(|x| edges.push(x));
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            let grid = Arc::new(NumericGrid::new(edges, 0.25));
            let (mut one, mut slices) = (NumericSketch::new(grid.clone()), NumericSketch::new(grid));
            xs.iter().for_each(|&x| one.observe(x));
            let (a, b) = xs.split_at(split.min(xs.len()));
            slices.observe_slice(a);
            slices.observe_slice(b);
            let bits = |s: &NumericSketch| {
                let st = s.snapshot();
                let cells: Vec<_> = st.cells.iter().map(|(i, c)| (*i, c.interior_count, c.interior_sum.to_bits(), c.edge_count)).collect();
                (cells, st.count, st.min.to_bits(), st.max.to_bits(), st.shifted_sum.to_bits(), st.shifted_sum_sq.to_bits(), st.non_finite)
            };
            proptest::prop_assert_eq!(bits(&slices), bits(&one));
        }
    }
}
