//! A batch of purchases of one item, decided together in three steps.
//!
//! ```text
//! 1. send the halves      one append, one durable wait for the whole batch
//! 2. reserve_batch.lua    one script call decides every purchase, in order
//! 3. end the transactions one write of commits and rollbacks, one wait
//! ```
//!
//! Each step is the single path's step done once for many purchases, with
//! the same order of events per purchase — half before script, script
//! before commit — so the single path's crash argument holds for each
//! purchase of a batch: a crash after step 1 leaves halves whose buyer
//! records (written or not by step 2) tell the check-back what to do. The
//! script's answer is the only thing that may be lost in between; then
//! every purchase is settled from its buyer record, as a single one is.

use std::sync::Arc;

use broker::{Broker, HalfSendResult, TransactionState, queue_for_key};

use crate::SeckillError;
use crate::metrics::{BATCHED_PURCHASES, BATCHES};
use crate::order_message::{ORDERS_TOPIC, OrderMessage, PRODUCER_GROUP};
use crate::purchase::{
    ORDER_QUEUES, PurchaseError, PurchaseOutcome, ReservationCore, decided, now_ms,
    settled_by_holder, sold_out_version,
};
use stock::Reservation;
use stock::metrics::SCRIPT_SECONDS;

/// A batch whose half messages are stored (step 1 done): the purchases are
/// invisible to consumers and no unit is reserved yet.
#[derive(Debug)]
pub struct HalfSentBatch {
    core: Arc<ReservationCore>,
    item: String,
    orders: Vec<OrderMessage>,
    /// Each purchase's token issue time, spent by the script.
    spends: Vec<Option<u64>>,
    halves: Vec<HalfSendResult>,
}

/// What one purchase of a batch came to.
pub type BatchAnswer = Result<PurchaseOutcome, PurchaseError>;

impl HalfSentBatch {
    /// Step 1: an order id and a half message for each of `users`, stored
    /// with one append and one durable wait.
    pub(crate) async fn send(
        core: &Arc<ReservationCore>,
        item: &str,
        item_stock: u64,
        users: Vec<String>,
    ) -> Result<Self, PurchaseError> {
        let purchases = users.into_iter().map(|user| (user, None)).collect();
        Self::send_spending(core, item, item_stock, purchases).await
    }

    /// [`HalfSentBatch::send`] of `(user, purchase token issue time)`: the
    /// tokens are spent by the script in step 2.
    pub(crate) async fn send_spending(
        core: &Arc<ReservationCore>,
        item: &str,
        item_stock: u64,
        purchases: Vec<(String, Option<u64>)>,
    ) -> Result<Self, PurchaseError> {
        let (users, spends): (Vec<String>, Vec<Option<u64>>) = purchases.into_iter().unzip();
        if users.is_empty() || users.len() > stock::MAX_BATCH {
            return Err(PurchaseError::Invalid(format!(
                "a batch holds 1 to {} purchases, not {}",
                stock::MAX_BATCH,
                users.len()
            )));
        }
        let queues = core
            .broker
            .topic(ORDERS_TOPIC)
            .map_or(ORDER_QUEUES, |t| t.queues);
        let created_at_ms = now_ms();
        let orders: Vec<OrderMessage> = users
            .into_iter()
            .map(|user| OrderMessage {
                order_id: core.ids.next_id(),
                item: item.to_owned(),
                user,
                created_at_ms,
                item_stock,
            })
            .collect();
        let halves = orders
            .iter()
            .map(|order| (queue_for_key(&order.order_id, queues), order.to_message()))
            .collect();
        let halves = core.broker.send_half_batch(PRODUCER_GROUP, halves).await?;
        metrics::counter!(BATCHES).increment(1);
        metrics::counter!(BATCHED_PURCHASES).increment(orders.len() as u64);
        Ok(HalfSentBatch {
            core: Arc::clone(core),
            item: item.to_owned(),
            orders,
            spends,
            halves,
        })
    }

    /// The orders of the batch, in arrival order.
    pub fn orders(&self) -> &[OrderMessage] {
        &self.orders
    }

    /// Step 2: one script call decides every purchase, in order. Raises
    /// this process's flag when the batch sold the item out (or found it
    /// so).
    pub async fn reserve(&self) -> Result<Vec<Reservation>, SeckillError> {
        let purchases: Vec<(&str, &str, Option<u64>)> = self
            .orders
            .iter()
            .zip(&self.spends)
            .map(|(o, spend)| (o.user.as_str(), o.order_id.as_str(), *spend))
            .collect();
        let started = std::time::Instant::now();
        let reserved = self
            .core
            .store
            .reserve_batch_spending(&self.item, &purchases)
            .await;
        metrics::histogram!(SCRIPT_SECONDS).record(started.elapsed().as_secs_f64());
        if let Some(version) = reserved.iter().flatten().filter_map(sold_out_version).max() {
            self.core.flags.apply(&self.item, true, version);
        }
        reserved
    }

    /// Step 3: commits the reserved purchases and rolls back the others in
    /// one write, and answers each purchase. A lost script answer
    /// (`reserved` is an error) is settled per purchase from its buyer
    /// record; a purchase with no record yet keeps its half open for the
    /// check-back and is answered with the error.
    pub async fn end(self, reserved: Result<Vec<Reservation>, SeckillError>) -> Vec<BatchAnswer> {
        let decided: Vec<(Option<TransactionState>, BatchAnswer)> = match reserved {
            Ok(reservations) => reservations
                .into_iter()
                .map(|r| {
                    let (state, answer) = decided(&self.item, r);
                    (Some(state), answer)
                })
                .collect(),
            Err(error) => self.settle_from_buyer_records(&error).await,
        };
        let ends: Vec<(u64, TransactionState)> = decided
            .iter()
            .zip(&self.halves)
            .filter_map(|((state, _), half)| state.map(|s| (half.half_offset, s)))
            .collect();
        if !ends.is_empty()
            && let Err(e) = end_transactions(&self.core.broker, ends).await
        {
            // The reservations stand; the check-back settles the halves
            // from the buyer records, so the answers are still right.
            tracing::warn!(error = %e, item = %self.item, "ending a batch's transactions failed; check-back will decide");
        }
        decided.into_iter().map(|(_, answer)| answer).collect()
    }

    /// The script's answer was lost: it may or may not have run. Each
    /// buyer record says, as it would to the check-back.
    async fn settle_from_buyer_records(
        &self,
        error: &SeckillError,
    ) -> Vec<(Option<TransactionState>, BatchAnswer)> {
        tracing::warn!(%error, item = %self.item, purchases = self.orders.len(), "a batch's script answer was lost; settling from the buyer records");
        let holders = futures_util::future::join_all(
            self.orders
                .iter()
                .map(|order| self.core.store.holder(&self.item, &order.user)),
        )
        .await;
        self.orders
            .iter()
            .zip(holders)
            .map(
                |(order, holder)| match settled_by_holder(&order.order_id, holder) {
                    Some((state, outcome)) => (Some(state), Ok(outcome)),
                    None => (None, Err(PurchaseError::Store(error.clone()))),
                },
            )
            .collect()
    }
}

/// Every commit and rollback of a batch, in one write and one durable
/// wait. A half already settled (by the check-back, in a race) is not an
/// error of the others.
async fn end_transactions(
    broker: &Broker,
    ends: Vec<(u64, TransactionState)>,
) -> Result<(), broker::BrokerError> {
    for result in broker.end_transactions(ends).await? {
        if let Err(e) = result {
            tracing::warn!(error = %e, "ending one transaction of a batch failed; check-back will decide");
        }
    }
    Ok(())
}
