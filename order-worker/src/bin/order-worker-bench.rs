//! `order-worker-bench`: how fast orders go into the database, batch
//! writer against a plain single-row insert loop, in one run.
//!
//! ```text
//! cargo run --release -p order-worker --bin order-worker-bench -- [--quick] [--json FILE]
//! ```
//!
//! On a fresh PostgreSQL database (`DATABASE_URL`, default the local server
//! as user postgres; dropped afterwards), with 4 concurrent writers each:
//! - the order store's batch write (100 orders per transaction, each with
//!   its idempotent insert and stock update) — the worker's write path
//!   with no rate limit;
//! - a plain loop of single-row `INSERT … ON CONFLICT DO NOTHING`, one
//!   autocommitted statement per order — the reference;
//! - the whole worker, rate limit off: a backlog of orders in a broker in
//!   this process, drained by an [`OrderWorker`] (pull, decode, batch
//!   write, payment-timeout sends, offset commits) — the worker's maximum
//!   rate;
//! - the same batch write and worker drain into SQLite, the embedded
//!   default.
//!
//! The machine is shared and noisy: read the ratio.

/// mimalloc, as in every service binary (docs/ARCHITECTURE.md, "Crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::{Broker, BrokerConfig, ConsumerApi, Message};
use order_worker::{DEFAULT_GROUP, NewOrder, OrderStore, OrderWorker, WorkerSettings};
use seckill::{
    EmbeddedScripts, ORDER_QUEUES, ORDERS_TOPIC, OrderMessage, PAYMENT_TIMEOUT_QUEUES,
    PAYMENT_TIMEOUTS_TOPIC, StockStore,
};
use serde::Serialize;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPoolOptions};

const WRITERS: usize = 4;
const BATCH: usize = 100;
/// Stock of the bench item: more than any run can sell.
const BENCH_STOCK: i64 = i64::MAX / 2;

#[derive(Debug, clap::Parser)]
#[command(about = "Order write rate: batch writer vs single-row inserts")]
struct Args {
    /// Short rows (2 s each, a 20,000-order backlog) instead of 8 s and
    /// 100,000.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    rows: u64,
    seconds: f64,
    rows_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    writers: usize,
    batch: usize,
    rows: Vec<Row>,
    skipped: Vec<String>,
    ratios: Vec<(String, f64)>,
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// `WRITERS` tasks calling `write(batch of orders)` until `duration` ends.
async fn drive<F, Fut>(name: &str, duration: Duration, per_call: usize, write: F) -> Row
where
    F: Fn(Vec<NewOrder>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let write = write.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let first = next.fetch_add(per_call as u64, Ordering::Relaxed);
                let orders = (first..first + per_call as u64)
                    .map(|n| NewOrder {
                        order_id: format!("o{n:012}"),
                        item: "bench".into(),
                        user: format!("u{n}"),
                        created_at_ms: n as i64,
                        item_stock: BENCH_STOCK,
                    })
                    .collect();
                write(orders).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer panicked");
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows = next.load(Ordering::Relaxed);
    eprintln!("  {name}: {:.0} rows/s", rows as f64 / seconds);
    Row {
        name: name.to_owned(),
        rows,
        seconds,
        rows_per_second: rows as f64 / seconds,
    }
}

async fn batch_rows(url: &str, name: &str, duration: Duration) -> Row {
    let store = OrderStore::connect(url, WRITERS as u32)
        .await
        .expect("order store");
    store.ensure_item("bench", BENCH_STOCK).await.expect("item");
    drive(name, duration, BATCH, move |orders| {
        let store = store.clone();
        async move {
            let outcome = store.write_batch(&orders).await.expect("batch write");
            assert_eq!(outcome.inserted.len(), orders.len());
        }
    })
    .await
}

/// Drains a backlog of `orders` orders through a whole worker with no rate
/// limit into the database at `url`.
async fn worker_rows(url: &str, name: &str, orders: usize) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = BrokerConfig::new(dir.path());
    config.max_disk_usage_ratio = 1.0;
    let broker = Broker::open(config).expect("broker");
    broker
        .create_topic(ORDERS_TOPIC, ORDER_QUEUES)
        .expect("topic");
    broker
        .create_topic(PAYMENT_TIMEOUTS_TOPIC, PAYMENT_TIMEOUT_QUEUES)
        .expect("topic");
    let created_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for first in (0..orders).step_by(1_000) {
        let messages: Vec<Message> = (first..(first + 1_000).min(orders))
            .map(|n| {
                OrderMessage {
                    order_id: format!("w{n:012}"),
                    item: "bench".into(),
                    user: format!("u{n}"),
                    created_at_ms,
                    item_stock: orders as u64,
                }
                .to_message()
            })
            .collect();
        ConsumerApi::send_by_key(&broker, messages)
            .await
            .expect("enqueue");
    }
    let store = OrderStore::connect(url, 8).await.expect("order store");
    let stock = StockStore::new(Arc::new(EmbeddedScripts::new().expect("lua")), "");
    let settings = WorkerSettings {
        rate_per_second: 0,
        ..WorkerSettings::default()
    };
    let worker = OrderWorker::new(settings, store, stock);
    let started = Instant::now();
    worker.add_broker("local", Arc::new(broker.clone()));
    let deadline = started + Duration::from_secs(600);
    loop {
        let drained = broker
            .queue_stats()
            .iter()
            .filter(|q| q.topic == ORDERS_TOPIC)
            .all(|q| {
                broker.committed_offset(DEFAULT_GROUP, ORDERS_TOPIC, q.queue_id)
                    == Some(q.max_offset)
            });
        if drained {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not drained in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    worker.stop().await;
    let written = worker.stats().inserted;
    assert_eq!(written, orders as u64, "{name}: every order written once");
    broker.shutdown().await.expect("broker shutdown");
    eprintln!("  {name}: {:.0} rows/s", written as f64 / seconds);
    Row {
        name: name.to_owned(),
        rows: written,
        seconds,
        rows_per_second: written as f64 / seconds,
    }
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let duration = if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(8)
    };
    // Orders in the worker rows' backlog.
    let backlog = if args.quick { 20_000 } else { 100_000 };
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    eprintln!(
        "order-worker-bench: {WRITERS} writers, {:.0} s per row",
        duration.as_secs_f64()
    );

    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match PgConnection::connect(&admin_url).await {
        Ok(mut admin) => {
            let batch_db = unique("bench_batch");
            let plain_db = unique("bench_plain");
            let worker_db = unique("bench_worker");
            for db in [&batch_db, &plain_db, &worker_db] {
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut admin)
                    .await
                    .expect("create database");
            }
            let base = admin_url.split('?').next().unwrap_or(&admin_url);
            let url_of =
                |db: &str| format!("{}/{db}", &base[..base.rfind('/').unwrap_or(base.len())]);
            rows.push(
                batch_rows(
                    &url_of(&batch_db),
                    &format!("PostgreSQL batch write, {BATCH} per transaction"),
                    duration,
                )
                .await,
            );

            // The reference: the same table, one autocommitted insert per row.
            let plain_url = url_of(&plain_db);
            OrderStore::connect(&plain_url, 1)
                .await
                .expect("schema")
                .ensure_item("bench", BENCH_STOCK)
                .await
                .expect("item");
            let pool = PgPoolOptions::new()
                .max_connections(WRITERS as u32)
                .connect(&plain_url)
                .await
                .expect("pool");
            rows.push(
                drive("PostgreSQL single-row INSERT loop", duration, 1, move |orders| {
                    let pool = pool.clone();
                    async move {
                        for order in orders {
                            sqlx::query(
                                "INSERT INTO orders (order_id, item, user_id, status, created_at_ms, written_at_ms)
                                 VALUES ($1, $2, $3, 'created', $4, $4) ON CONFLICT DO NOTHING",
                            )
                            .bind(&order.order_id)
                            .bind(&order.item)
                            .bind(&order.user)
                            .bind(order.created_at_ms)
                            .execute(&pool)
                            .await
                            .expect("insert");
                        }
                    }
                })
                .await,
            );
            rows.push(
                worker_rows(
                    &url_of(&worker_db),
                    "PostgreSQL through the worker, rate limit off",
                    backlog,
                )
                .await,
            );
            for db in [&batch_db, &plain_db, &worker_db] {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
        Err(e) => skipped.push(format!("PostgreSQL rows: cannot connect ({e})")),
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    rows.push(
        batch_rows(
            &sqlite_url,
            &format!("SQLite batch write, {BATCH} per transaction"),
            duration,
        )
        .await,
    );

    rows.push(
        worker_rows(
            &format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("worker.db").display()
            ),
            "SQLite through the worker, rate limit off",
            backlog,
        )
        .await,
    );

    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix))
            .map(|r| r.rows_per_second)
    };
    let mut ratios = Vec::new();
    if let (Some(batch), Some(plain)) = (find("PostgreSQL batch"), find("PostgreSQL single-row")) {
        ratios.push((
            "PostgreSQL batch write / single-row insert loop".to_owned(),
            batch / plain,
        ));
    }
    if let (Some(worker), Some(plain)) = (
        find("PostgreSQL through the worker"),
        find("PostgreSQL single-row"),
    ) {
        ratios.push((
            "PostgreSQL worker drain / single-row insert loop".to_owned(),
            worker / plain,
        ));
    }
    if let (Some(worker), Some(batch)) = (
        find("PostgreSQL through the worker"),
        find("PostgreSQL batch"),
    ) {
        ratios.push((
            "PostgreSQL worker drain / bare batch write".to_owned(),
            worker / batch,
        ));
    }
    if let (Some(sqlite), Some(pg)) = (find("SQLite batch"), find("PostgreSQL batch")) {
        ratios.push((
            "SQLite batch write / PostgreSQL batch write".to_owned(),
            sqlite / pg,
        ));
    }
    println!();
    println!("{:<52} {:>12} {:>10}", "row", "rows/s", "rows");
    for row in &rows {
        println!(
            "{:<52} {:>12.0} {:>10}",
            row.name, row.rows_per_second, row.rows
        );
    }
    for reason in &skipped {
        println!("skipped {reason}");
    }
    println!("-- ratios");
    for (what, ratio) in &ratios {
        println!("{ratio:>8.2}x  {what}");
    }
    let report = Report {
        quick: args.quick,
        writers: WRITERS,
        batch: BATCH,
        rows,
        skipped,
        ratios,
    };
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("report"))
            .expect("write the JSON report");
        eprintln!("wrote {}", path.display());
    }
}
