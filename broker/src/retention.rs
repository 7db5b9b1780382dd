//! Retention: delete whole commit-log segments once everything in them is
//! older than the retention time (default 72 h, RocketMQ's), with their
//! consume-queue files and key-index entries.
//!
//! A segment's newest record is no newer than the first record of the next
//! segment (store timestamps follow log order), so one header read per
//! segment decides. The segment being written is never deleted, and
//! neither is anything from the oldest still-pending delayed message or
//! open transaction onward: a four-day delay outlives a three-day retention
//! of everything around it, but not of itself.
//!
//! Consumers whose offsets fall below what is left get `OffsetTooSmall`
//! and move to the new start, as with any log that expires.

use std::sync::Arc;

use tokio::sync::watch;

use crate::broker::{Broker, Inner};
use crate::error::Result;
use crate::system_topics::{DELAY_TOPIC, HALF_TOPIC};
use crate::types::RetentionReport;

impl Inner {
    /// The log offset from which data must be kept for pending delays and
    /// open transactions.
    fn protected_from(&self) -> Result<u64> {
        let mut protect = u64::MAX;
        if let Some(offset) = self.delays.oldest_pending_offset() {
            protect = protect.min(self.queue(DELAY_TOPIC, 0)?.entry(offset)?.commit_log_offset);
        }
        if let Some(offset) = self.transactions.oldest_open() {
            protect = protect.min(self.queue(HALF_TOPIC, 0)?.entry(offset)?.commit_log_offset);
        }
        Ok(protect)
    }

    pub(crate) fn apply_retention(&self) -> Result<RetentionReport> {
        let cutoff = self.clock.now_ms() - self.config.retention.as_millis() as i64;
        let protect = self.protected_from()?;
        let bases = self.log.segment_bases();
        let mut report = RetentionReport::default();
        for pair in bases.windows(2) {
            let (base, next) = (pair[0], pair[1]);
            if protect < next {
                break;
            }
            // The next segment's first record is at least as new as
            // everything here; an empty next segment means "now".
            let newest_here = match self.log.store_timestamp_at(next) {
                Ok(ms) => ms,
                Err(_) => break,
            };
            if newest_here > cutoff {
                break;
            }
            self.log.remove_segment(base)?;
            report.segments_deleted += 1;
        }
        report.log_min_offset = self.log.min_offset();
        if report.segments_deleted > 0 {
            for queue in self.all_queues() {
                report.queue_files_deleted += queue.delete_expired_files(report.log_min_offset)?;
            }
            self.key_index.retain_from(report.log_min_offset)?;
            tracing::info!(?report, "retention deleted expired segments");
        }
        Ok(report)
    }
}

impl Broker {
    /// Runs one retention pass now (it also runs every
    /// `retention_check_interval`).
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        self.inner().apply_retention()
    }
}

/// The retention task.
pub(crate) async fn run_retention(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(inner.config.retention_check_interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = inner.apply_retention() {
            tracing::error!(error = %e, "retention pass failed");
        }
    }
}
