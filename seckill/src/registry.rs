//! The broker registry — RocketMQ's NameServer role, made small: every
//! seckill instance announces the address of the broker it hosts, and
//! order workers discover all live brokers from it.
//!
//! An entry is a heartbeat with an expiry (every 30 s, live for 120 s):
//! an instance that dies simply stops renewing and drops out, no
//! deregistration needed (though a clean stop deregisters at once). With
//! Redis the registry is a sorted set (`sk:brokers`, member = address,
//! score = expiry in ms); in the all-in-one process it is an in-memory map.
//! Expiry uses each host's wall clock, which the 120 s lifetime makes
//! tolerant of ordinary clock skew.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::SeckillError;

/// How often an instance renews its entry.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How long an entry lives without renewal.
pub const ENTRY_TTL: Duration = Duration::from_secs(120);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where brokers announce themselves.
#[async_trait]
pub trait BrokerRegistry: Send + Sync + Debug {
    /// Announces `address` as live until `expires_at_ms`.
    async fn announce(&self, address: &str, expires_at_ms: i64) -> Result<(), SeckillError>;
    /// Removes `address` at once (clean stop).
    async fn withdraw(&self, address: &str) -> Result<(), SeckillError>;
    /// Addresses live at `now_ms`, sorted; expired ones are dropped.
    async fn live_at(&self, now_ms: i64) -> Result<Vec<String>, SeckillError>;

    /// Addresses live now.
    async fn live(&self) -> Result<Vec<String>, SeckillError> {
        self.live_at(now_ms()).await
    }
}

/// The in-process registry of the all-in-one binary.
#[derive(Debug, Default)]
pub struct LocalRegistry {
    entries: Mutex<HashMap<String, i64>>,
}

#[async_trait]
impl BrokerRegistry for LocalRegistry {
    async fn announce(&self, address: &str, expires_at_ms: i64) -> Result<(), SeckillError> {
        self.entries
            .lock()
            .insert(address.to_owned(), expires_at_ms);
        Ok(())
    }

    async fn withdraw(&self, address: &str) -> Result<(), SeckillError> {
        self.entries.lock().remove(address);
        Ok(())
    }

    async fn live_at(&self, now_ms: i64) -> Result<Vec<String>, SeckillError> {
        let mut entries = self.entries.lock();
        entries.retain(|_, expires| *expires > now_ms);
        let mut live: Vec<String> = entries.keys().cloned().collect();
        live.sort();
        Ok(live)
    }
}

/// The registry in Redis: a sorted set scored by expiry.
pub struct RedisRegistry {
    client: redis::Client,
    key: String,
}

impl Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisRegistry {
    /// A registry at `url`, its key under `prefix`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, SeckillError> {
        let client = redis::Client::open(url)
            .map_err(|e| SeckillError::Invalid(format!("bad Redis URL: {e}")))?;
        Ok(RedisRegistry {
            client,
            key: format!("{prefix}sk:brokers"),
        })
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, SeckillError> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| SeckillError::Store(format!("registry: {e}")))
    }
}

#[async_trait]
impl BrokerRegistry for RedisRegistry {
    async fn announce(&self, address: &str, expires_at_ms: i64) -> Result<(), SeckillError> {
        let mut conn = self.connection().await?;
        redis::cmd("ZADD")
            .arg(&self.key)
            .arg(expires_at_ms)
            .arg(address)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| SeckillError::Store(format!("registry announce: {e}")))
    }

    async fn withdraw(&self, address: &str) -> Result<(), SeckillError> {
        let mut conn = self.connection().await?;
        redis::cmd("ZREM")
            .arg(&self.key)
            .arg(address)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| SeckillError::Store(format!("registry withdraw: {e}")))
    }

    async fn live_at(&self, now_ms: i64) -> Result<Vec<String>, SeckillError> {
        let mut conn = self.connection().await?;
        let failed = |e: redis::RedisError| SeckillError::Store(format!("registry read: {e}"));
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(now_ms)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(failed)?;
        let mut live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.key)
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        live.sort();
        Ok(live)
    }
}

/// Announces `address` for [`ENTRY_TTL`] now — so it is registered when
/// this returns — and then every [`HEARTBEAT_INTERVAL`] from a task. A
/// failed renewal is logged and retried at the next beat; the entry
/// outlives several missed beats.
pub async fn start_heartbeat(
    registry: Arc<dyn BrokerRegistry>,
    address: String,
) -> Result<JoinHandle<()>, SeckillError> {
    let announce = |registry: Arc<dyn BrokerRegistry>, address: String| async move {
        let expires = now_ms() + ENTRY_TTL.as_millis() as i64;
        registry.announce(&address, expires).await
    };
    announce(Arc::clone(&registry), address.clone()).await?;
    Ok(tokio::spawn(async move {
        let start = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
        let mut beat = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
        loop {
            beat.tick().await;
            if let Err(e) = announce(Arc::clone(&registry), address.clone()).await {
                tracing::warn!(error = %e, address, "broker heartbeat failed");
            }
        }
    }))
}
