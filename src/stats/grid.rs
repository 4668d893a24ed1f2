//! The reference-quantile grid: how a numeric distribution is sketched.
//!
//! The grid's edges are fixed by the reference once: every distinct reference value when
//! there are at most `cdf_resolution / 2` of them, otherwise the order statistics at
//! that many evenly spaced ranks; joined with as many evenly spaced points between the
//! reference's minimum and maximum, and with the binned metrics' quantile edges. Per cell a sketch keeps exact counts and sums, so
//! * binned counts are exact (the bin edges are grid edges),
//! * the CDF is exact at every edge and just below it, so `ks` is exact when the grid
//!   holds every reference value and otherwise off by at most the reference mass inside
//!   one cell (about `2 / cdf_resolution`),
//! * `wasserstein` is exact in every cell where the two CDFs cannot cross, and in the
//!   tails beyond the reference's range.
//!
//! A hand-written sketch because it is what the spec's tolerances need: deterministic,
//! exactly mergeable, O(1) memory per feature, and an O(1) lookup per value, which
//! no general quantile-sketch crate offers for a reference-aligned grid.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One cell `(e[i-1], e[i]]` of a grid: the values strictly inside it, and the values
/// equal to its right edge (needed for the CDF's left limit at that edge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub interior_count: u64,
    pub interior_sum: f64,
    pub edge_count: u64,
}

impl Cell {
    pub fn count(&self) -> u64 {
        self.interior_count + self.edge_count
    }

    /// Adds one finite value, `on_edge` when it equals the cell's right edge.
    #[inline]
    pub fn add(&mut self, x: f64, on_edge: bool) {
        if on_edge {
            self.edge_count += 1;
        } else {
            self.interior_count += 1;
            self.interior_sum += x;
        }
    }

    pub fn merge(&mut self, other: &Cell) {
        self.interior_count += other.interior_count;
        self.interior_sum += other.interior_sum;
        self.edge_count += other.edge_count;
    }
}

/// The distinct values a grid sketch stands for, sorted, with their counts: each
/// cell's interior at its mean, then its right edge.
pub fn support(edges: &[f64], cells: &[Cell]) -> Vec<(f64, u64)> {
    let mut points = Vec::with_capacity(cells.len() * 2);
    for (i, cell) in cells.iter().enumerate() {
        if cell.interior_count > 0 {
            points.push((cell.interior_sum / cell.interior_count as f64, cell.interior_count));
        }
        if cell.edge_count > 0
            && let Some(&edge) = edges.get(i)
        {
            points.push((edge, cell.edge_count));
        }
    }
    points
}

/// Index of the cell holding `x`: the number of edges strictly below it
/// (numpy's `searchsorted(edges, x, side="left")`).
#[inline]
pub fn locate(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e < x)
}

/// Finds cells in O(1) for the hot path, exactly as `locate` does, with no
/// data-dependent branch in the common case.
///
/// Values map to evenly spaced buckets between the first and last edge through
/// `bucket(x) = round(clamp((x - low) * scale))`, which is monotone in `x` (every step is
/// a correctly rounded, monotone operation). So an edge in a lower bucket than `x` is
/// below `x`, one in a higher bucket is above it, and `locate(x)` is the number of edges
/// in lower buckets (`starts[bucket]`, computed from the edges' own buckets, so no
/// rounding at bucket boundaries can make it wrong) plus the number of edges of `x`'s
/// own bucket below `x`. Edges past that bucket all compare above `x`, so the second
/// term is simply how many of the next `PROBE` edges are below `x`: four comparisons
/// added up, no loop. The edges are stored padded with `+inf` so those four always
/// exist. Only a bucket holding `PROBE` or more edges can need more, and then a plain
/// scan continues (rare: there are twice as many buckets as edges).
///
/// Cloning is cheap (the tables are shared), so each sketch keeps its own copy and
/// reaches the tables without first going through its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridIndex {
    low: f64,
    scale: f64,
    /// The last bucket, `starts.len() - 1`.
    top: f64,
    /// Per bucket, the number of edges in lower buckets.
    starts: Arc<[u32]>,
    /// The edges followed by `PROBE` copies of `+inf`.
    padded: Arc<[f64]>,
}

/// Edges compared per lookup without branching.
const PROBE: usize = 4;

/// 2^52, where the spacing of doubles is 1.
const MAGIC: f64 = 4503599627370496.0;

impl GridIndex {
    pub fn new(edges: &[f64]) -> GridIndex {
        let buckets = (edges.len() * 2).clamp(1, 1 << 16);
        let (low, high) = match (edges.first(), edges.last()) {
            (Some(&l), Some(&h)) if h > l => (l, h),
            (Some(&l), _) => (l, l + 1.0),
            _ => (0.0, 1.0),
        };
        let mut index = GridIndex {
            low,
            scale: buckets as f64 / (high - low),
            top: buckets as f64,
            starts: Arc::new([]),
            padded: Arc::new([]),
        };
        // starts[b] = #{edges e : bucket(e) < b}; edges are sorted and `bucket` is
        // monotone, so a running count over the edges gives it.
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut below = 0usize;
        for b in 0..=buckets {
            while below < edges.len() && index.bucket(edges[below]) < b {
                below += 1;
            }
            starts.push(below as u32);
        }
        index.starts = starts.into();
        index.padded = edges.iter().copied().chain([f64::INFINITY; PROBE]).collect();
        index
    }

    /// Cells of the grid: one per edge, plus the open cell above the last.
    pub fn cells(&self) -> usize {
        self.padded.len() - PROBE + 1
    }

    /// The bucket of a finite `x`, in `0..starts.len()`: `(x - low) * scale` rounded
    /// to the nearest whole number and clamped to the table.
    #[inline]
    fn bucket(&self, x: f64) -> usize {
        let v = (x - self.low) * self.scale;
        // Written as comparisons so they compile to bare `minsd`/`maxsd`: a NaN `v`
        // becomes `top`. The product is NaN only as `0 * inf` (`x == low` with an
        // infinite scale, where every `x > low` gives `+inf`) or `inf * 0` (the
        // overflowing top of a range too wide for a finite scale), so at the top of
        // the order either way, and the bucket stays monotone in `x`.
        let v = if v < self.top { v } else { self.top };
        let v = if v > 0.0 { v } else { 0.0 };
        // Adding 2^52 to a value in [0, 2^32) leaves its nearest whole number in the low
        // mantissa bits: cheaper than a saturating float-to-integer cast, and rounding
        // serves as well as truncation, because all that matters is that the same
        // monotone function buckets the edges and the values.
        (v + MAGIC).to_bits() as u32 as usize
    }

    /// `locate(edges, x)` for a finite `x` and the edges this index was built from,
    /// and whether `x` equals the edge at that position (the cell's right edge). The
    /// position is below [`GridIndex::cells`] for every `x` but NaN.
    #[inline]
    pub fn locate(&self, x: f64) -> (usize, bool) {
        // Unchecked indexing: the checks cost a tenth of the lookup, and the bounds hold
        // by construction, whatever the edges (sorted or not) and `x`.
        let b = self.bucket(x);
        debug_assert!(b < self.starts.len());
        // SAFETY: `bucket` clamps to `top`, which is `starts.len() - 1`.
        let start = unsafe { *self.starts.get_unchecked(b) } as usize;
        debug_assert!(start + PROBE <= self.padded.len());
        // SAFETY: a start counts edges, so it is at most `edges.len()`, and `padded`
        // holds `PROBE` more slots.
        let window: &[f64; PROBE] = unsafe { &*self.padded.as_ptr().add(start).cast::<[f64; PROBE]>() };
        let mut i = start + window.iter().map(|&e| (e < x) as usize).sum::<usize>();
        if i == start + PROBE {
            // Only when some padding slot is below `x`, so `x` is not NaN: the scan
            // stops at the first `+inf` slot at the latest.
            i = self.scan_from(i, x);
        }
        debug_assert!(i < self.padded.len());
        // SAFETY: `i < start + PROBE <= padded.len()`, or the scan stopped inside `padded`.
        (i, unsafe { *self.padded.get_unchecked(i) } == x)
    }

    /// The slow continuation of `locate` for a bucket holding `PROBE` or more edges.
    #[cold]
    #[inline(never)]
    fn scan_from(&self, mut i: usize, x: f64) -> usize {
        // The `+inf` padding stops the scan for any finite `x`.
        while self.padded[i] < x {
            i += 1;
        }
        i
    }
}

/// Adds one finite value to `cells` (one per edge plus the open cell above the last).
#[inline]
pub fn add_value(edges: &[f64], cells: &mut [Cell], x: f64) {
    add_value_at(edges, cells, x, locate(edges, x));
}

/// Adds one finite value whose cell `i` is already known.
#[inline]
pub fn add_value_at(edges: &[f64], cells: &mut [Cell], x: f64, i: usize) {
    cells[i].add(x, edges.get(i) == Some(&x));
}

/// numpy's default (linear) quantile of sorted finite values; `q` in [0, 1].
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    // numpy's _lerp: a + (b - a) * t, evaluated from the nearer end for t >= 0.5.
    if frac >= 0.5 { b - (b - a) * (1.0 - frac) } else { a + (b - a) * frac }
}

/// The binned metrics' edges: `quantile(R, k / bins)` for k in 1..bins, duplicates dropped.
pub fn bin_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let mut edges: Vec<f64> = (1..bins).map(|k| quantile_sorted(sorted, k as f64 / bins as f64)).collect();
    edges.dedup();
    edges
}

/// The grid's edges for sorted finite reference values (see the module comment): half
/// the resolution follows the reference's ranks (every distinct value when there are
/// few), the other half divides `[min, max]` evenly so that no cell is wide where the
/// reference is sparse; the bin edges are always included.
pub fn grid_edges(sorted: &[f64], bin_edges: &[f64], resolution: usize) -> Vec<f64> {
    if sorted.is_empty() {
        return bin_edges.to_vec();
    }
    let half = (resolution / 2).max(1);
    // The distinct values, but no more than one past `half`: a copy of the whole column
    // would double the memory a reference build needs.
    let mut distinct: Vec<f64> = Vec::with_capacity(half + 1);
    for &x in sorted {
        if distinct.last() != Some(&x) {
            if distinct.len() > half {
                break;
            }
            distinct.push(x);
        }
    }
    let mut edges = if distinct.len() <= half {
        distinct
    } else {
        let last = sorted.len() - 1;
        // Order statistics, so a value repeated more than a cell's worth sits on an edge.
        (0..=half).map(|j| sorted[(j as u128 * last as u128 / half as u128) as usize]).collect()
    };
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    if max > min {
        edges.extend((1..half).map(|j| min + (max - min) * (j as f64 / half as f64)));
    }
    edges.extend_from_slice(bin_edges);
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    edges
}

/// For each grid cell, the binned metrics' bin it lies in (bin edges are grid edges).
pub fn bins_of_cells(grid_edges: &[f64], bin_edges: &[f64]) -> Vec<u32> {
    let mut out = Vec::with_capacity(grid_edges.len() + 1);
    out.push(0);
    for &left in grid_edges {
        // Cell i+1 is (left, next]: its values exceed exactly the bin edges <= left.
        out.push(bin_edges.partition_point(|&b| b <= left) as u32);
    }
    out
}

/// Distances between two distributions sketched on the same grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CdfDistances {
    pub ks_statistic: f64,
    /// Unnormalised first Wasserstein distance.
    pub wasserstein: f64,
}

/// `sup |F_R - F_C|` and `integral |F_R - F_C| dx` of two grid sketches.
///
/// The reference has no values above the last edge (it is the reference's maximum) and
/// none below the first (its minimum), so both tails are integrated exactly from sums.
pub fn cdf_distances(edges: &[f64], reference: &[Cell], window: &[Cell]) -> CdfDistances {
    debug_assert_eq!(reference.len(), edges.len() + 1);
    debug_assert_eq!(window.len(), edges.len() + 1);
    let n = reference.iter().map(Cell::count).sum::<u64>() as f64;
    let m = window.iter().map(Cell::count).sum::<u64>() as f64;
    if n == 0.0 || m == 0.0 || edges.is_empty() {
        return CdfDistances { ks_statistic: 0.0, wasserstein: 0.0 };
    }
    let mut ks: f64 = 0.0;
    let mut area = 0.0;

    // Cell 0 is (-inf, e0]: F_R is 0 below e0, so the area is the window's mass there.
    let first = edges[0];
    let (r0, c0) = (&reference[0], &window[0]);
    area += (c0.interior_count as f64 * first - c0.interior_sum) / m;
    ks = ks.max(c0.interior_count as f64 / m - r0.interior_count as f64 / n);
    let mut cum_r = r0.count() as f64 / n;
    let mut cum_c = c0.count() as f64 / m;
    ks = ks.max((cum_r - cum_c).abs());

    for i in 1..edges.len() {
        let (left, right) = (edges[i - 1], edges[i]);
        let (r, c) = (&reference[i], &window[i]);
        let w_r = r.interior_count as f64 / n;
        let w_c = c.interior_count as f64 / m;
        let base = cum_r - cum_c;
        if w_r > 0.0 || w_c > 0.0 {
            let lower = base - w_c;
            let upper = base + w_r;
            // integral over the cell of G(x), the interior mass at or below x: sum(right - x).
            let int_r = (r.interior_count as f64 * right - r.interior_sum) / n;
            let int_c = (c.interior_count as f64 * right - c.interior_sum) / m;
            if lower >= 0.0 || upper <= 0.0 {
                // The difference keeps one sign through the cell: its integral is exact.
                area += (base * (right - left) + int_r - int_c).abs();
            } else {
                area += crossing_cell_area(left, right, base, w_r, w_c, int_r, int_c);
            }
            // Extremes inside the cell: just below the right edge, and (estimated) the
            // point where only one distribution's interior mass has been passed.
            ks = ks.max((base + w_r - w_c).abs());
            if w_r > 0.0 && w_c > 0.0 {
                let mean_r = right - int_r / w_r;
                let mean_c = right - int_c / w_c;
                let middle = if mean_r < mean_c { base + w_r } else { base - w_c };
                ks = ks.max(middle.abs());
            }
        } else {
            area += base.abs() * (right - left);
        }
        cum_r += r.count() as f64 / n;
        cum_c += c.count() as f64 / m;
        ks = ks.max((cum_r - cum_c).abs());
    }

    // The open cell above the last edge: F_R is 1 there.
    let last = edges[edges.len() - 1];
    let top = &window[edges.len()];
    area += (top.interior_sum - top.interior_count as f64 * last) / m;

    CdfDistances { ks_statistic: ks.clamp(0.0, 1.0), wasserstein: area.max(0.0) }
}

/// Area of `|F_R - F_C|` over a cell where the two may cross, modelling each side's
/// interior mass as a point mass at its interior mean (which keeps each side's
/// integral exact).
fn crossing_cell_area(left: f64, right: f64, base: f64, w_r: f64, w_c: f64, int_r: f64, int_c: f64) -> f64 {
    let mean_r = if w_r > 0.0 { right - int_r / w_r } else { right };
    let mean_c = if w_c > 0.0 { right - int_c / w_c } else { right };
    let (first, second) = (mean_r.min(mean_c), mean_r.max(mean_c));
    let middle = if mean_r < mean_c { base + w_r } else { base - w_c };
    base.abs() * (first - left)
        + middle.abs() * (second - first)
        + (base + w_r - w_c).abs() * (right - second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn cells_of(edges: &[f64], values: &[f64]) -> Vec<Cell> {
        let mut cells = vec![Cell::default(); edges.len() + 1];
        for &v in values {
            add_value(edges, &mut cells, v);
        }
        cells
    }

    /// `GridIndex::locate` against the binary search, at, around and between edges.
    fn check_index(edges: &[f64], extra: &[f64]) {
        let index = GridIndex::new(edges);
        let agrees = |x: f64| {
            if !x.is_finite() {
                return;
            }
            let want = locate(edges, x);
            assert_eq!(index.locate(x), (want, edges.get(want) == Some(&x)), "{x} in {} edges", edges.len());
        };
        for &e in edges {
            for x in [e, e.next_up(), e.next_down(), e.next_up().next_up(), e.next_down().next_down()] {
                agrees(x);
            }
        }
        for w in edges.windows(2) {
            agrees(w[0] + (w[1] - w[0]) / 2.0);
        }
        for &x in extra {
            agrees(x);
        }
        for x in [0.0, -0.0, f64::MIN, f64::MAX, f64::MIN_POSITIVE, -f64::MIN_POSITIVE, 1e300, -1e300] {
            agrees(x);
        }
    }

    #[test]
    fn the_index_agrees_with_binary_search() {
        let mut edges: Vec<f64> = (0..300).map(|i| ((i * i) as f64).sqrt() - 50.0).collect();
        edges.dedup();
        let steps: Vec<f64> = (-2000..2000).map(|k| k as f64 * 0.173).collect();
        check_index(&edges, &steps);
        check_index(&[7.0], &[6.0, 8.0]);
        check_index(&[], &[1.0, -1.0]);
        check_index(&[-0.0, 1.0], &[]);
    }

    #[test]
    fn the_index_is_exact_on_crowded_and_extreme_grids() {
        // Most edges in a sliver of the range: buckets there hold many edges.
        let mut crowded: Vec<f64> = (0..1000).map(|i| 1.0 + i as f64 * 1e-9).collect();
        crowded.extend([2.0, 1e6]);
        check_index(&crowded, &[1.0000000005, 1.5]);
        // A range whose width overflows, and one a few ulps wide.
        check_index(&[-1e308, -1.0, 0.0, 1.0, 1e308], &[-5e307, 5e307]);
        check_index(&[f64::MIN, f64::MAX], &[0.0]);
        let tiny: Vec<f64> = (0..10).map(|i| 1.0 + i as f64 * f64::EPSILON).collect();
        check_index(&tiny, &[]);
        let denormal: Vec<f64> = (0..10).map(|i| i as f64 * 5e-324).collect();
        check_index(&denormal, &[]);
        // Whole numbers (a count feature): values sit on edges.
        let counts: Vec<f64> = (0..40).map(f64::from).collect();
        check_index(&counts, &[-3.0, 100.0]);
    }

    proptest::proptest! {
        #[test]
        fn the_index_agrees_with_binary_search_on_random_grids(
            mut edges in proptest::collection::vec(
                proptest::prop_oneof![-1e3..1e3f64, 0.0..1e-6f64, (0..50i32).prop_map(f64::from)],
                0..300,
            ),
            xs in proptest::collection::vec(-2e3..2e3f64, 0..100),
        ) {
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            check_index(&edges, &xs);
        }
    }

    #[test]
    fn locate_is_searchsorted_left() {
        let edges = [1.0, 2.0, 3.0];
        assert_eq!(locate(&edges, 0.5), 0);
        assert_eq!(locate(&edges, 1.0), 0);
        assert_eq!(locate(&edges, 1.5), 1);
        assert_eq!(locate(&edges, 3.0), 2);
        assert_eq!(locate(&edges, 3.5), 3);
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&v, 0.5), 2.5);
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 4.0);
        assert!((quantile_sorted(&v, 0.1) - 1.3).abs() < 1e-15);
    }

    #[test]
    fn exact_grid_gives_exact_distances() {
        let reference = [1.0, 2.0, 2.0, 3.0, 5.0];
        let window = [1.5, 2.0, 4.0, 6.0];
        let edges = grid_edges(&reference, &[], 100);
        let d = cdf_distances(&edges, &cells_of(&edges, &reference), &cells_of(&edges, &window));
        // scipy.stats.ks_2samp([1,2,2,3,5],[1.5,2,4,6]).statistic == 0.3
        assert!((d.ks_statistic - 0.3).abs() < 1e-12, "{d:?}");
        // scipy.stats.wasserstein_distance(...) == 0.825
        assert!((d.wasserstein - 0.825).abs() < 1e-12, "{d:?}");
    }
}
