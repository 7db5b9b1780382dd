//! The worker process's settings: defaults, overridden from the
//! environment.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `sqlite://orders.db?mode=rwc` | PostgreSQL (`postgres://…`) or SQLite |
//! | `WORKER_DB_CONNECTIONS` | `8` | database pool size (SQLite always 1) |
//! | `WORKER_LISTEN` | `127.0.0.1:8082` | address of the order API |
//! | `REDIS_URL` | required | the stock store and the broker registry |
//! | `SECKILL_KEY_PREFIX` | empty | prefix of stock keys and the registry (as seckill's) |
//! | `WORKER_BROKERS` | empty | broker URLs to consume besides the registry's, comma-separated |
//! | `WORKER_RATE` | `2000` | orders written per second at most; `0` = unlimited |
//! | `WORKER_MAX_BATCH` | `200` | orders per pull and per database batch |
//! | `WORKER_PAYMENT_TIMEOUT_MS` | `900000` (15 min) | time to pay before cancellation |
//! | `WORKER_GROUP` | `order-worker` | consumer group |
//! | `WORKER_MEMBER_ID` | `host-pid-nanos` | member id in the group |
//! | `WORKER_MAX_CONNECTIONS` | `4096` | open connections on the API's port; past it, 503 and close |
//! | `FLASHSALE_TOKEN_KEY` | **required** | buyer tokens' HS256 key: the order API serves a buyer's own orders only |
//! | `FLASHSALE_ADMIN_KEY` | **required** | the admin routes' key and `/metrics` |
//! | `FLASHSALE_BROKER_KEY` | **required** | presented to every broker consumed |
//!
//! The standalone worker needs Redis: the stock store it returns units to
//! must be the one seckill sells from. (The all-in-one binary hands it the
//! embedded store and broker instead.) URLs may carry passwords: `Debug`
//! never prints them.

use std::net::SocketAddr;
use std::time::Duration;

use service_kit::access::Keys;
use service_kit::env_settings::{EnvReader, invalid};

use crate::settings::WorkerSettings;

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

/// Settings of one worker process.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The order database.
    pub database_url: String,
    /// Database pool size.
    pub db_connections: u32,
    /// Address of the order API.
    pub listen: SocketAddr,
    /// Redis: stock store and registry.
    pub redis_url: Option<String>,
    /// Stock-key and registry prefix.
    pub key_prefix: String,
    /// Brokers to consume besides those in the registry.
    pub static_brokers: Vec<String>,
    /// How to consume.
    pub settings: WorkerSettings,
    /// The buyer-token, admin and broker keys.
    pub keys: Keys,
    /// Open connections on the API's port at most.
    pub max_connections: usize,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let database = if self.database_url.starts_with("sqlite:") {
            self.database_url.as_str()
        } else {
            "postgres (<set>)"
        };
        f.debug_struct("WorkerConfig")
            .field("database", &database)
            .field("db_connections", &self.db_connections)
            .field("listen", &self.listen)
            .field("redis", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("key_prefix", &self.key_prefix)
            .field("static_brokers", &self.static_brokers)
            .field("settings", &self.settings)
            .field("keys", &self.keys)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            database_url: "sqlite://orders.db?mode=rwc".into(),
            db_connections: 8,
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            redis_url: None,
            key_prefix: String::new(),
            static_brokers: Vec::new(),
            settings: WorkerSettings::default(),
            keys: Keys::random(),
            max_connections: 4_096,
        }
    }
}

impl WorkerConfig {
    /// Defaults overridden by the environment (see the module doc).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`WorkerConfig::from_env`], reading variables from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new(lookup);
        let mut config = WorkerConfig {
            keys: Keys::from_lookup(|name| env.raw(name), true)?,
            ..WorkerConfig::default()
        };
        if let Some(n) = env.number("WORKER_MAX_CONNECTIONS", 1)? {
            config.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(url) = env.text("DATABASE_URL") {
            if !["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(ConfigError(
                    "DATABASE_URL must start with postgres:// or sqlite:".into(),
                ));
            }
            config.database_url = url;
        }
        if let Some(n) = env.number("WORKER_DB_CONNECTIONS", 1)? {
            config.db_connections = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(listen) = env.addr("WORKER_LISTEN")? {
            config.listen = listen;
        }
        config.redis_url = env.text("REDIS_URL");
        if let Some(prefix) = env.raw("SECKILL_KEY_PREFIX") {
            config.key_prefix = prefix;
        }
        if let Some(brokers) = env.list("WORKER_BROKERS") {
            config.static_brokers = brokers;
        }
        let settings = &mut config.settings;
        if let Some(n) = env.number("WORKER_RATE", 0)? {
            settings.rate_per_second = u32::try_from(n)
                .map_err(|_| invalid("WORKER_RATE", &n.to_string(), "too large"))?;
        }
        if let Some(n) = env.number("WORKER_MAX_BATCH", 1)? {
            settings.max_batch = u32::try_from(n.min(10_000)).unwrap_or(10_000);
        }
        if let Some(n) = env.number("WORKER_PAYMENT_TIMEOUT_MS", 1)? {
            settings.payment_timeout = Duration::from_millis(n);
        }
        if let Some(group) = env.text("WORKER_GROUP") {
            settings.group = group;
        }
        if let Some(member) = env.text("WORKER_MEMBER_ID") {
            settings.member = member;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs`, plus the three keys.
    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let fixed = service_kit::env_settings::fixed_env(pairs);
        move |name| {
            fixed(name).or_else(|| {
                name.ends_with("_KEY")
                    .then(|| format!("{name} test value 0123456789"))
            })
        }
    }

    #[test]
    fn the_environment_overrides_defaults_and_bad_values_are_named() {
        let config = WorkerConfig::from_lookup(env(&[
            ("DATABASE_URL", "postgres://u:secret@db/orders"),
            ("WORKER_RATE", "0"),
            ("WORKER_PAYMENT_TIMEOUT_MS", "2000"),
            ("WORKER_BROKERS", "http://a:1, http://b:2,"),
            ("REDIS_URL", "redis://:hidden@r:6379"),
        ]))
        .unwrap();
        assert_eq!(config.settings.rate_per_second, 0);
        assert_eq!(config.settings.payment_timeout, Duration::from_secs(2));
        assert_eq!(config.static_brokers, ["http://a:1", "http://b:2"]);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("hidden") && !shown.contains("test value"),
            "{shown}"
        );
        let error =
            WorkerConfig::from_lookup(service_kit::env_settings::fixed_env(&[])).unwrap_err();
        assert!(error.to_string().contains("FLASHSALE_TOKEN_KEY"), "{error}");

        for bad in [
            &[("WORKER_RATE", "fast")][..],
            &[("WORKER_MAX_BATCH", "0")],
            &[("DATABASE_URL", "mysql://x")],
            &[("WORKER_LISTEN", "nowhere")],
        ] {
            let error = WorkerConfig::from_lookup(env(bad)).unwrap_err();
            assert!(error.to_string().contains(bad[0].0), "{error}");
        }
    }
}
