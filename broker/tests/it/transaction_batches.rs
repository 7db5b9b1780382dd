//! Batches of transactions: many halves sent with one append, many ended
//! (commits and rollbacks mixed) with one; per-entry answers for halves
//! that are not open; nothing committed twice or lost across restarts.

use broker::system_topics::property;
use broker::{Broker, BrokerConfig, BrokerError, FlushMode, Message, TransactionState};

use crate::helpers::{pull_all, small_config};

fn order(n: u32) -> Message {
    Message::new("orders", format!("order {n}")).with_key(format!("o-{n}"))
}

/// Bodies of the visible messages of `orders`, queue by queue.
async fn visible_bodies(broker: &Broker) -> Vec<Vec<String>> {
    let mut queues = Vec::new();
    for queue_id in 0..2 {
        let messages = pull_all(broker, "orders", queue_id, 0).await;
        queues.push(
            messages
                .iter()
                .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
                .collect(),
        );
    }
    queues
}

fn async_config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = small_config(dir);
    config.flush = FlushMode::async_default();
    config
}

#[tokio::test]
async fn a_batch_of_halves_ends_with_commits_and_rollbacks_mixed_in_one_batch() {
    // Sync mode: every answer waits for the fdatasync covering the batch.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(small_config(dir.path())).unwrap();
    broker.create_topic("orders", 2).unwrap();

    let halves = broker
        .send_half_batch("seckill", (0..6).map(|n| (n % 2, order(n))).collect())
        .await
        .unwrap();
    assert_eq!(halves.len(), 6);
    let offsets: Vec<u64> = halves.iter().map(|h| h.half_offset).collect();
    assert_eq!(offsets, [0, 1, 2, 3, 4, 5], "results in input order");
    assert_eq!(broker.open_transactions(), 6);
    assert_eq!(visible_bodies(&broker).await, [[""; 0]; 2]);

    let ends = vec![
        (offsets[0], TransactionState::Commit),
        (offsets[1], TransactionState::Rollback),
        (offsets[2], TransactionState::Commit),
        (999, TransactionState::Commit),
        (offsets[3], TransactionState::Commit),
        (offsets[3], TransactionState::Rollback),
        (offsets[4], TransactionState::Unknown),
        (offsets[5], TransactionState::Rollback),
    ];
    let answers = broker.end_transactions(ends).await.unwrap();
    assert_eq!(answers.len(), 8);
    let committed = |i: usize| answers[i].as_ref().unwrap().clone().unwrap();
    assert_eq!((committed(0).queue_id, committed(0).queue_offset), (0, 0));
    assert_eq!((committed(2).queue_id, committed(2).queue_offset), (0, 1));
    assert_eq!((committed(4).queue_id, committed(4).queue_offset), (1, 0));
    assert!(matches!(answers[1], Ok(None)), "rolled back");
    assert!(matches!(answers[7], Ok(None)), "rolled back");
    for (i, what) in [(3, "unknown half"), (5, "named twice"), (6, "no ending")] {
        assert!(
            matches!(answers[i], Err(BrokerError::InvalidArgument(_))),
            "{what}: {:?}",
            answers[i]
        );
    }
    assert_eq!(
        visible_bodies(&broker).await,
        [vec!["order 0", "order 2"], vec!["order 3"]]
    );
    let real = &pull_all(&broker, "orders", 1, 0).await[0].message;
    assert_eq!(real.key, "o-3");
    assert_eq!(real.properties[property::HALF_OFFSET], "3");
    assert!(!real.properties.contains_key(property::PRODUCER_GROUP));
    assert_eq!(
        broker.open_transactions(),
        1,
        "only the one without an ending"
    );

    // Ending again is a per-entry refusal; the open one still ends.
    let again = broker
        .end_transactions(vec![
            (offsets[0], TransactionState::Commit),
            (offsets[4], TransactionState::Commit),
        ])
        .await
        .unwrap();
    assert!(again[0].is_err());
    assert_eq!(again[1].as_ref().unwrap().as_ref().unwrap().queue_offset, 2);
    assert_eq!(broker.open_transactions(), 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn empty_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(async_config(dir.path())).unwrap();
    broker.create_topic("orders", 2).unwrap();
    assert!(matches!(
        broker.send_half_batch("seckill", Vec::new()).await,
        Err(BrokerError::InvalidArgument(_))
    ));
    assert!(matches!(
        broker.end_transactions(Vec::new()).await,
        Err(BrokerError::InvalidArgument(_))
    ));
    // One bad message refuses the batch before anything is written.
    let delayed = order(9).with_property(property::DELAY_LEVEL, "3");
    assert!(
        broker
            .send_half_batch("seckill", vec![(0, order(8)), (0, delayed)])
            .await
            .is_err()
    );
    assert_eq!(broker.open_transactions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_batch_commits_nothing_twice_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(async_config(dir.path())).unwrap();
    broker.create_topic("orders", 2).unwrap();
    let halves = broker
        .send_half_batch("seckill", (0..8).map(|n| (n % 2, order(n))).collect())
        .await
        .unwrap();
    let answers = broker
        .end_transactions(vec![
            (halves[0].half_offset, TransactionState::Commit),
            (halves[1].half_offset, TransactionState::Rollback),
            (halves[2].half_offset, TransactionState::Commit),
        ])
        .await
        .unwrap();
    assert!(answers.iter().all(Result::is_ok));
    let from_memory = pull_all(&broker, "orders", 0, 0).await[0].message.clone();
    drop(broker); // a crash: no clean stop

    let broker = Broker::open(async_config(dir.path())).unwrap();
    assert!(broker.recovery().crashed);
    assert_eq!(
        broker.open_transactions(),
        5,
        "the unresolved halves survive"
    );
    assert_eq!(
        visible_bodies(&broker).await,
        [vec!["order 0", "order 2"], vec![]]
    );
    // Halves found at startup are read back from the log to commit.
    let answers = broker
        .end_transactions(
            halves[3..]
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let state = if i % 2 == 0 {
                        TransactionState::Commit
                    } else {
                        TransactionState::Rollback
                    };
                    (h.half_offset, state)
                })
                .chain([(halves[0].half_offset, TransactionState::Commit)])
                .collect(),
        )
        .await
        .unwrap();
    assert!(answers[..5].iter().all(Result::is_ok));
    assert!(answers[5].is_err(), "committed before the crash");
    broker.shutdown().await.unwrap();

    let broker = Broker::open(async_config(dir.path())).unwrap();
    assert_eq!(broker.open_transactions(), 0);
    assert_eq!(
        visible_bodies(&broker).await,
        [
            vec!["order 0", "order 2"],
            vec!["order 3", "order 5", "order 7"]
        ]
    );
    // A real message from a kept half and one from the log look alike.
    let from_log = pull_all(&broker, "orders", 1, 0).await[0].message.clone();
    let keys = |m: &Message| {
        let mut keys: Vec<String> = m.properties.keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&from_memory), keys(&from_log));
    assert_ne!(from_log.born_timestamp_ms, 0);
}
