//! The load generators side by side on the gateway's sold-out path, in
//! the same run: the load tester's replay (open loop, pipelined
//! keep-alive connections, `loadtest::replay`), `oha -q` (open loop) and
//! `wrk` (closed loop: as fast as answers come back).
//!
//! The figure that matters for a spike is the highest rate a generator
//! sends *on plan*: offered in steps (25k, 50k, 100k, … requests/s, each
//! step a couple of seconds), a step is on plan when at most 1 % of the
//! sends were written more than 1 ms after their planned time and every
//! request got an answer. oha reports no late sends, so for it a step is
//! on plan when it achieved 99 % of the offered rate with every request
//! answered. wrk has no plan: its row is the closed-loop rate.
//!
//! The gateway and the generators share the machine's cores; other work
//! on the machine shows up as late sends (a pacing thread not scheduled in
//! time), so compare the rows of one run, on a machine as quiet as can be.
//!
//! oha is installed with `cargo install oha` and wrk is Debian's `wrk`
//! package (`apt-get install -y wrk`) when missing; a tool that cannot be
//! had is skipped with the reason printed.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use loadtest::generate::parse_duration;
use loadtest::replay::{Outcome, Quiet, ReplayConfig, replay};
use loadtest::trace::{ClientKind, TraceRecord};
use serde::Serialize;

use crate::{Args, PATH, spawn_self, wait_until_up};

/// Offered rates tried, requests/s, in order; stepping goes on past a
/// step off plan while the generator still sends 95 % of the offered
/// rate with every request answered (so the table shows how it degrades).
pub(crate) const STEPS: [f64; 9] = [
    25_000.0, 50_000.0, 100_000.0, 150_000.0, 200_000.0, 250_000.0, 300_000.0, 400_000.0, 500_000.0,
];

/// Most late sends in an on-plan step.
const MOST_LATE: f64 = 0.01;

/// One offered rate, as one generator managed it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub(crate) offered_rps: f64,
    pub(crate) achieved_rps: f64,
    /// Share of sends more than 1 ms late (the load tester only).
    pub(crate) late_share: Option<f64>,
    /// 99th percentile of how late sends were written, µs (the load
    /// tester only).
    pub(crate) send_delay_p99_us: Option<u64>,
    /// Requests without an answer.
    pub(crate) unanswered: u64,
    /// Corrected p99 (from the planned send), µs.
    pub(crate) p99_us: u64,
    pub(crate) on_plan: bool,
}

/// One generator's row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GeneratorRow {
    pub(crate) name: String,
    /// Highest offered rate on plan (`None`: not even the first step, or
    /// a closed-loop tool).
    pub(crate) on_plan_rps: Option<f64>,
    /// Highest rate achieved in any step.
    pub(crate) best_achieved_rps: f64,
    pub(crate) steps: Vec<Step>,
}

fn step_trace(rate: f64, seconds: f64) -> Vec<TraceRecord> {
    let count = (rate * seconds) as u64;
    (0..count)
        .map(|n| TraceRecord {
            at_us: (n as f64 * 1e6 / rate) as u64,
            user: format!("user{n}"),
            item: "sku".into(),
            kind: ClientKind::Buyer,
        })
        .collect()
}

/// Steps the load tester's replay up against `port`.
async fn ours(port: u16, connections: usize, threads: usize, seconds: f64) -> GeneratorRow {
    let config = ReplayConfig {
        target: format!("http://127.0.0.1:{port}"),
        connections,
        threads,
        late_after: Duration::from_millis(1),
        request_timeout: Duration::from_secs(5),
        token_key: Some(crate::bench_keys().token.clone()),
        ..ReplayConfig::default()
    };
    let mut steps = Vec::new();
    for rate in STEPS {
        let records = step_trace(rate, seconds);
        let result = match replay(&records, &config, Arc::new(Quiet)).await {
            Ok(result) => result,
            Err(e) => {
                eprintln!("  loadtest replay at {rate:.0}/s: {e}");
                break;
            }
        };
        let mut corrected = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let mut delay = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let mut unanswered = 0;
        for sample in &result.samples {
            corrected.saturating_record(sample.corrected_us().max(1));
            delay.saturating_record((sample.sent_us - sample.planned_us).max(1));
            if sample.outcome == Outcome::Error {
                unanswered += 1;
            }
        }
        let late_share = result.late_share();
        let step = Step {
            offered_rps: rate,
            achieved_rps: rate * result.achieved_ratio(),
            late_share: Some(late_share),
            send_delay_p99_us: Some(delay.value_at_quantile(0.99)),
            unanswered,
            p99_us: corrected.value_at_quantile(0.99),
            on_plan: late_share <= MOST_LATE && unanswered == 0,
        };
        eprintln!(
            "  loadtest replay: offered {rate:.0}/s, achieved {:.0}/s, late {:.2} % (send delay p99 {} µs), unanswered {unanswered}, corrected p99 {} µs{}",
            step.achieved_rps,
            late_share * 100.0,
            delay.value_at_quantile(0.99),
            step.p99_us,
            if step.on_plan { "" } else { " — off plan" }
        );
        let keep_going = keeps_up(&step);
        steps.push(step);
        if !keep_going {
            break;
        }
    }
    row(
        format!("loadtest replay, {connections} pipelined connections"),
        steps,
    )
}

/// Whether to try the next step: 95 % of the offered rate sent, all
/// answered.
fn keeps_up(step: &Step) -> bool {
    step.achieved_rps >= 0.95 * step.offered_rps && step.unanswered == 0
}

fn row(name: String, steps: Vec<Step>) -> GeneratorRow {
    GeneratorRow {
        name,
        on_plan_rps: steps
            .iter()
            .filter(|s| s.on_plan)
            .map(|s| s.offered_rps)
            .reduce(f64::max),
        best_achieved_rps: steps.iter().map(|s| s.achieved_rps).fold(0.0, f64::max),
        steps,
    }
}

/// Runs `program args`, returning its standard output, or why not.
fn output(program: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// oha on the PATH, or installed with `cargo install oha`.
fn find_or_install_oha() -> Result<String, String> {
    if output("oha", &["--version".into()]).is_ok() {
        return Ok("oha".into());
    }
    eprintln!("  oha is missing; installing it with `cargo install oha` (a few minutes)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "oha"])
        .status()
        .map_err(|e| format!("cannot run cargo install oha: {e}"))?;
    if !status.success() {
        return Err(format!("cargo install oha failed ({status})"));
    }
    let home = std::env::var("CARGO_HOME")
        .or_else(|_| std::env::var("HOME").map(|h| format!("{h}/.cargo")))
        .unwrap_or_default();
    for candidate in ["oha".to_owned(), format!("{home}/bin/oha")] {
        if output(&candidate, &["--version".into()]).is_ok() {
            return Ok(candidate);
        }
    }
    Err("installed, but oha is still not found".into())
}

/// Steps `oha -q` up against `port`.
fn oha(oha: &str, port: u16, connections: usize, seconds: f64) -> Result<GeneratorRow, String> {
    let mut steps = Vec::new();
    for rate in STEPS {
        let args: Vec<String> = [
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{seconds}s"),
            "-q",
            &format!("{rate}"),
            "-c",
            &connections.to_string(),
            "--latency-correction",
            "-w",
            "-m",
            "POST",
            "-H",
            &format!("authorization: Bearer {}", crate::bench_token("user1")),
            "-H",
            &format!("x-purchase-token: {}", crate::bench_pass("user1")),
            &format!("http://127.0.0.1:{port}{PATH}"),
        ]
        .map(str::to_owned)
        .to_vec();
        let json: serde_json::Value = serde_json::from_str(&output(oha, &args)?)
            .map_err(|e| format!("oha's JSON output: {e}"))?;
        let summary = &json["summary"];
        let achieved = summary["requestsPerSec"].as_f64().unwrap_or(0.0);
        let success = summary["successRate"].as_f64().unwrap_or(0.0);
        let total = achieved * seconds;
        let unanswered = (total * (1.0 - success)).round() as u64;
        let p99_us = (json["latencyPercentiles"]["p99"].as_f64().unwrap_or(0.0) * 1e6) as u64;
        let on_plan = achieved >= 0.99 * rate && success >= 1.0;
        eprintln!(
            "  oha -q: offered {rate:.0}/s, achieved {achieved:.0}/s, success {:.2} %, p99 {p99_us} µs{}",
            success * 100.0,
            if on_plan { "" } else { " — off plan" }
        );
        let step = Step {
            offered_rps: rate,
            achieved_rps: achieved,
            late_share: None,
            send_delay_p99_us: None,
            unanswered,
            p99_us,
            on_plan,
        };
        let keep_going = keeps_up(&step);
        steps.push(step);
        if !keep_going {
            break;
        }
    }
    Ok(row(format!("oha -q, {connections} connections"), steps))
}

/// wrk on the PATH, or installed from Debian's package.
fn find_or_install_wrk() -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("  wrk is missing; installing it with `apt-get install -y wrk`");
    let status = Command::new("apt-get")
        .args(["install", "-y", "wrk"])
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !status.success() {
        return Err(format!("apt-get install wrk failed ({status})"));
    }
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|_| ())
        .map_err(|e| format!("installed, but wrk does not run: {e}"))
}

/// wrk's closed-loop rate against `port` (2 threads).
fn wrk(port: u16, connections: usize, seconds: f64) -> Result<GeneratorRow, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"authorization\"] = \"Bearer {}\"\nwrk.headers[\"x-purchase-token\"] = \"{}\"\n",
            crate::bench_token("user1"),
            crate::bench_pass("user1")
        ),
    )
    .map_err(|e| e.to_string())?;
    let args: Vec<String> = vec![
        "-t2".into(),
        format!("-c{connections}"),
        format!("-d{}s", seconds.ceil()),
        "--latency".into(),
        "-s".into(),
        script.display().to_string(),
        format!("http://127.0.0.1:{port}{PATH}"),
    ];
    let text = output("wrk", &args)?;
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let p99_us = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_duration(v).ok())
        .map_or(0, |d| d.as_micros() as u64);
    eprintln!("  wrk (closed loop): {rate:.0}/s, p99 {p99_us} µs");
    Ok(GeneratorRow {
        name: format!("wrk -t2, {connections} connections (closed loop)"),
        on_plan_rps: None,
        best_achieved_rps: rate,
        steps: vec![Step {
            offered_rps: rate,
            achieved_rps: rate,
            late_share: None,
            send_delay_p99_us: None,
            unanswered: 0,
            p99_us,
            on_plan: false,
        }],
    })
}

/// The generators on the gateway's sold-out path, one fresh gateway
/// process each.
pub(crate) async fn compare(args: &Args, skipped: &mut Vec<String>) -> Vec<GeneratorRow> {
    let connections = args.generator_connections.max(1);
    let seconds = args.step_seconds.clamp(0.5, 10.0);
    eprintln!(
        "generators on the gateway's sold-out path: {connections} connections, {seconds} s per step"
    );
    let mut rows = Vec::new();
    let gateway = spawn_self("gateway");
    if let Err(e) = wait_until_up(gateway.port).await {
        skipped.push(format!("generators: the gateway did not start: {e}"));
        return rows;
    }
    rows.push(ours(gateway.port, connections, args.generator_threads, seconds).await);
    drop(gateway);
    let oha_row = match find_or_install_oha() {
        Ok(program) => {
            on_a_fresh_gateway(move |port| oha(&program, port, connections, seconds)).await
        }
        Err(reason) => Err(reason),
    };
    match oha_row {
        Ok(row) => rows.push(row),
        Err(reason) => skipped.push(format!("oha: {reason}")),
    }
    let wrk_row = match find_or_install_wrk() {
        Ok(()) => on_a_fresh_gateway(move |port| wrk(port, connections, seconds)).await,
        Err(reason) => Err(reason),
    };
    match wrk_row {
        Ok(row) => rows.push(row),
        Err(reason) => skipped.push(format!("wrk: {reason}")),
    }
    rows
}

/// Runs an external generator (a blocking call given the port) against a
/// gateway process of its own, stopped when the generator returns.
async fn on_a_fresh_gateway(
    run: impl FnOnce(u16) -> Result<GeneratorRow, String> + Send + 'static,
) -> Result<GeneratorRow, String> {
    let gateway = spawn_self("gateway");
    let port = gateway.port;
    wait_until_up(port).await?;
    let row = tokio::task::spawn_blocking(move || run(port))
        .await
        .map_err(|e| e.to_string())?;
    drop(gateway);
    row
}
