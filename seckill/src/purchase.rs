//! The purchase: one request, one atomic decision, one transactional
//! enqueue.
//!
//! ```text
//! activity known? ── no ──▶ UnknownItem (404)
//! sale window?    ── no ──▶ NotStarted / Ended (403)
//! local flag?     ── yes ─▶ SoldOut            (no store, no broker)
//! send_half(order)                             (invisible to consumers)
//! reserve.lua ─▶ Queued    ─▶ commit   ─▶ Queued { order_id }
//!             ─▶ Duplicate ─▶ rollback ─▶ Duplicate { existing order }
//!             ─▶ SoldOut   ─▶ rollback ─▶ SoldOut (and raise the local flag)
//!             ─▶ (answer lost) ─▶ holder.lua: ours ─▶ commit ─▶ Queued
//!                                        other ─▶ rollback ─▶ Duplicate
//!                                        none  ─▶ half left open ─▶ 503
//! ```
//!
//! The half message goes first so that a crash after the script can never
//! lose an order: the broker finds the unresolved half and asks
//! [`crate::checker::BuyerRecordChecker`], which answers from the buyer
//! record. A crash before the script leaves a half with no buyer record,
//! which is rolled back. Either way, no order exists without a reservation
//! and no reservation without an order.
//!
//! This is the single path ([`ReservationPath::Single`]). The default
//! path coalesces concurrent purchases of an item into batches
//! ([`crate::coalescer`], [`crate::batch`]) that take the same steps, in
//! the same order, once per batch.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use broker::{Broker, BrokerError, TransactionState, queue_for_key};

use crate::SeckillError;
use crate::batch::HalfSentBatch;
use crate::checker::BuyerRecordChecker;
use crate::coalescer::{BatchLimits, Coalescer};
use crate::metrics::RESERVATIONS;
use crate::order_ids::OrderIdGenerator;
use crate::order_message::{
    ORDERS_TOPIC, OrderMessage, PAYMENT_TIMEOUT_QUEUES, PAYMENT_TIMEOUTS_TOPIC, PRODUCER_GROUP,
};
use stock::SoldOutFlags;
use stock::metrics::SCRIPT_SECONDS;
use stock::{Activities, Window};
use stock::{Release, Reservation, StockStore};

/// Queues of the orders topic when seckill creates it.
pub const ORDER_QUEUES: u32 = 8;

/// What a purchase request came to. Sold out and duplicate are outcomes,
/// not errors: they are the common path of a flash sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseOutcome {
    /// Reserved and enqueued.
    Queued {
        /// The new order.
        order_id: String,
    },
    /// The user already holds this order.
    Duplicate {
        /// The existing order.
        order_id: String,
    },
    /// Nothing left.
    SoldOut,
    /// The sale has not opened.
    NotStarted {
        /// When it opens (ms since the epoch).
        starts_at_ms: i64,
    },
    /// The sale is over.
    Ended {
        /// When it closed (ms since the epoch).
        ended_at_ms: i64,
    },
    /// The purchase token was spent already: nothing was decided.
    Reused,
}

/// Why a purchase could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    /// No activity for this item.
    #[error("unknown item {0:?}")]
    UnknownItem(String),
    /// The activity exists but its stock was never pre-warmed.
    #[error("item {0:?} is not pre-warmed into the stock store")]
    NotWarmed(String),
    /// Bad input (user id).
    #[error("{0}")]
    Invalid(String),
    /// The stock store failed.
    #[error(transparent)]
    Store(#[from] SeckillError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The batch this purchase was decided in failed before its script
    /// (its half messages could not be stored): nothing was reserved.
    #[error("{0}")]
    Batch(String),
}

/// The reservation service's core, shared by its HTTP handlers.
#[derive(Debug)]
pub struct Seckill {
    core: Arc<ReservationCore>,
    activities: Arc<Activities>,
    /// `None`: every purchase takes the single-request path.
    coalescer: Option<Coalescer>,
}

/// What deciding a purchase needs, shared with the batches the coalescer
/// runs in tasks of their own.
#[derive(Debug)]
pub(crate) struct ReservationCore {
    pub(crate) broker: Broker,
    pub(crate) store: StockStore,
    pub(crate) flags: Arc<SoldOutFlags>,
    pub(crate) ids: OrderIdGenerator,
}

/// How purchases reach the stock store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationPath {
    /// One half message, one script call and one commit per purchase: the
    /// classic path, kept for study and comparison.
    Single,
    /// Concurrent purchases of one item decided together (see
    /// [`crate::coalescer`]): the default.
    Coalesced(BatchLimits),
}

impl Default for ReservationPath {
    fn default() -> Self {
        ReservationPath::Coalesced(BatchLimits::default())
    }
}

/// User ids: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn validate_user_id(user: &str) -> Result<(), PurchaseError> {
    stock::validate_user_id(user).map_err(|e| match e {
        stock::StockError::Invalid(why) => PurchaseError::Invalid(why),
        other => PurchaseError::Store(other),
    })
}

impl Seckill {
    /// The service over `broker` and `store`, as node `node_id`, on the
    /// default (coalesced) reservation path. Creates the orders and
    /// payment-timeout topics if needed and registers the transaction
    /// checker.
    pub fn new(
        broker: Broker,
        store: StockStore,
        node_id: u16,
    ) -> Result<Arc<Self>, PurchaseError> {
        Self::with_path(broker, store, node_id, ReservationPath::default())
    }

    /// Like [`Seckill::new`], with purchases taking `path`.
    pub fn with_path(
        broker: Broker,
        store: StockStore,
        node_id: u16,
        path: ReservationPath,
    ) -> Result<Arc<Self>, PurchaseError> {
        if let ReservationPath::Coalesced(limits) = path {
            limits.validate().map_err(PurchaseError::Invalid)?;
        }
        if broker.topic(ORDERS_TOPIC).is_none() {
            broker.create_topic(ORDERS_TOPIC, ORDER_QUEUES)?;
        }
        if broker.topic(PAYMENT_TIMEOUTS_TOPIC).is_none() {
            broker.create_topic(PAYMENT_TIMEOUTS_TOPIC, PAYMENT_TIMEOUT_QUEUES)?;
        }
        broker.register_checker(
            PRODUCER_GROUP,
            Arc::new(BuyerRecordChecker::new(store.clone())),
        );
        let core = Arc::new(ReservationCore {
            broker,
            store,
            flags: Arc::new(SoldOutFlags::default()),
            ids: OrderIdGenerator::new(node_id)?,
        });
        let coalescer = match path {
            ReservationPath::Single => None,
            ReservationPath::Coalesced(limits) => Some(Coalescer::new(Arc::clone(&core), limits)),
        };
        Ok(Arc::new(Seckill {
            core,
            activities: Arc::new(Activities::default()),
            coalescer,
        }))
    }

    /// The broker this service enqueues into.
    pub fn broker(&self) -> &Broker {
        &self.core.broker
    }

    /// The stock store.
    pub fn store(&self) -> &StockStore {
        &self.core.store
    }

    /// This process's sold-out flags.
    pub fn flags(&self) -> &Arc<SoldOutFlags> {
        &self.core.flags
    }

    /// The path purchases take.
    pub fn path(&self) -> ReservationPath {
        self.coalescer
            .as_ref()
            .map_or(ReservationPath::Single, |c| {
                ReservationPath::Coalesced(c.limits())
            })
    }

    /// Sends the half messages of a batch of purchases of `item` by
    /// `users` (the first of a batch's three steps; see [`HalfSentBatch`]).
    /// The coalescer runs all three; this is for study and for tests that
    /// stop between them.
    pub async fn send_batch_halves(
        &self,
        item: &str,
        users: &[String],
    ) -> Result<HalfSentBatch, PurchaseError> {
        let activity = self
            .activities
            .get(item)
            .ok_or_else(|| PurchaseError::UnknownItem(item.to_owned()))?;
        for user in users {
            validate_user_id(user)?;
        }
        HalfSentBatch::send(&self.core, item, activity.stock, users.to_vec()).await
    }

    /// The activities on sale.
    pub fn activities(&self) -> &Arc<Activities> {
        &self.activities
    }

    /// One purchase attempt of `item` by `user`.
    pub async fn purchase(&self, item: &str, user: &str) -> Result<PurchaseOutcome, PurchaseError> {
        self.purchase_spending(item, user, None).await
    }

    /// [`Seckill::purchase`], spending the purchase token issued at
    /// `token_issued_us` in the same atomic step that reserves
    /// ([`PurchaseOutcome::Reused`] if it was spent already).
    pub async fn purchase_spending(
        &self,
        item: &str,
        user: &str,
        token_issued_us: Option<u64>,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        let result = self.decide(item, user, token_issued_us).await;
        let outcome = match &result {
            Ok(PurchaseOutcome::Queued { .. }) => "queued",
            Ok(PurchaseOutcome::Duplicate { .. }) => "duplicate",
            Ok(PurchaseOutcome::SoldOut) => "sold_out",
            Ok(PurchaseOutcome::NotStarted { .. }) => "not_started",
            Ok(PurchaseOutcome::Ended { .. }) => "ended",
            Ok(PurchaseOutcome::Reused) => "reused",
            Err(_) => "error",
        };
        metrics::counter!(RESERVATIONS, "outcome" => outcome).increment(1);
        result
    }

    async fn decide(
        &self,
        item: &str,
        user: &str,
        spend: Option<u64>,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        validate_user_id(user)?;
        let activity = self
            .activities
            .get(item)
            .ok_or_else(|| PurchaseError::UnknownItem(item.to_owned()))?;
        match activity.window(now_ms()) {
            Window::NotStarted => {
                return Ok(PurchaseOutcome::NotStarted {
                    starts_at_ms: activity.starts_at_ms,
                });
            }
            Window::Ended => {
                return Ok(PurchaseOutcome::Ended {
                    ended_at_ms: activity.ends_at_ms,
                });
            }
            Window::Open => {}
        }
        if self.core.flags.is_sold_out(item) {
            metrics::counter!(RESERVATIONS, "outcome" => "sold_out_local").increment(1);
            return Ok(PurchaseOutcome::SoldOut);
        }
        match &self.coalescer {
            Some(coalescer) => coalescer.purchase(item, user, spend, activity.stock).await,
            None => {
                self.core
                    .decide_one(item, user, spend, activity.stock)
                    .await
            }
        }
    }
}

impl ReservationCore {
    /// The single-request path: one half, one script call, one commit.
    async fn decide_one(
        &self,
        item: &str,
        user: &str,
        spend: Option<u64>,
        item_stock: u64,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        let order = OrderMessage {
            order_id: self.ids.next_id(),
            item: item.to_owned(),
            user: user.to_owned(),
            created_at_ms: now_ms(),
            item_stock,
        };
        let queues = self
            .broker
            .topic(ORDERS_TOPIC)
            .map_or(ORDER_QUEUES, |t| t.queues);
        let queue = queue_for_key(&order.order_id, queues);
        let half = self
            .broker
            .send_half(PRODUCER_GROUP, queue, order.to_message())
            .await?;
        let started = std::time::Instant::now();
        let reserved = self
            .store
            .reserve_spending(item, user, &order.order_id, spend)
            .await;
        metrics::histogram!(SCRIPT_SECONDS).record(started.elapsed().as_secs_f64());
        let reservation = match reserved {
            Ok(reservation) => reservation,
            Err(e) => {
                return self
                    .settle_unknown(item, user, &order.order_id, &half, e)
                    .await;
            }
        };
        if let Some(version) = sold_out_version(&reservation) {
            self.flags.apply(item, true, version);
        }
        let (state, outcome) = decided(item, reservation);
        if let Err(e) = self.broker.end_transaction(half.half_offset, state).await {
            // The reservation stands; the check-back will settle the half
            // from the buyer record, so the answer is still right.
            tracing::warn!(error = %e, order_id = %order.order_id, "ending the transaction failed; check-back will decide");
        }
        outcome
    }

    /// The script's answer was lost (a timeout, a dropped connection): it
    /// may or may not have run. The buyer record says which, as it would
    /// to the check-back — read it now, so a buyer whose unit was reserved
    /// is told `queued` instead of "retry" while the order is created
    /// anyway. A record naming this order: commit, `Queued`. Another
    /// order: that one is the buyer's, `Duplicate`. No record (or no
    /// answer): the script may still be on its way, so the half stays
    /// open for the check-back and the buyer is told to retry.
    async fn settle_unknown(
        &self,
        item: &str,
        user: &str,
        order_id: &str,
        half: &broker::HalfSendResult,
        error: SeckillError,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        let Some((state, outcome)) =
            settled_by_holder(order_id, self.store.holder(item, user).await)
        else {
            tracing::warn!(%error, order_id, "reserve failed and no buyer record yet; check-back will decide");
            return Err(error.into());
        };
        tracing::warn!(%error, order_id, "reserve's answer was lost; settled from the buyer record");
        if let Err(e) = self.broker.end_transaction(half.half_offset, state).await {
            tracing::warn!(error = %e, order_id, "ending the transaction failed; check-back will decide");
        }
        Ok(outcome)
    }
}

impl Seckill {
    /// Gives back `user`'s reservation `order_id` of `item` (a cancelled
    /// order). Idempotent; reopens the item here at once, and everywhere
    /// else through the store's publication.
    pub async fn release(
        &self,
        item: &str,
        user: &str,
        order_id: &str,
    ) -> Result<Release, PurchaseError> {
        let release = self.core.store.release(item, user, order_id).await?;
        if let Release::Released { flag_version, .. } = release {
            self.core.flags.apply(item, false, flag_version);
        }
        Ok(release)
    }

    /// Reads every activity's flag from the store and applies it: heals a
    /// missed publication (a process must never stay flagged sold out
    /// after stock came back, since a flagged item runs no script that
    /// could correct it).
    pub async fn resync_flags(&self) -> Result<(), PurchaseError> {
        for activity in self.activities.list() {
            let status = self.core.store.status(&activity.item).await?;
            if status.warmed {
                self.core
                    .flags
                    .apply(&activity.item, status.sold_out, status.flag_version);
            }
        }
        Ok(())
    }
}

/// The flag version to raise here when `reservation` sold the item out
/// (its last unit) or found it sold out.
pub(crate) fn sold_out_version(reservation: &Reservation) -> Option<i64> {
    match reservation {
        Reservation::Queued {
            stock_left: 0,
            flag_version,
            ..
        }
        | Reservation::SoldOut { flag_version } => Some(*flag_version),
        _ => None,
    }
}

/// What a reservation means for its half and its buyer.
pub(crate) fn decided(
    item: &str,
    reservation: Reservation,
) -> (TransactionState, Result<PurchaseOutcome, PurchaseError>) {
    match reservation {
        Reservation::Queued { order_id, .. } => (
            TransactionState::Commit,
            Ok(PurchaseOutcome::Queued { order_id }),
        ),
        Reservation::Duplicate { order_id } => (
            TransactionState::Rollback,
            Ok(PurchaseOutcome::Duplicate { order_id }),
        ),
        Reservation::SoldOut { .. } => (TransactionState::Rollback, Ok(PurchaseOutcome::SoldOut)),
        Reservation::NotWarmed => (
            TransactionState::Rollback,
            Err(PurchaseError::NotWarmed(item.to_owned())),
        ),
        Reservation::Reused => (TransactionState::Rollback, Ok(PurchaseOutcome::Reused)),
    }
}

/// What the buyer record read after a lost script answer says about the
/// purchase of `order_id`, as it would to the check-back: this order
/// (commit, queued), another (roll back, that one is the buyer's), or —
/// no record, or no answer — nothing yet (`None`: the half stays open).
pub(crate) fn settled_by_holder(
    order_id: &str,
    holder: Result<Option<String>, SeckillError>,
) -> Option<(TransactionState, PurchaseOutcome)> {
    match holder {
        Ok(Some(holder)) if holder == order_id => Some((
            TransactionState::Commit,
            PurchaseOutcome::Queued { order_id: holder },
        )),
        Ok(Some(holder)) => Some((
            TransactionState::Rollback,
            PurchaseOutcome::Duplicate { order_id: holder },
        )),
        Ok(None) | Err(_) => None,
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
