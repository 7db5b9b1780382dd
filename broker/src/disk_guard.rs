//! The disk-usage guard: refuse writes while the store's file system is
//! fuller than `max_disk_usage_ratio`, and accept them again once it is not.
//!
//! Measuring is a `statvfs` call, done at open and by the maintenance
//! thread on every tick, never on the append path: an append only reads
//! the last verdict, one atomic load. Refusing early leaves room for what
//! must still be written (checkpoints, offsets, the segment being filled)
//! instead of failing an fsync when the disk is full.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{BrokerError, Result};
use crate::metrics::DISK_USAGE_RATIO;

/// The last measured verdict on disk usage.
#[derive(Debug)]
pub(crate) struct DiskGuard {
    /// Highest used fraction of the file system at which writes are taken.
    max_usage_ratio: f64,
    /// Set while the disk is fuller than the limit (the measured usage in
    /// percent, as f64 bits; 0 = not full).
    full_percent: AtomicU64,
}

impl DiskGuard {
    pub(crate) fn new(max_usage_ratio: f64) -> Self {
        DiskGuard {
            max_usage_ratio,
            full_percent: AtomicU64::new(0),
        }
    }

    /// Refuses a write while the last measurement found the disk too full.
    pub(crate) fn check(&self) -> Result<()> {
        let full = f64::from_bits(self.full_percent.load(Ordering::Acquire));
        if full > 0.0 {
            return Err(BrokerError::DiskFull {
                used_percent: full,
                limit_percent: self.max_usage_ratio * 100.0,
            });
        }
        Ok(())
    }

    /// Measures the file system holding `root` and refuses or re-allows
    /// writes accordingly.
    pub(crate) fn measure(&self, root: &Path) -> Result<()> {
        let stats = fs4::statvfs(root).map_err(|e| BrokerError::io("measure disk usage", e))?;
        let total = stats.total_space();
        if total == 0 {
            return Ok(());
        }
        let used = 1.0 - stats.available_space() as f64 / total as f64;
        self.record(used);
        metrics::gauge!(DISK_USAGE_RATIO).set(used);
        Ok(())
    }

    /// Takes `used` (a fraction) as the current usage.
    fn record(&self, used: f64) {
        let full = used > self.max_usage_ratio;
        let percent = if full {
            (used * 100.0).max(f64::MIN_POSITIVE)
        } else {
            0.0
        };
        let before = self.full_percent.swap(percent.to_bits(), Ordering::AcqRel);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_over_the_limit_and_taken_again_under_it() {
        let guard = DiskGuard::new(0.9);
        assert!(guard.check().is_ok());
        guard.record(0.95);
        match guard.check() {
            Err(BrokerError::DiskFull {
                used_percent,
                limit_percent,
            }) => {
                assert!((used_percent - 95.0).abs() < 1e-9);
                assert!((limit_percent - 90.0).abs() < 1e-9);
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
        guard.record(0.5);
        assert!(guard.check().is_ok());
    }
}
