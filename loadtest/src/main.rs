//! The `loadtest` command.
//!
//! ```text
//! loadtest gen spike --peak 5000 --duration 10s --seed 1 -o spike.ndjson
//! loadtest replay --target http://127.0.0.1:8080 spike.ndjson --html report.html
//! loadtest replay --target http://127.0.0.1:8080 spike.ndjson --connections 16 \
//!     --max-in-flight 65536 --late-after 1ms --request-timeout 10s --generator-threads 1
//! ```
//!
//! The replay sends on a fixed set of keep-alive connections
//! (`--connections`), each pipelining its share of the requests (at most
//! `--max-in-flight` in all); a send written more than `--late-after` past
//! its plan is counted late; an answer awaited longer than
//! `--request-timeout` closes its connection and counts what was in flight
//! on it as errors. The generator runs on `--generator-threads` threads of
//! its own, plus one pacing thread.
//!
//! The whole stack in this process with a replay and its audit is the
//! all-in-one binary's `run` (`cargo run --release -- run spike.ndjson`):
//! the load tester itself uses no service crate, so it measures any
//! deployment the same way.
//!
//! Exit codes: 0 when everything held; 1 when an invariant, a threshold
//! or the achieved rate failed; 2 for bad input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use loadtest::audit::audit;
use loadtest::deployment::Deployment;
use loadtest::generate::{Population, Shape, generate, parse_duration, parse_stage};
use loadtest::options::{RunArgs, finish, load_trace, replay_config};
use loadtest::runner::{answers, replay_with_progress, spawn_sampler};
use loadtest::trace::write_trace;
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
    /// The deployment's broker key: its stats say when the workers drained.
    #[arg(long, env = "FLASHSALE_BROKER_KEY", hide_env_values = true)]
    broker_key: Option<String>,
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
                        deployment.broker_key.as_deref(),
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
