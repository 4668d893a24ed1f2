//! What global mode tells `/readyz` and `/api/v1/streams`: who owns each global stream
//! (every instance, owner or not, describes the partials group and maps the partials
//! partition of a stream to the member assigned it, named by its `client.id`, which is
//! the instance name), and, for the streams this instance owns, whether partials are
//! flowing, which windows wait for which source partitions, and which instances'
//! partials disagree with this instance's config. Written by the scoring loop, read by
//! the HTTP handlers; the group-description parsing here is pure.

use crate::stats::partial::SourcePartition;
use serde::Serialize;
use std::collections::BTreeMap;

/// Header of every partials record naming the instance that published it.
pub const INSTANCE_HEADER: &str = "driftscope-instance";

/// Global mode as this instance sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GlobalStatus {
    /// This instance's name (`scale.instance`).
    pub instance: String,
    pub partials_topic: String,
    pub partials_group: String,
    /// Partials partitions assigned to this instance now.
    pub assigned: Vec<i32>,
    /// Instance names of the partials group's members at the last description.
    pub members: Vec<String>,
    /// The partials group's state at the last description (`Stable`,
    /// `PreparingRebalance`, ...), `None` before one succeeded.
    pub group_state: Option<String>,
    /// Why the last description failed, while that lasts.
    pub describe_error: Option<String>,
    /// Every global stream: its owner's instance name, `None` while no member is
    /// assigned its partials partition (a rebalance) or before the group was described.
    pub owners: BTreeMap<String, Option<String>>,
    /// The streams this instance owns.
    pub owned: BTreeMap<String, OwnedStatus>,
}

impl GlobalStatus {
    /// Whether this instance owns `stream`.
    pub fn owns(&self, stream: &str) -> bool {
        self.owned.contains_key(stream)
    }
}

/// An owned stream's merge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OwnedStatus {
    /// Milliseconds since the last partial of the stream was read, `None` before one.
    pub last_partial_age_ms: Option<i64>,
    /// Windows ending below this pane are scored (the committed progress).
    pub scored_below: Option<i64>,
    /// Windows that have partials but wait for some source partition.
    pub windows_waiting: usize,
    /// The oldest of them (at most [`WAITING_SHOWN`]), with the partitions they wait for.
    pub waiting: Vec<WaitingWindow>,
    /// Every source partition heard of: watermark and age.
    pub sources: Vec<SourceStatus>,
    /// Source partitions whose partials were refused because their publisher's
    /// config differs from this instance's: the stream is not scored while any is here.
    pub disagreements: Vec<Disagreement>,
}

/// How many waiting windows the status lists.
pub const WAITING_SHOWN: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingWindow {
    pub index: i64,
    pub start: String,
    pub end: String,
    /// `topic/partition` of every source whose watermark has not passed the end.
    pub waiting_for: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    pub topic: String,
    pub partition: i32,
    /// The partition's watermark (event time, RFC 3339), `None` before its first partial.
    pub watermark: Option<String>,
    /// Milliseconds since its last partial (or since the stream was taken over).
    pub last_heard_age_ms: i64,
    /// Counted as passed every window end: nothing for `scale.idle_timeout`.
    pub idle: bool,
}

/// Partials of one source partition refused for a config that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub topic: String,
    pub partition: i32,
    /// The instance that published them (the record's `driftscope-instance` header).
    pub instance: Option<String>,
    /// `window` or `reference`.
    pub what: String,
    /// This instance's value and the publisher's.
    pub ours: String,
    pub theirs: String,
    /// Partials refused since the disagreement began.
    pub refused: u64,
    /// When the last one was read (RFC 3339).
    pub last_refused: String,
}

impl Disagreement {
    pub fn source(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

pub fn source_name(s: &SourcePartition) -> String {
    format!("{}/{}", s.topic, s.partition)
}

/// A member of the partials group as described: its instance name and the partials
/// partitions it is assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub instance: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("a consumer group member assignment that does not parse (at byte {0})")]
pub struct AssignmentError(usize);

/// The partitions of `topic` in a member assignment of the consumer protocol
/// (`version: i16, [topic: string, [partition: i32]], user_data: bytes`, big-endian;
/// versions 0 to 3 share this layout). Empty bytes (a member not yet synced) hold none.
pub fn assignment_partitions(bytes: &[u8], topic: &str) -> Result<Vec<i32>, AssignmentError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], AssignmentError> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len()).ok_or(AssignmentError(at))?;
        let slice = &bytes[at..end];
        at = end;
        Ok(slice)
    };
    let i16_at = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let i32_at = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let _version = i16_at(take(2)?);
    let topics = i32_at(take(4)?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16_at(take(2)?);
        let name = take(len.max(0) as usize)?.to_vec();
        let count = i32_at(take(4)?);
        for _ in 0..count.max(0) {
            let partition = i32_at(take(4)?);
            if name == topic.as_bytes() {
                out.push(partition);
            }
        }
    }
    Ok(out)
}

/// The owner of each of `streams` (by its partials partition, `partition_of`) among
/// `members`; `None` for a stream whose partition no member holds.
pub fn owners(
    streams: &[String],
    members: &[Member],
    partition_of: impl Fn(&str) -> i32,
) -> BTreeMap<String, Option<String>> {
    streams
        .iter()
        .map(|s| {
            let p = partition_of(s);
            let owner = members.iter().find(|m| m.partitions.contains(&p)).map(|m| m.instance.clone());
            (s.clone(), owner)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer-protocol assignment as the Java client and librdkafka write it.
    fn encode(topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            b.extend_from_slice(&(name.len() as i16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        match user_data {
            Some(d) => {
                b.extend_from_slice(&(d.len() as i32).to_be_bytes());
                b.extend_from_slice(d);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        b
    }

    #[test]
    fn an_assignment_gives_the_partitions_of_the_topic_asked_for() {
        let bytes = encode(&[("other", &[0, 1]), ("partials", &[3, 5])], Some(b"xy"));
        assert_eq!(assignment_partitions(&bytes, "partials").unwrap(), vec![3, 5]);
        assert_eq!(assignment_partitions(&bytes, "other").unwrap(), vec![0, 1]);
        assert!(assignment_partitions(&bytes, "none").unwrap().is_empty());
        assert!(assignment_partitions(&encode(&[], None), "partials").unwrap().is_empty());
        assert!(assignment_partitions(&[], "partials").unwrap().is_empty(), "a member not yet synced");
    }

    #[test]
    fn a_truncated_assignment_is_an_error_not_a_panic() {
        let bytes = encode(&[("partials", &[3, 5])], None);
        for cut in 1..bytes.len() - 4 {
            assert!(assignment_partitions(&bytes[..cut], "partials").is_err(), "cut at {cut}");
        }
        // A negative count holds nothing rather than looping.
        let mut odd = encode(&[], None);
        odd[2..6].copy_from_slice(&(-7i32).to_be_bytes());
        assert!(assignment_partitions(&odd, "partials").unwrap().is_empty());
    }

    #[test]
    fn each_stream_is_owned_by_the_member_assigned_its_partition() {
        let members = vec![
            Member { instance: "a".into(), partitions: vec![0, 2] },
            Member { instance: "b".into(), partitions: vec![1] },
        ];
        let streams = vec!["s0".to_owned(), "s1".to_owned(), "s3".to_owned()];
        let got = owners(&streams, &members, |s| s[1..].parse().unwrap());
        assert_eq!(got["s0"].as_deref(), Some("a"));
        assert_eq!(got["s1"].as_deref(), Some("b"));
        assert_eq!(got["s3"], None, "no member holds partition 3");
    }
}
