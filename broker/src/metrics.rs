//! The broker's metric names, in one place, so dashboards and code agree.
//!
//! Emitted through the `metrics` facade; the process that embeds the
//! broker installs the Prometheus exporter and sets histogram buckets
//! (see [`HISTOGRAM_BUCKETS`]) so these export as histograms, not summaries.
//! Labels are bounded: topic, queue and group names, never message keys.

use std::collections::BTreeMap;

use crate::types::{ConsumeMode, LagStats};

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
/// Messages not yet consumed, per (group, topic), for the groups that have
/// members now (see [`group_lag`]): never per queue, never for an owner
/// that merely committed once.
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

/// The lag to publish under [`CONSUMER_LAG`]: for each group that exists
/// now (`groups`: name, mode, members) and each topic it has offsets on,
/// the messages behind on all its queues together. A broadcasting group's
/// members each keep their own offsets (`group%member`); the group's lag is
/// its slowest live member's. Offsets of owners that are not a live group
/// (or one of its live members) are left out, so the label set is bounded
/// by the groups consuming now.
pub(crate) fn group_lag(
    lags: &[LagStats],
    groups: &[(String, ConsumeMode, Vec<String>)],
) -> BTreeMap<(String, String), u64> {
    let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (group, mode, members) in groups {
        let mut per_owner: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let owners: Vec<String> = match mode {
            ConsumeMode::Clustering => vec![group.clone()],
            ConsumeMode::Broadcasting => members
                .iter()
                .map(|m| mode.offset_owner(group, m))
                .collect(),
        };
        for lag in lags.iter().filter(|l| owners.contains(&l.group)) {
            *per_owner.entry((&lag.group, &lag.topic)).or_default() += lag.lag;
        }
        for ((_, topic), behind) in per_owner {
            let slot = out.entry((group.clone(), topic.to_owned())).or_default();
            *slot = (*slot).max(behind);
        }
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(owner: &str, topic: &str, queue_id: u32, behind: u64) -> LagStats {
        LagStats {
            group: owner.into(),
            topic: topic.into(),
            queue_id,
            committed: 0,
            max_offset: behind,
            lag: behind,
        }
    }

    #[test]
    fn issue_8_lag_is_published_per_group_and_topic_for_live_groups_only() {
        let mut lags = vec![
            lag("workers", "orders", 0, 3),
            lag("workers", "orders", 1, 4),
            lag("workers", "%RETRY%workers", 0, 1),
            lag("fan%a", "orders", 0, 2),
            lag("fan%a", "orders", 1, 2),
            lag("fan%b", "orders", 0, 9),
            lag("fan%gone", "orders", 0, 100),
            lag("gone", "orders", 0, 50),
        ];
        // Thousands of made-up owners that once committed add no series.
        lags.extend((0..5_000).map(|n| lag(&format!("made-up-{n}"), "orders", n % 8, 1)));
        let groups = vec![
            (
                "workers".to_string(),
                ConsumeMode::Clustering,
                vec!["w1".to_string()],
            ),
            (
                "fan".to_string(),
                ConsumeMode::Broadcasting,
                vec!["a".to_string(), "b".to_string()],
            ),
        ];
        let published: Vec<((String, String), u64)> =
            group_lag(&lags, &groups).into_iter().collect();
        let key = |g: &str, t: &str| (g.to_string(), t.to_string());
        assert_eq!(
            published,
            vec![
                (key("fan", "orders"), 9),
                (key("workers", "%RETRY%workers"), 1),
                (key("workers", "orders"), 7),
            ]
        );
        assert!(group_lag(&lags, &[]).is_empty());
    }
}
