//! Live progress: one line per second while a replay runs — offered vs
//! achieved rate, outcomes, p99 of the last second, and (when the run can
//! see the system) stock left and the broker backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::replay::{Outcome, Progress, Sample};

/// Counts answers as they come, for the per-second line.
#[derive(Debug)]
pub struct LiveCounters {
    sent: AtomicU64,
    outcomes: [AtomicU64; 8],
    latency: Mutex<Histogram<u64>>,
}

impl Default for LiveCounters {
    fn default() -> Self {
        LiveCounters {
            sent: AtomicU64::new(0),
            outcomes: Default::default(),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            ),
        }
    }
}

impl Progress for LiveCounters {
    fn answered(&self, sample: &Sample) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let slot = Outcome::ALL
            .iter()
            .position(|o| *o == sample.outcome)
            .expect("every outcome is listed");
        self.outcomes[slot].fetch_add(1, Ordering::Relaxed);
        self.latency
            .lock()
            .saturating_record(sample.corrected_us().max(1));
    }
}

/// Prints a line every second until the returned handle is aborted.
/// `offered[second]` is how many requests the trace plans in that second;
/// `system` holds the latest description of the system, when known.
pub fn print_every_second(
    counters: Arc<LiveCounters>,
    offered: Vec<u64>,
    system: Option<Arc<Mutex<Option<String>>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let mut last_outcomes = [0u64; 8];
        let mut last_sent = 0;
        for second in 0.. {
            ticker.tick().await;
            let sent = counters.sent.load(Ordering::Relaxed);
            let mut parts = Vec::new();
            for (k, outcome) in Outcome::ALL.iter().enumerate() {
                let now = counters.outcomes[k].load(Ordering::Relaxed);
                if now > last_outcomes[k] {
                    parts.push(format!("{} {}", outcome.name(), now - last_outcomes[k]));
                }
                last_outcomes[k] = now;
            }
            let p99 = {
                let mut latency = counters.latency.lock();
                let p99 = latency.value_at_quantile(0.99);
                latency.reset();
                p99
            };
            let system = system
                .as_ref()
                .and_then(|s| s.lock().clone())
                .map(|s| format!(" | {s}"))
                .unwrap_or_default();
            eprintln!(
                "t={:>3}s offered {:>6}/s answered {:>6}/s | {} | p99 {:.1} ms{system}",
                start.elapsed().as_secs(),
                offered.get(second).copied().unwrap_or(0),
                sent - last_sent,
                if parts.is_empty() {
                    "-".into()
                } else {
                    parts.join(", ")
                },
                p99 as f64 / 1e3,
            );
            last_sent = sent;
        }
    })
}
