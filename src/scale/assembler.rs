//! The owner's side of global mode, free of Kafka and clocks of its own: it collects the
//! partials of one stream as they are read (a replay of a (pane, partition) replaces the
//! earlier copy, as compaction does), follows every source partition's watermark, and
//! hands out each window exactly once, when every source partition has passed its end:
//! by its watermark, or by publishing nothing for `idle_timeout` (then the window names
//! it as idle). A window is merged with [`crate::stats::partial::merge`], so its sketch
//! and offsets are the same whoever owns the stream; its index is its last pane's index
//! (not a sequence number), for the same reason.

use super::status::{Disagreement, OwnedStatus, SourceStatus, WAITING_SHOWN, WaitingWindow, source_name};
use crate::stats::Reference;
use crate::stats::partial::{Merged, Partial, PartialError, PartialHeader, SourcePartition, merge};
use crate::stats::window::{PaneClock, WindowSpec};
use std::collections::BTreeMap;

/// A window every source partition has passed, merged.
#[derive(Debug, Clone)]
pub struct GlobalWindow {
    /// The index of the window's last pane: the same on every instance.
    pub index: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub merged: Merged,
    /// Source partitions counted as passed because they were idle.
    pub idle: Vec<SourcePartition>,
    /// Source partitions with refused partials (their publisher's config differed)
    /// whose watermark had passed this window's start: the window may lack records of
    /// theirs. (A refused partial's panes are another config's, so only its
    /// watermark, an event time, says which windows it touched.)
    pub refused: Vec<SourcePartition>,
}

#[derive(Debug, Clone, Copy)]
struct SourceState {
    watermark_ms: i64,
    last_heard_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AssemblerError {
    #[error("global windows need time panes; count windows are refused by the config")]
    CountPanes,
    #[error(transparent)]
    Partial(#[from] PartialError),
}

/// One stream's partials and the windows still to score.
#[derive(Debug)]
pub struct Assembler {
    header: PartialHeader,
    pane_ms: i64,
    panes_per_window: i64,
    idle_timeout_ms: i64,
    sources: BTreeMap<SourcePartition, SourceState>,
    panes: BTreeMap<i64, BTreeMap<SourcePartition, Partial>>,
    /// Windows ending at panes below this are scored (or were empty).
    scored_below: Option<i64>,
    /// Partials that came for a pane already scored (counted, not merged: a window
    /// has one verdict).
    pub late_partials: u64,
    /// Source partitions whose last partial disagreed with `header`: while any is
    /// here, no window is handed out (the instances must agree first).
    disagreeing: BTreeMap<SourcePartition, Disagreement>,
    /// Per source, the highest watermark of a partial refused for disagreeing: windows
    /// starting before it may lack that partition's records.
    refused: BTreeMap<SourcePartition, i64>,
    /// When the last partial (agreeing or not) was read.
    last_partial_ms: Option<i64>,
}

impl Assembler {
    /// `sources`: every partition of the stream's topics (from the topic metadata),
    /// first heard of at `now_ms`.
    pub fn new(
        header: PartialHeader,
        spec: WindowSpec,
        sources: impl IntoIterator<Item = SourcePartition>,
        idle_timeout_ms: i64,
        now_ms: i64,
    ) -> Result<Self, AssemblerError> {
        let PaneClock::Millis { pane_ms, .. } = spec.clock else {
            return Err(AssemblerError::CountPanes);
        };
        Ok(Assembler {
            header,
            pane_ms,
            panes_per_window: spec.panes_per_window as i64,
            idle_timeout_ms,
            sources: sources
                .into_iter()
                .map(|s| (s, SourceState { watermark_ms: i64::MIN, last_heard_ms: now_ms }))
                .collect(),
            panes: BTreeMap::new(),
            scored_below: None,
            late_partials: 0,
            disagreeing: BTreeMap::new(),
            refused: BTreeMap::new(),
            last_partial_ms: None,
        })
    }

    /// Takes a partial read from the partials topic at `now_ms`. One that disagrees
    /// with this instance's window spec or reference is refused (the caller reports
    /// it; the stream is not scored until the instances agree).
    pub fn offer(&mut self, partial: Partial, now_ms: i64) -> Result<(), AssemblerError> {
        self.offer_from(partial, None, now_ms)
    }

    /// [`Self::offer`] of a partial that `instance` published (its record header). A
    /// disagreeing partial holds the stream's windows until a partial from the same
    /// source partition agrees again (its publisher restarted with the same config,
    /// or the partition moved to an instance that has it).
    pub fn offer_from(
        &mut self,
        partial: Partial,
        instance: Option<&str>,
        now_ms: i64,
    ) -> Result<(), AssemblerError> {
        self.last_partial_ms = Some(now_ms);
        if let Err(e) = partial.check(&self.header) {
            if let PartialError::Disagree { what, ours, theirs, .. } = &e {
                let entry = self.disagreeing.entry(partial.source.clone()).or_insert_with(|| Disagreement {
                    topic: partial.source.topic.clone(),
                    partition: partial.source.partition,
                    instance: None,
                    what: (*what).into(),
                    ours: ours.clone(),
                    theirs: theirs.clone(),
                    refused: 0,
                    last_refused: String::new(),
                });
                entry.instance = instance.map(str::to_owned);
                entry.what = (*what).into();
                entry.theirs = theirs.clone();
                entry.refused += 1;
                entry.last_refused = crate::monitor::format_ms(now_ms);
                let until = self.refused.entry(partial.source.clone()).or_insert(i64::MIN);
                *until = (*until).max(partial.watermark_ms);
            }
            return Err(e.into());
        }
        self.disagreeing.remove(&partial.source);
        let source = self
            .sources
            .entry(partial.source.clone())
            .or_insert(SourceState { watermark_ms: i64::MIN, last_heard_ms: now_ms });
        source.watermark_ms = source.watermark_ms.max(partial.watermark_ms);
        source.last_heard_ms = now_ms;
        // A pane is needed until the last window holding it is scored.
        if self.scored_below.is_some_and(|below| partial.pane + self.panes_per_window - 1 < below) {
            self.late_partials += 1;
            return Ok(());
        }
        self.panes.entry(partial.pane).or_default().insert(partial.source.clone(), partial);
        Ok(())
    }

    /// The windows every source has passed at `now_ms`, in order, each once.
    pub fn ready(&mut self, reference: &Reference, now_ms: i64) -> Result<Vec<GlobalWindow>, AssemblerError> {
        if !self.disagreeing.is_empty() {
            return Ok(Vec::new());
        }
        let mut idle = Vec::new();
        let mut watermark = i64::MAX;
        for (source, state) in &self.sources {
            if now_ms.saturating_sub(state.last_heard_ms) >= self.idle_timeout_ms {
                idle.push(source.clone());
            } else {
                watermark = watermark.min(state.watermark_ms);
            }
        }
        let Some(&oldest) = self.panes.keys().next() else { return Ok(Vec::new()) };
        let newest = self.panes.keys().next_back().copied().unwrap_or(oldest);
        // Window ending at pane e covers [(e - k + 1) * pane_ms, (e + 1) * pane_ms).
        let last_passed = if watermark == i64::MAX {
            newest + self.panes_per_window - 1
        } else {
            watermark.div_euclid(self.pane_ms) - 1
        };
        let from = self.scored_below.unwrap_or(oldest).max(oldest);
        let to = last_passed.min(newest + self.panes_per_window - 1);
        let mut out = Vec::new();
        let mut end = from;
        while end <= to {
            let start = end - self.panes_per_window + 1;
            let members: Vec<&Partial> =
                self.panes.range(start..=end).flat_map(|(_, by)| by.values()).collect();
            if members.iter().any(|p| p.sketch.records > 0) {
                let merged = merge(reference, &self.header, &members)?;
                let refused: Vec<SourcePartition> = self
                    .refused
                    .iter()
                    .filter(|(_, until)| **until > start * self.pane_ms)
                    .map(|(s, _)| s.clone())
                    .collect();
                out.push(GlobalWindow {
                    index: end,
                    start_ms: start * self.pane_ms,
                    end_ms: (end + 1) * self.pane_ms,
                    merged,
                    idle: idle.clone(),
                    refused,
                });
            }
            end += 1;
        }
        if to >= from {
            self.scored_below = Some(to + 1);
            let keep_from = to + 1 - (self.panes_per_window - 1);
            self.panes = self.panes.split_off(&keep_from);
            self.refused.retain(|_, until| *until > keep_from * self.pane_ms);
        }
        Ok(out)
    }

    /// Whether partials of `source` were refused and their windows are not all scored
    /// yet (the owner keeps them in the partials group's committed offset, so a new
    /// owner reads them again and knows).
    pub fn has_refused(&self, source: &SourcePartition) -> bool {
        self.refused.contains_key(source) || self.disagreeing.contains_key(source)
    }

    /// What `/readyz` and `/api/v1/streams` show of this stream at `now_ms`.
    pub fn status(&self, now_ms: i64) -> OwnedStatus {
        let passed = |state: &SourceState, end_ms: i64| {
            state.watermark_ms >= end_ms || now_ms.saturating_sub(state.last_heard_ms) >= self.idle_timeout_ms
        };
        let mut waiting = Vec::new();
        let mut windows_waiting = 0;
        if let (Some(&oldest), Some(&newest)) = (self.panes.keys().next(), self.panes.keys().next_back()) {
            let from = self.scored_below.unwrap_or(oldest).max(oldest);
            for end in from..=newest + self.panes_per_window - 1 {
                let start = end - self.panes_per_window + 1;
                if self.panes.range(start..=end).all(|(_, by)| by.values().all(|p| p.sketch.records == 0)) {
                    continue;
                }
                let end_ms = (end + 1) * self.pane_ms;
                let missing: Vec<String> = self
                    .sources
                    .iter()
                    .filter(|(_, state)| !passed(state, end_ms))
                    .map(|(s, _)| source_name(s))
                    .collect();
                let held = !self.disagreeing.is_empty();
                if missing.is_empty() && !held {
                    continue;
                }
                windows_waiting += 1;
                if waiting.len() < WAITING_SHOWN {
                    waiting.push(WaitingWindow {
                        index: end,
                        start: crate::monitor::format_ms(start * self.pane_ms),
                        end: crate::monitor::format_ms(end_ms),
                        waiting_for: if missing.is_empty() {
                            self.disagreeing.values().map(Disagreement::source).collect()
                        } else {
                            missing
                        },
                    });
                }
            }
        }
        OwnedStatus {
            last_partial_age_ms: self.last_partial_ms.map(|t| now_ms.saturating_sub(t).max(0)),
            scored_below: self.scored_below,
            windows_waiting,
            waiting,
            sources: self
                .sources
                .iter()
                .map(|(s, state)| SourceStatus {
                    topic: s.topic.clone(),
                    partition: s.partition,
                    watermark: (state.watermark_ms != i64::MIN)
                        .then(|| crate::monitor::format_ms(state.watermark_ms)),
                    last_heard_age_ms: now_ms.saturating_sub(state.last_heard_ms).max(0),
                    idle: now_ms.saturating_sub(state.last_heard_ms) >= self.idle_timeout_ms,
                })
                .collect(),
            disagreements: self.disagreeing.values().cloned().collect(),
        }
    }

    /// Continues after an earlier owner that scored the windows ending below `below`:
    /// they are not handed out again.
    pub fn resume(&mut self, below: i64) {
        self.scored_below = Some(self.scored_below.map_or(below, |b| b.max(below)));
        self.panes = self.panes.split_off(&(below - (self.panes_per_window - 1)));
    }

    /// Windows ending below this pane are done: what a new owner resumes from.
    pub fn scored_below(&self) -> Option<i64> {
        self.scored_below
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::profile::{FeatureSpec, ProfileBuilder};
    use crate::stats::sketch::ValueSink;
    use crate::stats::{DriftSettings, FeatureKind};

    fn reference() -> Reference {
        let specs = vec![FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 }];
        let mut b = ProfileBuilder::new(specs, 256, 50);
        b.add_records(100);
        (0..100).for_each(|i| b.numeric(0, i as f64));
        let settings = DriftSettings { cdf_resolution: 256, min_samples: 1, ..Default::default() };
        Reference::new(b.finish("t".into(), "now".into()), settings, &BTreeMap::new()).unwrap()
    }

    fn src(p: i32) -> SourcePartition {
        SourcePartition { topic: "t".into(), partition: p }
    }

    fn partial(r: &Reference, pane: i64, p: i32, values: &[f64], watermark_ms: i64) -> Partial {
        let mut s = r.new_window();
        s.add_records(values.len() as u64);
        values.iter().for_each(|&x| s.numeric(0, x));
        Partial {
            header: PartialHeader::new("s", "w", 1),
            pane,
            source: src(p),
            sketch: s.snapshot(),
            offsets: (!values.is_empty()).then_some((pane * 10, pane * 10 + values.len() as i64 - 1)),
            watermark_ms,
            late_records: 0,
        }
    }

    fn assembler(panes_per_window: usize, partitions: i32) -> Assembler {
        let spec =
            WindowSpec { clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 0 }, panes_per_window };
        Assembler::new(PartialHeader::new("s", "w", 1), spec, (0..partitions).map(src), 5000, 0).unwrap()
    }

    #[test]
    fn a_window_waits_for_every_partitions_watermark_and_is_handed_out_once() {
        let r = reference();
        let mut a = assembler(1, 2);
        a.offer(partial(&r, 0, 0, &[1.0, 2.0], 1000), 10).unwrap();
        assert!(a.ready(&r, 10).unwrap().is_empty(), "partition 1 has not passed pane 0");
        a.offer(partial(&r, 0, 1, &[3.0], 1500), 20).unwrap();
        let w = a.ready(&r, 20).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].index, w[0].start_ms, w[0].end_ms), (0, 0, 1000));
        assert_eq!(w[0].merged.sketch.records, 3);
        assert!(w[0].idle.is_empty());
        assert!(a.ready(&r, 30).unwrap().is_empty(), "never twice");
        // A replay of a scored pane is late, not a second verdict.
        a.offer(partial(&r, 0, 1, &[3.0], 1500), 40).unwrap();
        assert_eq!(a.late_partials, 1);
        assert!(a.ready(&r, 40).unwrap().is_empty());
    }

    #[test]
    fn a_replayed_partial_replaces_its_earlier_copy() {
        let r = reference();
        let mut a = assembler(1, 1);
        a.offer(partial(&r, 3, 0, &[1.0], 0), 0).unwrap();
        a.offer(partial(&r, 3, 0, &[1.0, 2.0], 4000), 0).unwrap();
        let w = a.ready(&r, 0).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].merged.sketch.records, 2);
    }

    #[test]
    fn an_idle_partition_counts_as_passed_after_the_timeout_and_is_named() {
        let r = reference();
        let mut a = assembler(1, 2);
        a.offer(partial(&r, 0, 0, &[1.0], 2000), 0).unwrap();
        assert!(a.ready(&r, 4999).unwrap().is_empty());
        a.offer(partial(&r, 1, 0, &[1.0], 2000), 4999).unwrap();
        let w = a.ready(&r, 5000).unwrap();
        assert_eq!(w.iter().map(|w| w.index).collect::<Vec<_>>(), vec![0, 1], "partition 0 passed 2000");
        assert_eq!(w[0].idle, vec![src(1)]);
    }

    #[test]
    fn sliding_windows_merge_their_panes_across_partitions() {
        let r = reference();
        let mut a = assembler(2, 2);
        for pane in 0..3 {
            for p in 0..2 {
                a.offer(partial(&r, pane, p, &[pane as f64; 2], (pane + 1) * 1000), 0).unwrap();
            }
        }
        let w = a.ready(&r, 0).unwrap();
        // Windows end at panes 0 (the partial first window), 1 and 2.
        assert_eq!(
            w.iter().map(|w| (w.index, w.merged.sketch.records)).collect::<Vec<_>>(),
            vec![(0, 4), (1, 8), (2, 8)]
        );
        assert_eq!((w[2].start_ms, w[2].end_ms), (1000, 3000));
        assert_eq!(w[2].merged.contributions.len(), 2);
    }

    #[test]
    fn a_new_owner_resumes_without_handing_out_a_scored_window_again() {
        let r = reference();
        let mut a = assembler(1, 1);
        // The earlier owner scored windows ending below pane 2; the partials are read
        // again from the oldest one it still needed.
        a.resume(2);
        for pane in 0..4 {
            a.offer(partial(&r, pane, 0, &[1.0], (pane + 1) * 1000), 0).unwrap();
        }
        let w = a.ready(&r, 0).unwrap();
        assert_eq!(w.iter().map(|w| w.index).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(a.late_partials, 2, "panes 0 and 1 are counted, not merged");
    }

    #[test]
    fn a_disagreeing_partial_is_refused() {
        let r = reference();
        let mut a = assembler(1, 1);
        let mut p = partial(&r, 0, 0, &[1.0], 1000);
        p.header.reference = 2;
        assert!(matches!(a.offer(p, 0), Err(AssemblerError::Partial(PartialError::Disagree { .. }))));
    }

    #[test]
    fn a_disagreement_holds_every_window_until_the_source_agrees_again_and_is_named() {
        let r = reference();
        let mut a = assembler(1, 2);
        a.offer(partial(&r, 0, 0, &[1.0], 1000), 0).unwrap();
        let mut odd = partial(&r, 0, 1, &[2.0], 1000);
        odd.header.window = "Millis x 2".into();
        assert!(a.offer_from(odd.clone(), Some("b"), 10).is_err());
        assert!(a.offer_from(odd, Some("b"), 20).is_err());
        // Partition 1 is silent past the idle timeout, yet nothing is scored.
        assert!(a.ready(&r, 100_000).unwrap().is_empty(), "held while the instances disagree");
        let status = a.status(100_000);
        assert_eq!(status.disagreements.len(), 1);
        let d = &status.disagreements[0];
        assert_eq!((d.instance.as_deref(), d.what.as_str(), d.refused), (Some("b"), "window", 2));
        assert_eq!((d.ours.as_str(), d.theirs.as_str(), d.partition), ("w", "Millis x 2", 1));
        assert_eq!(status.windows_waiting, 1);
        assert_eq!(status.waiting[0].waiting_for, vec!["t/1".to_owned()]);
        // The publisher restarted with the same config: its next partial agrees.
        a.offer_from(partial(&r, 1, 1, &[3.0], 2000), Some("b"), 100_001).unwrap();
        assert!(a.status(100_001).disagreements.is_empty());
        let w = a.ready(&r, 100_001).unwrap();
        assert_eq!(w.iter().map(|w| w.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(w[0].refused, vec![src(1)], "window 0 lacks partition 1's refused partial");
        assert!(w[1].refused.is_empty());
        assert_eq!(w[0].merged.sketch.records, 1);
    }

    #[test]
    fn the_status_names_the_windows_waiting_and_the_partitions_they_wait_for() {
        let r = reference();
        let mut a = assembler(1, 3);
        a.offer(partial(&r, 0, 0, &[1.0], 2000), 100).unwrap();
        a.offer(partial(&r, 1, 1, &[1.0], 1000), 200).unwrap();
        let s = a.status(300);
        assert_eq!(s.last_partial_age_ms, Some(100));
        // Window 0 waits for partition 2 only; window 1 for partitions 1 and 2.
        assert_eq!(s.windows_waiting, 2);
        assert_eq!(s.waiting[0].waiting_for, vec!["t/2".to_owned()]);
        assert_eq!(s.waiting[1].waiting_for, vec!["t/1".to_owned(), "t/2".to_owned()]);
        assert_eq!(s.sources.len(), 3);
        assert_eq!(s.sources[2].watermark, None);
        assert!(!s.sources[2].idle);
        assert!(a.status(5000).sources[2].idle, "silent for the idle timeout");
    }
}
