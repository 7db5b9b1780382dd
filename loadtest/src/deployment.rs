//! Auditing a deployment (the `replay --audit` path): the run went to a
//! gateway elsewhere, so the audit reads the same three places itself —
//! the stock store in Redis, the order database, and each seckill
//! instance's activities and broker (over its HTTP API) to know when the
//! workers have drained.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use broker::BrokerHttpClient;
use order_worker::{DEFAULT_GROUP, OrderStore};
use seckill::{Activity, ORDERS_TOPIC, RedisScripts, StockStore};

use crate::audit::{AuditInput, QueuedAnswer};
use crate::stack::collect_audit_input;

/// A deployment's stores and seckill instances.
#[derive(Debug)]
pub struct Deployment {
    seckills: Vec<String>,
    brokers: Vec<BrokerHttpClient>,
    store: StockStore,
    orders: OrderStore,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        axum::body::Body,
    >,
}

impl Deployment {
    /// Connects to Redis (`key_prefix` as the deployment's), the order
    /// database and the seckill instances at `seckills`.
    pub async fn connect(
        redis_url: &str,
        key_prefix: &str,
        database_url: &str,
        seckills: &[String],
    ) -> anyhow::Result<Self> {
        if seckills.is_empty() {
            anyhow::bail!("an audit needs at least one seckill URL (--seckill)");
        }
        let scripts = RedisScripts::connect(redis_url, 4)?;
        scripts.ping().await.context("cannot reach Redis")?;
        let orders = OrderStore::connect(database_url, 2)
            .await
            .context("cannot open the order database")?;
        let brokers = seckills
            .iter()
            .map(|url| BrokerHttpClient::new(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Deployment {
            seckills: seckills.to_vec(),
            brokers,
            store: StockStore::new(std::sync::Arc::new(scripts), key_prefix),
            orders,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        })
    }

    /// Every seckill instance's activities (their union).
    pub async fn activities(&self) -> anyhow::Result<Vec<Activity>> {
        let mut all = std::collections::BTreeMap::new();
        for url in &self.seckills {
            let uri: axum::http::Uri = format!("{}/admin/activities", url.trim_end_matches('/'))
                .parse()
                .with_context(|| format!("bad seckill URL {url}"))?;
            let response = self
                .http
                .get(uri)
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await?
                .to_bytes();
            let list: Vec<Activity> = serde_json::from_slice(&body)
                .with_context(|| format!("{url}/admin/activities is not a list of activities"))?;
            all.extend(list.into_iter().map(|a| (a.item.clone(), a)));
        }
        Ok(all.into_values().collect())
    }

    /// Orders not yet written: waiting in the brokers, or in open
    /// transactions.
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        let mut waiting = 0;
        for broker in &self.brokers {
            let lag = broker.lag().await?;
            let committed = |queue: u32| {
                lag.iter()
                    .find(|l| {
                        l.group == DEFAULT_GROUP && l.topic == ORDERS_TOPIC && l.queue_id == queue
                    })
                    .map_or(0, |l| l.committed)
            };
            for queue in broker.queue_stats().await? {
                if queue.topic == ORDERS_TOPIC {
                    waiting += queue.max_offset.saturating_sub(committed(queue.queue_id));
                }
            }
            waiting += broker.open_transactions().await? as u64;
        }
        Ok(waiting)
    }

    /// The deployment now, for the report's time series (`at_ms` from
    /// `start`): stock left and orders written over `activities`, and the
    /// brokers' backlog.
    pub async fn sample(
        &self,
        activities: &[Activity],
        start: Instant,
    ) -> anyhow::Result<crate::report::SystemSample> {
        let (mut stock_left, mut orders_written) = (0, 0);
        for activity in activities {
            stock_left += self.store.status(&activity.item).await?.stock.max(0);
            let counts = self.orders.item_counts(&activity.item).await?;
            orders_written += (counts.live_orders + counts.cancelled_orders).max(0) as u64;
        }
        Ok(crate::report::SystemSample {
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
        let activities = self.activities().await?;
        collect_audit_input(&self.store, &self.orders, &activities, answers).await
    }
}
