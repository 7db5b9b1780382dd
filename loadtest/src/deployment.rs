//! Auditing a deployment (the `replay --audit` path): the run went to a
//! gateway elsewhere, so the audit reads the same three places itself —
//! the stock keys in Redis, the order database's tables, and each seckill
//! instance's activities and broker (over their HTTP APIs) to know when
//! the workers have drained.
//!
//! Everything here is read only, and known by its outside: the key names
//! of `docs/ARCHITECTURE.md` (`<prefix>sk:{<item>}:stock`, `…:buyers`),
//! the `orders` table's columns, the JSON of `/api/activities` and the
//! broker's `/broker/stats/*` and `/broker/transactions`. The load tester
//! links no service crate and never creates or migrates a schema: a
//! deployment whose database has no `orders` table is an error to report,
//! not something to repair.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::audit::{AuditInput, ItemFacts, OrderFact, QueuedAnswer};
use crate::report::SystemSample;

/// The topic orders travel on, and the order workers' consumer group.
const ORDERS_TOPIC: &str = "orders";
const WORKER_GROUP: &str = "order-worker";

/// What the audit needs of an activity (`GET /api/activities`).
#[derive(Debug, Clone, Deserialize)]
pub struct ActivityFacts {
    /// Item.
    pub item: String,
    /// Its stock, restocks included.
    pub stock: u64,
}

/// One queue's length (`GET /broker/stats/queues`).
#[derive(Debug, Deserialize)]
struct QueueLength {
    topic: String,
    queue_id: u32,
    max_offset: u64,
}

/// One group's committed offset on one queue (`GET /broker/stats/lag`).
#[derive(Debug, Deserialize)]
struct CommittedOffset {
    group: String,
    topic: String,
    queue_id: u32,
    committed: u64,
}

/// `GET /broker/transactions`.
#[derive(Debug, Deserialize)]
struct OpenTransactions {
    open: usize,
}

/// A deployment's stores and seckill instances.
#[derive(Debug)]
pub struct Deployment {
    seckills: Vec<String>,
    redis: redis::aio::MultiplexedConnection,
    key_prefix: String,
    orders: PgPool,
    http: Client<HttpConnector, axum::body::Body>,
    /// `Bearer <broker key>`: the broker's stats need it.
    broker_authorization: Option<String>,
}

impl Deployment {
    /// Connects to Redis (`key_prefix` as the deployment's), the order
    /// database (PostgreSQL) and the seckill instances at `seckills`,
    /// whose broker stats are read with `broker_key`.
    pub async fn connect(
        redis_url: &str,
        key_prefix: &str,
        database_url: &str,
        seckills: &[String],
        broker_key: Option<&str>,
    ) -> anyhow::Result<Self> {
        if seckills.is_empty() {
            anyhow::bail!("an audit needs at least one seckill URL (--seckill)");
        }
        let redis = redis::Client::open(redis_url)
            .context("bad Redis URL")?
            .get_multiplexed_async_connection()
            .await
            .context("cannot reach Redis")?;
        let orders = PgPoolOptions::new()
            .max_connections(2)
            .connect(database_url)
            .await
            .context("cannot open the order database")?;
        sqlx::query("SELECT 1 FROM orders LIMIT 1")
            .fetch_optional(&orders)
            .await
            .context("the order database has no orders table (the workers create it)")?;
        Ok(Deployment {
            seckills: seckills.to_vec(),
            redis,
            key_prefix: key_prefix.to_owned(),
            orders,
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            broker_authorization: broker_key.map(|key| format!("Bearer {key}")),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let uri: axum::http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        let mut request = axum::http::Request::get(uri);
        if let Some(authorization) = &self.broker_authorization
            && path.starts_with("/broker/")
        {
            request = request.header(axum::http::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(axum::body::Body::empty())
            .with_context(|| format!("bad request for {url}"))?;
        let response = self
            .http
            .request(request)
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}");
        }
        serde_json::from_slice(&body).with_context(|| format!("{url} answered an unknown shape"))
    }

    /// Every seckill instance's activities (their union).
    pub async fn activities(&self) -> anyhow::Result<Vec<ActivityFacts>> {
        let mut all = BTreeMap::new();
        for url in &self.seckills {
            let list: Vec<ActivityFacts> = self.get_json(url, "/api/activities").await?;
            all.extend(list.into_iter().map(|a| (a.item.clone(), a)));
        }
        Ok(all.into_values().collect())
    }

    /// Orders not yet written: waiting in the brokers, or in open
    /// transactions.
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        let mut waiting = 0;
        for url in &self.seckills {
            let lag: Vec<CommittedOffset> = self.get_json(url, "/broker/stats/lag").await?;
            let committed = |queue: u32| {
                lag.iter()
                    .find(|l| {
                        l.group == WORKER_GROUP && l.topic == ORDERS_TOPIC && l.queue_id == queue
                    })
                    .map_or(0, |l| l.committed)
            };
            let queues: Vec<QueueLength> = self.get_json(url, "/broker/stats/queues").await?;
            for queue in queues.iter().filter(|q| q.topic == ORDERS_TOPIC) {
                waiting += queue.max_offset.saturating_sub(committed(queue.queue_id));
            }
            let open: OpenTransactions = self.get_json(url, "/broker/transactions").await?;
            waiting += open.open as u64;
        }
        Ok(waiting)
    }

    fn key(&self, item: &str, name: &str) -> String {
        format!("{}sk:{{{item}}}:{name}", self.key_prefix)
    }

    /// Units left of `item` in the store (-1 when it was never warmed).
    async fn stock_left(&self, item: &str) -> anyhow::Result<i64> {
        let left: Option<i64> = redis::cmd("GET")
            .arg(self.key(item, "stock"))
            .query_async(&mut self.redis.clone())
            .await
            .context("reading stock from Redis")?;
        Ok(left.unwrap_or(-1))
    }

    /// The store's reservations of `item`: user → order id.
    async fn reservations(&self, item: &str) -> anyhow::Result<BTreeMap<String, String>> {
        redis::cmd("HGETALL")
            .arg(self.key(item, "buyers"))
            .query_async(&mut self.redis.clone())
            .await
            .context("reading buyer records from Redis")
    }

    /// Every order row of `item`.
    async fn orders_of(&self, item: &str) -> anyhow::Result<Vec<OrderFact>> {
        let rows = sqlx::query(
            "SELECT order_id, user_id, status FROM orders WHERE item = $1 ORDER BY order_id",
        )
        .bind(item)
        .fetch_all(&self.orders)
        .await
        .context("reading orders")?;
        rows.iter()
            .map(|row| {
                Ok(OrderFact {
                    order_id: row.try_get("order_id")?,
                    user: row.try_get("user_id")?,
                    status: row.try_get("status")?,
                })
            })
            .collect()
    }

    /// Order rows of `item`, cancelled ones included.
    async fn orders_written(&self, item: &str) -> anyhow::Result<u64> {
        let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE item = $1")
            .bind(item)
            .fetch_one(&self.orders)
            .await
            .context("counting orders")?;
        Ok(written.max(0) as u64)
    }

    /// The deployment now, for the report's time series (`at_ms` from
    /// `start`): stock left and orders written over `activities`, and the
    /// brokers' backlog.
    pub async fn sample(
        &self,
        activities: &[ActivityFacts],
        start: Instant,
    ) -> anyhow::Result<SystemSample> {
        let (mut stock_left, mut orders_written) = (0, 0);
        for activity in activities {
            stock_left += self.stock_left(&activity.item).await?.max(0);
            orders_written += self.orders_written(&activity.item).await?;
        }
        Ok(SystemSample {
            open_transactions: 0,
            at_ms: start.elapsed().as_millis() as u64,
            stock_left,
            backlog: self.backlog().await?,
            orders_written,
        })
    }

    /// Waits for the backlog to reach zero (bounded).
    pub async fn drained(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let backlog = self.backlog().await?;
            if backlog == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{backlog} orders still waiting after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The audit's input for every activity.
    pub async fn audit_input(&self, answers: Vec<QueuedAnswer>) -> anyhow::Result<AuditInput> {
        let mut items = Vec::new();
        for activity in self.activities().await? {
            items.push(ItemFacts {
                stock: activity.stock as i64,
                store_stock_left: self.stock_left(&activity.item).await?,
                store_reservations: self.reservations(&activity.item).await?,
                orders: self.orders_of(&activity.item).await?,
                item: activity.item,
            });
        }
        Ok(AuditInput { items, answers })
    }
}
