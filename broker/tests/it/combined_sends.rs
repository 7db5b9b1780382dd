//! Concurrent producers' sends combined into shared writes
//! (`store/combining.rs`): each send still gets exactly its own results,
//! every message lands once at the offset it was told, and a bad send
//! fails alone.

use std::collections::BTreeSet;

use broker::{Broker, BrokerConfig, BrokerError, FlushMode, Message};
use bytes::Bytes;

use crate::helpers::pull_all;

const PRODUCERS: usize = 64;
const SENDS: usize = 50;
const QUEUES: u32 = 4;

fn open(dir: &std::path::Path, flush: FlushMode) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.flush = flush;
    config.max_message_size = 1024;
    config.max_disk_usage_ratio = 1.0;
    let broker = Broker::open(config).unwrap();
    broker.create_topic("t", QUEUES).unwrap();
    broker
}

/// 64 producers on a multi-threaded runtime, some sending batches of two:
/// what each was told is where its message is, and nothing is doubled.
async fn every_send_gets_its_own_results(flush: FlushMode) {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), flush);
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let mut told = Vec::new();
                for s in 0..SENDS {
                    let queue = (p as u32 + s as u32) % QUEUES;
                    let count = 1 + (p + s) % 2;
                    let messages: Vec<Message> = (0..count)
                        .map(|i| Message::new("t", Bytes::from(format!("{p}/{s}/{i}"))))
                        .collect();
                    let results = broker.put(queue, messages).await.unwrap();
                    assert_eq!(results.len(), count);
                    for (i, r) in results.into_iter().enumerate() {
                        assert_eq!(r.queue_id, queue);
                        told.push((queue, r.queue_offset, format!("{p}/{s}/{i}")));
                    }
                }
                told
            })
        })
        .collect();
    let mut told = Vec::new();
    for task in tasks {
        told.extend(task.await.unwrap());
    }
    let mut seen = BTreeSet::new();
    for queue in 0..QUEUES {
        let stored = pull_all(&broker, "t", queue, 0).await;
        for (n, message) in stored.iter().enumerate() {
            assert_eq!(message.queue_offset, n as u64, "queue {queue} has a gap");
            seen.insert((
                queue,
                message.queue_offset,
                String::from_utf8(message.message.body.to_vec()).unwrap(),
            ));
        }
    }
    let told: BTreeSet<_> = told.into_iter().collect();
    assert_eq!(told.len(), PRODUCERS * SENDS * 3 / 2);
    assert_eq!(seen, told, "stored messages differ from the answers");
    assert!(
        broker.combined_sends() > 0,
        "no send was ever combined with another: the test did not test combining"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_async_sends_each_get_their_own_results() {
    every_send_gets_its_own_results(FlushMode::async_default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_sync_sends_each_get_their_own_results() {
    every_send_gets_its_own_results(FlushMode::sync()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_send_among_concurrent_ones_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), FlushMode::async_default());
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for s in 0..SENDS {
                    let body = if (p + s) % 7 == 0 {
                        Bytes::from(vec![b'x'; 4096])
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    let queue = if (p + s) % 11 == 0 { 99 } else { 0 };
                    let sent = broker
                        .put(queue, vec![Message::new("t", body.clone())])
                        .await;
                    outcomes.push((body.len(), queue, sent));
                }
                outcomes
            })
        })
        .collect();
    let mut good = 0;
    for task in tasks {
        for (len, queue, sent) in task.await.unwrap() {
            match sent {
                Ok(results) => {
                    assert!(len == 2 && queue == 0, "a bad send was accepted");
                    assert_eq!(results.len(), 1);
                    good += 1;
                }
                Err(BrokerError::MessageTooLarge { .. }) => assert_eq!(len, 4096),
                Err(BrokerError::QueueNotFound { .. }) => assert_eq!(queue, 99),
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    }
    assert_eq!(pull_all(&broker, "t", 0, 0).await.len(), good);
    broker.shutdown().await.unwrap();
}
