//! Schema changes on Confluent-framed streams, from the decoders to the reports. A
//! decoder tells of a change while it decodes the first message of the new schema id,
//! on the pipeline thread; the change is counted at once
//! (`driftscope_schema_changes_total`), placed at that message's offset, and listed in
//! the report of the window that holds the offset (`schema_changes`, and a note).

use crate::decode::confluent::SchemaEvents;
use crate::stats::report::SchemaChange;
use crate::stats::window::Span;
use crate::telemetry::Telemetry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Changes waiting in one stream at most; more are summed (a writer that flips between
/// schemas on every message must not grow the state or a report without bound).
pub const MAX_WAITING: usize = 16;

/// Told by the decoders. The pipeline thread looks at one flag per message (no lock)
/// and takes the changes when it is set.
pub struct SchemaChanges {
    telemetry: Arc<Telemetry>,
    told: AtomicBool,
    fresh: Mutex<Vec<(u32, u32)>>,
}

impl SchemaChanges {
    pub fn new(telemetry: Arc<Telemetry>) -> SchemaChanges {
        SchemaChanges { telemetry, told: AtomicBool::new(false), fresh: Mutex::new(Vec::new()) }
    }

    /// The changes told since the last call, which the message just decoded made.
    #[inline]
    pub fn take_fresh(&self) -> Option<Vec<(u32, u32)>> {
        // A plain load on the per-message path; the swap only when something was told.
        if !self.told.load(Ordering::Relaxed) || !self.told.swap(false, Ordering::Relaxed) {
            return None;
        }
        self.fresh.lock().ok().map(|mut fresh| std::mem::take(&mut *fresh))
    }
}

impl SchemaEvents for SchemaChanges {
    fn schema_changed(&self, stream: &str, from: u32, to: u32) {
        self.telemetry.schema_changes.with_label_values(&[stream]).inc();
        if let Ok(mut fresh) = self.fresh.lock() {
            fresh.push((from, to));
            self.told.store(true, Ordering::Relaxed);
        }
    }
}

/// One stream's changes placed at their messages, waiting for their window's report.
#[derive(Debug, Default)]
pub struct WaitingChanges {
    /// (source slot, offset, from, to)
    waiting: Vec<(u32, i64, u32, u32)>,
    dropped: u64,
}

impl WaitingChanges {
    pub fn place(&mut self, source: u32, offset: i64, from: u32, to: u32) {
        if self.waiting.len() < MAX_WAITING {
            self.waiting.push((source, offset, from, to));
        } else {
            self.dropped += 1;
        }
    }

    /// The changes at or before the end of a window's spans (the window holds them, or
    /// they were on a message that was refused before it), with where each was and a
    /// note for the report; `locate` names a source slot's topic and partition.
    pub fn take_for(
        &mut self,
        spans: &[Span],
        locate: impl Fn(u32) -> Option<(String, i32)>,
    ) -> Option<(Vec<SchemaChange>, String)> {
        if self.waiting.is_empty() {
            return None;
        }
        let ends = |source: u32| spans.iter().filter(|s| s.source == source).map(|s| s.last).max();
        let mut taken = Vec::new();
        self.waiting.retain(|&(source, offset, from, to)| {
            if ends(source).is_some_and(|last| offset <= last) {
                let (topic, partition) = locate(source).unwrap_or_default();
                taken.push(SchemaChange { from, to, topic, partition, offset });
                false
            } else {
                true
            }
        });
        if taken.is_empty() {
            return None;
        }
        let listed: Vec<String> = taken
            .iter()
            .map(|c| format!("{} -> {} at {}/{}@{}", c.from, c.to, c.topic, c.partition, c.offset))
            .collect();
        let mut note = format!("schema change: messages switched schema id ({})", listed.join(", "));
        if self.waiting.is_empty() && self.dropped > 0 {
            note.push_str(&format!(", and {} more changes not listed", self.dropped));
            self.dropped = 0;
        }
        Some((taken, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_counted_taken_once_and_reported_with_the_window_that_holds_it() {
        let telemetry = Arc::new(Telemetry::new());
        let changes = SchemaChanges::new(telemetry.clone());
        assert!(changes.take_fresh().is_none());
        changes.schema_changed("a", 1, 2);
        assert_eq!(changes.take_fresh(), Some(vec![(1, 2)]));
        assert!(changes.take_fresh().is_none(), "taken once");
        assert_eq!(telemetry.schema_changes.with_label_values(&["a"]).get(), 1);

        let mut waiting = WaitingChanges::default();
        waiting.place(0, 1000, 1, 2);
        let locate = |s: u32| Some((format!("t{s}"), s as i32));
        let before = [Span { source: 0, first: 500, last: 999 }];
        assert!(waiting.take_for(&before, locate).is_none(), "not in the window before it");
        let other_source = [Span { source: 1, first: 0, last: 5000 }];
        assert!(waiting.take_for(&other_source, locate).is_none());
        let holding = [Span { source: 0, first: 1000, last: 1499 }];
        let (listed, note) = waiting.take_for(&holding, locate).unwrap();
        assert_eq!(
            listed,
            vec![SchemaChange { from: 1, to: 2, topic: "t0".into(), partition: 0, offset: 1000 }]
        );
        assert!(note.contains("1 -> 2 at t0/0@1000"), "{note}");
        assert!(waiting.take_for(&holding, locate).is_none(), "reported once");
    }

    #[test]
    fn waiting_changes_are_bounded_and_the_rest_counted_in_the_note() {
        let mut waiting = WaitingChanges::default();
        for i in 0..(MAX_WAITING as u32 + 3) {
            waiting.place(0, i64::from(i), i, i + 1);
        }
        let spans = [Span { source: 0, first: 0, last: 100 }];
        let (listed, note) = waiting.take_for(&spans, |_| None).unwrap();
        assert_eq!(listed.len(), MAX_WAITING);
        assert!(note.ends_with("and 3 more changes not listed"), "{note}");
    }
}
