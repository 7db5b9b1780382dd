//! The maintenance thread of a broker: on a fixed tick, disk usage, the
//! consume-queue flushes and the checkpoint, committed offsets, and the
//! lag and dead-letter gauges — the periodic work no request waits for.

use super::*;
use crate::metrics::{CONSUMER_LAG, DLQ_MESSAGES, group_lag};

impl Inner {
    /// The maintenance thread: disk usage, consume-queue flushes and the
    /// checkpoint, offsets, lag and dead-letter gauges.
    pub(super) fn run_maintenance(&self, stop: &(Mutex<bool>, Condvar)) {
        let config = self.store.config();
        let tick = config
            .consume_queue_flush_interval
            .min(config.offset_persist_interval)
            .max(Duration::from_millis(10));
        let mut published_lag = std::collections::BTreeMap::new();
        loop {
            {
                let mut stopped = stop.0.lock();
                if *stopped {
                    return;
                }
                stop.1.wait_for(&mut stopped, tick);
                if *stopped {
                    return;
                }
            }
            // Read the log end first: every entry for records below it is
            // written by then, so the flush below covers them.
            let covered = self.store.dispatched_end();
            if let Err(e) = self.store.measure_disk_usage() {
                tracing::warn!(error = %e, "could not measure disk usage");
            }
            let result = self
                .store
                .flush_derived(covered)
                .and_then(|()| self.offsets.persist());
            if let Err(e) = result {
                tracing::error!(error = %e, "broker maintenance failed");
            }
            for queue in self.store.all_queues() {
                if let Some(group) = queue.topic().strip_prefix("%DLQ%") {
                    metrics::gauge!(DLQ_MESSAGES, "group" => group.to_owned())
                        .set(queue.visible_len() as f64);
                }
            }
            let lag = group_lag(&self.lag(), &self.groups.snapshot());
            // The `metrics` facade cannot delete a series: a group that
            // went away is published once more as 0, then no longer.
            for gone in published_lag.keys().filter(|k| !lag.contains_key(*k)) {
                let (group, topic) = gone.clone();
                metrics::gauge!(CONSUMER_LAG, "group" => group, "topic" => topic).set(0.0);
            }
            for ((group, topic), behind) in &lag {
                metrics::gauge!(CONSUMER_LAG, "group" => group.clone(), "topic" => topic.clone())
                    .set(*behind as f64);
            }
            published_lag = lag;
        }
    }

    pub(super) fn lag(&self) -> Vec<LagStats> {
        self.offsets
            .all()
            .into_iter()
            .filter_map(|((group, topic, queue_id), committed)| {
                let queue = self.store.queue(&topic, queue_id).ok()?;
                let max_offset = queue.visible_len();
                Some(LagStats {
                    lag: max_offset.saturating_sub(committed),
                    group,
                    topic,
                    queue_id,
                    committed,
                    max_offset,
                })
            })
            .collect()
    }
}
