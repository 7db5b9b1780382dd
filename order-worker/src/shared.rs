//! What every task of a worker shares — its settings, the order store,
//! the stock store, the rate gate, the counters behind its stats, and
//! which queues each broker's member consumes now — held in one place
//! below the worker, its consumers and its handlers, so each of them uses
//! it without using the others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use broker::QueueRef;
use parking_lot::Mutex;
use seckill::StockStore;

use crate::order_store::OrderStore;
use crate::rate_gate::RateGate;
use crate::settings::WorkerSettings;

/// Counts since the worker started (the metrics carry the same, for
/// Prometheus; these are for the API and tests).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) inserted: AtomicU64,
    pub(crate) already_written: AtomicU64,
    pub(crate) conflicting: AtomicU64,
    pub(crate) over_stock: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) db_retries: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) timeouts_sent: AtomicU64,
}

/// What every task of a worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: WorkerSettings,
    pub(crate) orders: OrderStore,
    pub(crate) stock: StockStore,
    pub(crate) gate: RateGate,
    pub(crate) counters: Counters,
    /// The queues each broker's member is consuming right now.
    pub(crate) consuming: Mutex<BTreeMap<String, Vec<QueueRef>>>,
}

impl Shared {
    pub(crate) fn count(&self, counter: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        counter(&self.counters).fetch_add(n, Ordering::Relaxed);
    }
}
