//! Issue 11 at the worker: when another member takes a queue, the worker
//! stops consuming it at its first refused commit, without waiting for its
//! next heartbeat, and the group's committed offsets never go backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::{Broker, ConsumeMode, JoinRequest};
use order_worker::{DEFAULT_GROUP, OrderWorker};
use seckill::{ORDERS_TOPIC, PAYMENT_TIMEOUTS_TOPIC};

use crate::rig::{Db, Rig, order};

const MINUTE: Duration = Duration::from_secs(60);

/// A commit by member `b`, which consumes under `generation`.
fn commit_as_b(broker: &Broker, generation: u64, queue_id: u32, offset: u64) {
    broker
        .commit_offset_fenced(
            DEFAULT_GROUP,
            "b",
            generation,
            ORDERS_TOPIC,
            queue_id,
            offset,
        )
        .unwrap();
}

async fn offsets_never_go_backwards_when_a_member_takes_queues(db: Db) {
    const ORDERS: usize = 3_000;
    let Some(rig) = Rig::new(db, 16).await else {
        return;
    };
    rig.enqueue(
        &(0..ORDERS)
            .map(|n| order(n, "fence", ORDERS as u64))
            .collect::<Vec<_>>(),
    )
    .await;
    // A slow worker (a 10 s backlog) that heartbeats rarely (the broker
    // expires members after 1 s).
    let mut settings = rig.settings("w1", 300);
    settings.heartbeat_interval = Duration::from_millis(800);
    let w1 = OrderWorker::new(settings, rig.orders.clone(), rig.stock.clone());
    w1.add_broker("local", Arc::new(rig.broker.clone()));
    rig.until("w1 writes", MINUTE, || async { w1.stats().inserted > 0 })
        .await;

    // b joins and takes half the queues; it is faster and has consumed
    // them to the end already. w1 has not heartbeated since.
    let b = rig
        .broker
        .join_group(&JoinRequest {
            group: DEFAULT_GROUP.into(),
            member: "b".into(),
            mode: ConsumeMode::Clustering,
            topics: vec![ORDERS_TOPIC.into(), PAYMENT_TIMEOUTS_TOPIC.into()],
        })
        .unwrap();
    let taken: Vec<(u32, u64)> = rig
        .broker
        .queue_stats()
        .into_iter()
        .filter(|q| {
            q.topic == ORDERS_TOPIC
                && b.queues
                    .iter()
                    .any(|o| o.topic == ORDERS_TOPIC && o.queue_id == q.queue_id)
        })
        .map(|q| (q.queue_id, q.max_offset))
        .collect();
    assert!(!taken.is_empty());
    for &(queue_id, end) in &taken {
        commit_as_b(&rig.broker, b.generation, queue_id, end);
    }
    let alive = Arc::new(AtomicBool::new(true));
    let heartbeats = {
        let (broker, alive) = (rig.broker.clone(), Arc::clone(&alive));
        tokio::spawn(async move {
            while alive.load(Ordering::Relaxed) {
                let _ = broker.heartbeat(DEFAULT_GROUP, "b");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Through w1's next heartbeats and beyond, b's offsets stay where b put
    // them: w1's stale commits are refused, not stored.
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        for &(queue_id, end) in &taken {
            let committed = rig
                .broker
                .committed_offset(DEFAULT_GROUP, ORDERS_TOPIC, queue_id);
            assert_eq!(
                committed,
                Some(end),
                "{ORDERS_TOPIC}/{queue_id} went from {end} to {committed:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consuming: Vec<u32> = w1
        .consuming()
        .into_iter()
        .filter(|(_, q)| q.topic == ORDERS_TOPIC)
        .map(|(_, q)| q.queue_id)
        .collect();
    assert!(
        taken.iter().all(|(q, _)| !consuming.contains(q)),
        "w1 still consumes b's queues: {consuming:?}"
    );

    // b leaves; w1 takes its queues back from b's offsets and the group
    // drains: its lag returns to zero.
    alive.store(false, Ordering::Relaxed);
    heartbeats.await.unwrap();
    rig.broker.leave_group(DEFAULT_GROUP, "b").unwrap();
    rig.drained(DEFAULT_GROUP, ORDERS_TOPIC, MINUTE).await;
    w1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_offsets_never_go_backwards_when_a_member_takes_queues_on_sqlite() {
    offsets_never_go_backwards_when_a_member_takes_queues(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_offsets_never_go_backwards_when_a_member_takes_queues_on_postgres() {
    offsets_never_go_backwards_when_a_member_takes_queues(Db::Postgres).await;
}
