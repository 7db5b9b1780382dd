//! The broker registry: entries live until their expiry, renewals extend
//! them, withdrawal removes them — in memory and in Redis alike.

use std::sync::Arc;

use seckill::{BrokerRegistry, LocalRegistry, RedisRegistry};

use crate::helpers::test_redis;

async fn behaves_like_a_registry(registry: Arc<dyn BrokerRegistry>) {
    let now = 1_800_000_000_000;
    registry
        .announce("http://b:8081", now + 120_000)
        .await
        .unwrap();
    registry
        .announce("http://a:8081", now + 120_000)
        .await
        .unwrap();
    registry.announce("http://old:8081", now - 1).await.unwrap();
    assert_eq!(
        registry.live_at(now).await.unwrap(),
        ["http://a:8081", "http://b:8081"]
    );
    // b misses its heartbeats; a renews.
    registry
        .announce("http://a:8081", now + 240_000)
        .await
        .unwrap();
    assert_eq!(
        registry.live_at(now + 130_000).await.unwrap(),
        ["http://a:8081"]
    );
    registry.withdraw("http://a:8081").await.unwrap();
    assert!(registry.live_at(now).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_local_registry_expires_and_renews() {
    behaves_like_a_registry(Arc::new(LocalRegistry::default())).await;
}

#[tokio::test]
async fn the_redis_registry_expires_and_renews() {
    let Some(redis) = test_redis() else { return };
    behaves_like_a_registry(Arc::new(
        RedisRegistry::new(&redis.url, &redis.prefix).unwrap(),
    ))
    .await;
}
