//! The flusher: makes appended data durable, with group commit.
//!
//! One thread owns every fdatasync of the commit log. Writers never call
//! fsync themselves:
//!
//! - **Sync mode.** A writer appends under the append lock, then registers
//!   `(end offset, completion)` here and waits. The flusher flushes whenever
//!   the log has unflushed bytes; while one fdatasync runs, more writers
//!   append and queue up, and the next fdatasync covers all of them. The
//!   batch forms by itself — no timer delays the first writer — and under
//!   load one fdatasync acknowledges many writers (RocketMQ's
//!   `GroupCommitService`, which swaps request lists between flushes).
//!   Messages become *visible* to consumers only when a flush covers them.
//! - **Async mode.** Writers return after the append; the flusher fsyncs
//!   every `interval`, or sooner once `bytes` are dirty.
//!
//! A failed fdatasync is final: the kernel may already have dropped the
//! dirty pages, so retrying could report success for lost data. The broker
//! fails every waiter and refuses writes until a restart recovers from disk.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::commit_log::{CommitLog, Segment};
use crate::config::FlushMode;
use crate::error::{BrokerError, Result};
use crate::metrics::{FLUSH_SECONDS, GROUP_COMMIT_BATCH};
use crate::queues::QueueState;

/// How long an idle sync-mode flusher sleeps before re-checking; wake-ups
/// normally come from writers, this only bounds a missed one.
const IDLE_RECHECK: Duration = Duration::from_millis(50);

/// What the flusher makes durable. The storage core implements it; the
/// flusher sees the log and three hooks, not the store's other state.
pub(crate) trait FlushTarget {
    /// The commit log: its written and flushed offsets.
    fn log(&self) -> &CommitLog;
    /// The log's written end and the segment it lies in, read together
    /// under the append lock so the segment holds every byte below the end.
    fn written_end(&self) -> (u64, Arc<Segment>);
    /// Latches a storage failure: every later write is refused.
    fn fail(&self, failure: &str);
    /// Records that the log is durable up to `offset` (the checkpoint).
    fn note_log_flushed(&self, offset: u64);
}

/// A queue's new visible length, to publish once the log is durable up to `end`.
#[derive(Debug)]
pub(crate) struct PendingVisibility {
    pub(crate) end: u64,
    pub(crate) queue: Arc<QueueState>,
    pub(crate) visible_len: u64,
}

#[derive(Debug)]
struct Waiter {
    end: u64,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Debug, Default)]
struct FlushQueue {
    waiters: Vec<Waiter>,
    pending_visibility: VecDeque<PendingVisibility>,
    stop: bool,
    failed: Option<String>,
}

/// Shared between writers and the flusher thread.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    mode: FlushMode,
    state: Mutex<FlushQueue>,
    wake: Condvar,
    /// fdatasync calls made so far (for stats and tests: with many
    /// writers, far fewer than the writes).
    syncs: std::sync::atomic::AtomicU64,
}

impl GroupCommit {
    pub(crate) fn new(mode: FlushMode) -> Self {
        GroupCommit {
            mode,
            state: Mutex::new(FlushQueue::default()),
            wake: Condvar::new(),
            syncs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Called by a writer, still under the append lock, after its records
    /// are in the page cache, once per batch with the new length of every
    /// queue it touched. In sync mode the queues' new lengths are published
    /// only after the flush; in async mode they are returned, for the
    /// writer to publish now (after releasing the append lock).
    #[must_use = "in async mode the returned lengths must be published"]
    pub(crate) fn appended(
        &self,
        visibility: Vec<PendingVisibility>,
        dirty_bytes: u64,
    ) -> Vec<PendingVisibility> {
        match self.mode {
            FlushMode::Sync { .. } => {
                let mut state = self.state.lock();
                state.pending_visibility.extend(visibility);
                self.wake.notify_one();
                Vec::new()
            }
            FlushMode::Async { bytes, .. } => {
                if dirty_bytes >= bytes {
                    let _state = self.state.lock();
                    self.wake.notify_one();
                }
                visibility
            }
        }
    }

    /// Waits until the log is durable up to `end` (sync mode).
    pub(crate) async fn wait_flushed(
        &self,
        log: &CommitLog,
        end: u64,
        timeout: Duration,
    ) -> Result<()> {
        let rx = {
            let mut state = self.state.lock();
            if let Some(failure) = &state.failed {
                return Err(BrokerError::StorageFailed(failure.clone()));
            }
            // Checked under the lock the flusher advances `flushed` under,
            // so either this sees the new offset or the flusher sees the
            // waiter: no wake-up is missed.
            if log.flushed() >= end {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            state.waiters.push(Waiter { end, done: tx });
            self.wake.notify_one();
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(failure))) => Err(BrokerError::StorageFailed(failure)),
            Ok(Err(_)) => Err(BrokerError::StorageFailed(
                "the broker stopped before the flush".into(),
            )),
            Err(_) => Err(BrokerError::FlushTimeout(timeout)),
        }
    }

    /// fdatasync calls made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the flusher thread to exit after its current round.
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }

    /// The flusher thread's body.
    pub(crate) fn run(&self, target: &dyn FlushTarget) {
        let mut last_flush = Instant::now();
        loop {
            {
                let mut state = self.state.lock();
                loop {
                    if state.stop || state.failed.is_some() {
                        return;
                    }
                    let dirty = target.log().written() - target.log().flushed();
                    let wait = match self.mode {
                        FlushMode::Sync { .. } if dirty > 0 => break,
                        FlushMode::Sync { .. } => IDLE_RECHECK,
                        FlushMode::Async { interval, bytes } => {
                            let due = last_flush.elapsed() >= interval;
                            if dirty >= bytes || (dirty > 0 && due) {
                                break;
                            }
                            interval
                                .saturating_sub(last_flush.elapsed())
                                .max(Duration::from_millis(1))
                        }
                    };
                    self.wake.wait_for(&mut state, wait);
                }
            }
            last_flush = Instant::now();
            if let Err(e) = self.flush_once(target) {
                tracing::error!(error = %e, "commit log flush failed; refusing further writes");
                return;
            }
        }
    }

    /// One flush round: fsync what is written now, then acknowledge every
    /// waiter and publish every queue length it covers. Also used at
    /// shutdown. Returns the offset now durable.
    pub(crate) fn flush_once(&self, store: &dyn FlushTarget) -> Result<u64> {
        let (target, segment) = store.written_end();
        if target > store.log().flushed() {
            let started = Instant::now();
            if let Err(e) = segment.sync_data() {
                let failure = e.to_string();
                store.fail(&failure);
                self.fail_all(&failure);
                return Err(e);
            }
            metrics::histogram!(FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.complete_up_to(store.log(), target);
            store.note_log_flushed(target);
        } else {
            self.complete_up_to(store.log(), target);
        }
        Ok(target)
    }

    /// Publishes `durable` as the flushed offset, the queue lengths it
    /// covers, and acknowledges the writers it covers — all in one critical
    /// section, so a writer that sees its data flushed also finds it
    /// visible to its next pull.
    fn complete_up_to(&self, log: &CommitLog, durable: u64) {
        let mut done = Vec::new();
        {
            let mut state = self.state.lock();
            log.set_flushed(durable);
            let mut i = 0;
            while i < state.waiters.len() {
                if state.waiters[i].end <= durable {
                    done.push(state.waiters.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            while state
                .pending_visibility
                .front()
                .is_some_and(|p| p.end <= durable)
            {
                let p = state.pending_visibility.pop_front().expect("checked");
                p.queue.publish_visible(p.visible_len);
            }
        }
        if !done.is_empty() {
            metrics::histogram!(GROUP_COMMIT_BATCH).record(done.len() as f64);
        }
        for waiter in done {
            let _ = waiter.done.send(Ok(()));
        }
    }

    /// Fails every waiter and every later write.
    fn fail_all(&self, failure: &str) {
        let waiters = {
            let mut state = self.state.lock();
            state.failed = Some(failure.to_owned());
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            let _ = waiter.done.send(Err(failure.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    //! Group commit against a bare commit log: no store, no broker. The
    //! target below is what the store provides, reduced to the log, its
    //! writer and two recorded hooks.

    use super::*;
    use crate::commit_log::LogWriter;
    use crate::consume_queue::ConsumeQueue;
    use crate::record::{self, Message, Placement};

    #[derive(Debug)]
    struct BareLog {
        log: CommitLog,
        writer: Mutex<LogWriter>,
        failures: Mutex<Vec<String>>,
        flushed_notes: Mutex<Vec<u64>>,
    }

    impl BareLog {
        fn open(dir: &std::path::Path) -> BareLog {
            let (log, writer, _) = CommitLog::open(dir, 1 << 20, None, false).unwrap();
            BareLog {
                log,
                writer: Mutex::new(writer),
                failures: Mutex::new(Vec::new()),
                flushed_notes: Mutex::new(Vec::new()),
            }
        }

        /// Appends one record and returns the log offset it ends at.
        fn append(&self, body: &str) -> u64 {
            let message = Message::new("t", body.to_owned());
            let len = record::encoded_len(&message).unwrap();
            let mut writer = self.writer.lock();
            let offset = writer.position_for(&self.log, len).unwrap();
            let placement = Placement {
                queue_id: 0,
                queue_offset: 0,
                commit_log_offset: offset,
                store_timestamp_ms: 1,
            };
            record::encode_into(&message, placement, len, writer.buffer());
            writer.advance(len);
            writer.write_buffer(&self.log).unwrap();
            writer.next_offset()
        }
    }

    impl FlushTarget for BareLog {
        fn log(&self) -> &CommitLog {
            &self.log
        }

        fn written_end(&self) -> (u64, Arc<Segment>) {
            let writer = self.writer.lock();
            (self.log.written(), writer.current_segment())
        }

        fn fail(&self, failure: &str) {
            self.failures.lock().push(failure.to_owned());
        }

        fn note_log_flushed(&self, offset: u64) {
            self.flushed_notes.lock().push(offset);
        }
    }

    fn queue(dir: &std::path::Path) -> Arc<QueueState> {
        let (consume_queue, _) = ConsumeQueue::open(dir, 16, u64::MAX).unwrap();
        Arc::new(QueueState::new("t", 0, consume_queue))
    }

    #[test]
    fn one_flush_makes_every_append_durable_and_then_visible() {
        let dir = tempfile::tempdir().unwrap();
        let target = BareLog::open(&dir.path().join("log"));
        let queue = queue(&dir.path().join("queue"));
        let group_commit = GroupCommit::new(FlushMode::sync());
        let mut end = 0;
        for (i, body) in ["a", "b", "c"].iter().enumerate() {
            end = target.append(body);
            let pending = PendingVisibility {
                end,
                queue: Arc::clone(&queue),
                visible_len: i as u64 + 1,
            };
            let publish_now = group_commit.appended(vec![pending], end - target.log.flushed());
            assert!(
                publish_now.is_empty(),
                "sync mode publishes after the flush"
            );
        }
        // Sync mode: nothing is visible before a flush covers it.
        assert_eq!(queue.visible_len(), 0);
        assert_eq!(group_commit.flush_once(&target).unwrap(), end);
        assert_eq!(group_commit.syncs(), 1);
        assert_eq!(target.log.flushed(), end);
        assert_eq!(queue.visible_len(), 3);
        assert_eq!(*target.flushed_notes.lock(), [end]);
        // Nothing new: no second fdatasync.
        assert_eq!(group_commit.flush_once(&target).unwrap(), end);
        assert_eq!(group_commit.syncs(), 1);
        assert!(target.failures.lock().is_empty());
    }

    #[tokio::test]
    async fn a_waiter_is_acknowledged_by_the_flush_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(BareLog::open(dir.path()));
        let group_commit = Arc::new(GroupCommit::new(FlushMode::sync()));
        let first = target.append("first");
        let second = target.append("second");
        let waiter = {
            let (target, group_commit) = (Arc::clone(&target), Arc::clone(&group_commit));
            tokio::spawn(async move {
                group_commit
                    .wait_flushed(&target.log, second, Duration::from_secs(5))
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        group_commit.flush_once(&*target).unwrap();
        waiter.await.unwrap().unwrap();
        // Already durable: answered at once, without the flusher.
        group_commit
            .wait_flushed(&target.log, first, Duration::from_millis(1))
            .await
            .unwrap();
        assert_eq!(group_commit.syncs(), 1);
    }

    #[tokio::test]
    async fn an_uncovered_write_times_out_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let target = BareLog::open(dir.path());
        let group_commit = GroupCommit::new(FlushMode::sync());
        let end = target.append("never flushed");
        let waited = group_commit
            .wait_flushed(&target.log, end, Duration::from_millis(20))
            .await;
        assert!(matches!(waited, Err(BrokerError::FlushTimeout(_))));
    }
}
