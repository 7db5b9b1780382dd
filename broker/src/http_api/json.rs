//! The JSON shapes of the API: bodies, queries and answers.
//!
//! Public so the client (and anyone else) speaks the same ones. They are
//! plain data over the shared [`crate::types`]; no handler logic lives
//! here, so the client links them without the server's routes.

use serde::{Deserialize, Serialize};

use super::limits::{DEFAULT_PULL_BYTES, DEFAULT_PULL_MESSAGES, MAX_PULL_BYTES, MAX_PULL_MESSAGES};
use crate::types::{
    ConsumeMode, OffsetReset, PullFence, PullRequest, SendResult, TransactionState,
};

/// Body of `POST /broker/topics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
}

/// Offsets of one queue in a [`TopicInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffsets {
    /// Queue id.
    pub queue_id: u32,
    /// First offset still present.
    pub min_offset: u64,
    /// Visible length of the queue.
    pub max_offset: u64,
}

/// A topic with its queues' offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
    /// Offsets of each queue, by queue id.
    pub offsets: Vec<QueueOffsets>,
}

/// Query of a send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    /// Send every message to this queue.
    #[serde(default, alias = "queue_id")]
    pub queue: Option<u32>,
    /// Send each message to the queue its key hashes to.
    #[serde(default)]
    pub key_hash: bool,
    /// Wait for durability (default); `false` answers once appended.
    #[serde(default = "default_true")]
    pub wait: bool,
}

fn default_true() -> bool {
    true
}

/// Answer to a send: one result per message, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// Where each message landed.
    pub results: Vec<SendResult>,
}

/// Parameters of a pull, as a query string or a JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullParams {
    /// Consumer group pulling (for tracing and stats).
    #[serde(default)]
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
    /// First queue offset wanted.
    pub offset: u64,
    /// Most messages to return; default [`DEFAULT_PULL_MESSAGES`], capped
    /// at [`MAX_PULL_MESSAGES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u32>,
    /// Byte budget; default [`DEFAULT_PULL_BYTES`], capped at
    /// [`MAX_PULL_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u32>,
    /// Longest hold in ms when nothing is there (default 0: answer at once;
    /// the broker caps it at its `max_long_poll`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
    /// Tag filter (`a || b`, `*`); absent = every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// A fenced pull's member (with `generation`; both or neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// A fenced pull's assignment generation (with `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl PullParams {
    /// The broker request these parameters ask for, with the server's caps
    /// applied.
    pub fn to_request(&self) -> PullRequest {
        PullRequest {
            group: self.group.clone(),
            topic: self.topic.clone(),
            queue_id: self.queue,
            offset: self.offset,
            max_messages: self
                .max_messages
                .unwrap_or(DEFAULT_PULL_MESSAGES)
                .min(MAX_PULL_MESSAGES),
            max_bytes: self
                .max_bytes
                .unwrap_or(DEFAULT_PULL_BYTES)
                .min(MAX_PULL_BYTES),
            hold_ms: self.hold_ms.unwrap_or(0),
            tags: self.tags.clone(),
            fence: match (&self.member, self.generation) {
                (Some(member), Some(generation)) => Some(PullFence {
                    member: member.clone(),
                    generation,
                }),
                _ => None,
            },
        }
    }

    /// Whether a fence is named by halves (a member without a generation,
    /// or the other way round): the request is refused.
    pub fn half_fenced(&self) -> bool {
        self.member.is_some() != self.generation.is_some()
    }
}

impl From<&PullRequest> for PullParams {
    fn from(request: &PullRequest) -> Self {
        PullParams {
            group: request.group.clone(),
            topic: request.topic.clone(),
            queue: request.queue_id,
            offset: request.offset,
            max_messages: Some(request.max_messages),
            max_bytes: Some(request.max_bytes),
            hold_ms: Some(request.hold_ms),
            tags: request.tags.clone(),
            member: request.fence.as_ref().map(|f| f.member.clone()),
            generation: request.fence.as_ref().map(|f| f.generation),
        }
    }
}

/// A committed offset: body of `POST /broker/offsets` and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitOffset {
    /// Offset owner: the group, or `group%member` in broadcasting mode.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
    /// Everything below this offset is consumed.
    pub offset: u64,
    /// Clustering mode: the committing member. With `generation`, the
    /// commit is fenced ([`crate::Broker::commit_offset_fenced`]); without
    /// both, it is unfenced ([`crate::Broker::commit_offset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The generation of the assignment the member consumes under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// Query of `GET /broker/offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetQuery {
    /// Offset owner.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
}

/// Answer of `GET /broker/offsets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Offset owner.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue: u32,
    /// The committed offset; `null` when nothing was committed.
    pub offset: Option<u64>,
}

/// Body of a join (`PUT /broker/groups/{group}/members/{member}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinGroup {
    /// Consumption mode; default clustering.
    #[serde(default = "default_mode")]
    pub mode: ConsumeMode,
    /// Topics to consume.
    pub topics: Vec<String>,
}

fn default_mode() -> ConsumeMode {
    ConsumeMode::Clustering
}

/// A consumer group in `GET /broker/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group name.
    pub group: String,
    /// Its mode.
    pub mode: ConsumeMode,
    /// Live members, sorted.
    pub members: Vec<String>,
}

/// Filters of the stats endpoints (absent = all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Only this offset owner (lag only).
    #[serde(default)]
    pub group: Option<String>,
    /// Only this topic.
    #[serde(default)]
    pub topic: Option<String>,
}

/// Body of `POST /broker/groups/{group}/retry`: the position of the
/// message the group failed to process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconsume {
    /// Topic the message was pulled from (a retry topic too).
    pub topic: String,
    /// Queue id.
    #[serde(alias = "queue_id")]
    pub queue: u32,
    /// Queue offset of the message.
    pub offset: u64,
    /// Why it failed, kept in the message's history (cut at 1 KiB).
    #[serde(default)]
    pub reason: String,
}

/// Query of `GET /broker/groups/{group}/dlq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// First DLQ offset wanted (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Most dead letters to return; default [`DEFAULT_PULL_MESSAGES`],
    /// capped at [`MAX_PULL_MESSAGES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// Query of a half send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HalfParams {
    /// Queue of the message's topic it goes to on commit.
    #[serde(alias = "queue_id")]
    pub queue: u32,
}

/// Body of `POST /broker/transactions/{half_offset}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndTransaction {
    /// `commit` or `rollback` (`unknown` is refused with 400).
    pub state: TransactionState,
}

/// Answer of `POST /broker/transactions/{half_offset}/end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndTransactionResponse {
    /// Where the real message landed; `null` after a rollback.
    pub committed: Option<SendResult>,
}

/// Body of `PUT /broker/transactions/checkers/{producer_group}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterChecker {
    /// `http://` or `https://` URL the broker POSTs check-backs to.
    pub url: String,
}

/// Answer of a checker registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerRegistration {
    /// The producer group.
    pub producer_group: String,
    /// The URL it is now asked at, as parsed.
    pub url: String,
}

/// Answer of `GET /broker/transactions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTransactions {
    /// Half messages neither committed nor rolled back yet.
    pub open: usize,
}

/// What a producer's check-back endpoint answers
/// ([`crate::HttpTransactionChecker`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The transaction's state as the producer knows it.
    pub state: TransactionState,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs (see the module doc's table).
    pub code: String,
}
/// Body of `POST /broker/groups/{group}/offsets/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsets {
    /// Topic whose queues move.
    pub topic: String,
    /// Where to.
    #[serde(flatten)]
    pub to: OffsetReset,
}

/// One queue's new offset after a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffset {
    /// Queue id.
    pub queue: u32,
    /// New committed offset.
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_params_are_capped() {
        let params = PullParams {
            group: "g".into(),
            topic: "t".into(),
            queue: 1,
            offset: 2,
            max_messages: Some(u32::MAX),
            max_bytes: Some(u32::MAX),
            hold_ms: None,
            tags: None,
            member: None,
            generation: None,
        };
        let request = params.to_request();
        assert_eq!(request.max_messages, MAX_PULL_MESSAGES);
        assert_eq!(request.max_bytes, MAX_PULL_BYTES);
        assert_eq!(request.hold_ms, 0);
    }
}
