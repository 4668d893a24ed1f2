//! Report -> Prometheus gauges.

use crate::stats::report::Report;
use crate::telemetry::Telemetry;

/// Sets every per-window gauge from a report.
pub fn record_report(t: &Telemetry, report: &Report) {
    let stream = report.stream.as_deref().unwrap_or("");
    t.dataset_drift_share.with_label_values(&[stream]).set(report.dataset.drift_share);
    t.dataset_drifted.with_label_values(&[stream]).set(i64::from(report.dataset.drifted));
    for f in &report.features {
        let labels = [stream, f.name.as_str()];
        t.drift_threshold.with_label_values(&labels).set(f.threshold);
        t.drift_detected.with_label_values(&labels).set(i64::from(f.drifted));
        t.window_samples.with_label_values(&labels).set(f.samples as i64);
        t.missing_share.with_label_values(&labels).set(f.missing_share);
        if let Some(p) = f.p_value {
            t.drift_p_value.with_label_values(&labels).set(p);
        }
        if let Some(e) = f.effect {
            t.drift_effect.with_label_values(&labels).set(e);
        }
        if let Some(s) = f.sequential {
            t.sequential_log_statistic.with_label_values(&labels).set(s.log_statistic);
            t.sequential_log_threshold.with_label_values(&labels).set(s.log_threshold);
            t.sequential_alarm.with_label_values(&labels).set(i64::from(s.alarm));
        }
        for (metric, value) in &f.scores {
            t.drift_score.with_label_values(&[stream, f.name.as_str(), metric.as_str()]).set(*value);
        }
    }
}
