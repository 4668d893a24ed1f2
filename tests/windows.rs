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
