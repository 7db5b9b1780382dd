//! The broker's clock: wall-clock milliseconds that advance with Tokio's
//! clock.
//!
//! Store timestamps, delay deadlines and transaction timeouts all read this
//! clock. It starts at the system time and then advances with
//! `tokio::time::Instant`, so under `tokio::time::pause()` a test moves the
//! broker's notion of "now" with `tokio::time::advance` — delays of hours
//! are tested without sleeping. Outside a paused runtime it is the wall
//! clock, within the drift of a monotonic clock over the process lifetime.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, driven by Tokio's clock.
#[derive(Debug)]
pub(crate) struct Clock {
    base_ms: i64,
    base: Instant,
    /// Last value handed out for a store timestamp (kept monotonic).
    last_store_ms: AtomicI64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock {
            base_ms,
            base: Instant::now(),
            last_store_ms: AtomicI64::new(0),
        }
    }

    /// Now, in ms since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        self.base_ms + self.base.elapsed().as_millis() as i64
    }

    /// A store timestamp: now, but never earlier than the last one, so the
    /// timestamps of a queue are sorted and time lookup can binary-search.
    pub(crate) fn store_timestamp_ms(&self) -> i64 {
        let now = self.now_ms();
        let previous = self.last_store_ms.fetch_max(now, Ordering::AcqRel);
        now.max(previous)
    }

    /// Raises the floor of store timestamps (after recovery, to the newest
    /// timestamp already in the log).
    pub(crate) fn observe_store_timestamp(&self, ms: i64) {
        self.last_store_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// The `tokio::time::Instant` at which the clock reads `ms`.
    pub(crate) fn instant_at(&self, ms: i64) -> Instant {
        let from_base = (ms - self.base_ms).max(0) as u64;
        self.base + std::time::Duration::from_millis(from_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn advances_with_tokio_time_and_store_timestamps_never_go_back() {
        let clock = Clock::new();
        let start = clock.now_ms();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now_ms() - start, 3_600_000);
        clock.observe_store_timestamp(clock.now_ms() + 10_000);
        assert!(clock.store_timestamp_ms() >= start + 3_610_000);
        assert_eq!(
            clock.instant_at(clock.now_ms() + 5),
            Instant::now() + Duration::from_millis(5)
        );
    }
}
