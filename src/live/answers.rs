//! The answers the stack gave, by outcome, counted since the process
//! started: what the live page's answer charts are drawn from.
//!
//! The gateway and seckill count every answer in their metrics
//! (`gateway_requests_total`, `seckill_reservations_total`, by outcome);
//! nothing else sees the answers, so the page counts those two counters
//! itself: [`count_answers`] installs, as the process's metrics recorder,
//! one that keeps exactly these two in atomics by outcome and makes every
//! other metric a no-op. A full Prometheus recorder would cost every
//! request of a spike its histogram and label lookups for series that
//! nothing in the one-process stack reads (measured in the demo: 1.0–1.5 %
//! of sends late with it, 0.7–0.8 % with no recorder). It must run before the stack
//! starts: the gateway resolves its sold-out counter once, when its edge
//! is built, and a counter resolved with no recorder installed counts
//! nothing.
//!
//! The counters are the process's, not one stack's: where several stacks
//! share a process (the end-to-end tests), their answers add up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parking_lot::RwLock;
use serde::Serialize;

/// The gateway's answers by outcome.
const GATEWAY_REQUESTS: &str = gateway::metrics::REQUESTS;
/// Seckill's purchases by outcome.
const SECKILL_RESERVATIONS: &str = seckill::metrics::RESERVATIONS;

/// Answers by outcome, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AnswerTotals {
    /// Purchases queued (an order on its way to the database).
    pub queued: u64,
    /// Sold out: at the gateway from its flag, or by seckill.
    pub sold_out: u64,
    /// The buyer already holds a unit.
    pub duplicate: u64,
    /// Turned away by a rate limit or load shedding (429, 503).
    pub limited: u64,
    /// Failures: the gateway's timeouts and failed forwards, and
    /// seckill's errors — which, as seckill counts them, also take in
    /// its refusals of an unknown item or a bad user id.
    pub error: u64,
    /// Everything else: bad requests, unknown items, a closed sale
    /// window, the access hook's refusals.
    pub other: u64,
}

impl AnswerTotals {
    /// The outcome buckets, in the order the page draws them.
    pub fn by_outcome(&self) -> [(&'static str, u64); 6] {
        [
            ("queued", self.queued),
            ("sold_out", self.sold_out),
            ("duplicate", self.duplicate),
            ("limited", self.limited),
            ("error", self.error),
            ("other", self.other),
        ]
    }

    /// Adds `count` answers of a metric's `outcome` to their bucket.
    fn add(&mut self, metric: &str, outcome: &str, count: u64) {
        let bucket = match (metric, outcome) {
            (SECKILL_RESERVATIONS, "queued") => &mut self.queued,
            (SECKILL_RESERVATIONS, "duplicate") => &mut self.duplicate,
            // Seckill counts an answer from its own flag twice, as
            // `sold_out_local` and as `sold_out`; the latter is kept.
            (SECKILL_RESERVATIONS, "sold_out") => &mut self.sold_out,
            (SECKILL_RESERVATIONS, "sold_out_local") => return,
            (SECKILL_RESERVATIONS, "error") => &mut self.error,
            // Forwarded requests are answered, and counted, by seckill.
            (GATEWAY_REQUESTS, "forwarded") => return,
            (GATEWAY_REQUESTS, "sold_out_local") => &mut self.sold_out,
            (GATEWAY_REQUESTS, "rate_limited_global" | "rate_limited_user" | "shed") => {
                &mut self.limited
            }
            (GATEWAY_REQUESTS, "timeout" | "upstream_timeout" | "upstream_error") => {
                &mut self.error
            }
            (GATEWAY_REQUESTS | SECKILL_RESERVATIONS, _) => &mut self.other,
            _ => return,
        };
        *bucket += count;
    }

    /// The totals of `(metric, outcome, count)` counts.
    fn from_counts<'a>(counts: impl IntoIterator<Item = (&'a str, &'a str, u64)>) -> Self {
        let mut totals = AnswerTotals::default();
        for (metric, outcome, count) in counts {
            totals.add(metric, outcome, count);
        }
        totals
    }
}

/// The two answer counters, by outcome; every other metric is a no-op.
/// Outcome labels are a fixed set in the code, so the maps stay small.
#[derive(Debug, Default)]
struct AnswerRecorder {
    gateway: RwLock<HashMap<String, Arc<AtomicU64>>>,
    seckill: RwLock<HashMap<String, Arc<AtomicU64>>>,
}

impl AnswerRecorder {
    fn counts(&self) -> Vec<(&'static str, String, u64)> {
        let mut counts = Vec::new();
        for (metric, map) in [
            (GATEWAY_REQUESTS, &self.gateway),
            (SECKILL_RESERVATIONS, &self.seckill),
        ] {
            for (outcome, count) in map.read().iter() {
                counts.push((metric, outcome.clone(), count.load(Ordering::Relaxed)));
            }
        }
        counts
    }
}

impl Recorder for AnswerRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let map = match key.name() {
            GATEWAY_REQUESTS => &self.gateway,
            SECKILL_RESERVATIONS => &self.seckill,
            _ => return Counter::noop(),
        };
        let Some(outcome) = key
            .labels()
            .find(|label| label.key() == "outcome")
            .map(|label| label.value())
        else {
            return Counter::noop();
        };
        if let Some(count) = map.read().get(outcome) {
            return Counter::from_arc(Arc::clone(count));
        }
        let count = Arc::clone(map.write().entry(outcome.to_owned()).or_default());
        Counter::from_arc(count)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process-wide recorder, once installed; `Err` says why it could not
/// be (another recorder was installed first).
static RECORDER: OnceLock<Result<&'static AnswerRecorder, String>> = OnceLock::new();

/// Installs the process-wide recorder the answer counts are kept in, once
/// per process (later calls do nothing). Call it before
/// [`Stack::start`](crate::stack::Stack::start), or the gateway's sold-out
/// answers go uncounted. Returns why the counts are unavailable, if they
/// are.
pub fn count_answers() -> Result<(), String> {
    let recorder = RECORDER.get_or_init(|| {
        let recorder: &'static AnswerRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(recorder)
            .map_err(|e| format!("cannot install the answer counters: {e}"))?;
        Ok(recorder)
    });
    recorder.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// The answers counted so far, or why there are none.
pub fn answer_totals() -> Result<AnswerTotals, String> {
    match RECORDER.get() {
        Some(Ok(recorder)) => {
            let counts = recorder.counts();
            Ok(AnswerTotals::from_counts(
                counts.iter().map(|(m, o, n)| (*m, o.as_str(), *n)),
            ))
        }
        Some(Err(why)) => Err(why.clone()),
        None => Err("answers are not counted in this process".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_fall_in_their_buckets() {
        let counts = [
            (GATEWAY_REQUESTS, "sold_out_local", 40),
            (GATEWAY_REQUESTS, "forwarded", 12),
            (GATEWAY_REQUESTS, "rate_limited_user", 3),
            (GATEWAY_REQUESTS, "shed", 1),
            (GATEWAY_REQUESTS, "upstream_error", 2),
            (GATEWAY_REQUESTS, "bad_request", 5),
            (SECKILL_RESERVATIONS, "queued", 7),
            (SECKILL_RESERVATIONS, "duplicate", 2),
            (SECKILL_RESERVATIONS, "sold_out", 3),
            (SECKILL_RESERVATIONS, "sold_out_local", 1),
            (SECKILL_RESERVATIONS, "error", 1),
            ("broker_puts_total", "ok", 99),
        ];
        assert_eq!(
            AnswerTotals::from_counts(counts),
            AnswerTotals {
                queued: 7,
                sold_out: 43,
                duplicate: 2,
                limited: 4,
                error: 3,
                other: 5,
            }
        );
    }

    #[test]
    fn the_recorder_keeps_the_two_answer_counters_and_nothing_else() {
        let recorder = AnswerRecorder::default();
        let metadata = Metadata::new("live", metrics::Level::INFO, None);
        let counter = |name: &'static str, labels: Vec<metrics::Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &metadata)
        };
        let outcome = |value: &'static str| vec![metrics::Label::new("outcome", value)];
        counter(GATEWAY_REQUESTS, outcome("sold_out_local")).increment(5);
        counter(GATEWAY_REQUESTS, outcome("sold_out_local")).increment(2);
        counter(SECKILL_RESERVATIONS, outcome("queued")).increment(3);
        counter(GATEWAY_REQUESTS, vec![]).increment(100);
        counter("broker_puts_total", outcome("ok")).increment(100);
        recorder
            .register_histogram(&Key::from_name("gateway_request_seconds"), &metadata)
            .record(1.0);
        let mut counts = recorder.counts();
        counts.sort();
        assert_eq!(
            counts,
            [
                (GATEWAY_REQUESTS, "sold_out_local".to_owned(), 7),
                (SECKILL_RESERVATIONS, "queued".to_owned(), 3),
            ]
        );
    }
}
