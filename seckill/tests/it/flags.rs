//! Sold-out flags across processes: two seckill instances share a store;
//! when one sells the last unit the other's flag goes up, and when stock
//! comes back it comes down — by publication, or by resync after the
//! subscription was dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, FlushMode};
use seckill::{Activity, PurchaseOutcome, Seckill, StockStore};

use crate::helpers::{redis_store, test_redis};

fn instance(store: StockStore, dir: &std::path::Path, node: u16) -> Arc<Seckill> {
    let mut config = BrokerConfig::new(dir);
    config.flush = FlushMode::async_default();
    config.max_disk_usage_ratio = 1.0;
    let seckill = Seckill::new(Broker::open(config).unwrap(), store, node).unwrap();
    seckill
        .activities()
        .upsert(Activity {
            item: "one".into(),
            stock: 1,
            per_user_limit: 1,
            starts_at_ms: 0,
            ends_at_ms: i64::MAX,
        })
        .unwrap();
    seckill
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn flags_follow_the_embedded_store() {
    let (store, scripts) = crate::helpers::embedded_store();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(store.clone(), dir_a.path(), 1);
    let b = instance(store.clone(), dir_b.path(), 2);
    let _fa = a.follow_embedded_flags(&scripts);
    let _fb = b.follow_embedded_flags(&scripts);
    store.prewarm("one", 1).await.unwrap();
    let PurchaseOutcome::Queued { order_id } = a.purchase("one", "alice").await.unwrap() else {
        panic!("alice buys the only unit");
    };
    eventually("b sees sold out", || b.flags().is_sold_out("one")).await;
    a.release("one", "alice", &order_id).await.unwrap();
    eventually("b sees it reopen", || !b.flags().is_sold_out("one")).await;
    assert!(matches!(
        b.purchase("one", "bob").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
}

#[tokio::test]
async fn flags_follow_redis_and_heal_after_a_dropped_subscription() {
    let Some(redis) = test_redis() else { return };
    let store = redis_store(&redis, 4).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(store.clone(), dir_a.path(), 1);
    let b = instance(store.clone(), dir_b.path(), 2);
    let _fa = a.follow_redis_flags(&redis.url);
    let _fb = b.follow_redis_flags(&redis.url);
    // No wait for the subscriptions: each resyncs from the store once
    // subscribed, so a publication it missed cannot matter.
    store.prewarm("one", 1).await.unwrap();
    let PurchaseOutcome::Queued { order_id } = a.purchase("one", "alice").await.unwrap() else {
        panic!("alice buys the only unit");
    };
    eventually("b sees sold out", || b.flags().is_sold_out("one")).await;

    // Drop every subscription, and reopen the item while they are down:
    // b learns it by resyncing when it resubscribes.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 2, "killed {killed} subscriptions");
    store.release("one", "alice", &order_id).await.unwrap();
    eventually("b sees it reopen", || !b.flags().is_sold_out("one")).await;
    assert!(matches!(
        b.purchase("one", "bob").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
    eventually("a sees sold out again", || a.flags().is_sold_out("one")).await;
}
