//! Reference measurements for the broker benchmark.
//!
//! The benchmark machine is small, shared and noisy, so absolute broker numbers
//! mean little on their own: the same binary can be twice as fast one minute and
//! half as fast the next. Every reference here is therefore measured in the same
//! run as the broker, against the same disk and loopback, so the table can be
//! read as ratios ("the broker reaches 0.8x of raw fdatasync-per-write", "2x
//! Redis Streams") that stay meaningful when the machine's mood changes.
//!
//! The references are:
//! - raw disk: one `fdatasync` per small append (the ceiling for a broker that
//!   flushes every message synchronously) and sequential 1 MiB writes (the
//!   ceiling for one that batches flushes);
//! - Redis Streams `XADD`, pipelined, as an in-memory append-only log;
//! - NATS JetStream acknowledged publish, as a persistent log broker with a
//!   bounded window of unacknowledged publishes.
//!
//! Every loop stops at whichever comes first of `Budget::duration` and
//! `Budget::max_ops`. The network references return [`Outcome::Skipped`] with a
//! reason instead of failing the whole benchmark when their server is absent.
//!
//! The disk functions do blocking I/O; call them from a plain thread or
//! `tokio::task::spawn_blocking`, not directly on an async worker.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use async_nats::jetstream::context::PublishAckFuture;
use hdrhistogram::Histogram;

/// One measured row of the benchmark table.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Measurement {
    pub(crate) name: String,
    /// Operations completed (writes, or messages acknowledged by the server).
    pub(crate) messages: u64,
    /// Wall time of the measured loop, including any final flush or drain.
    pub(crate) seconds: f64,
    pub(crate) msgs_per_sec: f64,
    /// Payload bytes only; protocol and framing overhead are not counted, so
    /// the figure is comparable with the broker's payload throughput.
    pub(crate) mib_per_sec: f64,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    /// The commit log's fdatasyncs per second, for the broker's sync rows:
    /// with closed-loop producers a message waits for one fdatasync per
    /// durable step, so messages per fdatasync shows how full each round was.
    pub(crate) fdatasyncs_per_sec: Option<f64>,
}

/// A reference that could not run, with the printed reason.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Skipped {
    pub(crate) name: String,
    pub(crate) reason: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Measured(Measurement),
    Skipped(Skipped),
}

#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) duration: Duration,
    pub(crate) max_ops: u64,
}

/// Upper bound on the sequential-write file, whatever the budget says, so a
/// generous budget cannot fill the shared disk.
const SEQUENTIAL_MAX_BYTES: u64 = 1 << 30;
const SEQUENTIAL_CHUNK: usize = 1 << 20;

/// Commands per Redis round trip. With one pipeline in flight this is also the
/// number of unacknowledged messages, so it compares directly with a NATS
/// run whose `in_flight` is 64.
const REDIS_PIPELINE_DEPTH: u64 = 64;

/// How long an absent server may take to be declared absent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Per-request timeout once connected. Redis defaults to 500 ms, which a
/// descheduled process on a busy two-core machine can exceed without anything
/// being wrong; a spurious timeout would throw the whole measurement away.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const MIB: f64 = (1u64 << 20) as f64;

/// Latencies are recorded in nanoseconds so that sub-microsecond operations
/// still resolve; 60 s is far above anything a sane run produces, and
/// `saturating_record` clamps anything beyond it rather than failing.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

pub(crate) fn measurement(
    name: String,
    messages: u64,
    payload_bytes: u64,
    elapsed: Duration,
    latencies: Option<&Histogram<u64>>,
) -> Measurement {
    // Guard against a zero-length run producing infinities in the JSON output.
    let seconds = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let quantile = |q: f64| {
        latencies
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1_000.0)
    };
    Measurement {
        name,
        messages,
        seconds: elapsed.as_secs_f64(),
        msgs_per_sec: messages as f64 / seconds,
        mib_per_sec: payload_bytes as f64 / MIB / seconds,
        p50_us: quantile(0.50),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        fdatasyncs_per_sec: None,
    }
}

/// Client errors can span several lines (the Redis parser quotes the bytes it
/// choked on); the reason is printed in a table row, so it is folded to one.
fn skip(name: &str, reason: &str) -> Outcome {
    Outcome::Skipped(Skipped {
        name: name.to_owned(),
        reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// A name fragment that makes keys, subjects and stream names unique to this
/// process and moment, so concurrent or crashed runs never share state.
fn run_id() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}_{since_epoch}", std::process::id())
}

pub(crate) fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Non-zero, non-repeating-by-block content, so that no layer (filesystem,
/// block device, network) can shortcut the work by compressing or
/// deduplicating zeros.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

/// Appends `write_size` bytes and calls `fdatasync` after every append, the
/// way a broker that flushes each message before acknowledging it must.
///
/// The file grows with each append rather than being preallocated, so every
/// `fdatasync` also commits the new file size. That is the cost an appending
/// log pays unless it preallocates its segments; a broker that preallocates
/// may beat this reference, and that is worth knowing rather than hiding.
pub(crate) fn disk_fdatasync_per_write(
    dir: &Path,
    write_size: usize,
    budget: &Budget,
) -> anyhow::Result<Measurement> {
    if write_size == 0 {
        bail!("write_size must be non-zero");
    }
    let name = format!("disk: fdatasync per {} write", human_size(write_size));
    // The temporary file lives in the broker's own directory so both hit the
    // same filesystem and device; it is removed on drop even on error paths.
    let mut file = tempfile::Builder::new()
        .prefix(".bench-fdatasync-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    let buf = payload(write_size);
    let mut latencies = latency_histogram();
    let mut ops = 0u64;

    let start = Instant::now();
    while ops < budget.max_ops && start.elapsed() < budget.duration {
        let op_start = Instant::now();
        file.as_file_mut().write_all(&buf).context("appending")?;
        file.as_file().sync_data().context("fdatasync")?;
        latencies.saturating_record(nanos(op_start.elapsed()));
        ops += 1;
    }
    let elapsed = start.elapsed();

    file.close().context("removing the scratch file")?;
    Ok(measurement(
        name,
        ops,
        ops * write_size as u64,
        elapsed,
        Some(&latencies),
    ))
}

/// Writes 1 MiB chunks and a single `fdatasync` at the end, timing the whole
/// thing: the ceiling for a broker that batches many messages per flush.
///
/// Each chunk counts as one op for `budget.max_ops`, and the file never
/// exceeds 1 GiB. The closing `fdatasync` is inside the timed region because
/// otherwise the figure would measure the page cache, not the disk; it can
/// make the run last somewhat longer than `budget.duration`. No per-op
/// latency is reported: a write into the page cache says nothing useful.
pub(crate) fn disk_sequential_write(dir: &Path, budget: &Budget) -> anyhow::Result<Measurement> {
    let name = format!(
        "disk: sequential {} writes + final fdatasync",
        human_size(SEQUENTIAL_CHUNK)
    );
    let mut file = tempfile::Builder::new()
        .prefix(".bench-sequential-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    let buf = payload(SEQUENTIAL_CHUNK);
    let max_chunks = budget
        .max_ops
        .min(SEQUENTIAL_MAX_BYTES / SEQUENTIAL_CHUNK as u64);
    let mut chunks = 0u64;

    let start = Instant::now();
    while chunks < max_chunks && start.elapsed() < budget.duration {
        file.as_file_mut().write_all(&buf).context("writing")?;
        chunks += 1;
    }
    file.as_file().sync_data().context("fdatasync")?;
    let elapsed = start.elapsed();

    file.close().context("removing the scratch file")?;
    Ok(measurement(
        name,
        chunks,
        chunks * SEQUENTIAL_CHUNK as u64,
        elapsed,
        None,
    ))
}

/// Pipelined `XADD` to a Redis stream, one pipeline of
/// [`REDIS_PIPELINE_DEPTH`] commands in flight at a time on one connection.
///
/// Latency choice: every message in a pipeline is recorded with the round-trip
/// time of its whole pipeline (send of the batch to its last reply). That is
/// the time a producer batching this way waits before it knows the message is
/// stored, and it is directly comparable with the NATS ack latency and the
/// broker's per-message latency; dividing a pipeline's time by its depth would
/// instead describe the server's per-command cost, which no client observes.
///
/// The figure's durability depends on the server's configuration (with
/// `appendonly no` nothing reaches disk), so it is read and put in the name.
pub(crate) async fn redis_streams_xadd(url: &str, body_size: usize, budget: &Budget) -> Outcome {
    let base_name = format!(
        "redis: XADD pipelined x{REDIS_PIPELINE_DEPTH}, {} body",
        human_size(body_size)
    );
    let skipped = |reason: String| skip(&base_name, &reason);

    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(e) => return skipped(format!("invalid Redis URL {url}: {e}")),
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(REQUEST_TIMEOUT));
    // The connection timeout covers TCP connect and handshake; the outer one
    // also bounds the PING, so a server that accepts but never answers is
    // still declared absent within about a second.
    let connect = async {
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").exec_async(&mut con).await?;
        Ok::<_, redis::RedisError>(con)
    };
    let mut con = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(con)) => con,
        Ok(Err(e)) => return skipped(format!("Redis at {url} unreachable: {e}")),
        Err(_) => {
            return skipped(format!(
                "Redis at {url} did not answer within {CONNECT_TIMEOUT:?}"
            ));
        }
    };

    let name = match persistence(&mut con).await {
        Some(p) => format!("{base_name} ({p})"),
        None => base_name.clone(),
    };
    let key = format!("broker-bench:xadd:{}", run_id());
    let body = payload(body_size);

    // Every full round trip sends identical commands (`*` lets the server pick
    // the IDs), so the pipeline is built once and only the encoding is redone
    // per round trip, keeping client-side work out of the reference.
    let xadd_pipeline = |depth: u64| {
        let mut pipe = redis::pipe();
        for _ in 0..depth {
            pipe.cmd("XADD").arg(&key).arg("*").arg("b").arg(&body);
        }
        pipe
    };
    let full = xadd_pipeline(REDIS_PIPELINE_DEPTH);
    let mut latencies = latency_histogram();
    let mut sent = 0u64;
    let mut failure = None;

    let start = Instant::now();
    while sent < budget.max_ops && start.elapsed() < budget.duration {
        let depth = REDIS_PIPELINE_DEPTH.min(budget.max_ops - sent);
        let tail;
        let pipe = if depth == REDIS_PIPELINE_DEPTH {
            &full
        } else {
            tail = xadd_pipeline(depth);
            &tail
        };
        let round_trip = Instant::now();
        match pipe.query_async::<Vec<redis::Value>>(&mut con).await {
            Ok(replies) if replies.len() as u64 == depth => {}
            Ok(replies) => {
                failure = Some(format!(
                    "expected {depth} replies to a pipeline, got {}",
                    replies.len()
                ));
                break;
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
        latencies.saturating_record_n(nanos(round_trip.elapsed()), depth);
        sent += depth;
    }
    let elapsed = start.elapsed();

    // Clean up whatever happened, so a failed run does not leave a large
    // stream behind in a shared server. DEL rather than UNLINK: freeing
    // synchronously keeps the reclaim work out of whatever is measured next.
    if let Err(e) = redis::cmd("DEL").arg(&key).exec_async(&mut con).await {
        eprintln!("warning: could not delete Redis stream {key}: {e}");
    }
    if let Some(reason) = failure {
        return skip(
            &name,
            &format!("XADD failed after {sent} messages: {reason}"),
        );
    }
    Outcome::Measured(measurement(
        name,
        sent,
        sent * body_size as u64,
        elapsed,
        Some(&latencies),
    ))
}

/// Reads the server's persistence settings for the row name. Failure (e.g.
/// `CONFIG` renamed or forbidden) is not an error; the row is then unlabelled.
async fn persistence(con: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    let mut get = async |param: &str| {
        // A map rather than a pair list so the reply parses under RESP2 and RESP3.
        let reply: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(param)
            .query_async(con)
            .await
            .ok()?;
        reply.get(param).cloned()
    };
    let appendonly = get("appendonly").await?;
    if appendonly == "yes" {
        let appendfsync = get("appendfsync").await?;
        Some(format!("appendonly=yes, appendfsync={appendfsync}"))
    } else {
        Some(format!("appendonly={appendonly}"))
    }
}

/// Acknowledged JetStream publishes to a file-storage stream created for this
/// run, with up to `in_flight` publishes awaiting their `PubAck` at once.
///
/// Latency is from just before `publish` to the moment its `PubAck` is
/// observed. Acks are awaited in publish order; a single stream acknowledges
/// in order, so this adds no head-of-line delay of its own.
///
/// The server decides when JetStream file storage reaches the disk (by
/// default it does not `fsync` per message), so this is a
/// "persisted to the server's log" reference, not a "durable on disk" one.
pub(crate) async fn nats_jetstream_publish(
    url: &str,
    body_size: usize,
    in_flight: usize,
    budget: &Budget,
) -> Outcome {
    let in_flight = in_flight.max(1);
    let name = format!(
        "nats: JetStream publish, {in_flight} in flight, {} body (file storage)",
        human_size(body_size)
    );
    let skipped = |reason: String| skip(&name, &reason);

    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(url);
    let client = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return skipped(format!("NATS at {url} unreachable: {e}")),
        Err(_) => {
            return skipped(format!(
                "NATS at {url} did not answer within {CONNECT_TIMEOUT:?}"
            ));
        }
    };
    // The client's own ack-window semaphore is sized to our window and made to
    // wait rather than error, so it can never be the thing that limits us.
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(in_flight)
        .backpressure_on_inflight(true)
        .build(client);

    let id = run_id();
    let stream_name = format!("BROKER_BENCH_{id}");
    let subject = async_nats::Subject::from(format!("broker-bench.{id}"));
    let stream_config = async_nats::jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![subject.to_string()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    // Creating the stream doubles as the JetStream probe: a server without
    // JetStream answers "no responders" at once. `query_account` would be the
    // obvious probe, but its reply type requires fields that older servers
    // (2.9.x) do not send, so it fails to parse on a perfectly healthy server.
    match tokio::time::timeout(CONNECT_TIMEOUT, js.create_stream(stream_config)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return skipped(format!("JetStream at {url} could not create a stream: {e}"));
        }
        Err(_) => {
            // The request may still land after the timeout; try to remove it.
            let _ = js.delete_stream(&stream_name).await;
            return skipped(format!(
                "JetStream at {url} did not create a stream within {CONNECT_TIMEOUT:?}"
            ));
        }
    }

    // `publish` takes a `bytes::Bytes`, which clones by reference count. The
    // `bytes` crate is not a direct dependency, so the type is left to be
    // inferred from `publish`'s parameter; the body is converted once and
    // every publish shares it instead of copying it.
    let body = payload(body_size).into();
    let mut window: VecDeque<(Instant, PublishAckFuture)> = VecDeque::with_capacity(in_flight);
    let mut latencies = latency_histogram();
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut failure = None;

    let start = Instant::now();
    while failure.is_none() && sent < budget.max_ops && start.elapsed() < budget.duration {
        if window.len() >= in_flight {
            let Some((published_at, ack)) = window.pop_front() else {
                break;
            };
            match ack.await {
                Ok(_) => {
                    latencies.saturating_record(nanos(published_at.elapsed()));
                    acked += 1;
                }
                Err(e) => {
                    failure = Some(format!("ack failed after {acked} acks: {e}"));
                    break;
                }
            }
        }
        let published_at = Instant::now();
        match js.publish(subject.clone(), Clone::clone(&body)).await {
            Ok(ack) => {
                window.push_back((published_at, ack));
                sent += 1;
            }
            Err(e) => failure = Some(format!("publish failed after {sent} messages: {e}")),
        }
    }
    // Messages still awaiting their ack are part of the run: a publish only
    // counts once the server has acknowledged it.
    while failure.is_none()
        && let Some((published_at, ack)) = window.pop_front()
    {
        match ack.await {
            Ok(_) => {
                latencies.saturating_record(nanos(published_at.elapsed()));
                acked += 1;
            }
            Err(e) => failure = Some(format!("ack failed after {acked} acks: {e}")),
        }
    }
    let elapsed = start.elapsed();

    // After a failure some acks may still be outstanding; the client's
    // background acker owns them once dropped, so deleting now is safe.
    drop(window);
    if let Err(e) = js.delete_stream(&stream_name).await {
        eprintln!("warning: could not delete JetStream stream {stream_name}: {e}");
    }
    if let Some(reason) = failure {
        return skipped(reason);
    }
    Outcome::Measured(measurement(
        name,
        acked,
        acked * body_size as u64,
        elapsed,
        Some(&latencies),
    ))
}
