//! Flags from a real Redis: set and cleared by the store's publications,
//! and healed by resyncs — after a dropped subscription, and when a change
//! was never published at all.

use std::sync::Arc;
use std::time::Duration;

use gateway::{ActivitySource, Edge, FlagFeed, Upstreams};
use stock::{ItemKeys, RedisScripts, StockStore};

use crate::helpers::{activities, eventually, settings, test_redis};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_follow_publications_and_heal_by_resync() {
    let Some(redis) = test_redis() else { return };
    let scripts = RedisScripts::connect(&redis.url, 4).unwrap();
    let store = StockStore::new(Arc::new(scripts), redis.prefix.clone());
    store.prewarm("hot", 1).await.unwrap();
    let mut quick = settings();
    quick.resync_interval = Duration::from_millis(200);
    let edge = Edge::new(
        quick,
        ActivitySource::Shared(activities()),
        Some(store.clone()),
        Upstreams::new(Vec::new(), Duration::from_secs(1)),
        Upstreams::new(Vec::new(), Duration::from_secs(1)),
        None,
    );
    let tasks = edge.start(FlagFeed::Redis(&redis.url));
    // Subscribed once a message published on the flag channel arrives (a
    // marker item no activity has, so resyncs never touch it).
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while !edge.flags().is_sold_out("subscribed") {
        assert!(std::time::Instant::now() < deadline, "never subscribed");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(store.flag_channel())
            .arg("subscribed soldout 1")
            .query_async(&mut conn)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. Publications: the last unit sold sets the flag, a release clears it.
    store.reserve("hot", "alice", "o-1").await.unwrap();
    eventually("sold out by publication", LIMIT, || {
        edge.flags().is_sold_out("hot")
    })
    .await;
    store.release("hot", "alice", "o-1").await.unwrap();
    eventually("reopened by publication", LIMIT, || {
        !edge.flags().is_sold_out("hot")
    })
    .await;

    // 2. The subscription is dropped; the change made meanwhile is healed
    //    by the resync that follows the resubscription (or the periodic one).
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1, "no subscription to drop");
    store.reserve("hot", "bob", "o-2").await.unwrap();
    eventually("sold out after the dropped subscription", LIMIT, || {
        edge.flags().is_sold_out("hot")
    })
    .await;

    // 3. A change nobody published (written straight into the keys, as a
    //    failover might leave it): only the periodic resync can see it.
    let keys = ItemKeys::new(&redis.prefix, "hot").to_vec();
    let version = edge.flags().version("hot");
    redis::pipe()
        .cmd("DEL")
        .arg(&keys[2])
        .cmd("SET")
        .arg(&keys[3])
        .arg(version + 1)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    eventually("reopened by the periodic resync", LIMIT, || {
        !edge.flags().is_sold_out("hot")
    })
    .await;
    for task in tasks {
        task.abort();
    }
}
