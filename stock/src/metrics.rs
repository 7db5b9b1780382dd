//! The stock store's metric names, in one place.
//!
//! Histograms are exported with explicit buckets by the process that
//! installs the Prometheus recorder ([`HISTOGRAM_BUCKETS`]); labels are
//! bounded (an outcome name, never a user or item id).

/// Time one reserve.lua call took, store round trip included.
pub const SCRIPT_SECONDS: &str = "seckill_script_duration_seconds";
/// Time spent waiting for a Redis connection from the pool.
pub const POOL_WAIT_SECONDS: &str = "seckill_redis_pool_wait_seconds";
/// Sold-out flag changes applied from the store's publications.
pub const FLAG_UPDATES: &str = "seckill_flag_updates_total";

/// Suggested histogram buckets (seconds): 50 µs .. 1 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Every histogram of the stock store with its buckets, for the recorder.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (SCRIPT_SECONDS, LATENCY_BUCKETS),
    (POOL_WAIT_SECONDS, LATENCY_BUCKETS),
];
