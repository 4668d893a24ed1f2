//! One monitored stream: its decoder, its reference (loaded, profiled from data, or
//! being taken from the stream's first records), and its windows.

use crate::config::{Config, FieldConfig, ReferenceConfig, StreamConfig, TimeBasis, WindowConfig};
use crate::decode::{self, COMMON_REASONS, DecodeContext, Decoder, FieldBinding, Message};
use crate::ingest::files::DataSource;
use crate::offline::{build_profile_streamed, now_rfc3339};
use crate::stats::Reference;
use crate::stats::profile::{FeatureSpec, Profile, ProfileBuilder};
use crate::stats::settings::{FeatureKind, FeatureOverride};
use crate::stats::sketch::WindowSketch;
use crate::stats::window::{ClosedWindow, PaneClock, Span, WindowSpec, Windower, WindowerState};
use crate::telemetry::StreamCounters;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A setting of one stream that cannot work; `key` is the config path.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct StreamSetupError {
    pub key: String,
    pub message: String,
}

/// Why a record was not used; `reason` is a bounded metric label.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    pub reason: &'static str,
    pub detail: String,
}

/// A stream's decoder, folding into window sketches and a reference being taken.
type StreamDecoder = Box<dyn Decoder<WindowSketch, ProfileBuilder>>;

/// The most rows staged before they are folded: a feed batch of one-record messages
/// fits, and a batch of many-row messages is folded in slices of about this size, so
/// memory stays bounded by the batch, whatever the messages hold.
pub const MAX_STAGED_ROWS: usize = 4096;

/// A decoded message whose rows wait to be folded: rows up to `end` (from the end of
/// the message before), where it was read from, and when.
#[derive(Debug, Clone, Copy)]
struct StagedMessage {
    end: usize,
    source: u32,
    offset: i64,
    now_ms: i64,
}

enum ReferenceState {
    Ready(Arc<Reference>),
    /// Taking the reference from the stream's first records.
    Building {
        builder: ProfileBuilder,
        target: u64,
        spans: Vec<Span>,
        settings: crate::stats::DriftSettings,
    },
    /// Only while a finished stream reference is being swapped in.
    Taking,
}

pub struct StreamState {
    pub name: String,
    pub topics: Vec<String>,
    decoder: StreamDecoder,
    /// Messages decoded and not yet folded (see [`StreamState::stage`]).
    staged: Vec<StagedMessage>,
    reference: ReferenceState,
    overrides: BTreeMap<String, FeatureOverride>,
    windower: Windower,
    /// The stream's window settings (their size sets the version-2 nulls to draw).
    window: WindowConfig,
    event_time: bool,
    processing_time_windows: bool,
    /// The latest clock the windows were ticked with. A record's processing time is
    /// read on the consumer thread (once per round of reading, and after a wait), so
    /// it can be older than a tick that already closed its pane; it is raised to this,
    /// so a processing-time record always lands in an open pane, never late.
    clock_floor_ms: i64,
    saved_profile: PathBuf,
    pub counters: StreamCounters,
    /// Processing time minus event time (us) since the last window close.
    event_lag: hdrhistogram::Histogram<u64>,
    /// Global mode (`[scale]`): records go to per-partition panes published as
    /// partials, not to `windower` (which stays empty, so this instance scores nothing
    /// of the stream itself).
    global: Option<crate::scale::panes::PartitionPanes>,
}

impl StreamState {
    pub fn new(
        index: usize,
        stream: &StreamConfig,
        config: &Config,
        context: &DecodeContext,
        counters: StreamCounters,
    ) -> Result<StreamState, StreamSetupError> {
        let key = |k: &str| format!("streams[{index}].{k}");
        let err = |k: &str, message: String| StreamSetupError { key: key(k), message };
        // Stream fields refine the global [[fields]] of the same name.
        let mut overrides = config.overrides();
        for f in &stream.fields {
            let o = overrides.entry(f.name.clone()).or_default();
            let s = f.as_override();
            o.kind = s.kind.or(o.kind);
            o.primary_metric = s.primary_metric.or(o.primary_metric);
            o.threshold = s.threshold.or(o.threshold);
            o.bins = s.bins.or(o.bins);
            o.min_effect = s.min_effect.or(o.min_effect);
            o.rule = s.rule.or(o.rule);
        }
        let saved_profile = config.state.dir.join(format!("{}.reference.profile", sanitize(&stream.name)));
        let settings = config.defaults.clone();

        let loaded: Option<Profile> = match &stream.reference {
            ReferenceConfig { profile: Some(path), .. } => {
                Some(load_profile(path).map_err(|m| err("reference.profile", m))?)
            }
            ReferenceConfig { data: Some(path), .. } => {
                let file = DataSource::open(path).map_err(|e| err("reference.data", e.to_string()))?;
                let (mut profile, _) = build_profile_streamed(&file, &settings, &overrides)
                    .map_err(|e| err("reference.data", e.to_string()))?;
                if let Some(labels) = &stream.labels {
                    let notes = crate::offline::add_model_profile(&mut profile, &file, labels)
                        .map_err(|e| err("reference.data", e.to_string()))?;
                    for note in notes {
                        tracing::info!(stream = %stream.name, "reference: {note}");
                    }
                }
                Some(profile)
            }
            ReferenceConfig { from_stream: Some(_), .. } if saved_profile.exists() => {
                tracing::info!(stream = %stream.name, path = %saved_profile.display(), "using the reference taken from the stream earlier");
                Some(load_profile(&saved_profile).map_err(|m| err("reference.from_stream", m))?)
            }
            _ => None,
        };

        let (fields, reference) = match loaded {
            Some(mut profile) => {
                let fields: Vec<FieldConfig> = if stream.fields.is_empty() {
                    profile
                        .features
                        .iter()
                        .map(|f| FieldConfig { name: f.name.clone(), ..Default::default() })
                        .collect()
                } else {
                    stream.fields.clone()
                };
                // The reference keeps exactly the monitored features, in field order.
                let mut features = Vec::with_capacity(fields.len());
                for (j, f) in fields.iter().enumerate() {
                    let Some(feature) = profile.feature(&f.name).cloned() else {
                        return Err(err(
                            &format!("fields[{j}].name"),
                            format!("`{}` is not in the reference", f.name),
                        ));
                    };
                    features.push(feature);
                }
                profile.features = features;
                let mut settings = settings.clone();
                settings.cdf_resolution = profile.cdf_resolution;
                let known: BTreeMap<_, _> = overrides
                    .iter()
                    .filter(|(n, _)| profile.feature(n).is_some())
                    .map(|(n, o)| (n.clone(), o.clone()))
                    .collect();
                let reference =
                    Reference::new(profile, settings, &known).map_err(|e| err("fields", e.to_string()))?;
                let fields: Vec<(String, Option<String>, FeatureKind)> = fields
                    .iter()
                    .zip(&reference.features)
                    .map(|(f, r)| (f.name.clone(), f.path.clone(), r.kind))
                    .collect();
                warm_up(&reference, &stream.window);
                (fields, ReferenceState::Ready(Arc::new(reference)))
            }
            None => {
                let target = stream.reference.from_stream.unwrap_or(1);
                let specs: Vec<FeatureSpec> = stream
                    .fields
                    .iter()
                    .map(|f| FeatureSpec {
                        name: f.name.clone(),
                        kind: f.kind.unwrap_or(FeatureKind::Numeric),
                        bins: overrides.get(&f.name).and_then(|o| o.bins).unwrap_or(settings.bins),
                    })
                    .collect();
                let fields = specs
                    .iter()
                    .zip(&stream.fields)
                    .map(|(s, f)| (s.name.clone(), f.path.clone(), s.kind))
                    .collect();
                // Check the overrides against these fields now, not when the reference is complete.
                let empty =
                    ProfileBuilder::new(specs.clone(), settings.cdf_resolution, settings.max_categories)
                        .finish(String::new(), String::new());
                Reference::new(empty, settings.clone(), &overrides)
                    .map_err(|e| err("fields", e.to_string()))?;
                let builder = ProfileBuilder::new(specs, settings.cdf_resolution, settings.max_categories);
                (
                    fields,
                    ReferenceState::Building {
                        builder,
                        target,
                        spans: Vec::new(),
                        settings: settings.clone(),
                    },
                )
            }
        };

        let bindings: Vec<FieldBinding> = fields
            .iter()
            .enumerate()
            .map(|(feature, (name, path, kind))| FieldBinding {
                name: name.clone(),
                path: path.clone(),
                feature,
                kind: *kind,
            })
            .collect();
        let decoder = decode::for_stream(context, stream, &bindings).map_err(|e| err(&e.key, e.message))?;

        let (spec, time) = window_spec(&stream.window);
        let global = config.scale.mode_of(&stream.name) == crate::config::scale::ScaleMode::Global;
        let mut state = StreamState {
            name: stream.name.clone(),
            topics: stream.topics.clone(),
            decoder,
            staged: Vec::new(),
            reference,
            overrides,
            windower: Windower::new(spec),
            window: stream.window.clone(),
            event_time: time == Some(TimeBasis::Event),
            processing_time_windows: time == Some(TimeBasis::Processing),
            clock_floor_ms: i64::MIN,
            saved_profile,
            counters,
            event_lag: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("static histogram bounds"),
            global: None,
        };
        if global {
            // The config refuses what global mode cannot do (count windows, a
            // reference taken from the stream), so the reference is here.
            if state.reference().is_none() {
                return Err(err("reference", "global mode needs a reference profile or data".into()));
            }
            let (window, reference) = state.fingerprint();
            let header = crate::stats::partial::PartialHeader::new(&stream.name, &window, reference);
            state.global = crate::scale::panes::PartitionPanes::new(header, spec, state.event_time);
            if state.global.is_none() {
                return Err(err("window.type", "global mode needs time windows".into()));
            }
        }
        Ok(state)
    }

    /// The per-partition panes of a global stream.
    pub fn global(&self) -> Option<&crate::scale::panes::PartitionPanes> {
        self.global.as_ref()
    }

    pub fn global_mut(&mut self) -> Option<&mut crate::scale::panes::PartitionPanes> {
        self.global.as_mut()
    }

    /// A global stream's partials closed by `now_ms` (rows staged are folded first).
    pub fn take_partials(&mut self, now_ms: i64) -> Vec<crate::stats::partial::Partial> {
        let mut none = Vec::new();
        self.flush(&mut none);
        self.clock_floor_ms = self.clock_floor_ms.max(now_ms);
        match self.global.as_mut() {
            Some(global) => global.close(now_ms),
            None => Vec::new(),
        }
    }

    /// The reference, once there is one.
    pub fn reference(&self) -> Option<&Arc<Reference>> {
        match &self.reference {
            ReferenceState::Ready(r) => Some(r),
            ReferenceState::Building { .. } | ReferenceState::Taking => None,
        }
    }

    /// Every reason a message of this stream can be refused with.
    pub fn reasons(&self) -> impl Iterator<Item = &'static str> + use<> {
        let own = self.decoder.reasons();
        COMMON_REASONS.into_iter().chain(own.iter().copied().filter(|r| !COMMON_REASONS.contains(r)))
    }

    /// Folds one message in at once. `now_ms` is the processing time.
    pub fn process(
        &mut self,
        message: &Message<'_>,
        source: u32,
        offset: i64,
        now_ms: i64,
        closed: &mut Vec<ClosedWindow>,
    ) -> Result<(), BadRecord> {
        let staged = self.stage(message, source, offset, now_ms, closed);
        self.flush(closed);
        staged.map(|_| ())
    }

    /// Decodes one message and holds its rows for [`flush`](Self::flush), which folds
    /// the rows of many messages at once (a decoder that cannot hold many messages'
    /// rows has each message folded before the next is decoded, and so does a batch
    /// past [`MAX_STAGED_ROWS`]). `now_ms` is the processing time.
    ///
    /// A row without a usable event time (event-time windows) is counted
    /// `bad_event_time` when folded; when no row of the message has one, the message is
    /// refused as a whole. Returns the message's rows (records).
    pub fn stage(
        &mut self,
        message: &Message<'_>,
        source: u32,
        offset: i64,
        now_ms: i64,
        closed: &mut Vec<ClosedWindow>,
    ) -> Result<usize, BadRecord> {
        if !self.staged.is_empty() && (!self.decoder.appends() || self.staged_rows() >= MAX_STAGED_ROWS) {
            self.flush(closed);
        }
        let now_ms = now_ms.max(self.clock_floor_ms);
        let first = self.staged_rows();
        let rows = self
            .decoder
            .decode(message)
            .map_err(|refusal| BadRecord { reason: refusal.reason, detail: refusal.detail })?;
        if self.event_time
            && rows > 0
            && (first..first + rows).all(|r| !matches!(self.event_time_ms(r), Some(Ok(_))))
        {
            self.discard_rows_from(first, closed);
            return Err(BadRecord {
                reason: "bad_event_time",
                detail: "event time missing or unusable".into(),
            });
        }
        if rows > 0 {
            self.staged.push(StagedMessage { end: first + rows, source, offset, now_ms });
        }
        Ok(rows)
    }

    /// The label join's view of the message just staged (`open_inference` with labels).
    pub fn held_predictions(&self) -> Option<&dyn crate::decode::HeldPredictions> {
        self.decoder.held_predictions()
    }

    fn staged_rows(&self) -> usize {
        self.staged.last().map_or(0, |m| m.end)
    }

    /// Drops the rows from `first` on, which the decoder just added. A decoder drops
    /// only all its rows, so the staged rows before them are folded first.
    fn discard_rows_from(&mut self, first: usize, closed: &mut Vec<ClosedWindow>) {
        if first > 0 {
            self.fold_staged(first, closed);
            self.staged.clear();
        }
        self.decoder.clear();
    }

    /// An event time a report could show (1970..=9999), or unusable.
    fn event_time_ms(&self, row: usize) -> crate::decode::EventTime {
        match self.decoder.event_time_ms(row) {
            Some(Ok(t)) if !crate::clock::FORMATTABLE_MS.contains(&t) => Some(Err(())),
            other => other,
        }
    }

    /// Folds the staged rows into the panes (or the reference being taken), closing
    /// the windows that fill or that the watermark passes.
    pub fn flush(&mut self, closed: &mut Vec<ClosedWindow>) {
        if self.staged.is_empty() {
            return;
        }
        let rows = self.staged_rows();
        self.fold_staged(rows, closed);
        self.decoder.clear();
        self.staged.clear();
    }

    /// One path for every format: staged rows `0..rows` go to the panes in runs (rows
    /// of the same time, and no more than a count pane still has room for, or the
    /// reference being taken still needs).
    fn fold_staged(&mut self, rows: usize, closed: &mut Vec<ClosedWindow>) {
        let mut row = 0;
        let mut message = 0;
        while row < rows {
            while self.staged[message].end <= row {
                message += 1;
            }
            let StagedMessage { now_ms, .. } = self.staged[message];
            let mut end;
            let time = if self.event_time {
                let Some(Ok(t)) = self.event_time_ms(row) else {
                    self.counters.invalid("bad_event_time");
                    row += 1;
                    continue;
                };
                end = row + 1;
                match self.windower.spec().clock {
                    // On to the last row in the same time pane, folded as one run at its
                    // latest time: no row of the run can close the pane the run is in
                    // (its end is past every time in it), so which rows are late and
                    // what each pane holds are as record by record.
                    PaneClock::Millis { pane_ms, .. } => {
                        let pane = t.div_euclid(pane_ms);
                        let mut latest = t;
                        while end < rows {
                            match self.event_time_ms(end) {
                                Some(Ok(u)) if u.div_euclid(pane_ms) == pane => latest = latest.max(u),
                                _ => break,
                            }
                            end += 1;
                        }
                        latest
                    }
                    PaneClock::Records(_) => {
                        while end < rows && self.event_time_ms(end) == Some(Ok(t)) {
                            end += 1;
                        }
                        t
                    }
                }
            } else {
                // Processing time: on to the last message read at the same time.
                let mut last = message;
                while last + 1 < self.staged.len() && self.staged[last + 1].now_ms == now_ms {
                    last += 1;
                }
                end = self.staged[last].end.min(rows);
                now_ms
            };
            match &mut self.reference {
                ReferenceState::Building { builder, spans, target, .. } => {
                    let needed = target.saturating_sub(builder.records()).max(1) as usize;
                    end = end.min(row + needed);
                    self.decoder.fold_reference(row..end, builder);
                    for m in &self.staged[message..] {
                        cover(spans, m.source, m.offset);
                        if m.end >= end {
                            break;
                        }
                    }
                }
                ReferenceState::Taking => {}
                ReferenceState::Ready(reference) if self.global.is_some() => {
                    // The run's messages from one partition: its rows go to that
                    // partition's pane, folded together (a run of one row at a time
                    // cost global mode twice the folding of local mode).
                    let m = self.staged[message];
                    if let Some(global) = self.global.as_mut() {
                        let replaying = global.replaying(m.source, m.offset);
                        let mut last = message;
                        while last + 1 < self.staged.len()
                            && self.staged[last].end < end
                            && self.staged[last + 1].source == m.source
                            && global.replaying(m.source, self.staged[last + 1].offset) == replaying
                        {
                            last += 1;
                        }
                        end = end.min(self.staged[last].end);
                        match global.pane_for_slot(m.source, time, m.offset, (end - row) as u64, reference) {
                            Some(Ok(pane)) => {
                                self.decoder.fold_window(row..end, &mut pane.sketch);
                                for k in &self.staged[message..=last] {
                                    pane.cover(k.source, k.offset, k.now_ms);
                                }
                            }
                            Some(Err(true)) => self.counters.late_records.inc_by((end - row) as u64),
                            // Read again for a pane already published, or a slot not
                            // registered (every slot is, when the monitor creates it).
                            Some(Err(false)) | None => {}
                        }
                        global.advance_slot(m.source);
                    }
                }
                ReferenceState::Ready(reference) => {
                    if let PaneClock::Records(per_pane) = self.windower.spec().clock {
                        let open = self.windower.open_panes().back().map_or(0, |p| p.sketch.records);
                        let room = per_pane.saturating_sub(open % per_pane.max(1)).max(1) as usize;
                        end = end.min(row + room);
                    }
                    if self.event_time {
                        self.windower.observe_event_time(time);
                    }
                    match self.windower.pane_for(time, reference) {
                        Ok(pane) => {
                            self.decoder.fold_window(row..end, &mut pane.sketch);
                            for m in &self.staged[message..] {
                                pane.cover(m.source, m.offset, m.now_ms);
                                if m.end >= end {
                                    break;
                                }
                            }
                        }
                        Err(_) => {
                            for _ in row..end {
                                self.windower.note_late();
                                self.counters.late_records.inc();
                            }
                        }
                    }
                    self.windower.after_record(closed);
                    if self.event_time {
                        // The watermark moves with the records: close what it passed
                        // before the next record, which may be late for it.
                        self.windower.advance(now_ms, true, closed);
                    }
                }
            }
            self.record_event_lag(message, row, end);
            row = end;
            self.finish_reference_if_complete();
        }
    }

    /// Records processing time minus event time for each message whose first row is in
    /// `row..end` (one sample per message, as records are read one per message).
    fn record_event_lag(&mut self, mut message: usize, row: usize, end: usize) {
        while message < self.staged.len() {
            let first = if message == 0 { 0 } else { self.staged[message - 1].end };
            if first >= end {
                break;
            }
            if first >= row
                && let Some(Ok(t)) = self.event_time_ms(first)
            {
                let lag_us =
                    (self.staged[message].now_ms.saturating_sub(t).max(0) as u64).saturating_mul(1000);
                self.event_lag.saturating_record(lag_us.clamp(1, 3_600_000_000));
            }
            message += 1;
        }
    }

    /// Turns a complete stream-taken reference into the live one, saving it first so a
    /// restart scores against the same reference. A failed save is logged loudly and the
    /// reference is used from memory (a restart would take it again).
    fn finish_reference_if_complete(&mut self) {
        let complete = matches!(&self.reference, ReferenceState::Building { builder, target, .. } if builder.records() >= *target);
        if !complete {
            return;
        }
        let ReferenceState::Building { builder, settings, .. } =
            std::mem::replace(&mut self.reference, ReferenceState::Taking)
        else {
            return;
        };
        let profile = builder.finish(format!("stream:{}", self.name), now_rfc3339());
        let saved = self
            .saved_profile
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| crate::fsutil::write_atomically(&self.saved_profile, &profile.to_json()));
        if let Err(e) = saved {
            tracing::error!(stream = %self.name, path = %self.saved_profile.display(), error = %e, "cannot save the reference taken from the stream; a restart will take it again");
        }
        match Reference::new(profile, settings, &self.overrides) {
            Ok(reference) => {
                tracing::info!(stream = %self.name, records = reference.profile.records, "reference taken from the stream");
                warm_up(&reference, &self.window);
                self.reference = ReferenceState::Ready(Arc::new(reference));
            }
            // Overrides were checked against these very fields at start-up.
            Err(e) => {
                tracing::error!(stream = %self.name, error = %e, "reference taken from the stream is unusable")
            }
        }
    }

    /// Publishes the event lag recorded since the last call.
    pub fn publish_event_lag(&mut self) {
        if !self.event_lag.is_empty() {
            self.counters.event_lag.absorb(&self.name, &self.event_lag);
            self.event_lag.reset();
        }
    }

    /// The lowest offset of `source` held by an open window.
    pub fn lowest_open_offset(&self, source: u32) -> Option<i64> {
        debug_assert!(self.staged.is_empty(), "asked with rows staged: flush first");
        self.windower.lowest_open_offset(source)
    }

    /// Closes time windows whose end has passed.
    pub fn tick(&mut self, now_ms: i64, closed: &mut Vec<ClosedWindow>) {
        self.flush(closed);
        self.clock_floor_ms = self.clock_floor_ms.max(now_ms);
        if self.processing_time_windows || self.event_time {
            self.windower.advance(now_ms, self.event_time, closed);
        }
    }

    /// The lowest offset of `source` held by the reference being taken: those records
    /// are not in a checkpoint, so they must be read again after a restart.
    pub fn lowest_unsaved_offset(&self, source: u32) -> Option<i64> {
        match &self.reference {
            ReferenceState::Building { spans, .. } => {
                spans.iter().find(|s| s.source == source).map(|s| s.first)
            }
            ReferenceState::Ready(_) | ReferenceState::Taking => None,
        }
    }

    /// What a checkpoint of this stream must match to be restored: the window settings
    /// (as text) and a digest of the reference's grids and categories (0 while the
    /// reference is still being taken).
    pub fn fingerprint(&self) -> (String, u32) {
        let spec = self.windower.spec();
        let window = format!("{:?} x {} pane(s)", spec.clock, spec.panes_per_window);
        let digest = self.reference().map_or(0, |r| reference_digest(r));
        (window, digest)
    }

    /// The open windows, for a checkpoint; `None` while the reference is being taken.
    pub fn snapshot(&self) -> Option<WindowerState> {
        debug_assert!(self.staged.is_empty(), "a snapshot with rows staged: flush first");
        self.reference().map(|_| self.windower.snapshot())
    }

    /// Puts the open windows of a checkpoint back (`None`: start with none open).
    pub fn restore(&mut self, state: Option<&WindowerState>) -> Result<(), String> {
        match (state, &self.reference) {
            (Some(state), ReferenceState::Ready(reference)) => self.windower.restore(reference, state),
            (Some(_), _) => Err("it holds windows but the reference is still to be taken".into()),
            (None, _) => {
                self.discard_open();
                Ok(())
            }
        }
    }

    /// Forgets everything not yet emitted (after partitions were revoked, the records
    /// are read again from the committed offsets).
    pub fn discard_open(&mut self) {
        self.staged.clear();
        self.decoder.clear();
        self.windower.discard_open();
        if let Some(global) = self.global.as_mut() {
            global.discard_open();
        }
        if let ReferenceState::Building { builder, spans, .. } = &mut self.reference {
            let specs = builder.specs().to_vec();
            *builder = ProfileBuilder::new(specs, builder.cdf_resolution(), builder.max_categories());
            spans.clear();
        }
    }
}

/// CRC-32 over what a window sketch is built on: each feature's name and kind, grid
/// edges and shift, or category names.
fn reference_digest(reference: &Reference) -> u32 {
    use crate::stats::reference::FeatureModel;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(reference.settings.max_categories as u64).to_le_bytes());
    for feature in &reference.features {
        hasher.update(feature.name.as_bytes());
        hasher.update(&[0]);
        match &feature.model {
            FeatureModel::Numeric { grid, .. } => {
                hasher.update(b"n");
                hasher.update(&grid.shift.to_bits().to_le_bytes());
                for edge in &grid.edges {
                    hasher.update(&edge.to_bits().to_le_bytes());
                }
            }
            FeatureModel::Categorical { index } => {
                hasher.update(b"c");
                for name in index.names() {
                    hasher.update(name.as_bytes());
                    hasher.update(&[0]);
                }
            }
        }
    }
    hasher.finalize()
}

fn cover(spans: &mut Vec<Span>, source: u32, offset: i64) {
    match spans.iter_mut().find(|s| s.source == source) {
        Some(s) => {
            s.first = s.first.min(offset);
            s.last = s.last.max(offset);
        }
        None => spans.push(Span { source, first: offset, last: offset }),
    }
}

fn load_profile(path: &Path) -> Result<Profile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Profile::from_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The window spec and time basis of a window config.
pub fn window_spec(window: &WindowConfig) -> (WindowSpec, Option<TimeBasis>) {
    let ms = |d: &std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
    let lateness = |d: &std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    match window {
        WindowConfig::TumblingCount { size } => {
            (WindowSpec { clock: PaneClock::Records(*size), panes_per_window: 1 }, None)
        }
        WindowConfig::SlidingCount { size, slide } => (
            WindowSpec {
                clock: PaneClock::Records(*slide),
                panes_per_window: (size / slide).max(1) as usize,
            },
            None,
        ),
        WindowConfig::TumblingTime { size, time, allowed_lateness } => (
            WindowSpec {
                clock: PaneClock::Millis { pane_ms: ms(size), lateness_ms: lateness(allowed_lateness) },
                panes_per_window: 1,
            },
            Some(*time),
        ),
        WindowConfig::SlidingTime { size, slide, time, allowed_lateness } => (
            WindowSpec {
                clock: PaneClock::Millis { pane_ms: ms(slide), lateness_ms: lateness(allowed_lateness) },
                panes_per_window: (ms(size) / ms(slide)).max(1) as usize,
            },
            Some(*time),
        ),
    }
}

/// Draws the version-2 nulls for a count window's size before the first window, so
/// that window is not held up by them (time windows draw each size on first use).
fn warm_up(reference: &Reference, window: &WindowConfig) {
    if let WindowConfig::TumblingCount { size } | WindowConfig::SlidingCount { size, .. } = window {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let started = std::time::Instant::now();
        reference.warm_up(*size, threads);
        tracing::debug!(
            window = size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "version-2 nulls drawn"
        );
    }
}

/// A stream name made safe as a file name.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::stats::ValueSink;
    use crate::stats::profile::{FeatureSpec, ProfileBuilder};
    use crate::telemetry::Telemetry;

    /// A stream of one numeric field `x` with 1 s processing-time windows.
    fn processing_time_stream(dir: &std::path::Path) -> (StreamState, Telemetry) {
        let specs = vec![FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 }];
        let mut builder = ProfileBuilder::new(specs, 64, 100);
        builder.add_records(100);
        for i in 0..100 {
            builder.numeric(0, f64::from(i));
        }
        let profile = dir.join("x.profile.json");
        std::fs::write(&profile, builder.finish("x".into(), "now".into()).to_json()).expect("profile");
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[http]\nlisten = \"\"\n[state]\ndir = {:?}\n\
             [[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"json\"\n\
             window = {{ type = \"tumbling_time\", size = \"1s\", time = \"processing\" }}\nreference = {{ profile = {:?} }}\n",
            dir.join("state").display().to_string(),
            profile.display().to_string(),
        );
        let config = Config::from_toml(&text, &dir.join("driftscope.toml")).expect("config");
        let telemetry = Telemetry::new();
        let state = StreamState::new(
            0,
            &config.streams[0],
            &config,
            &DecodeContext::default(),
            telemetry.stream("s"),
        )
        .expect("stream");
        (state, telemetry)
    }

    #[test]
    fn a_record_stamped_before_the_last_tick_lands_in_an_open_pane() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut state, _telemetry) = processing_time_stream(dir.path());
        let mut closed = Vec::new();
        state.process(&Message::value(br#"{"x": 1}"#), 0, 0, 10_500, &mut closed).expect("record 0");
        state.tick(12_000, &mut closed);
        assert_eq!(closed.len(), 1, "the tick closed the pane of record 0");
        // The consumer thread read its clock before the tick: this stamp is in the
        // closed pane, yet the record is processed after the tick.
        state.process(&Message::value(br#"{"x": 2}"#), 0, 1, 10_900, &mut closed).expect("record 1");
        state.tick(13_500, &mut closed);
        assert_eq!(closed.len(), 2, "record 1 is in the next window: {closed:?}");
        assert_eq!((closed[1].sketch.records, closed[1].late_records), (1, 0));
        assert_eq!(state.counters.late_records.get(), 0);
    }

    /// A stream of one numeric field `x` reading arrays of records at `records_path`,
    /// in count windows of 4.
    fn array_stream(dir: &std::path::Path, records_path: &str) -> (StreamState, Telemetry) {
        count_stream(dir, &format!("json = {{ records_path = {records_path:?} }}\n"))
    }

    /// A JSON stream of a numeric `x` and a categorical `c`, count windows of 4, with
    /// `extra` added to its table.
    fn count_stream(dir: &std::path::Path, extra: &str) -> (StreamState, Telemetry) {
        json_stream(dir, extra, r#"{ type = "tumbling_count", size = 4 }"#)
    }

    /// The same stream with `window` (a TOML inline table).
    fn json_stream(dir: &std::path::Path, extra: &str, window: &str) -> (StreamState, Telemetry) {
        let specs = vec![
            FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
            FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
        ];
        let mut builder = ProfileBuilder::new(specs, 64, 100);
        builder.add_records(100);
        for i in 0..100 {
            builder.numeric(0, f64::from(i));
            builder.category(1, ["a", "b", "c"][i as usize % 3]);
        }
        let profile = dir.join("x.profile.json");
        std::fs::write(&profile, builder.finish("x".into(), "now".into()).to_json()).expect("profile");
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[http]\nlisten = \"\"\n[state]\ndir = {:?}\n\
             [[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"json\"\n{extra}\
             window = {window}\nreference = {{ profile = {:?} }}\n",
            dir.join("state").display().to_string(),
            profile.display().to_string(),
        );
        let config = Config::from_toml(&text, &dir.join("driftscope.toml")).expect("config");
        let telemetry = Telemetry::new();
        let state = StreamState::new(
            0,
            &config.streams[0],
            &config,
            &DecodeContext::default(),
            telemetry.stream("s"),
        )
        .expect("stream");
        (state, telemetry)
    }

    #[test]
    fn an_array_message_is_split_across_count_windows_row_for_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut state, _telemetry) = array_stream(dir.path(), "/batch/records");
        let mut closed = Vec::new();
        let message = br#"{"id": 7, "batch": {"records": [{"x": 1}, {"x": 2}, {"x": null}]}}"#;
        state.process(&Message::value(message), 0, 0, 0, &mut closed).expect("message 0");
        assert!(closed.is_empty());
        state.process(&Message::value(message), 0, 1, 0, &mut closed).expect("message 1");
        assert_eq!(closed.len(), 1, "6 records: one window of 4 closed");
        assert_eq!(closed[0].sketch.records, 4);
        state
            .process(&Message::value(br#"{"batch": {"records": []}}"#), 0, 2, 0, &mut closed)
            .expect("empty");
        state.process(&Message::value(message), 0, 3, 0, &mut closed).expect("message 3");
        assert_eq!(closed.len(), 2, "9 records: two windows of 4");
        assert_eq!(closed[1].sketch.records, 4);
        // The second window holds the last record of message 1 and three of message 3.
        let offsets: Vec<(i64, i64)> = closed[1].spans.iter().map(|s| (s.first, s.last)).collect();
        assert_eq!(offsets, vec![(1, 3)]);
    }

    #[test]
    fn an_array_with_one_bad_record_is_refused_whole_and_a_top_level_array_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut state, _telemetry) = array_stream(dir.path(), "/records");
        let mut closed = Vec::new();
        let bad = state
            .process(&Message::value(br#"{"records": [{"x": 1}, 5, {"x": 2}]}"#), 0, 0, 0, &mut closed)
            .expect_err("an element that is not an object");
        assert_eq!(bad.reason, "not_an_object");
        assert!(bad.detail.contains("record 1"), "{}", bad.detail);
        let missing = state
            .process(&Message::value(br#"{"rows": []}"#), 0, 1, 0, &mut closed)
            .expect_err("no array at the path");
        assert_eq!(missing.reason, "not_an_array");
        assert!(state.reasons().any(|r| r == "not_an_array"));
        // Nothing of the refused messages reached a window: four good records close one.
        state
            .process(
                &Message::value(br#"{"records": [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]}"#),
                0,
                2,
                0,
                &mut closed,
            )
            .expect("good");
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].sketch.records, 4);

        let (mut top, _t) = array_stream(dir.path(), "");
        let mut closed = Vec::new();
        top.process(
            &Message::value(br#"[{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}, {"x": 5}]"#),
            0,
            0,
            0,
            &mut closed,
        )
        .expect("top-level array");
        assert_eq!(closed.len(), 1);
    }

    #[test]
    fn an_event_time_a_report_cannot_show_is_refused_not_windowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let specs = vec![FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 }];
        let mut builder = ProfileBuilder::new(specs, 64, 100);
        builder.add_records(100);
        for i in 0..100 {
            builder.numeric(0, f64::from(i));
        }
        let profile = dir.path().join("x.profile.json");
        std::fs::write(&profile, builder.finish("x".into(), "now".into()).to_json()).expect("profile");
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\ngroup_id = \"g\"\n[http]\nlisten = \"\"\n[state]\ndir = {:?}\n\
             [[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"json\"\nevent_time_field = \"/ts\"\n\
             window = {{ type = \"tumbling_time\", size = \"1s\", time = \"event\" }}\nreference = {{ profile = {:?} }}\n",
            dir.path().join("state").display().to_string(),
            profile.display().to_string(),
        );
        let config = Config::from_toml(&text, &dir.path().join("driftscope.toml")).expect("config");
        let telemetry = Telemetry::new();
        let mut state = StreamState::new(
            0,
            &config.streams[0],
            &config,
            &DecodeContext::default(),
            telemetry.stream("s"),
        )
        .expect("stream");
        let mut closed = Vec::new();
        for payload in [
            &br#"{"x": 1, "ts": -1500}"#[..],
            br#"{"x": 1, "ts": 1e17}"#,
            br#"{"x": 1, "ts": "0001-01-01T00:00:00Z"}"#,
        ] {
            let bad =
                state.process(&Message::value(payload), 0, 0, 0, &mut closed).expect_err("unshowable time");
            assert_eq!(bad.reason, "bad_event_time");
        }
        state
            .process(&Message::value(br#"{"x": 1, "ts": 1000}"#), 0, 1, 0, &mut closed)
            .expect("a good time");
        state
            .process(&Message::value(br#"{"x": 1, "ts": 5000}"#), 0, 2, 0, &mut closed)
            .expect("a later one");
        assert_eq!(closed.len(), 1, "the window of the good record closed");
        assert_eq!(closed[0].sketch.records, 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Staging messages and folding them in batches gives the windows that folding
        /// each message at once gives: the same records, values, offsets and times.
        #[test]
        fn batches_fold_to_the_windows_messages_fold_to(
            values in proptest::collection::vec((proptest::option::of(-1e3f64..1e3), 0usize..4, 0usize..3), 1..60),
            cuts in proptest::collection::vec(1usize..9, 1..20),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut one, _t1) = count_stream(dir.path(), "");
            let (mut batched, _t2) = count_stream(dir.path(), "");
            let messages: Vec<String> = values
                .iter()
                .map(|(x, c, shape)| match shape {
                    0 => format!(r#"{{"x": {}, "c": "{}"}}"#, x.map_or("null".into(), |x| x.to_string()), ["a", "b", "z", "c"][*c]),
                    1 => r#"{"x": "not a number"}"#.to_owned(),
                    _ => "{broken".to_owned(),
                })
                .collect();
            let (mut closed_one, mut closed_batched) = (Vec::new(), Vec::new());
            for (i, m) in messages.iter().enumerate() {
                let _ = one.process(&Message::value(m.as_bytes()), 0, i as i64, 1_000 + i as i64 / 7, &mut closed_one);
            }
            let mut i = 0;
            for cut in cuts.iter().cycle() {
                if i >= messages.len() {
                    break;
                }
                for (j, m) in messages.iter().enumerate().skip(i).take(*cut) {
                    let _ = batched.stage(&Message::value(m.as_bytes()), 0, j as i64, 1_000 + j as i64 / 7, &mut closed_batched);
                }
                batched.flush(&mut closed_batched);
                i += cut;
            }
            proptest::prop_assert_eq!(closed_one.len(), closed_batched.len());
            for (a, b) in closed_one.iter().zip(&closed_batched) {
                proptest::prop_assert_eq!(a.sketch.snapshot(), b.sketch.snapshot());
                proptest::prop_assert_eq!(&a.spans, &b.spans);
                proptest::prop_assert_eq!((a.start_ms, a.end_ms, a.index), (b.start_ms, b.end_ms, b.index));
            }
            proptest::prop_assert_eq!(one.snapshot(), batched.snapshot());
        }

        /// Event-time windows: a batch folds the rows of one time pane as a run, and
        /// still gives what message by message gives, late records included.
        #[test]
        fn event_time_batches_fold_to_the_windows_messages_fold_to(
            records in proptest::collection::vec((-1e3f64..1e3, 0u32..3, -1500i64..400), 1..80),
            cuts in proptest::collection::vec(1usize..12, 1..20),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let window = r#"{ type = "tumbling_time", size = "1s", time = "event", allowed_lateness = "300ms" }"#;
            let extra = "event_time_field = \"/ts\"\n";
            let (mut one, _t1) = json_stream(dir.path(), extra, window);
            let (mut batched, _t2) = json_stream(dir.path(), extra, window);
            // Times rise by 100 ms a record, some jumping back far enough to be late.
            let messages: Vec<String> = records
                .iter()
                .enumerate()
                .map(|(i, (x, c, jitter))| {
                    let back = if *c == 0 { (*jitter).min(0) } else { 0 };
                    let ts = 10_000 + 100 * i as i64 + back;
                    format!(r#"{{"x": {x}, "c": "{}", "ts": {ts}}}"#, ["a", "b", "z"][*c as usize])
                })
                .collect();
            let (mut closed_one, mut closed_batched) = (Vec::new(), Vec::new());
            for (i, m) in messages.iter().enumerate() {
                let _ = one.process(&Message::value(m.as_bytes()), 0, i as i64, 0, &mut closed_one);
            }
            let mut i = 0;
            for cut in cuts.iter().cycle() {
                if i >= messages.len() {
                    break;
                }
                for (j, m) in messages.iter().enumerate().skip(i).take(*cut) {
                    let _ = batched.stage(&Message::value(m.as_bytes()), 0, j as i64, 0, &mut closed_batched);
                }
                batched.flush(&mut closed_batched);
                i += cut;
            }
            proptest::prop_assert_eq!(closed_one.len(), closed_batched.len());
            for (a, b) in closed_one.iter().zip(&closed_batched) {
                proptest::prop_assert_eq!(a.sketch.snapshot(), b.sketch.snapshot());
                proptest::prop_assert_eq!(&a.spans, &b.spans);
                proptest::prop_assert_eq!((a.start_ms, a.end_ms, a.index, a.late_records), (b.start_ms, b.end_ms, b.index, b.late_records));
            }
            proptest::prop_assert_eq!(one.snapshot(), batched.snapshot());
        }
    }
}
