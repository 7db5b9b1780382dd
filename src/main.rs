//! The all-in-one binary: gateway, seckill (with its broker), an order
//! worker and their APIs in one process, on embedded defaults (the Lua
//! stock store in process, SQLite, data under `./data/run-<time>`, or
//! `FLASHSALE_DATA_DIR`), or on real Redis
//! and PostgreSQL when `REDIS_URL` / `DATABASE_URL` are set.
//!
//! - `cargo run --release` — start it, create a demo item, print this
//!   run's development keys and a buyer token, say where to
//!   send requests and where the live page is; stop with Ctrl-C.
//! - `cargo run --release -- demo` — start it, generate a flash-sale spike
//!   from a fixed seed (about 225,000 requests, offered at up to about
//!   60,000/s, for 10,000 units, with repeat clickers and bots), replay it,
//!   drain, audit every invariant, print what the edge and the
//!   reservation path answered and how the orders were written, and write
//!   the HTML and JSON reports.
//! - `cargo run --release -- run TRACE` — the same with a trace of your
//!   own (`loadtest gen`) and the load tester's options.
//!
//! Ctrl-C (or SIGTERM) stops it cleanly — requests drained, the worker's
//! offsets committed and its group left, the broker flushed and its abort
//! marker removed; a second Ctrl-C exits at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flashsale::stack::{Stack, StackConfig};
use flashsale::stack_run::run_on_stack;
use loadtest::generate::{Population, Shape, generate, parse_duration};
use loadtest::options::{RunArgs, finish, load_trace, print_latency_by_outcome, replay_config};
use loadtest::replay::ReplayConfig;
use loadtest::report::{Parameters, RunReport, SystemSample, build};
use loadtest::runner::unix_ms;
use service_kit::access::{self, Keys};
use service_kit::env_settings::EnvReader;

/// The demo's item.
const DEMO_ITEM: &str = "flash-item";

#[derive(Debug, Parser)]
#[command(version, about = "The flash-sale stack in one process")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Start the stack and serve until Ctrl-C (the default).
    Serve,
    /// Replay a generated flash-sale spike against a fresh stack, audit,
    /// and write the HTML and JSON reports.
    Demo(DemoArgs),
    /// Start the whole stack, replay a trace against it, wait for the
    /// workers to drain, and audit every invariant.
    Run {
        /// Stock of every item in the trace.
        #[arg(long, default_value_t = 500)]
        stock: u64,
        /// The order worker's write cap (orders/s; 0 = unlimited).
        #[arg(long, default_value_t = 1_000)]
        worker_rate: u32,
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

/// The demo's spike and stack.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Units of the item on sale.
    #[arg(long, default_value_t = 10_000)]
    stock: u64,
    /// The order worker's write cap (orders/s).
    #[arg(long, default_value_t = 2_000)]
    worker_rate: u32,
    /// Peak arrival rate of buyers and bots (per second), held 3 s after
    /// 1 s of base load; repeat clicks and bot bursts come on top (the
    /// offered request rate peaks about 1.6 times higher).
    #[arg(long, default_value_t = 36_000.0)]
    peak: f64,
    /// Seed of the generated spike: the same seed, the same requests.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Keep-alive connections of the replay.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

/// The environment, read the way every service reads it.
fn env() -> EnvReader<impl Fn(&str) -> Option<String>> {
    EnvReader::new(|name: &str| std::env::var(name).ok())
}

fn env_addr(name: &str, default: &str) -> anyhow::Result<SocketAddr> {
    let default = default.parse().expect("a valid default address");
    Ok(env()
        .addr(name)
        .map_err(anyhow::Error::msg)?
        .unwrap_or(default))
}

fn base_config(data_dir: PathBuf, items: Vec<(String, u64)>) -> StackConfig {
    let env = env();
    StackConfig {
        redis_url: env.text("REDIS_URL"),
        database_url: env.text("DATABASE_URL"),
        key_prefix: env.raw("SECKILL_KEY_PREFIX").unwrap_or_default(),
        ..StackConfig::embedded(data_dir, items)
    }
}

/// The items a trace buys, each with `stock` units.
fn items_of(records: &[loadtest::trace::TraceRecord], stock: u64) -> Vec<(String, u64)> {
    let mut items: Vec<String> = records.iter().map(|r| r.item.clone()).collect();
    items.sort();
    items.dedup();
    items.into_iter().map(|item| (item, stock)).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let outcome = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve().await.map(|()| true),
            Command::Demo(args) => demo(args).await,
            Command::Run {
                stock,
                worker_rate,
                data_dir,
                drain_timeout,
                run,
            } => run_trace(stock, worker_rate, data_dir, drain_timeout, run).await,
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("flashsale: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `addr` if it is a loopback address: the all-in-one's seckill and worker
/// ports carry admin and broker routes, so they never face a network.
fn loopback_only(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "{addr} is not a loopback address: the all-in-one serves its admin ports on loopback only"
    );
    Ok(addr)
}

async fn serve() -> anyhow::Result<()> {
    service_kit::telemetry::init_logging();
    // The embedded stock store lives in memory, so a restart starts a
    // fresh sale in a fresh directory (the database and the broker's log
    // would otherwise remember orders the store has forgotten).
    let data_dir = std::env::var("FLASHSALE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("data").join(format!("run-{}", unix_ms())));
    // The keys: the environment's when it sets them all, else fresh ones
    // for this run, printed below.
    let given = Keys::from_lookup(|name| std::env::var(name).ok(), true);
    let (keys, printed) = match given {
        Ok(keys) => (keys, false),
        Err(_) => (Keys::random(), true),
    };
    let config = StackConfig {
        gateway_listen: env_addr("GATEWAY_LISTEN", "127.0.0.1:8080")?,
        seckill_listen: Some(loopback_only(env_addr(
            "SECKILL_LISTEN",
            "127.0.0.1:8081",
        )?)?),
        worker_listen: Some(loopback_only(env_addr("WORKER_LISTEN", "127.0.0.1:8082")?)?),
        keys: keys.clone(),
        // Served as deployed: a purchase is answered once it is on disk.
        flush: broker::FlushMode::sync(),
        ..base_config(data_dir.clone(), vec![("demo-item".into(), 100)])
    };
    let (seckill, worker) = (config.seckill_listen, config.worker_listen);
    let live_listen = env_addr("LIVE_LISTEN", "127.0.0.1:8083")?;
    // Before the stack starts, so the live page counts every answer (it
    // says so itself if it cannot).
    let _ = flashsale::live::count_answers();
    let stack = Arc::new(Stack::start(config).await?);
    let live = flashsale::live::serve(&stack, live_listen).await?;
    let url = stack.url();
    println!("flashsale is up; data in {}", data_dir.display());
    if printed {
        println!(
            "  keys:     development keys of this run only (set all three in the environment to choose them):"
        );
        println!("            {}={}", access::TOKEN_KEY_VAR, keys.token);
        println!("            {}={}", access::ADMIN_KEY_VAR, keys.admin);
        println!(
            "            {}={}",
            access::BROKER_KEY_VAR,
            keys.broker.as_deref().unwrap_or_default()
        );
    }
    let alice = stack
        .buyer_tokens()
        .mint("alice", Duration::from_secs(3600));
    println!("  token:    alice's buyer token, valid 1 h: {alice}");
    println!(
        "  pass:     curl -X POST {url}/api/seckill/demo-item/token -H 'Authorization: Bearer {alice}'   (a purchase token, single use)"
    );
    println!(
        "  buy:      curl -X POST {url}/api/seckill/demo-item -H 'Authorization: Bearer {alice}' -H 'x-purchase-token: <purchase_token>'"
    );
    println!(
        "  order:    curl {url}/api/orders/<order_id> -H 'Authorization: Bearer <token>'   (pay: POST …/pay)"
    );
    if seckill.is_some() {
        let seckill = stack.seckill_addr();
        println!(
            "  admin:    curl http://{seckill}/admin/activities -H 'Authorization: Bearer <{}>'   (loopback only; the broker API under /broker takes {})",
            access::ADMIN_KEY_VAR,
            access::BROKER_KEY_VAR
        );
    }
    if worker.is_some() {
        let worker = stack.worker_addr();
        println!(
            "  worker:   curl http://{worker}/admin/worker -H 'Authorization: Bearer <{}>'   (loopback only)",
            access::ADMIN_KEY_VAR
        );
    }
    println!("  live:     http://{live}/");
    println!("stop with Ctrl-C");
    service_kit::shutdown_signal().await;
    stack.stop().await?;
    println!("flashsale stopped cleanly");
    Ok(())
}

/// The demo's spike: base load, a jump to the peak held 3 s, a 1 s
/// decay; 300,000 possible buyers with repeat clickers and bots.
fn demo_spike(args: &DemoArgs) -> anyhow::Result<Vec<loadtest::trace::TraceRecord>> {
    let shape = Shape::Spike {
        base_rps: 500.0,
        peak_rps: args.peak,
        at: Duration::from_secs(1),
        ramp: Duration::ZERO,
        hold: Duration::from_secs(3),
        tail: Duration::from_secs(1),
        duration: Duration::from_secs(7),
    };
    let population = Population {
        users: 300_000,
        items: vec![DEMO_ITEM.into()],
        ..Population::default()
    };
    generate(&shape, &population, args.seed).map_err(anyhow::Error::msg)
}

async fn demo(args: DemoArgs) -> anyhow::Result<bool> {
    let records = demo_spike(&args)?;
    let data_dir = PathBuf::from("data").join(format!("demo-{}", unix_ms()));
    let config = StackConfig {
        worker_rate: args.worker_rate,
        key_prefix: format!("demo-{}:", unix_ms()),
        ..base_config(data_dir.clone(), items_of(&records, args.stock))
    };
    let _ = flashsale::live::count_answers();
    let stack = Arc::new(Stack::start(config).await?);
    let live = flashsale::live::serve(&stack, env_addr("LIVE_LISTEN", "127.0.0.1:0")?).await?;
    println!("watch it live: http://{live}/");
    println!(
        "flashsale demo: the stack is up at {} (data in {}); replaying a generated {}-request spike (seed {}) for {} units",
        stack.url(),
        data_dir.display(),
        records.len(),
        args.seed,
        args.stock
    );
    let replay = ReplayConfig {
        target: stack.url(),
        connections: args.connections,
        ..ReplayConfig::default()
    };
    let run = run_on_stack(&stack, &records, &replay, false, Duration::from_secs(120)).await?;
    let parameters = Parameters {
        target: stack.url(),
        trace: format!(
            "generated spike: peak arrivals {:.0}/s, seed {}, {} units",
            args.peak, args.seed, args.stock
        ),
        requests: records.len(),
        speed: 1.0,
        started_at_ms: run.started_at_ms,
    };
    let passed = run.audit.passed();
    let report = build(parameters, &run.result, &run.system, Some(run.audit));
    println!();
    print_demo_summary(&report, &run.system, args.worker_rate);
    println!("audit:");
    for check in &report.audit.as_ref().expect("the demo audits").checks {
        println!(
            "  {} {}: {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    let html = data_dir.join("report.html");
    let json = data_dir.join("report.json");
    std::fs::write(&html, loadtest::html::render(&report))?;
    std::fs::write(&json, loadtest::report::to_json(&report)?)?;
    println!("report: {}", html.canonicalize().unwrap_or(html).display());
    println!("json:   {}", json.display());
    stack.stop().await?;
    Ok(passed)
}

/// The demo's figures: the load as offered and sent, what each path
/// answered and how fast, and the orders written per 100 ms against the
/// worker's cap.
fn print_demo_summary(report: &RunReport, system: &[SystemSample], worker_rate: u32) {
    let totals = &report.totals;
    println!(
        "{} requests, peak offered {:.0}/s, late sends {:.2} % (written > 1 ms after plan), reconnects {}",
        totals.requests,
        totals.peak_offered_rps,
        totals.late_share * 100.0,
        totals.reconnects
    );
    for (name, count) in totals.outcomes.iter().filter(|(_, n)| **n > 0) {
        println!("  {name:<12} {count}");
    }
    let p99_ms = |outcome: &str| {
        totals.by_outcome.get(outcome).map_or("-".to_owned(), |o| {
            format!("{:.2} ms", o.corrected_us.p99 as f64 / 1e3)
        })
    };
    println!(
        "corrected p99: sold_out {}, queued {}",
        p99_ms("sold_out"),
        p99_ms("queued")
    );
    print_latency_by_outcome(report);
    let cap = f64::from(worker_rate) / 10.0;
    match written_per_100ms(system, cap) {
        Some(written) => println!(
            "orders written per 100 ms: max {:.0}; while 100 ms of orders or more waited: min {:.0}, mean {:.0} (worker cap {cap:.0} per 100 ms, {worker_rate}/s)",
            written.max, written.min, written.mean
        ),
        None => println!("orders written per 100 ms: no system samples"),
    }
}

/// Orders written per 100 ms, from consecutive system samples.
struct WrittenRate {
    /// Highest over the run.
    max: f64,
    /// Lowest while at least 100 ms of orders waited for the worker.
    min: f64,
    /// Mean over the same spans.
    mean: f64,
}

fn written_per_100ms(system: &[SystemSample], cap_per_100ms: f64) -> Option<WrittenRate> {
    let mut max = 0.0f64;
    let mut waiting = Vec::new();
    for pair in system.windows(2) {
        let span_ms = pair[1].at_ms.saturating_sub(pair[0].at_ms);
        if span_ms == 0 {
            continue;
        }
        let rate = pair[1]
            .orders_written
            .saturating_sub(pair[0].orders_written) as f64
            * 100.0
            / span_ms as f64;
        max = max.max(rate);
        // At least a span's worth of orders at the cap waited for the
        // worker (visible to it: not in an open transaction) from the
        // start of the span to its end: the worker's own pace.
        let full_span = (cap_per_100ms * span_ms as f64 / 100.0).ceil() as u64;
        let visible = |s: &SystemSample| s.backlog.saturating_sub(s.open_transactions);
        if visible(&pair[0]) >= full_span && visible(&pair[1]) > 0 {
            waiting.push(rate);
        }
    }
    if system.len() < 2 {
        return None;
    }
    let (min, mean) = if waiting.is_empty() {
        (0.0, 0.0)
    } else {
        (
            waiting.iter().copied().fold(f64::INFINITY, f64::min),
            waiting.iter().sum::<f64>() / waiting.len() as f64,
        )
    };
    Some(WrittenRate { max, min, mean })
}

async fn run_trace(
    stock: u64,
    worker_rate: u32,
    data_dir: Option<PathBuf>,
    drain_timeout: Duration,
    run: RunArgs,
) -> anyhow::Result<bool> {
    let records = load_trace(&run.trace)?;
    let temp = tempfile::tempdir()?;
    let data_dir = data_dir.unwrap_or_else(|| temp.path().to_owned());
    let stack = Arc::new(
        Stack::start(StackConfig {
            worker_rate,
            key_prefix: format!("run-{}:", unix_ms()),
            ..base_config(data_dir, items_of(&records, stock))
        })
        .await?,
    );
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
    stack.stop().await?;
    Ok(passed)
}
