//! The transaction checker: the broker asks about a half message whose
//! commit never arrived (the process crashed between the script and the
//! commit, or the commit was lost).
//!
//! The stock store's buyer record is the truth: if the user holds exactly
//! this order id, the reservation happened and the order must be
//! committed; otherwise it never happened (or was given back) and the half
//! message must be rolled back. So a crash can neither lose a reserved
//! order nor invent one. If the store cannot be reached the answer is
//! "unknown" and the broker asks again later.

use async_trait::async_trait;
use broker::{HalfMessage, TransactionChecker, TransactionState};

use crate::order_message::OrderMessage;
use stock::StockStore;

/// Answers check-backs from the buyer records.
#[derive(Debug)]
pub struct BuyerRecordChecker {
    store: StockStore,
}

impl BuyerRecordChecker {
    /// A checker over `store`.
    pub fn new(store: StockStore) -> Self {
        BuyerRecordChecker { store }
    }
}

#[async_trait]
impl TransactionChecker for BuyerRecordChecker {
    async fn check(&self, half: &HalfMessage) -> TransactionState {
        let Ok(order) = OrderMessage::from_body(&half.message.body) else {
            tracing::error!(
                half_offset = half.half_offset,
                "a half message is not an order; rolling it back"
            );
            return TransactionState::Rollback;
        };
        match self.store.holder(&order.item, &order.user).await {
            Ok(Some(held)) if held == order.order_id => TransactionState::Commit,
            Ok(_) => TransactionState::Rollback,
            Err(e) => {
                tracing::warn!(error = %e, order_id = %order.order_id, "cannot check an order; will ask again");
                TransactionState::Unknown
            }
        }
    }
}
