//! Time lookup and message backtrack: the first offset at or after a
//! timestamp, and resetting a group's committed offsets to it (or to the
//! start or end of each queue) — "replay everything since 14:00".
//!
//! Store timestamps are assigned under the append lock from a monotonic
//! clock, so they are sorted within a queue and a binary search over the
//! consume queue finds the offset in O(log n) header reads (48 bytes each,
//! no bodies).

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::types::OffsetReset;

impl Broker {
    /// The offset of the first message of `topic`/`queue_id` stored at or
    /// after `timestamp_ms`; the queue's end if there is none.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64> {
        let inner = self.inner();
        let queue = inner.queue(topic, queue_id)?;
        let mut low = queue.consume_queue_min();
        let mut high = queue.consume_queue_len();
        while low < high {
            let middle = low + (high - low) / 2;
            let entry = queue.entry(middle)?;
            // Entries whose records retention removed count as oldest.
            let stored_at = if entry.commit_log_offset < inner.log.min_offset() {
                i64::MIN
            } else {
                inner.log.store_timestamp_at(entry.commit_log_offset)?
            };
            if stored_at < timestamp_ms {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }

    /// Moves `group`'s committed offsets on every queue of `topic` (the
    /// offset owner as in [`crate::Assignment::offset_owner`]). Members see
    /// a new generation at their next heartbeat and re-read their offsets.
    /// Returns the new offset of each queue.
    pub fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: OffsetReset,
    ) -> Result<Vec<(u32, u64)>> {
        if group.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "group must not be empty".into(),
            ));
        }
        let inner = self.inner();
        let queues = inner
            .topics
            .get(topic)
            .ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))?
            .queues;
        let mut moved = Vec::with_capacity(queues as usize);
        for queue_id in 0..queues {
            let queue = inner.queue(topic, queue_id)?;
            let offset = match to {
                OffsetReset::Earliest => queue.consume_queue_min(),
                OffsetReset::Latest => queue.consume_queue_len(),
                OffsetReset::Timestamp(ms) => self.offset_for_timestamp(topic, queue_id, ms)?,
            };
            self.commit_offset(group, topic, queue_id, offset)?;
            moved.push((queue_id, offset));
        }
        inner.groups.bump_generation(group);
        Ok(moved)
    }
}
