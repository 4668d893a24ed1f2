//! The pipeline thread's hooks for global mode (`[scale] mode = "global"`), apart from
//! the rest of the pipeline: naming source slots to a global stream's per-partition
//! panes, resuming a partition from what its last transaction recorded, and publishing
//! closed partials with the input offsets they cover (`crate::scale::publishing`).
//! Global streams' offsets are left out of the monitor's own commits and checkpoint.

use super::{MonitorError, Pipeline, Source, now_ms};
use crate::scale::panes::ResumePoint;
use crate::scale::publishing::InputPosition;
use crate::stats::partial::SourcePartition;

impl Pipeline {
    /// Whether `source` is a data partition of a global stream.
    pub(super) fn is_global_source(&self, source: &Source) -> bool {
        !source.labels && self.streams[source.stream].global().is_some()
    }

    /// Names a new source slot to its global stream's panes.
    pub(super) fn register_global(&mut self, slot: usize) {
        let Some(source) = self.sources.get(slot) else { return };
        if source.labels {
            return;
        }
        let partition = SourcePartition { topic: source.topic.clone(), partition: source.partition };
        if let Some(panes) = self.streams[source.stream].global_mut() {
            panes.register(slot as u32, partition);
        }
    }

    /// The first record of `slot` since it was assigned: its partition resumes from
    /// what the input group's committed offset says.
    pub(super) fn resume_global(&mut self, slot: usize) {
        let (Some(publishing), Some(source)) = (self.global.as_ref(), self.sources.get(slot)) else { return };
        if !self.is_global_source(source) {
            return;
        }
        let at = publishing.resume_point(&source.topic, source.partition);
        let partition = SourcePartition { topic: source.topic.clone(), partition: source.partition };
        tracing::info!(topic = %source.topic, partition = source.partition, resume = ?at, "global partition resumed");
        if let Some(panes) = self.streams[source.stream].global_mut() {
            panes.resume(&partition, at);
        }
    }

    /// After a revocation: what was not published is read again from the committed
    /// offsets.
    pub(super) fn discard_global(&mut self) {
        if let Some(publishing) = self.global.as_mut() {
            publishing.discard();
        }
        for stream in &mut self.streams {
            if let Some(panes) = stream.global_mut() {
                panes.discard_open();
            }
        }
    }

    /// Publishes the partials closed since the last call with the input positions.
    /// `last`: the last try of a stop, waited for at most this long.
    pub(super) fn publish_global(&mut self, last: Option<std::time::Duration>) -> Result<(), MonitorError> {
        let force = last.is_some();
        let Some(publishing) = self.global.as_mut() else { return Ok(()) };
        let now = now_ms();
        for stream in &mut self.streams {
            if stream.global().is_some() {
                let partials = stream.take_partials(now);
                if !partials.is_empty() {
                    stream.publish_event_lag();
                    publishing.add(partials);
                }
            }
        }
        let mut positions = Vec::new();
        for source in &self.sources {
            if source.labels {
                continue;
            }
            let (Some(panes), Some(next)) = (self.streams[source.stream].global(), source.next) else {
                continue;
            };
            let partition = SourcePartition { topic: source.topic.clone(), partition: source.partition };
            let offset = panes.lowest_open_offset(&partition).map_or(next, |o| o.min(next));
            positions.push(InputPosition {
                topic: source.topic.clone(),
                partition: source.partition,
                offset,
                resume: ResumePoint { max_event_ms: panes.max_event_ms(&partition), next },
            });
        }
        publishing.publish(positions, force, self.checkpoint_interval)?;
        if let Some(bound) = last {
            publishing.finish(bound);
        }
        Ok(())
    }
}
