//! Sold-out flags across processes: two seckill instances share a store;
//! when one sells the last unit the other's flag goes up, and when stock
//! comes back it comes down — by publication, by resync after the
//! subscription was dropped, or by the periodic resync when the
//! subscription is half open and says nothing at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, FlushMode};
use seckill::{Activity, FLAG_RESYNC_INTERVAL, FlagFeed, PurchaseOutcome, Seckill, StockStore};

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
            quiz: false,
            starts_at_ms: 0,
            ends_at_ms: i64::MAX,
        })
        .unwrap();
    seckill
}

/// Long enough that no periodic resync happens during a test: what heals
/// the flags there is the publication or the resubscription under test.
const NO_PERIODIC_RESYNC: Duration = Duration::from_secs(3_600);

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
    let _fa = a.follow_flags(FlagFeed::Embedded(&scripts), NO_PERIODIC_RESYNC);
    let _fb = b.follow_flags(FlagFeed::Embedded(&scripts), NO_PERIODIC_RESYNC);
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
    let _fa = a.follow_flags(FlagFeed::Redis(&redis.url), NO_PERIODIC_RESYNC);
    let _fb = b.follow_flags(FlagFeed::Redis(&redis.url), NO_PERIODIC_RESYNC);
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

/// Defect 3: a seckill instance resynced its flags only after
/// (re)subscribing, so a half-open pub/sub connection — one that delivers
/// nothing and never reports an error — left it answering `sold_out` for
/// good after stock came back. Here b's feed is exactly that (it delivers
/// nothing); only the periodic resync can open the item again.
#[tokio::test]
async fn a_half_open_subscription_heals_by_the_periodic_resync() {
    let (store, scripts) = crate::helpers::embedded_store();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(store.clone(), dir_a.path(), 1);
    let b = instance(store.clone(), dir_b.path(), 2);
    let _fa = a.follow_flags(FlagFeed::Embedded(&scripts), NO_PERIODIC_RESYNC);
    let _fb = b.follow_flags(FlagFeed::None, FLAG_RESYNC_INTERVAL);
    store.prewarm("one", 1).await.unwrap();
    let PurchaseOutcome::Queued { order_id } = a.purchase("one", "alice").await.unwrap() else {
        panic!("alice buys the only unit");
    };
    eventually("b learns sold out with no publication", || {
        b.flags().is_sold_out("one")
    })
    .await;
    store.release("one", "alice", &order_id).await.unwrap();
    eventually("b reopens with no publication", || {
        !b.flags().is_sold_out("one")
    })
    .await;
    assert!(matches!(
        b.purchase("one", "bob").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
}

/// Defect 2: the flag channel was `sk:flags` whatever the key prefix, so a
/// deployment sharing the Redis under another prefix applied this one's
/// flags — and a flag with a higher version from there could pin an item
/// shut here. Now each deployment publishes and listens under its prefix.
#[tokio::test]
async fn a_deployment_under_another_prefix_never_applies_our_flags() {
    let Some(redis) = test_redis() else { return };
    let ours = redis_store(&redis, 4).await;
    let scripts = seckill::RedisScripts::connect(&redis.url, 4).expect("redis pool");
    let theirs = StockStore::new(Arc::new(scripts), format!("{}other:", redis.prefix));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance(ours.clone(), dir_a.path(), 1);
    let b = instance(theirs.clone(), dir_b.path(), 2);
    let _fa = a.follow_flags(FlagFeed::Redis(&redis.url), NO_PERIODIC_RESYNC);
    let _fb = b.follow_flags(FlagFeed::Redis(&redis.url), NO_PERIODIC_RESYNC);
    ours.prewarm("one", 1).await.unwrap();
    theirs.prewarm("one", 5).await.unwrap();
    // Both subscriptions are up once each follower has seen a message
    // published on its own channel.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let publish = |channel: String, message: &'static str| {
        let mut conn = conn.clone();
        async move {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    for (holder, store) in [(&a, &ours), (&b, &theirs)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !holder.flags().is_sold_out("ready") {
            assert!(Instant::now() < deadline, "the subscription never came up");
            publish(store.flag_channel().to_owned(), "ready soldout 1").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Ours sells out (version 1, published on our channel) ...
    assert!(matches!(
        a.purchase("one", "alice").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
    assert!(a.flags().is_sold_out("one"));
    // ... and a message published after it on their channel reaches b:
    // Redis delivers one connection's messages in order, so had b been
    // listening to ours, it would have seen the sell-out first.
    publish(theirs.flag_channel().to_owned(), "marker soldout 1").await;
    eventually("b sees the marker", || b.flags().is_sold_out("marker")).await;
    assert!(
        !b.flags().is_sold_out("one"),
        "another deployment's flag closed the item here"
    );
    assert!(matches!(
        b.purchase("one", "bob").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
}
