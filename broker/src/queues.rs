//! One consume queue as the broker serves it: the 20-byte index of
//! [`crate::consume_queue`] plus the length consumers may see.
//!
//! The visible length is a `watch` channel rather than the index's own
//! length because the two differ on purpose: in sync flush mode an entry
//! is written under the append lock but published only once an fdatasync
//! covers its record (see `group_commit`), so no consumer reads data a
//! power loss could still take back. Long polls wait on the same channel.

use tokio::sync::watch;

use crate::commit_log::CommitLog;
use crate::consume_queue::{ConsumeQueue, QueueEntry};
use crate::error::Result;
use crate::record::StoredMessage;

/// One queue: its index and the published length long polls wait on.
#[derive(Debug)]
pub(crate) struct QueueState {
    topic: String,
    queue_id: u32,
    consume_queue: ConsumeQueue,
    visible: watch::Sender<u64>,
}

impl QueueState {
    /// Wraps an opened consume queue; everything in it starts visible.
    pub(crate) fn new(topic: &str, queue_id: u32, consume_queue: ConsumeQueue) -> Self {
        let len = consume_queue.len();
        QueueState {
            topic: topic.to_owned(),
            queue_id,
            consume_queue,
            visible: watch::channel(len).0,
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// The index itself (appends, recovery and retention write it).
    pub(crate) fn consume_queue(&self) -> &ConsumeQueue {
        &self.consume_queue
    }

    /// The channel long polls wait on for the queue to grow.
    pub(crate) fn visible_watch(&self) -> &watch::Sender<u64> {
        &self.visible
    }

    /// Raises the visible length (never lowers it: publications from the
    /// flusher and from async appends may arrive out of order).
    pub(crate) fn publish_visible(&self, len: u64) {
        self.visible.send_if_modified(|current| {
            let grew = len > *current;
            if grew {
                *current = len;
            }
            grew
        });
    }

    pub(crate) fn visible_len(&self) -> u64 {
        *self.visible.borrow()
    }

    pub(crate) fn delete_expired_files(&self, log_min: u64) -> Result<u64> {
        self.consume_queue.delete_expired_files(log_min)
    }

    pub(crate) fn consume_queue_min(&self) -> u64 {
        self.consume_queue.min_offset()
    }

    pub(crate) fn consume_queue_len(&self) -> u64 {
        self.consume_queue.len()
    }

    pub(crate) fn entry(&self, offset: u64) -> Result<QueueEntry> {
        self.consume_queue.get(offset)
    }

    /// Reads the message at `offset` of this queue from `log`.
    pub(crate) fn read_message(&self, log: &CommitLog, offset: u64) -> Result<StoredMessage> {
        let entry = self.consume_queue.get(offset)?;
        log.read(entry.commit_log_offset, entry.size)
    }
}
