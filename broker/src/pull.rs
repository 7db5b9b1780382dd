//! The consumer's read path: a pull over the storage core, with tag
//! filtering and long polling.
//!
//! A pull reads consume-queue entries from the requested offset, skips
//! entries whose records retention removed or whose tag hash cannot match
//! the filter, then reads and CRC-checks the records themselves (and
//! compares real tags, since hashes collide). When the queue has nothing
//! at the offset, the pull waits on the queue's visible length up to its
//! hold, capped by `max_long_poll` (RocketMQ's long polling).

use std::time::Duration;

use crate::error::{BrokerError, Result};
use crate::long_poll::wait_for_arrival;
use crate::metrics::PULLED_MESSAGES;
use crate::queues::QueueState;
use crate::record::StoredMessage;
use crate::store::Store;
use crate::tag_filter::TagFilter;
use crate::types::{PullRequest, PullResult, PullStatus};

/// Serves one pull from `store` (see the module doc).
pub(crate) async fn pull(store: &Store, request: &PullRequest) -> Result<PullResult> {
    if request.max_messages == 0 {
        return Err(BrokerError::InvalidArgument(
            "max_messages must be at least 1".into(),
        ));
    }
    let filter = TagFilter::parse(request.tags.as_deref())?;
    let queue = store.queue(&request.topic, request.queue_id)?;
    let hold = Duration::from_millis(request.hold_ms).min(store.config().max_long_poll);
    let deadline = tokio::time::Instant::now() + hold;
    let mut offset = request.offset;
    // Bounds the entries one pull examines when a tag filter skips many.
    let mut scans_left = 8;
    loop {
        let min_offset = store.first_live_offset(&queue)?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let visible = wait_for_arrival(queue.visible_watch(), offset, remaining).await;
        let answer = |status, messages, next_offset| PullResult {
            status,
            messages,
            next_offset,
            min_offset,
            max_offset: visible,
        };
        if offset < min_offset {
            return Ok(answer(PullStatus::OffsetTooSmall, Vec::new(), min_offset));
        }
        if offset > visible {
            return Ok(answer(PullStatus::OffsetTooBig, Vec::new(), visible));
        }
        if offset == visible {
            return Ok(answer(PullStatus::NoNewMessages, Vec::new(), visible));
        }
        let (messages, next) =
            read_matching(store, &queue, offset, visible, request, filter.as_ref())?;
        if !messages.is_empty() {
            metrics::counter!(PULLED_MESSAGES).increment(messages.len() as u64);
            return Ok(answer(PullStatus::Found, messages, next));
        }
        // Everything up to `next` was filtered out: skip it, scan on
        // while there is more, then keep holding for a match.
        offset = next;
        scans_left -= 1;
        let more = offset < visible && scans_left > 0;
        if !more && tokio::time::Instant::now() >= deadline {
            return Ok(answer(PullStatus::NoNewMessages, Vec::new(), offset));
        }
    }
}

/// Reads messages of `queue` from `offset` (below `visible`) that pass
/// `filter`, within the request's count and byte budget. Returns them
/// and the offset after the last entry examined.
fn read_matching(
    store: &Store,
    queue: &QueueState,
    offset: u64,
    visible: u64,
    request: &PullRequest,
    filter: Option<&TagFilter>,
) -> Result<(Vec<StoredMessage>, u64)> {
    // With a filter, examine more entries than are wanted, but bounded.
    const FILTER_SCAN_LIMIT: u64 = 16 * 1024;
    let wanted = u64::from(request.max_messages);
    let scan = if filter.is_some() {
        FILTER_SCAN_LIMIT.max(wanted)
    } else {
        wanted
    };
    let entries = queue
        .consume_queue()
        .read(offset, scan.min(visible - offset))?;
    let log = store.log();
    let mut messages = Vec::new();
    let mut bytes = 0u64;
    let mut next = offset;
    for entry in entries {
        if messages.len() as u64 == wanted {
            break;
        }
        // Removed by retention, or filtered out by tag hash.
        let expired = entry.commit_log_offset < log.min_offset();
        if expired || filter.is_some_and(|f| !f.may_match(entry.tag_hash)) {
            next += 1;
            continue;
        }
        if !messages.is_empty() && bytes + u64::from(entry.size) > u64::from(request.max_bytes) {
            break;
        }
        let message = log.read(entry.commit_log_offset, entry.size)?;
        next += 1;
        if filter.is_some_and(|f| !f.matches(&message.message.tags)) {
            continue;
        }
        bytes += u64::from(entry.size);
        messages.push(message);
    }
    Ok((messages, next))
}
