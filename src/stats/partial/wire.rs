//! The body of an encoded partial (format version 3), after its header: a compact
//! positional binary of LEB128 varints (zigzag for signed values) and little-endian
//! f64 bits. A partial is mostly grid cells, and MessagePack spent ~17 bytes on one
//! (an array of the index, two counts and the interior sum, each with its marker);
//! here a cell is its index's distance from the previous non-empty cell, its interior
//! count with a bit saying whether its interior sum is non-zero, its edge count, and
//! the sum's 8 bytes only when it is non-zero: 11 bytes for a typical cell. Decoding is
//! a loop over a byte slice instead of serde's generic visitor (which was 40% of the
//! owner's CPU in global mode).
//!
//! Every float is carried as its bits, every count as an integer, so a decoded partial
//! is equal to the encoded one, bit for bit (merging stays exact). Reading checks
//! every length against the bytes left and refuses trailing bytes, so a damaged or
//! foreign body is an error, never a panic or a huge allocation.

use crate::stats::categorical::CategoricalSketchState;
use crate::stats::grid::Cell;
use crate::stats::numeric::NumericSketchState;
use crate::stats::sketch::{FeatureSketchState, WindowSketchState};

use super::SourcePartition;

const NUMERIC: u8 = 0;
const CATEGORICAL: u8 = 1;

/// Everything of a partial after its header, by position.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Body {
    pub pane: i64,
    pub source: SourcePartition,
    pub sketch: WindowSketchState,
    pub offsets: Option<(i64, i64)>,
    pub watermark_ms: i64,
    pub late_records: u64,
}

/// Appends the body of a partial to `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    out: &mut Vec<u8>,
    pane: i64,
    source: &SourcePartition,
    sketch: &WindowSketchState,
    offsets: Option<(i64, i64)>,
    watermark_ms: i64,
    late_records: u64,
) {
    signed(out, pane);
    bytes(out, source.topic.as_bytes());
    signed(out, i64::from(source.partition));
    match offsets {
        Some((first, last)) => {
            out.push(1);
            signed(out, first);
            signed(out, last);
        }
        None => out.push(0),
    }
    signed(out, watermark_ms);
    varint(out, late_records);
    varint(out, sketch.records);
    varint(out, sketch.features.len() as u64);
    for feature in &sketch.features {
        match feature {
            FeatureSketchState::Numeric(n) => {
                out.push(NUMERIC);
                for v in [n.count, n.missing, n.non_finite, n.invalid] {
                    varint(out, v);
                }
                for v in [n.min, n.max, n.shifted_sum, n.shifted_sum_sq] {
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
                varint(out, n.cells.len() as u64);
                let mut previous = 0u32;
                for (i, (index, cell)) in n.cells.iter().enumerate() {
                    // Ascending, so every distance but the first index's own is positive;
                    // any other order still round-trips (the distance wraps).
                    let distance = if i == 0 { *index } else { index.wrapping_sub(previous) };
                    varint(out, u64::from(distance));
                    previous = *index;
                    let sum = cell.interior_sum.to_bits();
                    // The count's low bit says whether the sum's bits follow: a sum of +0.0
                    // (no interior value, or values adding to it) costs nothing. (A count
                    // of 2^63 values or more in one cell of one pane would lose its top
                    // bit: centuries of records at any rate.)
                    let with_sum = u64::from(sum != 0);
                    varint(out, cell.interior_count.wrapping_shl(1) | with_sum);
                    varint(out, cell.edge_count);
                    if sum != 0 {
                        out.extend_from_slice(&sum.to_le_bytes());
                    }
                }
            }
            FeatureSketchState::Categorical(c) => {
                out.push(CATEGORICAL);
                varint(out, c.reference_counts.len() as u64);
                let mut previous = 0u32;
                for (i, (id, count)) in c.reference_counts.iter().enumerate() {
                    let distance = if i == 0 { *id } else { id.wrapping_sub(previous) };
                    varint(out, u64::from(distance));
                    previous = *id;
                    varint(out, *count);
                }
                varint(out, c.new_counts.len() as u64);
                for (name, count) in &c.new_counts {
                    bytes(out, name.as_bytes());
                    varint(out, *count);
                }
                for v in [c.overflow, c.missing, c.invalid] {
                    varint(out, v);
                }
            }
        }
    }
}

/// Reads a body written by [`write`]: all of `input`, nothing left over.
pub(super) fn read(input: &[u8]) -> Result<Body, String> {
    let mut r = Reader { input, at: 0 };
    let pane = r.signed()?;
    let topic = r.text()?;
    let partition = i32::try_from(r.signed()?).map_err(|_| "partition out of range".to_owned())?;
    let offsets = match r.byte()? {
        0 => None,
        1 => Some((r.signed()?, r.signed()?)),
        other => return Err(format!("offsets marker {other}")),
    };
    let watermark_ms = r.signed()?;
    let late_records = r.varint()?;
    let records = r.varint()?;
    let count = r.length(1)?;
    let mut features = Vec::with_capacity(count);
    for _ in 0..count {
        features.push(match r.byte()? {
            NUMERIC => {
                let [count, missing, non_finite, invalid] =
                    [r.varint()?, r.varint()?, r.varint()?, r.varint()?];
                let [min, max, shifted_sum, shifted_sum_sq] =
                    [r.float()?, r.float()?, r.float()?, r.float()?];
                // A cell takes at least three bytes.
                let n = r.length(3)?;
                let mut cells = Vec::with_capacity(n);
                let mut previous = 0u32;
                for i in 0..n {
                    let distance = r.index()?;
                    let index = if i == 0 { distance } else { previous.wrapping_add(distance) };
                    previous = index;
                    let flagged = r.varint()?;
                    let edge_count = r.varint()?;
                    let interior_sum = if flagged & 1 == 1 { r.float()? } else { 0.0 };
                    cells.push((index, Cell { interior_count: flagged >> 1, interior_sum, edge_count }));
                }
                FeatureSketchState::Numeric(NumericSketchState {
                    cells,
                    count,
                    min,
                    max,
                    shifted_sum,
                    shifted_sum_sq,
                    missing,
                    non_finite,
                    invalid,
                })
            }
            CATEGORICAL => {
                let n = r.length(2)?;
                let mut reference_counts = Vec::with_capacity(n);
                let mut previous = 0u32;
                for i in 0..n {
                    let distance = r.index()?;
                    let id = if i == 0 { distance } else { previous.wrapping_add(distance) };
                    previous = id;
                    reference_counts.push((id, r.varint()?));
                }
                let n = r.length(2)?;
                let mut new_counts = Vec::with_capacity(n);
                for _ in 0..n {
                    new_counts.push((r.text()?, r.varint()?));
                }
                let [overflow, missing, invalid] = [r.varint()?, r.varint()?, r.varint()?];
                FeatureSketchState::Categorical(CategoricalSketchState {
                    reference_counts,
                    new_counts,
                    overflow,
                    missing,
                    invalid,
                })
            }
            other => return Err(format!("feature kind {other}")),
        });
    }
    if r.at != input.len() {
        return Err(format!("{} bytes after the partial", input.len() - r.at));
    }
    Ok(Body {
        pane,
        source: SourcePartition { topic, partition },
        sketch: WindowSketchState { records, features },
        offsets,
        watermark_ms,
        late_records,
    })
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn signed(out: &mut Vec<u8>, v: i64) {
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    input: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.input.get(self.at).ok_or("cut short")?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err("a varint over 64 bits".into());
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint over 10 bytes".into())
    }

    fn signed(&mut self) -> Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn index(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| "an index over 32 bits".to_owned())
    }

    fn float(&mut self) -> Result<f64, String> {
        let end = self.at + 8;
        let b: [u8; 8] = self.input.get(self.at..end).and_then(|s| s.try_into().ok()).ok_or("cut short")?;
        self.at = end;
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    /// A count of items that take at least `min_bytes` each, refused when the bytes
    /// left cannot hold them (so no allocation is sized by a damaged length).
    fn length(&mut self, min_bytes: usize) -> Result<usize, String> {
        let n = self.varint()?;
        let left = (self.input.len() - self.at) as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(format!("{n} items in {left} bytes"));
        }
        Ok(n as usize)
    }

    fn text(&mut self) -> Result<String, String> {
        let n = self.length(1)?;
        let s = self.input.get(self.at..self.at + n).ok_or("cut short")?;
        self.at += n;
        String::from_utf8(s.to_vec()).map_err(|_| "a name that is not UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -1e6..1e6f64
        ]
    }

    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![0..300u64, any::<u64>()]
    }

    fn cell() -> impl Strategy<Value = Cell> {
        (prop_oneof![0..300u64, 0..(u64::MAX >> 1)], float(), count()).prop_map(
            |(interior_count, interior_sum, edge_count)| Cell { interior_count, interior_sum, edge_count },
        )
    }

    fn feature() -> impl Strategy<Value = FeatureSketchState> {
        let numeric = (
            proptest::collection::btree_map(any::<u32>(), cell(), 0..40),
            proptest::array::uniform4(count()),
            proptest::array::uniform4(float()),
        )
            .prop_map(|(cells, [count, missing, non_finite, invalid], [min, max, s, sq])| {
                FeatureSketchState::Numeric(NumericSketchState {
                    cells: cells.into_iter().collect(),
                    count,
                    min,
                    max,
                    shifted_sum: s,
                    shifted_sum_sq: sq,
                    missing,
                    non_finite,
                    invalid,
                })
            });
        let categorical = (
            proptest::collection::btree_map(any::<u32>(), count(), 0..10),
            proptest::collection::btree_map(".{0,8}", count(), 0..5),
            proptest::array::uniform3(count()),
        )
            .prop_map(|(r, n, [overflow, missing, invalid])| {
                FeatureSketchState::Categorical(CategoricalSketchState {
                    reference_counts: r.into_iter().collect(),
                    new_counts: n.into_iter().collect(),
                    overflow,
                    missing,
                    invalid,
                })
            });
        prop_oneof![numeric, categorical]
    }

    fn body() -> impl Strategy<Value = Body> {
        (
            any::<i64>(),
            ".{0,12}",
            any::<i32>(),
            (count(), proptest::collection::vec(feature(), 0..6)),
            proptest::option::of((any::<i64>(), any::<i64>())),
            any::<i64>(),
            count(),
        )
            .prop_map(
                |(pane, topic, partition, (records, features), offsets, watermark_ms, late_records)| Body {
                    pane,
                    source: SourcePartition { topic, partition },
                    sketch: WindowSketchState { records, features },
                    offsets,
                    watermark_ms,
                    late_records,
                },
            )
    }

    fn encoded(b: &Body) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, b.pane, &b.source, &b.sketch, b.offsets, b.watermark_ms, b.late_records);
        out
    }

    /// Floats compared by their bits (NaN, -0.0), everything else as it is.
    fn bits(b: &Body) -> String {
        let mut text =
            format!("{:?}", (b.pane, &b.source, b.offsets, b.watermark_ms, b.late_records, b.sketch.records));
        for f in &b.sketch.features {
            match f {
                FeatureSketchState::Numeric(n) => {
                    let cells: Vec<_> = n
                        .cells
                        .iter()
                        .map(|(i, c)| (i, c.interior_count, c.interior_sum.to_bits(), c.edge_count))
                        .collect();
                    let floats = [n.min, n.max, n.shifted_sum, n.shifted_sum_sq].map(f64::to_bits);
                    text +=
                        &format!("{cells:?}{:?}{floats:?}", (n.count, n.missing, n.non_finite, n.invalid));
                }
                FeatureSketchState::Categorical(c) => text += &format!("{c:?}"),
            }
        }
        text
    }

    proptest! {
        #[test]
        fn a_body_round_trips_bit_for_bit(b in body()) {
            let bytes = encoded(&b);
            let back = read(&bytes).map_err(TestCaseError::fail)?;
            prop_assert_eq!(bits(&back), bits(&b));
        }

        /// Cut short, or with a byte changed, a body is refused or read as some body;
        /// never a panic, and never with bytes left over.
        #[test]
        fn a_damaged_body_is_refused_or_read_never_a_panic(b in body(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
            let bytes = encoded(&b);
            if !bytes.is_empty() {
                let at = cut.index(bytes.len());
                prop_assert!(read(&bytes[..at]).is_err());
                let mut changed = bytes.clone();
                changed[at] ^= flip.max(1);
                let _ = read(&changed);
                let mut longer = bytes.clone();
                longer.push(0);
                prop_assert!(read(&longer).is_err());
            }
        }
    }

    #[test]
    fn a_typical_cell_takes_eleven_bytes() {
        let cells: Vec<(u32, Cell)> = (0..100u32)
            .map(|i| {
                (
                    3 + 2 * i,
                    Cell {
                        interior_count: 10 + u64::from(i % 50),
                        interior_sum: 1.5 * f64::from(i + 1),
                        edge_count: 0,
                    },
                )
            })
            .collect();
        let sketch = WindowSketchState {
            records: 7000,
            features: vec![FeatureSketchState::Numeric(NumericSketchState {
                cells,
                count: 7000,
                min: 0.0,
                max: 1.0,
                shifted_sum: 2.0,
                shifted_sum_sq: 3.0,
                missing: 0,
                non_finite: 0,
                invalid: 0,
            })],
        };
        let source = SourcePartition { topic: "t".into(), partition: 0 };
        let mut without = Vec::new();
        write(&mut without, 1, &source, &WindowSketchState { records: 0, features: vec![] }, None, 0, 0);
        let mut with = Vec::new();
        write(&mut with, 1, &source, &sketch, None, 0, 0);
        // 100 cells of 1 (distance) + 1 (count < 64, flagged) + 1 (edge) + 8 (sum) bytes,
        // the feature's counts, moments, tag and cell count, the records.
        let per_feature = 1 + 2 + 1 + 1 + 1 + 4 * 8 + 1;
        assert_eq!(with.len() - without.len(), 100 * 11 + per_feature + 1);
    }
}
