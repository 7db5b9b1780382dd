//! How a worker consumes: its group and member id, its rate, batch size,
//! long-poll hold, payment timeout, heartbeat and retry backoff — the
//! settings every part of the worker reads, in the module every part may
//! use.

use std::time::Duration;

/// The consumer group of order workers.
pub const DEFAULT_GROUP: &str = "order-worker";

/// How the worker consumes.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Consumer group.
    pub group: String,
    /// This worker's member id, unique in the group.
    pub member: String,
    /// Orders written per second, at most (0 = unlimited).
    pub rate_per_second: u32,
    /// Most orders per pull and per database batch.
    pub max_batch: u32,
    /// Longest a pull waits on an empty queue (long polling).
    pub pull_hold: Duration,
    /// How long a buyer has to pay before the order is cancelled.
    pub payment_timeout: Duration,
    /// How often the worker heartbeats each group (and learns of
    /// rebalances).
    pub heartbeat_interval: Duration,
    /// First wait after a failed database or broker call; doubles per
    /// attempt up to `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    /// Longest wait between attempts.
    pub retry_backoff_max: Duration,
    /// How often the registry is read for brokers that came or went.
    pub registry_refresh: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            group: DEFAULT_GROUP.into(),
            member: default_member_id(),
            rate_per_second: 2_000,
            max_batch: 200,
            pull_hold: Duration::from_secs(1),
            payment_timeout: Duration::from_secs(15 * 60),
            heartbeat_interval: Duration::from_secs(3),
            retry_backoff_min: Duration::from_millis(50),
            retry_backoff_max: Duration::from_secs(5),
            registry_refresh: Duration::from_secs(10),
        }
    }
}

/// `host-pid-nanos`: unique per process start.
pub fn default_member_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}
