//! Appends and reads: record fields, segment roll, size limits, queue selection.

use std::collections::BTreeMap;

use broker::{Broker, BrokerError, Message, Producer, QueueSelector};
use bytes::Bytes;

use crate::helpers::{body, pull_all, small_config};

#[tokio::test]
async fn every_field_survives_a_round_trip_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("orders", 2).unwrap();
    let message = Message {
        topic: "orders".into(),
        key: "order-1".into(),
        tags: "vip".into(),
        flags: 7,
        properties: BTreeMap::from([("item".to_string(), "sku-9".to_string())]),
        body: Bytes::from_static(b"\x00\x01binary\xff"),
        born_timestamp_ms: 1_700_000_000_000,
    };
    let sent = broker
        .put(1, vec![message.clone()])
        .await
        .unwrap()
        .remove(0);
    let pulled = pull_all(&broker, "orders", 1, 0).await;
    assert_eq!(pulled.len(), 1);
    let stored = &pulled[0];
    assert_eq!(stored.message, message);
    assert_eq!((stored.queue_id, stored.queue_offset), (1, 0));
    assert_eq!(stored.commit_log_offset, sent.commit_log_offset);
    assert!(stored.store_timestamp_ms >= message.born_timestamp_ms);
    broker.shutdown().await.unwrap();

    let reopened = Broker::open(small_config(dir.path())).unwrap();
    assert!(!reopened.recovery().crashed);
    assert_eq!(pull_all(&reopened, "orders", 1, 0).await, pulled);
}

#[tokio::test]
async fn segments_roll_with_an_end_marker_and_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    let producer = Producer::new(broker.clone());
    let mut sent = Vec::new();
    for n in 0..200 {
        let message = Message::new("t", body(n));
        sent.push(
            producer
                .send(message, QueueSelector::Queue(0))
                .await
                .unwrap(),
        );
    }
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .collect();
    assert!(
        segments.len() > 3,
        "only {} segments after 200 messages",
        segments.len()
    );
    // Offsets jump to the next segment's base when a record does not fit.
    assert!(
        sent.iter()
            .any(|s| s.commit_log_offset % 4096 == 0 && s.commit_log_offset > 0)
    );
    let pulled = pull_all(&broker, "t", 0, 0).await;
    let bodies: Vec<Vec<u8>> = pulled.iter().map(|m| m.message.body.to_vec()).collect();
    assert_eq!(bodies, (0..200).map(body).collect::<Vec<_>>());
    broker.shutdown().await.unwrap();

    let reopened = Broker::open(small_config(dir.path())).unwrap();
    assert_eq!(pull_all(&reopened, "t", 0, 0).await.len(), 200);
    reopened
        .put(0, vec![Message::new("t", "after reopen")])
        .await
        .unwrap();
    assert_eq!(pull_all(&reopened, "t", 0, 200).await.len(), 1);
}

#[tokio::test]
async fn oversized_and_malformed_messages_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    let too_big = Message::new("t", vec![0u8; 2000]);
    match broker.put(0, vec![too_big]).await {
        Err(BrokerError::MessageTooLarge { size, max: 1024 }) => assert!(size > 2000),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert!(matches!(
        broker.put(0, vec![Message::new("bad/topic", "x")]).await,
        Err(BrokerError::InvalidTopic { .. })
    ));
    assert!(matches!(
        broker.put(99, vec![Message::new("t", "x")]).await,
        Err(BrokerError::QueueNotFound { queue_id: 99, .. })
    ));
    assert!(matches!(
        broker.put(0, vec![]).await,
        Err(BrokerError::InvalidArgument(_))
    ));
    let mixed = vec![Message::new("t", "a"), Message::new("u", "b")];
    assert!(matches!(
        broker.put(0, mixed).await,
        Err(BrokerError::InvalidArgument(_))
    ));
    // Nothing was appended by any of the failures.
    assert!(pull_all(&broker, "t", 0, 0).await.is_empty());
}

#[tokio::test]
async fn key_hash_keeps_a_key_on_one_queue_and_round_robin_spreads() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 4).unwrap();
    let producer = Producer::new(broker.clone());
    let mut queues_of_key = std::collections::BTreeSet::new();
    for n in 0..10 {
        let message = Message::new("t", body(n)).with_key("user-7");
        queues_of_key.insert(
            producer
                .send(message, QueueSelector::KeyHash)
                .await
                .unwrap()
                .queue_id,
        );
    }
    assert_eq!(queues_of_key.len(), 1);
    let mut spread = [0u32; 4];
    for n in 0..8 {
        let sent = producer
            .send(Message::new("t", body(n)), QueueSelector::RoundRobin)
            .await
            .unwrap();
        spread[sent.queue_id as usize] += 1;
    }
    assert_eq!(spread, [2, 2, 2, 2]);
}

#[tokio::test]
async fn async_oneway_and_batch_sends_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("t", 1).unwrap();
    let producer = Producer::new(broker.clone());
    let handles: Vec<_> = (0..20)
        .map(|n| producer.send_async(Message::new("t", body(n)), QueueSelector::Queue(0)))
        .collect();
    for handle in handles {
        handle.await.unwrap().unwrap();
    }
    producer
        .send_oneway(Message::new("t", "oneway"), QueueSelector::Queue(0))
        .unwrap();
    let batch: Vec<Message> = (0..30).map(|n| Message::new("t", body(n))).collect();
    let results = producer
        .send_batch(batch, QueueSelector::Queue(0))
        .await
        .unwrap();
    let offsets: Vec<u64> = results.iter().map(|r| r.queue_offset).collect();
    assert_eq!(offsets, (21..51).collect::<Vec<_>>());
    // The one-way message became visible with the batch's flush.
    assert_eq!(pull_all(&broker, "t", 0, 0).await.len(), 51);
}

#[tokio::test]
async fn a_second_broker_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _broker = Broker::open(small_config(dir.path())).unwrap();
    assert!(matches!(
        Broker::open(small_config(dir.path())),
        Err(BrokerError::StoreLocked(_))
    ));
}

/// Group commit: 64 writers sending at once in sync mode are all
/// acknowledged durable with far fewer fdatasyncs than writes — each sync
/// covers every write waiting when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_writes_share_their_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = broker::BrokerConfig::new(dir.path());
    config.flush = broker::FlushMode::sync();
    config.max_disk_usage_ratio = 1.0;
    let broker = broker::Broker::open(config).unwrap();
    broker.create_topic("orders", 4).unwrap();
    let before = broker.log_syncs();
    let writers: Vec<_> = (0..64)
        .map(|n| {
            let broker = broker.clone();
            tokio::spawn(async move {
                broker
                    .put(
                        n % 4,
                        vec![broker::Message::new("orders", format!("order {n}"))],
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let syncs = broker.log_syncs() - before;
    assert!(syncs >= 1, "acknowledged without a sync");
    assert!(syncs < 64, "{syncs} syncs for 64 writes: no grouping");
    let visible: u64 = broker
        .queue_stats()
        .iter()
        .filter(|q| q.topic == "orders")
        .map(|q| q.max_offset)
        .sum();
    assert_eq!(visible, 64);
}
