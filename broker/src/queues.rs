//! The consume queues as the store serves them: each queue's 20-byte index
//! ([`crate::consume_queue`]) plus the length consumers may see, and the
//! table of every topic's queues, opened on first use.
//!
//! The visible length is a `watch` channel rather than the index's own
//! length because the two differ on purpose: in sync flush mode an entry
//! is written under the append lock but published only once an fdatasync
//! covers its record (see `group_commit`), so no consumer reads data a
//! power loss could still take back. Long polls wait on the same channel.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::commit_log::CommitLog;
use crate::consume_queue::{ConsumeQueue, QueueEntry};
use crate::error::Result;
use crate::record::StoredMessage;
use crate::store_paths::StorePaths;
use crate::types::TopicConfig;

/// The queues of one topic, by queue id.
type TopicQueues = Arc<[Arc<QueueState>]>;

/// Every topic's queues. A topic's queues are opened together, once: at
/// startup for the topics found on disk, else on first use.
#[derive(Debug)]
pub(crate) struct QueueTable {
    entries_per_file: u64,
    by_topic: RwLock<HashMap<String, TopicQueues>>,
}

impl QueueTable {
    pub(crate) fn new(entries_per_file: u64) -> Self {
        QueueTable {
            entries_per_file,
            by_topic: RwLock::new(HashMap::new()),
        }
    }

    /// Opens the queues of a topic found at startup, cutting entries that
    /// point at or past `log_end`. Returns how many entries it cut.
    pub(crate) fn open_topic(
        &self,
        paths: &StorePaths,
        topic: &TopicConfig,
        log_end: u64,
    ) -> Result<u64> {
        let mut dropped_entries = 0;
        let mut states = Vec::with_capacity(topic.queues as usize);
        for queue_id in 0..topic.queues {
            let dir = paths.consume_queue_dir(&topic.name, queue_id);
            let (consume_queue, dropped) =
                ConsumeQueue::open(&dir, self.entries_per_file, log_end)?;
            dropped_entries += dropped;
            states.push(Arc::new(QueueState::new(
                &topic.name,
                queue_id,
                consume_queue,
            )));
        }
        self.by_topic
            .write()
            .insert(topic.name.clone(), states.into());
        Ok(dropped_entries)
    }

    /// The queues of `topic`, opening them on first use with
    /// `queue_count()` queues, against a log that ends at `log_end()`.
    /// Both are asked only when the queues must be opened; `log_end` under
    /// the table's write lock, so no append to the topic can come between.
    pub(crate) fn get_or_open(
        &self,
        paths: &StorePaths,
        topic: &str,
        queue_count: impl FnOnce() -> Result<u32>,
        log_end: impl FnOnce() -> u64,
    ) -> Result<TopicQueues> {
        if let Some(queues) = self.by_topic.read().get(topic) {
            return Ok(Arc::clone(queues));
        }
        let count = queue_count()?;
        let mut by_topic = self.by_topic.write();
        if let Some(existing) = by_topic.get(topic) {
            return Ok(Arc::clone(existing));
        }
        let log_end = log_end();
        let mut states = Vec::with_capacity(count as usize);
        for queue_id in 0..count {
            let dir = paths.consume_queue_dir(topic, queue_id);
            let (consume_queue, _) = ConsumeQueue::open(&dir, self.entries_per_file, log_end)?;
            states.push(Arc::new(QueueState::new(topic, queue_id, consume_queue)));
        }
        let states: TopicQueues = states.into();
        by_topic.insert(topic.to_owned(), Arc::clone(&states));
        Ok(states)
    }

    /// Every open queue of every topic.
    pub(crate) fn all(&self) -> Vec<Arc<QueueState>> {
        self.by_topic
            .read()
            .values()
            .flat_map(|qs| qs.iter().cloned())
            .collect()
    }
}

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
