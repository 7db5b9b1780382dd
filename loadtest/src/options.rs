//! What a replay run is asked and how it answers, shared by the load
//! tester's `replay` and the all-in-one binary's `run`: the options (the
//! trace, its pace, thresholds, a baseline, where the reports go), and the
//! end of a run — the report built, printed, checked and written.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::audit::AuditReport;
use crate::replay::{ReplayConfig, ReplayResult};
use crate::report::{Parameters, RunReport, SystemSample, build, check_threshold, compare};
use crate::trace::{TraceRecord, read_trace};

#[derive(Debug, Args)]
/// The options of one replay: the trace, its pace, and what to check and
/// write at the end.
pub struct RunArgs {
    /// The trace (NDJSON; see `loadtest gen`).
    pub trace: PathBuf,
    /// Time scale (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Keep-alive connections the requests are spread over; each
    /// pipelines its share (many requests in flight on one connection).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Most requests in flight in all (shared out between the
    /// connections); a due request past it waits and counts as late.
    #[arg(long, default_value_t = 65_536)]
    pub max_in_flight: usize,
    /// A send written later than this past its plan counts as late.
    #[arg(long, default_value = "1ms", value_parser = crate::generate::parse_duration)]
    pub late_after: std::time::Duration,
    /// Longest wait for one answer (its connection is then closed and
    /// what was in flight on it counted as errors).
    #[arg(long, default_value = "10s", value_parser = crate::generate::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Threads of the generator's own runtime.
    #[arg(long, default_value_t = 1)]
    pub generator_threads: usize,
    /// Fail when the achieved rate is below this share of the offered one.
    #[arg(long, default_value_t = 0.9)]
    pub min_achieved: f64,
    /// Rules such as `p99<20ms` or `errors=0` (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// A previous JSON report to compare with.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No per-second lines.
    #[arg(long)]
    pub quiet: bool,
    /// The deployment's buyer-token signing key: each purchase carries a
    /// token for its user (without it, none is sent and a deployment
    /// answers 401).
    #[arg(long, env = "FLASHSALE_TOKEN_KEY", hide_env_values = true)]
    pub token_key: Option<String>,
}

/// The trace at `path`.
pub fn load_trace(path: &Path) -> anyhow::Result<Vec<TraceRecord>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_trace(std::io::BufReader::new(file)).with_context(|| format!("in {}", path.display()))
}

/// The replayer's settings for `run` against `target`.
pub fn replay_config(target: &str, run: &RunArgs) -> ReplayConfig {
    ReplayConfig {
        target: target.to_owned(),
        speed: run.speed,
        connections: run.connections,
        max_in_flight: run.max_in_flight,
        late_after: run.late_after,
        request_timeout: run.request_timeout,
        threads: run.generator_threads,
        token_key: run.token_key.clone(),
    }
}

/// Builds, prints and writes the report; returns whether the run passed
/// (every audit check, threshold, and the achieved rate).
pub fn finish(
    records: &[TraceRecord],
    result: &ReplayResult,
    run: &RunArgs,
    target: &str,
    started_at_ms: i64,
    system: &[SystemSample],
    verdict: Option<AuditReport>,
) -> anyhow::Result<bool> {
    let parameters = Parameters {
        target: target.to_owned(),
        trace: run.trace.display().to_string(),
        requests: records.len(),
        speed: run.speed,
        started_at_ms,
    };
    let mut report = build(parameters, result, system, verdict);
    for rule in &run.thresholds {
        let verdict = check_threshold(&report, rule).map_err(anyhow::Error::msg)?;
        report.thresholds.push(verdict);
    }
    let totals = &report.totals;
    println!(
        "\n{} requests, peak offered {:.0}/s, late sends {} ({:.2} %), achieved/offered {:.3}, reconnects {}",
        totals.requests,
        totals.peak_offered_rps,
        totals.late_sends,
        totals.late_share * 100.0,
        totals.achieved_ratio,
        totals.reconnects
    );
    for (name, count) in &totals.outcomes {
        if *count > 0 {
            println!("  {name:<12} {count}");
        }
    }
    let c = &totals.corrected_us;
    let u = &totals.uncorrected_us;
    println!(
        "latency corrected   p50 {} µs, p99 {} µs, max {} µs",
        c.p50, c.p99, c.max
    );
    println!(
        "latency uncorrected p50 {} µs, p99 {} µs, max {} µs",
        u.p50, u.p99, u.max
    );
    print_latency_by_outcome(&report);
    let mut passed = true;
    if totals.achieved_ratio < run.min_achieved {
        println!(
            "FAIL achieved rate {:.3} of the offered one, below {:.3}: the tool could not keep up",
            totals.achieved_ratio, run.min_achieved
        );
        passed = false;
    }
    if let Some(audit) = &report.audit {
        println!("audit:");
        for check in &audit.checks {
            println!(
                "  {} {}: {}",
                if check.passed { "PASS" } else { "FAIL" },
                check.name,
                check.detail
            );
        }
        passed &= audit.passed();
    }
    for threshold in &report.thresholds {
        println!(
            "threshold {} {} (actual {})",
            threshold.rule,
            if threshold.passed { "PASS" } else { "FAIL" },
            threshold.actual
        );
        passed &= threshold.passed;
    }
    if let Some(path) = &run.baseline {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the baseline {}", path.display()))?;
        let baseline: RunReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a loadtest report", path.display()))?;
        println!("against the baseline {}:", path.display());
        for line in compare(&report, &baseline) {
            println!("  {line}");
        }
    }
    if let Some(path) = &run.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &run.html {
        std::fs::write(path, crate::html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(passed)
}

/// Corrected and uncorrected p50/p99/p99.9 of each outcome that occurred,
/// one line each.
pub fn print_latency_by_outcome(report: &RunReport) {
    println!("latency by outcome (µs)      corrected p50/p99/p99.9    uncorrected p50/p99/p99.9");
    for (name, latency) in &report.totals.by_outcome {
        let (c, u) = (&latency.corrected_us, &latency.uncorrected_us);
        println!(
            "  {name:<12} {:>9}   {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
            latency.count, c.p50, c.p99, c.p999, u.p50, u.p99, u.p999
        );
    }
}
