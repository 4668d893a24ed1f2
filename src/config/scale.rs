//! `[scale]`: whether a stream's windows are local to one instance (every instance
//! scores what its own partitions hold) or global (every instance publishes partial
//! windows to a Kafka topic and one owner merges and scores them), and the settings of
//! global mode. Validated here, by key, so a config that global mode cannot honour is
//! refused at start-up instead of producing an answer that depends on the instances.

use super::{ReferenceConfig, StreamConfig, WindowConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a stream's windows are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleMode {
    /// Each instance scores the windows of the partitions it reads (one instance: the
    /// whole stream).
    #[default]
    Local,
    /// Each instance publishes partial windows per source partition; the owner of the
    /// stream merges them and scores one window over every partition.
    Global,
}

/// `[scale]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleConfig {
    /// The mode of every stream not named in `streams`.
    pub mode: ScaleMode,
    /// Per-stream modes by stream name (`[scale.streams] credit = "global"`).
    pub streams: BTreeMap<String, ScaleMode>,
    /// The internal topic the partial windows go through (created with
    /// `cleanup.policy=compact` when absent).
    pub partials_topic: String,
    /// A source partition that has published nothing for this long counts as past
    /// every window end (its windows close and are reported with it as idle).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// This instance's name, the `instance` label of its ingestion series and the name
    /// `/api/v1/streams` gives an owner. Empty: the host name.
    pub instance: String,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            mode: ScaleMode::Local,
            streams: BTreeMap::new(),
            partials_topic: "driftscope.partials".into(),
            idle_timeout: Duration::from_secs(60),
            instance: String::new(),
        }
    }
}

impl ScaleConfig {
    /// The mode of the stream named `stream`.
    pub fn mode_of(&self, stream: &str) -> ScaleMode {
        self.streams.get(stream).copied().unwrap_or(self.mode)
    }

    /// Whether any of `streams` runs in global mode.
    pub fn any_global(&self, streams: &[StreamConfig]) -> bool {
        streams.iter().any(|s| self.mode_of(&s.name) == ScaleMode::Global)
    }

    /// The instance name: `instance`, else `$HOSTNAME`, else `driftscope`.
    pub fn instance_name(&self) -> String {
        if !self.instance.is_empty() {
            return self.instance.clone();
        }
        std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "driftscope".into())
    }
}

/// Checks `[scale]` against the streams; errors are (key, message).
pub fn validate(scale: &ScaleConfig, streams: &[StreamConfig]) -> Result<(), (String, String)> {
    for name in scale.streams.keys() {
        if !streams.iter().any(|s| &s.name == name) {
            return Err((format!("scale.streams.{name}"), "names no stream in [[streams]]".into()));
        }
    }
    if !scale.any_global(streams) {
        return Ok(());
    }
    if scale.partials_topic.is_empty() || scale.partials_topic.len() > 249 {
        return Err(("scale.partials_topic".into(), "a topic name of 1 to 249 characters".into()));
    }
    if !scale.partials_topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err((
            "scale.partials_topic".into(),
            "may hold only ASCII letters, digits, `.`, `_` and `-`".into(),
        ));
    }
    if scale.idle_timeout < Duration::from_millis(100) || scale.idle_timeout > Duration::from_secs(24 * 3600)
    {
        return Err(("scale.idle_timeout".into(), "must be between 100ms and 24h".into()));
    }
    if scale.instance.len() > 128 || scale.instance.chars().any(|c| c.is_control()) {
        return Err(("scale.instance".into(), "at most 128 printable characters".into()));
    }
    for (i, s) in streams.iter().enumerate() {
        if scale.mode_of(&s.name) != ScaleMode::Global {
            continue;
        }
        // The key that set global mode for this stream, for the message.
        let why = if scale.streams.contains_key(&s.name) {
            format!("scale.streams.{}", s.name)
        } else {
            "scale.mode".into()
        };
        if matches!(s.window, WindowConfig::TumblingCount { .. } | WindowConfig::SlidingCount { .. }) {
            return Err((
                format!("streams[{i}].window.type"),
                format!(
                    "count windows cannot be global ({why} = \"global\"): the n-th record of a stream read \
                     from several partitions has no order without coordination between instances (Kafka \
                     orders records within a partition only), so where a window of N records ends would \
                     depend on which instance read what when; use tumbling_time or sliding_time windows \
                     (event time gives every instance the same boundaries), or set this stream's mode to \
                     \"local\""
                ),
            ));
        }
        if s.labels.is_some() {
            return Err((
                format!("streams[{i}].labels"),
                format!(
                    "label joins are not available in global mode yet ({why} = \"global\"): the owner that \
                     scores a global window does not hold the predictions the other instances read, so the \
                     performance section would cover a part of the window; remove [streams.labels] or set \
                     this stream's mode to \"local\""
                ),
            ));
        }
        if let ReferenceConfig { from_stream: Some(_), .. } = s.reference {
            return Err((
                format!("streams[{i}].reference.from_stream"),
                format!(
                    "a reference taken from the stream cannot be global ({why} = \"global\"): each instance \
                     would take its first records from its own partitions and the instances' references \
                     would differ; build a profile once (`driftscope reference build`) and set `profile`"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const STREAM: &str = "[[streams]]\nname = \"credit\"\ntopics = [\"t\"]\nformat = \"json\"\n\
                          reference = { profile = \"p.json\" }\n";

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("c.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn local_is_the_default_and_count_windows_stay_allowed() {
        let c = load(&format!("{STREAM}window = {{ type = \"tumbling_count\", size = 10 }}\n")).unwrap();
        assert_eq!(c.scale.mode_of("credit"), super::ScaleMode::Local);
    }

    #[test]
    fn global_count_windows_are_refused_by_key_with_the_reason() {
        let e = load(&format!(
            "[scale]\nmode = \"global\"\n{STREAM}window = {{ type = \"tumbling_count\", size = 10 }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("`streams[0].window.type`"), "{e}");
        assert!(e.contains("count windows cannot be global (scale.mode"), "{e}");
        assert!(e.contains("within a partition only"), "{e}");
    }

    #[test]
    fn per_stream_mode_names_its_key_and_overrides_the_default() {
        let e = load(&format!(
            "[scale.streams]\ncredit = \"global\"\n{STREAM}window = {{ type = \"sliding_count\", size = 10, slide = 5 }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("(scale.streams.credit = \"global\")"), "{e}");
        let c = load(&format!(
            "[scale]\nmode = \"global\"\n[scale.streams]\ncredit = \"local\"\n{STREAM}\
             window = {{ type = \"tumbling_count\", size = 10 }}\n"
        ))
        .unwrap();
        assert_eq!(c.scale.mode_of("credit"), super::ScaleMode::Local);
    }

    #[test]
    fn global_time_windows_load_with_their_settings() {
        let c = load(&format!(
            "[scale]\nmode = \"global\"\npartials_topic = \"ds.partials\"\nidle_timeout = \"5s\"\n\
             instance = \"a\"\n{STREAM}event_time_field = \"/ts\"\n\
             window = {{ type = \"tumbling_time\", size = \"1m\", time = \"event\" }}\n"
        ))
        .unwrap();
        assert_eq!(c.scale.mode_of("credit"), super::ScaleMode::Global);
        assert_eq!(c.scale.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.scale.instance_name(), "a");
    }

    #[test]
    fn bad_scale_keys_are_named() {
        let time = "window = { type = \"tumbling_time\", size = \"1m\" }\n";
        for (scale, key) in [
            ("[scale]\nmode = \"global\"\npartials_topic = \"\"\n", "`scale.partials_topic`"),
            ("[scale]\nmode = \"global\"\npartials_topic = \"a b\"\n", "`scale.partials_topic`"),
            ("[scale]\nmode = \"global\"\nidle_timeout = \"1ms\"\n", "`scale.idle_timeout`"),
            ("[scale]\nmode = \"everywhere\"\n", "`scale.mode`"),
            ("[scale]\nowner = \"x\"\n", "`scale`"),
            ("[scale.streams]\nnope = \"global\"\n", "`scale.streams.nope`"),
        ] {
            let e = load(&format!("{scale}{STREAM}{time}")).unwrap_err();
            assert!(e.contains(key), "{scale}: {e}");
        }
    }

    #[test]
    fn global_label_joins_are_refused_by_key() {
        let e = load(&format!(
            "[scale]\nmode = \"global\"\n{STREAM}window = {{ type = \"tumbling_time\", size = \"1m\" }}\n\
             [streams.labels]\ntopics = [\"l\"]\nprediction_id = \"/id\"\nlabel_id = \"key\"\nlabel = \"/y\"\n\
             ttl = \"1h\"\ntask = {{ type = \"binary\", score = \"/s\", threshold = 0.5 }}\n"
        ))
        .unwrap_err();
        assert!(e.contains("`streams[0].labels`") && e.contains("not available in global mode yet"), "{e}");
    }

    #[test]
    fn global_reference_from_stream_is_refused() {
        let e = load(
            "[scale]\nmode = \"global\"\n[[streams]]\nname = \"s\"\ntopics = [\"t\"]\nformat = \"json\"\n\
             reference = { from_stream = 100 }\nwindow = { type = \"tumbling_time\", size = \"1m\" }\n",
        )
        .unwrap_err();
        assert!(e.contains("`streams[0].reference.from_stream`"), "{e}");
    }
}
