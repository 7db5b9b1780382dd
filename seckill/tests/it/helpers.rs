//! Test helpers: a throwaway `redis-server` on a free port (or the Redis at
//! `REDIS_URL`, under a key prefix of this test's own), and both stores.
//!
//! When Redis cannot be had, the test says so loudly and is skipped —
//! unless `FLASHSALE_REQUIRE_SERVICES=1` (CI sets it), where it fails.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seckill::{EmbeddedScripts, RedisScripts, StockStore};

/// A Redis for one test; a spawned server is killed when this drops.
pub(crate) struct TestRedis {
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) prefix: String,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "test{}-{nanos}-{}:",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn missing(reason: &str) -> Option<TestRedis> {
    let required = std::env::var("FLASHSALE_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    eprintln!("\n*** Redis unavailable: {reason} ***");
    if required {
        panic!("Redis is required (FLASHSALE_REQUIRE_SERVICES=1): {reason}");
    }
    eprintln!("*** skipping the Redis half of this test ***\n");
    None
}

/// A Redis for this test, or `None` (loudly) when none can be had.
pub(crate) fn test_redis() -> Option<TestRedis> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Some(TestRedis {
            child: None,
            url,
            prefix: unique_prefix(),
        });
    }
    let port = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener.local_addr().unwrap().port(),
        Err(e) => return missing(&format!("no free port: {e}")),
    };
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => return missing(&format!("cannot start redis-server: {e}")),
    };
    let redis = TestRedis {
        child: Some(child),
        url: format!("redis://127.0.0.1:{port}"),
        prefix: unique_prefix(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return missing("redis-server did not start listening within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(redis)
}

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
