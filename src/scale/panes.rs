//! The publishing side of global mode, free of Kafka: an instance's records folded
//! into panes per source partition (each partition windowed on its own, so its
//! watermark is its own and its pane is exactly what it holds), and each closed pane
//! turned into the [`Partial`] the partials topic carries. Reuses the local
//! [`Windower`] per partition with one pane per window: a closed "window" there is a
//! closed pane here.

use crate::stats::Reference;
use crate::stats::partial::{Partial, PartialHeader, SourcePartition};
use crate::stats::window::{ClosedWindow, Late, Pane, PaneClock, WindowSpec, Windower};
use std::collections::BTreeMap;

/// One instance's open panes of one stream, per source partition.
#[derive(Debug)]
pub struct PartitionPanes {
    header: PartialHeader,
    pane_ms: i64,
    lateness_ms: i64,
    event_time: bool,
    partitions: Vec<Partition>,
    /// Where each partition is in `partitions`.
    index: BTreeMap<SourcePartition, usize>,
    /// The monitor's source slots (its numbering of partitions) to `partitions`, so the
    /// per-message path looks nothing up by name.
    slots: Vec<Option<usize>>,
    scratch: Vec<ClosedWindow>,
    /// Partials closed record by record (event time), waiting for [`close`](Self::close).
    closed: Vec<Partial>,
}

#[derive(Debug)]
struct Partition {
    source: SourcePartition,
    windower: Windower,
    /// The highest event time seen.
    max_event: Option<i64>,
    /// The next offset as of the last published transaction: a record below it read
    /// again after a restart or rebalance is a replay, and when its pane was published
    /// already it is dropped without counting as late.
    replay_below: Option<i64>,
}

/// Where a partition resumes: what the last transaction that committed its offset
/// recorded in the offset's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumePoint {
    /// The partition's highest event time then (event-time windows), from which its
    /// watermark and so its closed panes follow.
    #[serde(rename = "e")]
    pub max_event_ms: Option<i64>,
    /// The offset after the last record read then.
    #[serde(rename = "n")]
    pub next: i64,
}

impl ResumePoint {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `None` for metadata not written by global mode (e.g. a commit of local mode).
    pub fn decode(metadata: &str) -> Option<ResumePoint> {
        serde_json::from_str(metadata).ok()
    }
}

impl PartitionPanes {
    /// `spec`: the stream's window spec (its panes are what is published).
    pub fn new(header: PartialHeader, spec: WindowSpec, event_time: bool) -> Option<Self> {
        let PaneClock::Millis { pane_ms, lateness_ms } = spec.clock else { return None };
        Some(PartitionPanes {
            header,
            pane_ms,
            lateness_ms,
            event_time,
            partitions: Vec::new(),
            index: BTreeMap::new(),
            slots: Vec::new(),
            scratch: Vec::new(),
            closed: Vec::new(),
        })
    }

    fn spec(&self) -> WindowSpec {
        WindowSpec {
            clock: PaneClock::Millis { pane_ms: self.pane_ms, lateness_ms: self.lateness_ms },
            panes_per_window: 1,
        }
    }

    /// Where `source` is in `partitions` (added, with no pane open, when new).
    fn index_of(&mut self, source: &SourcePartition) -> usize {
        if let Some(&i) = self.index.get(source) {
            return i;
        }
        let i = self.partitions.len();
        self.partitions.push(Partition {
            source: source.clone(),
            windower: Windower::new(self.spec()),
            max_event: None,
            replay_below: None,
        });
        self.index.insert(source.clone(), i);
        i
    }

    /// Names the partition the monitor numbers `slot`.
    pub fn register(&mut self, slot: u32, source: SourcePartition) {
        let i = self.index_of(&source);
        let slot = slot as usize;
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = Some(i);
    }

    /// Starts `source` again from what its last transaction recorded (or from nothing):
    /// its open panes are dropped (their records are read again from the committed
    /// offset) and the panes its watermark had closed stay closed, so a record of one
    /// of them read again is not published twice.
    pub fn resume(&mut self, source: &SourcePartition, at: Option<ResumePoint>) {
        let mut windower = Windower::new(self.spec());
        let mut max_event = None;
        if let Some(ResumePoint { max_event_ms: Some(m), .. }) = at
            && self.event_time
        {
            windower.observe_event_time(m);
            windower.advance(m, true, &mut self.scratch);
            max_event = Some(m);
        }
        self.scratch.clear();
        let i = self.index_of(source);
        let p = &mut self.partitions[i];
        p.windower = windower;
        p.max_event = max_event;
        p.replay_below = at.map(|at| at.next);
    }

    /// Drops every open pane and pending partial (the partitions were revoked: their
    /// records are read again from the committed offsets, here or elsewhere).
    pub fn discard_open(&mut self) {
        let spec = self.spec();
        for p in &mut self.partitions {
            p.windower = Windower::new(spec);
            p.max_event = None;
            p.replay_below = None;
        }
        self.closed.clear();
    }

    /// The lowest offset of `source` an open pane holds: the input offset a transaction
    /// may commit for it is no higher (those records are in no published partial).
    pub fn lowest_open_offset(&self, source: &SourcePartition) -> Option<i64> {
        let p = &self.partitions[*self.index.get(source)?];
        p.windower.open_panes().iter().flat_map(|p| p.spans.iter()).map(|s| s.first).min()
    }

    /// The highest event time seen from `source`.
    pub fn max_event_ms(&self, source: &SourcePartition) -> Option<i64> {
        self.partitions[*self.index.get(source)?].max_event
    }

    /// The monitor's path for the rows of one message of the partition it numbers
    /// `slot` (no allocation once the partition has panes): the pane to fold them into,
    /// or `Err(counted)` when their pane is closed (`counted`: late, not a record read
    /// again); `None` for a slot not registered.
    pub fn pane_for_slot(
        &mut self,
        slot: u32,
        time_ms: i64,
        offset: i64,
        records: u64,
        reference: &Reference,
    ) -> Option<Result<&mut Pane, bool>> {
        let i = (*self.slots.get(slot as usize)?)?;
        let Partition { windower, max_event, replay_below, .. } = &mut self.partitions[i];
        let replay = replay_below.is_some_and(|below| offset < below);
        if self.event_time {
            windower.observe_event_time(time_ms);
            *max_event = Some(max_event.map_or(time_ms, |m: i64| m.max(time_ms)));
        }
        // Looked up twice, as in `pane_for`.
        if windower.pane_for(time_ms, reference).is_err() {
            if !replay {
                windower.note_late_records(records);
            }
            return Some(Err(!replay));
        }
        Some(windower.pane_for(time_ms, reference).map_err(|_| false))
    }

    /// Whether the record at `offset` of the partition numbered `slot` is read again
    /// for a pane this partition already published.
    pub fn replaying(&self, slot: u32, offset: i64) -> bool {
        let Some(&Some(i)) = self.slots.get(slot as usize) else { return false };
        self.partitions[i].replay_below.is_some_and(|below| offset < below)
    }

    /// After a record of the partition numbered `slot` (event time): closes the panes
    /// its watermark passed, as one instance's windows do record by record, so which
    /// records are late does not depend on how the records were batched.
    pub fn advance_slot(&mut self, slot: u32) {
        if !self.event_time {
            return;
        }
        let Some(&Some(i)) = self.slots.get(slot as usize) else { return };
        let p = &mut self.partitions[i];
        p.windower.advance(0, true, &mut self.scratch);
        if self.scratch.is_empty() {
            return;
        }
        let watermark_ms = p.max_event.map_or(i64::MIN, |m| m.saturating_sub(self.lateness_ms));
        self.push_closed(i, watermark_ms);
    }

    /// Turns the panes just closed (in pane order) into partials. Only the last carries
    /// the partition's watermark: an earlier one claims no more than its own end, or an
    /// owner that read it before the next (same transaction, read one by one) would
    /// take the partition as past windows whose pane it has not read yet, and score
    /// them without it.
    fn push_closed(&mut self, i: usize, watermark_ms: i64) {
        let source = &self.partitions[i].source;
        let last = self.scratch.len().saturating_sub(1);
        for (k, w) in self.scratch.drain(..).enumerate() {
            self.closed.push(Partial {
                header: self.header.clone(),
                pane: w.start_ms.div_euclid(self.pane_ms),
                source: source.clone(),
                sketch: w.sketch.snapshot(),
                offsets: w.spans.first().map(|s| (s.first, s.last)),
                watermark_ms: if k < last { watermark_ms.min(w.end_ms) } else { watermark_ms },
                late_records: w.late_records,
            });
        }
    }

    /// The pane a record of `source` at `time_ms` (event or processing time) goes in;
    /// the caller folds the record into `pane.sketch` and calls `pane.cover`.
    pub fn pane_for(
        &mut self,
        source: &SourcePartition,
        time_ms: i64,
        reference: &Reference,
    ) -> Result<&mut Pane, Late> {
        let i = self.index_of(source);
        let Partition { windower, max_event, .. } = &mut self.partitions[i];
        if self.event_time {
            windower.observe_event_time(time_ms);
            *max_event = Some(max_event.map_or(time_ms, |m: i64| m.max(time_ms)));
        }
        // Looked up twice (the second finds the pane the first made): returning the
        // first borrow on one branch only is what the borrow checker cannot follow yet.
        if windower.pane_for(time_ms, reference).is_err() {
            windower.note_late();
            return Err(Late);
        }
        windower.pane_for(time_ms, reference)
    }

    /// The partials of every pane closed at `now_ms` (processing time: the clock;
    /// event time: each partition's highest event time minus the lateness), each with
    /// its partition's watermark.
    pub fn close(&mut self, now_ms: i64) -> Vec<Partial> {
        for i in 0..self.partitions.len() {
            let p = &mut self.partitions[i];
            p.windower.advance(now_ms, self.event_time, &mut self.scratch);
            let watermark_ms = if self.event_time {
                p.max_event.map_or(i64::MIN, |m| m.saturating_sub(self.lateness_ms))
            } else {
                now_ms
            };
            self.push_closed(i, watermark_ms);
        }
        std::mem::take(&mut self.closed)
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

    fn panes() -> PartitionPanes {
        let spec =
            WindowSpec { clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 0 }, panes_per_window: 1 };
        PartitionPanes::new(PartialHeader::new("s", "w", 1), spec, true).unwrap()
    }

    /// Folds records (offset, event time) of partition 0 record by record, as the
    /// monitor does; returns the partials closed on the way.
    fn fold(p: &mut PartitionPanes, r: &Reference, records: &[(i64, i64)]) -> Vec<Partial> {
        for &(offset, t) in records {
            if let Some(Ok(pane)) = p.pane_for_slot(0, t, offset, 1, r) {
                pane.sketch.add_records(1);
                pane.sketch.numeric(0, 1.0);
                pane.cover(0, offset, t);
            }
            p.advance_slot(0);
        }
        p.close(0)
    }

    /// Panes closed at once (one record jumps the watermark past several) go out in
    /// pane order, and only the last carries the jump: an earlier one read alone must
    /// not say the partition passed panes whose partials come after it.
    #[test]
    fn panes_closed_together_claim_no_more_than_their_own_end_but_the_last() {
        let r = reference();
        let source = SourcePartition { topic: "t".into(), partition: 0 };
        // With 2 s of lateness the record at 9 s closes panes 0, 1 and 2 at once.
        let spec =
            WindowSpec { clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 2000 }, panes_per_window: 1 };
        let mut p = PartitionPanes::new(PartialHeader::new("s", "w", 1), spec, true).unwrap();
        p.register(0, source.clone());
        p.resume(&source, None);
        let closed = fold(&mut p, &r, &[(0, 100), (1, 1200), (2, 2500), (3, 9000)]);
        assert_eq!(
            closed.iter().map(|c| (c.pane, c.watermark_ms)).collect::<Vec<_>>(),
            [(0, 1000), (1, 2000), (2, 7000)]
        );
    }

    #[test]
    fn a_resumed_partition_publishes_its_open_pane_whole_and_no_closed_pane_again() {
        let r = reference();
        let source = SourcePartition { topic: "t".into(), partition: 0 };
        let records: Vec<(i64, i64)> = vec![(0, 100), (1, 900), (2, 1100), (3, 1500), (4, 2100), (5, 2200)];
        // Without a crash: panes 0 and 1 close, pane 2 stays open.
        let mut whole = panes();
        whole.register(0, source.clone());
        whole.resume(&source, None);
        let expected = fold(&mut whole, &r, &records);
        assert_eq!(
            expected.iter().map(|p| (p.pane, p.offsets)).collect::<Vec<_>>(),
            [(0, Some((0, 1))), (1, Some((2, 3)))]
        );

        // A crash after pane 0 was published with offset 2 (pane 1 open from offset 2).
        let mut first = panes();
        first.register(0, source.clone());
        first.resume(&source, None);
        let published = fold(&mut first, &r, &records[..3]);
        assert_eq!(published.len(), 1);
        assert_eq!(first.lowest_open_offset(&source), Some(2), "the offset the transaction commits");
        let at = ResumePoint { max_event_ms: first.max_event_ms(&source), next: 3 };
        let at = ResumePoint::decode(&at.encode());

        // The restarted instance reads again from offset 2.
        let mut again = panes();
        again.register(0, source.clone());
        again.resume(&source, at);
        let replayed = fold(&mut again, &r, &records[2..]);
        assert_eq!(replayed.len(), 1, "pane 0 is not published again");
        assert_eq!(replayed[0], expected[1], "pane 1 is published whole, as without the crash");
    }

    #[test]
    fn a_replayed_record_of_a_published_pane_is_not_late_but_a_new_one_is() {
        let r = reference();
        let source = SourcePartition { topic: "t".into(), partition: 0 };
        let mut p = panes();
        p.register(0, source.clone());
        p.resume(&source, Some(ResumePoint { max_event_ms: Some(5000), next: 10 }));
        // Offset 8 (read again) and 12 (new) both fall in pane 1, closed by 5000.
        let closed = fold(&mut p, &r, &[(8, 1500), (12, 1600), (13, 6000)]);
        assert!(closed.is_empty());
        let late = fold(&mut p, &r, &[(14, 7100)]);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].late_records, 1, "only the new record counts as late");
        assert!(ResumePoint::decode("").is_none() && ResumePoint::decode("x").is_none());
    }
}
