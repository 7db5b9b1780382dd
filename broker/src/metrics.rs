//! The broker's metric names, in one place, so dashboards and code agree.
//!
//! Emitted through the `metrics` facade; the process that embeds the
//! broker installs the Prometheus exporter and sets histogram buckets
//! (see [`HISTOGRAM_BUCKETS`]) so these export as histograms, not summaries.
//! Labels are bounded: topic, queue and group names, never message keys.

/// Messages appended to the commit log.
pub const APPENDED_MESSAGES: &str = "broker_appended_messages_total";
/// Bytes appended to the commit log (encoded records).
pub const APPENDED_BYTES: &str = "broker_appended_bytes_total";
/// Time one fdatasync of the commit log took.
pub const FLUSH_SECONDS: &str = "broker_flush_duration_seconds";
/// Writers acknowledged by one group-commit flush.
pub const GROUP_COMMIT_BATCH: &str = "broker_group_commit_batch_size";
/// Messages returned by pulls.
pub const PULLED_MESSAGES: &str = "broker_pulled_messages_total";
/// Pulls currently held by long polling.
pub const HELD_LONG_POLLS: &str = "broker_long_polls_held";
/// Messages not yet consumed, per (group, topic, queue).
pub const CONSUMER_LAG: &str = "broker_consumer_lag_messages";

/// Delayed messages waiting for their time.
pub const DELAYED_PENDING: &str = "broker_delayed_messages_pending";

/// Messages given back by consumers and scheduled for a retry.
pub const RETRIES: &str = "broker_retries_total";
/// Messages moved to a dead-letter topic, per group.
pub const DEAD_LETTERS: &str = "broker_dead_letters_total";

/// Half messages neither committed nor rolled back.
pub const HALF_PENDING: &str = "broker_transactions_open";
/// Transaction check-backs, by answer.
pub const TRANSACTION_CHECKS: &str = "broker_transaction_checks_total";

/// Messages in a group's dead-letter topic.
pub const DLQ_MESSAGES: &str = "broker_dlq_messages";
/// Share of the store's file system in use (0..1).
pub const DISK_USAGE_RATIO: &str = "broker_disk_usage_ratio";

/// Suggested buckets for the broker's histograms: flush latency in seconds
/// (50 µs .. 1 s) and batch sizes share one exporter setting per metric.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (
        FLUSH_SECONDS,
        &[
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 1.0,
        ],
    ),
    (
        GROUP_COMMIT_BATCH,
        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
    ),
];
