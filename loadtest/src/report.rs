//! The run report: what a replay measured, 100 ms by 100 ms, with the
//! audit and the thresholds — as JSON (schema below) and the numbers the
//! HTML report draws.
//!
//! JSON schema (`"schema": "flashsale-loadtest/2"`):
//!
//! ```text
//! {
//!   "schema": "flashsale-loadtest/2",
//!   "parameters": {"target", "trace", "requests", "speed", "started_at_ms"},
//!   "machine": {"os", "arch", "cpus"},
//!   "interval_ms": 100,
//!   "totals": {
//!     "requests", "late_sends", "late_share", "reconnects",
//!     "achieved_ratio", "peak_offered_rps",
//!     "outcomes": {"queued": n, "sold_out": n, …},
//!     "corrected_us": {"p50", "p90", "p99", "p999", "max"},
//!     "uncorrected_us": {…same…},
//!     "by_outcome": {"sold_out": {"count", "corrected_us": {…},
//!                                 "uncorrected_us": {…}}, …}
//!   },
//!   "intervals": [ {"at_ms", "offered", "sent", "outcomes": {…},
//!                   "p50_us", "p99_us", "uncorrected_p99_us",
//!                   "stock_left", "backlog", "orders_written"} ],
//!   "audit": {"checks": [{"name", "passed", "detail"}]} | null,
//!   "thresholds": [{"rule", "actual", "passed"}]
//! }
//! ```
//!
//! Latencies are microseconds; `corrected` counts from the planned send
//! time (coordinated omission corrected), `uncorrected` from the actual
//! send. `by_outcome` holds the outcomes that occurred, so the sold-out
//! edge and the reservation path (`queued`) are seen apart. Intervals are
//! `interval_ms` long and start at `at_ms` from the start; their counts
//! are per interval (`peak_offered_rps` is the busiest interval's, per
//! second). `stock_left`, `backlog` and `orders_written` (in the
//! interval) are sampled from the system when the run can see it, else
//! null.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::audit::AuditReport;
use crate::replay::{Outcome, ReplayResult};

/// The schema name in every report.
pub const SCHEMA: &str = "flashsale-loadtest/2";

/// Length of one interval of the series, ms.
pub const INTERVAL_MS: u64 = 100;

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// The run's parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// Where the load went.
    pub target: String,
    /// The trace file (or a description).
    pub trace: String,
    /// Requests in the trace.
    pub requests: usize,
    /// Time scale.
    pub speed: f64,
    /// When the run started (ms since the epoch).
    pub started_at_ms: i64,
}

/// The machine the run ran on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Logical CPUs.
    pub cpus: usize,
}

impl Machine {
    /// This machine.
    pub fn this() -> Self {
        Machine {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The latency of one outcome's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeLatency {
    /// Answers with this outcome.
    pub count: u64,
    /// From the planned send.
    pub corrected_us: Percentiles,
    /// From the actual send.
    pub uncorrected_us: Percentiles,
}

/// Whole-run figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests sent.
    pub requests: usize,
    /// Sends later than planned.
    pub late_sends: usize,
    /// Late sends over requests.
    pub late_share: f64,
    /// Connections opened again during the run.
    pub reconnects: usize,
    /// Achieved over offered rate.
    pub achieved_ratio: f64,
    /// The busiest interval's offered requests, per second.
    pub peak_offered_rps: f64,
    /// Answers by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// From the planned send.
    pub corrected_us: Percentiles,
    /// From the actual send.
    pub uncorrected_us: Percentiles,
    /// Latency by outcome (the outcomes that occurred).
    pub by_outcome: BTreeMap<String, OutcomeLatency>,
}

/// One interval ([`INTERVAL_MS`]) of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Start, ms from the start of the run.
    pub at_ms: u64,
    /// Requests planned in this interval.
    pub offered: u64,
    /// Requests actually sent in this interval.
    pub sent: u64,
    /// Answers (by planned interval) by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Corrected median latency.
    pub p50_us: u64,
    /// Corrected 99th percentile.
    pub p99_us: u64,
    /// Uncorrected 99th percentile.
    pub uncorrected_p99_us: u64,
    /// Units left in the store at the end of the interval.
    pub stock_left: Option<i64>,
    /// Orders waiting in the broker at the end of the interval.
    pub backlog: Option<u64>,
    /// Orders written in this interval.
    pub orders_written: Option<u64>,
}

/// A threshold rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The rule as given.
    pub rule: String,
    /// The measured value.
    pub actual: f64,
    /// Whether it held.
    pub passed: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// Parameters.
    pub parameters: Parameters,
    /// Machine.
    pub machine: Machine,
    /// Length of one interval, ms ([`INTERVAL_MS`]).
    pub interval_ms: u64,
    /// Totals.
    pub totals: Totals,
    /// Interval by interval.
    pub intervals: Vec<Interval>,
    /// The audit, when one ran.
    pub audit: Option<AuditReport>,
    /// Threshold verdicts.
    pub thresholds: Vec<ThresholdResult>,
}

/// The report as pretty JSON.
pub fn to_json(report: &RunReport) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(report)?)
}

/// What the system looked like at one moment (for the time series).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemSample {
    /// Milliseconds from the start of the run.
    pub at_ms: u64,
    /// Units left in the store (all items).
    pub stock_left: i64,
    /// Orders waiting in the broker.
    pub backlog: u64,
    /// Of the backlog, purchases whose transaction was still open: not
    /// yet visible to the workers (0 where not known).
    pub open_transactions: u64,
    /// Orders written so far.
    pub orders_written: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Builds the report of `result` (system samples optional, in time order).
pub fn build(
    parameters: Parameters,
    result: &ReplayResult,
    system: &[SystemSample],
    audit: Option<AuditReport>,
) -> RunReport {
    let width_us = INTERVAL_MS * 1_000;
    let mut corrected = histogram();
    let mut uncorrected = histogram();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_outcome: BTreeMap<Outcome, (Histogram<u64>, Histogram<u64>)> = BTreeMap::new();
    let count = result
        .samples
        .iter()
        .map(|s| s.planned_us.max(s.sent_us) / width_us + 1)
        .max()
        .unwrap_or(0)
        .max(system.last().map_or(0, |s| s.at_ms / INTERVAL_MS + 1)) as usize;
    let mut intervals: Vec<Interval> = (0..count)
        .map(|n| Interval {
            at_ms: n as u64 * INTERVAL_MS,
            ..Interval::default()
        })
        .collect();
    let mut per_interval: Vec<(Histogram<u64>, Histogram<u64>)> =
        (0..count).map(|_| (histogram(), histogram())).collect();
    for sample in &result.samples {
        let (c, u) = (sample.corrected_us().max(1), sample.uncorrected_us().max(1));
        corrected.saturating_record(c);
        uncorrected.saturating_record(u);
        *outcomes.entry(sample.outcome.name().into()).or_default() += 1;
        let of_outcome = by_outcome
            .entry(sample.outcome)
            .or_insert_with(|| (histogram(), histogram()));
        of_outcome.0.saturating_record(c);
        of_outcome.1.saturating_record(u);
        let planned = (sample.planned_us / width_us) as usize;
        let sent = (sample.sent_us / width_us) as usize;
        intervals[planned].offered += 1;
        *intervals[planned]
            .outcomes
            .entry(sample.outcome.name().into())
            .or_default() += 1;
        intervals[sent].sent += 1;
        per_interval[planned].0.saturating_record(c);
        per_interval[planned].1.saturating_record(u);
    }
    for (interval, (c, u)) in intervals.iter_mut().zip(&per_interval) {
        if !c.is_empty() {
            interval.p50_us = c.value_at_quantile(0.5);
            interval.p99_us = c.value_at_quantile(0.99);
            interval.uncorrected_p99_us = u.value_at_quantile(0.99);
        }
    }
    // The system at the end of each interval, and what was written in it.
    let mut written_before = system.first().map(|s| s.orders_written);
    for interval in &mut intervals {
        let end_ms = interval.at_ms + INTERVAL_MS;
        if let Some(last) = system.iter().rev().find(|s| s.at_ms < end_ms) {
            interval.stock_left = Some(last.stock_left);
            interval.backlog = Some(last.backlog);
            interval.orders_written =
                written_before.map(|before| last.orders_written.saturating_sub(before));
            written_before = Some(last.orders_written);
        }
    }
    for outcome in Outcome::ALL {
        outcomes.entry(outcome.name().into()).or_default();
    }
    let peak_offered_rps = intervals.iter().map(|i| i.offered).max().unwrap_or(0) as f64 * 1_000.0
        / INTERVAL_MS as f64;
    RunReport {
        schema: SCHEMA.into(),
        parameters,
        machine: Machine::this(),
        interval_ms: INTERVAL_MS,
        totals: Totals {
            requests: result.samples.len(),
            late_sends: result.late_sends,
            late_share: result.late_share(),
            reconnects: result.reconnects,
            achieved_ratio: result.achieved_ratio(),
            peak_offered_rps,
            outcomes,
            corrected_us: Percentiles::of(&corrected),
            uncorrected_us: Percentiles::of(&uncorrected),
            by_outcome: by_outcome
                .into_iter()
                .map(|(outcome, (c, u))| {
                    (
                        outcome.name().to_owned(),
                        OutcomeLatency {
                            count: c.len(),
                            corrected_us: Percentiles::of(&c),
                            uncorrected_us: Percentiles::of(&u),
                        },
                    )
                })
                .collect(),
        },
        intervals,
        audit,
        thresholds: Vec::new(),
    }
}

/// A threshold rule: `METRIC OP VALUE`, e.g. `p99<20ms`, `errors=0`,
/// `queued>=100`, `achieved>=0.95`.
///
/// Metrics: `p50`, `p90`, `p99`, `p999`, `max` (corrected latency; values
/// take `us`, `ms` or `s`), the same per outcome (`sold_out_p99`,
/// `queued_p999`, …; 0 when the outcome did not occur), `late` (a count),
/// `late_share` and `achieved` (ratios), and every outcome name
/// (`queued`, `sold_out`, …, `errors` for `error`).
pub fn check_threshold(report: &RunReport, rule: &str) -> Result<ThresholdResult, String> {
    let operators = ["<=", ">=", "<", ">", "="];
    let (at, operator) = operators
        .iter()
        .filter_map(|op| rule.find(op).map(|i| (i, *op)))
        .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())))
        .ok_or_else(|| format!("{rule:?}: expected METRIC<OP>VALUE, e.g. p99<20ms"))?;
    let metric = rule[..at].trim();
    let value = rule[at + operator.len()..].trim();
    let latency = |p: u64| p as f64;
    let totals = &report.totals;
    let (actual, is_latency) = match metric {
        "p50" => (latency(totals.corrected_us.p50), true),
        "p90" => (latency(totals.corrected_us.p90), true),
        "p99" => (latency(totals.corrected_us.p99), true),
        "p999" => (latency(totals.corrected_us.p999), true),
        "max" => (latency(totals.corrected_us.max), true),
        "late" => (totals.late_sends as f64, false),
        "late_share" => (totals.late_share, false),
        "achieved" => (totals.achieved_ratio, false),
        "errors" => (*totals.outcomes.get("error").unwrap_or(&0) as f64, false),
        name if totals.outcomes.contains_key(name) => (totals.outcomes[name] as f64, false),
        other => match outcome_percentile(totals, other) {
            Some(value) => (latency(value), true),
            None => return Err(format!("{rule:?}: unknown metric {other:?}")),
        },
    };
    let expected = if is_latency {
        let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
            (n, 1e3)
        } else if let Some(n) = value.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = value.strip_suffix('s') {
            (n, 1e6)
        } else {
            return Err(format!("{rule:?}: a latency needs a unit (us, ms, s)"));
        };
        number.trim().parse::<f64>().map(|n| n * scale)
    } else {
        value.parse::<f64>()
    }
    .map_err(|_| format!("{rule:?}: {value:?} is not a number"))?;
    let passed = match operator {
        "<" => actual < expected,
        "<=" => actual <= expected,
        ">" => actual > expected,
        ">=" => actual >= expected,
        _ => (actual - expected).abs() < f64::EPSILON,
    };
    Ok(ThresholdResult {
        rule: rule.to_owned(),
        actual,
        passed,
    })
}

/// `sold_out_p99` and the like: that outcome's corrected percentile (0
/// when it did not occur); `None` for anything else.
fn outcome_percentile(totals: &Totals, metric: &str) -> Option<u64> {
    let (outcome, percentile) = metric.rsplit_once('_')?;
    if !totals.outcomes.contains_key(outcome) {
        return None;
    }
    let p = totals
        .by_outcome
        .get(outcome)
        .map(|o| o.corrected_us)
        .unwrap_or_default();
    Some(match percentile {
        "p50" => p.p50,
        "p90" => p.p90,
        "p99" => p.p99,
        "p999" => p.p999,
        "max" => p.max,
        _ => return None,
    })
}

/// Lines comparing `report` with an earlier `baseline`: requests/s of the
/// run, p99, and each outcome, as ratios.
pub fn compare(report: &RunReport, baseline: &RunReport) -> Vec<String> {
    let ratio = |now: f64, before: f64| {
        if before == 0.0 {
            "n/a".to_owned()
        } else {
            format!("{:.2}x", now / before)
        }
    };
    let mut lines = vec![
        format!(
            "p99 (corrected): {} µs vs {} µs ({})",
            report.totals.corrected_us.p99,
            baseline.totals.corrected_us.p99,
            ratio(
                report.totals.corrected_us.p99 as f64,
                baseline.totals.corrected_us.p99 as f64
            )
        ),
        format!(
            "achieved rate: {:.3} vs {:.3}",
            report.totals.achieved_ratio, baseline.totals.achieved_ratio
        ),
    ];
    for (name, now) in &report.totals.outcomes {
        let before = baseline.totals.outcomes.get(name).copied().unwrap_or(0);
        if *now > 0 || before > 0 {
            lines.push(format!(
                "{name}: {now} vs {before} ({})",
                ratio(*now as f64, before as f64)
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Sample;

    fn sample(index: usize, planned_us: u64, latency_us: u64, outcome: Outcome) -> Sample {
        Sample {
            index,
            planned_us,
            sent_us: planned_us,
            done_us: planned_us + latency_us,
            outcome,
            order_id: None,
        }
    }

    fn report() -> RunReport {
        let result = ReplayResult {
            samples: vec![
                sample(0, 100, 1_000, Outcome::Queued),
                sample(1, 500_000, 3_000, Outcome::SoldOut),
                sample(2, 1_200_000, 30_000, Outcome::SoldOut),
                sample(3, 1_300_000, 2_000, Outcome::Error),
            ],
            late_sends: 0,
            planned_span_us: 1_299_900,
            actual_span_us: 1_299_900,
            reconnects: 0,
        };
        let system = [
            SystemSample {
                open_transactions: 0,
                at_ms: 0,
                stock_left: 10,
                backlog: 0,
                orders_written: 0,
            },
            SystemSample {
                open_transactions: 0,
                at_ms: 900,
                stock_left: 9,
                backlog: 1,
                orders_written: 0,
            },
            SystemSample {
                open_transactions: 0,
                at_ms: 1_900,
                stock_left: 9,
                backlog: 0,
                orders_written: 1,
            },
        ];
        build(Parameters::default(), &result, &system, None)
    }

    #[test]
    fn intervals_count_what_was_planned_and_sampled_every_100_ms() {
        let report = report();
        assert_eq!(report.interval_ms, 100);
        assert_eq!(report.intervals.len(), 20);
        let at = |ms: u64| &report.intervals[(ms / 100) as usize];
        assert_eq!(at(1_200).at_ms, 1_200);
        let offered: Vec<u64> = report.intervals.iter().map(|i| i.offered).collect();
        assert_eq!(offered.iter().sum::<u64>(), 4);
        assert_eq!(
            (at(0).offered, at(500).offered, at(1_300).offered),
            (1, 1, 1)
        );
        assert_eq!(report.totals.peak_offered_rps, 10.0);
        assert_eq!(at(0).outcomes["queued"], 1);
        assert_eq!(at(1_300).outcomes["error"], 1);
        assert_eq!((at(900).stock_left, at(900).backlog), (Some(9), Some(1)));
        assert_eq!(
            (at(900).orders_written, at(1_900).orders_written),
            (Some(0), Some(1))
        );
        assert_eq!(at(1_800).orders_written, Some(0));
        assert!(at(1_200).p99_us >= 29_000);
        let sold_out = report.totals.by_outcome["sold_out"];
        assert_eq!(sold_out.count, 2);
        assert!(sold_out.corrected_us.p99 >= 29_000 && sold_out.corrected_us.p50 < 29_000);
        assert_eq!(report.totals.by_outcome["queued"].count, 1);
        assert!(
            !report.totals.by_outcome.contains_key("duplicate"),
            "only what occurred"
        );
        assert_eq!(
            report.totals.outcomes["duplicate"], 0,
            "every outcome is listed"
        );
        let json = serde_json::to_string(&report).unwrap();
        let back: RunReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn thresholds_read_like_k6() {
        let report = report();
        let check = |rule| check_threshold(&report, rule).map(|t| t.passed);
        assert_eq!(check("p99<50ms"), Ok(true));
        assert_eq!(check("p99 < 5ms"), Ok(false));
        assert_eq!(check("errors=0"), Ok(false));
        assert_eq!(check("errors<=1"), Ok(true));
        assert_eq!(check("sold_out>=2"), Ok(true));
        assert_eq!(check("achieved>=0.99"), Ok(true));
        assert_eq!(check("sold_out_p99<50ms"), Ok(true));
        assert_eq!(check("sold_out_p50<4ms"), Ok(true));
        assert_eq!(check("queued_p99<500us"), Ok(false));
        assert_eq!(check("duplicate_p99<1us"), Ok(true), "none occurred");
        assert_eq!(check("late_share<=0.01"), Ok(true));
        assert!(check("nothing_p99<1ms").is_err());
        assert!(check("p99<50").is_err(), "a latency needs a unit");
        assert!(check("speed>1").is_err());
        assert!(check("p99").is_err());
    }
}
