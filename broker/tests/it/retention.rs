//! Retention under a paused clock: old segments go with their consume-queue
//! files; the segment being written, and anything a pending delay still
//! needs, stay.

use std::time::Duration;

use broker::system_topics::property;
use broker::{Broker, BrokerConfig, FlushMode, Message, PullRequest, PullStatus};

use crate::helpers::{body, pull_all};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = crate::helpers::small_config(dir);
    config.flush = FlushMode::async_default();
    config
}

fn min_offset(broker: &Broker) -> u64 {
    broker
        .queue_stats()
        .into_iter()
        .find(|q| q.topic == "t" && q.queue_id == 0)
        .map_or(0, |q| q.min_offset)
}

fn segment_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("commitlog")).unwrap().count()
}

async fn put_many(broker: &Broker, from: usize, count: usize) {
    for n in from..from + count {
        let message = Message::new("t", body(n)).with_key(format!("k{n}"));
        broker.put(0, vec![message]).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn old_segments_are_deleted_and_new_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    put_many(&broker, 0, 200).await;
    let old_segments = segment_count(dir.path());
    assert!(old_segments >= 4);

    // Nothing is old yet.
    assert_eq!(broker.apply_retention().unwrap().segments_deleted, 0);
    tokio::time::advance(Duration::from_secs(73 * 3600)).await;
    // Old, but the last segment is being written: it stays.
    let report = broker.apply_retention().unwrap();
    assert_eq!(report.segments_deleted as usize, old_segments - 1);
    assert_eq!(segment_count(dir.path()), 1);

    put_many(&broker, 200, 100).await;
    // The last old segment also holds new messages now: it stays.
    assert_eq!(broker.apply_retention().unwrap().segments_deleted, 0);
    let kept = pull_all(&broker, "t", 0, min_offset(&broker)).await;
    // Everything new is still there; old messages are gone.
    let bodies: Vec<Vec<u8>> = kept.iter().map(|m| m.message.body.to_vec()).collect();
    assert!(bodies.ends_with(&(200..300).map(body).collect::<Vec<_>>()));
    assert!(!bodies.contains(&body(0)));
    assert!(broker.messages_by_key("k0", None, 10).unwrap().is_empty());
    assert_eq!(broker.messages_by_key("k250", None, 10).unwrap().len(), 1);

    // A consumer at an expired offset is told where to resume.
    let result = broker
        .pull(&PullRequest {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 0,
            offset: 0,
            max_messages: 10,
            max_bytes: 1 << 20,
            hold_ms: 0,
            tags: None,
            fence: None,
        })
        .await
        .unwrap();
    assert!(
        result.status == PullStatus::OffsetTooSmall
            || result.messages.iter().all(|m| m.queue_offset >= 200),
        "{:?}",
        result.status
    );

    // And it all survives a restart.
    broker.shutdown().await.unwrap();
    drop(broker);
    let broker = Broker::open(config(dir.path())).unwrap();
    assert_eq!(broker.messages_by_key("k250", None, 10).unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_delay_keeps_its_segment_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    let four_days = 4 * 24 * 3600 * 1000;
    let due = broker.now_ms() + four_days;
    let delayed =
        Message::new("t", "in four days").with_property(property::DELIVER_AT_MS, due.to_string());
    broker.put(0, vec![delayed]).await.unwrap();
    put_many(&broker, 0, 200).await;
    tokio::time::advance(Duration::from_secs(73 * 3600)).await;
    put_many(&broker, 200, 50).await;
    assert_eq!(
        broker.apply_retention().unwrap().segments_deleted,
        0,
        "the delay is still pending"
    );
    // Let it come due and be delivered; then the old segments can go.
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    assert_eq!(broker.delayed_pending(), 0);
    // Retention also runs by itself every minute: by now it has removed
    // the old segments, or this pass does.
    broker.apply_retention().unwrap();
    assert!(min_offset(&broker) > 0, "old segments were kept");
    assert!(segment_count(dir.path()) < 4);
    let all = pull_all(&broker, "t", 0, min_offset(&broker)).await;
    assert!(all.iter().any(|m| &m.message.body[..] == b"in four days"));
}

#[tokio::test]
async fn writes_are_refused_above_the_disk_usage_limit_and_reads_still_work() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = Broker::open(config(dir.path())).unwrap();
        broker.create_topic("t", 1).unwrap();
        put_many(&broker, 0, 3).await;
        broker.shutdown().await.unwrap();
    }
    let mut full = config(dir.path());
    // Any disk in use is over this limit.
    full.max_disk_usage_ratio = 1e-9;
    let broker = Broker::open(full).unwrap();
    match broker.put(0, vec![Message::new("t", "no room")]).await {
        Err(broker::BrokerError::DiskFull {
            used_percent,
            limit_percent,
        }) => {
            assert!(used_percent > limit_percent);
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert_eq!(
        pull_all(&broker, "t", 0, 0).await.len(),
        3,
        "reads still work"
    );
    let mut bad = config(dir.path());
    bad.max_disk_usage_ratio = 1.5;
    assert!(bad.validate().is_err());
}
