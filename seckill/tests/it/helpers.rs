//! Test helpers: a throwaway `redis-server` on a free port (or the Redis at
//! `REDIS_URL`, under a key prefix of this test's own), and both stores.
//!
//! When Redis cannot be had, the test says so loudly and is skipped —
//! unless `FLASHSALE_REQUIRE_SERVICES=1` (CI sets it), where it fails.

use std::sync::Arc;

use seckill::{EmbeddedScripts, RedisScripts, StockStore};

pub(crate) use test_support::{TestRedis, test_redis};

/// A fresh embedded store.
pub(crate) fn embedded_store() -> (StockStore, Arc<EmbeddedScripts>) {
    let scripts = Arc::new(EmbeddedScripts::new().expect("embedded store"));
    (StockStore::new(scripts.clone(), ""), scripts)
}

/// A store over `redis`, with its own key prefix.
pub(crate) async fn redis_store(redis: &TestRedis, connections: usize) -> StockStore {
    let scripts = RedisScripts::connect(&redis.url, connections).expect("redis pool");
    scripts.ping().await.expect("redis answers");
    StockStore::new(Arc::new(scripts), redis.prefix.clone())
}
