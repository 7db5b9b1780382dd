//! The broker: one store directory, opened, recovered and served.
//!
//! `Broker` ties the parts together:
//!
//! ```text
//! put ──▶ append lock ──▶ commit log (pwrite) ──▶ dispatch: consume-queue entry
//!              │                                   (same critical section, so
//!              │                                    queue order = log order)
//!              └──▶ group commit: wait for the fdatasync that covers it (sync mode)
//! pull ─▶ consume queue ─▶ commit log (pread, CRC-checked) ─▶ long poll if empty
//! ```
//!
//! Dispatching inside the append lock, rather than in a separate reput
//! thread as RocketMQ does, keeps one ordering for log and queues and makes
//! a message consumable the moment it is durable; the consume queues are
//! still derived data, rebuilt from the log after a crash.
//!
//! Background threads: the flusher (`group_commit.rs`) and a maintenance
//! thread that fsyncs consume queues, advances the checkpoint, persists
//! consumer offsets and publishes lag. Blocking file I/O happens on those
//! threads or, for appends and reads, directly in the caller: each is one
//! `pwrite`/`pread` against the page cache, a few microseconds.
//!
//! Dropping every handle without [`Broker::shutdown`] is a crash as far as
//! the store is concerned: the abort marker stays and the next open runs
//! crash recovery. Tests use exactly that.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, CheckpointFile};
use crate::clock::Clock;
use crate::commit_log::{CommitLog, LogWriter};
use crate::config::{BrokerConfig, FlushMode};
use crate::consume_queue::{ConsumeQueue, QueueEntry};
use crate::consumer_groups::GroupRegistry;
use crate::delay_scheduler::{self, DelayScheduler};
use crate::error::{BrokerError, Result};
use crate::fs_util::{create_dir_durable, fsync_dir};
use crate::group_commit::{GroupCommit, PendingVisibility};
use crate::key_index::{KeyIndex, key_hash};
use crate::long_poll::wait_for_arrival;
use crate::metrics::{
    APPENDED_BYTES, APPENDED_MESSAGES, CONSUMER_LAG, DISK_USAGE_RATIO, DLQ_MESSAGES,
    PULLED_MESSAGES,
};
use crate::offsets::OffsetStore;
use crate::record::{self, Message, Placement, StoredMessage, tag_hash};
use crate::retention;
use crate::store_paths::StorePaths;
use crate::system_topics::{DELAY_TOPIC, is_system_topic, property, retry_topic};
use crate::tag_filter::TagFilter;
use crate::topics::TopicRegistry;
use crate::transactions::{self, Transactions};
use crate::types::{
    Assignment, JoinRequest, LagStats, PullRequest, PullResult, PullStatus, QueueStats,
    RecoveryReport, SendResult, TopicConfig,
};

/// One queue: its index and the published length long polls wait on.
#[derive(Debug)]
pub(crate) struct QueueState {
    topic: String,
    queue_id: u32,
    consume_queue: ConsumeQueue,
    visible: watch::Sender<u64>,
}

impl QueueState {
    pub(crate) fn publish_visible(&self, len: u64) {
        self.visible.send_if_modified(|current| {
            let grew = len > *current;
            if grew {
                *current = len;
            }
            grew
        });
    }

    fn visible_len(&self) -> u64 {
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

    /// Reads the message at `offset` of this queue.
    pub(crate) fn read_message(&self, inner: &Inner, offset: u64) -> Result<StoredMessage> {
        let entry = self.consume_queue.get(offset)?;
        inner.log.read(entry.commit_log_offset, entry.size)
    }
}

/// State shared by the handles and the background threads.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: BrokerConfig,
    pub(crate) paths: StorePaths,
    pub(crate) clock: Clock,
    pub(crate) delays: DelayScheduler,
    pub(crate) transactions: Transactions,
    pub(crate) key_index: KeyIndex,
    /// Tells the Tokio service tasks (delays, transaction checks) to stop.
    services_stop: watch::Sender<bool>,
    pub(crate) log: CommitLog,
    /// The append lock. Held while a batch is encoded, written and
    /// dispatched; everything that must happen in log order happens here.
    pub(crate) append: Mutex<LogWriter>,
    queues: RwLock<HashMap<String, Arc<[Arc<QueueState>]>>>,
    pub(crate) topics: TopicRegistry,
    pub(crate) offsets: OffsetStore,
    pub(crate) groups: GroupRegistry,
    group_commit: GroupCommit,
    checkpoint: Mutex<(CheckpointFile, Checkpoint)>,
    failure: Mutex<Option<String>>,
    /// Set while the disk is fuller than `max_disk_usage_ratio` (the
    /// measured usage in percent, as f64 bits; 0 = not full).
    disk_full_percent: AtomicU64,
    closing: AtomicBool,
    recovery: RecoveryReport,
    lock: File,
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
        self.inner.group_commit.stop();
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
        self.inner.closing.store(true, Ordering::Release);
        drop(self.inner.append.lock());
        self.stop();
        let _ = self.inner.lock.unlock();
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
        let paths = StorePaths::new(config.data_dir.clone());
        create_dir_durable(paths.root())?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.lock_file())
            .map_err(|e| BrokerError::io("open the store lock file", e))?;
        lock.try_lock()
            .map_err(|_| BrokerError::StoreLocked(paths.root().to_path_buf()))?;

        let crashed = paths.abort_marker().exists();
        let (checkpoint_file, checkpoint) = CheckpointFile::open(&paths.checkpoint())?;
        if crashed {
            tracing::warn!(dir = %paths.root().display(), "the last stop was not clean; recovering");
        }
        let (log, writer, mut recovery) = CommitLog::open(
            &paths.commit_log_dir(),
            config.segment_size,
            checkpoint.map(|c| c.log_flushed),
            crashed,
        )?;
        if let Some(c) = checkpoint
            && c.log_flushed > recovery.log_end
        {
            return Err(BrokerError::Layout(format!(
                "the commit log ends at {} but {} bytes were flushed and acknowledged; \
                 log data is missing",
                recovery.log_end, c.log_flushed
            )));
        }
        let topics = TopicRegistry::open(paths.topics_file())?;
        let (key_index, key_index_existed) =
            KeyIndex::open(&paths.key_index_file(), recovery.log_end)?;
        let inner = Inner {
            clock: Clock::new(),
            delays: DelayScheduler::open(paths.delay_progress_file())?,
            transactions: Transactions::new(paths.transaction_watermark_file()),
            key_index,
            services_stop: watch::channel(false).0,
            group_commit: GroupCommit::new(config.flush),
            groups: GroupRegistry::new(config.member_expiry),
            offsets: OffsetStore::open(paths.consumer_offsets_file())?,
            checkpoint: Mutex::new((checkpoint_file, checkpoint.unwrap_or_default())),
            append: Mutex::new(writer),
            queues: RwLock::new(HashMap::new()),
            failure: Mutex::new(None),
            disk_full_percent: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            recovery: RecoveryReport::default(),
            lock,
            topics,
            log,
            paths,
            config,
        };
        let mut inner = inner;
        let log_end = recovery.log_end;
        let queue_root_existed = inner.paths.consume_queue_root().is_dir();
        for topic in inner.topics.list() {
            inner.load_topic(&topic, log_end, &mut recovery)?;
        }
        // Re-dispatch what the consume queues may be missing. After a
        // crash: everything past the last consume-queue flush. With the
        // consume queues deleted: the whole log.
        let log_has_data = log_end > inner.log.min_offset();
        let redispatch_from = if !queue_root_existed || (!key_index_existed && log_has_data) {
            Some(inner.log.min_offset())
        } else if crashed {
            Some(
                checkpoint
                    .map_or(0, |c| c.consume_queue_flushed)
                    .clamp(inner.log.min_offset(), log_end),
            )
        } else {
            None
        };
        if let Some(from) = redispatch_from {
            recovery.redispatched = inner
                .log
                .for_each_record(from, |m| inner.redispatch(&m, log_end))?;
        }
        // Whatever recovery kept is now made durable, so consumers never
        // see data a power loss could still take back.
        inner.append.lock().current_segment().sync_data()?;
        inner.flush_consume_queues()?;
        inner.note_log_flushed(log_end);
        inner.note_consume_queues_flushed(log_end)?;
        std::fs::write(inner.paths.abort_marker(), b"")
            .map_err(|e| BrokerError::io("create the abort marker", e))?;
        fsync_dir(inner.paths.root())?;
        inner.check_disk_usage()?;
        inner.restore_delays()?;
        inner.restore_transactions()?;
        inner
            .clock
            .observe_store_timestamp(recovery.newest_store_timestamp_ms);
        if recovery.crashed {
            tracing::info!(?recovery, "crash recovery finished");
        }
        inner.recovery = recovery;
        Ok(Broker::start(Arc::new(inner), &runtime))
    }

    fn start(inner: Arc<Inner>, runtime: &tokio::runtime::Handle) -> Broker {
        runtime.spawn(DelayScheduler::run(
            Arc::clone(&inner),
            inner.services_stop.subscribe(),
        ));
        runtime.spawn(transactions::run_check_back(
            Arc::clone(&inner),
            inner.services_stop.subscribe(),
        ));
        runtime.spawn(retention::run_retention(
            Arc::clone(&inner),
            inner.services_stop.subscribe(),
        ));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flusher = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("broker-flusher".into())
                .spawn(move || inner.group_commit.run(&inner))
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

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The settings the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// What recovery did when this broker opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Creates a topic with `queues` queues (idempotent for the same count).
    pub fn create_topic(&self, name: &str, queues: u32) -> Result<TopicConfig> {
        let config = self.inner.topics.create(name, queues)?;
        self.inner.topic_queues(name)?;
        Ok(config)
    }

    /// A topic's settings.
    pub fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.inner.topics.get(name)
    }

    /// Every topic.
    pub fn topics(&self) -> Vec<TopicConfig> {
        self.inner.topics.list()
    }

    /// Appends `messages` (all of one topic) to queue `queue_id` and waits
    /// for the configured durability: in sync mode, until an fdatasync
    /// covers them. Messages with a delay property (`DELAY` level or
    /// `DELIVER_AT_MS`) wait in the delay topic until due.
    pub async fn put(&self, queue_id: u32, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        let (results, end) = self.inner.put_user(queue_id, messages)?;
        self.inner.wait_durable(end).await?;
        Ok(results)
    }

    /// Appends without waiting for durability (one-way sends). The records
    /// are in the page cache when this returns; in sync mode they become
    /// visible to consumers once the next flush covers them.
    pub fn put_nowait(&self, queue_id: u32, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        self.inner
            .put_user(queue_id, messages)
            .map(|(results, _)| results)
    }

    /// Reads from a queue, holding the request (long polling) while the
    /// queue has nothing at `offset`, up to `hold_ms` (capped by
    /// `max_long_poll`).
    pub async fn pull(&self, request: &PullRequest) -> Result<PullResult> {
        self.inner.pull(request).await
    }

    /// Delayed messages waiting for their time.
    pub fn delayed_pending(&self) -> usize {
        self.inner.delays.pending()
    }

    /// The broker's clock (ms since the epoch; follows Tokio's clock, so
    /// tests can pause and advance it).
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Records that `owner` has consumed `topic`/`queue_id` below `offset`.
    pub fn commit_offset(
        &self,
        owner: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        if owner.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "offset owner (group) must not be empty".into(),
            ));
        }
        let queue = self.inner.queue(topic, queue_id)?;
        let max = queue.visible_len();
        if offset > max {
            return Err(BrokerError::InvalidArgument(format!(
                "offset {offset} is past the end of {topic}/{queue_id} ({max})"
            )));
        }
        self.inner
            .offsets
            .set((owner.to_owned(), topic.to_owned(), queue_id), offset);
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
        let clustering = request.mode == crate::ConsumeMode::Clustering;
        if clustering && !request.group.is_empty() && !request.topics.is_empty() {
            let retry = retry_topic(&request.group);
            self.inner.ensure_topic(&retry)?;
            if !request.topics.contains(&retry) {
                request.topics.push(retry);
            }
        }
        self.inner
            .groups
            .join(&request, |t| self.inner.topics.get(t).map(|c| c.queues))
    }

    /// Heartbeat of a group member; returns its current assignment.
    pub fn heartbeat(&self, group: &str, member: &str) -> Result<Assignment> {
        self.inner.groups.heartbeat(group, member, |t| {
            self.inner.topics.get(t).map(|c| c.queues)
        })
    }

    /// Leaves a consumer group.
    pub fn leave_group(&self, group: &str, member: &str) -> Result<()> {
        self.inner.groups.leave(group, member)
    }

    /// Groups with their mode and live members.
    pub fn groups(&self) -> Vec<(String, crate::ConsumeMode, Vec<String>)> {
        self.inner.groups.snapshot()
    }

    /// Offsets of every queue.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        let queues = self.inner.queues.read();
        let mut out: Vec<QueueStats> = queues
            .values()
            .flat_map(|qs| qs.iter())
            .map(|q| QueueStats {
                topic: q.topic.clone(),
                queue_id: q.queue_id,
                min_offset: self
                    .inner
                    .first_live_offset(q)
                    .unwrap_or_else(|_| q.consume_queue.min_offset()),
                max_offset: q.visible_len(),
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        out
    }

    /// Lag of every committed offset.
    pub fn lag(&self) -> Vec<LagStats> {
        self.inner.lag()
    }

    /// fdatasync calls of the commit log so far: in sync mode one covers
    /// every write waiting at that moment (group commit).
    pub fn log_syncs(&self) -> u64 {
        self.inner.group_commit.syncs()
    }

    /// End of the log as written (page cache).
    pub fn written_offset(&self) -> u64 {
        self.inner.log.written()
    }

    /// End of the log known durable.
    pub fn flushed_offset(&self) -> u64 {
        self.inner.log.flushed()
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
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.threads.stop();
        let inner = &self.inner;
        inner.check_failure()?;
        let end = inner.group_commit.flush_once(inner)?;
        inner.flush_consume_queues()?;
        inner.note_consume_queues_flushed(end)?;
        {
            let checkpoint = inner.checkpoint.lock();
            checkpoint.0.write(checkpoint.1, true)?;
        }
        inner.offsets.persist()?;
        std::fs::remove_file(inner.paths.abort_marker())
            .map_err(|e| BrokerError::io("remove the abort marker", e))?;
        fsync_dir(inner.paths.root())?;
        // Let a new broker open the store while stale handles linger.
        inner
            .lock
            .unlock()
            .map_err(|e| BrokerError::io("release the store lock", e))?;
        tracing::info!(log_end = end, "broker stopped cleanly");
        Ok(())
    }
}

impl Inner {
    pub(crate) async fn pull(&self, request: &PullRequest) -> Result<PullResult> {
        if request.max_messages == 0 {
            return Err(BrokerError::InvalidArgument(
                "max_messages must be at least 1".into(),
            ));
        }
        let filter = TagFilter::parse(request.tags.as_deref())?;
        let queue = self.queue(&request.topic, request.queue_id)?;
        let hold = Duration::from_millis(request.hold_ms).min(self.config.max_long_poll);
        let deadline = tokio::time::Instant::now() + hold;
        let mut offset = request.offset;
        // Bounds the entries one pull examines when a tag filter skips many.
        let mut scans_left = 8;
        loop {
            let min_offset = self.first_live_offset(&queue)?;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let visible = wait_for_arrival(&queue.visible, offset, remaining).await;
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
                self.read_matching(&queue, offset, visible, request, filter.as_ref())?;
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

    /// The first offset of `queue` whose record retention has not removed.
    /// Consume-queue entries point to increasing log offsets, so this is a
    /// binary search; almost always it is the queue's first entry.
    fn first_live_offset(&self, queue: &QueueState) -> Result<u64> {
        let log_min = self.log.min_offset();
        let mut low = queue.consume_queue.min_offset();
        let mut high = queue.consume_queue.len();
        while low < high {
            let middle = low + (high - low) / 2;
            if queue.consume_queue.get(middle)?.commit_log_offset < log_min {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }

    /// Reads messages of `queue` from `offset` (below `visible`) that pass
    /// `filter`, within the request's count and byte budget. Returns them
    /// and the offset after the last entry examined.
    fn read_matching(
        &self,
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
            .consume_queue
            .read(offset, scan.min(visible - offset))?;
        let mut messages = Vec::new();
        let mut bytes = 0u64;
        let mut next = offset;
        for entry in entries {
            if messages.len() as u64 == wanted {
                break;
            }
            // Removed by retention, or filtered out by tag hash.
            let expired = entry.commit_log_offset < self.log.min_offset();
            if expired || filter.is_some_and(|f| !f.may_match(entry.tag_hash)) {
                next += 1;
                continue;
            }
            if !messages.is_empty() && bytes + u64::from(entry.size) > u64::from(request.max_bytes)
            {
                break;
            }
            let message = self.log.read(entry.commit_log_offset, entry.size)?;
            next += 1;
            if filter.is_some_and(|f| !f.matches(&message.message.tags)) {
                continue;
            }
            bytes += u64::from(entry.size);
            messages.push(message);
        }
        Ok((messages, next))
    }

    /// A producer's append: system topics are refused, delayed messages go
    /// to the delay topic.
    pub(crate) fn put_user(
        &self,
        queue_id: u32,
        messages: Vec<Message>,
    ) -> Result<(Vec<SendResult>, u64)> {
        for message in &messages {
            self.check_user_message(message)?;
        }
        self.put_internal(queue_id, messages)
    }

    /// Refuses what only the broker may write: system topics, and the
    /// properties that route or resolve system messages.
    pub(crate) fn check_user_message(&self, message: &Message) -> Result<()> {
        if is_system_topic(&message.topic) {
            return Err(BrokerError::InvalidTopic {
                name: message.topic.clone(),
                reason: "topics starting with '%' are reserved for the broker",
            });
        }
        for reserved in [
            property::REAL_TOPIC,
            property::REAL_QUEUE,
            property::HALF_OFFSET,
            property::PRODUCER_GROUP,
        ] {
            if message.properties.contains_key(reserved) {
                return Err(BrokerError::InvalidMessage(format!(
                    "property {reserved} is reserved for the broker"
                )));
            }
        }
        Ok(())
    }

    /// The broker's own append (retries, commits, deliveries): like a
    /// producer's, but system topics are allowed.
    pub(crate) fn put_internal(
        &self,
        queue_id: u32,
        mut messages: Vec<Message>,
    ) -> Result<(Vec<SendResult>, u64)> {
        let now = self.clock.now_ms();
        let mut due = Vec::with_capacity(messages.len());
        for message in &messages {
            due.push(delay_scheduler::due_time(message, now)?);
        }
        if due.iter().all(Option::is_none) {
            return self.append_system(queue_id, messages);
        }
        if due.iter().any(Option::is_none) {
            return Err(BrokerError::InvalidArgument(
                "a batch cannot mix delayed and immediate messages".into(),
            ));
        }
        // Validate the real destination now, not when the delay expires.
        let topic = messages[0].topic.clone();
        self.ensure_topic(&topic)?;
        self.queue(&topic, queue_id)?;
        messages = messages
            .into_iter()
            .zip(due)
            .map(|(m, due)| delay_scheduler::to_delay_topic(m, queue_id, due.expect("all delayed")))
            .collect();
        self.append_system(0, messages)
    }

    /// Waits until the log is durable up to `end`, as the flush mode promises.
    pub(crate) async fn wait_durable(&self, end: u64) -> Result<()> {
        if let FlushMode::Sync { timeout } = self.config.flush {
            self.group_commit.wait_flushed(self, end, timeout).await?;
        }
        Ok(())
    }

    /// Loads the delay index from the delay topic's consume queue, whose
    /// entries carry due times.
    fn restore_delays(&self) -> Result<()> {
        if self.topics.get(DELAY_TOPIC).is_none() {
            return Ok(());
        }
        let queue = self.queue(DELAY_TOPIC, 0)?;
        let mut offset = self
            .delays
            .watermark()
            .max(queue.consume_queue.min_offset());
        let end = queue.consume_queue.len();
        while offset < end {
            let entries = queue.consume_queue.read(offset, 4096)?;
            for (i, entry) in entries.iter().enumerate() {
                self.delays
                    .restore(offset + i as u64, entry.tag_hash as i64);
            }
            offset += entries.len() as u64;
        }
        Ok(())
    }

    /// Opens the consume queues of a topic found at startup.
    fn load_topic(
        &mut self,
        topic: &TopicConfig,
        log_end: u64,
        recovery: &mut RecoveryReport,
    ) -> Result<()> {
        let mut states = Vec::with_capacity(topic.queues as usize);
        for queue_id in 0..topic.queues {
            let dir = self.paths.consume_queue_dir(&topic.name, queue_id);
            let (consume_queue, dropped) =
                ConsumeQueue::open(&dir, self.config.consume_queue_entries_per_file, log_end)?;
            recovery.dropped_queue_entries += dropped;
            let len = consume_queue.len();
            states.push(Arc::new(QueueState {
                topic: topic.name.clone(),
                queue_id,
                consume_queue,
                visible: watch::channel(len).0,
            }));
        }
        self.queues
            .write()
            .insert(topic.name.clone(), states.into());
        Ok(())
    }

    /// The queues of `topic`, opening them on first use.
    fn topic_queues(&self, topic: &str) -> Result<Arc<[Arc<QueueState>]>> {
        if let Some(queues) = self.queues.read().get(topic) {
            return Ok(Arc::clone(queues));
        }
        let config = self
            .topics
            .get(topic)
            .ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))?;
        let mut queues = self.queues.write();
        if let Some(existing) = queues.get(topic) {
            return Ok(Arc::clone(existing));
        }
        let log_end = self.log.written();
        let mut states = Vec::with_capacity(config.queues as usize);
        for queue_id in 0..config.queues {
            let dir = self.paths.consume_queue_dir(topic, queue_id);
            let (consume_queue, _) =
                ConsumeQueue::open(&dir, self.config.consume_queue_entries_per_file, log_end)?;
            let len = consume_queue.len();
            states.push(Arc::new(QueueState {
                topic: topic.to_owned(),
                queue_id,
                consume_queue,
                visible: watch::channel(len).0,
            }));
        }
        let states: Arc<[Arc<QueueState>]> = states.into();
        queues.insert(topic.to_owned(), Arc::clone(&states));
        Ok(states)
    }

    /// Makes sure `topic` exists: system topics are created with one queue,
    /// others with `default_queues` when auto-creation is on.
    pub(crate) fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self.topics.get(topic).is_some() {
            return Ok(());
        }
        if is_system_topic(topic) {
            self.topics.create(topic, 1)?;
        } else if self.config.auto_create_topics {
            self.topics.create(topic, self.config.default_queues)?;
        } else {
            return Err(BrokerError::TopicNotFound(topic.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn queue(&self, topic: &str, queue_id: u32) -> Result<Arc<QueueState>> {
        let queues = self.topic_queues(topic)?;
        queues
            .get(queue_id as usize)
            .cloned()
            .ok_or_else(|| BrokerError::QueueNotFound {
                topic: topic.to_owned(),
                queue_id,
                queues: queues.len() as u32,
            })
    }

    /// Measures the store's file system and refuses or re-allows writes.
    pub(crate) fn check_disk_usage(&self) -> Result<()> {
        let stats = fs4::statvfs(self.paths.root())
            .map_err(|e| BrokerError::io("measure disk usage", e))?;
        let total = stats.total_space();
        if total == 0 {
            return Ok(());
        }
        let used = 1.0 - stats.available_space() as f64 / total as f64;
        let full = used > self.config.max_disk_usage_ratio;
        let percent = if full {
            (used * 100.0).max(f64::MIN_POSITIVE)
        } else {
            0.0
        };
        let before = self
            .disk_full_percent
            .swap(percent.to_bits(), Ordering::AcqRel);
        if full && before == 0 {
            tracing::error!(
                used_percent = used * 100.0,
                "disk too full: refusing writes"
            );
        } else if !full && before != 0 {
            tracing::info!(
                used_percent = used * 100.0,
                "disk usage back under the limit: accepting writes"
            );
        }
        metrics::gauge!(DISK_USAGE_RATIO).set(used);
        Ok(())
    }

    fn check_failure(&self) -> Result<()> {
        match &*self.failure.lock() {
            Some(failure) => Err(BrokerError::StorageFailed(failure.clone())),
            None => Ok(()),
        }
    }

    pub(crate) fn fail(&self, failure: &str) {
        self.failure
            .lock()
            .get_or_insert_with(|| failure.to_owned());
    }

    /// Appends a batch to one queue. Returns the results and the log offset
    /// the batch ends at (what a durable acknowledgement must cover).
    pub(crate) fn append_system(
        &self,
        queue_id: u32,
        mut messages: Vec<Message>,
    ) -> Result<(Vec<SendResult>, u64)> {
        if self.closing.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        self.check_failure()?;
        let full = f64::from_bits(self.disk_full_percent.load(Ordering::Acquire));
        if full > 0.0 {
            return Err(BrokerError::DiskFull {
                used_percent: full,
                limit_percent: self.config.max_disk_usage_ratio * 100.0,
            });
        }
        let Some(first) = messages.first() else {
            return Err(BrokerError::InvalidArgument(
                "a send needs at least one message".into(),
            ));
        };
        let topic = first.topic.clone();
        if messages.iter().any(|m| m.topic != topic) {
            return Err(BrokerError::InvalidArgument(
                "every message of a batch must have the same topic".into(),
            ));
        }
        self.ensure_topic(&topic)?;
        let queue = self.queue(&topic, queue_id)?;
        let now = self.clock.now_ms();
        let mut lens = Vec::with_capacity(messages.len());
        for message in &mut messages {
            let len = record::encoded_len(message)
                .map_err(|e| BrokerError::InvalidMessage(e.to_string()))?;
            if len > self.config.max_message_size {
                return Err(BrokerError::MessageTooLarge {
                    size: len,
                    max: self.config.max_message_size,
                });
            }
            if message.born_timestamp_ms == 0 {
                message.born_timestamp_ms = now;
            }
            lens.push(len);
        }

        let mut writer = self.append.lock();
        // Taken under the lock so store timestamps follow log order.
        let store_timestamp_ms = self.clock.store_timestamp_ms();
        let first_queue_offset = queue.consume_queue.len();
        let mut results = Vec::with_capacity(messages.len());
        let mut entries = Vec::with_capacity(messages.len());
        let mut total_bytes = 0u64;
        let written = (|| -> Result<()> {
            for (i, (message, &len)) in messages.iter().zip(&lens).enumerate() {
                let offset = writer.position_for(&self.log, len)?;
                let placement = Placement {
                    queue_id,
                    queue_offset: first_queue_offset + i as u64,
                    commit_log_offset: offset,
                    store_timestamp_ms,
                };
                record::encode_into(message, placement, len, writer.buffer());
                writer.advance(len);
                total_bytes += len as u64;
                entries.push(QueueEntry {
                    commit_log_offset: offset,
                    size: len as u32,
                    tag_hash: tag_code(message),
                });
                results.push(SendResult {
                    msg_id: format!("{offset:016X}"),
                    topic: topic.clone(),
                    queue_id,
                    queue_offset: placement.queue_offset,
                    commit_log_offset: offset,
                });
            }
            writer.write_buffer(&self.log)?;
            for (i, entry) in entries.iter().enumerate() {
                queue
                    .consume_queue
                    .put(first_queue_offset + i as u64, *entry)?;
            }
            let keyed: Vec<(u64, u64)> = messages
                .iter()
                .zip(&entries)
                .filter(|(m, _)| !m.key.is_empty())
                .map(|(m, e)| (key_hash(&m.key), e.commit_log_offset))
                .collect();
            self.key_index.add(&keyed)?;
            Ok(())
        })();
        if let Err(e) = written {
            // The log and its queues may now disagree; only recovery can
            // tell what reached the disk. Refuse further writes until then.
            writer.discard_buffer();
            self.fail(&e.to_string());
            return Err(e);
        }
        let end = writer.next_offset();
        let dirty = end - self.log.flushed();
        self.group_commit.appended(
            PendingVisibility {
                end,
                queue: Arc::clone(&queue),
                visible_len: first_queue_offset + messages.len() as u64,
            },
            dirty,
        );
        drop(writer);
        if topic == DELAY_TOPIC {
            for (i, entry) in entries.iter().enumerate() {
                self.delays
                    .schedule(first_queue_offset + i as u64, entry.tag_hash as i64);
            }
        }
        metrics::counter!(APPENDED_MESSAGES).increment(messages.len() as u64);
        metrics::counter!(APPENDED_BYTES).increment(total_bytes);
        Ok((results, end))
    }

    /// Re-creates the consume-queue entry of a record found in the log.
    fn redispatch(&self, message: &StoredMessage, log_end: u64) -> Result<()> {
        let topic = &message.message.topic;
        if self.topics.get(topic).is_none() {
            // The topic was auto-created and the crash beat its config write.
            let queues = if is_system_topic(topic) {
                message.queue_id + 1
            } else {
                self.config.default_queues.max(message.queue_id + 1)
            };
            self.topics.create(topic, queues)?;
        }
        let queue = self.queue(topic, message.queue_id)?;
        debug_assert!(message.commit_log_offset < log_end);
        queue.consume_queue.put(
            message.queue_offset,
            QueueEntry {
                commit_log_offset: message.commit_log_offset,
                size: message.stored_size,
                tag_hash: tag_code(&message.message),
            },
        )?;
        queue.publish_visible(queue.consume_queue.len());
        if !message.message.key.is_empty() {
            self.key_index
                .add(&[(key_hash(&message.message.key), message.commit_log_offset)])?;
        }
        Ok(())
    }

    pub(crate) fn all_queues(&self) -> Vec<Arc<QueueState>> {
        self.queues
            .read()
            .values()
            .flat_map(|qs| qs.iter().cloned())
            .collect()
    }

    fn flush_consume_queues(&self) -> Result<()> {
        self.key_index.flush()?;
        for queue in self.all_queues() {
            queue.consume_queue.flush()?;
        }
        Ok(())
    }

    pub(crate) fn note_log_flushed(&self, offset: u64) {
        let mut checkpoint = self.checkpoint.lock();
        checkpoint.1.log_flushed = checkpoint.1.log_flushed.max(offset);
        let current = checkpoint.1;
        if let Err(e) = checkpoint.0.write(current, false) {
            tracing::warn!(error = %e, "could not write the checkpoint");
        }
    }

    fn note_consume_queues_flushed(&self, offset: u64) -> Result<()> {
        let mut checkpoint = self.checkpoint.lock();
        checkpoint.1.consume_queue_flushed = checkpoint.1.consume_queue_flushed.max(offset);
        let current = checkpoint.1;
        checkpoint.0.write(current, true)
    }

    /// The maintenance thread: consume-queue flushes, checkpoint, offsets, lag.
    fn run_maintenance(&self, stop: &(Mutex<bool>, Condvar)) {
        let tick = self
            .config
            .consume_queue_flush_interval
            .min(self.config.offset_persist_interval)
            .max(Duration::from_millis(10));
        loop {
            {
                let mut stopped = stop.0.lock();
                if *stopped {
                    return;
                }
                stop.1.wait_for(&mut stopped, tick);
                if *stopped {
                    return;
                }
            }
            // Read the log end first: every entry for records below it was
            // written under the append lock before this point.
            let covered = self.log.written();
            if let Err(e) = self.check_disk_usage() {
                tracing::warn!(error = %e, "could not measure disk usage");
            }
            let result = self
                .flush_consume_queues()
                .and_then(|()| self.note_consume_queues_flushed(covered))
                .and_then(|()| self.offsets.persist());
            if let Err(e) = result {
                tracing::error!(error = %e, "broker maintenance failed");
            }
            for queue in self.all_queues() {
                if let Some(group) = queue.topic.strip_prefix("%DLQ%") {
                    metrics::gauge!(DLQ_MESSAGES, "group" => group.to_owned())
                        .set(queue.visible_len() as f64);
                }
            }
            for lag in self.lag() {
                metrics::gauge!(CONSUMER_LAG, "group" => lag.group, "topic" => lag.topic, "queue" => lag.queue_id.to_string())
                    .set(lag.lag as f64);
            }
        }
    }

    fn lag(&self) -> Vec<LagStats> {
        self.offsets
            .all()
            .into_iter()
            .filter_map(|((group, topic, queue_id), committed)| {
                let queue = self.queue(&topic, queue_id).ok()?;
                let max_offset = queue.visible_len();
                Some(LagStats {
                    lag: max_offset.saturating_sub(committed),
                    group,
                    topic,
                    queue_id,
                    committed,
                    max_offset,
                })
            })
            .collect()
    }
}

/// What a consume-queue entry stores in its tag-hash field: the tag hash,
/// or for the delay topic the due time (RocketMQ's schedule topic does the
/// same), so the delay index is rebuilt from consume-queue entries alone.
fn tag_code(message: &Message) -> u64 {
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
