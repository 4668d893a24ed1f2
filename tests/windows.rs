//! Window assignment on scripted record sequences: tumbling and sliding, by count and
//! by time, with event-time lateness.

use driftscope::stats::profile::{FeatureSpec, ProfileBuilder};
use driftscope::stats::window::{ClosedWindow, PaneClock, WindowSpec, Windower};
use driftscope::stats::{DriftSettings, FeatureKind, Reference, ValueSink};
use std::collections::BTreeMap;

fn reference() -> Reference {
    let mut b = ProfileBuilder::new(
        vec![FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 }],
        256,
        10,
    );
    b.add_records(100);
    (0..100).for_each(|i| b.numeric(0, f64::from(i)));
    Reference::new(b.finish("t".into(), "t".into()), DriftSettings::default(), &BTreeMap::new()).unwrap()
}

/// Feeds records (offset = position, value = position) at the given times.
fn feed(w: &mut Windower, r: &Reference, times: &[i64], event_time: bool) -> (Vec<ClosedWindow>, u64) {
    let mut out = Vec::new();
    let mut late = 0;
    for (offset, &t) in times.iter().enumerate() {
        if event_time {
            w.observe_event_time(t);
        }
        match w.pane_for(t, r) {
            Ok(pane) => {
                pane.cover(0, offset as i64, t);
                pane.sketch.add_records(1);
                pane.sketch.numeric(0, offset as f64);
            }
            Err(_) => {
                late += 1;
                w.note_late();
            }
        }
        w.after_record(&mut out);
        w.advance(t, event_time, &mut out);
    }
    (out, late)
}

#[test]
fn tumbling_count_windows_close_every_size_records() {
    let r = reference();
    let mut w = Windower::new(WindowSpec { clock: PaneClock::Records(10), panes_per_window: 1 });
    let (out, _) = feed(&mut w, &r, &[0; 35], false);
    assert_eq!(out.len(), 3);
    for (i, win) in out.iter().enumerate() {
        assert_eq!(win.index, i as u64);
        assert_eq!(win.sketch.records, 10);
        assert_eq!((win.spans[0].first, win.spans[0].last), (10 * i as i64, 10 * i as i64 + 9));
    }
    // 5 records are open: offsets from 30 on are not yet safe to commit.
    assert_eq!(w.lowest_open_offset(0), Some(30));
}

#[test]
fn sliding_count_windows_overlap_by_size_minus_slide() {
    let r = reference();
    let mut w = Windower::new(WindowSpec { clock: PaneClock::Records(5), panes_per_window: 4 });
    let (out, _) = feed(&mut w, &r, &[0; 40], false);
    // Windows of 20 records, one every 5, the first after 20 records.
    assert_eq!(out.len(), 5);
    for (i, win) in out.iter().enumerate() {
        assert_eq!(win.sketch.records, 20);
        assert_eq!(win.spans[0].first, 5 * i as i64);
        assert_eq!(win.spans[0].last, 5 * i as i64 + 19);
    }
    // The last window's three newest panes are needed by the next windows.
    assert_eq!(w.lowest_open_offset(0), Some(25));
}

#[test]
fn tumbling_processing_time_windows_close_when_time_passes() {
    let r = reference();
    let mut w = Windower::new(WindowSpec {
        clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 0 },
        panes_per_window: 1,
    });
    let (mut out, _) = feed(&mut w, &r, &[100, 500, 999, 1000, 1500, 2100], false);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].start_ms, out[0].end_ms, out[0].sketch.records), (0, 1000, 3));
    assert_eq!((out[1].start_ms, out[1].end_ms, out[1].sketch.records), (1000, 2000, 2));
    // An idle stream still closes its window once the clock passes the end.
    w.advance(5000, false, &mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].sketch.records, 1);
}

#[test]
fn event_time_windows_wait_for_lateness_and_count_late_records() {
    let r = reference();
    let mut w = Windower::new(WindowSpec {
        clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 500 },
        panes_per_window: 1,
    });
    // 1200 opens pane 1; 800 is out of order but within lateness; 1600 moves the
    // watermark to 1100, closing pane 0; then 900 is late.
    let (out, late) = feed(&mut w, &r, &[100, 1200, 800, 1600, 900, 1700], true);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].sketch.records, 2, "100 and the out-of-order 800");
    assert_eq!(late, 1);
    let mut out = Vec::new();
    w.observe_event_time(3000);
    w.advance(0, true, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].sketch.records, 3);
    assert_eq!(out[0].late_records, 1, "the late record is reported with the next window");
}

#[test]
fn sliding_time_windows_include_panes_across_gaps() {
    let r = reference();
    let mut w = Windower::new(WindowSpec {
        clock: PaneClock::Millis { pane_ms: 1000, lateness_ms: 0 },
        panes_per_window: 3,
    });
    let (out, _) = feed(&mut w, &r, &[500, 4500], false);
    // Pane 0 is in the windows ending at panes 0, 1 and 2; pane 4 is still open.
    assert_eq!(out.len(), 3);
    assert_eq!((out[0].start_ms, out[0].end_ms), (-2000, 1000));
    assert_eq!((out[2].start_ms, out[2].end_ms), (0, 3000));
    assert!(out.iter().all(|w| w.sketch.records == 1));
}

#[test]
fn discarding_open_panes_forgets_their_offsets() {
    let r = reference();
    let mut w = Windower::new(WindowSpec { clock: PaneClock::Records(10), panes_per_window: 1 });
    feed(&mut w, &r, &[0; 15], false);
    assert_eq!(w.lowest_open_offset(0), Some(10));
    w.discard_open();
    assert_eq!(w.lowest_open_offset(0), None);
}

mod checkpoints {
    //! A windower checkpointed at any point, encoded as the checkpoint file encodes it
    //! and restored into a new windower, closes exactly the windows the uninterrupted
    //! one does.
    use super::*;
    use driftscope::monitor::checkpoint::{self, Checkpoint, StreamCheckpoint};
    use proptest::prelude::*;

    fn two_feature_reference() -> Reference {
        let mut b = ProfileBuilder::new(
            vec![
                FeatureSpec { name: "x".into(), kind: FeatureKind::Numeric, bins: 10 },
                FeatureSpec { name: "c".into(), kind: FeatureKind::Categorical, bins: 10 },
            ],
            256,
            4,
        );
        b.add_records(100);
        for i in 0..100 {
            b.numeric(0, f64::from(i));
            b.category(1, ["a", "b", "c"][i as usize % 3]);
        }
        let settings = DriftSettings { max_categories: 4, ..DriftSettings::default() };
        Reference::new(b.finish("t".into(), "t".into()), settings, &BTreeMap::new()).unwrap()
    }

    /// A record: event time, value (NaN counts as non-finite), category, missing.
    type Record = (i64, f64, u8, bool);

    fn step(w: &mut Windower, r: &Reference, offset: usize, rec: &Record, out: &mut Vec<ClosedWindow>) {
        let (t, x, c, missing) = *rec;
        w.observe_event_time(t);
        match w.pane_for(t, r) {
            Ok(pane) => {
                pane.cover((offset % 2) as u32, offset as i64, t);
                pane.sketch.add_records(1);
                if missing {
                    pane.sketch.missing(0);
                } else {
                    pane.sketch.numeric(0, x);
                }
                pane.sketch.category(1, ["a", "b", "z", "y", "w", "v"][c as usize % 6]);
            }
            Err(_) => w.note_late(),
        }
        w.after_record(out);
        w.advance(t, true, out);
    }

    fn summary(windows: &[ClosedWindow]) -> Vec<String> {
        windows
            .iter()
            .map(|w| {
                format!(
                    "{} {} {} {:?} {} {:?}",
                    w.index,
                    w.start_ms,
                    w.end_ms,
                    w.spans,
                    w.late_records,
                    w.sketch.snapshot()
                )
            })
            .collect()
    }

    fn round_trip(w: &Windower) -> driftscope::stats::window::WindowerState {
        let saved = Checkpoint {
            written_at_ms: 0,
            sources: Vec::new(),
            streams: vec![StreamCheckpoint {
                name: "s".into(),
                window: String::new(),
                reference: 0,
                windower: Some(w.snapshot()),
                recent: Vec::new(),
                latest_distributions: None,
                sequential: Default::default(),
                labels: None,
            }],
        };
        let bytes = checkpoint::encode(&saved).unwrap();
        let back = checkpoint::decode(std::path::Path::new("mem"), &bytes).unwrap();
        back.streams[0].windower.clone().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn restored_windowers_close_the_same_windows(
            records in prop::collection::vec(
                (0i64..4_000, prop_oneof![4 => -50.0f64..150.0, 1 => Just(f64::NAN)], 0u8..6, prop::bool::weighted(0.1)),
                1..300,
            ),
            cut in 0usize..300,
            spec in prop_oneof![
                Just(WindowSpec { clock: PaneClock::Records(7), panes_per_window: 1 }),
                Just(WindowSpec { clock: PaneClock::Records(5), panes_per_window: 3 }),
                Just(WindowSpec { clock: PaneClock::Millis { pane_ms: 500, lateness_ms: 300 }, panes_per_window: 1 }),
                Just(WindowSpec { clock: PaneClock::Millis { pane_ms: 250, lateness_ms: 100 }, panes_per_window: 4 }),
            ],
        ) {
            let r = two_feature_reference();
            let cut = cut.min(records.len());
            let mut whole = Windower::new(spec);
            let mut expected = Vec::new();
            for (i, rec) in records.iter().enumerate() {
                step(&mut whole, &r, i, rec, &mut expected);
            }

            let mut first = Windower::new(spec);
            let mut got = Vec::new();
            for (i, rec) in records[..cut].iter().enumerate() {
                step(&mut first, &r, i, rec, &mut got);
            }
            let state = round_trip(&first);
            // The restored windower is a different one, with other spare sketches.
            let mut second = Windower::new(spec);
            second.restore(&r, &state).unwrap();
            prop_assert_eq!(second.snapshot(), first.snapshot());
            for (i, rec) in records.iter().enumerate().skip(cut) {
                step(&mut second, &r, i, rec, &mut got);
            }
            prop_assert_eq!(summary(&got), summary(&expected));
        }
    }

    #[test]
    fn a_snapshot_of_another_reference_is_refused() {
        let r = two_feature_reference();
        let mut w = Windower::new(WindowSpec { clock: PaneClock::Records(10), panes_per_window: 1 });
        let mut out = Vec::new();
        step(&mut w, &r, 0, &(0, 1.0, 0, false), &mut out);
        let state = w.snapshot();
        let other = reference();
        let mut fresh = Windower::new(WindowSpec { clock: PaneClock::Records(10), panes_per_window: 1 });
        let err = fresh.restore(&other, &state).unwrap_err();
        assert!(err.contains("features"), "{err}");
    }
}
