//! `broker-bench`: how fast the broker appends and serves, next to what the
//! same machine does without it, measured in one run.
//!
//! ```text
//! cargo run --release -p broker-bench -- [--quick] [--json FILE] [--only TEXT]
//! ```
//!
//! Rows: append throughput and latency (p50/p99/p999 per send, from the
//! call to its acknowledgement) for 128 B and 1 KiB messages, async flush
//! and sync group commit, at 1, 8 and 64 concurrent producers;
//! transactional sends (half message + commit, as the seckill service
//! sends orders) beside plain sync sends; the batch APIs (transaction
//! batches, batched async appends: `batches.rs`); consume throughput; and the
//! references — raw disk (fdatasync per write,
//! sequential write), Redis Streams `XADD` and NATS JetStream publish — on
//! the same disk and loopback. The machine is shared and noisy, so the
//! conclusions are the ratios printed under the table, not the absolute
//! numbers. `--quick` keeps the whole run under a minute.

/// mimalloc, as in every service binary (docs/ARCHITECTURE.md, "Crates").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod batches;
mod references;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use broker::{
    Broker, BrokerConfig, FlushMode, Message, Producer, PullRequest, QueueSelector,
    TransactionState,
};
use bytes::Bytes;
use clap::Parser;
use serde::Serialize;

use references::{
    Budget, Measurement, Outcome, Skipped, human_size, latency_histogram, measurement, nanos,
};

#[derive(Debug, Parser)]
#[command(about = "Broker append/consume benchmark with same-run references")]
struct Args {
    /// Short runs (about a second per row); the whole bench in under a minute.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the broker's store and the disk references (same disk).
    #[arg(long, env = "BROKER_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// Redis for the Streams reference.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Run only the broker rows whose names contain this text, and no
    /// references (for looking at one row; the ratios need the full run).
    #[arg(long)]
    only: Option<String>,
    /// NATS with JetStream for its reference.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

const QUEUES: u32 = 8;
const PRODUCERS: [usize; 3] = [1, 8, 64];
const SIZES: [usize; 2] = [128, 1024];

#[derive(Debug, Serialize)]
struct Ratio {
    what: String,
    numerator: String,
    denominator: String,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    cpus: usize,
    dir: PathBuf,
    broker: Vec<Measurement>,
    references: Vec<Measurement>,
    skipped: Vec<Skipped>,
    ratios: Vec<Ratio>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let work = tempfile::Builder::new()
        .prefix("broker-bench-")
        .tempdir_in(&base)?;
    let per_row = if args.quick {
        Duration::from_millis(1200)
    } else {
        Duration::from_secs(5)
    };
    let budget = Budget {
        duration: per_row,
        max_ops: 5_000_000,
    };
    eprintln!(
        "broker-bench: {} per row in {}",
        humantime(per_row),
        work.path().display()
    );

    let wanted = |name: &str| args.only.as_ref().is_none_or(|only| name.contains(only));
    let mut broker_rows = Vec::new();
    for flush in [FlushMode::async_default(), FlushMode::sync()] {
        for size in SIZES {
            for producers in PRODUCERS {
                if !wanted(&row_name(flush, size, producers)) {
                    continue;
                }
                let row = append(work.path(), flush, size, producers, &budget).await?;
                eprintln!("  {}", row.name);
                broker_rows.push(row);
            }
        }
    }
    for size in SIZES
        .into_iter()
        .filter(|&s| wanted(&transactional_row_name(s, 64)))
    {
        let row = transactional(work.path(), size, 64, &budget).await?;
        eprintln!("  {}", row.name);
        broker_rows.push(row);
    }
    if wanted(&batches::transaction_batch_row_name(128, 8)) {
        let row = batches::transaction_batches(work.path(), 128, 8, &budget).await?;
        eprintln!("  {}", row.name);
        broker_rows.push(row);
    }
    for producers in [1, 2] {
        if !wanted(&batches::batched_append_row_name(128, producers)) {
            continue;
        }
        let row = batches::batched_append(work.path(), 128, producers, &budget).await?;
        eprintln!("  {}", row.name);
        broker_rows.push(row);
    }
    if args.only.is_none() {
        broker_rows.push(consume(work.path(), 1024, &budget).await?);
    }

    let mut reference_rows = Vec::new();
    let mut skipped = Vec::new();
    if args.only.is_some() {
        print_table(&broker_rows, &reference_rows, &skipped, &[]);
        return Ok(());
    }
    let disk_budget = Budget {
        duration: per_row,
        max_ops: budget.max_ops,
    };
    let dir = work.path().to_path_buf();
    let (fsync_row, seq_row) = tokio::task::spawn_blocking(move || {
        let fsync = references::disk_fdatasync_per_write(&dir, 4096, &disk_budget);
        let seq = references::disk_sequential_write(&dir, &disk_budget);
        (fsync, seq)
    })
    .await?;
    reference_rows.push(fsync_row?);
    reference_rows.push(seq_row?);
    for size in SIZES {
        for outcome in [
            references::redis_streams_xadd(&args.redis_url, size, &budget).await,
            references::nats_jetstream_publish(&args.nats_url, size, 256, &budget).await,
        ] {
            match outcome {
                Outcome::Measured(m) => reference_rows.push(m),
                Outcome::Skipped(s) => {
                    eprintln!("  skipped {}: {}", s.name, s.reason);
                    if !skipped.iter().any(|k: &Skipped| k.name == s.name) {
                        skipped.push(s);
                    }
                }
            }
        }
    }

    let ratios = ratios(&broker_rows, &reference_rows);
    print_table(&broker_rows, &reference_rows, &skipped, &ratios);
    let report = Report {
        quick: args.quick,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir: base,
        broker: broker_rows,
        references: reference_rows,
        skipped,
        ratios,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn store_config(dir: &Path, flush: FlushMode) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.flush = flush;
    // Smaller segments than the 1 GiB default so rolls (and their fsyncs)
    // are part of what is measured.
    config.segment_size = 64 << 20;
    config
}

fn row_name(flush: FlushMode, size: usize, producers: usize) -> String {
    let mode = match flush {
        FlushMode::Sync { .. } => "sync group commit",
        FlushMode::Async { .. } => "async flush",
    };
    format!(
        "broker append {}, {mode}, {producers} producers",
        human_size(size)
    )
}

/// Closed-loop producers: each sends one message, waits for its
/// acknowledgement, and sends the next, so the latency is the send's own.
async fn append(
    dir: &Path,
    flush: FlushMode,
    size: usize,
    producers: usize,
    budget: &Budget,
) -> anyhow::Result<Measurement> {
    let (broker, _store) = open_store(dir, flush).await?;
    let syncs_before = broker.log_syncs();
    let producer = Arc::new(Producer::new(broker.clone()));
    let body = Bytes::from(vec![b'x'; size]);
    let (latencies, elapsed) = closed_loop(producers, budget, move |queue| {
        let producer = Arc::clone(&producer);
        let message = Message::new("bench", body.clone());
        async move {
            producer.send(message, QueueSelector::Queue(queue)).await?;
            Ok(())
        }
    })
    .await?;
    let syncs = broker.log_syncs() - syncs_before;
    broker.shutdown().await?;
    let count = latencies.len();
    let mut row = measurement(
        row_name(flush, size, producers),
        count,
        count * size as u64,
        elapsed,
        Some(&latencies),
    );
    if matches!(flush, FlushMode::Sync { .. }) {
        row.fdatasyncs_per_sec = Some(syncs as f64 / elapsed.as_secs_f64());
    }
    Ok(row)
}

fn transactional_row_name(size: usize, producers: usize) -> String {
    format!(
        "broker transactional send {} (half + commit), sync, {producers} producers",
        human_size(size)
    )
}

/// Closed-loop transactional producers: half message, then commit, each
/// durable before the next step — what the seckill service does per order.
async fn transactional(
    dir: &Path,
    size: usize,
    producers: usize,
    budget: &Budget,
) -> anyhow::Result<Measurement> {
    let (broker, _store) = open_store(dir, FlushMode::sync()).await?;
    let syncs_before = broker.log_syncs();
    let body = Bytes::from(vec![b'x'; size]);
    let sender = broker.clone();
    let (latencies, elapsed) = closed_loop(producers, budget, move |queue| {
        let broker = sender.clone();
        let message = Message::new("bench", body.clone());
        async move {
            let half = broker.send_half("bench", queue, message).await?;
            broker
                .end_transaction(half.half_offset, TransactionState::Commit)
                .await?;
            Ok(())
        }
    })
    .await?;
    let syncs = broker.log_syncs() - syncs_before;
    broker.shutdown().await?;
    let count = latencies.len();
    let mut row = measurement(
        transactional_row_name(size, producers),
        count,
        count * size as u64,
        elapsed,
        Some(&latencies),
    );
    row.fdatasyncs_per_sec = Some(syncs as f64 / elapsed.as_secs_f64());
    Ok(row)
}

/// A fresh store in `dir` with the bench topic (the directory lives as
/// long as the returned guard).
async fn open_store(dir: &Path, flush: FlushMode) -> anyhow::Result<(Broker, tempfile::TempDir)> {
    let store = tempfile::tempdir_in(dir)?;
    let config = store_config(store.path(), flush);
    let broker = tokio::task::spawn_blocking(move || Broker::open(config)).await??;
    broker.create_topic("bench", QUEUES)?;
    Ok((broker, store))
}

/// Runs `producers` tasks, each calling `send(queue)` in a loop until the
/// budget's time or operation count runs out. Returns the merged per-send
/// latencies and the wall time.
async fn closed_loop<F, Fut>(
    producers: usize,
    budget: &Budget,
    send: F,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, Duration)>
where
    F: Fn(u32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + budget.duration;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let send = send.clone();
        let sent = Arc::clone(&sent);
        let max_ops = budget.max_ops;
        tasks.push(tokio::spawn(async move {
            let mut latencies = latency_histogram();
            let queue = p as u32 % QUEUES;
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max_ops {
                let t = Instant::now();
                send(queue).await?;
                latencies.saturating_record(nanos(t.elapsed()));
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = latency_histogram();
    for task in tasks {
        latencies.add(task.await??)?;
    }
    Ok((latencies, started.elapsed()))
}

/// Fills a store, then pulls everything back as one consumer would: queue
/// by queue, in batches, each record read from the log and CRC-checked.
async fn consume(dir: &Path, size: usize, budget: &Budget) -> anyhow::Result<Measurement> {
    let (broker, _store) = open_store(dir, FlushMode::async_default()).await?;
    let body = Bytes::from(vec![b'x'; size]);
    let fill_deadline = Instant::now() + budget.duration;
    let mut filled = 0u64;
    while Instant::now() < fill_deadline && filled < budget.max_ops.min(2_000_000) {
        let batch = (0..256)
            .map(|_| Message::new("bench", body.clone()))
            .collect();
        broker
            .put((filled / 256 % u64::from(QUEUES)) as u32, batch)
            .await?;
        filled += 256;
    }
    let started = Instant::now();
    let mut consumed = 0u64;
    for queue_id in 0..QUEUES {
        let mut offset = 0;
        loop {
            let result = broker
                .pull(&PullRequest {
                    group: "bench".into(),
                    topic: "bench".into(),
                    queue_id,
                    offset,
                    max_messages: 512,
                    max_bytes: 4 << 20,
                    hold_ms: 0,
                    tags: None,
                    fence: None,
                })
                .await?;
            if result.messages.is_empty() {
                break;
            }
            consumed += result.messages.len() as u64;
            offset = result.next_offset;
        }
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        consumed == filled,
        "consumed {consumed} of {filled} messages"
    );
    broker.shutdown().await?;
    Ok(measurement(
        format!("broker consume {}, batches of 512", human_size(size)),
        consumed,
        consumed * size as u64,
        elapsed,
        None,
    ))
}

fn ratios(broker: &[Measurement], references: &[Measurement]) -> Vec<Ratio> {
    let find = |rows: &[Measurement], prefix: &str| {
        rows.iter().find(|m| m.name.starts_with(prefix)).cloned()
    };
    let mut out = Vec::new();
    let mut push = |what: &str, num: Option<Measurement>, den: Option<Measurement>, mib: bool| {
        if let (Some(n), Some(d)) = (num, den) {
            let (a, b) = if mib {
                (n.mib_per_sec, d.mib_per_sec)
            } else {
                (n.msgs_per_sec, d.msgs_per_sec)
            };
            if b > 0.0 {
                out.push(Ratio {
                    what: what.to_owned(),
                    numerator: n.name,
                    denominator: d.name,
                    ratio: a / b,
                });
            }
        }
    };
    let fsync = find(references, "disk: fdatasync");
    let sequential = find(references, "disk: sequential");
    for size in SIZES {
        push(
            &format!(
                "group commit beats one fsync per write ({}, 64 producers, msgs/s)",
                human_size(size)
            ),
            find(broker, &row_name(FlushMode::sync(), size, 64)),
            fsync.clone(),
            false,
        );
    }
    push(
        "group commit scaling, 64 vs 1 producer (128 B, msgs/s)",
        find(broker, &row_name(FlushMode::sync(), 128, 64)),
        find(broker, &row_name(FlushMode::sync(), 128, 1)),
        false,
    );
    for size in SIZES {
        push(
            &format!(
                "transactional send (half + commit) vs plain send ({}, sync, 64 producers, msgs/s; goal >= 0.7)",
                human_size(size)
            ),
            find(broker, &transactional_row_name(size, 64)),
            find(broker, &row_name(FlushMode::sync(), size, 64)),
            false,
        );
    }
    // Why the goal above is hard: a transactional message waits for two
    // fdatasyncs in turn (its half, then its commit), a plain one for one.
    // At the same fdatasync rate the ratio is about the ratio of messages
    // per fdatasync, which this prints.
    for size in SIZES {
        let per_sync = |m: Option<Measurement>| {
            m.and_then(|m| {
                let syncs = m.fdatasyncs_per_sec.filter(|s| *s > 0.0)?;
                Some(Measurement {
                    msgs_per_sec: m.msgs_per_sec / syncs,
                    ..m
                })
            })
        };
        push(
            &format!(
                "messages per fdatasync, transactional vs plain send ({}, sync, 64 producers)",
                human_size(size)
            ),
            per_sync(find(broker, &transactional_row_name(size, 64))),
            per_sync(find(broker, &row_name(FlushMode::sync(), size, 64))),
            false,
        );
    }
    push(
        "transaction batches vs single transactional sends (128 B, msgs/s)",
        find(broker, &batches::transaction_batch_row_name(128, 8)),
        find(broker, &transactional_row_name(128, 64)),
        false,
    );
    push(
        "sync group commit bandwidth vs sequential disk write (1 KiB, 64 producers, MiB/s; goal >= 0.5)",
        find(broker, &row_name(FlushMode::sync(), 1024, 64)),
        sequential.clone(),
        true,
    );
    push(
        "async append scaling, 64 vs 1 producer (128 B, msgs/s; goal >= 1.0)",
        find(broker, &row_name(FlushMode::async_default(), 128, 64)),
        find(broker, &row_name(FlushMode::async_default(), 128, 1)),
        false,
    );
    push(
        "batched async append vs Redis Streams XADD pipelined (128 B, 1 producer, msgs/s; goal >= 3.0)",
        find(broker, &batches::batched_append_row_name(128, 1)),
        references
            .iter()
            .find(|m| m.name.contains("XADD") && m.name.contains(&human_size(128)))
            .cloned(),
        false,
    );
    push(
        "async append bandwidth vs sequential disk write (1 KiB, 64 producers, MiB/s)",
        find(broker, &row_name(FlushMode::async_default(), 1024, 64)),
        sequential,
        true,
    );
    for size in SIZES {
        push(
            &format!(
                "broker async vs Redis Streams XADD ({}, msgs/s)",
                human_size(size)
            ),
            find(broker, &row_name(FlushMode::async_default(), size, 64)),
            references
                .iter()
                .find(|m| m.name.contains("XADD") && m.name.contains(&human_size(size)))
                .cloned(),
            false,
        );
        let nats = references
            .iter()
            .find(|m| m.name.contains("JetStream") && m.name.contains(&human_size(size)))
            .cloned();
        // JetStream acknowledges before its (periodic) fsync, like the
        // broker's async mode; the sync row shows what durability costs.
        push(
            &format!(
                "broker async vs NATS JetStream, both ack before fsync ({}, msgs/s)",
                human_size(size)
            ),
            find(broker, &row_name(FlushMode::async_default(), size, 64)),
            nats.clone(),
            false,
        );
        push(
            &format!(
                "broker sync (fsync before ack) vs NATS JetStream ({}, msgs/s)",
                human_size(size)
            ),
            find(broker, &row_name(FlushMode::sync(), size, 64)),
            nats,
            false,
        );
    }
    out
}

fn print_table(
    broker: &[Measurement],
    references: &[Measurement],
    skipped: &[Skipped],
    ratios: &[Ratio],
) {
    let fmt_us = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    println!();
    println!(
        "{:<80} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "row", "msgs/s", "MiB/s", "p50 µs", "p99 µs", "p999 µs", "fsync/s"
    );
    for (title, rows) in [
        ("broker", broker),
        ("references (same run, same disk)", references),
    ] {
        println!("-- {title}");
        for m in rows {
            println!(
                "{:<80} {:>12.0} {:>9.1} {:>9} {:>9} {:>9} {:>9}",
                m.name,
                m.msgs_per_sec,
                m.mib_per_sec,
                fmt_us(m.p50_us),
                fmt_us(m.p99_us),
                fmt_us(m.p999_us),
                fmt_us(m.fdatasyncs_per_sec)
            );
        }
    }
    for s in skipped {
        println!("skipped {}: {}", s.name, s.reason);
    }
    println!("-- ratios");
    for r in ratios {
        println!("{:>8.2}x  {}", r.ratio, r.what);
    }
}

fn humantime(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
