//! Process telemetry as Prometheus metrics: counters the monitor bumps as it works
//! (handles resolved once per stream, so the hot path never looks up a label) and the
//! gauges the outputs set from each report. Label values come from config and the
//! reference only, never from record contents. Also the rate limit for warnings about
//! what these counters count.

use hdrhistogram::Histogram;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Telemetry {
    pub registry: Registry,
    pub records: IntCounterVec,
    pub invalid: IntCounterVec,
    pub windows_closed: IntCounterVec,
    pub late_records: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub dead_letter_failures: IntCounterVec,
    pub drift_score: GaugeVec,
    pub drift_threshold: GaugeVec,
    pub drift_detected: IntGaugeVec,
    pub drift_p_value: GaugeVec,
    pub drift_effect: GaugeVec,
    pub sequential_log_statistic: GaugeVec,
    pub sequential_log_threshold: GaugeVec,
    pub sequential_alarm: IntGaugeVec,
    pub missing_share: GaugeVec,
    pub dataset_drift_share: GaugeVec,
    pub dataset_drifted: IntGaugeVec,
    pub window_samples: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub triggers: IntCounterVec,
    pub trigger_queue_depth: IntGauge,
    pub event_lag_seconds: HdrSummary,
    pub scoring_seconds: HdrSummary,
    pub checkpoints: IntCounterVec,
    pub checkpoint_bytes: IntGauge,
    pub records_replayed: IntCounterVec,
    /// Label join and model performance (streams with `[streams.labels]`).
    pub performance: GaugeVec,
    pub performance_estimated: GaugeVec,
    pub performance_reference: GaugeVec,
    pub label_coverage: GaugeVec,
    pub labels: IntCounterVec,
    pub schema_changes: IntCounterVec,
    pub schema_registry_lookups: IntCounter,
    /// Global mode, per instance: what this instance's view of the merge is.
    pub global: GlobalSeries,
    pub build_info: Gauge,
}

/// The `outcome` label values of `driftscope_checkpoints_total`.
pub const CHECKPOINT_OUTCOMES: [&str; 2] = ["written", "failed"];

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are fixed and unique: registration cannot collide.
    let _ = registry.register(Box::new(c.clone()));
    c
}

impl Telemetry {
    pub fn new() -> Telemetry {
        Telemetry::with_instance(None)
    }

    /// With `instance` (global mode's `scale.instance`), the ingestion series, which
    /// stay per instance (records, invalid records, consumer lag, checkpoints), carry an
    /// `instance` label, so the instances' series can be told apart once gathered; the
    /// window series come from the stream's owner only and carry none.
    pub fn with_instance(instance: Option<&str>) -> Telemetry {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"))
        };
        let per_instance = |name: &str, help: &str| match instance {
            Some(i) => Opts::new(name, help).const_label("instance", i),
            None => Opts::new(name, help),
        };
        let ingestion_counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(per_instance(name, help), labels).expect("static metric definition"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(&r, GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"))
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"))
        };
        let per_instance_gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(per_instance(name, help), labels).expect("static metric definition"),
            )
        };
        let global = GlobalSeries {
            owned: per_instance_gauge(
                "driftscope_global_stream_owned",
                "Global mode: 1 while this instance owns the stream (merges and scores it).",
                &["stream"],
            ),
            windows_waiting: per_instance_gauge(
                "driftscope_global_windows_waiting",
                "Global mode, owner: windows holding partials that wait for a source partition.",
                &["stream"],
            ),
            disagreements: per_instance_gauge(
                "driftscope_global_config_disagreements",
                "Global mode, owner: source partitions whose partials were folded against another \
                 window spec or reference (the stream is not scored while this is above 0).",
                &["stream"],
            ),
            refused: ingestion_counter(
                "driftscope_global_partials_refused_total",
                "Global mode, owner: partials refused, by reason (window, reference: another config).",
                &["stream", "reason"],
            ),
        };
        let build_info = register(
            &r,
            Gauge::with_opts(
                Opts::new("driftscope_build_info", "Build information; always 1.")
                    .const_label("version", env!("CARGO_PKG_VERSION")),
            )
            .expect("static metric definition"),
        );
        build_info.set(1.0);
        Telemetry {
            records: ingestion_counter(
                "driftscope_records_total",
                "Records consumed, good or bad.",
                &["stream"],
            ),
            invalid: ingestion_counter(
                "driftscope_records_invalid_total",
                "Records that could not be used, by reason.",
                &["stream", "reason"],
            ),
            windows_closed: counter(
                "driftscope_windows_closed_total",
                "Windows scored and reported.",
                &["stream"],
            ),
            late_records: counter(
                "driftscope_late_records_total",
                "Records that arrived after their event-time window closed.",
                &["stream"],
            ),
            dead_lettered: counter(
                "driftscope_dead_lettered_total",
                "Copies of bad records the broker acknowledged on the dead-letter topic.",
                &["stream"],
            ),
            dead_letter_failures: counter(
                "driftscope_dead_letter_failures_total",
                "Copies of bad records that did not reach the dead-letter topic, by reason \
                 (too_large, timeout, unauthorized, other).",
                &["stream", "reason"],
            ),
            drift_score: gauge(
                "driftscope_drift_score",
                "Every score of the last closed window, by report score key.",
                &["stream", "feature", "metric"],
            ),
            drift_threshold: gauge(
                "driftscope_drift_threshold",
                "Threshold of the feature's primary metric.",
                &["stream", "feature"],
            ),
            drift_detected: int_gauge(
                "driftscope_drift_detected",
                "1 if the feature's primary metric drifted in the last window.",
                &["stream", "feature"],
            ),
            drift_p_value: gauge(
                "driftscope_drift_p_value",
                "Version-2 verdicts: p-value of the feature's primary score against its null in the last window.",
                &["stream", "feature"],
            ),
            drift_effect: gauge(
                "driftscope_drift_effect",
                "Version-2 verdicts: the feature's effect (primary score; Cramér's V for chi_square) in the last window.",
                &["stream", "feature"],
            ),
            sequential_log_statistic: gauge(
                "driftscope_sequential_log_statistic",
                "The feature's sequential detector, log M, after the last window.",
                &["stream", "feature"],
            ),
            sequential_log_threshold: gauge(
                "driftscope_sequential_log_threshold",
                "The log M at which the feature's sequential detector alarms.",
                &["stream", "feature"],
            ),
            sequential_alarm: int_gauge(
                "driftscope_sequential_alarm",
                "1 if the feature's sequential detector alarmed in the last window.",
                &["stream", "feature"],
            ),
            missing_share: gauge(
                "driftscope_missing_share",
                "Share of missing or non-finite values in the last window.",
                &["stream", "feature"],
            ),
            dataset_drift_share: gauge(
                "driftscope_dataset_drift_share",
                "Share of evaluated features that drifted in the last window.",
                &["stream"],
            ),
            dataset_drifted: int_gauge(
                "driftscope_dataset_drifted",
                "1 if the last window's dataset drift share reached its threshold.",
                &["stream"],
            ),
            window_samples: int_gauge(
                "driftscope_window_samples",
                "Values of the feature that entered the last window's distribution.",
                &["stream", "feature"],
            ),
            consumer_lag: register(
                &r,
                IntGaugeVec::new(
                    per_instance(
                        "driftscope_consumer_lag_records",
                        "Records between the consumer's position and the partition's end.",
                    ),
                    &["topic", "partition"],
                )
                .expect("static metric definition"),
            ),
            triggers: counter(
                "driftscope_triggers_total",
                "Trigger deliveries by outcome.",
                &["trigger", "outcome"],
            ),
            trigger_queue_depth: register(
                &r,
                IntGauge::new("driftscope_trigger_queue_depth", "Fired triggers not yet delivered or dead.")
                    .expect("static metric definition"),
            ),
            event_lag_seconds: register(
                &r,
                HdrSummary::new(
                    "driftscope_event_lag_seconds",
                    "Processing time minus event time of records (streams with an event_time_field).",
                ),
            ),
            scoring_seconds: register(
                &r,
                HdrSummary::new("driftscope_window_scoring_seconds", "Time to score a window."),
            ),
            checkpoints: ingestion_counter(
                "driftscope_checkpoints_total",
                "Checkpoints of the open windows to state.dir, by outcome (written, failed).",
                &["outcome"],
            ),
            checkpoint_bytes: register(
                &r,
                IntGauge::new("driftscope_checkpoint_bytes", "Size of the last checkpoint written.")
                    .expect("static metric definition"),
            ),
            records_replayed: counter(
                "driftscope_records_skipped_replayed_total",
                "Records read again after a restart or rebalance that the checkpoint already held.",
                &["stream"],
            ),
            performance: gauge(
                "driftscope_performance",
                "Realized model performance of the newest final window, by metric (streams with labels).",
                &["stream", "metric"],
            ),
            performance_estimated: gauge(
                "driftscope_performance_estimated",
                "Model performance estimated from calibrated scores (before labels) of the newest closed window, by metric (binary streams whose reference has a calibration).",
                &["stream", "metric"],
            ),
            performance_reference: gauge(
                "driftscope_performance_reference",
                "Model performance on the reference data, by metric (streams whose reference profile has it).",
                &["stream", "metric"],
            ),
            label_coverage: gauge(
                "driftscope_label_coverage",
                "Share of the newest closed window's predictions that have their label.",
                &["stream"],
            ),
            labels: counter(
                "driftscope_labels_total",
                "Label join outcomes: joined, expired, evicted, orphan, duplicate, not_sampled, late, bad_*.",
                &["stream", "outcome"],
            ),
            schema_changes: counter(
                "driftscope_schema_changes_total",
                "Times a stream's messages switched to another schema id (Confluent-framed Avro and Protobuf).",
                &["stream"],
            ),
            schema_registry_lookups: register(
                &r,
                IntCounter::new(
                    "driftscope_schema_registry_lookups_total",
                    "Requests to the schema registry (each schema id is fetched once; retries count).",
                )
                .expect("static metric definition"),
            ),
            global,
            build_info,
            registry: r,
        }
    }

    /// Creates every series a stream or trigger can have at zero, so dashboards and
    /// alerts see them before the first event (and `rate()` works from the start).
    pub fn init_series(&self, streams: &[&str], triggers: &[&str], invalid_reasons: &[&str]) {
        for &stream in streams {
            self.records.with_label_values(&[stream]);
            self.windows_closed.with_label_values(&[stream]);
            self.late_records.with_label_values(&[stream]);
            self.dead_lettered.with_label_values(&[stream]);
            for reason in DEAD_LETTER_FAILURE_REASONS {
                self.dead_letter_failures.with_label_values(&[stream, reason]);
            }
            self.records_replayed.with_label_values(&[stream]);
            self.schema_changes.with_label_values(&[stream]);
            for &reason in invalid_reasons {
                self.invalid.with_label_values(&[stream, reason]);
            }
        }
        if !streams.is_empty() {
            for outcome in CHECKPOINT_OUTCOMES {
                self.checkpoints.with_label_values(&[outcome]);
            }
        }
        for &trigger in triggers {
            for outcome in TRIGGER_OUTCOMES {
                self.triggers.with_label_values(&[trigger, outcome]);
            }
        }
    }

    /// The counters one stream bumps, resolved once.
    pub fn stream(&self, stream: &str) -> StreamCounters {
        StreamCounters {
            stream: stream.to_owned(),
            records: self.records.with_label_values(&[stream]),
            windows_closed: self.windows_closed.with_label_values(&[stream]),
            late_records: self.late_records.with_label_values(&[stream]),
            dead_letters: self.dead_letter_counters(stream),
            event_lag: self.event_lag_seconds.clone(),
            invalid_family: self.invalid.clone(),
            invalid: Mutex::new(Vec::new()),
        }
    }

    /// The dead-letter counters of one stream, shared with the producer's delivery
    /// reports.
    pub fn dead_letter_counters(&self, stream: &str) -> Arc<DeadLetterCounters> {
        Arc::new(DeadLetterCounters {
            stream: stream.to_owned(),
            delivered: self.dead_lettered.with_label_values(&[stream]),
            failures: DEAD_LETTER_FAILURE_REASONS
                .map(|reason| self.dead_letter_failures.with_label_values(&[stream, reason])),
        })
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Global mode's series: each instance's view (owners and non-owners alike), so they
/// carry the `instance` label.
#[derive(Clone)]
pub struct GlobalSeries {
    pub owned: IntGaugeVec,
    pub windows_waiting: IntGaugeVec,
    pub disagreements: IntGaugeVec,
    pub refused: IntCounterVec,
}

pub struct StreamCounters {
    pub stream: String,
    pub records: IntCounter,
    pub windows_closed: IntCounter,
    pub late_records: IntCounter,
    pub dead_letters: Arc<DeadLetterCounters>,
    /// Event lag summary; the monitor records into its own histogram and hands it over
    /// at each window close, so no lock is taken per record.
    pub event_lag: HdrSummary,
    invalid_family: IntCounterVec,
    /// Resolved invalid-record counters by reason; bad records are rare, so a short
    /// list behind a lock costs nothing on the good path.
    invalid: Mutex<Vec<(&'static str, IntCounter)>>,
}

impl StreamCounters {
    pub fn invalid(&self, reason: &'static str) {
        let Ok(mut list) = self.invalid.lock() else {
            return;
        };
        if let Some((_, c)) = list.iter().find(|(r, _)| *r == reason) {
            c.inc();
        } else {
            let c = self.invalid_family.with_label_values(&[self.stream.as_str(), reason]);
            c.inc();
            list.push((reason, c));
        }
    }
}

/// The `reason` label values of `driftscope_dead_letter_failures_total`, in the order
/// of `ingest::dead_letters::FailureReason`.
pub const DEAD_LETTER_FAILURE_REASONS: [&str; 4] = ["too_large", "timeout", "unauthorized", "other"];

/// One stream's dead-letter counters: copies the broker acknowledged, and copies that
/// failed, in the order of [`DEAD_LETTER_FAILURE_REASONS`].
pub struct DeadLetterCounters {
    pub stream: String,
    pub delivered: IntCounter,
    pub failures: [IntCounter; 4],
}

impl DeadLetterCounters {
    /// Failures counted so far for one reason label (0 for an unknown one).
    pub fn failed(&self, reason: &str) -> u64 {
        DEAD_LETTER_FAILURE_REASONS.iter().position(|r| *r == reason).map_or(0, |i| self.failures[i].get())
    }
}

/// At most one warning per second about one kind of thing (bad records, dead letters
/// that failed); the rest are counted in the metrics, and how many were left unlogged
/// is said with the next warning.
#[derive(Default)]
pub struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// `Some(warnings suppressed since the last one)` when a warning may be logged now.
    pub fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Outcomes counted in `driftscope_triggers_total`.
pub const TRIGGER_OUTCOMES: [&str; 6] = ["fired", "suppressed", "delivered", "retry", "dead", "manual_retry"];

/// Quantiles published by the summaries.
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// One stream's histogram (microseconds) and the sum of its values (seconds).
type StreamHistogram = (Histogram<u64>, f64);

/// A Prometheus summary per stream whose quantiles come from an HDR histogram
/// (microsecond resolution, 1 us to 1 h): the `prometheus` crate has no summary type.
#[derive(Clone)]
pub struct HdrSummary {
    desc: Desc,
    inner: Arc<Mutex<BTreeMap<String, StreamHistogram>>>,
}

impl HdrSummary {
    pub fn new(name: &str, help: &str) -> Self {
        let desc = Desc::new(name.into(), help.into(), vec!["stream".into()], Default::default())
            .expect("static metric definition");
        HdrSummary { desc, inner: Arc::new(Mutex::new(BTreeMap::new())) }
    }

    fn empty() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
    }

    /// Records one duration.
    pub fn observe(&self, stream: &str, value: Duration) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let (h, sum) = inner.entry(stream.to_owned()).or_insert_with(|| (Self::empty(), 0.0));
        h.saturating_record((value.as_micros() as u64).clamp(1, 3_600_000_000));
        *sum += value.as_secs_f64();
    }

    /// Adds a histogram (microseconds) recorded elsewhere, e.g. by the monitor thread,
    /// which keeps its own so the hot path takes no lock.
    pub fn absorb(&self, stream: &str, micros: &Histogram<u64>) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let (h, sum) = inner.entry(stream.to_owned()).or_insert_with(|| (Self::empty(), 0.0));
        if h.add(micros).is_err() {
            return;
        }
        *sum += micros.mean() * micros.len() as f64 / 1e6;
    }

    /// (count, quantile values in seconds) for one stream.
    pub fn snapshot(&self, stream: &str) -> Option<(u64, Vec<f64>)> {
        let inner = self.inner.lock().ok()?;
        let (h, _) = inner.get(stream)?;
        Some((h.len(), QUANTILES.iter().map(|&q| h.value_at_quantile(q) as f64 / 1e6).collect()))
    }
}

impl Collector for HdrSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        let Ok(inner) = self.inner.lock() else { return vec![family] };
        let metrics = inner
            .iter()
            .map(|(stream, (h, sum))| {
                let mut label = LabelPair::default();
                label.set_name("stream".into());
                label.set_value(stream.clone());
                let mut summary = Summary::default();
                summary.set_sample_count(h.len());
                summary.set_sample_sum(*sum);
                summary.set_quantile(
                    QUANTILES
                        .iter()
                        .map(|&q| {
                            let mut quantile = Quantile::default();
                            quantile.set_quantile(q);
                            quantile.set_value(h.value_at_quantile(q) as f64 / 1e6);
                            quantile
                        })
                        .collect(),
                );
                let mut metric = Metric::default();
                metric.set_label(vec![label]);
                metric.set_summary(summary);
                metric
            })
            .collect();
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_absorb_histograms_recorded_elsewhere() {
        let t = Telemetry::new();
        let mut local = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        local.saturating_record(3_600_000_000);
        local.saturating_record(1_000);
        t.event_lag_seconds.absorb("s", &local);
        let text = t.render();
        assert!(text.contains("driftscope_event_lag_seconds_count{stream=\"s\"} 2"), "{text}");
    }

    #[test]
    fn an_instance_labels_the_ingestion_series_only() {
        let t = Telemetry::with_instance(Some("a"));
        t.records.with_label_values(&["s"]).inc();
        t.consumer_lag.with_label_values(&["t", "0"]).set(3);
        t.checkpoints.with_label_values(&["written"]).inc();
        t.windows_closed.with_label_values(&["s"]).inc();
        let text = t.render();
        assert!(text.contains("driftscope_records_total{instance=\"a\",stream=\"s\"} 1"), "{text}");
        assert!(
            text.contains("driftscope_consumer_lag_records{instance=\"a\",partition=\"0\",topic=\"t\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("driftscope_checkpoints_total{instance=\"a\",outcome=\"written\"} 1"),
            "{text}"
        );
        assert!(text.contains("driftscope_windows_closed_total{stream=\"s\"} 1"), "{text}");
        let plain = Telemetry::new();
        plain.records.with_label_values(&["s"]).inc();
        assert!(plain.render().contains("driftscope_records_total{stream=\"s\"} 1"));
    }
}
