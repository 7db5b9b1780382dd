//! Transactional messages: half messages, commit/rollback, and check-back.
//!
//! A producer that must do something else atomically with a send (the
//! seckill service: a Redis stock decrement) first sends a *half message*.
//! It is stored in [`HALF_TOPIC`], where no consumer looks, with its real
//! topic and queue in properties. The producer then commits or rolls back:
//!
//! - **commit** appends the real message (tagged with its half offset) and
//!   an op record to [`HALF_OP_TOPIC`], both in one write;
//! - **rollback** appends only the op record.
//!
//! Halves can be sent, and transactions ended, in batches: a batch is one
//! append and one durable wait whatever its size (`ending.rs`). The real
//! message is kept in memory from the send, so a commit does not read its
//! half back; only halves recovered at startup are read from the log.
//!
//! If the producer never says, the check-back task asks the producer
//! group's [`TransactionChecker`] once the half is older than the
//! transaction timeout (6 s), again every check interval (30 s), and rolls
//! back after 15 unknown answers — RocketMQ's numbers. Open halves are
//! kept in order of their next check, and due ones are asked up to
//! [`MAX_CONCURRENT_CHECKS`] at a time: when the producers' dependency is
//! down, every purchase leaves a half open and every checker takes its
//! full timeout, and a send must not pay for the pile, nor the last half
//! wait for all before it.
//!
//! A commit is decided the moment its real message is appended. If the op
//! record (when it could not share the write) or the wait for durability
//! fails after that, the open entry
//! remembers where the real message went ([`Step::RealAppended`]); the
//! next attempt, by the producer or the check-back, writes only the missing
//! op record and never appends the real message again.
//!
//! At startup the pending set is rebuilt by scanning the log from the
//! oldest half not yet resolved (a persisted watermark): a half is resolved
//! by its op record *or* by a real message carrying its offset, so a crash
//! between applying a commit and writing its op can never commit it twice.
//! The scan covers at most the life of the oldest open transaction, which
//! the 15-check limit bounds (about 8 minutes at the defaults).
//!
//! [`Transactions`] holds the open set and the checkers; the store is an
//! argument of every call, never a field, so the feature is the storage
//! core plus this state. Retention asks it ([`RetentionHold`]) for the
//! oldest open half, whose record must stay readable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::error::{BrokerError, Result};
use crate::fs_util::write_atomically;
use crate::metrics::{HALF_PENDING, TRANSACTION_CHECKS};
use crate::record::{Message, StoredMessage};
use crate::retention::RetentionHold;
use crate::store::Store;
use crate::system_topics::{HALF_OP_TOPIC, HALF_TOPIC, check_user_message, property, restore_real};
use crate::types::{HalfMessage, HalfSendResult, SendResult, TransactionChecker, TransactionState};

mod check_back;
mod ending;

/// How long a checker may take before its answer counts as unknown.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many check-backs may be waiting for their checkers at once. When a
/// dependency of the producers is down, every purchase leaves a half open
/// and every checker takes its full timeout: asked one after another, the
/// last of N would wait N timeouts.
const MAX_CONCURRENT_CHECKS: usize = 16;

/// How often the watermark may be persisted while checks keep running.
const WATERMARK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Pending {
    producer_group: String,
    checks: u32,
    next_check_ms: i64,
    /// How far its resolution got.
    step: Step,
    /// A resolution (by the producer or the check-back) is under way; no
    /// other may start until it ends.
    resolving: bool,
    /// The check-back is asking its checker.
    checking: bool,
    /// The real message and its queue, kept from the send so a commit
    /// need not read the half back; `None` for halves found at startup.
    real: Option<RealMessage>,
}

/// A half's real message (without its `HALF_OFFSET`) and its queue.
type RealMessage = Arc<(u32, Message)>;

/// The open transactions, by half offset and by due time.
///
/// A half waits in `due` unless it is being checked or resolved; whoever
/// took it out puts it back with its next check time. Sends, resolutions
/// and finding the due checks are all logarithmic in the open halves, so
/// a pile of open transactions does not slow each new one down.
#[derive(Debug, Default)]
struct OpenSet {
    by_half: BTreeMap<u64, Pending>,
    /// `(next_check_ms, half_offset)` of the halves waiting for a check.
    due: BTreeSet<(i64, u64)>,
    /// Halves whose commit is applied ([`Step::RealAppended`]) but not yet
    /// finished by its op record: no longer open to the producer.
    committed: usize,
}

impl OpenSet {
    /// Adds an open half; true if it is now the first check due.
    fn insert(&mut self, half_offset: u64, pending: Pending) -> bool {
        let key = (pending.next_check_ms, half_offset);
        if let Some(old) = self.by_half.insert(half_offset, pending) {
            self.forget(half_offset, &old);
        }
        self.due.insert(key);
        metrics::gauge!(HALF_PENDING).set(self.by_half.len() as f64);
        self.due.first() == Some(&key)
    }

    fn remove(&mut self, half_offset: u64) {
        if let Some(old) = self.by_half.remove(&half_offset) {
            self.forget(half_offset, &old);
        }
        metrics::gauge!(HALF_PENDING).set(self.by_half.len() as f64);
    }

    /// Drops what the other indexes know of a half that left `by_half`.
    fn forget(&mut self, half_offset: u64, old: &Pending) {
        self.due.remove(&(old.next_check_ms, half_offset));
        if matches!(old.step, Step::RealAppended(_)) {
            self.committed -= 1;
        }
    }

    /// Records that the commit of `half_offset` appended its real message.
    fn mark_committed(&mut self, half_offset: u64, result: SendResult) {
        if let Some(pending) = self.by_half.get_mut(&half_offset) {
            if matches!(pending.step, Step::Open) {
                self.committed += 1;
            }
            pending.step = Step::RealAppended(result);
        }
    }

    /// Halves neither committed nor rolled back.
    fn open_count(&self) -> usize {
        self.by_half.len() - self.committed
    }

    /// Puts a half that was being checked or resolved back in line, unless
    /// the other of the two still holds it.
    fn requeue(&mut self, half_offset: u64) {
        if let Some(pending) = self.by_half.get(&half_offset)
            && !pending.resolving
            && !pending.checking
        {
            self.due.insert((pending.next_check_ms, half_offset));
        }
    }

    /// When the first waiting check is due.
    fn next_due(&self) -> Option<i64> {
        self.due.first().map(|&(at, _)| at)
    }

    /// Takes out the first check due by `now`, marking it being checked:
    /// its half offset and producer group.
    fn pop_due(&mut self, now: i64) -> Option<(u64, String)> {
        let &(at, half_offset) = self.due.first()?;
        if at > now {
            return None;
        }
        self.due.pop_first();
        let pending = self
            .by_half
            .get_mut(&half_offset)
            .expect("a due half is open");
        pending.checking = true;
        Some((half_offset, pending.producer_group.clone()))
    }
}

/// How far the resolution of an open transaction got.
#[derive(Debug, Clone)]
enum Step {
    /// Neither committed nor rolled back.
    Open,
    /// Committed: the real message is in the log (here), its op record or
    /// its durability is missing. Only the op record may still be written.
    RealAppended(SendResult),
}

/// Open transactions and the registered checkers.
#[derive(Debug)]
pub(crate) struct Transactions {
    watermark_path: PathBuf,
    open: Mutex<OpenSet>,
    checkers: RwLock<HashMap<String, Arc<dyn TransactionChecker>>>,
    wake: Notify,
    /// A failure to inject once into the next commit, after its real
    /// message is appended (tests of the resolution steps).
    #[cfg(test)]
    fail_after_append: Mutex<Option<(FailPoint, BrokerError)>>,
}

/// Where a test makes a commit fail after its real message is in the log.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailPoint {
    /// The op record's append fails.
    OpRecord,
    /// The wait for durability fails (the op record is appended).
    DurableWait,
}

impl Transactions {
    pub(crate) fn new(watermark_path: PathBuf) -> Self {
        Transactions {
            watermark_path,
            open: Mutex::new(OpenSet::default()),
            checkers: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            #[cfg(test)]
            fail_after_append: Mutex::new(None),
        }
    }

    /// The persisted watermark: every half below it is resolved.
    fn read_watermark(&self) -> u64 {
        std::fs::read(&self.watermark_path)
            .ok()
            .and_then(|b| {
                b.get(..8)
                    .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            })
            .unwrap_or(0)
    }

    fn write_watermark(&self, watermark: u64) -> Result<()> {
        write_atomically(&self.watermark_path, &watermark.to_le_bytes())
    }

    fn insert(&self, half_offset: u64, pending: Pending) {
        // Wake the check-back task only if this check comes before every
        // one it is already sleeping towards (rarely: new halves are due
        // last), not once per transaction.
        let earliest = self.open.lock().insert(half_offset, pending);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// The lowest half offset still open.
    pub(crate) fn oldest_open(&self) -> Option<u64> {
        self.open.lock().by_half.keys().next().copied()
    }

    /// Half messages neither committed nor rolled back (a commit counts
    /// from the moment its real message is appended).
    pub(crate) fn pending_count(&self) -> usize {
        self.open.lock().open_count()
    }

    /// Registers the checker asked about `producer_group`'s open
    /// transactions (replacing any earlier one).
    pub(crate) fn register_checker(
        &self,
        producer_group: &str,
        checker: Arc<dyn TransactionChecker>,
    ) {
        self.checkers
            .write()
            .insert(producer_group.to_owned(), checker);
    }

    /// Rebuilds the open transactions from the log (see the module doc).
    pub(crate) fn restore_from(&self, store: &Store) -> Result<()> {
        if store.topic(HALF_TOPIC).is_none() {
            return Ok(());
        }
        let halves = store.queue(HALF_TOPIC, 0)?;
        let watermark = self.read_watermark().max(halves.consume_queue_min());
        if watermark >= halves.consume_queue_len() {
            return Ok(());
        }
        let from = halves.entry(watermark)?.commit_log_offset;
        let mut open: BTreeMap<u64, Pending> = BTreeMap::new();
        let timeout = store.config().transaction_timeout.as_millis() as i64;
        store.log().for_each_record(from, |record| {
            let message = &record.message;
            if message.topic == HALF_TOPIC {
                let producer_group = message
                    .properties
                    .get(property::PRODUCER_GROUP)
                    .cloned()
                    .unwrap_or_default();
                open.insert(
                    record.queue_offset,
                    Pending {
                        producer_group,
                        checks: 0,
                        next_check_ms: record.store_timestamp_ms + timeout,
                        step: Step::Open,
                        resolving: false,
                        checking: false,
                        real: None,
                    },
                );
            } else if let Some(half) = resolved_half(&record) {
                open.remove(&half);
            }
            Ok(())
        })?;
        for (offset, pending) in open {
            self.insert(offset, pending);
        }
        Ok(())
    }

    /// Stores `message` as a half message of `producer_group` (see
    /// [`crate::Broker::send_half`]).
    pub(crate) async fn send_half(
        &self,
        store: &Store,
        producer_group: &str,
        queue_id: u32,
        message: Message,
    ) -> Result<HalfSendResult> {
        let mut results = self
            .send_half_batch(store, producer_group, vec![(queue_id, message)])
            .await?;
        Ok(results.pop().expect("one result"))
    }

    /// Stores every `(queue id, message)` as a half message of
    /// `producer_group` with one append and one durable wait (see
    /// [`crate::Broker::send_half_batch`]). One invalid message refuses
    /// the batch before anything is written.
    pub(crate) async fn send_half_batch(
        &self,
        store: &Store,
        producer_group: &str,
        messages: Vec<(u32, Message)>,
    ) -> Result<Vec<HalfSendResult>> {
        if producer_group.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "producer group must not be empty".into(),
            ));
        }
        if messages.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a batch of half messages needs at least one".into(),
            ));
        }
        let now = store.clock().now_ms();
        let mut halves = Vec::with_capacity(messages.len());
        let mut reals = Vec::with_capacity(messages.len());
        for (queue_id, mut message) in messages {
            if message.properties.contains_key(property::DELAY_LEVEL)
                || message.properties.contains_key(property::DELIVER_AT_MS)
            {
                return Err(BrokerError::InvalidArgument(
                    "a transactional message cannot also be delayed".into(),
                ));
            }
            check_user_message(&message)?;
            store.ensure_topic(&message.topic)?;
            store.queue(&message.topic, queue_id)?;
            if message.born_timestamp_ms == 0 {
                // Set here so the copy kept for the commit is what the log
                // holds.
                message.born_timestamp_ms = now;
            }
            let mut half = message.clone();
            reals.push(Arc::new((queue_id, message)));
            let real_topic = std::mem::replace(&mut half.topic, HALF_TOPIC.to_owned());
            half.properties
                .insert(property::REAL_TOPIC.into(), real_topic);
            half.properties
                .insert(property::REAL_QUEUE.into(), queue_id.to_string());
            half.properties
                .insert(property::PRODUCER_GROUP.into(), producer_group.to_owned());
            halves.push(half);
        }
        let (results, end) = store.append(0, halves)?;
        let next_check_ms = now + store.config().transaction_timeout.as_millis() as i64;
        let earliest = {
            let mut open = self.open.lock();
            let mut earliest = false;
            for (result, real) in results.iter().zip(reals) {
                earliest |= open.insert(
                    result.queue_offset,
                    Pending {
                        producer_group: producer_group.to_owned(),
                        checks: 0,
                        next_check_ms,
                        step: Step::Open,
                        resolving: false,
                        checking: false,
                        real: Some(real),
                    },
                );
            }
            earliest
        };
        if earliest {
            self.wake.notify_one();
        }
        store.wait_durable(end).await?;
        Ok(results
            .into_iter()
            .map(|result| HalfSendResult {
                half_offset: result.queue_offset,
                msg_id: result.msg_id,
            })
            .collect())
    }
}

/// The half message at `half_offset`, as a checker sees it.
fn half_message(store: &Store, half_offset: u64) -> Result<HalfMessage> {
    let stored = store.read(HALF_TOPIC, 0, half_offset)?;
    let producer_group = stored
        .message
        .properties
        .get(property::PRODUCER_GROUP)
        .cloned()
        .unwrap_or_default();
    let (mut message, queue_id) = restore_real(stored.message)?;
    message.properties.remove(property::PRODUCER_GROUP);
    Ok(HalfMessage {
        half_offset,
        producer_group,
        queue_id,
        message,
        stored_at_ms: stored.store_timestamp_ms,
    })
}

/// The half offset a record resolves: an op record's body, or a committed
/// real message's `HALF_OFFSET` property.
fn resolved_half(record: &StoredMessage) -> Option<u64> {
    let message = &record.message;
    if message.topic == HALF_OP_TOPIC {
        std::str::from_utf8(&message.body).ok()?.parse().ok()
    } else {
        message.properties.get(property::HALF_OFFSET)?.parse().ok()
    }
}

impl RetentionHold for Transactions {
    /// The record of the oldest open half message: it must still be
    /// readable when its check-back or its commit comes.
    fn oldest_needed(&self, store: &Store) -> Result<Option<u64>> {
        match self.oldest_open() {
            Some(offset) => Ok(Some(
                store.queue(HALF_TOPIC, 0)?.entry(offset)?.commit_log_offset,
            )),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
