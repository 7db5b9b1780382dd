//! The consumer side, as a trait with two implementations: the
//! [`crate::Broker`] in this process (`local_consumer`) and [`crate::BrokerHttpClient`] for a broker elsewhere.
//! Code written against [`ConsumerApi`] (the order worker) does not care
//! where the log lives.
//!
//! Besides pulling and group membership, a consumer gives failed messages
//! back ([`ConsumerApi::reconsume_later`]), sends follow-up messages to the
//! same broker (the worker's delayed payment timeouts), looks messages up
//! by key (is an order still in the queue?) and reads queue offsets (lag,
//! dead-letter depth).

use async_trait::async_trait;

use crate::error::Result;
use crate::record::{Message, StoredMessage};
use crate::types::{
    Assignment, JoinRequest, PullRequest, PullResult, QueueStats, RetryOutcome, SendResult,
};

/// Everything a consumer needs from a broker.
#[async_trait]
pub trait ConsumerApi: Send + Sync {
    /// Sends messages of one topic, each to the queue its key hashes to,
    /// and waits until they are durable. Results come in order.
    async fn send_by_key(&self, messages: Vec<Message>) -> Result<Vec<SendResult>>;
    /// Gives back a message `group` failed to process (retry topic, or the
    /// dead-letter topic once its retries are spent).
    async fn reconsume_later(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
        reason: &str,
    ) -> Result<RetryOutcome>;
    /// Messages whose key is `key`, optionally of one topic only.
    async fn messages_by_key(
        &self,
        key: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMessage>>;
    /// Offsets of every queue.
    async fn queue_stats(&self) -> Result<Vec<QueueStats>>;
    /// Dead letters of `group` from `offset` (at most `max`).
    async fn dead_letters(&self, group: &str, offset: u64, max: u32) -> Result<PullResult>;
    /// Pulls from one queue, long-polling when it is empty.
    async fn pull(&self, request: &PullRequest) -> Result<PullResult>;
    /// Commits `owner`'s offset on a queue without naming a member
    /// (broadcasting owners, tools); see [`crate::Broker::commit_offset`].
    async fn commit_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()>;
    /// A clustering member's commit, fenced by ownership: refused with
    /// [`crate::BrokerError::Fenced`] when `member` does not own the queue
    /// now under an assignment of `generation` or later, and with
    /// [`crate::BrokerError::OffsetBackwards`] below the committed offset.
    /// See [`crate::Broker::commit_offset_fenced`].
    async fn commit_offset_fenced(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()>;
    /// Reads `owner`'s committed offset on a queue.
    async fn committed_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<Option<u64>>;
    /// Joins a consumer group.
    async fn join_group(&self, request: &JoinRequest) -> Result<Assignment>;
    /// Heartbeats and returns the current assignment.
    async fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment>;
    /// Leaves a consumer group.
    async fn leave_group(&self, group: &str, member: &str) -> Result<()>;
}
