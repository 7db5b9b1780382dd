//! Broker settings, with defaults that follow RocketMQ's where it has one.
//!
//! Every number that trades durability or latency for throughput lives here,
//! with the trade-off written beside it.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{BrokerError, Result};
use crate::record::{BLANK_RECORD_LEN, FIXED_HEADER_LEN};

/// How appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Acknowledge after the write reaches the page cache; a background
    /// flusher fsyncs every `interval` or once `bytes` are dirty. Fast; a
    /// power loss can lose up to one interval of acknowledged messages (a
    /// process crash loses nothing: the page cache survives it).
    Async {
        /// Longest time data stays unflushed.
        interval: Duration,
        /// Flush early once this many bytes are dirty.
        bytes: u64,
    },
    /// Acknowledge only after an fdatasync covers the write. Concurrent
    /// writers share one fdatasync (group commit), so throughput is bounded
    /// by the disk's bandwidth rather than its fsync rate. Messages become
    /// visible to consumers only once flushed, so nothing is consumed that a
    /// power loss could take back.
    Sync {
        /// How long a writer waits for its flush before giving up with
        /// [`BrokerError::FlushTimeout`] (RocketMQ's `FLUSH_DISK_TIMEOUT`, 5 s).
        timeout: Duration,
    },
}

impl FlushMode {
    /// Group commit with RocketMQ's 5 s flush timeout.
    pub fn sync() -> Self {
        FlushMode::Sync {
            timeout: Duration::from_secs(5),
        }
    }

    /// Background flush every 500 ms or 16 MiB, whichever comes first.
    pub fn async_default() -> Self {
        FlushMode::Async {
            interval: Duration::from_millis(500),
            bytes: 16 << 20,
        }
    }

    /// Name used in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            FlushMode::Async { .. } => "async",
            FlushMode::Sync { .. } => "sync",
        }
    }
}

/// Settings of one broker store.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Directory holding the store (created if missing).
    pub data_dir: PathBuf,
    /// Commit-log segment size. Default 1 GiB (RocketMQ's); tests use KiBs.
    /// Fixed for the life of a store: segment names encode it.
    pub segment_size: u64,
    /// Largest encoded record accepted. Default 4 MiB.
    pub max_message_size: usize,
    /// Consume-queue entries per file (20 bytes each). Default 300,000 (~5.7 MB).
    pub consume_queue_entries_per_file: u64,
    /// Durability of appends.
    pub flush: FlushMode,
    /// How often consume queues are fsynced and the checkpoint advanced.
    /// They can be rebuilt from the log, so this bounds recovery work, not
    /// data loss.
    pub consume_queue_flush_interval: Duration,
    /// How often committed consumer offsets are persisted. A crash rolls
    /// consumers back by at most this much (they see some messages again;
    /// consumers must be idempotent).
    pub offset_persist_interval: Duration,
    /// Longest a pull may be held waiting for messages. Default 15 s
    /// (RocketMQ's `BROKER_SUSPEND_MAX_TIME_MILLIS`).
    pub max_long_poll: Duration,
    /// A group member that has not sent a heartbeat for this long is
    /// dropped and its queues go to the others.
    pub member_expiry: Duration,
    /// Create unknown topics on first send with `default_queues` queues.
    pub auto_create_topics: bool,
    /// Queue count of auto-created topics.
    pub default_queues: u32,
    /// Retries of a failed message before the next failure sends it to the
    /// dead-letter topic. Default 16 (RocketMQ's).
    pub max_reconsume_times: u32,
    /// A half message older than this without commit or rollback is
    /// checked back with its producer. Default 6 s (RocketMQ's).
    pub transaction_timeout: Duration,
    /// Time between check-backs of one open transaction. Default 30 s.
    pub transaction_check_interval: Duration,
    /// Unknown answers after which an open transaction is rolled back.
    /// Default 15.
    pub transaction_max_checks: u32,
    /// Segments whose every record is older than this are deleted.
    /// Default 72 h (RocketMQ's `fileReservedTime`).
    pub retention: Duration,
    /// How often retention runs. Default 60 s.
    pub retention_check_interval: Duration,
    /// Above this share of the store's file system in use, writes are
    /// refused rather than let the disk fill (RocketMQ's
    /// `diskSpaceWarningLevelRatio`, 0.90). Checked at open and on every
    /// maintenance tick.
    pub max_disk_usage_ratio: f64,
}

impl BrokerConfig {
    /// Defaults for a store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            segment_size: 1 << 30,
            max_message_size: 4 << 20,
            consume_queue_entries_per_file: 300_000,
            flush: FlushMode::sync(),
            consume_queue_flush_interval: Duration::from_secs(1),
            offset_persist_interval: Duration::from_secs(1),
            max_long_poll: Duration::from_secs(15),
            member_expiry: Duration::from_secs(30),
            auto_create_topics: true,
            default_queues: 4,
            max_reconsume_times: 16,
            transaction_timeout: Duration::from_secs(6),
            transaction_check_interval: Duration::from_secs(30),
            transaction_max_checks: 15,
            retention: Duration::from_secs(72 * 3600),
            retention_check_interval: Duration::from_secs(60),
            max_disk_usage_ratio: 0.90,
        }
    }

    /// Checks the settings fit together; a clear error instead of a store
    /// that fails on its first large message.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(BrokerError::InvalidArgument(msg));
        let smallest_record = FIXED_HEADER_LEN + 13;
        if self.max_message_size < smallest_record {
            return invalid(format!(
                "max_message_size {} is below the smallest record ({smallest_record} bytes)",
                self.max_message_size
            ));
        }
        // A segment must hold the largest record and still have room for the
        // blank record that closes it.
        let needed = (self.max_message_size + BLANK_RECORD_LEN) as u64;
        if self.segment_size < needed {
            return invalid(format!(
                "segment_size {} cannot hold a max-size message ({} bytes) plus its end marker",
                self.segment_size, self.max_message_size
            ));
        }
        if self.segment_size > u32::MAX as u64 {
            return invalid(format!(
                "segment_size {} exceeds 4 GiB; a blank record's length is a u32",
                self.segment_size
            ));
        }
        if self.consume_queue_entries_per_file == 0 {
            return invalid("consume_queue_entries_per_file must be positive".into());
        }
        if !(self.max_disk_usage_ratio > 0.0 && self.max_disk_usage_ratio <= 1.0) {
            return invalid(format!(
                "max_disk_usage_ratio must be in (0, 1], not {}",
                self.max_disk_usage_ratio
            ));
        }
        if self.default_queues == 0 {
            return invalid("default_queues must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BrokerConfig::new("/tmp/x").validate().unwrap();
    }

    #[test]
    fn a_segment_smaller_than_the_largest_message_is_refused() {
        let mut config = BrokerConfig::new("/tmp/x");
        config.segment_size = 4096;
        config.max_message_size = 4096;
        assert!(config.validate().is_err());
        config.max_message_size = 4096 - BLANK_RECORD_LEN;
        config.validate().unwrap();
    }
}
