//! The health board: what the consumer's callbacks, the feeder, the pipeline and the
//! checkpoint writer know about the process's state (assignment, broker connection,
//! commits, references still being taken, a failing checkpoint), read by `/readyz`,
//! `/healthz` and the metrics. Flags and small locked maps; no I/O.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

/// Offsets that are safe to commit, by topic and partition: the next offset to read.
pub type SafeOffsets = BTreeMap<(String, i32), i64>;

/// Consumer lag per topic partition, from librdkafka's statistics.
pub type LagReport = BTreeMap<(String, i32), i64>;

/// The board shared between the consumer's callbacks (run inside `poll`), the
/// monitor's threads and the HTTP server: rebalance notices, the commit-safe offsets,
/// readiness facts and lag.
#[derive(Default)]
pub struct Health {
    /// Set when partitions were revoked; the monitor rolls back to its last checkpoint.
    pub revoked: AtomicBool,
    /// Partitions currently assigned to this instance.
    pub assigned: AtomicUsize,
    /// Assignments received so far: the consumer thread forwards newly assigned
    /// partitions to its message queue when this moves.
    pub assignments: AtomicU64,
    /// The offsets of the last checkpoint; committed synchronously before a rebalance
    /// gives partitions up. (Records below them that are read again, because a commit
    /// never reached the broker, are skipped by the monitor.)
    pub safe: Mutex<SafeOffsets>,
    /// Latest consumer lag per partition.
    pub lag: Mutex<LagReport>,
    /// Fetch errors since start (broker down, ...), for readiness.
    pub fetch_errors: AtomicU64,
    /// Whether a broker connection is up (librdkafka statistics; cleared at once when
    /// librdkafka reports all brokers down).
    pub connected: AtomicBool,
    /// Set once the group gave this instance an assignment (possibly empty).
    pub joined: AtomicBool,
    /// Set while the assignment is lost (the group session timed out, e.g. while the
    /// broker was away) until the group assigns partitions again: nothing is fetched.
    pub assignment_lost: AtomicBool,
    /// Streams whose reference is still being taken from the stream.
    pub pending_references: Mutex<std::collections::BTreeSet<String>>,
    /// Set when an offset commit failed after it was sent (async commits report
    /// failures only here); the monitor then sends its offsets again.
    pub commit_failed: AtomicBool,
    /// Commit answers received (success or failure), so a stop can wait for its last
    /// commit's answer with a bound instead of committing synchronously.
    pub commits_answered: AtomicU64,
    /// Set once the last commit of a stop was sent: the revocation that closing the
    /// consumer causes then commits nothing more (a synchronous commit there waits for
    /// a group join to finish, or for an absent broker, without bound).
    pub closing: AtomicBool,
    /// Why the last checkpoint could not be written, while that lasts (consumption is
    /// paused meanwhile, so nothing is committed or reported without a checkpoint).
    pub state_error: Mutex<Option<String>>,
    /// Why the schema registry cannot be asked, while that lasts (the pipeline waits
    /// and retries meanwhile, so no record is skipped; see `ingest::registry`).
    pub registry_error: Mutex<Option<String>>,
    /// Set when a stop is asked for: waits that would hold the pipeline (the schema
    /// registry's retries) give up.
    pub stopping: AtomicBool,
    /// The input consumer's group metadata as of its last assignment (global mode's
    /// transactions commit input offsets with it, so a zombie of an older generation
    /// is refused by the broker).
    pub group_metadata: Mutex<Option<std::sync::Arc<rdkafka::consumer::ConsumerGroupMetadata>>>,
    /// The label joins' handover between instances (`labels.handover_topic`), when a
    /// stream has one: the rebalance callbacks write and read it.
    pub handover: std::sync::OnceLock<std::sync::Arc<crate::ingest::handover::Handover>>,
    /// Global mode as this instance sees it (owners, the owned streams' merge), kept
    /// by the scoring loop; `None` when no stream is global.
    pub global: Mutex<Option<crate::scale::status::GlobalStatus>>,
}
