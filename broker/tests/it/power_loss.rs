//! Power loss, not just a crash: a dropped broker leaves every written
//! byte in the page cache, so a "crash" by `drop` never loses anything
//! unsynced. Here the disk is put back as it was at the instant of the
//! power loss: the commit log cut to what was synced then (its flushed
//! offset), and the checkpoint as it was then (one written by a later
//! flush never happened). The consume queues keep whatever they had —
//! entries past the log's new end included, which recovery must drop.
//!
//! Sync mode: nothing acknowledged is lost. Async mode: what was written
//! before the last flush survives; only what came after it can be lost.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, FlushMode, Message};
use parking_lot::Mutex;

use crate::helpers::{pull_all, small_config};

const QUEUES: u32 = 4;

fn config(dir: &Path, flush: FlushMode) -> BrokerConfig {
    let mut config = small_config(dir);
    config.segment_size = 16 * 1024;
    config.flush = flush;
    config
}

/// The disk at the instant of a power loss: what the broker had synced,
/// and its checkpoint file as it was.
struct PowerLoss {
    synced: u64,
    checkpoint: Vec<u8>,
}

impl PowerLoss {
    /// Notes the instant: the checkpoint first, then the flushed offset
    /// (a checkpoint never claims more than was flushed before it).
    fn now(broker: &Broker, dir: &Path) -> Self {
        let checkpoint = std::fs::read(dir.join("checkpoint")).unwrap();
        PowerLoss {
            synced: broker.flushed_offset(),
            checkpoint,
        }
    }

    /// Puts `dir` back as it was at that instant (the broker dropped).
    fn apply(&self, dir: &Path) {
        lose_unsynced(dir, self.synced);
        std::fs::write(dir.join("checkpoint"), &self.checkpoint).unwrap();
    }
}

/// Cuts the commit log in `dir` back to `synced` bytes: later segments
/// go, the one holding `synced` is truncated there.
fn lose_unsynced(dir: &Path, synced: u64) {
    let log = dir.join("commitlog");
    for entry in std::fs::read_dir(&log).unwrap() {
        let path = entry.unwrap().path();
        let base: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        if base >= synced && base > 0 {
            std::fs::remove_file(&path).unwrap();
        } else if base + len > synced {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(synced - base).unwrap();
        }
    }
}

/// Every key in the broker's queues, checking none is there twice.
async fn keys_in(broker: &Broker) -> HashSet<String> {
    let mut keys = HashSet::new();
    for queue in 0..QUEUES {
        for message in pull_all(broker, "t", queue, 0).await {
            let key = message.message.key.clone();
            assert!(!key.is_empty(), "every message has a key");
            assert!(keys.insert(key.clone()), "{key} is there twice");
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_loses_nothing_acknowledged_in_sync_mode() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path(), FlushMode::sync())).unwrap();
    broker.create_topic("t", QUEUES).unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    // Set at the instant of the power loss: an answer that comes later
    // never reaches its client, so it acknowledges nothing.
    let power_lost = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let (broker, acknowledged) = (broker.clone(), Arc::clone(&acknowledged));
            let power_lost = Arc::clone(&power_lost);
            tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("p{p}-{n}");
                    let message = Message::new("t", vec![b'x'; 100]).with_key(key.clone());
                    if broker.put(p % QUEUES, vec![message]).await.is_err()
                        || power_lost.load(Ordering::SeqCst)
                    {
                        return;
                    }
                    acknowledged.lock().push(key);
                }
            })
        })
        .collect();
    // Let the producers get well into the log (several segments), then
    // cut the power mid-flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().len() < 2_000 {
        assert!(Instant::now() < deadline, "the producers never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every acknowledgement counted came after an fdatasync that covered
    // it and before the flag, so the flushed offset read after the flag is
    // past all of them.
    power_lost.store(true, Ordering::SeqCst);
    let loss = PowerLoss::now(&broker, dir.path());
    let written = broker.written_offset();
    for producer in producers {
        producer.abort();
        let _ = producer.await;
    }
    let acknowledged: Vec<String> = acknowledged.lock().clone();
    drop(broker);
    loss.apply(dir.path());
    eprintln!(
        "{} acknowledged; {written} bytes written, {} synced at the loss",
        acknowledged.len(),
        loss.synced
    );

    let broker = Broker::open(config(dir.path(), FlushMode::sync())).unwrap();
    assert!(broker.recovery().crashed);
    let kept = keys_in(&broker).await;
    let lost: Vec<&String> = acknowledged.iter().filter(|k| !kept.contains(*k)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_in_async_mode_loses_only_what_the_last_flush_had_not_covered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path(), FlushMode::async_default())).unwrap();
    broker.create_topic("t", QUEUES).unwrap();
    let send = |name: &'static str| {
        let broker = broker.clone();
        async move {
            let mut end = 0;
            let mut keys = Vec::new();
            for n in 0..200u32 {
                let key = format!("{name}-{n}");
                let message = Message::new("t", vec![b'y'; 100]).with_key(key.clone());
                let sent = broker.put(n % QUEUES, vec![message]).await.unwrap();
                end = end.max(sent[0].commit_log_offset);
                keys.push(key);
            }
            (keys, end)
        }
    };
    // A first batch, acknowledged at once (async), then flushed by the
    // interval flusher on its own.
    let (before_flush, last_offset) = send("before").await;
    let started = Instant::now();
    while broker.flushed_offset() <= last_offset {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the interval flusher never flushed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "flushed by the interval flusher after {:?}",
        started.elapsed()
    );
    // A second batch, and the power goes before the next flush can cover
    // all of it.
    let (after_flush, _) = send("after").await;
    let loss = PowerLoss::now(&broker, dir.path());
    drop(broker);
    loss.apply(dir.path());

    let broker = Broker::open(config(dir.path(), FlushMode::async_default())).unwrap();
    let kept = keys_in(&broker).await;
    for key in &before_flush {
        assert!(
            kept.contains(key),
            "{key}, flushed before the loss, is gone"
        );
    }
    // Of the second batch, what survives is what the flusher had covered:
    // per queue, a prefix in send order (nothing after a hole).
    for queue in 0..QUEUES {
        let sent: Vec<&String> = after_flush
            .iter()
            .enumerate()
            .filter(|(n, _)| *n as u32 % QUEUES == queue)
            .map(|(_, key)| key)
            .collect();
        let survived = sent.iter().take_while(|key| kept.contains(**key)).count();
        assert!(
            sent[survived..].iter().all(|key| !kept.contains(*key)),
            "queue {queue}: a message survived after a lost one"
        );
    }
    let lost = after_flush.iter().filter(|k| !kept.contains(*k)).count();
    eprintln!(
        "of the {} sent after the flush, {lost} lost",
        after_flush.len()
    );
}
