//! Crash recovery: a torn tail is cut back to the last whole record with
//! nothing acknowledged lost; damage before the tail refuses to open.
//!
//! A crash is simulated the way it looks on disk: the store is copied while
//! no clean shutdown has happened (the abort marker is still there), and
//! the last record is then damaged in the copy. The checkpoint is the one
//! from before the last record was written, as it would be if the crash
//! hit while that record was still in flight.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use broker::{Broker, BrokerError, Message};

use crate::helpers::{body, copy_dir, pull_all, small_config};

const ACKED: usize = 5;

/// A crashed store: `ACKED` acknowledged messages, then one more record
/// written but not covered by the checkpoint. Returns the store, the last
/// segment file, and where the in-flight record starts and ends in it.
async fn crashed_store_with_record_in_flight() -> (tempfile::TempDir, PathBuf, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    for n in 0..ACKED {
        broker
            .put(0, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    let checkpoint_before = std::fs::read(dir.path().join("checkpoint")).unwrap();
    let last = broker
        .put(0, vec![Message::new("t", "in flight")])
        .await
        .unwrap()
        .remove(0);
    let end = broker.written_offset();
    drop(broker); // no shutdown: a crash
    std::fs::write(dir.path().join("checkpoint"), checkpoint_before).unwrap();
    assert!(dir.path().join("abort").exists());
    let segment = dir.path().join("commitlog/00000000000000000000");
    (dir, segment, last.commit_log_offset, end)
}

async fn assert_recovered_to_acked(store: &Path, cut_bytes: u64) {
    let broker = Broker::open(small_config(store)).unwrap_or_else(|e| panic!("open failed: {e}"));
    let recovery = broker.recovery().clone();
    assert!(recovery.crashed);
    assert_eq!(recovery.truncated_bytes, cut_bytes);
    let bodies: Vec<Vec<u8>> = pull_all(&broker, "t", 0, 0)
        .await
        .into_iter()
        .map(|m| m.message.body.to_vec())
        .collect();
    assert_eq!(bodies, (0..ACKED).map(body).collect::<Vec<_>>());
    // The queue continues where the whole records end.
    let next = broker
        .put(0, vec![Message::new("t", "after recovery")])
        .await
        .unwrap();
    assert_eq!(next[0].queue_offset, ACKED as u64);
    assert_eq!(pull_all(&broker, "t", 0, ACKED as u64).await.len(), 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_last_record_cut_at_every_byte_recovers_to_the_last_whole_record() {
    let (store, segment, start, end) = crashed_store_with_record_in_flight().await;
    for cut in start..end {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(store.path(), copy.path());
        let file = OpenOptions::new()
            .write(true)
            .open(
                copy.path()
                    .join(segment.strip_prefix(store.path()).unwrap()),
            )
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        assert_recovered_to_acked(copy.path(), cut - start).await;
    }
}

#[tokio::test]
async fn a_flipped_byte_anywhere_in_the_last_record_is_cut_off() {
    let (store, segment, start, end) = crashed_store_with_record_in_flight().await;
    for at in start..end {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(store.path(), copy.path());
        let path = copy
            .path()
            .join(segment.strip_prefix(store.path()).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        assert_recovered_to_acked(copy.path(), end - start).await;
    }
}

#[tokio::test]
async fn garbage_appended_after_a_crash_is_cut_off() {
    let (store, segment, start, end) = crashed_store_with_record_in_flight().await;
    // The file size reached the disk before the data: the tail reads as zeros.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.truncate(start as usize);
    bytes.extend(std::iter::repeat_n(0u8, (end - start) as usize + 100));
    std::fs::write(&segment, bytes).unwrap();
    assert_recovered_to_acked(store.path(), end - start + 100).await;
}

#[tokio::test]
async fn damage_before_the_tail_refuses_to_open_and_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    let mut sent = Vec::new();
    for n in 0..10 {
        sent.push(
            broker
                .put(0, vec![Message::new("t", body(n))])
                .await
                .unwrap()
                .remove(0),
        );
    }
    drop(broker);
    let segment = dir.path().join("commitlog/00000000000000000000");
    let damaged = sent[3].commit_log_offset + 30;
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[damaged as usize] ^= 0xFF;
    std::fs::write(&segment, bytes).unwrap();
    match Broker::open(small_config(dir.path())) {
        Err(BrokerError::Corruption {
            file,
            file_offset,
            log_offset,
            ..
        }) => {
            assert_eq!(file, segment);
            assert_eq!(file_offset, sent[3].commit_log_offset);
            assert_eq!(log_offset, sent[3].commit_log_offset);
            let text = BrokerError::Corruption {
                file: file.clone(),
                file_offset,
                log_offset,
                reason: broker::record::DecodeError::BadLayout,
            }
            .to_string();
            assert!(text.contains("00000000000000000000"), "{text}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn a_clean_stop_leaves_nothing_to_recover_and_damage_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    for n in 0..10 {
        broker
            .put(0, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    broker.shutdown().await.unwrap();
    drop(broker);
    assert!(!dir.path().join("abort").exists());
    {
        let broker = Broker::open(small_config(dir.path())).unwrap();
        let recovery = broker.recovery();
        assert!(!recovery.crashed);
        assert_eq!((recovery.truncated_bytes, recovery.redispatched), (0, 0));
        broker.shutdown().await.unwrap();
    }
    // After a clean stop even the last record was acknowledged: damage to
    // it is corruption, not a torn write.
    let segment = dir.path().join("commitlog/00000000000000000000");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 1;
    std::fs::write(&segment, bytes).unwrap();
    assert!(matches!(
        Broker::open(small_config(dir.path())),
        Err(BrokerError::Corruption { .. })
    ));
}

#[tokio::test]
async fn consume_queues_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("a", 2).unwrap();
    broker.create_topic("b", 1).unwrap();
    for n in 0..120 {
        let topic = if n % 3 == 0 { "b" } else { "a" };
        let queue = if topic == "a" { (n % 2) as u32 } else { 0 };
        broker
            .put(queue, vec![Message::new(topic, body(n))])
            .await
            .unwrap();
    }
    let before = (
        pull_all(&broker, "a", 0, 0).await,
        pull_all(&broker, "a", 1, 0).await,
        pull_all(&broker, "b", 0, 0).await,
    );
    broker.shutdown().await.unwrap();
    drop(broker);
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();

    let broker = Broker::open(small_config(dir.path())).unwrap();
    assert_eq!(broker.recovery().redispatched, 120);
    let after = (
        pull_all(&broker, "a", 0, 0).await,
        pull_all(&broker, "a", 1, 0).await,
        pull_all(&broker, "b", 0, 0).await,
    );
    assert_eq!(after, before);
}

#[tokio::test]
async fn consume_queue_entries_lost_in_a_crash_are_redispatched() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    for n in 0..40 {
        broker
            .put(0, vec![Message::new("t", body(n))])
            .await
            .unwrap();
    }
    drop(broker);
    // The consume queue lost its tail (never fsynced), the log did not;
    // the checkpoint says the queues were flushed only up to the start.
    let queue_dir = dir.path().join("consumequeue/t/0");
    let mut files: Vec<_> = std::fs::read_dir(&queue_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in &files[1..] {
        std::fs::remove_file(file).unwrap();
    }
    OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(5 * 20)
        .unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    bytes[8..16].copy_from_slice(&0u64.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&checkpoint, bytes).unwrap();

    let broker = Broker::open(small_config(dir.path())).unwrap();
    assert!(broker.recovery().crashed);
    let bodies: Vec<Vec<u8>> = pull_all(&broker, "t", 0, 0)
        .await
        .into_iter()
        .map(|m| m.message.body.to_vec())
        .collect();
    assert_eq!(bodies, (0..40).map(body).collect::<Vec<_>>());
}
