//! The seckill service assembled: stock store, embedded broker, flag
//! follower, registry heartbeat and the HTTP server — built from a config,
//! served until a shutdown future resolves.
//!
//! Shutdown, in order: stop accepting connections and let in-flight
//! requests finish (each purchase ends its transaction before answering,
//! so none is left half done by the server itself); stop the follower and
//! the heartbeat; withdraw from the registry; shut the broker down, which
//! flushes the log and consume queues and persists offsets. Half messages
//! left open by failures stay in the log and are settled by check-back
//! after the next start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::http_server::PortLimits;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::SeckillError;
use crate::config::SeckillConfig;
use crate::flag_holder::FLAG_RESYNC_INTERVAL;
use crate::purchase::Seckill;
use crate::registry::{BrokerRegistry, LocalRegistry, RedisRegistry, start_heartbeat};
use stock::RedisScripts;
use stock::StockStore;
use stock::{EmbeddedScripts, FlagFeed};

/// A built, bound, not yet serving seckill instance.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    limits: PortLimits,
    seckill: Arc<Seckill>,
    registry: Arc<dyn BrokerRegistry>,
    address: String,
    tasks: Vec<JoinHandle<()>>,
    /// Where the store publishes flag changes: Redis at this URL, or the
    /// embedded store in this process.
    flag_source: FlagSource,
}

/// The store's publications, for whoever else in the process follows them.
#[derive(Debug)]
enum FlagSource {
    Redis(String),
    Embedded(Arc<EmbeddedScripts>),
}

impl App {
    /// Connects the stock store, opens the broker, binds the listener.
    /// `metrics` adds a `/metrics` route rendering that recorder (behind
    /// the admin key, as every admin route).
    pub async fn build(
        config: SeckillConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<App, SeckillError> {
        let access = crate::http::Access::from_keys(&config.keys, &config.checker_hosts)?;
        let limits = PortLimits::new("seckill")
            .with_max_connections(config.max_connections)
            .with_max_body(
                broker::http_api::send_body_limit(&config.broker)
                    .max(crate::http::ADMIN_BODY_LIMIT),
            );
        let broker_config = config.broker.clone();
        let broker = tokio::task::spawn_blocking(move || broker::Broker::open(broker_config))
            .await
            .map_err(|e| SeckillError::Store(format!("opening the broker panicked: {e}")))?
            .map_err(|e| SeckillError::Store(format!("cannot open the broker: {e}")))?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            SeckillError::Invalid(format!("cannot listen on {}: {e}", config.listen))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| SeckillError::Invalid(format!("no local address: {e}")))?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));

        let mut tasks = Vec::new();
        let (seckill, registry, flag_source): (Arc<Seckill>, Arc<dyn BrokerRegistry>, FlagSource) =
            match &config.redis_url {
                Some(url) => {
                    let scripts = RedisScripts::connect(url, config.redis_pool_size)?;
                    scripts.ping().await?;
                    let store = StockStore::new(Arc::new(scripts), config.key_prefix.clone());
                    let seckill =
                        Seckill::with_path(broker, store, config.node_id, config.reservations)
                            .map_err(|e| SeckillError::Store(e.to_string()))?;
                    tasks.extend(seckill.follow_flags(FlagFeed::Redis(url), FLAG_RESYNC_INTERVAL));
                    (
                        seckill,
                        Arc::new(RedisRegistry::new(url, &config.key_prefix)?),
                        FlagSource::Redis(url.clone()),
                    )
                }
                None => {
                    let scripts = Arc::new(EmbeddedScripts::new()?);
                    let store = StockStore::new(scripts.clone(), config.key_prefix.clone());
                    let seckill =
                        Seckill::with_path(broker, store, config.node_id, config.reservations)
                            .map_err(|e| SeckillError::Store(e.to_string()))?;
                    tasks.extend(
                        seckill.follow_flags(FlagFeed::Embedded(&scripts), FLAG_RESYNC_INTERVAL),
                    );
                    (
                        seckill,
                        Arc::new(LocalRegistry::default()),
                        FlagSource::Embedded(scripts),
                    )
                }
            };
        tasks.push(start_heartbeat(Arc::clone(&registry), address.clone()).await?);

        let router = crate::http::router(Arc::clone(&seckill), access, metrics);
        tracing::info!(%local, %address, store = if config.redis_url.is_some() { "redis" } else { "embedded" }, "seckill ready");
        Ok(App {
            listener,
            router,
            limits,
            seckill,
            registry,
            address,
            tasks,
            flag_source,
        })
    }

    /// The service's routes (purchase, admin, the broker's API), for a
    /// caller in this process that serves them itself — the all-in-one
    /// gateway calls them as an in-process upstream.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The store's flag publications, for another follower in this
    /// process (the all-in-one gateway's edge).
    pub fn flag_feed(&self) -> FlagFeed<'_> {
        match &self.flag_source {
            FlagSource::Redis(url) => FlagFeed::Redis(url),
            FlagSource::Embedded(scripts) => FlagFeed::Embedded(scripts),
        }
    }

    /// The address the server is bound to (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The service core (for in-process callers and tests).
    pub fn seckill(&self) -> &Arc<Seckill> {
        &self.seckill
    }

    /// The registry this instance announces itself in.
    pub fn registry(&self) -> &Arc<dyn BrokerRegistry> {
        &self.registry
    }

    /// Serves until `shutdown` resolves, then stops cleanly (module doc).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SeckillError> {
        service_kit::http_server::serve(self.listener, self.router, self.limits, shutdown).await;
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.registry.withdraw(&self.address).await {
            tracing::warn!(error = %e, "could not withdraw from the registry; the entry will expire");
        }
        self.seckill
            .broker()
            .shutdown()
            .await
            .map_err(|e| SeckillError::Store(format!("broker shutdown: {e}")))?;
        tracing::info!("seckill stopped");
        Ok(())
    }
}
