//! The seckill service's metric names, in one place.
//!
//! Histograms are exported with explicit buckets by the process that
//! installs the Prometheus recorder; labels are bounded (an outcome name,
//! never a user or item id). The stock store's own metrics (script time,
//! pool wait, flag updates) are named in `stock::metrics`.

pub use stock::metrics::{FLAG_UPDATES, LATENCY_BUCKETS, POOL_WAIT_SECONDS, SCRIPT_SECONDS};

/// Purchases by outcome: queued, duplicate, sold_out, sold_out_local
/// (answered from the flag, no store call), not_started, ended, error.
pub const RESERVATIONS: &str = "seckill_reservations_total";

/// Coalesced batches run (one half append, one script call each).
pub const BATCHES: &str = "seckill_batches_total";

/// Purchases decided in coalesced batches (over [`BATCHES`]: the mean
/// batch size).
pub const BATCHED_PURCHASES: &str = "seckill_batched_purchases_total";
