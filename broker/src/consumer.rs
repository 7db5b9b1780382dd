//! The consumer side, as a trait with two implementations: the [`Broker`]
//! in this process and [`crate::BrokerHttpClient`] for a broker elsewhere.
//! Code written against [`ConsumerApi`] (the order worker) does not care
//! where the log lives.

use async_trait::async_trait;

use crate::broker::{Broker, PullRequest, PullResult};
use crate::consumer_groups::{Assignment, JoinRequest};
use crate::error::Result;

/// Everything a consumer needs from a broker.
#[async_trait]
pub trait ConsumerApi: Send + Sync {
    /// Pulls from one queue, long-polling when it is empty.
    async fn pull(&self, request: &PullRequest) -> Result<PullResult>;
    /// Commits `owner`'s offset on a queue.
    async fn commit_offset(
        &self,
        owner: &str,
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

#[async_trait]
impl ConsumerApi for Broker {
    async fn pull(&self, request: &PullRequest) -> Result<PullResult> {
        Broker::pull(self, request).await
    }

    async fn commit_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        Broker::commit_offset(self, owner, topic, queue_id, offset)
    }

    async fn committed_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<Option<u64>> {
        Ok(Broker::committed_offset(self, owner, topic, queue_id))
    }

    async fn join_group(&self, request: &JoinRequest) -> Result<Assignment> {
        Broker::join_group(self, request)
    }

    async fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment> {
        Broker::heartbeat(self, group, member)
    }

    async fn leave_group(&self, group: &str, member: &str) -> Result<()> {
        Broker::leave_group(self, group, member)
    }
}
