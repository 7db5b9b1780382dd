//! Delayed messages: RocketMQ's 18 delay levels and arbitrary delays in
//! milliseconds, with one queue for all of them.
//!
//! A message with a delay is rewritten on the way in: its real topic and
//! queue go into properties, and it is appended to [`DELAY_TOPIC`] queue 0.
//! Its consume-queue entry stores the due time where other topics store a
//! tag hash (as RocketMQ's schedule topic does), so the scheduler rebuilds
//! its index at startup from 20-byte entries alone, without reading bodies.
//!
//! The index is an ordered set of `(due time, delay-queue offset)` in
//! memory; one task sleeps until the earliest due time and moves every due
//! message to its real topic, in due order. A delay of days costs one set
//! entry, not one queue per second of delay (RocketMQ's levels) nor a timer
//! wheel slot per tick.
//!
//! Delivery progress is an append-only file of delivered delay-queue
//! offsets behind a watermark (every offset below it is delivered). It is
//! fsynced only after the delivered messages themselves are durable, so a
//! crash can deliver a message twice (consumers are idempotent) but never
//! lose one. The file is compacted when the watermark leaves most of it
//! behind.
//!
//! The scheduler owns the delay topic's encoding: [`consume_queue_tag`]
//! is what the storage core stores in a consume-queue entry's tag field,
//! and [`DelayScheduler::append`] is the one way into the store that
//! routes delayed messages here. Retention asks it
//! ([`RetentionHold`]) for the oldest record a pending delay still needs.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, write_atomically};
use crate::metrics::DELAYED_PENDING;
use crate::record::{Message, tag_hash};
use crate::retention::RetentionHold;
use crate::store::Store;
use crate::system_topics::{DELAY_TOPIC, property, restore_real};
use crate::types::SendResult;

/// How long delivery waits before retrying while the disk is too full.
const DISK_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a delayed message that could not be read or appended waits
/// before the next try (it stays pending meanwhile).
const UNDELIVERABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// RocketMQ's delay levels, 1-based: `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m
/// 8m 9m 10m 20m 30m 1h 2h`.
pub const DELAY_LEVELS_MS: [i64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// The delay of `level` (1..=18) in milliseconds.
pub fn delay_level_ms(level: u32) -> Option<i64> {
    level
        .checked_sub(1)
        .and_then(|i| DELAY_LEVELS_MS.get(i as usize))
        .copied()
}

/// Whether `message` asks for a delay (valid or not: [`due_time`] says).
pub(crate) fn asks_for_delay(message: &Message) -> bool {
    message.properties.contains_key(property::DELIVER_AT_MS)
        || message.properties.contains_key(property::DELAY_LEVEL)
}

/// When `message` is due, if it asks for a delay: `DELIVER_AT_MS` wins over
/// `DELAY` (a level). Errors on unparsable or out-of-range values.
pub(crate) fn due_time(message: &Message, now_ms: i64) -> Result<Option<i64>> {
    let invalid = |what: String| Err(BrokerError::InvalidMessage(what));
    if let Some(at) = message.properties.get(property::DELIVER_AT_MS) {
        return match at.parse::<i64>() {
            Ok(at) if at >= 0 => Ok(Some(at)),
            _ => invalid(format!(
                "{} must be a time in ms since the epoch, not {at:?}",
                property::DELIVER_AT_MS
            )),
        };
    }
    if let Some(level) = message.properties.get(property::DELAY_LEVEL) {
        return match level.parse::<u32>().ok().and_then(delay_level_ms) {
            Some(ms) => Ok(Some(now_ms + ms)),
            None => invalid(format!(
                "{} must be a level from 1 to 18, not {level:?}",
                property::DELAY_LEVEL
            )),
        };
    }
    Ok(None)
}

/// Rewrites a delayed message for the delay topic.
pub(crate) fn to_delay_topic(mut message: Message, queue_id: u32, due_ms: i64) -> Message {
    let real_topic = std::mem::replace(&mut message.topic, DELAY_TOPIC.to_owned());
    let props = &mut message.properties;
    props.remove(property::DELAY_LEVEL);
    props.insert(property::DELIVER_AT_MS.into(), due_ms.to_string());
    props.insert(property::REAL_TOPIC.into(), real_topic);
    props.insert(property::REAL_QUEUE.into(), queue_id.to_string());
    message
}

/// What a consume-queue entry stores in its tag-hash field: the tag hash,
/// or for the delay topic the due time (RocketMQ's schedule topic does the
/// same), so the delay index is rebuilt from consume-queue entries alone.
pub(crate) fn consume_queue_tag(message: &Message) -> u64 {
    if message.topic == DELAY_TOPIC {
        message
            .properties
            .get(property::DELIVER_AT_MS)
            .and_then(|at| at.parse::<u64>().ok())
            .unwrap_or(0)
    } else {
        tag_hash(&message.tags)
    }
}

/// The index, in memory. Producers' delayed sends take this lock, so no
/// file work ever happens under it.
#[derive(Debug)]
struct State {
    pending: BTreeSet<(i64, u64)>,
    /// Every delay-queue offset below this one is delivered.
    watermark: u64,
    /// Delivered offsets at or above the watermark.
    delivered: BTreeSet<u64>,
}

/// The progress file; only the delivery task writes it.
#[derive(Debug)]
struct ProgressFile {
    file: File,
    /// Entries in the file (for compaction).
    entries: u64,
}

/// The delay index and its progress file.
#[derive(Debug)]
pub(crate) struct DelayScheduler {
    path: PathBuf,
    state: Mutex<State>,
    progress: Mutex<ProgressFile>,
    wake: Notify,
}

impl DelayScheduler {
    /// Opens the progress file (`<watermark u64><delivered offset u64>*`).
    pub(crate) fn open(path: PathBuf) -> Result<Self> {
        let io = |e| BrokerError::io(format!("open {}", path.display()), e);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    create_dir_durable(dir)?;
                }
                write_atomically(&path, &0u64.to_le_bytes())?;
                0u64.to_le_bytes().to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        // A torn final append leaves a partial word: ignored (that delivery
        // may repeat).
        let watermark = words.next().unwrap_or(0);
        let delivered: BTreeSet<u64> = words.filter(|&o| o >= watermark).collect();
        let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        Ok(DelayScheduler {
            progress: Mutex::new(ProgressFile {
                file,
                entries: delivered.len() as u64,
            }),
            state: Mutex::new(State {
                pending: BTreeSet::new(),
                watermark,
                delivered,
            }),
            path,
            wake: Notify::new(),
        })
    }

    /// Delay-queue offsets from here on may still be pending.
    pub(crate) fn watermark(&self) -> u64 {
        self.state.lock().watermark
    }

    /// The broker's own append (retries, re-drives, producers' sends):
    /// messages asking for a delay go to the delay topic and into the
    /// index, the rest straight to `queue_id` of their topic. A batch is
    /// all delayed or all immediate.
    pub(crate) fn append(
        &self,
        store: &Store,
        queue_id: u32,
        mut messages: Vec<Message>,
    ) -> Result<(Vec<SendResult>, u64)> {
        let now = store.clock().now_ms();
        let mut due = Vec::with_capacity(messages.len());
        for message in &messages {
            due.push(due_time(message, now)?);
        }
        if due.iter().all(Option::is_none) {
            return store.append(queue_id, messages);
        }
        if due.iter().any(Option::is_none) {
            return Err(BrokerError::InvalidArgument(
                "a batch cannot mix delayed and immediate messages".into(),
            ));
        }
        // Validate the real destination now, not when the delay expires.
        let topic = messages[0].topic.clone();
        store.ensure_topic(&topic)?;
        store.queue(&topic, queue_id)?;
        let due: Vec<i64> = due.into_iter().map(|d| d.expect("all delayed")).collect();
        messages = messages
            .into_iter()
            .zip(&due)
            .map(|(m, &due)| to_delay_topic(m, queue_id, due))
            .collect();
        let (results, end) = store.append(0, messages)?;
        for (result, &due_ms) in results.iter().zip(&due) {
            self.schedule(result.queue_offset, due_ms);
        }
        Ok((results, end))
    }

    /// Loads the index from the delay topic's consume queue, whose entries
    /// carry due times.
    pub(crate) fn restore_from(&self, store: &Store) -> Result<()> {
        if store.topic(DELAY_TOPIC).is_none() {
            return Ok(());
        }
        let queue = store.queue(DELAY_TOPIC, 0)?;
        let mut offset = self.watermark().max(queue.consume_queue_min());
        let end = queue.consume_queue_len();
        while offset < end {
            let entries = queue.consume_queue().read(offset, 4096)?;
            for (i, entry) in entries.iter().enumerate() {
                self.restore(offset + i as u64, entry.tag_hash as i64);
            }
            offset += entries.len() as u64;
        }
        Ok(())
    }

    /// Adds a delay-queue entry found at startup, unless already delivered.
    fn restore(&self, offset: u64, due_ms: i64) {
        let mut state = self.state.lock();
        if offset >= state.watermark && !state.delivered.contains(&offset) {
            state.pending.insert((due_ms, offset));
        }
        metrics::gauge!(DELAYED_PENDING).set(state.pending.len() as f64);
    }

    /// Schedules a message just appended to the delay queue.
    fn schedule(&self, offset: u64, due_ms: i64) {
        let mut state = self.state.lock();
        let earliest = state.pending.first().is_none_or(|&(due, _)| due_ms < due);
        state.pending.insert((due_ms, offset));
        metrics::gauge!(DELAYED_PENDING).set(state.pending.len() as f64);
        drop(state);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// The lowest delay-queue offset still pending.
    pub(crate) fn oldest_pending_offset(&self) -> Option<u64> {
        self.state
            .lock()
            .pending
            .iter()
            .map(|&(_, offset)| offset)
            .min()
    }

    /// Messages waiting for their time.
    pub(crate) fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }

    fn next_due(&self) -> Option<i64> {
        self.state.lock().pending.first().map(|&(due, _)| due)
    }

    fn take_due(&self, now_ms: i64) -> Vec<(i64, u64)> {
        let mut state = self.state.lock();
        let later = state.pending.split_off(&(now_ms + 1, 0));
        let due = std::mem::replace(&mut state.pending, later);
        metrics::gauge!(DELAYED_PENDING).set(state.pending.len() as f64);
        due.into_iter().collect()
    }

    /// Returns taken entries that could not be delivered.
    fn put_back(&self, entries: &[(i64, u64)]) {
        let mut state = self.state.lock();
        state.pending.extend(entries.iter().copied());
        metrics::gauge!(DELAYED_PENDING).set(state.pending.len() as f64);
    }

    /// Records deliveries (after the delivered messages are durable).
    /// Blocking: an append and an fdatasync of the progress file, and now
    /// and then its compaction. The index is updated first, under its lock;
    /// the file work happens after the lock is released, so a producer's
    /// delayed send never waits for this disk.
    fn mark_delivered(&self, offsets: &[u64]) -> Result<()> {
        let mut progress = self.progress.lock();
        let mut bytes = Vec::with_capacity(offsets.len() * 8);
        let compaction = {
            let mut state = self.state.lock();
            for &offset in offsets {
                state.delivered.insert(offset);
                bytes.extend_from_slice(&offset.to_le_bytes());
            }
            let state = &mut *state;
            while state.delivered.remove(&state.watermark) {
                state.watermark += 1;
            }
            // Compact once the watermark left most of the file behind.
            let entries = progress.entries + offsets.len() as u64;
            let compact = entries > 4 * (state.delivered.len() as u64 + 1024);
            compact.then(|| {
                let mut content = state.watermark.to_le_bytes().to_vec();
                for offset in &state.delivered {
                    content.extend_from_slice(&offset.to_le_bytes());
                }
                (content, state.delivered.len() as u64)
            })
        };
        let io = |e| BrokerError::io("record delay progress", e);
        progress.file.write_all(&bytes).map_err(io)?;
        progress.file.sync_data().map_err(io)?;
        progress.entries += offsets.len() as u64;
        if let Some((content, entries)) = compaction {
            write_atomically(&self.path, &content)?;
            progress.file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(io)?;
            progress.entries = entries;
        }
        Ok(())
    }

    /// The scheduler task: sleeps until the earliest due time, then moves
    /// every due message to its real topic.
    pub(crate) async fn run(self: Arc<Self>, store: Arc<Store>, mut stop: watch::Receiver<bool>) {
        loop {
            let wake_at = self.next_due().map(|due| store.clock().instant_at(due));
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => continue,
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match Arc::clone(&self).deliver_due(&store).await {
                Ok(()) => {}
                Err(e @ BrokerError::DiskFull { .. }) => {
                    // Due messages went back to the index; try again soon.
                    tracing::warn!(error = %e, "delayed messages wait for disk space");
                    tokio::time::sleep(DISK_FULL_RETRY).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "delivering delayed messages failed");
                    if matches!(e, BrokerError::ShuttingDown | BrokerError::StorageFailed(_)) {
                        return;
                    }
                }
            }
        }
    }

    /// Moves every due message to its real topic, in due order, then records
    /// the progress once those messages are durable.
    ///
    /// A message is marked delivered only once its copy is in its real
    /// topic, or when it can never be (a malformed record). One that cannot
    /// be read or appended now — a damaged record, a refusal such as a
    /// message over today's size limit — stays pending and is tried again
    /// after [`UNDELIVERABLE_RETRY`], logged each time; retention keeps it.
    /// Storage failures and a full disk put the rest of the batch back.
    async fn deliver_due(self: Arc<Self>, store: &Store) -> Result<()> {
        let now_ms = store.clock().now_ms();
        let due = self.take_due(now_ms);
        if due.is_empty() {
            return Ok(());
        }
        let queue = match store.queue(DELAY_TOPIC, 0) {
            Ok(queue) => queue,
            Err(e) => {
                self.put_back(&due);
                return Err(e);
            }
        };
        let retry_at = now_ms.saturating_add(UNDELIVERABLE_RETRY.as_millis() as i64);
        let mut delivered = Vec::with_capacity(due.len());
        let mut retry_later = Vec::new();
        let mut end = 0;
        let mut stopped = None;
        for (i, &(due_ms, offset)) in due.iter().enumerate() {
            let stored = match queue.read_message(store.log(), offset) {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(offset, due_ms, error = %e, "a delayed message cannot be read; it stays pending and is tried again");
                    retry_later.push((retry_at, offset));
                    continue;
                }
            };
            match restore_real(stored.message) {
                Ok((message, queue_id)) => match store.append(queue_id, vec![message]) {
                    Ok((_, batch_end)) => {
                        end = end.max(batch_end);
                        delivered.push(offset);
                    }
                    Err(
                        e @ (BrokerError::ShuttingDown
                        | BrokerError::StorageFailed(_)
                        | BrokerError::DiskFull { .. }),
                    ) => {
                        // Not delivered: back into the index, this one and
                        // the rest (and, after a stop, found again at the
                        // next start).
                        self.put_back(&due[i..]);
                        stopped = Some(e);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(offset, due_ms, error = %e, "a delayed message cannot be delivered; it stays in the delay topic and is tried again");
                        retry_later.push((retry_at, offset));
                    }
                },
                Err(e) => {
                    // It can never be delivered: skipped for good.
                    tracing::error!(offset, error = %e, "a malformed message in the delay topic is skipped");
                    delivered.push(offset);
                }
            }
        }
        self.put_back(&retry_later);
        if !delivered.is_empty() {
            store.wait_durable(end).await?;
            // The progress fsync is blocking: on the blocking pool, not on
            // a runtime worker.
            let scheduler = Arc::clone(&self);
            tokio::task::spawn_blocking(move || scheduler.mark_delivered(&delivered))
                .await
                .map_err(|e| {
                    BrokerError::StorageFailed(format!("delay progress task failed: {e}"))
                })??;
        }
        stopped.map_or(Ok(()), Err)
    }
}

impl RetentionHold for DelayScheduler {
    /// The record of the oldest pending delay: a four-day delay outlives a
    /// three-day retention of everything around it, but not of itself.
    fn oldest_needed(&self, store: &Store) -> Result<Option<u64>> {
        match self.oldest_pending_offset() {
            Some(offset) => Ok(Some(
                store
                    .queue(DELAY_TOPIC, 0)?
                    .entry(offset)?
                    .commit_log_offset,
            )),
            None => Ok(None),
        }
    }
}
