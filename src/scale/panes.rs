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
    partitions: BTreeMap<SourcePartition, (Windower, Option<i64>)>,
    scratch: Vec<ClosedWindow>,
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
            partitions: BTreeMap::new(),
            scratch: Vec::new(),
        })
    }

    /// The pane a record of `source` at `time_ms` (event or processing time) goes in;
    /// the caller folds the record into `pane.sketch` and calls `pane.cover`.
    pub fn pane_for(
        &mut self,
        source: &SourcePartition,
        time_ms: i64,
        reference: &Reference,
    ) -> Result<&mut Pane, Late> {
        let spec = WindowSpec {
            clock: PaneClock::Millis { pane_ms: self.pane_ms, lateness_ms: self.lateness_ms },
            panes_per_window: 1,
        };
        let (windower, max_event) =
            self.partitions.entry(source.clone()).or_insert_with(|| (Windower::new(spec), None));
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
        let mut out = Vec::new();
        for (source, (windower, max_event)) in &mut self.partitions {
            windower.advance(now_ms, self.event_time, &mut self.scratch);
            let watermark_ms = if self.event_time {
                max_event.map_or(i64::MIN, |m| m.saturating_sub(self.lateness_ms))
            } else {
                now_ms
            };
            for w in self.scratch.drain(..) {
                let offsets = w.spans.first().map(|s| (s.first, s.last));
                out.push(Partial {
                    header: self.header.clone(),
                    pane: w.start_ms.div_euclid(self.pane_ms),
                    source: source.clone(),
                    sketch: w.sketch.snapshot(),
                    offsets,
                    watermark_ms,
                    late_records: w.late_records,
                });
            }
        }
        out
    }
}
