//! The storage core: one store directory, opened (with crash recovery),
//! appended to and read from.
//!
//! ```text
//! append ──▶ append lock ──▶ commit log (pwrite) ──▶ consume-queue entries, key index
//!                 │                                   (same critical section, so
//!                 │                                    queue order = log order)
//!                 └──▶ group commit: the fdatasync that covers it (sync mode)
//! read ─▶ consume queue ─▶ commit log (pread, CRC-checked)
//! ```
//!
//! [`Store`] owns every piece whose invariants are about durability: the
//! commit log and its writer, the consume queues, the key index, group
//! commit, the checkpoint, the failure latch and the disk guard. Features
//! (delays, transactions, retry, retention, consumer groups, offsets) hold
//! their own state and use the store only through its methods, so what
//! "acknowledged means on disk" means is decided here and tested here.
//!
//! Dispatching inside the append lock, rather than in a separate reput
//! thread as RocketMQ does, keeps one ordering for log and queues and makes
//! a message consumable the moment it is durable; the consume queues are
//! still derived data, rebuilt from the log after a crash.
//!
//! The store knows nothing of topics' meanings. What a consume-queue entry
//! keeps in its tag field is asked of a [`TagCode`] given at open (the
//! delay topic keeps due times there), so recovery re-dispatches records
//! exactly as the append wrote them.
//!
//! Blocking file I/O on the append and read paths is one `pwrite`/`pread`
//! against the page cache, a few microseconds; fdatasync runs on the
//! flusher thread ([`Store::run_flusher`]), and consume-queue flushes on
//! whoever calls [`Store::flush_derived`] (the broker's maintenance thread).

use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::checkpoint::{Checkpoint, CheckpointFile};
use crate::clock::Clock;
use crate::commit_log::{CommitLog, LogWriter, Segment};
use crate::config::{BrokerConfig, FlushMode};
use crate::consume_queue::QueueEntry;
use crate::disk_guard::DiskGuard;
use crate::error::{BrokerError, Result};
use crate::failure_latch::FailureLatch;
use crate::fs_util::{create_dir_durable, fsync_dir};
use crate::group_commit::{FlushTarget, GroupCommit};
use crate::key_index::{KeyIndex, key_hash};
use crate::queues::{QueueState, QueueTable};
use crate::record::{Message, StoredMessage};
use crate::store_paths::StorePaths;
use crate::system_topics::is_system_topic;
use crate::topics::TopicRegistry;
use crate::types::{RecoveryReport, TopicConfig};

/// What a message's consume-queue entry stores in its tag-hash field:
/// normally the hash of its tags ([`crate::record::tag_hash`]); the broker
/// passes one that knows the delay topic's due times.
pub(crate) type TagCode = fn(&Message) -> u64;

/// An open store directory. Shared by the broker's handles, its
/// background threads and its feature tasks.
#[derive(Debug)]
pub(crate) struct Store {
    config: BrokerConfig,
    paths: StorePaths,
    clock: Clock,
    tag_code: TagCode,
    log: CommitLog,
    /// The append lock. Held while a batch is encoded, written and
    /// dispatched; everything that must happen in log order happens here.
    append: Mutex<LogWriter>,
    queues: QueueTable,
    topics: TopicRegistry,
    key_index: KeyIndex,
    group_commit: GroupCommit,
    checkpoint: Mutex<(CheckpointFile, Checkpoint)>,
    failure: FailureLatch,
    disk: DiskGuard,
    closing: AtomicBool,
    /// Producers' sends that wait for the one appending ([`combining`]).
    combiner: combining::Combiner,
    recovery: RecoveryReport,
    lock: File,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, recovering from a
    /// crash if the last stop was one: the log's torn tail is cut, consume
    /// queues and the key index are cut back to the log's end and
    /// re-dispatched from it, and whatever recovery kept is made durable
    /// before anyone reads it. Blocking. The caller validates `config`.
    pub(crate) fn open(config: BrokerConfig, tag_code: TagCode) -> Result<Store> {
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
        let mut store = Store {
            clock: Clock::new(),
            tag_code,
            key_index,
            group_commit: GroupCommit::new(config.flush),
            checkpoint: Mutex::new((checkpoint_file, checkpoint.unwrap_or_default())),
            append: Mutex::new(writer),
            queues: QueueTable::new(config.consume_queue_entries_per_file),
            failure: FailureLatch::default(),
            disk: DiskGuard::new(config.max_disk_usage_ratio),
            closing: AtomicBool::new(false),
            combiner: combining::Combiner::default(),
            recovery: RecoveryReport::default(),
            lock,
            topics,
            log,
            paths,
            config,
        };
        let log_end = recovery.log_end;
        let queue_root_existed = store.paths.consume_queue_root().is_dir();
        for topic in store.topics.list() {
            recovery.dropped_queue_entries +=
                store.queues.open_topic(&store.paths, &topic, log_end)?;
        }
        // Re-dispatch what the consume queues may be missing. After a
        // crash: everything past the last consume-queue flush. With the
        // consume queues deleted: the whole log.
        let log_has_data = log_end > store.log.min_offset();
        let redispatch_from = if !queue_root_existed || (!key_index_existed && log_has_data) {
            Some(store.log.min_offset())
        } else if crashed {
            Some(
                checkpoint
                    .map_or(0, |c| c.consume_queue_flushed)
                    .clamp(store.log.min_offset(), log_end),
            )
        } else {
            None
        };
        if let Some(from) = redispatch_from {
            recovery.redispatched = store
                .log
                .for_each_record(from, |m| store.redispatch(&m, log_end))?;
        }
        // Whatever recovery kept is now made durable, so consumers never
        // see data a power loss could still take back.
        store.append.lock().current_segment().sync_data()?;
        store.flush_consume_queues()?;
        store.note_log_flushed(log_end);
        store.note_consume_queues_flushed(log_end)?;
        std::fs::write(store.paths.abort_marker(), b"")
            .map_err(|e| BrokerError::io("create the abort marker", e))?;
        fsync_dir(store.paths.root())?;
        store.measure_disk_usage()?;
        store
            .clock
            .observe_store_timestamp(recovery.newest_store_timestamp_ms);
        if recovery.crashed {
            tracing::info!(?recovery, "crash recovery finished");
        }
        store.recovery = recovery;
        Ok(store)
    }

    /// The settings the store was opened with.
    pub(crate) fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Where everything of this store lives on disk.
    pub(crate) fn paths(&self) -> &StorePaths {
        &self.paths
    }

    /// The broker's clock; store timestamps come from it.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The commit log, for reads by log offset, scans and retention.
    pub(crate) fn log(&self) -> &CommitLog {
        &self.log
    }

    /// What recovery did when the store opened.
    pub(crate) fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// fdatasync calls of the commit log so far.
    pub(crate) fn log_syncs(&self) -> u64 {
        self.group_commit.syncs()
    }

    /// The flusher thread's body: returns once [`Store::stop_flusher`] is
    /// called or a flush fails.
    pub(crate) fn run_flusher(&self) {
        self.group_commit.run(self);
    }

    /// Asks the flusher thread to exit after its current round.
    pub(crate) fn stop_flusher(&self) {
        self.group_commit.stop();
    }

    // -- topics and queues -------------------------------------------------

    /// Creates a topic with `queues` queues (idempotent for the same count)
    /// and opens its consume queues.
    pub(crate) fn create_topic(&self, name: &str, queues: u32) -> Result<TopicConfig> {
        let config = self.topics.create(name, queues)?;
        self.topic_queues(name)?;
        Ok(config)
    }

    /// A topic's settings.
    pub(crate) fn topic(&self, name: &str) -> Option<TopicConfig> {
        self.topics.get(name)
    }

    /// Every topic.
    pub(crate) fn topics(&self) -> Vec<TopicConfig> {
        self.topics.list()
    }

    /// Makes sure `topic` exists: system topics are created with one queue,
    /// others with `default_queues` when auto-creation is on.
    pub(crate) fn ensure_topic(&self, topic: &str) -> Result<()> {
        if self.topics.contains(topic) {
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

    /// One queue of a topic.
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

    /// Every open queue of every topic.
    pub(crate) fn all_queues(&self) -> Vec<Arc<QueueState>> {
        self.queues.all()
    }

    /// The queues of `topic`, opening them on first use.
    fn topic_queues(&self, topic: &str) -> Result<Arc<[Arc<QueueState>]>> {
        self.queues.get_or_open(
            &self.paths,
            topic,
            || {
                self.topics
                    .get(topic)
                    .map(|config| config.queues)
                    .ok_or_else(|| BrokerError::TopicNotFound(topic.to_owned()))
            },
            || self.log.written(),
        )
    }

    // -- append (see `append.rs`) ------------------------------------------

    /// Waits until the log is durable up to `end`, as the flush mode promises.
    pub(crate) async fn wait_durable(&self, end: u64) -> Result<()> {
        if let FlushMode::Sync { timeout } = self.config.flush {
            self.group_commit
                .wait_flushed(&self.log, end, timeout)
                .await?;
        }
        Ok(())
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
        queue.consume_queue().put(
            message.queue_offset,
            QueueEntry {
                commit_log_offset: message.commit_log_offset,
                size: message.stored_size,
                tag_hash: (self.tag_code)(&message.message),
            },
        )?;
        queue.publish_visible(queue.consume_queue_len());
        if !message.message.key.is_empty() {
            self.key_index
                .add(&[(key_hash(&message.message.key), message.commit_log_offset)])?;
        }
        Ok(())
    }

    // -- reads -------------------------------------------------------------

    /// The message at `offset` of `topic`/`queue_id`.
    pub(crate) fn read(&self, topic: &str, queue_id: u32, offset: u64) -> Result<StoredMessage> {
        self.queue(topic, queue_id)?.read_message(&self.log, offset)
    }

    /// The first offset of `queue` whose record retention has not removed.
    /// Consume-queue entries point to increasing log offsets, so this is a
    /// binary search; almost always it is the queue's first entry.
    pub(crate) fn first_live_offset(&self, queue: &QueueState) -> Result<u64> {
        let log_min = self.log.min_offset();
        let mut low = queue.consume_queue_min();
        let mut high = queue.consume_queue_len();
        while low < high {
            let middle = low + (high - low) / 2;
            if queue.entry(middle)?.commit_log_offset < log_min {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }

    /// Messages whose key is `key` (optionally only in `topic`), oldest
    /// first, at most `max`. Records already removed by retention are
    /// skipped; a hash collision is caught by comparing the real key.
    pub(crate) fn messages_by_key(
        &self,
        key: &str,
        topic: Option<&str>,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        let mut found = Vec::new();
        for offset in self.key_index.lookup(key) {
            if found.len() >= max {
                break;
            }
            if offset < self.log.min_offset() {
                continue;
            }
            let message = self.log.read_at(offset)?;
            if message.message.key == key && topic.is_none_or(|t| t == message.message.topic) {
                found.push(message);
            }
        }
        Ok(found)
    }

    // -- derived data, checkpoint, disk ------------------------------------

    /// Forgets what lies below `log_min` after retention removed the
    /// segments holding it: expired consume-queue files and key-index
    /// entries. Returns the consume-queue files deleted.
    pub(crate) fn forget_below(&self, log_min: u64) -> Result<u64> {
        let mut files_deleted = 0;
        for queue in self.all_queues() {
            files_deleted += queue.delete_expired_files(log_min)?;
        }
        self.key_index.retain_from(log_min)?;
        Ok(files_deleted)
    }

    /// The log's end up to which every record's consume-queue and
    /// key-index entries are written. Read under the append lock: an
    /// append publishes the log's new end before it writes its entries, so
    /// [`CommitLog::written`] alone may run ahead of them.
    pub(crate) fn dispatched_end(&self) -> u64 {
        let _writer = self.append.lock();
        self.log.written()
    }

    /// Fsyncs the consume queues and the key index, then records in the
    /// checkpoint that entries for every record below `covered` are
    /// durable. `covered` must be read ([`Store::dispatched_end`]) before
    /// the call.
    pub(crate) fn flush_derived(&self, covered: u64) -> Result<()> {
        self.flush_consume_queues()?;
        self.note_consume_queues_flushed(covered)
    }

    fn flush_consume_queues(&self) -> Result<()> {
        self.key_index.flush()?;
        for queue in self.all_queues() {
            queue.consume_queue().flush()?;
        }
        Ok(())
    }

    fn note_consume_queues_flushed(&self, offset: u64) -> Result<()> {
        let mut checkpoint = self.checkpoint.lock();
        checkpoint.1.consume_queue_flushed = checkpoint.1.consume_queue_flushed.max(offset);
        let current = checkpoint.1;
        checkpoint.0.write(current, true)
    }

    /// Measures the store's file system and refuses or re-allows writes.
    pub(crate) fn measure_disk_usage(&self) -> Result<()> {
        self.disk.measure(self.paths.root())
    }

    // -- stopping ----------------------------------------------------------

    /// Marks the store closing; every later append fails with
    /// [`BrokerError::ShuttingDown`]. Returns whether it was closing already.
    pub(crate) fn begin_close(&self) -> bool {
        self.closing.swap(true, Ordering::AcqRel)
    }

    /// Stops as a crash would: writes are refused from here on, and the
    /// append lock is taken once as a barrier so an append in flight
    /// finishes first. The abort marker stays.
    pub(crate) fn refuse_writes(&self) {
        self.closing.store(true, Ordering::Release);
        drop(self.append.lock());
    }

    /// Releases the store lock so another broker may open the directory.
    pub(crate) fn release_lock(&self) -> Result<()> {
        self.lock
            .unlock()
            .map_err(|e| BrokerError::io("release the store lock", e))
    }

    /// The end of a clean stop, once the flusher has stopped: flushes the
    /// log and the consume queues, writes the checkpoint, runs
    /// `persist_features` (committed offsets), removes the abort marker so
    /// the next open needs no recovery, and releases the store lock.
    /// Returns the log's end.
    pub(crate) fn finish_clean_stop(
        &self,
        persist_features: impl FnOnce() -> Result<()>,
    ) -> Result<u64> {
        self.failure.check()?;
        let end = self.group_commit.flush_once(self)?;
        self.flush_derived(end)?;
        {
            let checkpoint = self.checkpoint.lock();
            checkpoint.0.write(checkpoint.1, true)?;
        }
        persist_features()?;
        std::fs::remove_file(self.paths.abort_marker())
            .map_err(|e| BrokerError::io("remove the abort marker", e))?;
        fsync_dir(self.paths.root())?;
        // Let a new broker open the store while stale handles linger.
        self.release_lock()?;
        Ok(end)
    }
}

impl FlushTarget for Store {
    fn log(&self) -> &CommitLog {
        &self.log
    }

    fn written_end(&self) -> (u64, Arc<Segment>) {
        let writer = self.append.lock();
        (self.log.written(), writer.current_segment())
    }

    fn fail(&self, failure: &str) {
        self.failure.fail(failure);
    }

    fn note_log_flushed(&self, offset: u64) {
        let mut checkpoint = self.checkpoint.lock();
        checkpoint.1.log_flushed = checkpoint.1.log_flushed.max(offset);
        let current = checkpoint.1;
        if let Err(e) = checkpoint.0.write(current, false) {
            tracing::warn!(error = %e, "could not write the checkpoint");
        }
    }
}

mod append;
mod combining;

#[cfg(test)]
mod tests;
