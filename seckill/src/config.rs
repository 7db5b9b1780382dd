//! The seckill service's settings: defaults that run with nothing
//! installed, overridden from the environment.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SECKILL_LISTEN` | `127.0.0.1:8081` | address to serve on |
//! | `SECKILL_ADVERTISE` | `http://<bound address>` | broker address announced in the registry |
//! | `SECKILL_NODE_ID` | `1` | node id in order ids (0..1024, unique per instance) |
//! | `REDIS_URL` | unset: embedded store | the stock store's Redis |
//! | `SECKILL_REDIS_POOL` | `64` | Redis connections |
//! | `SECKILL_KEY_PREFIX` | empty | prefix of every stock key |
//! | `BROKER_DATA_DIR` | `./data/broker` | the embedded broker's store |
//! | `BROKER_FLUSH` | `sync` | `sync` (group commit) or `async` |
//! | `SECKILL_RESERVATIONS` | `coalesced` | `coalesced` (batches per item) or `single` (one script call per purchase) |
//! | `SECKILL_BATCH_MAX` | `512` | most purchases in one batch (1..=1024) |
//! | `SECKILL_BATCH_IN_FLIGHT` | `4` | most batches of one item in flight (1..=64) |
//! | `SECKILL_MAX_CONNECTIONS` | `8192` | open connections on the port; past it, 503 and close |
//! | `SECKILL_CHECKER_HOSTS` | none | hosts (`http://host[:port]`) a remote producer may register check-back URLs on |
//! | `BROKER_AUTO_CREATE_TOPICS` | `false` | whether a send to an unknown topic creates it |
//! | `FLASHSALE_TOKEN_KEY` | **required** | buyer tokens' HS256 signing key (≥ 32 characters) |
//! | `FLASHSALE_ADMIN_KEY` | **required** | the admin routes' key and `/metrics` (≥ 32 characters) |
//! | `FLASHSALE_BROKER_KEY` | **required** | the broker API's key (≥ 32 characters) |
//!
//! The process refuses to start without its three keys; there is no
//! default key. [`SeckillConfig::embedded`] (tests, the all-in-one) makes
//! random ones instead, every call its own.
//!
//! A batch closes when no batch of its item is in flight, or when
//! `SECKILL_BATCH_MAX` purchases wait (see `seckill::coalescer`): there
//! is no timer, so a lone purchase never waits for company.
//!
//! `REDIS_URL` may carry a password: `Debug` never prints it.

use std::net::SocketAddr;
use std::path::PathBuf;

use broker::{BrokerConfig, FlushMode};

use service_kit::access::Keys;
use service_kit::env_settings::{EnvReader, invalid};

use crate::SeckillError;
use crate::coalescer::BatchLimits;
use crate::purchase::ReservationPath;

/// Settings of one seckill instance.
#[derive(Clone)]
pub struct SeckillConfig {
    /// Address to serve on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Broker address to announce; `None` = `http://<bound address>`.
    pub advertise: Option<String>,
    /// Node id for order ids.
    pub node_id: u16,
    /// Redis for the stock store and registry; `None` = embedded.
    pub redis_url: Option<String>,
    /// Redis pool size.
    pub redis_pool_size: usize,
    /// Prefix of every stock-store key.
    pub key_prefix: String,
    /// The embedded broker.
    pub broker: BrokerConfig,
    /// How purchases reach the stock store.
    pub reservations: ReservationPath,
    /// The buyer-token, admin and broker keys.
    pub keys: Keys,
    /// Hosts a remote producer may register check-back URLs on.
    pub checker_hosts: Vec<String>,
    /// Open connections on the port at most.
    pub max_connections: usize,
}

impl std::fmt::Debug for SeckillConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeckillConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("node_id", &self.node_id)
            .field("redis", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_pool_size", &self.redis_pool_size)
            .field("key_prefix", &self.key_prefix)
            .field("broker_dir", &self.broker.data_dir)
            .field("broker_flush", &self.broker.flush.name())
            .field("reservations", &self.reservations)
            .field("keys", &self.keys)
            .field("checker_hosts", &self.checker_hosts)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl SeckillConfig {
    /// Defaults: embedded store, broker under `data_dir`, loopback port
    /// 8081, random keys (read them from [`SeckillConfig::keys`]).
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        SeckillConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            advertise: None,
            node_id: 1,
            redis_url: None,
            redis_pool_size: 64,
            key_prefix: String::new(),
            broker: BrokerConfig::new(data_dir),
            reservations: ReservationPath::default(),
            keys: Keys::random(),
            checker_hosts: Vec::new(),
            max_connections: 8_192,
        }
    }

    /// Defaults overridden by the environment (see the module doc).
    pub fn from_env() -> Result<Self, SeckillError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`SeckillConfig::from_env`], reading variables from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SeckillError> {
        let env = EnvReader::new(lookup);
        let mut config = Self::embedded(
            env.text("BROKER_DATA_DIR")
                .unwrap_or_else(|| "./data/broker".into()),
        );
        config.keys =
            Keys::from_lookup(|name| env.raw(name), true).map_err(SeckillError::Invalid)?;
        config.checker_hosts = env.list("SECKILL_CHECKER_HOSTS").unwrap_or_default();
        config.broker.auto_create_topics = match env.text("BROKER_AUTO_CREATE_TOPICS").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid_setting(
                    "BROKER_AUTO_CREATE_TOPICS",
                    other,
                    "expected true or false",
                ));
            }
        };
        if let Some(n) = env
            .number("SECKILL_MAX_CONNECTIONS", 1)
            .map_err(SeckillError::Invalid)?
        {
            config.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(listen) = env.addr("SECKILL_LISTEN").map_err(SeckillError::Invalid)? {
            config.listen = listen;
        }
        config.advertise = env.text("SECKILL_ADVERTISE");
        if let Some(n) = env
            .number("SECKILL_NODE_ID", 0)
            .map_err(SeckillError::Invalid)?
        {
            config.node_id = u16::try_from(n).ok().filter(|n| *n < 1024).ok_or_else(|| {
                invalid_setting("SECKILL_NODE_ID", &n.to_string(), "expected 0..1024")
            })?;
        }
        config.redis_url = env.text("REDIS_URL");
        if let Some(n) = env
            .number("SECKILL_REDIS_POOL", 1)
            .map_err(SeckillError::Invalid)?
        {
            config.redis_pool_size = usize::try_from(n)
                .map_err(|_| invalid_setting("SECKILL_REDIS_POOL", &n.to_string(), "too large"))?;
        }
        if let Some(prefix) = env.raw("SECKILL_KEY_PREFIX") {
            config.key_prefix = prefix;
        }
        if let Some(v) = env.text("BROKER_FLUSH") {
            config.broker.flush = match v.as_str() {
                "sync" => FlushMode::sync(),
                "async" => FlushMode::async_default(),
                _ => {
                    return Err(invalid_setting(
                        "BROKER_FLUSH",
                        &v,
                        "expected sync or async",
                    ));
                }
            };
        }
        let mut limits = BatchLimits::default();
        if let Some(n) = env
            .number("SECKILL_BATCH_MAX", 1)
            .map_err(SeckillError::Invalid)?
        {
            limits.max_batch = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = env
            .number("SECKILL_BATCH_IN_FLIGHT", 1)
            .map_err(SeckillError::Invalid)?
        {
            limits.max_in_flight = usize::try_from(n).unwrap_or(usize::MAX);
        }
        limits
            .validate()
            .map_err(|why| invalid_setting("SECKILL_BATCH_*", &format!("{limits:?}"), &why))?;
        config.reservations = match env.text("SECKILL_RESERVATIONS").as_deref() {
            None | Some("coalesced") => ReservationPath::Coalesced(limits),
            Some("single") => ReservationPath::Single,
            Some(other) => {
                return Err(invalid_setting(
                    "SECKILL_RESERVATIONS",
                    other,
                    "expected coalesced or single",
                ));
            }
        };
        Ok(config)
    }
}

fn invalid_setting(name: &str, value: &str, why: &str) -> SeckillError {
    SeckillError::Invalid(invalid(name, value, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_defaults_and_bad_values_are_named() {
        // Every lookup has the three keys unless it sets them itself.
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
                    .or_else(|| {
                        name.ends_with("_KEY")
                            .then(|| format!("{name} test value 0123456789abcdef"))
                    })
            }
        };
        let config = SeckillConfig::from_lookup(env(&[
            ("SECKILL_LISTEN", "0.0.0.0:9000"),
            ("SECKILL_NODE_ID", "7"),
            ("REDIS_URL", "redis://:secret@r:6379"),
            ("BROKER_FLUSH", "async"),
        ]))
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.node_id, 7);
        assert!(
            !format!("{config:?}").contains("secret"),
            "the password leaked"
        );
        let error = SeckillConfig::from_lookup(env(&[("SECKILL_NODE_ID", "5000")])).unwrap_err();
        assert!(error.to_string().contains("SECKILL_NODE_ID"));
        assert!(SeckillConfig::from_lookup(env(&[("BROKER_FLUSH", "sometimes")])).is_err());
        assert!(!config.broker.auto_create_topics, "off when deployed");
        assert!(
            !format!("{config:?}").contains("test value"),
            "a key leaked"
        );
        for missing in [
            "FLASHSALE_TOKEN_KEY",
            "FLASHSALE_ADMIN_KEY",
            "FLASHSALE_BROKER_KEY",
        ] {
            let error = SeckillConfig::from_lookup(move |name: &str| {
                (name != missing && name.ends_with("_KEY")).then(|| "k".repeat(40))
            })
            .unwrap_err();
            assert!(error.to_string().contains(missing), "{error}");
        }
        assert_eq!(
            SeckillConfig::from_lookup(env(&[("SECKILL_BATCH_MAX", "64")]))
                .unwrap()
                .reservations,
            ReservationPath::Coalesced(BatchLimits {
                max_batch: 64,
                max_in_flight: 4
            })
        );
        assert_eq!(
            SeckillConfig::from_lookup(env(&[("SECKILL_RESERVATIONS", "single")]))
                .unwrap()
                .reservations,
            ReservationPath::Single
        );
        for bad in [
            &[("SECKILL_BATCH_MAX", "5000")][..],
            &[("SECKILL_BATCH_IN_FLIGHT", "0")],
            &[("SECKILL_RESERVATIONS", "some")],
        ] {
            let error = SeckillConfig::from_lookup(env(bad)).unwrap_err();
            assert!(error.to_string().contains("SECKILL_"), "{error}");
        }
    }
}
