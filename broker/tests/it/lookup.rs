//! Key lookup and time lookup across segment rolls and restarts, and
//! resetting a group's offsets (message backtrack).

use std::time::Duration;

use broker::{Broker, BrokerConfig, FlushMode, Message, OffsetReset, StoredMessage};

use crate::helpers::{body, pull_all};

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = crate::helpers::small_config(dir);
    config.flush = FlushMode::async_default();
    config
}

/// 300 messages on 2 queues, ten per simulated second, keys repeating
/// every 50 messages; small segments make this span several files.
async fn fill(broker: &Broker) {
    broker.create_topic("orders", 2).unwrap();
    broker.create_topic("other", 1).unwrap();
    for n in 0..300usize {
        let message = Message::new("orders", body(n)).with_key(format!("order-{}", n % 50));
        broker.put((n % 2) as u32, vec![message]).await.unwrap();
        if n % 10 == 9 {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }
    broker
        .put(
            0,
            vec![Message::new("other", "same key elsewhere").with_key("order-7")],
        )
        .await
        .unwrap();
}

async fn check_lookups(broker: &Broker, queue0: &[StoredMessage]) {
    let found = broker
        .messages_by_key("order-7", Some("orders"), 100)
        .unwrap();
    let bodies: Vec<Vec<u8>> = found.iter().map(|m| m.message.body.to_vec()).collect();
    let want: Vec<Vec<u8>> = (0..300).filter(|n| n % 50 == 7).map(body).collect();
    assert_eq!(bodies, want);
    assert_eq!(
        broker.messages_by_key("order-7", None, 100).unwrap().len(),
        7
    );
    assert_eq!(broker.messages_by_key("order-7", None, 3).unwrap().len(), 3);
    assert!(
        broker
            .messages_by_key("order-999", None, 100)
            .unwrap()
            .is_empty()
    );

    for probe in [0, 1, 17, 70, 149] {
        let at = queue0[probe].store_timestamp_ms;
        let expected = queue0
            .iter()
            .position(|m| m.store_timestamp_ms >= at)
            .unwrap() as u64;
        assert_eq!(
            broker.offset_for_timestamp("orders", 0, at).unwrap(),
            expected
        );
        assert_eq!(
            broker.offset_for_timestamp("orders", 0, at - 1).unwrap(),
            expected
        );
    }
    assert_eq!(
        broker.offset_for_timestamp("orders", 0, i64::MIN).unwrap(),
        0
    );
    assert_eq!(
        broker.offset_for_timestamp("orders", 0, i64::MAX).unwrap(),
        150
    );
}

#[tokio::test(start_paused = true)]
async fn key_and_time_lookups_hold_across_rolls_restarts_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    fill(&broker).await;
    let segments = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .count();
    assert!(segments >= 5, "only {segments} segments");
    let queue0 = pull_all(&broker, "orders", 0, 0).await;
    assert_eq!(queue0.len(), 150);
    assert!(
        queue0
            .windows(2)
            .all(|w| w[0].store_timestamp_ms <= w[1].store_timestamp_ms)
    );
    check_lookups(&broker, &queue0).await;

    broker.shutdown().await.unwrap();
    drop(broker);
    let broker = Broker::open(config(dir.path())).unwrap();
    check_lookups(&broker, &queue0).await;

    drop(broker); // crash
    let broker = Broker::open(config(dir.path())).unwrap();
    check_lookups(&broker, &queue0).await;
    broker.shutdown().await.unwrap();
    drop(broker);

    std::fs::remove_file(dir.path().join("index/keys")).unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    assert!(
        broker.recovery().redispatched >= 301,
        "the index is rebuilt from the log"
    );
    check_lookups(&broker, &queue0).await;
}

#[tokio::test(start_paused = true)]
async fn a_group_can_be_reset_to_a_time_the_start_or_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    fill(&broker).await;
    let queue1 = pull_all(&broker, "orders", 1, 0).await;
    let at = queue1[100].store_timestamp_ms;
    let moved = broker
        .reset_offsets("g", "orders", OffsetReset::Timestamp(at))
        .unwrap();
    assert_eq!(moved.len(), 2);
    assert_eq!(broker.committed_offset("g", "orders", 1), Some(100));
    assert_eq!(
        broker.committed_offset("g", "orders", 0),
        Some(broker.offset_for_timestamp("orders", 0, at).unwrap())
    );
    broker
        .reset_offsets("g", "orders", OffsetReset::Latest)
        .unwrap();
    assert_eq!(broker.committed_offset("g", "orders", 0), Some(150));
    broker
        .reset_offsets("g", "orders", OffsetReset::Earliest)
        .unwrap();
    assert_eq!(broker.committed_offset("g", "orders", 1), Some(0));
    assert!(
        broker
            .reset_offsets("g", "missing", OffsetReset::Earliest)
            .is_err()
    );
}
