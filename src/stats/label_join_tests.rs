//! Tests of the label join: both arrival orders, duplicates, expiry, the cap, the
//! sample, the checkpoint round trip, memory per entry, and (proptest) that any
//! interleaving of the same messages gives the same joined set.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn join(ttl_ms: i64, max_pending: usize) -> LabelJoin {
    LabelJoin::new(JoinSettings { ttl_ms, max_pending, sample: 1.0 })
}

fn joined(events: &[JoinEvent]) -> Vec<(u64, i64, f64, f64)> {
    let mut out: Vec<_> = events
        .iter()
        .filter_map(|e| match *e {
            JoinEvent::Joined { id, window, predicted, label } => Some((id, window, predicted, label)),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    out
}

#[test]
fn a_prediction_meets_its_label_in_either_order_once() {
    let mut j = join(1000, 100);
    let mut ev = Vec::new();
    assert_eq!(j.prediction(1, 7, 0.9, 0, &mut ev), Arrival::Waiting);
    assert_eq!(j.label(2, 1.0, 1, &mut ev), Arrival::Waiting);
    assert_eq!(j.label(1, 1.0, 2, &mut ev), Arrival::Joined);
    assert_eq!(j.prediction(2, 8, 0.1, 3, &mut ev), Arrival::Joined);
    assert_eq!(j.label(1, 1.0, 4, &mut ev), Arrival::Duplicate);
    assert_eq!(j.prediction(2, 8, 0.1, 5, &mut ev), Arrival::Duplicate);
    assert_eq!(joined(&ev), vec![(1, 7, 0.9, 1.0), (2, 8, 0.1, 1.0)]);
    let c = j.counts();
    assert_eq!(
        (c.predictions, c.labels, c.joined, c.duplicate_labels, c.duplicate_predictions),
        (2, 2, 2, 1, 1)
    );
}

#[test]
fn unlabelled_predictions_expire_and_early_labels_become_orphans() {
    let mut j = join(100, 100);
    let mut ev = Vec::new();
    j.prediction(1, 3, 0.5, 0, &mut ev);
    j.label(2, 0.0, 10, &mut ev);
    j.prediction(3, 4, 0.5, 50, &mut ev);
    j.expire(99, &mut ev);
    assert!(ev.is_empty(), "nothing is due before its ttl: {ev:?}");
    j.expire(110, &mut ev);
    assert_eq!(ev, vec![JoinEvent::Expired { window: 3 }, JoinEvent::Orphan]);
    // A label after its prediction expired is an orphan in turn, never joined.
    assert_eq!(j.label(1, 1.0, 120, &mut ev), Arrival::Waiting);
    assert_eq!(j.waiting_predictions().collect::<Vec<_>>(), vec![4]);
    j.expire(1000, &mut ev);
    assert_eq!(j.counts().expired, 2);
    assert_eq!(j.counts().orphans, 2);
    assert!(j.is_empty());
}

#[test]
fn the_cap_evicts_the_oldest_and_counts_it() {
    let mut j = join(1_000_000, 3);
    let mut ev = Vec::new();
    j.prediction(1, 0, 0.5, 0, &mut ev);
    j.label(2, 1.0, 1, &mut ev);
    j.prediction(3, 0, 0.5, 2, &mut ev);
    j.label(3, 0.0, 3, &mut ev);
    j.prediction(4, 1, 0.5, 4, &mut ev);
    j.prediction(5, 1, 0.5, 5, &mut ev);
    j.prediction(6, 1, 0.5, 6, &mut ev);
    assert_eq!(j.len(), 3);
    assert_eq!(
        ev[1..],
        [JoinEvent::Evicted { window: 0 }, JoinEvent::LabelEvicted, JoinEvent::MarkerEvicted]
    );
    let c = j.counts();
    assert_eq!((c.evicted, c.labels_evicted, c.markers_evicted), (1, 1, 1));
    // The evicted prediction's label now waits as an orphan; it joins nothing.
    assert_eq!(j.label(1, 1.0, 7, &mut ev), Arrival::Waiting);
    assert_eq!(j.counts().joined, 1);
}

#[test]
fn the_sample_picks_the_same_ids_on_both_sides_and_about_its_share() {
    let mut j = LabelJoin::new(JoinSettings { ttl_ms: 1 << 40, max_pending: 1 << 20, sample: 0.25 });
    let mut ev = Vec::new();
    let n = 100_000;
    for i in 0..n {
        j.prediction(id_hash(format!("req-{i}").as_bytes()), 0, 0.5, 0, &mut ev);
    }
    for i in 0..n {
        j.label(id_hash(format!("req-{i}").as_bytes()), 1.0, 0, &mut ev);
    }
    let c = j.counts();
    assert_eq!(c.joined, c.predictions, "every sampled prediction's label is sampled too");
    assert_eq!(c.labels, c.predictions);
    let share = c.predictions as f64 / n as f64;
    assert!((share - 0.25).abs() < 0.01, "share {share}");
}

#[test]
fn id_hash_is_stable() {
    // Checkpoints and both topics rely on it: a change here must be deliberate.
    assert_eq!(id_hash(b""), mix(0xcbf2_9ce4_8422_2325));
    assert_eq!(id_hash(b"req-1"), id_hash(b"req-1"));
    assert_ne!(id_hash(b"req-1"), id_hash(b"req-2"));
}

#[test]
fn a_checkpoint_round_trip_continues_exactly() {
    let mut j = join(100, 10);
    let mut ev = Vec::new();
    for i in 0..8u64 {
        j.prediction(i, i as i64, 0.1 * i as f64, i as i64 * 10, &mut ev);
    }
    j.label(3, 1.0, 80, &mut ev);
    j.label(100, 0.0, 85, &mut ev);
    let bytes = rmp_serde::to_vec_named(&j.snapshot()).expect("encode");
    let state: JoinState = rmp_serde::from_slice(&bytes).expect("decode");
    let mut back = join(100, 10);
    back.restore(&state, &mut ev);
    assert_eq!(back.snapshot(), j.snapshot());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (join, out) in [(&mut j, &mut a), (&mut back, &mut b)] {
        join.label(3, 1.0, 90, out);
        join.label(5, 0.0, 90, out);
        join.prediction(100, 9, 0.7, 95, out);
        join.expire(500, out);
    }
    assert_eq!(a, b);
    assert_eq!(joined(&a), vec![(5, 5, 0.5, 0.0), (100, 9, 0.7, 0.0)]);
    // The encoding is compact: an array per entry, not field names.
    assert!(bytes.len() < 10 * 40 + 300, "{} bytes", bytes.len());
}

#[test]
fn memory_per_entry_is_under_64_bytes() {
    let mut j = join(1 << 40, 1 << 20);
    let mut ev = Vec::new();
    let mut worst = 0.0f64;
    let mut i = 0u64;
    for target in [1_000usize, 10_000, 50_000, 100_000, 300_000, 1 << 20] {
        while j.len() < target {
            j.prediction(id_hash(&i.to_le_bytes()), 0, 0.5, 0, &mut ev);
            i += 1;
        }
        let per = j.allocated_bytes() as f64 / j.len() as f64;
        println!("{target} entries: {per:.1} bytes each");
        worst = worst.max(per);
    }
    // At the cap, eviction keeps it there: memory stays flat.
    let before = j.allocated_bytes();
    for _ in 0..100_000 {
        j.prediction(id_hash(&i.to_le_bytes()), 0, 0.5, 0, &mut ev);
        i += 1;
    }
    assert_eq!(j.allocated_bytes(), before);
    assert_eq!(j.counts().evicted, 100_000);
    assert!(worst <= 64.0, "{worst:.1} bytes per waiting prediction");
}

/// One message of a generated run: (id, is_label).
fn messages() -> impl Strategy<Value = (Vec<(u64, bool)>, usize)> {
    // Up to 60 ids; each may have a prediction and/or a label, each sent 1-3 times.
    prop::collection::vec((any::<bool>(), any::<bool>(), 1usize..=3, 1usize..=3), 1..60).prop_flat_map(
        |ids| {
            let mut msgs = Vec::new();
            for (i, &(pred, label, np, nl)) in ids.iter().enumerate() {
                for _ in 0..if pred { np } else { 0 } {
                    msgs.push((i as u64, false));
                }
                for _ in 0..if label { nl } else { 0 } {
                    msgs.push((i as u64, true));
                }
            }
            let n = msgs.len();
            (Just(msgs).prop_shuffle(), 0..=n)
        },
    )
}

fn run(join: &mut LabelJoin, msgs: &[(u64, bool)], events: &mut Vec<JoinEvent>) {
    for &(id, is_label) in msgs {
        if is_label {
            join.label(id, (id % 2) as f64, 0, events);
        } else {
            join.prediction(id, id as i64 / 10, id as f64 / 100.0, 0, events);
        }
    }
}

proptest! {
    #[test]
    fn any_interleaving_gives_the_same_joined_set((msgs, cut) in messages()) {
        let mut expected: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
        for &(id, is_label) in &msgs {
            let e = expected.entry(id).or_default();
            if is_label { e.1 = true } else { e.0 = true }
        }
        let want: Vec<_> = expected
            .iter()
            .filter(|(_, (p, l))| *p && *l)
            .map(|(&id, _)| (id, id as i64 / 10, id as f64 / 100.0, (id % 2) as f64))
            .collect();

        let mut straight = join(1 << 40, 1 << 16);
        let mut ev = Vec::new();
        run(&mut straight, &msgs, &mut ev);
        prop_assert_eq!(joined(&ev), want.clone());

        // A crash at `cut`: the state is checkpointed there and restored in a new join.
        let mut first = join(1 << 40, 1 << 16);
        let mut ev = Vec::new();
        run(&mut first, &msgs[..cut], &mut ev);
        let saved: JoinState = rmp_serde::from_slice(&rmp_serde::to_vec_named(&first.snapshot()).unwrap()).unwrap();
        let mut second = join(1 << 40, 1 << 16);
        second.restore(&saved, &mut ev);
        run(&mut second, &msgs[cut..], &mut ev);
        prop_assert_eq!(joined(&ev), want);
        prop_assert_eq!(second.counts(), straight.counts());
    }
}

#[test]
fn a_partitions_entries_move_to_another_join_and_are_joined_once_there() {
    let (mut old, mut new) = (join(1000, 100), join(1000, 100));
    let mut ev = Vec::new();
    // Partition 1: a waiting prediction (id 1), a waiting label (id 2), a joined id (3).
    old.prediction_in(1, 1, 7, 0.9, 0, &mut ev);
    old.label_in(1, 2, 1.0, 10, &mut ev);
    old.prediction_in(1, 3, 7, 0.2, 20, &mut ev);
    old.label_in(1, 3, 0.0, 30, &mut ev);
    // Partition 0 stays.
    old.prediction_in(0, 4, 7, 0.5, 40, &mut ev);
    ev.clear();
    let handed = old.take_partitions(&[1]);
    assert_eq!((handed.len(), handed.waiting_predictions().collect::<Vec<_>>()), (3, vec![7]));
    old.count_handed_over(&handed);
    assert_eq!((old.len(), old.counts().handed_over), (1, 1));
    // The old owner's clock passes every deadline: only its own prediction expires.
    old.expire(5_000, &mut ev);
    assert_eq!(ev, vec![JoinEvent::Expired { window: 7 }]);
    ev.clear();
    // The new owner holds an entry of its own with a later deadline.
    new.prediction_in(2, 9, 8, 0.1, 500, &mut ev);
    new.merge(handed, true, &mut ev);
    assert_eq!((new.len(), new.counts().adopted), (4, 1));
    // Deadlines stay in order along the ring: the adopted entries expire first.
    assert_eq!(new.label_in(1, 1, 1.0, 600, &mut ev), Arrival::Joined);
    assert_eq!(ev, vec![JoinEvent::Joined { id: 1, window: 7, predicted: 0.9, label: 1.0 }]);
    assert_eq!(new.prediction_in(1, 2, 8, 0.7, 600, &mut ev), Arrival::Joined);
    assert_eq!(new.label_in(1, 3, 0.0, 600, &mut ev), Arrival::Duplicate, "the marker came along");
    ev.clear();
    new.expire(1_020, &mut ev);
    assert!(ev.is_empty(), "joined entries end quietly: {ev:?}");
    assert_eq!(new.len(), 1);
    new.expire(1_500, &mut ev);
    assert_eq!(ev, vec![JoinEvent::Expired { window: 8 }]);
    // The state keeps the partition through a checkpoint.
    let mut again = join(1000, 100);
    old.prediction_in(3, 10, 9, 0.4, 6_000, &mut ev);
    again.restore(&old.snapshot(), &mut ev);
    assert_eq!(again.take_partitions(&[3]).len(), 1);
    assert!(again.is_empty());
}

#[test]
fn merging_past_the_cap_evicts_the_oldest_and_counts_them() {
    let (mut old, mut new) = (join(1000, 100), join(1000, 3));
    let mut ev = Vec::new();
    for id in 0..3 {
        old.prediction_in(5, id, 1, 0.5, id as i64, &mut ev);
        new.prediction_in(6, 100 + id, 2, 0.5, 10 + id as i64, &mut ev);
    }
    let handed = old.take_partitions(&[5]);
    new.merge(handed, true, &mut ev);
    assert_eq!(new.len(), 3);
    assert_eq!(ev.iter().filter(|e| matches!(e, JoinEvent::Evicted { window: 1 })).count(), 3);
    assert_eq!(new.counts().evicted, 3);
}

#[test]
fn a_checkpoint_written_before_entries_had_a_partition_still_loads() {
    #[derive(Serialize)]
    struct Before {
        entries: Vec<(u64, i64, i64, f64, u8)>,
        counts: JoinCounts,
        last_deadline_ms: i64,
    }
    let before =
        Before { entries: vec![(7, 100, 2, 0.25, 1)], counts: JoinCounts::default(), last_deadline_ms: 100 };
    let bytes = rmp_serde::to_vec_named(&before).expect("encode");
    let state: JoinState = rmp_serde::from_slice(&bytes).expect("decode");
    let mut j = join(1000, 10);
    let mut ev = Vec::new();
    j.restore(&state, &mut ev);
    assert_eq!(j.label(7, 1.0, 50, &mut ev), Arrival::Joined);
    assert_eq!(ev, vec![JoinEvent::Joined { id: 7, window: 2, predicted: 0.25, label: 1.0 }]);
}

#[test]
fn out_of_order_deadlines_expire_each_exactly_at_its_own() {
    let mut j = join(100, 100);
    let mut ev = Vec::new();
    // Event times 50, 10, 30 arrive in that order (deadlines 150, 110, 130); a label
    // waits from the watermark 20 (deadline 120).
    j.prediction_due(0, 1, 1, 0.5, 50, 0, &mut ev);
    j.prediction_due(0, 2, 2, 0.5, 10, 0, &mut ev);
    j.prediction_due(0, 3, 3, 0.5, 30, 0, &mut ev);
    j.label(4, 1.0, 20, &mut ev);
    j.expire(109, &mut ev);
    assert!(ev.is_empty(), "{ev:?}");
    // Id 2 expires at 110 though id 1, ahead of it in the ring, waits until 150.
    j.expire(110, &mut ev);
    assert_eq!(ev, vec![JoinEvent::Expired { window: 2 }]);
    assert_eq!(j.len(), 3);
    ev.clear();
    // At 120 the label is an orphan; id 3 (due 130) still joins.
    assert_eq!(j.label(3, 0.0, 120, &mut ev), Arrival::Joined);
    assert_eq!(
        ev,
        vec![JoinEvent::Orphan, JoinEvent::Joined { id: 3, window: 3, predicted: 0.5, label: 0.0 }]
    );
    ev.clear();
    // Id 2's label after its deadline waits as a new label, never joins.
    assert_eq!(j.label(2, 1.0, 121, &mut ev), Arrival::Waiting);
    assert_eq!(j.label(3, 0.0, 125, &mut ev), Arrival::Duplicate, "the marker holds until 130");
    j.expire(130, &mut ev);
    assert!(ev.is_empty(), "a joined marker ends quietly: {ev:?}");
    assert_eq!(j.waiting_predictions().collect::<Vec<_>>(), vec![1]);
    // The checkpoint holds the live entries only, and the restored join expires the
    // same way.
    let saved = j.snapshot();
    assert_eq!(saved.entries.len(), 2);
    let mut back = join(100, 100);
    back.restore(&saved, &mut ev);
    for join in [&mut j, &mut back] {
        join.expire(149, &mut ev);
        assert!(ev.is_empty(), "{ev:?}");
        join.expire(221, &mut ev);
        assert_eq!(ev, vec![JoinEvent::Expired { window: 1 }, JoinEvent::Orphan]);
        assert!(join.is_empty());
        ev.clear();
    }
    assert_eq!((j.counts().expired, j.counts().orphans, j.counts().joined), (2, 2, 1));
}

#[test]
fn the_cap_counts_live_entries_not_slots_ended_in_place() {
    let mut j = join(100, 3);
    let mut ev = Vec::new();
    j.prediction_due(0, 1, 0, 0.5, 500, 0, &mut ev);
    j.prediction_due(0, 2, 0, 0.5, 10, 0, &mut ev);
    j.prediction_due(0, 3, 0, 0.5, 20, 0, &mut ev);
    // Ids 2 and 3 end in place (their slots stay behind id 1's).
    j.expire(200, &mut ev);
    assert_eq!(ev.len(), 2);
    assert_eq!(j.len(), 1);
    ev.clear();
    // Two more fit under the cap of 3 without evicting id 1.
    j.prediction_due(0, 4, 0, 0.5, 300, 200, &mut ev);
    j.prediction_due(0, 5, 0, 0.5, 300, 200, &mut ev);
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(j.len(), 3);
    // One more evicts the oldest live entry, id 1.
    j.prediction_due(0, 6, 7, 0.5, 300, 200, &mut ev);
    assert_eq!(ev, vec![JoinEvent::Evicted { window: 0 }]);
    assert_eq!(j.label(1, 1.0, 201, &mut ev), Arrival::Waiting, "evicted id 1 is gone");
}

/// A message of a generated event-time run: (id, is_label, due offset, clock step).
type TimedMessage = (u64, bool, i64, i64);

fn timed_messages() -> impl Strategy<Value = Vec<TimedMessage>> {
    prop::collection::vec((0u64..40, any::<bool>(), 0i64..300, 0i64..40), 1..150)
}

proptest! {
    /// Against a plain list that ends every entry whose deadline passed: with event
    /// times in any order, every message has the same outcome and every call hands out
    /// the same events (as a multiset), under a cap, through a checkpoint at `cut`.
    #[test]
    fn out_of_order_deadlines_match_a_scan_of_every_entry(msgs in timed_messages(), cut in 0usize..150, cap in 1usize..30) {
        let ttl = 100;
        // The model: (id, deadline, sides, window, value) in arrival order.
        let mut model: Vec<(u64, i64, u8, i64, f64)> = Vec::new();
        let mut j = join(ttl, cap);
        let mut now = 0i64;
        for (k, &(id, is_label, due_offset, step)) in msgs.iter().enumerate() {
            if k == cut {
                let saved: JoinState =
                    rmp_serde::from_slice(&rmp_serde::to_vec_named(&j.snapshot()).unwrap()).unwrap();
                let mut back = join(ttl, cap);
                back.restore(&saved, &mut Vec::new());
                j = back;
            }
            now += step;
            let due = now - 150 + due_offset;
            let (window, value) = (id as i64 % 5, id as f64);
            let mut want = Vec::new();
            model.retain(|&(_, deadline, sides, window, _)| {
                if deadline > now {
                    return true;
                }
                match sides {
                    HAS_PREDICTION => want.push(JoinEvent::Expired { window }),
                    HAS_LABEL => want.push(JoinEvent::Orphan),
                    _ => {}
                }
                false
            });
            let side = if is_label { HAS_LABEL } else { HAS_PREDICTION };
            let want_arrival = match model.iter_mut().find(|e| e.0 == id) {
                Some(e) if e.2 & side != 0 => Arrival::Duplicate,
                Some(e) => {
                    let (w, p, l) = if is_label { (e.3, e.4, value) } else { (window, value, e.4) };
                    e.2 |= side;
                    e.3 = w;
                    want.push(JoinEvent::Joined { id, window: w, predicted: p, label: l });
                    Arrival::Joined
                }
                None => {
                    if model.len() >= cap {
                        let (_, _, sides, window, _) = model.remove(0);
                        want.push(match sides {
                            HAS_PREDICTION => JoinEvent::Evicted { window },
                            HAS_LABEL => JoinEvent::LabelEvicted,
                            _ => JoinEvent::MarkerEvicted,
                        });
                    }
                    let deadline = if is_label { now } else { due } + ttl;
                    model.push((id, deadline, side, window, value));
                    Arrival::Waiting
                }
            };
            let mut got = Vec::new();
            let arrival = if is_label {
                j.label(id, value, now, &mut got)
            } else {
                j.prediction_due(0, id, window, value, due, now, &mut got)
            };
            prop_assert_eq!(arrival, want_arrival);
            let key = |e: &JoinEvent| format!("{e:?}");
            got.sort_by_key(key);
            want.sort_by_key(key);
            prop_assert_eq!(got, want);
            prop_assert_eq!(j.len(), model.len());
        }
    }
}

#[test]
fn memory_per_entry_with_out_of_order_event_times() {
    // Three partitions read in turn, each in event-time order 0-300 ms apart: two in
    // three predictions are due before one already held, and are noted in the heap.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut ev = Vec::new();
    let mut worst = 0.0f64;
    for (name, spread) in [("in order", 0i64), ("three partitions 300 ms apart", 300)] {
        let mut j = join(1 << 40, 1 << 20);
        let mut i = 0i64;
        while j.len() < 1 << 20 {
            let due = i - (next() % 3) as i64 * spread / 2;
            j.prediction_due(0, id_hash(&i.to_le_bytes()), 0, 0.5, due, 0, &mut ev);
            i += 1;
        }
        let per = j.allocated_bytes() as f64 / j.len() as f64;
        println!("{name}: {per:.1} bytes per entry, {} of {} in the heap", j.early.len(), j.len());
        if spread == 0 {
            assert!(j.early.is_empty() && per <= 64.0, "{per:.1}");
        }
        worst = worst.max(per);
    }
    // The heap adds 16 bytes per out-of-order entry (and its growth slack).
    assert!(worst <= 64.0 + 32.0, "{worst:.1} bytes per waiting prediction");
}
