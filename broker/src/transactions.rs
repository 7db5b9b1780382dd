//! Transactional messages: half messages, commit/rollback, and check-back.
//!
//! A producer that must do something else atomically with a send (the
//! seckill service: a Redis stock decrement) first sends a *half message*.
//! It is stored in [`HALF_TOPIC`], where no consumer looks, with its real
//! topic and queue in properties. The producer then commits or rolls back:
//!
//! - **commit** appends the real message (tagged with its half offset) and
//!   then an op record to [`HALF_OP_TOPIC`];
//! - **rollback** appends only the op record.
//!
//! If the producer never says, the check-back task asks the producer
//! group's [`TransactionChecker`] once the half is older than the
//! transaction timeout (6 s), again every check interval (30 s), and rolls
//! back after 15 unknown answers — RocketMQ's numbers.
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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};

use crate::error::{BrokerError, Result};
use crate::fs_util::write_atomically;
use crate::metrics::{HALF_PENDING, TRANSACTION_CHECKS};
use crate::record::{Message, StoredMessage};
use crate::retention::RetentionHold;
use crate::store::Store;
use crate::system_topics::{HALF_OP_TOPIC, HALF_TOPIC, check_user_message, property, restore_real};
use crate::types::{HalfMessage, HalfSendResult, SendResult, TransactionChecker, TransactionState};

/// How long a checker may take before its answer counts as unknown.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Pending {
    producer_group: String,
    checks: u32,
    next_check_ms: i64,
}

/// Open transactions and the registered checkers.
#[derive(Debug)]
pub(crate) struct Transactions {
    watermark_path: PathBuf,
    pending: Mutex<BTreeMap<u64, Pending>>,
    checkers: RwLock<HashMap<String, Arc<dyn TransactionChecker>>>,
    wake: Notify,
}

impl Transactions {
    pub(crate) fn new(watermark_path: PathBuf) -> Self {
        Transactions {
            watermark_path,
            pending: Mutex::new(BTreeMap::new()),
            checkers: RwLock::new(HashMap::new()),
            wake: Notify::new(),
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
        let mut map = self.pending.lock();
        // Wake the check-back task only if this check comes before every
        // one it is already sleeping towards (rarely: new halves are due
        // last), not once per transaction.
        let earliest = map
            .values()
            .all(|p| p.next_check_ms > pending.next_check_ms);
        map.insert(half_offset, pending);
        metrics::gauge!(HALF_PENDING).set(map.len() as f64);
        drop(map);
        if earliest {
            self.wake.notify_one();
        }
    }

    fn take(&self, half_offset: u64) -> Option<Pending> {
        let mut map = self.pending.lock();
        let taken = map.remove(&half_offset);
        metrics::gauge!(HALF_PENDING).set(map.len() as f64);
        taken
    }

    /// The lowest half offset still open.
    pub(crate) fn oldest_open(&self) -> Option<u64> {
        self.pending.lock().keys().next().copied()
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.lock().len()
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
        if producer_group.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "producer group must not be empty".into(),
            ));
        }
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
        let mut half = message;
        let real_topic = std::mem::replace(&mut half.topic, HALF_TOPIC.to_owned());
        half.properties
            .insert(property::REAL_TOPIC.into(), real_topic);
        half.properties
            .insert(property::REAL_QUEUE.into(), queue_id.to_string());
        half.properties
            .insert(property::PRODUCER_GROUP.into(), producer_group.to_owned());
        let now = store.clock().now_ms();
        let (mut results, end) = store.append(0, vec![half])?;
        let result = results.pop().expect("one result");
        self.insert(
            result.queue_offset,
            Pending {
                producer_group: producer_group.to_owned(),
                checks: 0,
                next_check_ms: now + store.config().transaction_timeout.as_millis() as i64,
            },
        );
        store.wait_durable(end).await?;
        Ok(HalfSendResult {
            half_offset: result.queue_offset,
            msg_id: result.msg_id,
        })
    }

    /// Commits or rolls back the transaction of the half message at
    /// `half_offset`; a commit returns where the real message landed.
    pub(crate) async fn resolve(
        &self,
        store: &Store,
        half_offset: u64,
        state: TransactionState,
    ) -> Result<Option<SendResult>> {
        let Some(pending) = self.take(half_offset) else {
            return Err(BrokerError::InvalidArgument(format!(
                "no open transaction with half offset {half_offset} (resolved already, or never sent)"
            )));
        };
        let result = apply_resolution(store, half_offset, state).await;
        if result.is_err() {
            // Not resolved after all: the check-back will ask again.
            self.insert(half_offset, pending);
        }
        result
    }
}

/// Applies an ending: a commit appends the real message, then either
/// ending appends its op record, and both wait for durability.
async fn apply_resolution(
    store: &Store,
    half_offset: u64,
    state: TransactionState,
) -> Result<Option<SendResult>> {
    let committed = match state {
        TransactionState::Commit => {
            let half = store.read(HALF_TOPIC, 0, half_offset)?;
            let (mut message, queue_id) = restore_real(half.message)?;
            message.properties.remove(property::PRODUCER_GROUP);
            message
                .properties
                .insert(property::HALF_OFFSET.into(), half_offset.to_string());
            let (mut results, _) = store.append(queue_id, vec![message])?;
            results.pop()
        }
        TransactionState::Rollback => None,
        TransactionState::Unknown => {
            return Err(BrokerError::InvalidArgument(
                "a transaction ends with commit or rollback, not unknown".into(),
            ));
        }
    };
    let op = Message::new(HALF_OP_TOPIC, half_offset.to_string()).with_tags(match state {
        TransactionState::Commit => "commit",
        _ => "rollback",
    });
    let (_, end) = store.append(0, vec![op])?;
    store.wait_durable(end).await?;
    Ok(committed)
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

impl Transactions {
    /// The check-back task: asks checkers about transactions past their time.
    pub(crate) async fn run_check_back(
        self: Arc<Self>,
        store: Arc<Store>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut persisted_watermark = None;
        loop {
            let next = self.pending.lock().values().map(|p| p.next_check_ms).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(store.clock().instant_at(at)).await,
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
            let now = store.clock().now_ms();
            let due: Vec<(u64, String)> = self
                .pending
                .lock()
                .iter()
                .filter(|(_, p)| p.next_check_ms <= now)
                .map(|(offset, p)| (*offset, p.producer_group.clone()))
                .collect();
            for (half_offset, group) in due {
                if let Err(e) = self.check_one(&store, half_offset, &group).await {
                    tracing::warn!(half_offset, error = %e, "transaction check-back failed");
                    if matches!(e, BrokerError::ShuttingDown | BrokerError::StorageFailed(_)) {
                        return;
                    }
                }
            }
            let watermark = {
                let pending = self.pending.lock();
                pending.keys().next().copied()
            };
            let watermark = watermark.unwrap_or_else(|| {
                store
                    .queue(HALF_TOPIC, 0)
                    .map_or(0, |q| q.consume_queue_len())
            });
            if persisted_watermark != Some(watermark) {
                // An atomic file write (fsyncs and a rename): on the
                // blocking pool, not on a runtime worker.
                let transactions = Arc::clone(&self);
                let written =
                    tokio::task::spawn_blocking(move || transactions.write_watermark(watermark))
                        .await;
                match written {
                    Ok(Ok(())) => persisted_watermark = Some(watermark),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not persist the transaction watermark")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the transaction watermark task failed")
                    }
                }
            }
        }
    }

    async fn check_one(&self, store: &Store, half_offset: u64, group: &str) -> Result<()> {
        let checker = self.checkers.read().get(group).cloned();
        let state = match checker {
            Some(checker) => {
                let half = half_message(store, half_offset)?;
                tokio::time::timeout(CHECK_TIMEOUT, checker.check(&half))
                    .await
                    .unwrap_or(TransactionState::Unknown)
            }
            // No checker registered (the producer is gone): an unknown answer.
            None => TransactionState::Unknown,
        };
        metrics::counter!(TRANSACTION_CHECKS, "answer" => format!("{state:?}").to_lowercase())
            .increment(1);
        match state {
            TransactionState::Commit | TransactionState::Rollback => {
                // Resolved meanwhile by the producer: nothing left to do.
                match self.resolve(store, half_offset, state).await {
                    Ok(_) => Ok(()),
                    Err(BrokerError::InvalidArgument(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            TransactionState::Unknown => {
                let give_up = {
                    let mut pending = self.pending.lock();
                    let Some(entry) = pending.get_mut(&half_offset) else {
                        return Ok(());
                    };
                    entry.checks += 1;
                    entry.next_check_ms = store.clock().now_ms()
                        + store.config().transaction_check_interval.as_millis() as i64;
                    entry.checks >= store.config().transaction_max_checks
                };
                if give_up {
                    tracing::warn!(
                        half_offset,
                        group,
                        "no answer after the maximum checks; rolling back"
                    );
                    match self
                        .resolve(store, half_offset, TransactionState::Rollback)
                        .await
                    {
                        Ok(_) | Err(BrokerError::InvalidArgument(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
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
