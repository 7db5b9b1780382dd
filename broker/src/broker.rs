//! The broker: the façade every caller uses, over a storage core and the
//! features that live on it.
//!
//! ```text
//!                 ┌──────────── Broker (this file: every public method) ────────────┐
//!                 │ delays   transactions   retry   retention   groups   offsets  │
//!                 └─────────────────────────────┬─────────────────────────────────┘
//!                                               ▼
//!   Store: commit log + writer, consume queues, key index, group commit,
//!          checkpoint, failure latch, disk guard   (open / append / read)
//! ```
//!
//! [`Broker`] holds the [`Store`] and each feature's own state, and wires
//! them: a producer's put goes through the delay scheduler (which routes
//! delayed messages to the delay topic) into the store; a pull is the
//! store's read path with long polling; transactions, retry and retention
//! each get the store and nothing of one another. The façade is the one
//! place that knows all of them, so no feature reaches into another.
//!
//! Background work: the flusher thread (`group_commit.rs`, owned by the
//! store), a maintenance thread that flushes consume queues, advances the
//! checkpoint, measures the disk, persists consumer offsets and publishes
//! lag, and Tokio tasks for delays, transaction check-backs and retention.
//!
//! Dropping every handle without [`Broker::shutdown`] is a crash as far as
//! the store is concerned: the abort marker stays and the next open runs
//! crash recovery. Tests use exactly that.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::consumer_groups::GroupRegistry;
use crate::delay_scheduler::{self, DelayScheduler};
use crate::error::{BrokerError, Result};
use crate::offsets::OffsetStore;
use crate::pull;
use crate::record::{Message, StoredMessage};
use crate::retention::{self, RetentionHold};
use crate::retry;
use crate::store::Store;
use crate::system_topics::{check_user_message, retry_topic};
use crate::time_lookup;
use crate::transactions::Transactions;
use crate::types::{
    Assignment, ConsumeMode, HalfSendResult, JoinRequest, LagStats, OffsetReset, PullRequest,
    PullResult, QueueStats, RecoveryReport, RetentionReport, RetryOutcome, SendResult, TopicConfig,
    TransactionChecker, TransactionState,
};

mod maintenance;

/// The storage core and each feature's own state, shared by the handles,
/// the background threads and the service tasks.
#[derive(Debug)]
struct Inner {
    store: Arc<Store>,
    delays: Arc<DelayScheduler>,
    transactions: Arc<Transactions>,
    offsets: OffsetStore,
    groups: GroupRegistry,
    /// Tells the Tokio service tasks (delays, transaction checks,
    /// retention) to stop.
    services_stop: watch::Sender<bool>,
}

/// Background threads; stopped and joined when the last handle goes.
#[derive(Debug)]
struct Threads {
    inner: Arc<Inner>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    fn stop(&self) {
        self.inner.services_stop.send_replace(true);
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        self.inner.store.stop_flusher();
        for handle in self.handles.lock().drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Threads {
    /// The last handle went without [`Broker::shutdown`]: stop as a crash
    /// would. Writes are refused from here on (a barrier on the append lock
    /// lets an append in flight finish), the threads and services stop, and
    /// the store lock is released with the abort marker still in place, so
    /// the next open runs crash recovery.
    fn drop(&mut self) {
        self.inner.store.refuse_writes();
        self.stop();
        let _ = self.inner.store.release_lock();
    }
}

/// A handle to an open broker store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
    threads: Arc<Threads>,
}

impl Broker {
    /// Opens (or creates) the store in `config.data_dir`, recovering from a
    /// crash if the last stop was one. Blocking: call it before serving, or
    /// from `spawn_blocking`.
    pub fn open(config: BrokerConfig) -> Result<Broker> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BrokerError::InvalidArgument(
                "Broker::open must be called inside a Tokio runtime: delays and transaction \
                 checks run as Tokio tasks"
                    .into(),
            )
        })?;
        // The delay topic keeps due times in its consume-queue entries;
        // the store asks the scheduler for that encoding.
        let store = Store::open(config, delay_scheduler::consume_queue_tag)?;
        let paths = store.paths();
        let delays = DelayScheduler::open(paths.delay_progress_file())?;
        let transactions = Transactions::new(paths.transaction_watermark_file());
        let offsets = OffsetStore::open(paths.consumer_offsets_file())?;
        delays.restore_from(&store)?;
        transactions.restore_from(&store)?;
        let inner = Inner {
            groups: GroupRegistry::new(store.config().member_expiry),
            store: Arc::new(store),
            delays: Arc::new(delays),
            transactions: Arc::new(transactions),
            offsets,
            services_stop: watch::channel(false).0,
        };
        Ok(Broker::start(Arc::new(inner), &runtime))
    }

    fn start(inner: Arc<Inner>, runtime: &tokio::runtime::Handle) -> Broker {
        let store = &inner.store;
        runtime.spawn(
            Arc::clone(&inner.delays).run(Arc::clone(store), inner.services_stop.subscribe()),
        );
        runtime.spawn(
            Arc::clone(&inner.transactions)
                .run_check_back(Arc::clone(store), inner.services_stop.subscribe()),
        );
        runtime.spawn(retention::run_retention(
            Arc::clone(store),
            inner.retention_holds(),
            inner.services_stop.subscribe(),
        ));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flusher = {
            let store = Arc::clone(store);
            std::thread::Builder::new()
                .name("broker-flusher".into())
                .spawn(move || store.run_flusher())
                .expect("spawn the flusher thread")
        };
        let maintenance = {
            let inner = Arc::clone(&inner);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("broker-maintenance".into())
                .spawn(move || inner.run_maintenance(&stop))
                .expect("spawn the maintenance thread")
        };
        let threads = Threads {
            inner: Arc::clone(&inner),
            stop,
            handles: Mutex::new(vec![flusher, maintenance]),
        };
        Broker {
            inner,
            threads: Arc::new(threads),
        }
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        self.inner.store.config()
    }

    /// What recovery did when this broker opened.
    pub fn recovery(&self) -> &RecoveryReport {
        self.inner.store.recovery()
    }

    /// Creates a topic with `queues` queues (idempotent for the same count).
    pub fn create_topic(&self, name: &str, queues: u32) -> Result<TopicConfig> {
        self.inner.store.create_topic(name, queues)
    }

    /// A topic's settings.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.inner.store.topic(name)
    }

    /// Every topic.
    pub fn topics(&self) -> Vec<TopicConfig> {
        self.inner.store.topics()
    }

    /// Appends `messages` (all of one topic) to queue `queue_id` and waits
    /// for the configured durability: in sync mode, until an fdatasync
    /// covers them. Messages with a delay property (`DELAY` level or
    /// `DELIVER_AT_MS`) wait in the delay topic until due.
    ///
    /// Sends without a delay that arrive while another is appending are
    /// appended together, in one write (see `store/combining.rs`).
    pub async fn put(&self, queue_id: u32, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        let (results, end) = if messages.iter().any(delay_scheduler::asks_for_delay) {
            self.put_user(queue_id, messages)?
        } else {
            for message in &messages {
                check_user_message(message)?;
            }
            self.inner.store.append_combined(queue_id, messages).await?
        };
        self.inner.store.wait_durable(end).await?;
        Ok(results)
    }

    /// Appends without waiting for durability (one-way sends). The records
    /// are in the page cache when this returns; in sync mode they become
    /// visible to consumers once the next flush covers them.
    pub fn put_nowait(&self, queue_id: u32, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        self.put_user(queue_id, messages)
            .map(|(results, _)| results)
    }

    /// Reads from a queue, holding the request (long polling) while the
    /// queue has nothing at `offset`, up to `hold_ms` (capped by
    /// `max_long_poll`).
    pub async fn pull(&self, request: &PullRequest) -> Result<PullResult> {
        if let Some(fence) = &request.fence {
            let queue = crate::types::QueueRef {
                topic: request.topic.clone(),
                queue_id: request.queue_id,
            };
            self.inner.groups.check_owner(
                &request.group,
                &fence.member,
                fence.generation,
                &queue,
                || Ok(()),
            )?;
        }
        pull::pull(&self.inner.store, request).await
    }

    /// Delayed messages waiting for their time.
    pub fn delayed_pending(&self) -> usize {
        self.inner.delays.pending()
    }

    /// The broker's clock (ms since the epoch; follows Tokio's clock, so
    /// tests can pause and advance it).
    pub fn now_ms(&self) -> i64 {
        self.inner.store.clock().now_ms()
    }

    /// Records that `owner` has consumed `topic`/`queue_id` below `offset`,
    /// without naming a member: for broadcasting owners (`group%member`),
    /// tools and groups that are not consuming right now. A clustering
    /// group with live members takes only fenced commits
    /// ([`Broker::commit_offset_fenced`]): this refuses with
    /// [`BrokerError::Fenced`]. A commit never lowers an offset
    /// ([`BrokerError::OffsetBackwards`]); [`Broker::reset_offsets`] does.
    pub fn commit_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        self.check_commit(owner, topic, queue_id, offset)?;
        if self.inner.groups.is_live_clustering(owner) {
            return Err(BrokerError::Fenced(format!(
                "group {owner:?} consumes in clustering mode: a commit must name the member \
                 and the generation of its assignment"
            )));
        }
        self.inner
            .offsets
            .advance((owner.to_owned(), topic.to_owned(), queue_id), offset)
    }

    /// A clustering member's commit: accepted only if `member` owns
    /// `topic`/`queue_id` now and has owned it without a break since
    /// `generation`, the [`Assignment::generation`] it consumes under.
    /// Otherwise [`BrokerError::Fenced`] (or [`BrokerError::UnknownMember`]
    /// once the member is gone): the member must stop consuming the queue.
    /// Never lowers an offset ([`BrokerError::OffsetBackwards`]).
    pub fn commit_offset_fenced(
        &self,
        group: &str,
        member: &str,
        generation: u64,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        self.check_commit(group, topic, queue_id, offset)?;
        let queue = crate::types::QueueRef {
            topic: topic.to_owned(),
            queue_id,
        };
        self.inner
            .groups
            .check_owner(group, member, generation, &queue, || {
                self.inner
                    .offsets
                    .advance((group.to_owned(), topic.to_owned(), queue_id), offset)
            })
    }

    /// What every commit needs: an owner, an existing queue, an offset
    /// inside it.
    fn check_commit(&self, owner: &str, topic: &str, queue_id: u32, offset: u64) -> Result<()> {
        if owner.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "offset owner (group) must not be empty".into(),
            ));
        }
        let queue = self.inner.store.queue(topic, queue_id)?;
        let max = queue.visible_len();
        if offset > max {
            return Err(BrokerError::InvalidArgument(format!(
                "offset {offset} is past the end of {topic}/{queue_id} ({max})"
            )));
        }
        Ok(())
    }

    /// The committed offset of `owner` on a queue, if any.
    pub fn committed_offset(&self, owner: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.inner
            .offsets
            .get(&(owner.to_owned(), topic.to_owned(), queue_id))
    }

    /// Joins (or re-joins) a consumer group. In clustering mode the group's
    /// retry topic is subscribed too, so retried messages come back.
    pub fn join_group(&self, request: &JoinRequest) -> Result<Assignment> {
        let mut request = request.clone();
        let clustering = request.mode == ConsumeMode::Clustering;
        if clustering && !request.group.is_empty() && !request.topics.is_empty() {
            let retry = retry_topic(&request.group);
            self.inner.store.ensure_topic(&retry)?;
            if !request.topics.contains(&retry) {
                request.topics.push(retry);
            }
        }
        self.inner
            .groups
            .join(&request, |t| self.inner.store.topic(t).map(|c| c.queues))
    }

    /// Heartbeat of a group member; returns its current assignment.
    pub fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment> {
        self.inner.groups.heartbeat(group, member, |t| {
            self.inner.store.topic(t).map(|c| c.queues)
        })
    }

    /// Leaves a consumer group.
    pub fn leave_group(&self, group: &str, member: &str) -> Result<()> {
        self.inner.groups.leave(group, member)
    }

    /// Groups with their mode and live members.
    pub fn groups(&self) -> Vec<(String, ConsumeMode, Vec<String>)> {
        self.inner.groups.snapshot()
    }

    /// Offsets of every queue.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let store = &self.inner.store;
        let mut out: Vec<QueueStats> = store
            .all_queues()
            .iter()
            .map(|q| QueueStats {
                topic: q.topic().to_owned(),
                queue_id: q.queue_id(),
                min_offset: store
                    .first_live_offset(q)
                    .unwrap_or_else(|_| q.consume_queue_min()),
                max_offset: q.visible_len(),
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        out
    }

    /// Pulls held by long polling on one queue now (0 for a queue that
    /// does not exist): each holds a subscription to the queue's length.
    pub fn held_pulls(&self, topic: &str, queue_id: u32) -> usize {
        self.inner
            .store
            .queue(topic, queue_id)
            .map_or(0, |q| q.visible_watch().receiver_count())
    }

    /// Lag of every committed offset.
    pub fn lag(&self) -> Vec<LagStats> {
        self.inner.lag()
    }

    /// Times the committed-offsets file was written since open: only when
    /// an offset changed since the last write.
    pub fn offset_file_writes(&self) -> u64 {
        self.inner.offsets.writes()
    }

    /// Producers' sends appended by another send's write so far (they
    /// arrived while it was appending; see `store/combining.rs`).
    pub fn combined_sends(&self) -> u64 {
        self.inner.store.combined_sends()
    }

    /// fdatasync calls of the commit log so far: in sync mode one covers
    /// every write waiting at that moment (group commit).
    pub fn log_syncs(&self) -> u64 {
        self.inner.store.log_syncs()
    }

    /// End of the log as written (page cache).
    pub fn written_offset(&self) -> u64 {
        self.inner.store.log().written()
    }

    /// End of the log known durable.
    pub fn flushed_offset(&self) -> u64 {
        self.inner.store.log().flushed()
    }

    /// Stops cleanly: refuses new writes, flushes the log and the consume
    /// queues, persists offsets and the checkpoint, and removes the abort
    /// marker so the next open needs no recovery. Other handles still work
    /// for reads but every write fails with [`BrokerError::ShuttingDown`].
    pub async fn shutdown(&self) -> Result<()> {
        let broker = self.clone();
        tokio::task::spawn_blocking(move || broker.shutdown_blocking())
            .await
            .map_err(|e| BrokerError::StorageFailed(format!("shutdown task failed: {e}")))?
    }

    /// [`Broker::shutdown`] for callers outside an async runtime.
    pub fn shutdown_blocking(&self) -> Result<()> {
        if self.inner.store.begin_close() {
            return Ok(());
        }
        self.threads.stop();
        let end = self
            .inner
            .store
            .finish_clean_stop(|| self.inner.offsets.persist())?;
        tracing::info!(log_end = end, "broker stopped cleanly");
        Ok(())
    }

    /// A producer's append: system topics and the broker's own properties
    /// are refused; delayed messages go to the delay topic.
    fn put_user(&self, queue_id: u32, messages: Vec<Message>) -> Result<(Vec<SendResult>, u64)> {
        for message in &messages {
            check_user_message(message)?;
        }
        self.inner
            .delays
            .append(&self.inner.store, queue_id, messages)
    }

    // -- lookups -------------------------------------------------------------

    /// Messages whose key is `key` (optionally only in `topic`), oldest
    /// first, at most `max`. Records already removed by retention are
    /// skipped.
    pub fn messages_by_key(
        &self,
        key: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        if key.is_empty() {
            return Err(BrokerError::InvalidArgument("key must not be empty".into()));
        }
        self.inner.store.messages_by_key(key, topic, max)
    }

    /// The offset of the first message of `topic`/`queue_id` stored at or
    /// after `timestamp_ms`; the queue's end if there is none.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: i64,
    ) -> Result<u64> {
        time_lookup::offset_for_timestamp(&self.inner.store, topic, queue_id, timestamp_ms)
    }

    /// Moves `group`'s committed offsets on every queue of `topic` (the
    /// offset owner as in [`crate::Assignment::offset_owner`]), backwards
    /// too: the one way to lower an offset. Every ownership of the group
    /// starts anew, so commits of tasks that read their offsets before the
    /// reset are fenced; members see a new generation at their next
    /// heartbeat and re-read their offsets. Returns the new offset of each
    /// queue.
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
        let store = &self.inner.store;
        let queues = store
            .topic(topic)
            .ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))?
            .queues;
        // Find the targets first (they read the store), then move every
        // offset and fence the group's tasks in one step.
        let mut moved = Vec::with_capacity(queues as usize);
        for queue_id in 0..queues {
            let offset = time_lookup::reset_target(store, topic, queue_id, to)?;
            self.check_commit(group, topic, queue_id, offset)?;
            moved.push((queue_id, offset));
        }
        self.inner.groups.reset_under_lock(group, || {
            for &(queue_id, offset) in &moved {
                self.inner
                    .offsets
                    .reset((group.to_owned(), topic.to_owned(), queue_id), offset)?;
            }
            Ok(())
        })?;
        Ok(moved)
    }

    // -- retention -----------------------------------------------------------

    /// Runs one retention pass now (it also runs every
    /// `retention_check_interval`). Blocking file work: async callers use
    /// `spawn_blocking`.
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        retention::apply_retention(&self.inner.store, &self.inner.retention_holds())
    }

    // -- retry and dead letters ----------------------------------------------

    /// Gives back the message at `topic`/`queue_id`/`queue_offset` that
    /// `group` failed to process, with a reason kept in its history.
    pub async fn reconsume_later(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
        reason: &str,
    ) -> Result<RetryOutcome> {
        let inner = &self.inner;
        retry::reconsume_later(
            &inner.store,
            &inner.delays,
            group,
            topic,
            queue_id,
            queue_offset,
            reason,
        )
        .await
    }

    /// Lists dead letters of `group` from `offset` (at most `max`).
    pub async fn dead_letters(&self, group: &str, offset: u64, max: u32) -> Result<PullResult> {
        retry::dead_letters(&self.inner.store, group, offset, max).await
    }

    /// Sends the dead letter at `offset` of `group`'s DLQ back to its
    /// original topic and queue, with a fresh retry budget (its history of
    /// origin and failures stays in its properties).
    pub async fn redrive_dead_letter(&self, group: &str, offset: u64) -> Result<SendResult> {
        let inner = &self.inner;
        retry::redrive_dead_letter(&inner.store, &inner.delays, group, offset).await
    }

    // -- transactions --------------------------------------------------------

    /// Stores `message` as a half message of `producer_group`, invisible to
    /// consumers until [`Broker::end_transaction`] commits it (or a check
    /// with the group's checker does).
    pub async fn send_half(
        &self,
        producer_group: &str,
        queue_id: u32,
        message: Message,
    ) -> Result<HalfSendResult> {
        let inner = &self.inner;
        inner
            .transactions
            .send_half(&inner.store, producer_group, queue_id, message)
            .await
    }

    /// Commits or rolls back the transaction of the half message at
    /// `half_offset`. A commit returns where the real message landed.
    pub async fn end_transaction(
        &self,
        half_offset: u64,
        state: TransactionState,
    ) -> Result<Option<SendResult>> {
        let inner = &self.inner;
        inner
            .transactions
            .resolve(&inner.store, half_offset, state)
            .await
    }

    /// Stores every `(queue id, message)` as a half message of
    /// `producer_group`, as [`Broker::send_half`] does one, with one append
    /// and one durable wait for the whole batch. Results in input order.
    /// An empty batch, or any invalid message, refuses the whole batch.
    pub async fn send_half_batch(
        &self,
        producer_group: &str,
        halves: Vec<(u32, Message)>,
    ) -> Result<Vec<HalfSendResult>> {
        let inner = &self.inner;
        inner
            .transactions
            .send_half_batch(&inner.store, producer_group, halves)
            .await
    }

    /// Ends many transactions, as [`Broker::end_transaction`] ends one,
    /// with the real messages and op records of the whole batch in one
    /// append and one durable wait. Each entry gets its own result, in
    /// input order: a half that is not open (or named twice) fails alone.
    /// The outer error is for what fails the whole batch (the store, a
    /// shutdown); then no transaction of it is acknowledged.
    pub async fn end_transactions(
        &self,
        ends: Vec<(u64, TransactionState)>,
    ) -> Result<Vec<Result<Option<SendResult>>>> {
        let inner = &self.inner;
        inner.transactions.resolve_many(&inner.store, ends).await
    }

    /// Registers the checker asked about `producer_group`'s open
    /// transactions (replacing any earlier one).
    pub fn register_checker(&self, producer_group: &str, checker: Arc<dyn TransactionChecker>) {
        self.inner
            .transactions
            .register_checker(producer_group, checker);
    }

    /// Half messages neither committed nor rolled back yet.
    pub fn open_transactions(&self) -> usize {
        self.inner.transactions.pending_count()
    }
}

impl Inner {
    /// The features whose pending work keeps records from retention.
    fn retention_holds(&self) -> Vec<Arc<dyn RetentionHold>> {
        vec![
            Arc::clone(&self.delays) as Arc<dyn RetentionHold>,
            Arc::clone(&self.transactions) as Arc<dyn RetentionHold>,
        ]
    }
}
