//! The whole stack in this process, from the crates' libraries: the
//! broker, the stock store (embedded Lua, or Redis), seckill, an order
//! worker (SQLite, or PostgreSQL) and the gateway in front, served on a
//! loopback port — what the all-in-one binary serves and a replay hits
//! when no deployment is given, and what the audit can then inspect
//! directly.
//!
//! One shutdown token stops it ([`Stack::stop`]), in the order a clean
//! stop needs: every listener stops accepting and finishes its requests
//! (each purchase ends its transaction before answering); the worker
//! finishes its batch, commits its offsets and leaves its group; the
//! followers end; the broker flushes, persists its offsets and removes its
//! abort marker, so the next open of its directory reports a clean stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use broker::{Broker, BrokerConfig, FlushMode};
use gateway::{ActivitySource, Edge, EdgeSettings, FlagFeed, Upstream, Upstreams};
use loadtest::audit::{AuditInput, ItemFacts, OrderFact, QueuedAnswer};
use order_worker::{DEFAULT_GROUP, OrderStore, OrderWorker, WorkerSettings};
use parking_lot::Mutex;
use seckill::{Activity, EmbeddedScripts, ORDERS_TOPIC, RedisScripts, Seckill, StockStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest wait for open connections to finish their requests at stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// What to start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where the broker's log and the SQLite file go.
    pub data_dir: PathBuf,
    /// Redis for the stock store; `None` = embedded.
    pub redis_url: Option<String>,
    /// Stock-key prefix (to share a Redis).
    pub key_prefix: String,
    /// The order database; `None` = SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Items on sale now, with their stock.
    pub items: Vec<(String, u64)>,
    /// The worker's write cap (orders/s; 0 = unlimited).
    pub worker_rate: u32,
    /// Per-user rate limit at the gateway (0 = off).
    pub user_rps: u32,
    /// Where the gateway listens (port 0: any free port).
    pub gateway_listen: SocketAddr,
    /// Where seckill's own API (admin and the broker's) listens, if at all.
    pub seckill_listen: Option<SocketAddr>,
    /// Where the order worker's API listens, if at all.
    pub worker_listen: Option<SocketAddr>,
    /// The broker's flush. [`StackConfig::embedded`] (replays, tests)
    /// flushes on an interval; the served stack uses sync (group commit:
    /// a purchase is acknowledged once on disk), as deployed.
    pub flush: FlushMode,
}

impl StackConfig {
    /// Embedded defaults under `data_dir`: the gateway on a free loopback
    /// port, no other listeners, the worker capped at 1,000 orders/s, the
    /// broker flushing every 500 ms (a replay measures the sale, not this
    /// machine's fsync) with its disk guard on.
    pub fn embedded(data_dir: impl Into<PathBuf>, items: Vec<(String, u64)>) -> Self {
        StackConfig {
            data_dir: data_dir.into(),
            redis_url: None,
            key_prefix: String::new(),
            database_url: None,
            items,
            worker_rate: 1_000,
            user_rps: 5,
            gateway_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seckill_listen: None,
            worker_listen: None,
            flush: FlushMode::async_default(),
        }
    }
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    addr: SocketAddr,
    broker: Broker,
    store: StockStore,
    orders: OrderStore,
    seckill: Arc<Seckill>,
    worker: Arc<OrderWorker>,
    /// Stops every listener.
    shutdown: CancellationToken,
    /// The listeners, each ending once drained after `shutdown`.
    servers: Mutex<Vec<JoinHandle<()>>>,
    /// Followers and other background work, ended at stop.
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Starts everything and pre-warms the items.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let mut broker_config = BrokerConfig::new(config.data_dir.join("broker"));
        broker_config.flush = config.flush;
        let broker = tokio::task::spawn_blocking(move || Broker::open(broker_config))
            .await?
            .context("the broker")?;
        let shutdown = CancellationToken::new();
        let mut servers = Vec::new();

        let mut tasks = Vec::new();
        let embedded = match &config.redis_url {
            Some(_) => None,
            None => Some(Arc::new(EmbeddedScripts::new()?)),
        };
        let store = match (&config.redis_url, &embedded) {
            (Some(url), _) => {
                let scripts = RedisScripts::connect(url, 32)?;
                scripts.ping().await.context("cannot reach Redis")?;
                StockStore::new(Arc::new(scripts), config.key_prefix.clone())
            }
            (None, Some(scripts)) => StockStore::new(scripts.clone(), config.key_prefix.clone()),
            (None, None) => unreachable!("embedded is set when Redis is not"),
        };
        let seckill = Seckill::new(broker.clone(), store.clone(), 1)?;
        let feed = match (&config.redis_url, &embedded) {
            (Some(url), _) => FlagFeed::Redis(url),
            (None, Some(scripts)) => FlagFeed::Embedded(scripts),
            (None, None) => FlagFeed::None,
        };
        tasks.extend(seckill.follow_flags(feed, seckill::FLAG_RESYNC_INTERVAL));
        for (item, stock) in &config.items {
            seckill.activities().upsert(Activity {
                item: item.clone(),
                stock: *stock,
                per_user_limit: 1,
                starts_at_ms: 0,
                ends_at_ms: i64::MAX,
            })?;
            store.prewarm(item, *stock).await?;
        }

        let database_url = config.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                config.data_dir.join("orders.db").display()
            )
        });
        let orders = OrderStore::connect(&database_url, 8)
            .await
            .context("the order database")?;
        let worker = OrderWorker::new(
            WorkerSettings {
                rate_per_second: config.worker_rate,
                pull_hold: Duration::from_millis(200),
                heartbeat_interval: Duration::from_millis(500),
                ..WorkerSettings::default()
            },
            orders.clone(),
            store.clone(),
        );
        worker.add_broker("local", Arc::new(broker.clone()));

        let edge = Edge::new(
            EdgeSettings {
                user_rps: config.user_rps,
                ..EdgeSettings::default()
            },
            ActivitySource::Shared(Arc::clone(seckill.activities())),
            Some(store.clone()),
            Upstreams::new(
                vec![Upstream::in_process(
                    "seckill",
                    seckill::http::router(Arc::clone(&seckill)),
                )],
                Duration::from_secs(5),
            ),
            Upstreams::new(
                vec![Upstream::in_process(
                    "orders",
                    order_worker::http::router(Arc::clone(&worker), None),
                )],
                Duration::from_secs(5),
            ),
            None,
        );
        let feed = match (&config.redis_url, &embedded) {
            (Some(url), _) => FlagFeed::Redis(url),
            (None, Some(scripts)) => FlagFeed::Embedded(scripts),
            (None, None) => FlagFeed::None,
        };
        tasks.extend(edge.start(feed));
        if let Some(listen) = config.seckill_listen {
            let router = seckill::http::router(Arc::clone(&seckill));
            servers.push(serve_router(listen, router, &shutdown).await?.1);
        }
        if let Some(listen) = config.worker_listen {
            let router = order_worker::http::router(Arc::clone(&worker), None);
            servers.push(serve_router(listen, router, &shutdown).await?.1);
        }
        let listener = TcpListener::bind(config.gateway_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.gateway_listen))?;
        let addr = listener.local_addr()?;
        let timeout = edge.settings().header_read_timeout;
        let gateway = gateway::http::router(edge, None);
        servers.push(tokio::spawn(gateway::server::serve(
            listener,
            gateway,
            timeout,
            shutdown.clone().cancelled_owned(),
        )));
        Ok(Stack {
            addr,
            broker,
            store,
            orders,
            seckill,
            worker,
            shutdown,
            servers: Mutex::new(servers),
            tasks,
        })
    }

    /// Serves `router` on `listen` beside the stack's own listeners:
    /// stopped and drained with them by [`Stack::stop`]. Returns the bound
    /// address.
    pub async fn serve_beside(
        &self,
        listen: SocketAddr,
        router: axum::Router,
    ) -> anyhow::Result<SocketAddr> {
        let (addr, server) = serve_router(listen, router, &self.shutdown).await?;
        self.servers.lock().push(server);
        Ok(addr)
    }

    /// The items on sale, with their activities.
    pub fn activities(&self) -> Vec<Activity> {
        self.seckill.activities().list()
    }

    /// The stock store.
    pub fn store(&self) -> &StockStore {
        &self.store
    }

    /// The gateway's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The order worker.
    pub fn worker(&self) -> &Arc<OrderWorker> {
        &self.worker
    }

    /// Messages not yet written by the worker: orders waiting in the
    /// broker plus purchases still in an open transaction.
    pub fn backlog(&self) -> u64 {
        let waiting: u64 = self
            .broker
            .queue_stats()
            .iter()
            .filter(|q| q.topic == ORDERS_TOPIC)
            .map(|q| {
                let committed = self
                    .broker
                    .committed_offset(DEFAULT_GROUP, ORDERS_TOPIC, q.queue_id)
                    .unwrap_or(0);
                q.max_offset.saturating_sub(committed)
            })
            .sum();
        waiting + self.broker.open_transactions() as u64
    }

    /// The system now, for the report's time series (`at_ms` from `start`).
    pub async fn sample(&self, start: Instant) -> anyhow::Result<loadtest::report::SystemSample> {
        let mut stock_left = 0;
        for activity in self.seckill.activities().list() {
            stock_left += self.store.status(&activity.item).await?.stock.max(0);
        }
        Ok(loadtest::report::SystemSample {
            at_ms: start.elapsed().as_millis() as u64,
            stock_left,
            backlog: self.backlog(),
            orders_written: self.worker.stats().inserted,
        })
    }

    /// Waits until the backlog is zero (bounded by `limit`).
    pub async fn drained(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.backlog() > 0 {
            if Instant::now() > deadline {
                anyhow::bail!("{} messages still waiting after {limit:?}", self.backlog());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The audit's view of the items on sale, with `answers` from a replay.
    pub async fn audit_input(&self, answers: Vec<QueuedAnswer>) -> anyhow::Result<AuditInput> {
        collect_audit_input(
            &self.store,
            &self.orders,
            &self.seckill.activities().list(),
            answers,
        )
        .await
    }

    /// Stops cleanly, in the order of the module doc; callable through
    /// any handle, once (later calls find nothing left to stop).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let servers: Vec<_> = std::mem::take(&mut *self.servers.lock());
        for server in servers {
            // A connection that will not finish within the limit is cut:
            // its request is the client's to retry.
            let abort = server.abort_handle();
            if tokio::time::timeout(DRAIN_LIMIT, server).await.is_err() {
                abort.abort();
            }
        }
        self.worker.stop().await;
        for task in &self.tasks {
            task.abort();
        }
        self.broker.shutdown().await.context("broker shutdown")?;
        Ok(())
    }
}

/// Serves `router` on `listen` until `shutdown`, then drains.
async fn serve_router(
    listen: SocketAddr,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let stop = shutdown.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %e, %addr, "server failed");
        }
    });
    Ok((addr, server))
}

/// The audit's view of `activities` in a stock store and an order
/// database, with `answers` from a replay — in this process or a
/// deployment alike.
pub async fn collect_audit_input(
    store: &StockStore,
    orders: &OrderStore,
    activities: &[Activity],
    answers: Vec<QueuedAnswer>,
) -> anyhow::Result<AuditInput> {
    let mut items = Vec::new();
    for activity in activities {
        let status = store.status(&activity.item).await?;
        let reservations = store.buyers(&activity.item).await?;
        let rows = orders.orders_of_item(&activity.item).await?;
        items.push(ItemFacts {
            item: activity.item.clone(),
            stock: activity.stock as i64,
            store_stock_left: status.stock,
            store_reservations: reservations.into_iter().collect(),
            orders: rows
                .into_iter()
                .map(|o| OrderFact {
                    order_id: o.order_id,
                    user: o.user,
                    status: o.status,
                })
                .collect(),
        });
    }
    Ok(AuditInput { items, answers })
}
