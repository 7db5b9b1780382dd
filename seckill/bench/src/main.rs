//! `seckill-bench`: reservations per second through the service, beside
//! the same Lua script driven directly, measured in one run.
//!
//! ```text
//! cargo run --release -p seckill-bench -- [--quick] [--json FILE] [--only TEXT]
//! ```
//!
//! Rows, every one over the same 64 Redis connections:
//! - the single path (`ReservationPath::Single`: half message,
//!   `reserve.lua`, commit per purchase) with 64 buyers, over a throwaway
//!   `redis-server` (or `REDIS_URL`), the broker in sync group-commit mode
//!   as deployed;
//! - the coalesced path (the default: batches of halves, one
//!   `reserve_batch.lua` call per batch, batches of commits) with 2,048
//!   buyers in flight, as under a spike, same broker mode;
//! - the same single script through the same Redis pool, without the
//!   service (the client-loop reference);
//! - `redis-benchmark` running EVALSHA of `reserve.lua` with 64
//!   connections, unpipelined and pipelined by 16 (skipped with a reason
//!   when it is not installed);
//! - seckill's HTTP endpoint on the coalesced path over the same Redis,
//!   one new user per request, offered open-loop (150,000 requests/s) by
//!   loadtest's replay over 2,048 keep-alive connections;
//! - the embedded store, through both paths and directly.
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
    Activity, BatchLimits, EmbeddedScripts, ItemKeys, PurchaseOutcome, RESERVE, RedisScripts,
    Reservation, ReservationPath, Seckill, StockStore,
};
use serde::Serialize;
use test_support::ThrowawayRedis;

/// mimalloc, as in every service binary (docs/ARCHITECTURE.md, "Crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Buyers of the single path's rows, and the Redis connections of every
/// row (the service's pool and redis-benchmark's clients).
const CONCURRENCY: usize = 64;
/// Buyers in flight at once on the coalesced rows: a spike's worth of
/// concurrent purchases, over the same 64 connections.
const SPIKE_BUYERS: usize = 2048;
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
    /// Run only the rows whose names contain this text (to profile one);
    /// ratios whose rows did not run are left out.
    #[arg(long)]
    only: Option<String>,
    /// The coalesced rows' most purchases per batch (default: the service's).
    #[arg(long)]
    batch_max: Option<usize>,
    /// The coalesced rows' most batches in flight (default: the service's).
    #[arg(long)]
    batch_in_flight: Option<usize>,
}

impl Args {
    /// The coalesced rows' path: the service's default bounds, or those given.
    fn coalesced_path(&self) -> ReservationPath {
        let defaults = BatchLimits::default();
        let limits = BatchLimits {
            max_batch: self.batch_max.unwrap_or(defaults.max_batch),
            max_in_flight: self.batch_in_flight.unwrap_or(defaults.max_in_flight),
        };
        if let Err(why) = limits.validate() {
            eprintln!("seckill-bench: {why}");
            std::process::exit(2);
        }
        ReservationPath::Coalesced(limits)
    }
}

/// Which rows run: all, or those whose names contain `--only`'s text.
#[derive(Debug, Clone)]
struct RowFilter(Option<String>);

impl RowFilter {
    fn wants(&self, name: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|only| name.contains(only.as_str()))
    }
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
async fn drive<F, Fut>(name: String, buyers: usize, duration: Duration, buy: F) -> Row
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next_user = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..buyers {
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

async fn service_over(
    store: StockStore,
    dir: &std::path::Path,
    item: &str,
    path: ReservationPath,
) -> Arc<Seckill> {
    let mut config = BrokerConfig::new(dir);
    config.flush = FlushMode::sync();
    config.segment_size = 256 << 20;
    let broker = Broker::open(config).expect("open the broker");
    let seckill = Seckill::with_path(broker, store, 1, path).expect("seckill");
    seckill
        .activities()
        .upsert(Activity {
            item: item.into(),
            stock: STOCK,
            per_user_limit: 1,
            quiz: false,
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
    buyers: usize,
    duration: Duration,
) -> impl std::future::Future<Output = Row> {
    drive(name, buyers, duration, move |n| {
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
    drive(name, CONCURRENCY, duration, move |n| {
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

/// The rows of one store that `filter` wants: through the service on the
/// single path and on the coalesced one, and the script alone (each on an
/// item of its own, so none sells another's stock).
async fn store_rows(
    store: StockStore,
    dir: &std::path::Path,
    label: &str,
    direct_name: &str,
    duration: Duration,
    filter: &RowFilter,
    coalesced_path: ReservationPath,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let single_name = format!("single service over {label}");
    if filter.wants(&single_name) {
        let single = service_over(
            store.clone(),
            &dir.join("single"),
            "hot",
            ReservationPath::Single,
        )
        .await;
        rows.push(service_row(single.clone(), "hot", single_name, CONCURRENCY, duration).await);
        single.broker().shutdown().await.expect("shutdown");
    }
    let coalesced_name = format!("coalesced service over {label}, {SPIKE_BUYERS} buyers");
    if filter.wants(&coalesced_name) {
        let coalesced = service_over(
            store.clone(),
            &dir.join("coalesced"),
            "hot-batched",
            coalesced_path,
        )
        .await;
        rows.push(
            service_row(
                coalesced.clone(),
                "hot-batched",
                coalesced_name,
                SPIKE_BUYERS,
                duration,
            )
            .await,
        );
        coalesced.broker().shutdown().await.expect("shutdown");
    }
    if filter.wants(direct_name) {
        store.prewarm("direct", STOCK).await.expect("prewarm");
        rows.push(script_row(store, "direct", direct_name.to_owned(), duration).await);
    }
    rows
}

fn redis_benchmark_name(pipeline: u32) -> String {
    if pipeline > 1 {
        format!(
            "redis-benchmark EVALSHA reserve.lua, {CONCURRENCY} connections, pipelined by {pipeline}"
        )
    } else {
        format!("redis-benchmark EVALSHA reserve.lua, {CONCURRENCY} connections")
    }
}

/// `redis-benchmark` running EVALSHA of reserve.lua: random users, the
/// same number of connections.
fn redis_benchmark(redis: &BenchRedis, requests: u64, pipeline: u32) -> Result<Row, String> {
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
        "-P".into(),
        pipeline.to_string(),
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
        name: redis_benchmark_name(pipeline),
        reservations: requests,
        seconds,
        per_second,
    })
}

/// Requests per second offered to seckill's HTTP endpoint: more than it
/// can answer, so the row measures what it does answer.
const HTTP_OFFERED_PER_SECOND: u64 = 150_000;

/// seckill's HTTP endpoint (`POST /api/seckill/{item}`, one new user per
/// request) on the coalesced path over `store`, driven open-loop by
/// loadtest's replay over 2,048 keep-alive connections at more than it
/// can answer. The row is the purchases it answered `queued`, per second
/// from the first send to the last answer.
async fn http_row(
    store: StockStore,
    dir: &std::path::Path,
    label: &str,
    duration: Duration,
    path: ReservationPath,
) -> Result<Row, String> {
    use loadtest::replay::{Outcome, Quiet, ReplayConfig, replay};
    use loadtest::trace::{ClientKind, TraceRecord};

    let seckill = service_over(store, dir, "http", path).await;
    // A backlog for every connection opening at once (bind's is 1,024).
    let listener = tokio::net::TcpSocket::new_v4()
        .and_then(|socket| {
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
            socket.listen(4096)
        })
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // This run's own keys: purchases carry tokens as in production, and
    // the endpoint verifies them.
    let keys = service_kit::access::Keys::random();
    let access = seckill::http::Access::from_keys(&keys, &[]).map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, seckill::http::router(seckill, access, None)).await;
    });
    let requests = (HTTP_OFFERED_PER_SECOND as f64 * duration.as_secs_f64()) as u64;
    let records: Vec<TraceRecord> = (0..requests)
        .map(|i| TraceRecord {
            at_us: i * 1_000_000 / HTTP_OFFERED_PER_SECOND,
            user: format!("h{i}"),
            item: "http".into(),
            kind: ClientKind::Buyer,
        })
        .collect();
    let config = ReplayConfig {
        target: format!("http://{addr}"),
        // HTTP/1.1 answers a connection's requests one at a time, so the
        // purchases in flight (and a batch's size) are the connections.
        connections: SPIKE_BUYERS,
        max_in_flight: SPIKE_BUYERS,
        request_timeout: Duration::from_secs(30),
        token_key: Some(keys.token.clone()),
        ..ReplayConfig::default()
    };
    let result = replay(&records, &config, Arc::new(Quiet))
        .await
        .map_err(|e| format!("replay: {e}"));
    server.abort();
    let result = result?;
    let queued = result
        .samples
        .iter()
        .filter(|s| s.outcome == Outcome::Queued)
        .count() as u64;
    if queued < result.samples.len() as u64 * 99 / 100 {
        let mut by_outcome = std::collections::BTreeMap::new();
        for sample in &result.samples {
            *by_outcome.entry(sample.outcome.name()).or_insert(0u64) += 1;
        }
        return Err(format!(
            "only {queued} of {} requests were queued: {by_outcome:?}",
            result.samples.len()
        ));
    }
    let first_send = result.samples.iter().map(|s| s.sent_us).min().unwrap_or(0);
    let last_answer = result.samples.iter().map(|s| s.done_us).max().unwrap_or(0);
    let seconds = last_answer.saturating_sub(first_send).max(1) as f64 / 1e6;
    let row = Row {
        name: http_row_name(label),
        reservations: queued,
        seconds,
        per_second: queued as f64 / seconds,
    };
    eprintln!("  {}: {:.0}/s", row.name, row.per_second);
    Ok(row)
}

fn http_row_name(label: &str) -> String {
    format!("seckill HTTP endpoint, coalesced over {label}, one new user per request")
}

/// The rate of the first row whose name passes `wanted`.
fn rate_of(rows: &[Row], wanted: impl Fn(&str) -> bool) -> Option<f64> {
    rows.iter().find(|r| wanted(&r.name)).map(|r| r.per_second)
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
    let filter = RowFilter(args.only.clone());
    let coalesced_path = args.coalesced_path();
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
            let store_for_http = store.clone();
            rows.extend(
                store_rows(
                    store,
                    &dir.path().join("redis"),
                    "Redis (half + script + commit, sync flush)",
                    "reserve.lua over Redis, client loop, same pool",
                    duration,
                    &filter,
                    coalesced_path,
                )
                .await,
            );
            if filter.wants(&http_row_name("Redis")) {
                match http_row(
                    store_for_http,
                    &dir.path().join("http"),
                    "Redis",
                    duration,
                    coalesced_path,
                )
                .await
                {
                    Ok(row) => rows.push(row),
                    Err(reason) => skipped.push(format!("seckill HTTP row: {reason}")),
                }
            }
            // Enough requests for about a row's duration at the client
            // loop's rate (or a typical one when that row did not run).
            let rate =
                rate_of(&rows, |n| n.starts_with("reserve.lua over Redis")).unwrap_or(50_000.0);
            let requests = (rate * duration.as_secs_f64()).max(10_000.0) as u64;
            for pipeline in [1, 16] {
                if !filter.wants(&redis_benchmark_name(pipeline)) {
                    continue;
                }
                match redis_benchmark(&redis, requests * u64::from(pipeline.min(4)), pipeline) {
                    Ok(row) => {
                        eprintln!("  {}: {:.0}/s", row.name, row.per_second);
                        rows.push(row);
                    }
                    Err(reason) => skipped.push(format!("redis-benchmark: {reason}")),
                }
            }
        }
        Err(reason) => skipped.push(format!("Redis rows: {reason}")),
    }

    let embedded = Arc::new(EmbeddedScripts::new().expect("embedded store"));
    let store = StockStore::new(embedded, "");
    rows.extend(
        store_rows(
            store,
            &dir.path().join("embedded"),
            "the embedded store",
            "reserve.lua in the embedded store, direct",
            duration,
            &filter,
            coalesced_path,
        )
        .await,
    );

    let find = |prefix: &str| rate_of(&rows, |n| n.starts_with(prefix));
    let mut ratios = Vec::new();
    let mut ratio = |what: &str, a: Option<f64>, b: Option<f64>| {
        if let (Some(a), Some(b)) = (a, b) {
            ratios.push(Ratio {
                what: what.into(),
                ratio: a / b,
            });
        }
    };
    let evalsha = rate_of(&rows, |n| {
        n.starts_with("redis-benchmark") && !n.contains("pipelined")
    });
    let evalsha_pipelined = rate_of(&rows, |n| {
        n.starts_with("redis-benchmark") && n.contains("pipelined")
    });
    ratio(
        "coalesced service over Redis / redis-benchmark EVALSHA (target >= 3)",
        find("coalesced service over Redis"),
        evalsha,
    );
    ratio(
        "coalesced service over Redis / EVALSHA pipelined by 16 (target >= 1)",
        find("coalesced service over Redis"),
        evalsha_pipelined,
    );
    ratio(
        "seckill HTTP endpoint / redis-benchmark EVALSHA (target >= 1.5)",
        find("seckill HTTP endpoint"),
        evalsha,
    );
    ratio(
        "coalesced / single service over Redis",
        find("coalesced service over Redis"),
        find("single service over Redis"),
    );
    ratio(
        "single service over Redis / redis-benchmark EVALSHA",
        find("single service over Redis"),
        evalsha,
    );
    ratio(
        "single service over Redis / same script, client loop",
        find("single service over Redis"),
        find("reserve.lua over Redis"),
    );
    ratio(
        "client loop / redis-benchmark EVALSHA",
        find("reserve.lua over Redis"),
        evalsha,
    );
    ratio(
        "coalesced / single service over the embedded store",
        find("coalesced service over the embedded"),
        find("single service over the embedded"),
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
