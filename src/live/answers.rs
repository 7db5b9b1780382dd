//! The answers the stack gave, by outcome, counted since the process
//! started: what the live page's answer charts are drawn from.
//!
//! The gateway and seckill count every answer in their metrics
//! (`gateway_requests_total`, `seckill_reservations_total`, by outcome);
//! nothing else sees the answers, so the page reads those counters from
//! the process-wide Prometheus recorder, which [`count_answers`] installs.
//! It must run before the stack starts: the gateway resolves its sold-out
//! counter once, when its edge is built, and a counter resolved with no
//! recorder installed counts nothing.
//!
//! The counters are the process's, not one stack's: where several stacks
//! share a process (the end-to-end tests), their answers add up.

use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

/// How often the recorder drains what histograms recorded, so their
/// memory stays bounded whether or not anyone renders them.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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

    /// The totals in a Prometheus text exposition.
    pub fn from_exposition(text: &str) -> AnswerTotals {
        let mut totals = AnswerTotals::default();
        for line in text.lines() {
            if let Some((metric, outcome, count)) = parse_sample(line) {
                totals.add(metric, outcome, count);
            }
        }
        totals
    }
}

/// `name{…outcome="x"…} 12` as `(name, x, 12)`; `None` for comments,
/// other shapes and values that are not counts.
fn parse_sample(line: &str) -> Option<(&str, &str, u64)> {
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.rsplit_once('}')?;
    let outcome = labels
        .split(',')
        .find_map(|label| label.trim().strip_prefix("outcome=\""))?
        .strip_suffix('"')?;
    let value: f64 = value.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((name.trim(), outcome, value as u64))
}

/// Renders the process-wide recorder's exposition.
type Render = Box<dyn Fn() -> String + Send + Sync>;

/// The process-wide recorder, once installed (as its rendering); `Err`
/// says why it could not be (another recorder was installed first).
static RECORDER: OnceLock<Result<Render, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder the answer counts are
/// read from, once per process (later calls do nothing). Call it before
/// [`Stack::start`](crate::stack::Stack::start), or the gateway's sold-out
/// answers go uncounted. Returns why the counts are unavailable, if they
/// are.
pub fn count_answers() -> Result<(), String> {
    let recorder = RECORDER.get_or_init(|| {
        let handle = service_kit::telemetry::install_metrics(&[
            gateway::metrics::HISTOGRAM_BUCKETS,
            broker::metrics::HISTOGRAM_BUCKETS,
            order_worker::metrics::HISTOGRAM_BUCKETS,
        ])?;
        let upkept = handle.clone();
        std::thread::Builder::new()
            .name("live-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkept.run_upkeep();
                }
            })
            .map_err(|e| format!("cannot start the metrics upkeep: {e}"))?;
        Ok(Box::new(move || handle.render()) as Render)
    });
    recorder.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// The answers counted so far, or why there are none.
pub fn answer_totals() -> Result<AnswerTotals, String> {
    match RECORDER.get() {
        Some(Ok(render)) => Ok(AnswerTotals::from_exposition(&render())),
        Some(Err(why)) => Err(why.clone()),
        None => Err("answers are not counted in this process".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_fall_in_their_buckets() {
        let text = "\
# TYPE gateway_requests_total counter
gateway_requests_total{outcome=\"sold_out_local\"} 40
gateway_requests_total{outcome=\"forwarded\"} 12
gateway_requests_total{outcome=\"rate_limited_user\"} 3
gateway_requests_total{outcome=\"shed\"} 1
gateway_requests_total{outcome=\"upstream_error\"} 2
gateway_requests_total{outcome=\"bad_request\"} 5
seckill_reservations_total{outcome=\"queued\"} 7
seckill_reservations_total{outcome=\"duplicate\"} 2
seckill_reservations_total{outcome=\"sold_out\"} 3
seckill_reservations_total{outcome=\"sold_out_local\"} 1
seckill_reservations_total{outcome=\"error\"} 1
broker_puts_total{outcome=\"ok\"} 99
gateway_request_duration_seconds_bucket{le=\"0.1\"} 60
";
        assert_eq!(
            AnswerTotals::from_exposition(text),
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
    fn malformed_lines_are_skipped() {
        for line in [
            "",
            "# HELP x",
            "gateway_requests_total 3",
            "gateway_requests_total{outcome=\"shed\"}",
            "gateway_requests_total{outcome=\"shed\"} NaN",
            "gateway_requests_total{outcome=\"shed\"} -1",
            "gateway_requests_total{outcome=shed} 1",
        ] {
            assert_eq!(parse_sample(line), None, "{line}");
        }
    }
}
