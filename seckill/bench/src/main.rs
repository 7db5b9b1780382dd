//! `seckill-bench`: reservations per second through the service, beside
//! the same Lua script driven directly, measured in one run.
//!
//! ```text
//! cargo run --release -p seckill-bench -- [--quick] [--json FILE]
//! ```
//!
//! Rows, each with the same number of concurrent buyers:
//! - the service (`Seckill::purchase`: half message, `reserve.lua`,
//!   commit) over a throwaway `redis-server` (or `REDIS_URL`), with the
//!   broker in sync group-commit mode as deployed;
//! - the same script through the same Redis pool, without the service
//!   (the client-loop reference);
//! - `redis-benchmark` running EVALSHA of the same script with as many
//!   connections (skipped with a reason when it is not installed);
//! - the embedded store, through the service and directly.
//!
//! Every buyer is a new user and stock never runs out, so each request
//! does the full work of a sale. The machine is shared and noisy: read the
//! ratios, not the absolute numbers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, FlushMode};
use seckill::{
    Activity, EmbeddedScripts, ItemKeys, PurchaseOutcome, RESERVE, RedisScripts, Reservation,
    Seckill, StockStore,
};
use serde::Serialize;
use test_support::ThrowawayRedis;

const CONCURRENCY: usize = 64;
const STOCK: u64 = 1_000_000_000;

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    reservations: u64,
    seconds: f64,
    per_second: f64,
}

#[derive(Debug, Serialize)]
struct Ratio {
    what: String,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    concurrency: usize,
    rows: Vec<Row>,
    skipped: Vec<String>,
    ratios: Vec<Ratio>,
}

#[derive(Debug, clap::Parser)]
#[command(about = "Reservations/s through the seckill service beside the same script run directly")]
struct Args {
    /// Short rows (2 s each) instead of 8 s.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The Redis the bench uses: a throwaway server, or `REDIS_URL`.
struct BenchRedis {
    _server: Option<ThrowawayRedis>,
    url: String,
    port: Option<u16>,
}

fn start_redis() -> Result<BenchRedis, String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok(BenchRedis {
            _server: None,
            url,
            port: None,
        });
    }
    let server = ThrowawayRedis::start()?;
    Ok(BenchRedis {
        url: server.url(),
        port: Some(server.port()),
        _server: Some(server),
    })
}

/// Runs `CONCURRENCY` closed-loop buyers for `duration`; each call of
/// `buy(n)` must make one reservation for a new user `n`.
async fn drive<F, Fut>(name: String, duration: Duration, buy: F) -> Row
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next_user = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let buy = buy.clone();
        let next_user = Arc::clone(&next_user);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                buy(next_user.fetch_add(1, Ordering::Relaxed)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a buyer task panicked");
    }
    let seconds = started.elapsed().as_secs_f64();
    let reservations = next_user.load(Ordering::Relaxed);
    eprintln!("  {name}: {:.0}/s", reservations as f64 / seconds);
    Row {
        name,
        reservations,
        seconds,
        per_second: reservations as f64 / seconds,
    }
}

async fn service_over(store: StockStore, dir: &std::path::Path, item: &str) -> Arc<Seckill> {
    let mut config = BrokerConfig::new(dir);
    config.flush = FlushMode::sync();
    config.segment_size = 256 << 20;
    let broker = Broker::open(config).expect("open the broker");
    let seckill = Seckill::new(broker, store, 1).expect("seckill");
    seckill
        .activities()
        .upsert(Activity {
            item: item.into(),
            stock: STOCK,
            per_user_limit: 1,
            starts_at_ms: 0,
            ends_at_ms: i64::MAX,
        })
        .expect("activity");
    seckill.store().prewarm(item, STOCK).await.expect("prewarm");
    seckill
}

fn service_row(
    seckill: Arc<Seckill>,
    item: &'static str,
    name: String,
    duration: Duration,
) -> impl std::future::Future<Output = Row> {
    drive(name, duration, move |n| {
        let seckill = Arc::clone(&seckill);
        async move {
            let outcome = seckill
                .purchase(item, &format!("u{n}"))
                .await
                .expect("purchase");
            assert!(
                matches!(outcome, PurchaseOutcome::Queued { .. }),
                "{outcome:?}"
            );
        }
    })
}

fn script_row(
    store: StockStore,
    item: &'static str,
    name: String,
    duration: Duration,
) -> impl std::future::Future<Output = Row> {
    drive(name, duration, move |n| {
        let store = store.clone();
        async move {
            let outcome = store
                .reserve(item, &format!("u{n}"), &format!("o{n}"))
                .await
                .expect("reserve");
            assert!(matches!(outcome, Reservation::Queued { .. }), "{outcome:?}");
        }
    })
}

/// The two rows of one store: through the service, and the script alone
/// (each on an item of its own, so neither sells the other's stock).
async fn store_rows(
    store: StockStore,
    dir: &std::path::Path,
    label: &str,
    direct_name: &str,
    duration: Duration,
) -> (Row, Row) {
    let seckill = service_over(store.clone(), dir, "hot").await;
    let service = service_row(
        seckill.clone(),
        "hot",
        format!("service over {label}"),
        duration,
    )
    .await;
    seckill
        .store()
        .prewarm("direct", STOCK)
        .await
        .expect("prewarm");
    let direct = script_row(store, "direct", direct_name.to_owned(), duration).await;
    seckill.broker().shutdown().await.expect("shutdown");
    (service, direct)
}

/// `redis-benchmark` running EVALSHA of reserve.lua: random users, the
/// same number of connections.
fn redis_benchmark(redis: &BenchRedis, requests: u64) -> Result<Row, String> {
    let port = redis
        .port
        .ok_or("REDIS_URL given; redis-benchmark runs only against the spawned server")?;
    let sha = {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "SCRIPT", "LOAD", RESERVE.source])
            .output()
            .map_err(|e| format!("redis-cli not available: {e}"))?;
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    if sha.len() != 40 {
        return Err(format!("SCRIPT LOAD answered {sha:?}"));
    }
    let keys = ItemKeys::new("", "rb").to_vec();
    let _ = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SET", &keys[0], &STOCK.to_string()])
        .output();
    let mut args = vec![
        "-p".to_string(),
        port.to_string(),
        "-c".into(),
        CONCURRENCY.to_string(),
        "-n".into(),
        requests.to_string(),
        "-r".into(),
        "1000000000".into(),
        "--csv".into(),
        "EVALSHA".into(),
        sha,
        "4".into(),
    ];
    args.extend(keys);
    args.extend([
        "__rand_int__".into(),
        "o__rand_int__".into(),
        "rb".into(),
        "sk:flags".into(),
    ]);
    let started = Instant::now();
    let output = Command::new("redis-benchmark")
        .args(&args)
        .output()
        .map_err(|e| format!("redis-benchmark not available: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&output.stdout);
    // CSV: "test","rps",...; the rps is the second field of the last line.
    let per_second: f64 = text
        .lines()
        .last()
        .and_then(|line| line.split(',').nth(1))
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read redis-benchmark's output: {text}"))?;
    Ok(Row {
        name: format!("redis-benchmark EVALSHA reserve.lua, {CONCURRENCY} connections"),
        reservations: requests,
        seconds,
        per_second,
    })
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let duration = if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(8)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    eprintln!(
        "seckill-bench: {CONCURRENCY} concurrent buyers, {:.0} s per row",
        duration.as_secs_f64()
    );

    match start_redis() {
        Ok(redis) => {
            let scripts = RedisScripts::connect(&redis.url, CONCURRENCY).expect("redis pool");
            scripts.ping().await.expect("redis answers");
            let store = StockStore::new(Arc::new(scripts), "bench:");
            let (service, direct) = store_rows(
                store,
                &dir.path().join("redis"),
                "Redis (half + reserve.lua + commit, sync flush)",
                "reserve.lua over Redis, client loop, same pool",
                duration,
            )
            .await;
            rows.push(service);
            rows.push(direct);
            let requests = (rows[1].per_second * duration.as_secs_f64()).max(10_000.0) as u64;
            match redis_benchmark(&redis, requests) {
                Ok(row) => {
                    eprintln!("  {}: {:.0}/s", row.name, row.per_second);
                    rows.push(row);
                }
                Err(reason) => skipped.push(format!("redis-benchmark: {reason}")),
            }
        }
        Err(reason) => skipped.push(format!("Redis rows: {reason}")),
    }

    let embedded = Arc::new(EmbeddedScripts::new().expect("embedded store"));
    let store = StockStore::new(embedded, "");
    let (service, direct) = store_rows(
        store,
        &dir.path().join("embedded"),
        "the embedded store",
        "reserve.lua in the embedded store, direct",
        duration,
    )
    .await;
    rows.push(service);
    rows.push(direct);

    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| r.per_second)
    };
    let mut ratios = Vec::new();
    let mut ratio = |what: &str, a: Option<f64>, b: Option<f64>| {
        if let (Some(a), Some(b)) = (a, b) {
            ratios.push(Ratio {
                what: what.into(),
                ratio: a / b,
            });
        }
    };
    ratio(
        "service over Redis / same script, client loop",
        find("service over Redis"),
        find("reserve.lua over Redis"),
    );
    ratio(
        "service over Redis / redis-benchmark EVALSHA",
        find("service over Redis"),
        find("redis-benchmark"),
    );
    ratio(
        "client loop / redis-benchmark EVALSHA",
        find("reserve.lua over Redis"),
        find("redis-benchmark"),
    );
    ratio(
        "service over embedded store / over Redis",
        find("service over the embedded"),
        find("service over Redis"),
    );
    ratio(
        "embedded script / Redis script (client loop)",
        find("reserve.lua in the embedded"),
        find("reserve.lua over Redis"),
    );

    println!();
    println!("{:<66} {:>12} {:>14}", "row", "reserv./s", "reservations");
    for row in &rows {
        println!(
            "{:<66} {:>12.0} {:>14}",
            row.name, row.per_second, row.reservations
        );
    }
    for reason in &skipped {
        println!("skipped {reason}");
    }
    println!("-- ratios");
    for r in &ratios {
        println!("{:>8.2}x  {}", r.ratio, r.what);
    }
    let report = Report {
        quick: args.quick,
        concurrency: CONCURRENCY,
        rows,
        skipped,
        ratios,
    };
    if let Some(path) = args.json {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&report).expect("report serializes"),
        )
        .expect("write the JSON report");
        eprintln!("wrote {}", path.display());
    }
}
