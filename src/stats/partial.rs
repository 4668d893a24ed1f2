//! Partial windows: what one instance knows of one pane of a global window, from one
//! source partition (the pane's sketch, its record count, the offset range it covers
//! and the partition's watermark), with a header naming the stream, window spec and
//! reference it was folded against; their versioned binary encoding; and the merge of
//! a pane's partials into the sketch one instance reading every partition would hold.
//! Pure: the Kafka side (publishing, consuming, who merges) lives in `crate::scale`.
//!
//! Merging is exact for every count (grid cells, categories, missing, invalid, records):
//! the sketches add. Float sums (cell interiors, the shifted moments) are added in one
//! canonical order (pane, then topic, then partition) whatever order the partials
//! arrived in, so the merged window is the same bit for bit whoever merges it. Against
//! one instance that read the partitions interleaved, the cell sums are equal whenever
//! they are exact in f64 (e.g. integer-valued features) and the shifted moments (the
//! values minus a non-integral shift) agree to float rounding; scores agree to 1e-9.
//! One instance is no more exact than that itself: its sums depend on how the
//! consumer interleaved the partitions.

use super::reference::Reference;
use super::sketch::{WindowSketch, WindowSketchState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod wire;

/// What the first field of every encoded partial says it is.
pub const PARTIAL_FORMAT: &str = "driftscope.partial";
/// Bumped on any change to [`Partial`]'s encoding; a partial of another version is
/// refused by name, never guessed at.
pub const PARTIAL_VERSION: u32 = 3;

/// What a partial was folded against. Instances that disagree on any of it do not
/// merge: their sketches would not add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialHeader {
    pub format: String,
    pub version: u32,
    pub stream: String,
    /// The window spec, as `StreamState::fingerprint` writes it.
    pub window: String,
    /// The reference digest, as `StreamState::fingerprint` computes it.
    pub reference: u32,
}

impl PartialHeader {
    pub fn new(stream: &str, window: &str, reference: u32) -> Self {
        PartialHeader {
            format: PARTIAL_FORMAT.into(),
            version: PARTIAL_VERSION,
            stream: stream.into(),
            window: window.into(),
            reference,
        }
    }
}

/// A topic partition the records came from: global, unlike the per-instance source
/// numbers of [`super::window::Span`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourcePartition {
    pub topic: String,
    pub partition: i32,
}

/// One pane of one stream from one source partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub header: PartialHeader,
    /// The pane index: time panes cover `[pane * pane_ms, (pane + 1) * pane_ms)`.
    pub pane: i64,
    pub source: SourcePartition,
    /// The pane's records from this partition (`records` is the record count).
    pub sketch: WindowSketchState,
    /// First and last offset folded in; `None` for a partial that only carries the
    /// watermark (the partition had no record in the pane).
    pub offsets: Option<(i64, i64)>,
    /// The partition's watermark when the partial was closed: every pane ending at or
    /// before it is complete from this partition.
    pub watermark_ms: i64,
    /// Records of this partition that arrived after their pane had closed.
    pub late_records: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PartialError {
    #[error("not a driftscope partial ({0}): is the partials topic shared with something else?")]
    NotAPartial(String),
    #[error(
        "a partial of format version {found}, this driftscope reads version {expected}: every instance of \
         a deployment must run the same driftscope version (or give the new version its own \
         `scale.partials_topic`)"
    )]
    Version { found: u32, expected: u32 },
    #[error(
        "stream `{stream}`: instances disagree on its {what} ({ours} here, {theirs} in a partial from \
         {topic}/{partition}): give every instance the same config and reference; the stream is not scored \
         until they agree"
    )]
    Disagree {
        stream: String,
        what: &'static str,
        ours: String,
        theirs: String,
        topic: String,
        partition: i32,
    },
    #[error("pane {pane} of {topic}/{partition} is in the merge twice")]
    Duplicate { pane: i64, topic: String, partition: i32 },
    #[error("pane {pane} of {topic}/{partition}: {message}")]
    Sketch { pane: i64, topic: String, partition: i32, message: String },
}

impl Partial {
    /// The Kafka key: a replay of the same pane and partition overwrites (compaction)
    /// instead of adding. JSON, so names holding any character stay unambiguous.
    pub fn key(stream: &str, pane: i64, source: &SourcePartition) -> Vec<u8> {
        serde_json::to_vec(&(stream, pane, &source.topic, source.partition)).unwrap_or_default()
    }

    /// The header by field name, so that any version can read it and refuse a partial
    /// of another version by name; then the rest by position in the compact binary of
    /// [`wire`]: a pane's grid cells are most of a partial (version 1 wrote every
    /// cell's fields by name, 813 KB per partial for the bench schema's 26 features;
    /// version 2 MessagePack by position, 233 KB; version 3 varints and the sums' bits).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a plain struct into a Vec cannot fail.
        let mut out = rmp_serde::to_vec_named(&self.header).unwrap_or_default();
        wire::write(
            &mut out,
            self.pane,
            &self.source,
            &self.sketch,
            self.offsets,
            self.watermark_ms,
            self.late_records,
        );
        out
    }

    /// Decodes a partial, checking its format and version before anything else.
    pub fn decode(bytes: &[u8]) -> Result<Partial, PartialError> {
        #[derive(Deserialize)]
        struct ProbeHeader {
            format: String,
            version: u32,
        }
        let not_a_partial = |e: rmp_serde::decode::Error| PartialError::NotAPartial(e.to_string());
        let probe = match ProbeHeader::deserialize(&mut rmp_serde::Deserializer::from_read_ref(bytes)) {
            Ok(probe) => probe,
            Err(e) => {
                // Version 1 was one map with the header under `header`.
                #[derive(Deserialize)]
                struct VersionOne {
                    header: ProbeHeader,
                }
                return match rmp_serde::from_slice::<VersionOne>(bytes) {
                    Ok(v1) if v1.header.format == PARTIAL_FORMAT => {
                        Err(PartialError::Version { found: v1.header.version, expected: PARTIAL_VERSION })
                    }
                    _ => Err(not_a_partial(e)),
                };
            }
        };
        if probe.format != PARTIAL_FORMAT {
            return Err(PartialError::NotAPartial(format!("format `{}`", probe.format)));
        }
        if probe.version != PARTIAL_VERSION {
            return Err(PartialError::Version { found: probe.version, expected: PARTIAL_VERSION });
        }
        // Read through a cursor, which says where the header ends and the body begins
        // (MessagePack reads exactly the bytes of a value).
        let mut cursor = std::io::Cursor::new(bytes);
        let header = PartialHeader::deserialize(&mut rmp_serde::Deserializer::new(&mut cursor))
            .map_err(not_a_partial)?;
        let rest = bytes.get(cursor.position() as usize..).unwrap_or_default();
        let body = wire::read(rest).map_err(|e| PartialError::NotAPartial(format!("its body: {e}")))?;
        Ok(Partial {
            header,
            pane: body.pane,
            source: body.source,
            sketch: body.sketch,
            offsets: body.offsets,
            watermark_ms: body.watermark_ms,
            late_records: body.late_records,
        })
    }

    /// Refuses a partial folded against another window spec or reference than `ours`.
    pub fn check(&self, ours: &PartialHeader) -> Result<(), PartialError> {
        let disagree = |what, a: String, b: String| PartialError::Disagree {
            stream: ours.stream.clone(),
            what,
            ours: a,
            theirs: b,
            topic: self.source.topic.clone(),
            partition: self.source.partition,
        };
        if self.header.window != ours.window {
            return Err(disagree("window", ours.window.clone(), self.header.window.clone()));
        }
        if self.header.reference != ours.reference {
            return Err(disagree(
                "reference",
                format!("digest {:08x}", ours.reference),
                format!("digest {:08x}", self.header.reference),
            ));
        }
        Ok(())
    }
}

/// What a merge of partials covered, per source partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub source: SourcePartition,
    /// First and last offset over the merged panes; `None`: no record from it.
    pub offsets: Option<(i64, i64)>,
    pub records: u64,
}

/// A window merged from partials.
#[derive(Debug, Clone)]
pub struct Merged {
    pub sketch: WindowSketch,
    pub contributions: Vec<Contribution>,
    pub late_records: u64,
}

/// Merges partials (of one stream, any panes, any order) into one window sketch of
/// `reference`, adding in the canonical order (pane, topic, partition). Each partial
/// must match `header`; a (pane, partition) given twice is refused (the caller keeps
/// the latest, as compaction does).
pub fn merge(
    reference: &Reference,
    header: &PartialHeader,
    partials: &[&Partial],
) -> Result<Merged, PartialError> {
    let mut ordered: BTreeMap<(i64, &SourcePartition), &Partial> = BTreeMap::new();
    for p in partials {
        p.check(header)?;
        if ordered.insert((p.pane, &p.source), p).is_some() {
            return Err(PartialError::Duplicate {
                pane: p.pane,
                topic: p.source.topic.clone(),
                partition: p.source.partition,
            });
        }
    }
    let mut sketch = reference.new_window();
    let mut contributions: BTreeMap<&SourcePartition, Contribution> = BTreeMap::new();
    let mut late_records = 0;
    for ((pane, source), p) in ordered {
        let part = reference.restore_window(&p.sketch).map_err(|message| PartialError::Sketch {
            pane,
            topic: source.topic.clone(),
            partition: source.partition,
            message,
        })?;
        sketch.merge(&part);
        late_records += p.late_records;
        let c = contributions.entry(source).or_insert_with(|| Contribution {
            source: source.clone(),
            offsets: None,
            records: 0,
        });
        c.records += p.sketch.records;
        if let Some((first, last)) = p.offsets {
            c.offsets = Some(c.offsets.map_or((first, last), |(f, l)| (f.min(first), l.max(last))));
        }
    }
    Ok(Merged { sketch, contributions: contributions.into_values().collect(), late_records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::profile::{FeatureSpec, ProfileBuilder};
    use crate::stats::sketch::{FeatureSketchState, ValueSink};
    use crate::stats::{DriftSettings, FeatureKind, WindowInfo, score_window};

    fn reference() -> Reference {
        let specs = vec![
            FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
            FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
        ];
        let mut b = ProfileBuilder::new(specs, 256, 50);
        b.add_records(1000);
        for i in 0..1000 {
            b.numeric(0, (i % 97) as f64 * 1.5);
            b.category(1, ["a", "b", "c"][i % 3]);
        }
        let profile = b.finish("test".into(), "now".into());
        let settings = DriftSettings { cdf_resolution: 256, min_samples: 1, ..Default::default() };
        Reference::new(profile, settings, &BTreeMap::new()).unwrap()
    }

    /// A small deterministic generator, so the test needs no seed plumbing.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// Records as (pane, partition, offset, x, category); `integer` keeps x integral
    /// so every float sum is exact.
    fn records(n: usize, integer: bool, seed: u64) -> Vec<(i64, i32, i64, f64, String)> {
        let mut g = Lcg(seed);
        let mut offsets = [0i64; 6];
        (0..n)
            .map(|_| {
                let partition = (g.next() % 6) as i32;
                let pane = (g.next() % 3) as i64;
                offsets[partition as usize] += 1;
                let x =
                    if integer { (g.next() % 200) as f64 } else { (g.next() % 20000) as f64 * 0.0137 - 40.0 };
                let c = ["a", "b", "c", "new1", "new2"][(g.next() % 5) as usize].to_string();
                (pane, partition, offsets[partition as usize], x, c)
            })
            .collect()
    }

    fn fold(s: &mut WindowSketch, x: f64, c: &str) {
        s.add_records(1);
        s.numeric(0, x);
        if c == "new2" { s.missing(1) } else { s.category(1, c) }
    }

    /// The partials one instance per partition would publish for `recs`.
    fn partials(r: &Reference, h: &PartialHeader, recs: &[(i64, i32, i64, f64, String)]) -> Vec<Partial> {
        let mut by: BTreeMap<(i64, i32), (WindowSketch, i64, i64)> = BTreeMap::new();
        for (pane, partition, offset, x, c) in recs {
            let e = by.entry((*pane, *partition)).or_insert_with(|| (r.new_window(), i64::MAX, i64::MIN));
            fold(&mut e.0, *x, c);
            e.1 = e.1.min(*offset);
            e.2 = e.2.max(*offset);
        }
        by.into_iter()
            .map(|((pane, partition), (s, first, last))| Partial {
                header: h.clone(),
                pane,
                source: SourcePartition { topic: "t".into(), partition },
                sketch: s.snapshot(),
                offsets: Some((first, last)),
                watermark_ms: 0,
                late_records: 1,
            })
            .collect()
    }

    fn whole(r: &Reference, recs: &[(i64, i32, i64, f64, String)]) -> WindowSketch {
        let mut s = r.new_window();
        recs.iter().for_each(|(_, _, _, x, c)| fold(&mut s, *x, c));
        s
    }

    fn shuffled(items: &[Partial], seed: u64) -> Vec<&Partial> {
        let mut v: Vec<&Partial> = items.iter().collect();
        let mut g = Lcg(seed);
        for i in (1..v.len()).rev() {
            v.swap(i, (g.next() % (i as u64 + 1)) as usize);
        }
        v
    }

    #[test]
    fn merging_in_any_order_equals_one_instance_exactly_when_sums_are_exact() {
        // The moments are summed around a non-integral shift, so only they round.
        fn rounded_moments(mut s: WindowSketchState) -> (WindowSketchState, f64, f64) {
            let FeatureSketchState::Numeric(n) = &mut s.features[0] else { unreachable!() };
            let moments = (std::mem::take(&mut n.shifted_sum), std::mem::take(&mut n.shifted_sum_sq));
            (s, moments.0, moments.1)
        }
        let r = reference();
        let h = PartialHeader::new("s", "w", 7);
        let recs = records(5000, true, 1);
        let ps = partials(&r, &h, &recs);
        // Through the wire format, as the partials topic carries them.
        let ps: Vec<Partial> = ps.iter().map(|p| Partial::decode(&p.encode()).unwrap()).collect();
        let (single, sum, sum_sq) = rounded_moments(whole(&r, &recs).snapshot());
        for seed in 0..20 {
            let merged = merge(&r, &h, &shuffled(&ps, seed)).unwrap();
            let (counts, s, sq) = rounded_moments(merged.sketch.snapshot());
            assert_eq!(counts, single, "order {seed}");
            assert!((s - sum).abs() <= 1e-12 * sum.abs() && (sq - sum_sq).abs() <= 1e-12 * sum_sq.abs());
            assert_eq!(merged.late_records, ps.len() as u64);
            assert_eq!(merged.contributions.iter().map(|c| c.records).sum::<u64>(), 5000);
            assert_eq!(merged.contributions.len(), 6);
        }
    }

    #[test]
    fn merging_is_order_independent_bit_for_bit_and_scores_match_one_instance() {
        let r = reference();
        let h = PartialHeader::new("s", "w", 7);
        let recs = records(5000, false, 2);
        let ps = partials(&r, &h, &recs);
        let first = merge(&r, &h, &shuffled(&ps, 0)).unwrap().sketch.snapshot();
        for seed in 1..20 {
            assert_eq!(merge(&r, &h, &shuffled(&ps, seed)).unwrap().sketch.snapshot(), first);
        }
        // Against one instance: every count equal, sums to rounding, scores to 1e-9.
        let single = whole(&r, &recs);
        let counts = |s: &WindowSketchState| {
            s.features
                .iter()
                .map(|f| match f {
                    FeatureSketchState::Numeric(n) => {
                        format!(
                            "{:?}",
                            n.cells
                                .iter()
                                .map(|(i, c)| (i, c.interior_count, c.edge_count))
                                .collect::<Vec<_>>()
                        )
                    }
                    FeatureSketchState::Categorical(c) => format!("{c:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&first), counts(&single.snapshot()));
        let merged = r.restore_window(&first).unwrap();
        let a = score_window(&r, &single, WindowInfo::default());
        let b = score_window(&r, &merged, WindowInfo::default());
        for (fa, fb) in a.features.iter().zip(&b.features) {
            for (key, va) in &fa.scores {
                let vb = fb.scores[key];
                assert!((va - vb).abs() <= 1e-9 * va.abs().max(1.0), "{key}: {va} vs {vb}");
            }
        }
    }

    #[test]
    fn contributions_name_each_partitions_offset_range() {
        let r = reference();
        let h = PartialHeader::new("s", "w", 7);
        let recs = records(600, true, 3);
        let ps = partials(&r, &h, &recs);
        let merged = merge(&r, &h, &ps.iter().collect::<Vec<_>>()).unwrap();
        for c in &merged.contributions {
            let mine: Vec<i64> = recs.iter().filter(|x| x.1 == c.source.partition).map(|x| x.2).collect();
            assert_eq!(c.offsets, Some((*mine.iter().min().unwrap(), *mine.iter().max().unwrap())));
            assert_eq!(c.records, mine.len() as u64);
        }
    }

    #[test]
    fn a_duplicate_or_a_disagreeing_partial_is_refused() {
        let r = reference();
        let h = PartialHeader::new("s", "w", 7);
        let ps = partials(&r, &h, &records(100, true, 4));
        let dup = [&ps[0], &ps[0]];
        assert!(matches!(merge(&r, &h, &dup), Err(PartialError::Duplicate { .. })));
        let mut other = ps[0].clone();
        other.header.reference = 8;
        let e = merge(&r, &h, &[&other]).unwrap_err();
        assert!(e.to_string().contains("disagree on its reference"), "{e}");
        other.header = PartialHeader::new("s", "w2", 7);
        let e = merge(&r, &h, &[&other]).unwrap_err();
        assert!(e.to_string().contains("disagree on its window"), "{e}");
    }

    #[test]
    fn another_version_or_format_is_refused_by_name() {
        let r = reference();
        let h = PartialHeader::new("s", "w", 7);
        let mut p = partials(&r, &h, &records(10, true, 5)).remove(0);
        p.header.version = PARTIAL_VERSION + 1;
        let e = Partial::decode(&p.encode()).unwrap_err();
        assert_eq!(e, PartialError::Version { found: PARTIAL_VERSION + 1, expected: PARTIAL_VERSION });
        assert!(e.to_string().contains("scale.partials_topic"));
        p.header.version = PARTIAL_VERSION;
        p.header.format = "other".into();
        assert!(matches!(Partial::decode(&p.encode()), Err(PartialError::NotAPartial(_))));
        assert!(matches!(Partial::decode(b"{\"json\": 1}"), Err(PartialError::NotAPartial(_))));
        // A partial of version 2 (header by name, the rest MessagePack by position) is
        // refused by its version, not read as this version's body.
        p.header = PartialHeader { version: 2, ..h.clone() };
        let mut v2 = rmp_serde::to_vec_named(&p.header).unwrap();
        rmp_serde::encode::write(
            &mut v2,
            &(p.pane, &p.source, &p.sketch, p.offsets, p.watermark_ms, p.late_records),
        )
        .unwrap();
        let e = Partial::decode(&v2).unwrap_err();
        assert_eq!(e, PartialError::Version { found: 2, expected: PARTIAL_VERSION });
        assert!(e.to_string().contains("format version 2, this driftscope reads version 3"), "{e}");
        // A partial of version 1 (one map, fields by name) is refused by its version.
        p.header = PartialHeader { version: 1, ..h.clone() };
        let v1 = rmp_serde::to_vec_named(&p).unwrap();
        assert_eq!(
            Partial::decode(&v1).unwrap_err(),
            PartialError::Version { found: 1, expected: PARTIAL_VERSION }
        );
    }

    #[test]
    fn a_partial_round_trips_equal_and_merges_as_before_it_was_encoded() {
        let r = reference();
        let h = PartialHeader::new("s", "w", 7);
        let recs = records(3000, false, 6);
        let ps = partials(&r, &h, &recs);
        let back: Vec<Partial> = ps.iter().map(|p| Partial::decode(&p.encode()).unwrap()).collect();
        assert_eq!(back, ps);
        let direct = merge(&r, &h, &ps.iter().collect::<Vec<_>>()).unwrap().sketch.snapshot();
        let wired = merge(&r, &h, &back.iter().collect::<Vec<_>>()).unwrap().sketch.snapshot();
        assert_eq!(format!("{wired:?}"), format!("{direct:?}"));
    }

    #[test]
    fn keys_are_unambiguous() {
        let s = SourcePartition { topic: "a,1".into(), partition: 2 };
        let t = SourcePartition { topic: "a".into(), partition: 2 };
        assert_ne!(Partial::key("s", 1, &s), Partial::key("s,a", 1, &t));
        assert_eq!(Partial::key("s", 1, &s), Partial::key("s", 1, &s.clone()));
    }
}
