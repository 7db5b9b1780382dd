//! The standalone worker process: the order database, the stock store and
//! registry in Redis, every registered broker (plus any configured ones)
//! consumed over HTTP, and the order API on its own port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use seckill::{BrokerRegistry, RedisRegistry, RedisScripts, StockStore};
use service_kit::http_server::PortLimits;
use tokio::net::TcpListener;

use crate::config::WorkerConfig;
use crate::http::WorkerAccess;
use crate::order_store::OrderStore;
use crate::worker::OrderWorker;

/// Redis connections of the worker's stock store (releases are rare).
const REDIS_POOL: usize = 8;

/// A worker ready to serve.
#[derive(Debug)]
pub struct WorkerApp {
    listener: TcpListener,
    worker: Arc<OrderWorker>,
    access: WorkerAccess,
    limits: PortLimits,
    metrics: Option<PrometheusHandle>,
}

impl WorkerApp {
    /// Connects the database (running migrations) and Redis, starts
    /// consuming, binds the API's listener.
    pub async fn build(
        config: WorkerConfig,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<WorkerApp> {
        let redis_url = config.redis_url.as_deref().context(
            "REDIS_URL is required: the worker returns stock to the store seckill sells from",
        )?;
        let orders = OrderStore::connect(&config.database_url, config.db_connections)
            .await
            .context("cannot open the order database")?;
        let scripts = RedisScripts::connect(redis_url, REDIS_POOL)?;
        scripts.ping().await.context("cannot reach Redis")?;
        let stock = StockStore::new(Arc::new(scripts), config.key_prefix.clone());
        let registry: Arc<dyn BrokerRegistry> =
            Arc::new(RedisRegistry::new(redis_url, &config.key_prefix)?);

        let broker_key = config.keys.broker_key().map_err(anyhow::Error::msg)?;
        let worker = OrderWorker::new(config.settings.clone(), orders, stock);
        for url in &config.static_brokers {
            let client = broker::BrokerHttpClient::new(url, broker_key)
                .with_context(|| format!("bad broker URL in WORKER_BROKERS: {url}"))?;
            worker.add_broker(url, Arc::new(client));
        }
        worker.watch_registry(registry, broker_key.to_owned());
        let access = WorkerAccess::from_keys(&config.keys).map_err(anyhow::Error::msg)?;
        let limits = PortLimits::new("order-api").with_max_connections(config.max_connections);
        let app = WorkerApp::with_worker(worker, config.listen, access, limits, metrics).await?;
        tracing::info!(listen = %app.local_addr(), rate = config.settings.rate_per_second, "order worker ready");
        Ok(app)
    }

    /// The order API over a worker built by the caller (the all-in-one
    /// binary's, handed its broker directly), bound to `listen` with
    /// `limits`, its routes behind `access`.
    pub async fn with_worker(
        worker: Arc<OrderWorker>,
        listen: SocketAddr,
        access: WorkerAccess,
        limits: PortLimits,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<WorkerApp> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        Ok(WorkerApp {
            listener,
            worker,
            access,
            limits,
            metrics,
        })
    }

    /// The address the API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The worker.
    pub fn worker(&self) -> &Arc<OrderWorker> {
        &self.worker
    }

    /// Serves until `shutdown`, then stops the worker gracefully: batches
    /// in hand are finished and committed, groups are left.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = crate::http::router(Arc::clone(&self.worker), self.access, self.metrics);
        service_kit::http_server::serve(self.listener, router, self.limits, shutdown).await;
        self.worker.stop().await;
        tracing::info!("order worker stopped");
        Ok(())
    }
}
