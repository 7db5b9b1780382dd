//! The broker in this process as a [`ConsumerApi`]: each call is the
//! [`Broker`] method of the same name, and `send_by_key` spreads a batch
//! over queues by key hash, one durable append per queue.
//!
//! Kept apart from the trait so the trait (and the HTTP client that also
//! implements it) depends on the shared types only, never on the engine.

use async_trait::async_trait;

use crate::broker::Broker;
use crate::consumer::ConsumerApi;
use crate::error::Result;
use crate::record::{Message, StoredMessage};
use crate::types::{
    Assignment, JoinRequest, PullRequest, PullResult, QueueStats, RetryOutcome, SendResult,
    queue_for_key,
};

#[async_trait]
impl ConsumerApi for Broker {
    async fn send_by_key(&self, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        let Some(first) = messages.first() else {
            return Ok(Vec::new());
        };
        let queues = match self.topic(&first.topic) {
            Some(topic) => topic.queues,
            None => {
                self.create_topic(&first.topic, self.config().default_queues)?
                    .queues
            }
        };
        // One durable append per queue; results put back in the caller's order.
        let mut by_queue: std::collections::BTreeMap<u32, Vec<(usize, Message)>> =
            std::collections::BTreeMap::new();
        for (position, message) in messages.into_iter().enumerate() {
            let queue = queue_for_key(&message.key, queues);
            by_queue.entry(queue).or_default().push((position, message));
        }
        let mut placed = Vec::new();
        for (queue, batch) in by_queue {
            let (positions, batch): (Vec<usize>, Vec<Message>) = batch.into_iter().unzip();
            let results = self.put(queue, batch).await?;
            placed.extend(positions.into_iter().zip(results));
        }
        placed.sort_unstable_by_key(|(position, _)| *position);
        Ok(placed.into_iter().map(|(_, result)| result).collect())
    }

    async fn reconsume_later(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
        reason: &str,
    ) -> Result<RetryOutcome> {
        Broker::reconsume_later(self, group, topic, queue_id, queue_offset, reason).await
    }

    async fn messages_by_key(
        &self,
        key: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        Broker::messages_by_key(self, key, topic, max)
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        Ok(Broker::queue_stats(self))
    }

    async fn dead_letters(&self, group: &str, offset: u64, max: u32) -> Result<PullResult> {
        Broker::dead_letters(self, group, offset, max).await
    }

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

    async fn commit_offset_fenced(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        Broker::commit_offset_fenced(self, group, member, generation, topic, queue_id, offset)
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
