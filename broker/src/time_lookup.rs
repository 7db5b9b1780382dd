//! Time lookup and message backtrack: the first offset at or after a
//! timestamp, and resetting a group's committed offsets to it (or to the
//! start or end of each queue) — "replay everything since 14:00".
//!
//! Store timestamps are assigned under the append lock from a monotonic
//! clock, so they are sorted within a queue and a binary search over the
//! consume queue finds the offset in O(log n) header reads (48 bytes each,
//! no bodies). Committing a reset and telling the group is the façade's:
//! this module only reads the store.

use crate::error::Result;
use crate::store::Store;
use crate::types::OffsetReset;

/// The offset of the first message of `topic`/`queue_id` stored at or
/// after `timestamp_ms`; the queue's end if there is none.
pub(crate) fn offset_for_timestamp(
    store: &Store,
    topic: &str,
    queue_id: u32,
    timestamp_ms: i64,
) -> Result<u64> {
    let queue = store.queue(topic, queue_id)?;
    let log = store.log();
    let mut low = queue.consume_queue_min();
    let mut high = queue.consume_queue_len();
    while low < high {
        let middle = low + (high - low) / 2;
        let entry = queue.entry(middle)?;
        // Entries whose records retention removed count as oldest.
        let stored_at = if entry.commit_log_offset < log.min_offset() {
            i64::MIN
        } else {
            log.store_timestamp_at(entry.commit_log_offset)?
        };
        if stored_at < timestamp_ms {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// Where a reset `to` moves an offset owner on `topic`/`queue_id`.
/// Committing it (and telling the group) is the caller's.
pub(crate) fn reset_target(
    store: &Store,
    topic: &str,
    queue_id: u32,
    to: OffsetReset,
) -> Result<u64> {
    let queue = store.queue(topic, queue_id)?;
    match to {
        OffsetReset::Earliest => Ok(queue.consume_queue_min()),
        OffsetReset::Latest => Ok(queue.consume_queue_len()),
        OffsetReset::Timestamp(ms) => offset_for_timestamp(store, topic, queue_id, ms),
    }
}
