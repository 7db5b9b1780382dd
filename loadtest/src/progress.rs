//! Live progress: one line per second while a replay runs — offered vs
//! achieved rate, outcomes, p99 of the last second, and (when the run can
//! see the system) stock left and the broker backlog.
//!
//! Answers are counted from the generator's threads as they arrive, so
//! the counters are atomics and the live p99 comes from coarse atomic
//! buckets (four per power of two, within 19 %), not a locked histogram:
//! the exact figures are in the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::replay::{Outcome, Progress, Sample};

/// Sub-buckets per power of two of the live latency buckets.
const STEPS_PER_OCTAVE: usize = 4;
/// Latency buckets: 1 µs up to 2^40 µs.
const BUCKETS: usize = 40 * STEPS_PER_OCTAVE;

/// The bucket of `micros`: the power of two, then which quarter of it.
fn bucket_of(micros: u64) -> usize {
    let micros = micros.max(1);
    let octave = 63 - micros.leading_zeros() as usize;
    let quarter = if octave >= 2 {
        ((micros >> (octave - 2)) & 0b11) as usize
    } else {
        0
    };
    (octave * STEPS_PER_OCTAVE + quarter).min(BUCKETS - 1)
}

/// The largest latency in bucket `bucket`, µs.
fn bucket_top(bucket: usize) -> u64 {
    let (octave, quarter) = (bucket / STEPS_PER_OCTAVE, bucket % STEPS_PER_OCTAVE);
    let base = 1u64 << octave;
    if octave < 2 {
        return 2 * base - 1;
    }
    base + (base / STEPS_PER_OCTAVE as u64) * (quarter as u64 + 1) - 1
}

/// Counts answers as they come, for the per-second line.
#[derive(Debug)]
pub struct LiveCounters {
    sent: AtomicU64,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    latency: [AtomicU64; BUCKETS],
}

impl Default for LiveCounters {
    fn default() -> Self {
        LiveCounters {
            sent: AtomicU64::new(0),
            outcomes: Default::default(),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LiveCounters {
    /// The 99th percentile of the corrected latency since the last call
    /// (µs, to the bucket's top), and the buckets emptied.
    fn take_p99(&self) -> u64 {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let wanted = total - total / 100;
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if total > 0 && seen >= wanted {
                return bucket_top(bucket);
            }
        }
        0
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
        self.latency[bucket_of(sample.corrected_us())].fetch_add(1, Ordering::Relaxed);
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
        let mut last_outcomes = [0u64; Outcome::ALL.len()];
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
            let p99 = counters.take_p99();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_a_quarter_octave() {
        for micros in [1, 2, 3, 7, 100, 1_000, 12_345, 9_999_999] {
            let top = bucket_top(bucket_of(micros));
            assert!(
                top >= micros && top as f64 <= micros as f64 * 1.25 + 1.0,
                "{micros}: {top}"
            );
        }
        let counters = LiveCounters::default();
        for micros in 1..=1_000 {
            counters.latency[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        }
        let p99 = counters.take_p99();
        assert!((990..=1_240).contains(&p99), "{p99}");
        assert_eq!(counters.take_p99(), 0, "emptied");
    }
}
