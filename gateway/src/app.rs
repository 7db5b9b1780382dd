//! The standalone gateway process: upstreams over HTTP, flags from Redis,
//! activities loaded from the seckill instances.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::http_server::PortLimits;
use stock::{RedisScripts, StockStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::edge::{ActivitySource, Edge};
use crate::lua_hook::LuaHook;
use crate::upstream::{Upstream, Upstreams};
use stock::FlagFeed;

/// Redis connections for flag resyncs (one status read per item per
/// second).
const REDIS_POOL: usize = 4;

/// A gateway ready to serve.
#[derive(Debug)]
pub struct GatewayApp {
    listener: TcpListener,
    edge: Arc<Edge>,
    metrics: Option<PrometheusHandle>,
    tasks: Vec<JoinHandle<()>>,
}

fn upstreams(urls: &[String], config: &GatewayConfig) -> anyhow::Result<Upstreams> {
    let all = urls
        .iter()
        .map(|url| Upstream::http(url))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Upstreams::new(all, config.upstream_timeout))
}

impl GatewayApp {
    /// Builds the edge from `config`, starts its background work, binds.
    pub async fn build(
        config: GatewayConfig,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<GatewayApp> {
        let hook = config
            .lua_hook
            .as_ref()
            .map(LuaHook::from_file)
            .transpose()
            .context("the Lua access hook")?;
        let store = match &config.redis_url {
            Some(url) => {
                let scripts = RedisScripts::connect(url, REDIS_POOL)?;
                scripts.ping().await.context("cannot reach Redis")?;
                Some(StockStore::new(
                    Arc::new(scripts),
                    config.key_prefix.clone(),
                ))
            }
            None => {
                tracing::warn!("no REDIS_URL: no flag feed, every purchase reaches seckill");
                None
            }
        };
        let edge = Edge::new(
            config.edge.clone(),
            ActivitySource::from_upstreams(),
            store,
            upstreams(&config.upstreams, &config)?,
            upstreams(&config.order_api, &config)?,
            hook,
        );
        edge.reload_activities().await;
        let feed = match &config.redis_url {
            Some(url) => FlagFeed::Redis(url),
            None => FlagFeed::None,
        };
        let app = GatewayApp::with_edge(edge, feed, config.listen, metrics).await?;
        tracing::info!(listen = %app.local_addr(), upstreams = ?config.upstreams, "gateway ready");
        Ok(app)
    }

    /// A gateway over an edge built by the caller (the all-in-one binary's,
    /// with in-process upstreams): starts the edge's background work on
    /// `feed` and binds `listen`.
    pub async fn with_edge(
        edge: Arc<Edge>,
        feed: FlagFeed<'_>,
        listen: SocketAddr,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<GatewayApp> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let tasks = edge.start(feed);
        Ok(GatewayApp {
            listener,
            edge,
            metrics,
            tasks,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The edge.
    pub fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }

    /// Serves until `shutdown`, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) {
        let router = crate::http::router(Arc::clone(&self.edge), self.metrics);
        let settings = self.edge.settings();
        let limits = PortLimits {
            header_read_timeout: settings.header_read_timeout,
            max_connections: settings.max_connections,
            max_body_bytes: settings.max_body_bytes as u64,
            connection_rps: settings.connection_rps,
            ..PortLimits::new("gateway")
        };
        service_kit::http_server::serve(self.listener, router, limits, shutdown).await;
        for task in &self.tasks {
            task.abort();
        }
        tracing::info!("gateway stopped");
    }
}
