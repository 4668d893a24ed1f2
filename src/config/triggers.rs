//! The `[[triggers]]` configuration: what a trigger watches (its condition), where it
//! goes (its kind) and how delivery retries (its delivery policy), plus the start-up
//! validation whose errors name the key path (`triggers[0].condition.streams[1]`).
//!
//! Field doc comments are the user documentation of each key.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// One `[[triggers]]` entry: a retraining trigger that fires once per drift episode.
///
/// ```toml
/// [[triggers]]
/// name = "retrain-fraud"
/// kind = { type = "github", owner = "acme", repo = "fraud-model", token = "${GITHUB_TOKEN}" }
/// condition = { dataset_drift = true, streams = ["payments"], consecutive_windows = 3 }
/// delivery = { max_backoff = "10m" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Unique name of the trigger: the `trigger` label of its metrics and the prefix
    /// of the ids of the events it fires. ASCII letters, digits, `-`, `_` and `.`,
    /// starting with a letter or digit, at most 64 characters.
    pub name: String,
    /// Where a fired trigger is delivered: a table with `type` = `webhook`, `github`,
    /// `gitlab` or `kafka` and that kind's keys.
    pub kind: KindConfig,
    /// When the trigger fires.
    pub condition: ConditionConfig,
    /// How delivery is retried.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// When a trigger fires. Set exactly one of `dataset_drift = true`, `features` or
/// `score`. The condition must hold in `consecutive_windows` windows in a row; the
/// trigger then fires once, stays quiet for `cooldown`, and re-arms only after
/// `clear_windows` windows in which the condition did not hold. Each watched stream
/// has its own episode and cooldown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Holds when the window's dataset verdict is drifted (the share of drifted
    /// features reached `defaults.dataset_drift_share`).
    #[serde(default)]
    pub dataset_drift: bool,
    /// Holds when these features drifted on their primary metric (see `require`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Holds when the sequential detector alarms on the watched features (`features`,
    /// or every feature when empty): evidence accumulated over windows with a stated
    /// false-alarm rate (`defaults.alpha_sequential`). The detector accumulates across
    /// windows itself, so one alarming window suffices (`consecutive_windows` must be
    /// left unset or 1).
    #[serde(default)]
    pub sequential: bool,
    /// With `features`: whether `any` (default) or `all` of them must have drifted.
    #[serde(default)]
    pub require: Require,
    /// A report score key (`psi`, `jensen_shannon`, `hellinger`, `kl_divergence`,
    /// `ks_statistic`, `ks_p_value`, `wasserstein`, `chi_square_statistic`,
    /// `chi_square_p_value`, `tvd`, `new_category_share`, `new_category_count`) or
    /// `missing_share`, compared with `above` or `below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<String>,
    /// With `score`: the feature whose score is compared; any feature when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// With `score`: holds when the score is strictly above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// With `score`: holds when the score is strictly below this value (p-values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Holds when at least `at_least` new labelled predictions have been joined on the
    /// stream since the trigger last fired (streams with `[streams.labels]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<super::labels::LabelsCondition>,
    /// Holds when a window's final performance dropped below a baseline, with
    /// confidence (streams with `[streams.labels]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<super::labels::PerformanceCondition>,
    /// Streams the trigger watches, by `[[streams]]` name; every stream when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
    /// Windows in a row in which the condition must hold before the trigger fires.
    #[serde(default = "default_consecutive_windows")]
    pub consecutive_windows: u32,
    /// After firing, the trigger does not fire again for this long (humantime, e.g.
    /// `"1h"`, `"30m"`), measured on the windows' end times.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// Windows in a row in which the condition must not hold before the trigger can
    /// fire again (hysteresis): one drift episode fires once, however long it lasts.
    #[serde(default = "default_clear_windows")]
    pub clear_windows: u32,
}

/// How many of a condition's `features` must have drifted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    /// At least one of them.
    #[default]
    Any,
    /// Every one of them.
    All,
}

impl ConditionConfig {
    /// Windows in a row the condition must hold: 1 for a sequential condition (the
    /// detector has already accumulated its evidence) and a labels condition (a count
    /// since the last firing), else `consecutive_windows`.
    pub fn required_windows(&self) -> u32 {
        if self.sequential || self.labels.is_some() { 1 } else { self.consecutive_windows }
    }
}

fn default_consecutive_windows() -> u32 {
    2
}

fn default_cooldown() -> Duration {
    Duration::from_secs(3600)
}

fn default_clear_windows() -> u32 {
    1
}

/// Where a fired trigger is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KindConfig {
    /// A signed JSON POST (Standard Webhooks).
    Webhook(WebhookConfig),
    /// A GitHub `repository_dispatch` event.
    Github(GithubConfig),
    /// A GitLab pipeline trigger.
    Gitlab(GitlabConfig),
    /// A record on a Kafka topic of the `[kafka]` cluster.
    Kafka(KafkaTriggerConfig),
}

impl KindConfig {
    /// The kind's name as written in config.
    pub fn name(&self) -> &'static str {
        match self {
            KindConfig::Webhook(_) => "webhook",
            KindConfig::Github(_) => "github",
            KindConfig::Gitlab(_) => "gitlab",
            KindConfig::Kafka(_) => "kafka",
        }
    }
}

/// `type = "webhook"`: POSTs `{"type": "drift.detected", "timestamp": ..., "data":
/// {...}}` signed per the Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature` headers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver's URL (http or https).
    pub url: String,
    /// The signing secret, `whsec_` followed by the base64 key, usually
    /// `"${WEBHOOK_SECRET}"`. Set this or `secret_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// A file holding the signing secret (read at every delivery, so rotations apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

/// `type = "github"`: `POST {api_base}/repos/{owner}/{repo}/dispatches`, which starts
/// the workflows listening for `repository_dispatch` with this `event_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// Repository owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// A token allowed to create dispatch events (fine-grained: Contents write),
    /// usually `"${GITHUB_TOKEN}"`. Set this or `token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token (read at every delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The `event_type` of the dispatch (at most 100 characters).
    #[serde(default = "default_github_event_type")]
    pub event_type: String,
    /// The API's base URL; change it for GitHub Enterprise Server.
    #[serde(default = "default_github_api_base")]
    pub api_base: String,
}

fn default_github_event_type() -> String {
    "drift-detected".into()
}

fn default_github_api_base() -> String {
    "https://api.github.com".into()
}

/// `type = "gitlab"`: `POST {base_url}/api/v4/projects/{project}/trigger/pipeline`
/// with a pipeline trigger token, the ref, and `DRIFTSCOPE_*` CI variables
/// (`DRIFTSCOPE_TRIGGER_ID`, `DRIFTSCOPE_TRIGGER`, `DRIFTSCOPE_STREAM`,
/// `DRIFTSCOPE_WINDOW_INDEX`, `DRIFTSCOPE_WINDOW_START`, `DRIFTSCOPE_WINDOW_END`,
/// `DRIFTSCOPE_DRIFT_SHARE`, `DRIFTSCOPE_FEATURES`, `DRIFTSCOPE_PAYLOAD`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    /// The project's numeric id or its full path (`group/project`).
    pub project: String,
    /// A pipeline trigger token, usually `"${GITLAB_TRIGGER_TOKEN}"`. Set this or
    /// `token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the trigger token (read at every delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Branch or tag the pipeline runs on.
    #[serde(rename = "ref", default = "default_gitlab_ref")]
    pub git_ref: String,
    /// The GitLab instance's base URL.
    #[serde(default = "default_gitlab_base_url")]
    pub base_url: String,
    /// Extra CI variables passed with every pipeline (names: letters, digits, `_`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
}

fn default_gitlab_ref() -> String {
    "main".into()
}

fn default_gitlab_base_url() -> String {
    "https://gitlab.com".into()
}

/// `type = "kafka"`: the webhook envelope produced to a topic of the `[kafka]`
/// cluster, keyed by stream name, with a `driftscope-trigger-id` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTriggerConfig {
    /// The topic to produce to.
    pub topic: String,
}

/// How a fired trigger is delivered: only a 2xx answer (or a Kafka delivery report)
/// counts; 429, 408, 5xx, timeouts and connection errors are retried with capped
/// exponential backoff and full jitter (honouring `Retry-After`); redirects and other
/// 4xx answers go straight to the dead letters, which can be retried by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Upper bound of the first retry's delay; doubles with each attempt.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Cap of the retry delay (a `Retry-After` answer may ask for longer).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts before a trigger is dead-lettered; unlimited when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A trigger still undelivered this long after its first attempt is
    /// dead-lettered.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Time allowed for one attempt (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_attempts: None,
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Score keys a `score` condition may name: the report's score keys plus
/// `missing_share`.
pub const SCORE_KEYS: &[&str] = &[
    "psi",
    "jensen_shannon",
    "hellinger",
    "kl_divergence",
    "ks_statistic",
    "ks_p_value",
    "wasserstein",
    "chi_square_statistic",
    "chi_square_p_value",
    "tvd",
    "new_category_share",
    "new_category_count",
    "missing_share",
];

/// The prefix of Standard Webhooks secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// The key bytes of a `whsec_<base64>` secret. The error message never contains the
/// secret.
pub fn webhook_key_bytes(secret: &Secret) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let Some(encoded) = secret.expose().strip_prefix(WEBHOOK_SECRET_PREFIX) else {
        return Err(format!(
            "must be a Standard Webhooks secret: `{WEBHOOK_SECRET_PREFIX}` followed by base64"
        ));
    };
    let invalid = || format!("the part after `{WEBHOOK_SECRET_PREFIX}` must be non-empty base64");
    let key = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    if key.is_empty() {
        return Err(invalid());
    }
    Ok(key)
}

type KeyError = (String, String);

/// Checks every trigger; `stream_names` are the configured `[[streams]]` names. The
/// error is the key path (`triggers[0].condition.streams[1]`) and a message.
pub fn validate(triggers: &[TriggerConfig], stream_names: &[String]) -> Result<(), KeyError> {
    validate_inner(triggers, Some(stream_names))
}

/// [`validate`], checking stream names only when they are given.
pub(crate) fn validate_inner(
    triggers: &[TriggerConfig],
    stream_names: Option<&[String]>,
) -> Result<(), KeyError> {
    let mut names = HashSet::new();
    for (i, t) in triggers.iter().enumerate() {
        let key = |k: &str| format!("triggers[{i}].{k}");
        if !valid_name(&t.name) {
            return Err((
                key("name"),
                "use 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit".into(),
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err((key("name"), format!("`{}` is used twice", t.name)));
        }
        validate_condition(&t.condition, stream_names, &key("condition"))?;
        validate_kind(&t.kind, &key("kind"))?;
        validate_delivery(&t.delivery, &key("delivery"))?;
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn validate_condition(c: &ConditionConfig, streams: Option<&[String]>, key: &str) -> Result<(), KeyError> {
    let k = |s: &str| format!("{key}.{s}");
    let chosen = [
        c.dataset_drift,
        c.sequential || !c.features.is_empty(),
        c.score.is_some(),
        c.labels.is_some(),
        c.performance.is_some(),
    ];
    if chosen.iter().filter(|&&b| b).count() != 1 {
        return Err((
            key.to_owned(),
            "set exactly one of `dataset_drift = true`, `features`, `sequential = true` (with or without `features`), `score`, `labels` or `performance`".into(),
        ));
    }
    if c.labels.as_ref().is_some_and(|l| l.at_least == 0) {
        return Err((k("labels.at_least"), "must be at least 1".into()));
    }
    if let Some(p) = &c.performance {
        p.validate(&k("performance"))?;
    }
    if c.sequential && c.consecutive_windows != default_consecutive_windows() && c.consecutive_windows != 1 {
        return Err((
            k("consecutive_windows"),
            "does not apply to a `sequential` condition: the detector accumulates evidence across windows itself".into(),
        ));
    }
    let mut seen = HashSet::new();
    for (j, f) in c.features.iter().enumerate() {
        if f.is_empty() || !seen.insert(f.as_str()) {
            return Err((k(&format!("features[{j}]")), "must be non-empty and unique".into()));
        }
    }
    match &c.score {
        Some(score) => {
            if !SCORE_KEYS.contains(&score.as_str()) {
                return Err((
                    k("score"),
                    format!("unknown score `{score}`; one of {}", SCORE_KEYS.join(", ")),
                ));
            }
            if c.feature.as_deref() == Some("") {
                return Err((k("feature"), "must be non-empty when set".into()));
            }
            match (c.above, c.below) {
                (Some(v), None) | (None, Some(v)) if v.is_finite() => {}
                (Some(_), None) => return Err((k("above"), "must be a finite number".into())),
                (None, Some(_)) => return Err((k("below"), "must be a finite number".into())),
                _ => {
                    return Err((
                        key.to_owned(),
                        "a `score` condition needs exactly one of `above` or `below`".into(),
                    ));
                }
            }
        }
        None => {
            for (name, set) in
                [("feature", c.feature.is_some()), ("above", c.above.is_some()), ("below", c.below.is_some())]
            {
                if set {
                    return Err((k(name), "applies only to a `score` condition".into()));
                }
            }
        }
    }
    if c.features.is_empty() && c.require != Require::Any {
        return Err((k("require"), "applies only to a `features` condition".into()));
    }
    let mut seen = HashSet::new();
    for (j, s) in c.streams.iter().enumerate() {
        if streams.is_some_and(|names| !names.contains(s)) {
            return Err((k(&format!("streams[{j}]")), format!("no [[streams]] entry is named `{s}`")));
        }
        if !seen.insert(s.as_str()) {
            return Err((k(&format!("streams[{j}]")), format!("`{s}` is listed twice")));
        }
    }
    if c.consecutive_windows == 0 {
        return Err((k("consecutive_windows"), "must be at least 1".into()));
    }
    if c.clear_windows == 0 {
        return Err((k("clear_windows"), "must be at least 1".into()));
    }
    Ok(())
}

fn validate_url(url: &str, key: String) -> Result<(), KeyError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        // The URL may embed a credential (some receivers put one in the path), so the
        // message does not repeat it.
        _ => Err((key, "must be an absolute http or https URL".into())),
    }
}

fn one_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
    names: (&str, &str),
) -> Result<(), KeyError> {
    match (inline, file) {
        (Some(s), None) if s.is_empty() => Err((
            format!("{key}.{}", names.0),
            "is empty (is its environment variable set to an empty value?)".into(),
        )),
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err((key.to_owned(), format!("set exactly one of `{}` or `{}`", names.0, names.1))),
    }
}

fn validate_kind(kind: &KindConfig, key: &str) -> Result<(), KeyError> {
    let k = |s: &str| format!("{key}.{s}");
    match kind {
        KindConfig::Webhook(w) => {
            validate_url(&w.url, k("url"))?;
            one_secret(&w.secret, &w.secret_file, key, ("secret", "secret_file"))?;
            if let Some(secret) = &w.secret {
                webhook_key_bytes(secret).map_err(|message| (k("secret"), message))?;
            }
        }
        KindConfig::Github(g) => {
            for (name, value) in [("owner", &g.owner), ("repo", &g.repo)] {
                if value.is_empty() || value.contains('/') {
                    return Err((k(name), "must be non-empty and without `/`".into()));
                }
            }
            one_secret(&g.token, &g.token_file, key, ("token", "token_file"))?;
            if g.event_type.is_empty() || g.event_type.chars().count() > 100 {
                return Err((k("event_type"), "must be 1 to 100 characters".into()));
            }
            validate_url(&g.api_base, k("api_base"))?;
        }
        KindConfig::Gitlab(g) => {
            if g.project.is_empty() {
                return Err((k("project"), "must be non-empty".into()));
            }
            one_secret(&g.token, &g.token_file, key, ("token", "token_file"))?;
            if g.git_ref.is_empty() {
                return Err((k("ref"), "must be non-empty".into()));
            }
            validate_url(&g.base_url, k("base_url"))?;
            for name in g.variables.keys() {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err((
                        k(&format!("variables.{name}")),
                        "variable names are letters, digits and `_`".into(),
                    ));
                }
            }
        }
        KindConfig::Kafka(kt) => {
            if kt.topic.is_empty() {
                return Err((k("topic"), "must be non-empty".into()));
            }
        }
    }
    Ok(())
}

fn validate_delivery(d: &DeliveryConfig, key: &str) -> Result<(), KeyError> {
    let k = |s: &str| format!("{key}.{s}");
    if d.initial_backoff.is_zero() {
        return Err((k("initial_backoff"), "must be positive".into()));
    }
    if d.max_backoff < d.initial_backoff {
        return Err((k("max_backoff"), "must be at least `initial_backoff`".into()));
    }
    if d.max_attempts == Some(0) {
        return Err((k("max_attempts"), "must be at least 1".into()));
    }
    if d.give_up_after.is_zero() {
        return Err((k("give_up_after"), "must be positive".into()));
    }
    if d.timeout.is_zero() {
        return Err((k("timeout"), "must be positive".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `[[triggers]]` TOML the way the config root will.
    fn parse(text: &str) -> Result<Vec<TriggerConfig>, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Root {
            triggers: Vec<TriggerConfig>,
        }
        let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize::<_, Root>(value)
            .map(|r| r.triggers)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    fn streams() -> Vec<String> {
        vec!["payments".into(), "clicks".into()]
    }

    const WEBHOOK: &str = r#"
[[triggers]]
name = "retrain"
kind = { type = "webhook", url = "https://example.com/hook", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
condition = { dataset_drift = true }
"#;

    #[test]
    fn defaults() {
        let t = parse(WEBHOOK).unwrap();
        validate(&t, &streams()).unwrap();
        let c = &t[0].condition;
        assert_eq!(c.consecutive_windows, 2);
        assert_eq!(c.cooldown, Duration::from_secs(3600));
        assert_eq!(c.clear_windows, 1);
        assert!(c.streams.is_empty());
        assert_eq!(t[0].delivery, DeliveryConfig::default());
    }

    #[test]
    fn every_kind_parses() {
        let text = r#"
[[triggers]]
name = "gh"
condition = { features = ["amount", "country"], require = "all", streams = ["payments"] }
delivery = { initial_backoff = "100ms", max_backoff = "1m", max_attempts = 5, give_up_after = "2h", timeout = "5s" }
[triggers.kind]
type = "github"
owner = "acme"
repo = "fraud"
token = "ghp_x"

[[triggers]]
name = "gl"
kind = { type = "gitlab", project = "group/proj", token_file = "/run/secrets/gl", ref = "release", variables = { MODEL = "fraud" } }
condition = { score = "psi", feature = "amount", above = 0.3, cooldown = "30m", clear_windows = 3 }

[[triggers]]
name = "kf"
kind = { type = "kafka", topic = "retrain" }
condition = { score = "ks_p_value", below = 0.01 }
"#;
        let t = parse(text).unwrap();
        validate(&t, &streams()).unwrap();
        let KindConfig::Github(g) = &t[0].kind else { panic!("github") };
        assert_eq!(g.api_base, "https://api.github.com");
        assert_eq!(g.event_type, "drift-detected");
        assert_eq!(t[0].condition.require, Require::All);
        assert_eq!(t[0].delivery.max_attempts, Some(5));
        let KindConfig::Gitlab(g) = &t[1].kind else { panic!("gitlab") };
        assert_eq!(g.git_ref, "release");
        assert_eq!(g.base_url, "https://gitlab.com");
        assert_eq!(t[1].condition.cooldown, Duration::from_secs(1800));
        assert_eq!(t[2].kind.name(), "kafka");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = parse(&WEBHOOK.replace("url =", "urll =")).unwrap_err();
        assert!(e.contains("urll"), "{e}");
        let e = parse(&WEBHOOK.replace("dataset_drift", "dataset_drfit")).unwrap_err();
        assert!(e.contains("triggers[0].condition") && e.contains("dataset_drfit"), "{e}");
        let e = parse(&WEBHOOK.replace("\"webhook\"", "\"pager\"")).unwrap_err();
        assert!(e.contains("pager"), "{e}");
    }

    fn invalid(text: &str) -> (String, String) {
        validate(&parse(text).unwrap(), &streams()).unwrap_err()
    }

    #[test]
    fn validation_names_the_key() {
        let (k, _) = invalid(
            &WEBHOOK
                .replace("dataset_drift = true", "dataset_drift = true, streams = [\"payments\", \"nope\"]"),
        );
        assert_eq!(k, "triggers[0].condition.streams[1]");
        let (k, _) =
            invalid(&WEBHOOK.replace("dataset_drift = true", "dataset_drift = true, features = [\"a\"]"));
        assert_eq!(k, "triggers[0].condition");
        let (k, _) = invalid(&WEBHOOK.replace("dataset_drift = true", "score = \"psy\", above = 1"));
        assert_eq!(k, "triggers[0].condition.score");
        let (k, _) = invalid(&WEBHOOK.replace("dataset_drift = true", "score = \"psi\""));
        assert_eq!(k, "triggers[0].condition");
        let (k, _) = invalid(&WEBHOOK.replace("dataset_drift = true", "dataset_drift = true, above = 1.0"));
        assert_eq!(k, "triggers[0].condition.above");
        let (k, _) = invalid(
            &WEBHOOK.replace("dataset_drift = true", "dataset_drift = true, consecutive_windows = 0"),
        );
        assert_eq!(k, "triggers[0].condition.consecutive_windows");
        let (k, _) =
            invalid(&WEBHOOK.replace("dataset_drift = true", "sequential = true, consecutive_windows = 3"));
        assert_eq!(k, "triggers[0].condition.consecutive_windows");
        let (k, _) =
            invalid(&WEBHOOK.replace("dataset_drift = true", "sequential = true, dataset_drift = true"));
        assert_eq!(k, "triggers[0].condition");
        let sequential =
            parse(&WEBHOOK.replace("dataset_drift = true", "sequential = true, features = [\"a\"]"));
        assert!(validate(&sequential.unwrap(), &streams()).is_ok());
        let (k, _) = invalid(&WEBHOOK.replace("whsec_MfKQ", "MfKQ"));
        assert_eq!(k, "triggers[0].kind.secret");
        let (k, _) = invalid(&WEBHOOK.replace("https://example.com/hook", "ftp://x"));
        assert_eq!(k, "triggers[0].kind.url");
        let (k, _) = invalid(&WEBHOOK.replace("name = \"retrain\"", "name = \"re train\""));
        assert_eq!(k, "triggers[0].name");
        let (k, _) = invalid(&format!("{WEBHOOK}{WEBHOOK}"));
        assert_eq!(k, "triggers[1].name");
        let (k, _) =
            invalid(&format!("{WEBHOOK}delivery = {{ initial_backoff = \"2s\", max_backoff = \"1s\" }}\n"));
        assert_eq!(k, "triggers[0].delivery.max_backoff");
        let (k, _) = invalid(&WEBHOOK.replace(
            "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", secret_file = \"/x\"",
        ));
        assert_eq!(k, "triggers[0].kind");
    }

    #[test]
    fn secrets_are_not_in_debug_or_serialised_config() {
        let t = parse(WEBHOOK).unwrap();
        let debug = format!("{t:?}");
        assert!(!debug.contains("MfKQ9r8"), "{debug}");
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("MfKQ9r8"), "{json}");
        // The validation error of a malformed secret does not echo it either.
        let (_, msg) = invalid(&WEBHOOK.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!nope!!"));
        assert!(!msg.contains("nope"), "{msg}");
    }
}
