//! The worker: one member of the `order-worker` consumer group on every
//! broker it consumes from, writing orders at a steady rate.
//!
//! Brokers come from the registry (each seckill instance announces the
//! broker it hosts; the worker reaches it over HTTP) or are handed over
//! directly (the broker in this process, in the all-in-one binary). Per
//! broker the worker joins the group in clustering mode — several workers
//! split the queues and rebalance when one joins or dies — and runs one
//! task per queue it owns (see [`crate::consumer`]). All tasks share one
//! [`RateGate`] and one database pool.
//!
//! Stopping is graceful by default: tasks finish the batch in hand, commit
//! its offset and the worker leaves each group so its queues move at once.
//! [`OrderWorker::abort`] is the crash instead — tasks die wherever they
//! are, nothing is committed or left — which tests use to show that a
//! restart writes nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use broker::{ConsumerApi, QueueRef};
use parking_lot::Mutex;
use seckill::{BrokerRegistry, StockStore};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::run_member;
use crate::metrics::{BROKERS, RATE_LIMIT};
use crate::order_store::OrderStore;
use crate::rate_gate::RateGate;
pub use crate::settings::{DEFAULT_GROUP, WorkerSettings, default_member_id};
use crate::shared::{Counters, Shared};

/// A snapshot of [`OrderWorker::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WorkerStats {
    /// Orders written.
    pub inserted: u64,
    /// Redeliveries of orders already written (nothing changed).
    pub already_written: u64,
    /// Orders refused: the user holds another live order for the item.
    pub conflicting: u64,
    /// Orders refused by the database's stock guard.
    pub over_stock: u64,
    /// Messages given back to the retry topic.
    pub retried: u64,
    /// Messages that went to the dead-letter topic.
    pub dead_lettered: u64,
    /// Database calls retried after an error.
    pub db_retries: u64,
    /// Unpaid orders cancelled by their payment timeout.
    pub cancelled: u64,
    /// Payment timeouts scheduled.
    pub timeouts_sent: u64,
}

/// A broker being consumed: its member task, and how to stop it.
struct Membership {
    api: Arc<dyn ConsumerApi>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("stopping", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A running order worker.
#[derive(Debug)]
pub struct OrderWorker {
    shared: Arc<Shared>,
    brokers: Mutex<BTreeMap<String, Membership>>,
    stop: CancellationToken,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl OrderWorker {
    /// A worker writing into `orders`, returning stock to `stock`, with no
    /// brokers yet (add them with [`Self::add_broker`] or
    /// [`Self::watch_registry`]).
    pub fn new(settings: WorkerSettings, orders: OrderStore, stock: StockStore) -> Arc<Self> {
        let gate = RateGate::new(settings.rate_per_second);
        metrics::gauge!(RATE_LIMIT).set(f64::from(settings.rate_per_second));
        Arc::new(OrderWorker {
            shared: Arc::new(Shared {
                settings,
                orders,
                stock,
                gate,
                counters: Counters::default(),
                consuming: Mutex::new(BTreeMap::new()),
            }),
            brokers: Mutex::new(BTreeMap::new()),
            stop: CancellationToken::new(),
            watcher: Mutex::new(None),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &WorkerSettings {
        &self.shared.settings
    }

    /// The order store.
    pub fn orders(&self) -> &OrderStore {
        &self.shared.orders
    }

    /// The stock store.
    pub fn stock(&self) -> &StockStore {
        &self.shared.stock
    }

    /// Starts consuming from the broker `name` (its URL, or a name for the
    /// in-process one). A broker already consumed is left as it is.
    pub fn add_broker(&self, name: &str, api: Arc<dyn ConsumerApi>) {
        let mut brokers = self.brokers.lock();
        if brokers.contains_key(name) || self.stop.is_cancelled() {
            return;
        }
        let stop = self.stop.child_token();
        let task = tokio::spawn(run_member(
            Arc::clone(&self.shared),
            name.to_owned(),
            Arc::clone(&api),
            stop.clone(),
        ));
        brokers.insert(name.to_owned(), Membership { api, stop, task });
        metrics::gauge!(BROKERS).set(brokers.len() as f64);
        tracing::info!(broker = name, "consuming from broker");
    }

    /// Stops consuming from `name` gracefully (the batch in hand is
    /// finished and committed, the group left).
    pub async fn remove_broker(&self, name: &str) {
        let membership = {
            let mut brokers = self.brokers.lock();
            let membership = brokers.remove(name);
            metrics::gauge!(BROKERS).set(brokers.len() as f64);
            membership
        };
        if let Some(membership) = membership {
            membership.stop.cancel();
            let _ = membership.task.await;
            tracing::info!(broker = name, "stopped consuming from broker");
        }
    }

    /// The brokers being consumed, by name.
    pub fn brokers(&self) -> Vec<(String, Arc<dyn ConsumerApi>)> {
        self.brokers
            .lock()
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(&m.api)))
            .collect()
    }

    /// Follows `registry`: every live broker address is consumed over
    /// HTTP, presenting `broker_key`; one that drops out is stopped.
    /// Checked every `registry_refresh`.
    pub fn watch_registry(self: &Arc<Self>, registry: Arc<dyn BrokerRegistry>, broker_key: String) {
        let worker = Arc::clone(self);
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            loop {
                match registry.live().await {
                    Ok(live) => worker.follow(&live, &broker_key).await,
                    Err(e) => tracing::warn!(error = %e, "cannot read the broker registry"),
                }
                tokio::select! {
                    () = tokio::time::sleep(worker.shared.settings.registry_refresh) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
        *self.watcher.lock() = Some(task);
    }

    async fn follow(&self, live: &[String], broker_key: &str) {
        let live: BTreeSet<&String> = live.iter().collect();
        let known: Vec<String> = self.brokers.lock().keys().cloned().collect();
        for gone in known.iter().filter(|k| !live.contains(k)) {
            self.remove_broker(gone).await;
        }
        for address in live {
            if known.contains(address) {
                continue;
            }
            match broker::BrokerHttpClient::new(address, broker_key) {
                Ok(client) => self.add_broker(address, Arc::new(client)),
                Err(e) => tracing::warn!(error = %e, address, "ignoring a bad broker address"),
            }
        }
    }

    /// The queues this worker is consuming right now, per broker (its
    /// side of the group's assignment: a queue it lost stays here until
    /// the batch in hand is committed).
    pub fn consuming(&self) -> Vec<(String, QueueRef)> {
        self.shared
            .consuming
            .lock()
            .iter()
            .flat_map(|(name, queues)| queues.iter().map(|q| (name.clone(), q.clone())))
            .collect()
    }

    /// Counts since the start.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            inserted: get(&c.inserted),
            already_written: get(&c.already_written),
            conflicting: get(&c.conflicting),
            over_stock: get(&c.over_stock),
            retried: get(&c.retried),
            dead_lettered: get(&c.dead_lettered),
            db_retries: get(&c.db_retries),
            cancelled: get(&c.cancelled),
            timeouts_sent: get(&c.timeouts_sent),
        }
    }

    /// Graceful stop: every task finishes the batch in hand and commits
    /// it, then the worker leaves its groups.
    pub async fn stop(&self) {
        self.stop.cancel();
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.abort();
        }
        let names: Vec<String> = self.brokers.lock().keys().cloned().collect();
        for name in names {
            self.remove_broker(&name).await;
        }
    }

    /// The crash: every task dies where it is; nothing is committed and no
    /// group is left (the broker expires the member later).
    pub fn abort(&self) {
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.abort();
        }
        for (_, membership) in std::mem::take(&mut *self.brokers.lock()) {
            // Aborting the member task drops its queue tasks' guards,
            // which abort them too. The stop token is not used: a stop
            // would let tasks finish and commit, and a crash does not.
            membership.task.abort();
        }
        self.stop.cancel();
    }
}
