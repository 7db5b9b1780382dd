//! The order message: what seckill enqueues in the broker for a reserved
//! unit, and what the order worker turns into an order row.
//!
//! It carries the item's stock from the activity so the worker's database
//! can enforce the limit on its own: even if the stock store lost its
//! state and sold too much, the database refuses orders past the stock.

use serde::{Deserialize, Serialize};

/// The broker topic orders go to.
pub const ORDERS_TOPIC: &str = "orders";
/// The delayed topic of payment timeouts: the order worker sends one per
/// written order, due when the order's payment window closes.
pub const PAYMENT_TIMEOUTS_TOPIC: &str = "order-timeouts";
/// Queues of the payment-timeout topic.
pub const PAYMENT_TIMEOUT_QUEUES: u32 = 4;
/// Producer group of the seckill service (whose checker the broker asks).
pub const PRODUCER_GROUP: &str = "seckill";

/// One reserved order (the message body, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMessage {
    /// Order id (also the message key, for lookups).
    pub order_id: String,
    /// Item bought.
    pub item: String,
    /// Buyer.
    pub user: String,
    /// When seckill created it (ms since the epoch).
    pub created_at_ms: i64,
    /// The item's total stock (initial plus restocks) as its activity
    /// says: the database's own no-oversell limit, independent of the
    /// stock store.
    pub item_stock: u64,
}

impl OrderMessage {
    /// The broker message carrying this order.
    pub fn to_message(&self) -> broker::Message {
        let body = serde_json::to_vec(self).expect("an order serializes");
        broker::Message::new(ORDERS_TOPIC, body)
            .with_key(self.order_id.clone())
            .with_tags(self.item.clone())
    }

    /// Reads an order back from a message body.
    pub fn from_body(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}
