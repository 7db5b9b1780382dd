//! The store's append path: a batch of records for any topics and queues
//! written with one take of the append lock and one `pwrite`.
//!
//! Everything that does not depend on log order — validation, encoded
//! lengths, finding the queues — is done before the lock. Under it the
//! records get their log and queue offsets, are encoded into the writer's
//! buffer and written at once; each queue touched gets its consume-queue
//! entries in one write, and group commit hears of the batch once. A
//! transaction's commit (its real message and its op record, in two
//! topics) is one such batch, so it costs one write and one durable wait,
//! and a crash keeps both records or neither of a batch's tail.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use crate::consume_queue::QueueEntry;
use crate::error::{BrokerError, Result};
use crate::group_commit::PendingVisibility;
use crate::key_index::key_hash;
use crate::metrics::{APPENDED_BYTES, APPENDED_MESSAGES};
use crate::queues::QueueState;
use crate::record::{self, Message, Placement};
use crate::types::SendResult;

/// The records of one batch that go to one queue.
struct QueueRun {
    queue: Arc<QueueState>,
    /// The queue offset of the run's first record (read under the lock).
    first_offset: u64,
    entries: Vec<QueueEntry>,
}

impl Store {
    /// Appends a batch (all of one topic, any topic, system ones too) to
    /// one queue. Returns the results and the log offset the batch ends at
    /// (what a durable acknowledgement must cover: see
    /// [`Store::wait_durable`]).
    pub(crate) fn append(
        &self,
        queue_id: u32,
        messages: Vec<Message>,
    ) -> Result<(Vec<SendResult>, u64)> {
        one_topic(&messages)?;
        self.append_many(messages.into_iter().map(|m| (queue_id, m)).collect())
    }

    /// A record's encoded length, refused when the message cannot be
    /// encoded or is over `max_message_size`.
    pub(super) fn record_len(&self, message: &Message) -> Result<usize> {
        let len =
            record::encoded_len(message).map_err(|e| BrokerError::InvalidMessage(e.to_string()))?;
        if len > self.config.max_message_size {
            return Err(BrokerError::MessageTooLarge {
                size: len,
                max: self.config.max_message_size,
            });
        }
        Ok(len)
    }

    /// Appends `(queue id, message)` records of any topics and queues in
    /// one write, in the order given: queue offsets are assigned per queue
    /// in that order. Returns a result per record, in input order, and the
    /// log offset the batch ends at.
    pub(crate) fn append_many(
        &self,
        mut batch: Vec<(u32, Message)>,
    ) -> Result<(Vec<SendResult>, u64)> {
        if self.closing.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        self.failure.check()?;
        self.disk.check()?;
        if batch.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a send needs at least one message".into(),
            ));
        }
        let now = self.clock.now_ms();
        let mut runs: Vec<QueueRun> = Vec::new();
        let mut run_of = Vec::with_capacity(batch.len());
        let mut lens = Vec::with_capacity(batch.len());
        for (queue_id, message) in &mut batch {
            let known = run_of
                .last()
                .copied()
                .filter(|&r: &usize| is_queue(&runs[r].queue, &message.topic, *queue_id))
                .or_else(|| {
                    runs.iter()
                        .position(|r| is_queue(&r.queue, &message.topic, *queue_id))
                });
            let run = match known {
                Some(run) => run,
                None => {
                    self.ensure_topic(&message.topic)?;
                    runs.push(QueueRun {
                        queue: self.queue(&message.topic, *queue_id)?,
                        first_offset: 0,
                        entries: Vec::new(),
                    });
                    runs.len() - 1
                }
            };
            run_of.push(run);
            let len = self.record_len(message)?;
            if message.born_timestamp_ms == 0 {
                message.born_timestamp_ms = now;
            }
            lens.push(len);
        }

        // Key hashes need no log order: computed before the lock.
        let key_hashes: Vec<Option<u64>> = batch
            .iter()
            .map(|(_, m)| (!m.key.is_empty()).then(|| key_hash(&m.key)))
            .collect();

        let mut writer = self.append.lock();
        // Taken under the lock so store timestamps follow log order.
        let store_timestamp_ms = self.clock.store_timestamp_ms();
        for run in &mut runs {
            run.first_offset = run.queue.consume_queue_len();
        }
        // (log offset, queue offset) of every record, in input order.
        let mut placed = Vec::with_capacity(batch.len());
        let mut keyed = Vec::new();
        let mut total_bytes = 0u64;
        let written = (|| -> Result<()> {
            for ((((queue_id, message), &len), &run), key) in
                batch.iter().zip(&lens).zip(&run_of).zip(&key_hashes)
            {
                let run = &mut runs[run];
                let offset = writer.position_for(&self.log, len)?;
                let queue_offset = run.first_offset + run.entries.len() as u64;
                let placement = Placement {
                    queue_id: *queue_id,
                    queue_offset,
                    commit_log_offset: offset,
                    store_timestamp_ms,
                };
                record::encode_into(message, placement, len, writer.buffer());
                writer.advance(len);
                total_bytes += len as u64;
                run.entries.push(QueueEntry {
                    commit_log_offset: offset,
                    size: len as u32,
                    tag_hash: (self.tag_code)(message),
                });
                if let Some(hash) = key {
                    keyed.push((*hash, offset));
                }
                placed.push((offset, queue_offset));
            }
            writer.write_buffer(&self.log)?;
            for run in &runs {
                run.queue.consume_queue().append_entries(&run.entries)?;
            }
            if !keyed.is_empty() {
                self.key_index.add(&keyed)?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            // The log and its queues may now disagree; only recovery can
            // tell what reached the disk. Refuse further writes until then.
            writer.discard_buffer();
            self.failure.fail(&e.to_string());
            return Err(e);
        }
        let end = writer.next_offset();
        let dirty = end - self.log.flushed();
        let publish_now = self.group_commit.appended(
            runs.iter()
                .map(|run| PendingVisibility {
                    end,
                    queue: Arc::clone(&run.queue),
                    visible_len: run.first_offset + run.entries.len() as u64,
                })
                .collect(),
            dirty,
        );
        drop(writer);
        // Async mode: visible at once. Lengths only grow, so publishing
        // after the lock cannot lower one another append published.
        for pending in publish_now {
            pending.queue.publish_visible(pending.visible_len);
        }
        let results = batch
            .iter()
            .zip(placed)
            .map(|((queue_id, message), (offset, queue_offset))| SendResult {
                msg_id: msg_id(offset),
                topic: message.topic.clone(),
                queue_id: *queue_id,
                queue_offset,
                commit_log_offset: offset,
            })
            .collect();
        metrics::counter!(APPENDED_MESSAGES).increment(batch.len() as u64);
        metrics::counter!(APPENDED_BYTES).increment(total_bytes);
        Ok((results, end))
    }
}

/// A message id: its log offset in 16 upper-case hex digits (as
/// `format!("{offset:016X}")`, without the formatting machinery).
fn msg_id(offset: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut id = String::with_capacity(16);
    for shift in (0..16).rev() {
        id.push(HEX[(offset >> (shift * 4)) as usize & 0xF] as char);
    }
    id
}

fn is_queue(queue: &QueueState, topic: &str, queue_id: u32) -> bool {
    queue.queue_id() == queue_id && queue.topic() == topic
}

/// Refuses a batch whose messages are not all of one topic.
pub(super) fn one_topic(messages: &[Message]) -> Result<()> {
    if let Some(first) = messages.first()
        && messages.iter().any(|m| m.topic != first.topic)
    {
        return Err(BrokerError::InvalidArgument(
            "every message of a batch must have the same topic".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_log_offsets_in_sixteen_hex_digits() {
        for offset in [0, 1, 0xABCDEF, u64::MAX, 1 << 40] {
            assert_eq!(super::msg_id(offset), format!("{offset:016X}"));
        }
    }
}
