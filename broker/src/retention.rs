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
//!
//! Retention knows no feature's state: each feature that parks messages in
//! the log (delays, transactions) implements [`RetentionHold`] and says
//! which record it still needs; the pass keeps everything from the oldest
//! of those onward. Deleting files and rewriting the key index is blocking
//! work, so the periodic pass runs on Tokio's blocking pool, never on a
//! runtime worker.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::Result;
use crate::store::Store;
use crate::types::RetentionReport;

/// A feature that keeps records in the log until it is done with them.
pub(crate) trait RetentionHold: Send + Sync + std::fmt::Debug {
    /// The commit-log offset of the oldest record this feature still
    /// needs, if any.
    fn oldest_needed(&self, store: &Store) -> Result<Option<u64>>;
}

/// One retention pass: deletes every segment older than the retention time
/// that holds nothing a feature in `holds` still needs. Blocking.
pub(crate) fn apply_retention(
    store: &Store,
    holds: &[Arc<dyn RetentionHold>],
) -> Result<RetentionReport> {
    let cutoff = store.clock().now_ms() - store.config().retention.as_millis() as i64;
    let mut protect = u64::MAX;
    for hold in holds {
        if let Some(offset) = hold.oldest_needed(store)? {
            protect = protect.min(offset);
        }
    }
    let log = store.log();
    let bases = log.segment_bases();
    let mut report = RetentionReport::default();
    for pair in bases.windows(2) {
        let (base, next) = (pair[0], pair[1]);
        if protect < next {
            break;
        }
        // The next segment's first record is at least as new as
        // everything here; an empty next segment means "now".
        let newest_here = match log.store_timestamp_at(next) {
            Ok(ms) => ms,
            Err(_) => break,
        };
        if newest_here > cutoff {
            break;
        }
        log.remove_segment(base)?;
        report.segments_deleted += 1;
    }
    report.log_min_offset = log.min_offset();
    if report.segments_deleted > 0 {
        report.queue_files_deleted = store.forget_below(report.log_min_offset)?;
        tracing::info!(?report, "retention deleted expired segments");
    }
    Ok(report)
}

/// The retention task: a pass every `retention_check_interval`, on the
/// blocking pool.
pub(crate) async fn run_retention(
    store: Arc<Store>,
    holds: Vec<Arc<dyn RetentionHold>>,
    mut stop: watch::Receiver<bool>,
) {
    let holds: Arc<[Arc<dyn RetentionHold>]> = holds.into();
    loop {
        tokio::select! {
            () = tokio::time::sleep(store.config().retention_check_interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let (pass_store, pass_holds) = (Arc::clone(&store), Arc::clone(&holds));
        let pass = tokio::task::spawn_blocking(move || apply_retention(&pass_store, &pass_holds));
        match pass.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention pass failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::record::{Message, tag_hash};

    /// A feature that still needs everything from one log offset on.
    #[derive(Debug)]
    struct NeedsFrom(Option<u64>);

    impl RetentionHold for NeedsFrom {
        fn oldest_needed(&self, _store: &Store) -> Result<Option<u64>> {
            Ok(self.0)
        }
    }

    fn expired_store(dir: &std::path::Path) -> (Store, Vec<u64>) {
        let mut config = BrokerConfig::new(dir);
        config.segment_size = 4096;
        config.max_message_size = 1024;
        config.max_disk_usage_ratio = 1.0;
        // Everything is older than no time at all.
        config.retention = std::time::Duration::ZERO;
        let store = Store::open(config, |m| tag_hash(&m.tags)).unwrap();
        let offsets = (0..200)
            .map(|i| {
                let (results, _) = store
                    .append(0, vec![Message::new("t", format!("message {i}"))])
                    .unwrap();
                results[0].commit_log_offset
            })
            .collect();
        (store, offsets)
    }

    #[test]
    fn expired_segments_go_but_never_the_one_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = expired_store(dir.path());
        let segments = store.log().segment_bases();
        assert!(segments.len() > 2);
        let report = apply_retention(&store, &[]).unwrap();
        assert_eq!(report.segments_deleted, segments.len() as u64 - 1);
        assert_eq!(store.log().segment_bases(), [*segments.last().unwrap()]);
        assert_eq!(report.log_min_offset, *segments.last().unwrap());
    }

    #[test]
    fn a_feature_keeps_every_segment_from_its_oldest_needed_record_on() {
        let dir = tempfile::tempdir().unwrap();
        let (store, offsets) = expired_store(dir.path());
        let segments = store.log().segment_bases();
        let needed = offsets[60];
        let holds: Vec<Arc<dyn RetentionHold>> =
            vec![Arc::new(NeedsFrom(None)), Arc::new(NeedsFrom(Some(needed)))];
        let report = apply_retention(&store, &holds).unwrap();
        let kept_from = *segments.iter().rev().find(|&&base| base <= needed).unwrap();
        assert_eq!(report.log_min_offset, kept_from);
        assert!(report.segments_deleted > 0, "{report:?}");
        assert!(store.log().min_offset() <= needed);
        assert!(store.read("t", 0, 60).is_ok());
    }
}
