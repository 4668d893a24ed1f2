//! The in-process pipeline: the very per-stream code `driftscope run` folds a Kafka
//! message with (`StreamState::process`: decode, pane, sketch, `after_record`; then
//! `tick`), built from a generated configuration, plus `score_window` at every window
//! close, as the monitor's `emit` does. Only Kafka and the outputs are left out.

use super::workload;
use driftscope::config::Config;
use driftscope::decode::{DecodeContext, Message};
use driftscope::monitor::stream::StreamState;
use driftscope::stats::window::ClosedWindow;
use driftscope::stats::{Reference, WindowInfo, score_window};
use driftscope::telemetry::Telemetry;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

pub struct Pipeline {
    state: StreamState,
    reference: Arc<Reference>,
    closed: Vec<ClosedWindow>,
    offset: i64,
    clock_ms: i64,
    pub windows: u64,
    pub bad: u64,
    _telemetry: Telemetry,
}

impl Pipeline {
    /// A pipeline over the profile at `profile` (format "json" or "arrow_ipc").
    pub fn new(format: &str, profile: &Path, dir: &Path) -> anyhow::Result<Pipeline> {
        Pipeline::with_defaults(format, profile, dir, "")
    }

    /// The same with `[defaults]` keys (TOML lines), e.g. `rule = "threshold"`.
    pub fn with_defaults(
        format: &str,
        profile: &Path,
        dir: &Path,
        defaults: &str,
    ) -> anyhow::Result<Pipeline> {
        let preamble = if defaults.is_empty() { String::new() } else { format!("[defaults]\n{defaults}\n") };
        let name = format!("inprocess-{format}{}", if defaults.is_empty() { "" } else { "-defaults" });
        Pipeline::build(format, profile, dir, &name, &preamble, "", &DecodeContext::default())
    }

    /// The same with TOML lines appended to the stream's table (its sub-tables, e.g.
    /// `[streams.open_inference]`).
    pub fn with_stream_lines(
        format: &str,
        profile: &Path,
        dir: &Path,
        lines: &str,
    ) -> anyhow::Result<Pipeline> {
        Pipeline::build(
            format,
            profile,
            dir,
            &format!("inprocess-{format}-lines"),
            "",
            lines,
            &DecodeContext::default(),
        )
    }

    /// A pipeline whose decoder gets `context` (schemas for the Confluent formats);
    /// `preamble` is TOML put before the generated config (e.g. a `[registry]`).
    pub fn with_context(
        format: &str,
        profile: &Path,
        dir: &Path,
        preamble: &str,
        context: &DecodeContext,
    ) -> anyhow::Result<Pipeline> {
        Pipeline::build(format, profile, dir, &format!("inprocess-{format}"), preamble, "", context)
    }

    fn build(
        format: &str,
        profile: &Path,
        dir: &Path,
        name: &str,
        preamble: &str,
        stream: &str,
        context: &DecodeContext,
    ) -> anyhow::Result<Pipeline> {
        let body = workload::config_toml(
            "127.0.0.1:1",
            "bench-inprocess",
            "bench-inprocess",
            format,
            profile,
            &dir.join("state"),
            &dir.join("reports.jsonl"),
            &[],
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, format!("{preamble}{body}{stream}"))?;
        let config = Config::load(&path)?;
        let telemetry = Telemetry::new();
        let state = StreamState::new(0, &config.streams[0], &config, context, telemetry.stream("bench"))
            .map_err(|e| anyhow::anyhow!("stream setup: {e}"))?;
        let reference = state.reference().cloned().ok_or_else(|| anyhow::anyhow!("no reference"))?;
        Ok(Pipeline {
            state,
            reference,
            closed: Vec::new(),
            offset: 0,
            clock_ms: driftscope::monitor::now_ms(),
            windows: 0,
            bad: 0,
            _telemetry: telemetry,
        })
    }

    pub fn reference(&self) -> &Arc<Reference> {
        &self.reference
    }

    /// Folds one message in, and scores any window it closes. As `driftscope run`
    /// does: the clock is read once per 16 messages (by its consumer thread), messages
    /// are staged and folded once per batch of 512 (by its pipeline thread), which also
    /// ticks time windows then.
    #[inline]
    pub fn process(&mut self, payload: &[u8]) {
        if self.offset % 16 == 0 {
            self.clock_ms = driftscope::monitor::now_ms();
        }
        if self
            .state
            .stage(&Message::value(payload), 0, self.offset, self.clock_ms, &mut self.closed)
            .is_err()
        {
            self.bad += 1;
        }
        self.offset += 1;
        if self.offset % 512 == 0 {
            self.state.flush(&mut self.closed);
            self.state.tick(self.clock_ms, &mut self.closed);
        }
        if !self.closed.is_empty() {
            self.score_closed();
        }
    }

    #[cold]
    fn score_closed(&mut self) {
        for w in self.closed.drain(..) {
            let info = WindowInfo { index: w.index, ..Default::default() };
            let report = score_window(&self.reference, &w.sketch, info);
            black_box(report.dataset.drifted);
            self.windows += 1;
        }
    }
}
