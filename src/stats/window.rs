//! Windows: which records are scored together. Every window kind is a run of `panes`
//! (tumbling windows are one pane, sliding windows `size / slide` panes); a pane is
//! filled by record count or by time (processing or event time with allowed
//! lateness), and a window is the merge of its panes' sketches. Pure: times and source
//! offsets are plain numbers handed in by the caller.

use super::reference::Reference;
use super::sketch::WindowSketch;
use std::collections::VecDeque;

/// How panes are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaneClock {
    /// A pane holds this many records.
    Records(u64),
    /// A pane covers `[i * pane_ms, (i + 1) * pane_ms)`; it closes once the watermark
    /// (processing time, or the highest event time minus `lateness_ms`) passes its end.
    Millis { pane_ms: i64, lateness_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub clock: PaneClock,
    /// Panes per window: 1 for tumbling windows, `size / slide` for sliding ones.
    pub panes_per_window: usize,
}

/// The first and last offset a pane holds from one source (a topic partition, numbered
/// by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub source: u32,
    pub first: i64,
    pub last: i64,
}

/// Records of one pane.
#[derive(Debug, Clone)]
pub struct Pane {
    pub index: i64,
    pub sketch: WindowSketch,
    pub spans: Vec<Span>,
    /// Times (ms) of the first and last record folded in.
    pub first_ms: i64,
    pub last_ms: i64,
}

impl Pane {
    /// Notes that the pane now holds `offset` of `source`.
    #[inline]
    pub fn cover(&mut self, source: u32, offset: i64, time_ms: i64) {
        if self.spans.is_empty() {
            self.first_ms = time_ms;
        }
        self.last_ms = time_ms;
        match self.spans.iter_mut().find(|s| s.source == source) {
            Some(span) => {
                span.first = span.first.min(offset);
                span.last = span.last.max(offset);
            }
            None => self.spans.push(Span { source, first: offset, last: offset }),
        }
    }
}

/// A window ready to be scored.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    /// Sequence number of the window in its stream.
    pub index: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub sketch: WindowSketch,
    pub spans: Vec<Span>,
    pub late_records: u64,
}

/// A record whose event-time pane had already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late;

/// The open panes of one stream and the logic that closes them.
#[derive(Debug)]
pub struct Windower {
    spec: WindowSpec,
    panes: VecDeque<Pane>,
    /// Panes below this index are closed.
    closed_below: i64,
    next_window: u64,
    next_count_pane: i64,
    late_records: u64,
    max_event_ms: Option<i64>,
    spare: Vec<WindowSketch>,
}

impl Windower {
    pub fn new(spec: WindowSpec) -> Self {
        Windower {
            spec,
            panes: VecDeque::new(),
            closed_below: i64::MIN,
            next_window: 0,
            next_count_pane: 0,
            late_records: 0,
            max_event_ms: None,
            spare: Vec::new(),
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// Windows emitted so far.
    pub fn windows_emitted(&self) -> u64 {
        self.next_window
    }

    /// Records the caller found late since the last window.
    pub fn note_late(&mut self) {
        self.late_records += 1;
    }

    /// Counts `records` late records at once.
    pub fn note_late_records(&mut self, records: u64) {
        self.late_records += records;
    }

    fn new_pane(&mut self, index: i64, reference: &Reference) -> Pane {
        let sketch = match self.spare.pop() {
            Some(mut s) => {
                s.reset();
                s
            }
            None => reference.new_window(),
        };
        Pane { index, sketch, spans: Vec::new(), first_ms: 0, last_ms: 0 }
    }

    /// The pane a record at `time_ms` belongs to. For count panes the time is only
    /// recorded; for time panes it picks the pane, and a record for a closed pane is `Late`.
    pub fn pane_for(&mut self, time_ms: i64, reference: &Reference) -> Result<&mut Pane, Late> {
        let index = match self.spec.clock {
            PaneClock::Records(_) => self.next_count_pane,
            PaneClock::Millis { pane_ms, .. } => time_ms.div_euclid(pane_ms),
        };
        if index < self.closed_below {
            return Err(Late);
        }
        let position = match self.panes.iter().position(|p| p.index >= index) {
            Some(i) if self.panes[i].index == index => i,
            Some(i) => {
                let pane = self.new_pane(index, reference);
                self.panes.insert(i, pane);
                i
            }
            None => {
                let pane = self.new_pane(index, reference);
                self.panes.push_back(pane);
                self.panes.len() - 1
            }
        };
        Ok(&mut self.panes[position])
    }

    /// Raises the event-time high-water mark (event-time windows).
    pub fn observe_event_time(&mut self, time_ms: i64) {
        self.max_event_ms = Some(self.max_event_ms.map_or(time_ms, |m| m.max(time_ms)));
    }

    /// For count panes: closes the current pane if it is full. Call after each record.
    pub fn after_record(&mut self, out: &mut Vec<ClosedWindow>) {
        let PaneClock::Records(per_pane) = self.spec.clock else {
            return;
        };
        let full = self
            .panes
            .back()
            .is_some_and(|p| p.index == self.next_count_pane && p.sketch.records >= per_pane);
        if full {
            let closed = self.next_count_pane;
            self.next_count_pane += 1;
            self.close_through(closed, out);
        }
    }

    /// For time panes: closes every pane that ends at or before the watermark, where the
    /// watermark is `now_ms` for processing time, or the highest event time seen minus
    /// the allowed lateness for event time (`event_time = true`).
    pub fn advance(&mut self, now_ms: i64, event_time: bool, out: &mut Vec<ClosedWindow>) {
        let PaneClock::Millis { pane_ms, lateness_ms } = self.spec.clock else {
            return;
        };
        let watermark = if event_time {
            match self.max_event_ms {
                Some(m) => m.saturating_sub(lateness_ms),
                None => return,
            }
        } else {
            now_ms
        };
        // Pane i ends at (i + 1) * pane_ms; it is closed once that is <= watermark.
        let last_closed = watermark.div_euclid(pane_ms) - 1;
        if last_closed >= self.closed_below || self.closed_below == i64::MIN {
            self.close_through(last_closed, out);
        }
    }

    /// Closes panes up to `last` and emits the windows that end at each of them.
    fn close_through(&mut self, last: i64, out: &mut Vec<ClosedWindow>) {
        let k = self.spec.panes_per_window as i64;
        let Some(oldest) = self.panes.front().map(|p| p.index) else {
            self.closed_below = self.closed_below.max(last + 1);
            return;
        };
        // Windows end at each pane index from the first not yet closed (but no earlier
        // than the oldest retained pane) to `last`, and no later than a window can
        // still reach a retained pane.
        let newest = self.panes.back().map_or(oldest, |p| p.index);
        let from = self.closed_below.max(oldest);
        let to = last.min(newest + k - 1);
        let count_windows = matches!(self.spec.clock, PaneClock::Records(_));
        let mut end = from;
        while end <= to {
            let start = end - k + 1;
            let full_count_window = !count_windows || start >= 0;
            let members: Vec<&Pane> =
                self.panes.iter().filter(|p| p.index >= start && p.index <= end).collect();
            if full_count_window && members.iter().any(|p| p.sketch.records > 0) {
                let mut window = merge_panes(self.spec.clock, &members, start, end);
                window.index = self.next_window;
                window.late_records = std::mem::take(&mut self.late_records);
                self.next_window += 1;
                out.push(window);
            }
            end += 1;
        }
        self.closed_below = self.closed_below.max(last + 1);
        // A pane is needed until the window ending k - 1 panes after it has closed.
        while self.panes.front().is_some_and(|p| p.index + k - 1 < self.closed_below) {
            if let Some(pane) = self.panes.pop_front() {
                self.spare.push(pane.sketch);
            }
        }
    }
}

/// The window made of `members`, the panes from `start` to `end` that hold records.
fn merge_panes(clock: PaneClock, members: &[&Pane], start: i64, end: i64) -> ClosedWindow {
    {
        let mut sketch = members[0].sketch.clone();
        let mut spans = members[0].spans.clone();
        for pane in &members[1..] {
            sketch.merge(&pane.sketch);
            for s in &pane.spans {
                match spans.iter_mut().find(|x| x.source == s.source) {
                    Some(x) => {
                        x.first = x.first.min(s.first);
                        x.last = x.last.max(s.last);
                    }
                    None => spans.push(*s),
                }
            }
        }
        let (start_ms, end_ms) = match clock {
            PaneClock::Records(_) => (
                members.iter().filter(|p| p.sketch.records > 0).map(|p| p.first_ms).min().unwrap_or(0),
                members.iter().map(|p| p.last_ms).max().unwrap_or(0),
            ),
            PaneClock::Millis { pane_ms, .. } => (start * pane_ms, (end + 1) * pane_ms),
        };
        ClosedWindow { index: 0, start_ms, end_ms, sketch, spans, late_records: 0 }
    }
}

impl Windower {
    /// The lowest offset of `source` still held by an open pane, if any: offsets below
    /// it (and below the next unread one) are in emitted windows or were never windowed.
    pub fn lowest_open_offset(&self, source: u32) -> Option<i64> {
        self.panes.iter().flat_map(|p| p.spans.iter()).filter(|s| s.source == source).map(|s| s.first).min()
    }

    /// Drops every open pane (after a rebalance the records are read again).
    pub fn discard_open(&mut self) {
        while let Some(pane) = self.panes.pop_front() {
            self.spare.push(pane.sketch);
        }
        if let PaneClock::Records(_) = self.spec.clock {
            // Count windows restart from a clean pane boundary.
            self.closed_below = self.next_count_pane;
        }
    }

    pub fn open_panes(&self) -> &VecDeque<Pane> {
        &self.panes
    }
}

/// One open pane, for checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PaneState {
    pub index: i64,
    pub sketch: super::sketch::WindowSketchState,
    pub spans: Vec<Span>,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Everything a [`Windower`] holds, for checkpoints: the open panes and the counters
/// that number and close windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowerState {
    pub panes: Vec<PaneState>,
    pub closed_below: i64,
    pub next_window: u64,
    pub next_count_pane: i64,
    pub late_records: u64,
    pub max_event_ms: Option<i64>,
}

impl Windower {
    pub fn snapshot(&self) -> WindowerState {
        WindowerState {
            panes: self
                .panes
                .iter()
                .map(|p| PaneState {
                    index: p.index,
                    sketch: p.sketch.snapshot(),
                    spans: p.spans.clone(),
                    first_ms: p.first_ms,
                    last_ms: p.last_ms,
                })
                .collect(),
            closed_below: self.closed_below,
            next_window: self.next_window,
            next_count_pane: self.next_count_pane,
            late_records: self.late_records,
            max_event_ms: self.max_event_ms,
        }
    }

    /// Replaces this windower's state with a snapshot taken on the same reference and
    /// window spec; on error the windower is left as it was.
    pub fn restore(&mut self, reference: &Reference, state: &WindowerState) -> Result<(), String> {
        let mut panes = VecDeque::with_capacity(state.panes.len());
        let mut previous = None;
        for p in &state.panes {
            if previous.is_some_and(|i| i >= p.index) {
                return Err(format!("pane {} is out of order", p.index));
            }
            previous = Some(p.index);
            let sketch = reference.restore_window(&p.sketch).map_err(|e| format!("pane {}: {e}", p.index))?;
            panes.push_back(Pane {
                index: p.index,
                sketch,
                spans: p.spans.clone(),
                first_ms: p.first_ms,
                last_ms: p.last_ms,
            });
        }
        while let Some(pane) = self.panes.pop_front() {
            self.spare.push(pane.sketch);
        }
        self.panes = panes;
        self.closed_below = state.closed_below;
        self.next_window = state.next_window;
        self.next_count_pane = state.next_count_pane;
        self.late_records = state.late_records;
        self.max_event_ms = state.max_event_ms;
        Ok(())
    }
}
