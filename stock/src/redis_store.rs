//! The real stock store: Redis through a deadpool-redis connection pool.
//!
//! Scripts go out as EVALSHA; redis-rs loads a script and retries when the
//! server answers NOSCRIPT (after a restart or `SCRIPT FLUSH`), so the
//! script cache never has to be managed by hand.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Manager, Pool, Runtime};

use crate::error::StockError;
use crate::metrics::POOL_WAIT_SECONDS;
use crate::reply::Reply;
use crate::scripts::{ALL, LuaScript};
use crate::stock_store::ScriptRunner;

/// Runs the scripts on a Redis server.
pub struct RedisScripts {
    pool: Pool,
    scripts: HashMap<&'static str, redis::Script>,
}

impl std::fmt::Debug for RedisScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("RedisScripts")
            .field("pool_status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// How long a connection may take to open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a script's answer may take. A lost answer leaves the buyer
/// uncertain (the script may have run), so this is longer than redis-rs's
/// 500 ms default, which a busy machine crosses under a spike, and shorter
/// than the gateway's 5 s request timeout.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisScripts {
    /// A pool of up to `max_connections` to the Redis at `url`.
    pub fn connect(url: &str, max_connections: usize) -> Result<Self, StockError> {
        let connections = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = Manager::new_with_config(url, connections)
            .map_err(|e| StockError::Store(format!("bad Redis URL: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StockError::Store(format!("cannot create the Redis pool: {e}")))?;
        let scripts = ALL
            .iter()
            .map(|s| (s.name, redis::Script::new(s.source)))
            .collect();
        Ok(RedisScripts { pool, scripts })
    }

    /// Checks the server answers (PING), so a wrong URL fails at startup.
    pub async fn ping(&self) -> Result<(), StockError> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| StockError::Store(format!("Redis did not answer PING: {e}")))
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, StockError> {
        let started = std::time::Instant::now();
        let connection = self
            .pool
            .get()
            .await
            .map_err(|e| StockError::Store(format!("no Redis connection: {e}")));
        metrics::histogram!(POOL_WAIT_SECONDS).record(started.elapsed().as_secs_f64());
        connection
    }
}

#[async_trait]
impl ScriptRunner for RedisScripts {
    async fn run(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[String],
    ) -> Result<Reply, StockError> {
        let compiled = self
            .scripts
            .get(script.name)
            .ok_or_else(|| StockError::Invalid(format!("unknown script {}", script.name)))?;
        let mut invocation = compiled.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.connection().await?;
        let value: redis::Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| StockError::Store(format!("{} failed: {e}", script.name)))?;
        Ok(Reply::from_redis(value))
    }
}
