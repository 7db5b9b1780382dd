//! The gateway's settings: defaults, overridden from the environment.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `GATEWAY_LISTEN` | `127.0.0.1:8080` | address to serve on |
//! | `GATEWAY_UPSTREAMS` | `http://127.0.0.1:8081` | seckill instances, comma-separated |
//! | `GATEWAY_ORDER_API` | `http://127.0.0.1:8082` | order workers' API, comma-separated |
//! | `REDIS_URL` | unset | the stock store: flag publications and resyncs |
//! | `SECKILL_KEY_PREFIX` | empty | stock-key prefix (as seckill's) |
//! | `GATEWAY_GLOBAL_RPS` | `50000` | requests per second for the whole gateway (0 = off) |
//! | `GATEWAY_USER_RPS` | `5` | requests per second per verified user (0 = off) |
//! | `GATEWAY_ADDRESS_RPS` | `100` | requests per second per client address (0 = off) |
//! | `GATEWAY_CONNECTION_RPS` | `200` | requests per second per connection (0 = off); past it, 429 and close |
//! | `GATEWAY_TRUSTED_PROXIES` | none | IPs whose `X-Forwarded-For` is believed, comma-separated |
//! | `GATEWAY_MAX_CONNECTIONS` | `16384` | open connections; past it, 503 and close |
//! | `GATEWAY_MAX_IN_FLIGHT` | `4096` | concurrent requests; past it, 503 at once |
//! | `GATEWAY_MAX_BODY_BYTES` | `1024` | largest request body |
//! | `GATEWAY_HEADER_TIMEOUT_MS` | `5000` | time to send request headers |
//! | `GATEWAY_REQUEST_TIMEOUT_MS` | `5000` | time for a whole request |
//! | `GATEWAY_UPSTREAM_TIMEOUT_MS` | `3000` | time for an upstream answer |
//! | `GATEWAY_RESYNC_MS` | `1000` | full flag resync interval |
//! | `GATEWAY_LUA_HOOK` | unset (off) | path of an access-hook script (reloaded on SIGHUP) |
//! | `FLASHSALE_TOKEN_KEY` | **required** | buyer tokens' HS256 key (≥ 32 characters) |
//! | `FLASHSALE_ADMIN_KEY` | **required** | `/metrics`' key (≥ 32 characters) |
//!
//! The process refuses to start without its keys; there is no default key.
//!
//! Without `REDIS_URL` the gateway has no flag feed and every purchase
//! reaches seckill (which still answers sold-out from its own flags).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use service_kit::env_settings::{EnvReader, invalid};

use crate::edge::EdgeSettings;

/// Why the settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

/// Settings of one gateway process.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Seckill instances.
    pub upstreams: Vec<String>,
    /// Order API instances.
    pub order_api: Vec<String>,
    /// Redis: flags feed and resyncs.
    pub redis_url: Option<String>,
    /// Stock-key prefix.
    pub key_prefix: String,
    /// Upstream answer timeout.
    pub upstream_timeout: Duration,
    /// Access-hook script.
    pub lua_hook: Option<PathBuf>,
    /// Protection settings.
    pub edge: EdgeSettings,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("upstreams", &self.upstreams)
            .field("order_api", &self.order_api)
            .field("redis", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("key_prefix", &self.key_prefix)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("lua_hook", &self.lua_hook)
            .field("edge", &self.edge)
            .finish()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstreams: vec!["http://127.0.0.1:8081".into()],
            order_api: vec!["http://127.0.0.1:8082".into()],
            redis_url: None,
            key_prefix: String::new(),
            upstream_timeout: Duration::from_secs(3),
            lua_hook: None,
            edge: EdgeSettings::default(),
        }
    }
}

impl GatewayConfig {
    /// Defaults overridden by the environment (see the module doc).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`GatewayConfig::from_env`], reading variables from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = EnvReader::new(lookup);
        let mut config = GatewayConfig::default();
        let keys = service_kit::access::Keys::from_lookup(|name| env.raw(name), false)?;
        config.edge.buyers = keys.buyer_tokens()?;
        config.edge.purchases = keys.purchase_tokens()?;
        config.edge.admin = keys.admin_key()?;
        // Deployed, the whole gateway has a ceiling, and so does each
        // address (see the module doc).
        config.edge.global_rps = 50_000;
        config.edge.address_rps = 100;
        config.edge.connection_rps = 200;
        let to_u32 = |name: &str, n: u64| {
            u32::try_from(n).map_err(|_| invalid(name, &n.to_string(), "too large"))
        };
        if let Some(listen) = env.addr("GATEWAY_LISTEN")? {
            config.listen = listen;
        }
        if let Some(upstreams) = env.list("GATEWAY_UPSTREAMS") {
            if upstreams.is_empty() {
                let value = env.raw("GATEWAY_UPSTREAMS").unwrap_or_default();
                return Err(
                    invalid("GATEWAY_UPSTREAMS", &value, "expected at least one URL").into(),
                );
            }
            config.upstreams = upstreams;
        }
        if let Some(order_api) = env.list("GATEWAY_ORDER_API") {
            config.order_api = order_api;
        }
        config.redis_url = env.text("REDIS_URL");
        if let Some(prefix) = env.raw("SECKILL_KEY_PREFIX") {
            config.key_prefix = prefix;
        }
        let edge = &mut config.edge;
        if let Some(n) = env.number("GATEWAY_GLOBAL_RPS", 0)? {
            edge.global_rps = to_u32("GATEWAY_GLOBAL_RPS", n)?;
        }
        if let Some(n) = env.number("GATEWAY_USER_RPS", 0)? {
            edge.user_rps = to_u32("GATEWAY_USER_RPS", n)?;
        }
        if let Some(n) = env.number("GATEWAY_ADDRESS_RPS", 0)? {
            edge.address_rps = to_u32("GATEWAY_ADDRESS_RPS", n)?;
        }
        if let Some(n) = env.number("GATEWAY_CONNECTION_RPS", 0)? {
            edge.connection_rps = to_u32("GATEWAY_CONNECTION_RPS", n)?;
        }
        if let Some(proxies) = env.list("GATEWAY_TRUSTED_PROXIES") {
            edge.trusted_proxies = proxies
                .iter()
                .map(|p| {
                    p.parse()
                        .map_err(|_| invalid("GATEWAY_TRUSTED_PROXIES", p, "expected IP addresses"))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(n) = env.number("GATEWAY_MAX_CONNECTIONS", 1)? {
            edge.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = env.number("GATEWAY_MAX_IN_FLIGHT", 1)? {
            edge.max_in_flight = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = env.number("GATEWAY_MAX_BODY_BYTES", 0)? {
            edge.max_body_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(d) = env.millis("GATEWAY_HEADER_TIMEOUT_MS")? {
            edge.header_read_timeout = d;
        }
        if let Some(d) = env.millis("GATEWAY_REQUEST_TIMEOUT_MS")? {
            edge.request_timeout = d;
        }
        if let Some(d) = env.millis("GATEWAY_RESYNC_MS")? {
            edge.resync_interval = d;
            edge.activity_refresh = d;
        }
        if let Some(d) = env.millis("GATEWAY_UPSTREAM_TIMEOUT_MS")? {
            config.upstream_timeout = d;
        }
        config.lua_hook = env.text("GATEWAY_LUA_HOOK").map(PathBuf::from);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs`, plus the two keys.
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
        let config = GatewayConfig::from_lookup(env(&[
            ("GATEWAY_UPSTREAMS", "http://a:1,http://b:2"),
            ("GATEWAY_USER_RPS", "0"),
            ("GATEWAY_HEADER_TIMEOUT_MS", "250"),
            ("REDIS_URL", "redis://:secret@r:6379"),
        ]))
        .unwrap();
        assert_eq!(config.upstreams.len(), 2);
        assert_eq!(config.edge.user_rps, 0);
        assert_eq!(config.edge.header_read_timeout, Duration::from_millis(250));
        assert!(!format!("{config:?}").contains("secret"));
        assert!(!format!("{config:?}").contains("test value"));
        assert_eq!(
            (config.edge.global_rps, config.edge.address_rps),
            (50_000, 100)
        );
        let error =
            GatewayConfig::from_lookup(service_kit::env_settings::fixed_env(&[])).unwrap_err();
        assert!(error.to_string().contains("FLASHSALE_TOKEN_KEY"), "{error}");
        let proxies =
            GatewayConfig::from_lookup(env(&[("GATEWAY_TRUSTED_PROXIES", "10.0.0.1, ::1")]))
                .unwrap();
        assert_eq!(proxies.edge.trusted_proxies.len(), 2);
        for bad in [
            &[("GATEWAY_UPSTREAMS", " , ")][..],
            &[("GATEWAY_MAX_IN_FLIGHT", "0")],
            &[("GATEWAY_USER_RPS", "-1")],
            &[("GATEWAY_LISTEN", "here")],
            &[("GATEWAY_TRUSTED_PROXIES", "proxy.local")],
        ] {
            let error = GatewayConfig::from_lookup(env(bad)).unwrap_err();
            assert!(error.to_string().contains(bad[0].0), "{error}");
        }
    }
}
