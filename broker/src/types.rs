//! The broker's vocabulary: what callers send and what they get back.
//!
//! Requests and results that cross the library's edge — a send's
//! placement and queue selection, a pull and its answer, queue and lag
//! statistics, group assignments, retry outcomes, transaction states and
//! the checker contract, recovery and retention reports — live here, apart
//! from the engine that produces them. The wire
//! codec ([`crate::wire`]), the HTTP API and its client speak these types
//! and import nothing of the store, so a remote consumer links the same
//! shapes without reaching into commit logs or consume queues.
//!
//! Everything here is plain data, plus the one rule producers, the HTTP
//! API and its client must share exactly: [`queue_for_key`]. Behaviour
//! that needs the store stays with the module that owns it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::record::{Message, StoredMessage};

/// Where a sent message landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// Message id: the record's commit-log offset in hex (unique per broker).
    pub msg_id: String,
    /// Topic.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Position in the queue.
    pub queue_offset: u64,
    /// Position in the commit log.
    pub commit_log_offset: u64,
}

/// A pull: up to `max_messages` / `max_bytes` from one queue, starting at
/// `offset`, held up to `hold_ms` if nothing is there yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Consumer group (offset owner) pulling; for tracing and stats.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
    /// First queue offset wanted.
    pub offset: u64,
    /// Most messages to return (at least 1).
    pub max_messages: u32,
    /// Byte budget; at least one message is returned even if larger.
    pub max_bytes: u32,
    /// Longest time to hold the pull when the queue has nothing new
    /// (capped by `max_long_poll`; 0 = return at once).
    pub hold_ms: u64,
    /// Tag filter: `None` or `"*"` for every message, else tags joined by
    /// `||` (`"vip || gift"`). Messages without a matching tag are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// In clustering mode, the member pulling and the generation of the
    /// assignment that gave it the queue: a pull from a member that no
    /// longer owns the queue is refused ([`crate::BrokerError::Fenced`]),
    /// so it stops before writing what it would pull. `None`: unfenced
    /// (broadcasting, tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<PullFence>,
}

/// Who pulls a queue, for a fenced pull (see [`PullRequest::fence`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullFence {
    /// The member.
    pub member: String,
    /// The generation of its assignment.
    pub generation: u64,
}

/// What a pull found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullStatus {
    /// Messages returned.
    Found,
    /// Nothing new before the hold expired.
    NoNewMessages,
    /// The offset is below the queue's first entry; resume at `next_offset`.
    OffsetTooSmall,
    /// The offset is past the queue's end; resume at `next_offset`.
    OffsetTooBig,
}

/// The answer to a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// What happened.
    pub status: PullStatus,
    /// Messages, in queue order.
    pub messages: Vec<StoredMessage>,
    /// Offset to pull from next.
    pub next_offset: u64,
    /// First offset still in the queue.
    pub min_offset: u64,
    /// Visible length of the queue.
    pub max_offset: u64,
}

/// Offsets of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
    /// First offset still present.
    pub min_offset: u64,
    /// Visible length (next offset to be consumed at the head).
    pub max_offset: u64,
}

/// How far one offset owner is behind on one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagStats {
    /// Offset owner (group, or `group%member` in broadcasting mode).
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
    /// Committed offset.
    pub committed: u64,
    /// Visible length of the queue.
    pub max_offset: u64,
    /// `max_offset - committed`.
    pub lag: u64,
}

/// A topic and its queue count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Topic name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
}

/// How a group shares its topics' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeMode {
    /// Each message once per group; queues split over members.
    Clustering,
    /// Each message to every member.
    Broadcasting,
}

impl ConsumeMode {
    /// Name used in errors and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ConsumeMode::Clustering => "clustering",
            ConsumeMode::Broadcasting => "broadcasting",
        }
    }

    /// Who owns the committed offsets of `member` of `group`.
    pub fn offset_owner(self, group: &str, member: &str) -> String {
        match self {
            ConsumeMode::Clustering => group.to_owned(),
            ConsumeMode::Broadcasting => format!("{group}%{member}"),
        }
    }
}

/// A member's request to join a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Group name.
    pub group: String,
    /// Member id, unique within the group (e.g. host:pid:uuid).
    pub member: String,
    /// Consumption mode; must match the group's.
    pub mode: ConsumeMode,
    /// Topics to consume.
    pub topics: Vec<String>,
}

/// One queue of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueRef {
    /// Topic name.
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
}

/// What a member should consume now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Changes whenever membership or subscriptions change.
    pub generation: u64,
    /// The group's mode.
    pub mode: ConsumeMode,
    /// Owner name to commit offsets under (see [`ConsumeMode::offset_owner`]).
    pub offset_owner: String,
    /// The queues this member owns.
    pub queues: Vec<QueueRef>,
    /// Live members of the group, sorted.
    pub members: Vec<String>,
}

/// Where a failed message went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RetryOutcome {
    /// To the retry topic, due at `deliver_at_ms`.
    Retry {
        /// Which retry this is (1-based).
        attempt: u32,
        /// Delay level used.
        delay_level: u32,
    },
    /// To the dead-letter topic, after `failures` failed consumptions.
    DeadLetter {
        /// Failed consumptions in total.
        failures: u32,
    },
}

/// A producer's answer about a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionState {
    /// Make the message visible.
    Commit,
    /// Discard the message.
    Rollback,
    /// Not decided yet; ask again later.
    Unknown,
}

/// Where a half message was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfSendResult {
    /// Offset in the half topic: pass it to [`crate::Broker::end_transaction`].
    pub half_offset: u64,
    /// Message id of the half record.
    pub msg_id: String,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The previous stop was a crash (the abort marker was present).
    pub crashed: bool,
    /// Log offset where recovery started checking records.
    pub verified_from: u64,
    /// End of the recovered log.
    pub log_end: u64,
    /// Bytes cut off a torn tail.
    pub truncated_bytes: u64,
    /// Records re-dispatched into consume queues.
    pub redispatched: u64,
    /// Consume-queue entries dropped for pointing past the log's end.
    pub dropped_queue_entries: u64,
    /// Newest store timestamp among the records checked (0 if none), so
    /// new timestamps never go back in time after a restart.
    pub newest_store_timestamp_ms: i64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Commit-log segments deleted.
    pub segments_deleted: u64,
    /// Consume-queue files deleted.
    pub queue_files_deleted: u64,
    /// First log offset still stored.
    pub log_min_offset: u64,
}

/// Where to move a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "to", content = "timestamp_ms")]
pub enum OffsetReset {
    /// The first message still stored.
    Earliest,
    /// The end: only messages arriving from now on.
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A half message as shown to a checker: the real message and where it
/// would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfMessage {
    /// The half message's offset in the half topic (the transaction id).
    pub half_offset: u64,
    /// Producer group that sent it.
    pub producer_group: String,
    /// Real destination queue.
    pub queue_id: u32,
    /// The message as it will be delivered on commit.
    pub message: Message,
    /// When the broker stored the half message (ms since the epoch).
    pub stored_at_ms: i64,
}

/// Answers check-backs for one producer group: "did this transaction
/// commit?". The seckill service answers from its stock store's buyer
/// records; a remote producer registers an HTTP callback.
#[async_trait]
pub trait TransactionChecker: Send + Sync + std::fmt::Debug {
    /// The state of the transaction that sent `half`.
    async fn check(&self, half: &HalfMessage) -> TransactionState;
}

/// How to choose a message's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueSelector {
    /// The next queue in turn.
    RoundRobin,
    /// A queue chosen by a stable hash of the message key (ordered per key).
    KeyHash,
    /// This queue.
    Queue(u32),
}

/// The queue a key hashes to among `queues` (stable across versions and
/// processes: CRC32C), so one key's messages stay on one queue, in order.
pub fn queue_for_key(key: &str, queues: u32) -> u32 {
    crc32c::crc32c(key.as_bytes()) % queues.max(1)
}
