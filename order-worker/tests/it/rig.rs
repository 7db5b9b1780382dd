//! A worker's surroundings for tests: a broker in a temporary directory
//! (the real one, in this process), the embedded stock store, and an order
//! database — SQLite or a fresh PostgreSQL database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, ConsumerApi, Message};
use order_worker::{OrderStore, OrderWorker, WorkerSettings};
use seckill::{
    EmbeddedScripts, ORDER_QUEUES, ORDERS_TOPIC, OrderMessage, PAYMENT_TIMEOUT_QUEUES,
    PAYMENT_TIMEOUTS_TOPIC, StockStore,
};

use crate::helpers::{TestPostgres, TestSqlite, test_postgres, test_sqlite};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Sqlite,
    Postgres,
}

/// Keeps the test database alive (the one in use).
type DbGuard = (Option<TestSqlite>, Option<TestPostgres>);

pub(crate) struct Rig {
    pub(crate) broker: Broker,
    pub(crate) stock: StockStore,
    pub(crate) orders: OrderStore,
    pub(crate) db_url: String,
    _db: DbGuard,
    _dir: tempfile::TempDir,
}

/// Broker settings for tests: members expire after 1 s (so takeovers are
/// quick) and messages are retried `max_retries` times before the DLQ.
pub(crate) fn broker_config(dir: &std::path::Path, max_retries: u32) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.member_expiry = Duration::from_secs(1);
    config.max_reconsume_times = max_retries;
    config.max_disk_usage_ratio = 1.0;
    config
}

impl Rig {
    /// `None` when PostgreSQL is asked for and unavailable (the helper
    /// says so loudly, and fails under `FLASHSALE_REQUIRE_SERVICES=1`).
    pub(crate) async fn new(db: Db, max_retries: u32) -> Option<Rig> {
        let (guard, db_url): (DbGuard, String) = match db {
            Db::Sqlite => {
                let db = test_sqlite();
                let url = db.url.clone();
                ((Some(db), None), url)
            }
            Db::Postgres => {
                let db = test_postgres().await?;
                let url = db.url.clone();
                ((None, Some(db)), url)
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(broker_config(dir.path(), max_retries)).unwrap();
        broker.create_topic(ORDERS_TOPIC, ORDER_QUEUES).unwrap();
        broker
            .create_topic(PAYMENT_TIMEOUTS_TOPIC, PAYMENT_TIMEOUT_QUEUES)
            .unwrap();
        let stock = StockStore::new(Arc::new(EmbeddedScripts::new().unwrap()), "");
        let orders = OrderStore::connect(&db_url, 8).await.unwrap();
        Some(Rig {
            broker,
            stock,
            orders,
            db_url,
            _db: guard,
            _dir: dir,
        })
    }

    /// A worker (not yet consuming) with quick heartbeats and retries.
    pub(crate) fn worker(&self, member: &str, rate: u32) -> Arc<OrderWorker> {
        OrderWorker::new(
            self.settings(member, rate),
            self.orders.clone(),
            self.stock.clone(),
        )
    }

    pub(crate) fn settings(&self, member: &str, rate: u32) -> WorkerSettings {
        WorkerSettings {
            member: member.into(),
            rate_per_second: rate,
            pull_hold: Duration::from_millis(200),
            heartbeat_interval: Duration::from_millis(200),
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(200),
            ..WorkerSettings::default()
        }
    }

    /// A worker consuming from this rig's broker.
    pub(crate) fn start_worker(&self, member: &str, rate: u32) -> Arc<OrderWorker> {
        let worker = self.worker(member, rate);
        worker.add_broker("local", Arc::new(self.broker.clone()));
        worker
    }

    /// Enqueues `orders` as seckill would (keyed by order id).
    pub(crate) async fn enqueue(&self, orders: &[OrderMessage]) {
        for chunk in orders.chunks(1_000) {
            let messages: Vec<Message> = chunk.iter().map(OrderMessage::to_message).collect();
            ConsumerApi::send_by_key(&self.broker, messages)
                .await
                .unwrap();
        }
    }

    /// Waits until the group has committed every message of `topic`
    /// (bounded by `limit`; panics past it).
    pub(crate) async fn drained(&self, group: &str, topic: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let stats = self.broker.queue_stats();
            let done = stats.iter().filter(|q| q.topic == topic).all(|q| {
                q.max_offset == 0
                    || self.broker.committed_offset(group, topic, q.queue_id) == Some(q.max_offset)
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} not drained within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `check` every 50 ms until it holds (bounded by `limit`).
    pub(crate) async fn until<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !check().await {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Order `n` of `item` by user `u<n>`, with the item's stock.
pub(crate) fn order(n: usize, item: &str, item_stock: u64) -> OrderMessage {
    OrderMessage {
        order_id: format!("{item}-{n:06}"),
        item: item.into(),
        user: format!("u{n}"),
        created_at_ms: now_ms(),
        item_stock,
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
