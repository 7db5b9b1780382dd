//! The order worker's metric names, in one place. Labels are bounded: an
//! outcome or topic kind, never an order, user or item id.

/// Orders written, by outcome: inserted, already_written (a redelivery),
/// conflicting (the user holds another live order), over_stock (the
/// database's own stock guard refused it). `rate()` of inserted is the
/// write rate.
pub const ORDERS_WRITTEN: &str = "worker_orders_written_total";
/// Orders per database batch.
pub const BATCH_SIZE: &str = "worker_batch_size";
/// Time one batch write took (the transaction, retries excluded).
pub const WRITE_SECONDS: &str = "worker_write_duration_seconds";
/// Database errors that were retried after a backoff.
pub const DB_RETRIES: &str = "worker_db_retries_total";
/// Messages given back to the broker (retry topic), by outcome: retry, or
/// dead_letter once their retries were spent.
pub const GIVEN_BACK: &str = "worker_messages_given_back_total";
/// Messages in this group's dead-letter topic, per broker (label
/// `broker`: its address — one per seckill instance, so bounded).
pub const DLQ_DEPTH: &str = "worker_dlq_messages";
/// Messages not yet consumed by this group on the queues it owns.
pub const LAG: &str = "worker_lag_messages";
/// Payment timeouts handled, by outcome: cancelled, already_cancelled,
/// paid, not_found.
pub const TIMEOUTS: &str = "worker_payment_timeouts_total";
/// Reservations returned to the stock store, by reason: cancelled,
/// refused (the database would not take the order).
pub const RELEASES: &str = "worker_stock_releases_total";
/// The configured write cap (orders per second; 0 = unlimited).
pub const RATE_LIMIT: &str = "worker_rate_limit_orders_per_second";
/// Brokers this worker consumes from.
pub const BROKERS: &str = "worker_brokers";

/// Batch sizes: 1 .. 1000 orders.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
/// Write latencies: 100 µs .. 5 s.
pub const WRITE_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Histogram buckets of this crate's metrics, for the recorder.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] =
    &[(BATCH_SIZE, BATCH_BUCKETS), (WRITE_SECONDS, WRITE_BUCKETS)];
