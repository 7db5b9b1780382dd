//! The whole stack in this process, from the crates' libraries: the
//! broker, the stock store (embedded Lua, or Redis), seckill, an order
//! worker (SQLite, or PostgreSQL) and the gateway in front, served on a
//! loopback port — what the all-in-one binary serves and a replay hits
//! when no deployment is given, and what the audit can then inspect
//! directly.
//!
//! It is composed of each service's own `App` — seckill's, the worker's,
//! the gateway's, the ones their binaries run — so the stack serves what
//! a deployment serves, in-process where a deployment has a network.
//!
//! One shutdown token stops it ([`Stack::stop`], [`Stack::shutdown_token`]),
//! in the order a clean stop needs: the gateway and the stack's other
//! listeners stop accepting and finish their requests (each purchase ends
//! its transaction before answering); the worker finishes its batch,
//! commits its offsets and leaves its group; seckill drains, its followers
//! and heartbeat end, and its broker flushes, persists its offsets and
//! removes its abort marker, so the next open of its directory reports a
//! clean stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use broker::{Broker, BrokerConfig, FlushMode};
use gateway::app::GatewayApp;
use gateway::{ActivitySource, Edge, EdgeSettings, Upstream, Upstreams};
use loadtest::audit::{AuditInput, ItemFacts, OrderFact, QueuedAnswer};
use order_worker::app::WorkerApp;
use order_worker::http::WorkerAccess;
use order_worker::{DEFAULT_GROUP, OrderStore, OrderWorker, WorkerSettings};
use parking_lot::Mutex;
use seckill::{Activity, ORDERS_TOPIC, Seckill, SeckillConfig, StockStore};
use service_kit::access::{BuyerTokens, Keys};
use service_kit::http_server::PortLimits;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Open connections at most on a port served beside the stack (the live
/// page): a page and a few browsers, never a flood.
const BESIDE_CONNECTIONS: usize = 1_024;
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
    /// The buyer-token, admin and broker keys every part of the stack
    /// shares. [`StackConfig::embedded`] makes random ones.
    pub keys: Keys,
    /// The broker's flush. [`StackConfig::embedded`] (replays, tests)
    /// flushes on an interval; the served stack uses sync (group commit:
    /// a purchase is acknowledged once on disk), as deployed.
    pub flush: FlushMode,
}

impl StackConfig {
    /// Embedded defaults under `data_dir`: the gateway on a free loopback
    /// port, no other listeners, the worker capped at 1,000 orders/s, the
    /// broker flushing every 500 ms (a replay measures the sale, not this
    /// machine's fsync) with its disk guard on, and random keys.
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
            keys: Keys::random(),
            flush: FlushMode::async_default(),
        }
    }
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    addr: SocketAddr,
    /// Where seckill's own port (admin, the broker) and the order API are
    /// bound.
    seckill_addr: SocketAddr,
    worker_addr: SocketAddr,
    broker: Broker,
    store: StockStore,
    orders: OrderStore,
    seckill: Arc<Seckill>,
    worker: Arc<OrderWorker>,
    /// Mints tokens for the stack's buyers (the demo's and tests' users).
    buyers: BuyerTokens,
    /// The keys the stack was started with.
    keys: Keys,
    /// The stack's one shutdown token: cancelling it (here or through
    /// [`Stack::shutdown_token`]) stops everything, in order.
    shutdown: CancellationToken,
    /// Stage one of the stop: the gateway and every other listener of
    /// the stack's own (the live page) stop accepting and drain.
    edge_stop: CancellationToken,
    /// The gateway and the listeners served beside it, stopped together.
    servers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The stop in progress or done, with its outcome.
    stopping: tokio::sync::Mutex<Option<JoinHandle<anyhow::Result<()>>>>,
    /// Where the worker's consumer tasks run.
    _worker_runtime: WorkerRuntime,
}

/// The order worker's own runtime, on a thread of its own. In one process
/// with the gateway, seckill and a load generator, the worker's tasks
/// would otherwise wait in the same run queue as tens of thousands of
/// requests, and its steady rate would sag exactly during the spike it is
/// there to flatten; on its own thread the operating system gives it its
/// share of a core whatever the request load.
#[derive(Debug)]
struct WorkerRuntime(Option<tokio::runtime::Runtime>);

impl WorkerRuntime {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("order-worker")
            .enable_all()
            .build()
            .context("the worker's runtime")?;
        Ok(WorkerRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the stack")
            .handle()
            .clone()
    }
}

impl Drop for WorkerRuntime {
    fn drop(&mut self) {
        // Dropped from async code: a runtime must not block there.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Stack {
    /// Starts everything and pre-warms the items. Each service is its own
    /// `App` — the same that its binary runs — with the parts that must be
    /// shared in one process handed across: seckill's broker to the worker,
    /// its store to the worker and the gateway, its routes and the worker's
    /// as the gateway's in-process upstreams.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

        // Seckill, with its broker and the stock store (embedded or Redis).
        let mut broker_config = BrokerConfig::new(config.data_dir.join("broker"));
        broker_config.flush = config.flush;
        let seckill_app = seckill::App::build(
            SeckillConfig {
                listen: config.seckill_listen.unwrap_or(loopback),
                redis_url: config.redis_url.clone(),
                redis_pool_size: 32,
                key_prefix: config.key_prefix.clone(),
                broker: broker_config,
                keys: config.keys.clone(),
                ..SeckillConfig::embedded(config.data_dir.join("broker"))
            },
            None,
        )
        .await
        .context("seckill")?;
        let seckill = Arc::clone(seckill_app.seckill());
        let store = seckill.store().clone();
        let broker = seckill.broker().clone();
        for (item, stock) in &config.items {
            seckill.activities().upsert(Activity {
                item: item.clone(),
                stock: *stock,
                per_user_limit: 1,
                quiz: false,
                starts_at_ms: 0,
                ends_at_ms: i64::MAX,
            })?;
            store.prewarm(item, *stock).await?;
        }

        // The order worker, consuming this process's broker directly.
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
        // Its consumer tasks are spawned where `add_broker` runs: on the
        // worker's runtime.
        let worker_runtime = WorkerRuntime::start()?;
        {
            let (worker, broker) = (Arc::clone(&worker), broker.clone());
            worker_runtime
                .handle()
                .spawn(async move { worker.add_broker("local", Arc::new(broker)) })
                .await
                .context("starting the worker's consumers")?;
        }
        let worker_access = WorkerAccess::from_keys(&config.keys).map_err(anyhow::Error::msg)?;
        let worker_app = WorkerApp::with_worker(
            Arc::clone(&worker),
            config.worker_listen.unwrap_or(loopback),
            worker_access.clone(),
            PortLimits::new("order-api"),
            None,
        )
        .await?;

        // The gateway, with both services as in-process upstreams.
        let buyers = config.keys.buyer_tokens().map_err(anyhow::Error::msg)?;
        let edge = Edge::new(
            EdgeSettings {
                user_rps: config.user_rps,
                buyers: buyers.clone(),
                purchases: config.keys.purchase_tokens().map_err(anyhow::Error::msg)?,
                admin: config.keys.admin_key().map_err(anyhow::Error::msg)?,
                ..EdgeSettings::default()
            },
            ActivitySource::Shared(Arc::clone(seckill.activities())),
            Some(store.clone()),
            Upstreams::new(
                vec![Upstream::in_process("seckill", seckill_app.router())],
                Duration::from_secs(5),
            ),
            Upstreams::new(
                vec![Upstream::in_process(
                    "orders",
                    order_worker::http::router(Arc::clone(&worker), worker_access, None),
                )],
                Duration::from_secs(5),
            ),
            None,
        );
        let gateway_app =
            GatewayApp::with_edge(edge, seckill_app.flag_feed(), config.gateway_listen, None)
                .await?;
        let addr = gateway_app.local_addr();
        let (seckill_addr, worker_addr) = (seckill_app.local_addr(), worker_app.local_addr());

        // The stop, in order, when the one token is cancelled.
        let shutdown = CancellationToken::new();
        let edge_stop = CancellationToken::new();
        let (worker_stop, seckill_stop) = (CancellationToken::new(), CancellationToken::new());
        let gateway =
            tokio::spawn(gateway_app.run_until_stopped(edge_stop.clone().cancelled_owned()));
        let worker_served = worker_runtime
            .handle()
            .spawn(worker_app.run_until_stopped(worker_stop.clone().cancelled_owned()));
        let seckill_served =
            tokio::spawn(seckill_app.run_until_stopped(seckill_stop.clone().cancelled_owned()));
        let stack = Stack {
            addr,
            seckill_addr,
            worker_addr,
            broker,
            store,
            orders,
            seckill,
            worker,
            buyers,
            keys: config.keys.clone(),
            shutdown: shutdown.clone(),
            edge_stop: edge_stop.clone(),
            servers: Arc::new(Mutex::new(vec![gateway])),
            stopping: tokio::sync::Mutex::new(None),
            _worker_runtime: worker_runtime,
        };
        let servers = Arc::clone(&stack.servers);
        let stages = tokio::spawn(async move {
            shutdown.cancelled().await;
            // 1. The edge: no new requests; those in flight finish (each
            //    purchase ends its transaction before answering).
            edge_stop.cancel();
            let listeners: Vec<_> = std::mem::take(&mut *servers.lock());
            for listener in listeners {
                drain(listener).await;
            }
            // 2. The worker: the batch in hand is written and committed,
            //    the group left.
            worker_stop.cancel();
            let worker_result = worker_served.await.context("the worker task")?;
            // 3. Seckill: its API drains, followers and heartbeat end, the
            //    broker flushes, persists offsets and removes its marker.
            seckill_stop.cancel();
            let seckill_result = seckill_served.await.context("the seckill task")?;
            worker_result.context("order worker")?;
            seckill_result.context("seckill")?;
            Ok(())
        });
        *stack.stopping.try_lock().expect("not shared yet") = Some(stages);
        Ok(stack)
    }

    /// Serves `router` on `listen` beside the stack's own listeners:
    /// stopped and drained with them by [`Stack::stop`]. Returns the bound
    /// address.
    pub async fn serve_beside(
        &self,
        listen: SocketAddr,
        router: axum::Router,
    ) -> anyhow::Result<SocketAddr> {
        let (addr, server) = serve_router(listen, router, &self.edge_stop).await?;
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

    /// Where seckill's own port (admin and the broker API) is bound.
    pub fn seckill_addr(&self) -> SocketAddr {
        self.seckill_addr
    }

    /// Where the order API is bound.
    pub fn worker_addr(&self) -> SocketAddr {
        self.worker_addr
    }

    /// Mints and verifies the stack's buyer tokens.
    pub fn buyer_tokens(&self) -> &BuyerTokens {
        &self.buyers
    }

    /// The keys the stack was started with (for a client of its ports).
    pub fn keys(&self) -> &Keys {
        &self.keys
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
            open_transactions: self.broker.open_transactions() as u64,
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

    /// The stack's shutdown token: cancelling it stops the whole stack in
    /// the order of the module doc ([`Stack::stop`] also waits for it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops cleanly, in the order of the module doc, and waits until it
    /// is done; callable through any handle (later calls find it done).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let mut stopping = self.stopping.lock().await;
        match stopping.take() {
            Some(stages) => stages.await.context("the stop task")?,
            None => Ok(()),
        }
    }
}

/// Waits for a listener to drain; one that will not finish within
/// [`DRAIN_LIMIT`] is cut (its requests are the clients' to retry).
async fn drain(listener: JoinHandle<()>) {
    let abort = listener.abort_handle();
    if tokio::time::timeout(DRAIN_LIMIT, listener).await.is_err() {
        abort.abort();
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
    let limits = PortLimits::new("beside").with_max_connections(BESIDE_CONNECTIONS);
    let server = tokio::spawn(service_kit::http_server::serve(
        listener, router, limits, stop,
    ));
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
