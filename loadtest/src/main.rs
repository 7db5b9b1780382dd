//! The `loadtest` command.
//!
//! ```text
//! loadtest gen spike --peak 5000 --duration 10s --seed 1 -o spike.ndjson
//! loadtest replay --target http://127.0.0.1:8080 spike.ndjson --html report.html
//! loadtest run spike.ndjson --stock 500 --html report.html   # the whole stack in-process
//! ```
//!
//! Exit codes: 0 when everything held; 1 when an invariant, a threshold
//! or the achieved rate failed; 2 for bad input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use loadtest::audit::audit;
use loadtest::deployment::Deployment;
use loadtest::generate::{Population, Shape, generate, parse_duration, parse_stage};
use loadtest::replay::{ReplayConfig, ReplayResult};
use loadtest::report::{Parameters, RunReport, SystemSample, build, check_threshold, compare};
use loadtest::runner::{answers, replay_with_progress, run_on_stack, spawn_sampler, unix_ms};
use loadtest::stack::{Stack, StackConfig};
use loadtest::trace::{TraceRecord, read_trace, write_trace};
use parking_lot::Mutex;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Flash-sale spike generator, open-loop replayer and auditor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a trace from a named shape.
    Gen(GenArgs),
    /// Replay a trace against a running gateway (and, with `--audit`,
    /// audit the deployment afterwards).
    Replay {
        /// The gateway's URL.
        #[arg(long)]
        target: String,
        #[command(flatten)]
        audit: DeploymentArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Start the whole stack in this process, replay a trace against it,
    /// wait for the workers to drain, and audit every invariant.
    Run {
        /// Stock of every item in the trace.
        #[arg(long, default_value_t = 500)]
        stock: u64,
        /// The order workers' write cap (orders/s; 0 = unlimited).
        #[arg(long, default_value_t = 1_000)]
        worker_rate: u32,
        /// Real Redis instead of the embedded store.
        #[arg(long, env = "REDIS_URL")]
        redis_url: Option<String>,
        /// PostgreSQL instead of SQLite.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Where the stack keeps its data (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Longest wait for the workers to drain.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        drain_timeout: Duration,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The trace (NDJSON; see `loadtest gen`).
    trace: PathBuf,
    /// Time scale (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Most requests in flight.
    #[arg(long, default_value_t = 2_048)]
    max_in_flight: usize,
    /// Fail when the achieved rate is below this share of the offered one.
    #[arg(long, default_value_t = 0.9)]
    min_achieved: f64,
    /// Rules such as `p99<20ms` or `errors=0` (repeatable).
    #[arg(long = "threshold")]
    thresholds: Vec<String>,
    /// A previous JSON report to compare with.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// No per-second lines.
    #[arg(long)]
    quiet: bool,
}

/// Where a deployment keeps what the audit reads.
#[derive(Debug, Args)]
struct DeploymentArgs {
    /// Audit the deployment after the replay (needs the options below).
    #[arg(long)]
    audit: bool,
    /// The stock store.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// The stock keys' prefix, as the deployment's `SECKILL_KEY_PREFIX`.
    #[arg(long, env = "SECKILL_KEY_PREFIX", default_value = "")]
    key_prefix: String,
    /// The order database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Seckill instances (their activities and brokers), comma-separated.
    #[arg(long = "seckill", value_delimiter = ',')]
    seckills: Vec<String>,
    /// Longest wait for the workers to drain.
    #[arg(long = "audit-drain-timeout", default_value = "120s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

#[derive(Debug, Args)]
struct GenArgs {
    /// spike, poisson or stages.
    shape: String,
    /// Peak rate of a spike, requests/s.
    #[arg(long, default_value_t = 5_000.0)]
    peak: f64,
    /// Base rate of a spike (before and after).
    #[arg(long, default_value_t = 50.0)]
    base: f64,
    /// When the spike jumps.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    at: Duration,
    /// Ramp to the peak (0: a jump).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    ramp: Duration,
    /// How long the peak holds.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    hold: Duration,
    /// Decay time constant after the peak.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    tail: Duration,
    /// Length of the trace (spike, poisson).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Rate of a poisson trace.
    #[arg(long, default_value_t = 1_000.0)]
    rps: f64,
    /// Stages `DURATION:RATE` (repeatable), for `stages`.
    #[arg(long = "stage", value_parser = parse_stage)]
    stages: Vec<loadtest::generate::Stage>,
    /// Random seed: the same seed, the same trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct users.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Items, comma-separated.
    #[arg(long, default_value = "sku-1", value_delimiter = ',')]
    items: Vec<String>,
    /// Share of buyers who click again.
    #[arg(long, default_value_t = 0.2)]
    repeat_probability: f64,
    /// Share of arrivals that are bots.
    #[arg(long, default_value_t = 0.02)]
    bot_probability: f64,
    /// Output file (default: standard output).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Gen(args) => gen_trace(args).map(|()| true),
        Command::Replay {
            target,
            audit: deployment,
            run,
        } => {
            let records = load_trace(&run.trace)?;
            // Connect first: a bad audit setting should fail before the load.
            let system = if deployment.audit {
                let (Some(redis), Some(database)) =
                    (&deployment.redis_url, &deployment.database_url)
                else {
                    anyhow::bail!(
                        "--audit needs --redis-url and --database-url (or REDIS_URL, DATABASE_URL)"
                    );
                };
                Some(
                    Deployment::connect(
                        redis,
                        &deployment.key_prefix,
                        database,
                        &deployment.seckills,
                    )
                    .await?,
                )
            } else {
                None
            };
            let config = replay_config(&target, &run);
            let samples = Arc::new(Mutex::new(Vec::new()));
            let line = Arc::new(Mutex::new(None));
            let system = system.map(Arc::new);
            let sampler = match &system {
                Some(system) => {
                    let activities = system.activities().await?;
                    let system = Arc::clone(system);
                    Some(spawn_sampler(
                        move |start| {
                            let system = Arc::clone(&system);
                            let activities = activities.clone();
                            async move { system.sample(&activities, start).await }
                        },
                        Arc::clone(&samples),
                        Arc::clone(&line),
                    ))
                }
                None => None,
            };
            let live_line = system.as_ref().map(|_| Arc::clone(&line));
            let (result, started_at_ms) =
                replay_with_progress(&records, &config, run.quiet, live_line).await?;
            let verdict = match &system {
                Some(system) => {
                    eprintln!(
                        "replay done; waiting for the workers to drain (at most {:?})",
                        deployment.drain_timeout
                    );
                    let drained = system.drained(deployment.drain_timeout).await;
                    if let Some(sampler) = sampler {
                        sampler.abort();
                    }
                    drained?;
                    Some(audit(
                        &system.audit_input(answers(&records, &result)).await?,
                    ))
                }
                None => None,
            };
            let series = samples.lock().clone();
            finish(
                &records,
                &result,
                &run,
                &target,
                started_at_ms,
                &series,
                verdict,
            )
        }
        Command::Run {
            stock,
            worker_rate,
            redis_url,
            database_url,
            data_dir,
            drain_timeout,
            run,
        } => {
            let records = load_trace(&run.trace)?;
            let mut items: Vec<String> = records.iter().map(|r| r.item.clone()).collect();
            items.sort();
            items.dedup();
            let temp = tempfile::tempdir()?;
            let stack = Stack::start(StackConfig {
                data_dir: data_dir.unwrap_or_else(|| temp.path().to_owned()),
                redis_url,
                key_prefix: format!("loadtest-{}:", unix_ms()),
                database_url,
                items: items.into_iter().map(|i| (i, stock)).collect(),
                worker_rate,
                user_rps: 5,
                ..StackConfig::embedded(temp.path(), Vec::new())
            })
            .await?;
            let stack = Arc::new(stack);
            let target = stack.url();
            eprintln!(
                "the whole stack is up at {target}; replaying {} requests",
                records.len()
            );
            let config = replay_config(&target, &run);
            let outcome = run_on_stack(&stack, &records, &config, run.quiet, drain_timeout).await?;
            let passed = finish(
                &records,
                &outcome.result,
                &run,
                &target,
                outcome.started_at_ms,
                &outcome.system,
                Some(outcome.audit),
            )?;
            if let Ok(stack) = Arc::try_unwrap(stack) {
                stack.stop().await;
            }
            Ok(passed)
        }
    }
}

fn gen_trace(args: GenArgs) -> anyhow::Result<()> {
    let shape = match args.shape.as_str() {
        "spike" => Shape::Spike {
            base_rps: args.base,
            peak_rps: args.peak,
            at: args.at,
            ramp: args.ramp,
            hold: args.hold,
            tail: args.tail,
            duration: args.duration,
        },
        "poisson" => Shape::Poisson {
            rps: args.rps,
            duration: args.duration,
        },
        "stages" => Shape::Stages(args.stages),
        other => anyhow::bail!("unknown shape {other:?}: use spike, poisson or stages"),
    };
    let population = Population {
        users: args.users,
        items: args.items,
        repeat_probability: args.repeat_probability,
        bot_probability: args.bot_probability,
        ..Population::default()
    };
    let records = generate(&shape, &population, args.seed).map_err(anyhow::Error::msg)?;
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            write_trace(&records, std::io::BufWriter::new(file))?;
            eprintln!("wrote {} requests to {}", records.len(), path.display());
        }
        None => write_trace(&records, std::io::stdout().lock())?,
    }
    Ok(())
}

fn load_trace(path: &Path) -> anyhow::Result<Vec<TraceRecord>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_trace(std::io::BufReader::new(file)).with_context(|| format!("in {}", path.display()))
}

fn replay_config(target: &str, run: &RunArgs) -> ReplayConfig {
    ReplayConfig {
        target: target.to_owned(),
        speed: run.speed,
        max_in_flight: run.max_in_flight.max(1),
        ..ReplayConfig::default()
    }
}

/// Builds, prints and writes the report; returns whether the run passed.
fn finish(
    records: &[TraceRecord],
    result: &ReplayResult,
    run: &RunArgs,
    target: &str,
    started_at_ms: i64,
    system: &[SystemSample],
    verdict: Option<loadtest::audit::AuditReport>,
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
        "\n{} requests, late sends {}, achieved/offered {:.3}",
        totals.requests, totals.late_sends, totals.achieved_ratio
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
        std::fs::write(path, loadtest::html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(passed)
}
