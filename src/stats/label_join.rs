//! The label join: predictions wait for their delayed labels (and labels that arrive
//! first wait for their prediction), by request id, in bounded memory. Pure: the clock
//! is handed in with every call, and the whole state serializes for the checkpoint.
//!
//! Every request id (a 64-bit hash of it, [`id_hash`]: the id string is never kept)
//! holds one entry from its first message (prediction or label) until `ttl` later.
//! While one side waits, the entry holds that side's value; once both have come the
//! pair is handed out ([`JoinEvent::Joined`]) and the entry stays as a marker until
//! its deadline, so a redelivered prediction or label within `ttl` is recognised as a
//! duplicate and never counts twice. At the deadline a waiting prediction has
//! `expired` (its window counts it as unlabelled) and a waiting label was an `orphan`.
//! When `max_pending` entries are held the oldest is evicted first, and counted.
//!
//! Entries sit in a ring in arrival order (eviction takes from the front) and a hash
//! index maps the id hash to the entry's sequence number: 40 bytes per entry in the
//! ring (which grows by a quarter, so at most 50 bytes with its slack) plus 5 per index
//! bucket (at 44% to 87.5% load: 5.7 to 11.4 bytes per entry). Measured from 1,000 to
//! 1,048,576 entries: 47 to 57 bytes per entry (58 at 600,000 entries under a cap of
//! 1,000,000 in `benches/label_join.rs`), under 64 (`memory_per_entry_is_under_64_bytes`).
//!
//! An entry's deadline is `ttl` after the time it is due from: the caller's clock at
//! arrival (processing time, or an event-time watermark for a label), or a
//! prediction's own event time ([`LabelJoin::prediction_due`]). On processing time
//! deadlines are non-decreasing along the ring and expiry takes from the front. Event
//! times arrive out of order, so an entry whose deadline is earlier than one already
//! behind the front is also noted in a min-heap of `(deadline, sequence number)`, 12
//! bytes for each such entry only (the heap grows by a quarter): it expires exactly at
//! its deadline, in place (its slot in the ring stays, dead, until the front reaches
//! it). Measured with three partitions read in turn, each in event-time order (two in
//! three entries in the heap): 58.5 bytes per entry at 1,048,576 entries
//! (`memory_per_entry_with_out_of_order_event_times`).
//!
//! Every entry remembers the partition number its first message came from (label and
//! prediction topics are co-partitioned, so an id's messages share it): when a
//! partition moves to another instance of the group, [`LabelJoin::take_partitions`]
//! takes its entries out (a [`Handed`], which the caller writes to Kafka) and the new
//! owner merges them in ([`LabelJoin::merge`]) with their deadlines and sides, so a
//! waiting prediction is joined once wherever its label is read and a joined id's
//! duplicate is still recognised. The partition fits in the entry's padding: the
//! entry stays 40 bytes.
//!
//! Ids are compared by their 64-bit hash: two ids collide with probability about
//! `pending^2 / 2^65` (1e-8 at a million entries), and a collision joins one id's
//! label to the other's prediction. A duplicate arriving more than `ttl` after the
//! first message of its id is treated as new.

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// The join's settings (validated by the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JoinSettings {
    /// How long an id's first message waits for the other (ms of the caller's clock).
    pub ttl_ms: i64,
    /// Entries held at most.
    pub max_pending: usize,
    /// Fraction of request ids joined, chosen by the id's hash.
    pub sample: f64,
}

/// Entries the join can hold at most (sequence numbers are 32-bit).
pub const MAX_PENDING_LIMIT: usize = 1 << 30;

/// A stable 64-bit hash of a request id (the same in every process and version, so
/// the checkpoint and both topics agree): FNV-1a, then the SplitMix64 finalizer.
pub fn id_hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether the id of hash `id` is in the sample (a function of the id alone, so
/// predictions and labels pick the same ids).
pub fn sampled(id: u64, sample: f64) -> bool {
    if sample >= 1.0 {
        return true;
    }
    // Remixed, so the sample is not the ids whose index hash is small.
    let u = (mix(id ^ 0x5851_f42d_4c95_7f2d) >> 11) as f64 / (1u64 << 53) as f64;
    u < sample
}

const HAS_PREDICTION: u8 = 1;
const HAS_LABEL: u8 = 2;
/// An entry that ended in place (out of the index, never counted again): its slot
/// waits for the front to reach it.
const DEAD: u8 = 0;

/// An entry due before one already behind it in the ring: its deadline and sequence
/// number, packed in 12 bytes, ordered so the max-heap holds the earliest deadline on
/// top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
struct Early {
    deadline_ms: i64,
    seq: u32,
}

impl Ord for Early {
    fn cmp(&self, other: &Early) -> Ordering {
        let (a, b) = ({ self.deadline_ms }, { other.deadline_ms });
        b.cmp(&a).then_with(|| { other.seq }.cmp(&{ self.seq }))
    }
}

impl PartialOrd for Early {
    fn partial_cmp(&self, other: &Early) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One request id's entry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredEntry", into = "EntryTuple")]
struct Entry {
    id: u64,
    deadline_ms: i64,
    /// The prediction's window (when it has come).
    window: i64,
    /// The waiting side's value (prediction or label); unused once joined.
    value: f64,
    /// `HAS_PREDICTION | HAS_LABEL`: both set means joined.
    sides: u8,
    /// The partition number of the id's first message (where it is handed over from).
    partition: i32,
}

/// An entry as the checkpoint stores it: an array, not a map of field names.
type EntryTuple = (u64, i64, i64, f64, u8, i32);

/// An entry as read from a checkpoint: with its partition, or from a checkpoint
/// written before entries had one (then partition 0).
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredEntry {
    Current(EntryTuple),
    WithoutPartition((u64, i64, i64, f64, u8)),
}

impl From<StoredEntry> for Entry {
    fn from(stored: StoredEntry) -> Entry {
        match stored {
            StoredEntry::Current(t) => t.into(),
            StoredEntry::WithoutPartition((id, deadline_ms, window, value, sides)) => {
                Entry { id, deadline_ms, window, value, sides, partition: 0 }
            }
        }
    }
}

impl From<EntryTuple> for Entry {
    fn from((id, deadline_ms, window, value, sides, partition): EntryTuple) -> Entry {
        Entry { id, deadline_ms, window, value, sides, partition }
    }
}

impl From<Entry> for EntryTuple {
    fn from(e: Entry) -> EntryTuple {
        (e.id, e.deadline_ms, e.window, e.value, e.sides, e.partition)
    }
}

/// Entries taken out of a join for another instance (or put back): waiting
/// predictions, waiting labels and joined ids' duplicate markers, with their deadlines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Handed {
    entries: Vec<Entry>,
}

/// One handed entry as its new owner sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HandedSide {
    /// A prediction waiting for its label.
    Prediction,
    /// A label waiting for its prediction.
    Label,
    /// A joined id, kept to recognise a duplicate.
    Joined,
}

impl Handed {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The windows of the waiting predictions, one item per prediction.
    pub fn waiting_predictions(&self) -> impl Iterator<Item = i64> + '_ {
        self.entries.iter().filter(|e| e.sides == HAS_PREDICTION).map(|e| e.window)
    }

    /// The entries of partition `partition` alone.
    pub fn of_partition(&self, partition: i32) -> Handed {
        Handed { entries: self.entries.iter().filter(|e| e.partition == partition).copied().collect() }
    }

    /// The entries by partition number.
    pub fn by_partition(&self) -> std::collections::BTreeMap<i32, Handed> {
        let mut out: std::collections::BTreeMap<i32, Handed> = std::collections::BTreeMap::new();
        for e in &self.entries {
            out.entry(e.partition).or_default().entries.push(*e);
        }
        out
    }

    /// Rewrites each entry's window and value (the new owner's window for a waiting
    /// prediction, its own class numbering): `f(side, window, value)`.
    pub fn adapt(&mut self, mut f: impl FnMut(HandedSide, i64, f64) -> (i64, f64)) {
        for e in &mut self.entries {
            let side = match e.sides {
                HAS_PREDICTION => HandedSide::Prediction,
                HAS_LABEL => HandedSide::Label,
                _ => HandedSide::Joined,
            };
            (e.window, e.value) = f(side, e.window, e.value);
        }
    }
}

/// What a call did, for the caller's windows and counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JoinEvent {
    /// A prediction and its label met.
    Joined { id: u64, window: i64, predicted: f64, label: f64 },
    /// A prediction waited `ttl` without a label.
    Expired { window: i64 },
    /// A waiting prediction was evicted by the cap.
    Evicted { window: i64 },
    /// A label waited `ttl` without its prediction.
    Orphan,
    /// A waiting label was evicted by the cap.
    LabelEvicted,
    /// A joined entry's duplicate marker was evicted by the cap (a later duplicate of
    /// that id would be taken as new).
    MarkerEvicted,
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first of its id: it waits.
    Waiting,
    /// It met the other side (a [`JoinEvent::Joined`] was handed out).
    Joined,
    /// The same side of this id came before: not counted.
    Duplicate,
    /// The id is outside the sample.
    NotSampled,
}

/// Running totals (never reset; checkpointed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounts {
    pub predictions: u64,
    pub labels: u64,
    pub joined: u64,
    pub expired: u64,
    pub evicted: u64,
    pub orphans: u64,
    pub labels_evicted: u64,
    pub markers_evicted: u64,
    pub duplicate_predictions: u64,
    pub duplicate_labels: u64,
    pub not_sampled: u64,
    /// Waiting predictions handed over to another instance with their partition.
    #[serde(default)]
    pub handed_over: u64,
    /// Waiting predictions taken over from another instance.
    #[serde(default)]
    pub adopted: u64,
}

/// The join's state as the checkpoint keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinState {
    entries: Vec<Entry>,
    pub counts: JoinCounts,
    last_deadline_ms: i64,
}

/// The join.
pub struct LabelJoin {
    settings: JoinSettings,
    ring: VecDeque<Entry>,
    /// Sequence number of the ring's front entry.
    head: u32,
    /// id hash -> sequence number.
    index: HashTable<u32>,
    counts: JoinCounts,
    /// The latest deadline pushed (checkpointed; kept for older checkpoints' layout).
    last_deadline_ms: i64,
    /// The latest deadline along the ring since it was last rebuilt: an entry pushed
    /// with an earlier one goes into `early` too.
    ring_max_ms: i64,
    /// `(deadline, sequence number)` of the entries pushed behind a later deadline.
    early: BinaryHeap<Early>,
    /// Dead slots in the ring.
    dead: usize,
}

impl JoinState {
    /// Every entry held, to hand out by partition.
    pub fn entries(&self) -> Handed {
        Handed { entries: self.entries.clone() }
    }
}

impl LabelJoin {
    pub fn new(settings: JoinSettings) -> LabelJoin {
        LabelJoin {
            settings,
            ring: VecDeque::new(),
            head: 0,
            index: HashTable::new(),
            counts: JoinCounts::default(),
            last_deadline_ms: i64::MIN,
            ring_max_ms: i64::MIN,
            early: BinaryHeap::new(),
            dead: 0,
        }
    }

    pub fn counts(&self) -> &JoinCounts {
        &self.counts
    }

    pub fn settings(&self) -> JoinSettings {
        self.settings
    }

    /// Entries held (waiting or kept as duplicate markers).
    pub fn len(&self) -> usize {
        self.ring.len() - self.dead
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Predictions waiting for a label, per window (for a window's coverage).
    pub fn waiting_predictions(&self) -> impl Iterator<Item = i64> + '_ {
        self.ring.iter().filter(|e| e.sides == HAS_PREDICTION).map(|e| e.window)
    }

    /// Bytes allocated by the ring, the index and the heap of early deadlines.
    pub fn allocated_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Entry>()
            + self.index.allocation_size()
            + self.early.capacity() * std::mem::size_of::<Early>()
    }

    /// A prediction of id hash `id` in `window`, with its value (score, class index or
    /// regression prediction).
    pub fn prediction(
        &mut self,
        id: u64,
        window: i64,
        value: f64,
        now_ms: i64,
        events: &mut Vec<JoinEvent>,
    ) -> Arrival {
        self.arrive(id, 0, HAS_PREDICTION, window, value, now_ms, now_ms, events)
    }

    /// A label of id hash `id`, with its value (0/1, class index or regression target).
    pub fn label(&mut self, id: u64, value: f64, now_ms: i64, events: &mut Vec<JoinEvent>) -> Arrival {
        self.arrive(id, 0, HAS_LABEL, 0, value, now_ms, now_ms, events)
    }

    /// [`Self::prediction`] read from partition `partition`.
    pub fn prediction_in(
        &mut self,
        partition: i32,
        id: u64,
        window: i64,
        value: f64,
        now_ms: i64,
        events: &mut Vec<JoinEvent>,
    ) -> Arrival {
        self.arrive(id, partition, HAS_PREDICTION, window, value, now_ms, now_ms, events)
    }

    /// [`Self::prediction_in`] of a prediction due from `due_ms` (its event time): it
    /// waits until the clock (`now_ms`, the watermark) reaches `due_ms + ttl`, however
    /// its event time stands to those of the entries before it.
    #[allow(clippy::too_many_arguments)]
    pub fn prediction_due(
        &mut self,
        partition: i32,
        id: u64,
        window: i64,
        value: f64,
        due_ms: i64,
        now_ms: i64,
        events: &mut Vec<JoinEvent>,
    ) -> Arrival {
        self.arrive(id, partition, HAS_PREDICTION, window, value, due_ms, now_ms, events)
    }

    /// [`Self::label`] read from partition `partition`.
    pub fn label_in(
        &mut self,
        partition: i32,
        id: u64,
        value: f64,
        now_ms: i64,
        events: &mut Vec<JoinEvent>,
    ) -> Arrival {
        self.arrive(id, partition, HAS_LABEL, 0, value, now_ms, now_ms, events)
    }

    #[allow(clippy::too_many_arguments)]
    fn arrive(
        &mut self,
        id: u64,
        partition: i32,
        side: u8,
        window: i64,
        value: f64,
        due_ms: i64,
        now_ms: i64,
        events: &mut Vec<JoinEvent>,
    ) -> Arrival {
        if !sampled(id, self.settings.sample) {
            self.counts.not_sampled += 1;
            return Arrival::NotSampled;
        }
        self.expire(now_ms, events);
        let (ring, head) = (&self.ring, self.head);
        if let Some(&seq) = self.index.find(id, |&s| ring[s.wrapping_sub(head) as usize].id == id) {
            let entry = &mut self.ring[seq.wrapping_sub(self.head) as usize];
            if entry.sides & side != 0 {
                if side == HAS_PREDICTION {
                    self.counts.duplicate_predictions += 1;
                } else {
                    self.counts.duplicate_labels += 1;
                }
                return Arrival::Duplicate;
            }
            let (window, predicted, label) = if side == HAS_PREDICTION {
                (window, value, entry.value)
            } else {
                (entry.window, entry.value, value)
            };
            entry.sides |= side;
            entry.window = window;
            self.count_side(side);
            self.counts.joined += 1;
            events.push(JoinEvent::Joined { id, window, predicted, label });
            return Arrival::Joined;
        }
        self.make_room(events);
        let deadline_ms = due_ms.saturating_add(self.settings.ttl_ms);
        self.last_deadline_ms = self.last_deadline_ms.max(deadline_ms);
        self.push(Entry { id, deadline_ms, window, value, sides: side, partition });
        self.count_side(side);
        Arrival::Waiting
    }

    fn count_side(&mut self, side: u8) {
        if side == HAS_PREDICTION {
            self.counts.predictions += 1;
        } else {
            self.counts.labels += 1;
        }
    }

    fn push(&mut self, entry: Entry) {
        if self.ring.len() == self.ring.capacity() {
            // Grow by a quarter, not double, and never past the cap: the slack stays
            // small, which keeps the bytes per entry under the budget.
            let cap = self.settings.max_pending.max(1);
            let more = (self.ring.len() / 4).max(16).min(cap.saturating_sub(self.ring.len())).max(1);
            self.ring.reserve_exact(more);
        }
        let seq = self.head.wrapping_add(self.ring.len() as u32);
        self.ring.push_back(entry);
        let (ring, head) = (&self.ring, self.head);
        self.index.insert_unique(entry.id, seq, |&s| ring[s.wrapping_sub(head) as usize].id);
        if entry.deadline_ms < self.ring_max_ms {
            // Behind a later deadline: the front will not reach it in time.
            if self.early.len() == self.early.capacity() {
                // Grow by a quarter, as the ring does.
                self.early.reserve_exact((self.early.len() / 4).max(16));
            }
            self.early.push(Early { deadline_ms: entry.deadline_ms, seq });
            if self.early.len() > 2 * self.len() + 64 {
                self.prune_early();
            }
        }
        self.ring_max_ms = self.ring_max_ms.max(entry.deadline_ms);
    }

    /// Evicts the oldest entries until one more fits under the cap.
    fn make_room(&mut self, events: &mut Vec<JoinEvent>) {
        while self.len() >= self.settings.max_pending.max(1) {
            self.pop_front(true, events);
        }
    }

    /// The ring position of live sequence number `seq` due at `deadline_ms`, if it is
    /// still there (not popped, evicted or dead).
    fn live_position(&self, seq: u32, deadline_ms: i64) -> Option<usize> {
        let at = seq.wrapping_sub(self.head) as usize;
        let e = self.ring.get(at)?;
        (e.sides != DEAD && e.deadline_ms == deadline_ms).then_some(at)
    }

    /// Drops the heap's notes of entries gone from the ring another way.
    fn prune_early(&mut self) {
        let early = std::mem::take(&mut self.early);
        self.early =
            early.into_iter().filter(|e| self.live_position(e.seq, e.deadline_ms).is_some()).collect();
    }

    /// What an entry's end means, counted (`None`: a joined entry's marker reaching its
    /// deadline, which is routine).
    fn ended(&mut self, entry: &Entry, evicted: bool) -> Option<JoinEvent> {
        Some(match (entry.sides, evicted) {
            (HAS_PREDICTION, false) => {
                self.counts.expired += 1;
                JoinEvent::Expired { window: entry.window }
            }
            (HAS_PREDICTION, true) => {
                self.counts.evicted += 1;
                JoinEvent::Evicted { window: entry.window }
            }
            (HAS_LABEL, false) => {
                self.counts.orphans += 1;
                JoinEvent::Orphan
            }
            (HAS_LABEL, true) => {
                self.counts.labels_evicted += 1;
                JoinEvent::LabelEvicted
            }
            (_, true) => {
                self.counts.markers_evicted += 1;
                JoinEvent::MarkerEvicted
            }
            (_, false) => return None,
        })
    }

    /// Removes the front entry, handing out what it means.
    fn pop_front(&mut self, evicted: bool, events: &mut Vec<JoinEvent>) {
        let Some(entry) = self.ring.pop_front() else { return };
        let head = self.head;
        self.head = self.head.wrapping_add(1);
        if entry.sides == DEAD {
            // Ended in place already.
            self.dead -= 1;
            return;
        }
        if let Ok(found) = self.index.find_entry(entry.id, |&s| s == head) {
            found.remove();
        }
        events.extend(self.ended(&entry, evicted));
    }

    /// Ends every entry whose deadline is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: i64, events: &mut Vec<JoinEvent>) {
        while self.ring.front().is_some_and(|e| e.sides == DEAD || e.deadline_ms <= now_ms) {
            self.pop_front(false, events);
        }
        while let Some(&Early { deadline_ms, seq }) = self.early.peek() {
            if deadline_ms > now_ms {
                break;
            }
            self.early.pop();
            let Some(at) = self.live_position(seq, deadline_ms) else { continue };
            let entry = self.ring[at];
            if let Ok(found) = self.index.find_entry(entry.id, |&s| s == seq) {
                found.remove();
            }
            self.ring[at].sides = DEAD;
            self.dead += 1;
            events.extend(self.ended(&entry, false));
        }
    }

    /// Takes out the entries of the partitions `partitions` (nothing is counted: the
    /// caller counts them handed over, or merges them back).
    pub fn take_partitions(&mut self, partitions: &[i32]) -> Handed {
        if partitions.is_empty() || self.ring.is_empty() {
            return Handed::default();
        }
        let (taken, kept): (Vec<Entry>, Vec<Entry>) =
            self.ring.drain(..).filter(|e| e.sides != DEAD).partition(|e| partitions.contains(&e.partition));
        self.rebuild(kept, &mut Vec::new());
        Handed { entries: taken }
    }

    /// Counts `handed`'s waiting predictions as handed over (they left with their
    /// partition).
    pub fn count_handed_over(&mut self, handed: &Handed) {
        self.counts.handed_over += handed.waiting_predictions().count() as u64;
    }

    /// Merges entries in: put back (`adopted` false) or taken over from another
    /// instance (`adopted`: its waiting predictions are counted as adopted). Entries
    /// keep their deadlines (those already past expire at the next call); an id already
    /// held keeps its entry. Beyond the cap the oldest are evicted into `events`.
    pub fn merge(&mut self, handed: Handed, adopted: bool, events: &mut Vec<JoinEvent>) {
        if handed.is_empty() {
            return;
        }
        if adopted {
            self.counts.adopted += handed.waiting_predictions().count() as u64;
        }
        let mut all: Vec<Entry> = self.ring.drain(..).filter(|e| e.sides != DEAD).collect();
        let held: std::collections::HashSet<u64> = all.iter().map(|e| e.id).collect();
        all.extend(handed.entries.into_iter().filter(|e| !held.contains(&e.id)));
        // Stable: entries of one deadline keep their order.
        all.sort_by_key(|e| e.deadline_ms);
        if let Some(last) = all.last() {
            self.last_deadline_ms = self.last_deadline_ms.max(last.deadline_ms);
        }
        self.rebuild(all, events);
    }

    /// Empties the ring, the index and the heap.
    fn clear(&mut self) {
        self.ring.clear();
        self.index.clear();
        self.early.clear();
        self.head = 0;
        self.dead = 0;
        self.ring_max_ms = i64::MIN;
    }

    /// Refills the ring, the index and the heap from live entries in ring order.
    fn rebuild(&mut self, entries: Vec<Entry>, events: &mut Vec<JoinEvent>) {
        self.clear();
        for entry in entries {
            self.make_room(events);
            self.push(entry);
        }
    }

    /// The state for a checkpoint.
    pub fn snapshot(&self) -> JoinState {
        JoinState {
            entries: self.ring.iter().filter(|e| e.sides != DEAD).copied().collect(),
            counts: self.counts.clone(),
            last_deadline_ms: self.last_deadline_ms,
        }
    }

    /// Puts a checkpoint's state back (the index is rebuilt). Entries beyond the cap
    /// (a smaller `max_pending` since) are evicted, oldest first, into `events`.
    pub fn restore(&mut self, state: &JoinState, events: &mut Vec<JoinEvent>) {
        self.counts = state.counts.clone();
        self.last_deadline_ms = state.last_deadline_ms;
        self.rebuild(state.entries.iter().filter(|e| e.sides != DEAD).copied().collect(), events);
    }
}

#[cfg(test)]
#[path = "label_join_tests.rs"]
mod tests;
