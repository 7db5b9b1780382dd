//! What the worker reads and sends: order messages from seckill (checked
//! before they reach the database) and its own delayed payment timeouts.
//!
//! A payment timeout goes to the broker the order came from, on the
//! `order-timeouts` topic, keyed by order id and due (`DELIVER_AT_MS`) when
//! the order's payment window closes — measured from the order's creation,
//! the time the buyer was promised. The worker consumes that topic in the
//! same group, so whichever worker owns the queue when it falls due
//! cancels the order if it is still unpaid.

use broker::Message;
use broker::system_topics::property;
use seckill::{OrderMessage, PAYMENT_TIMEOUTS_TOPIC, validate_item_id, validate_user_id};
use serde::{Deserialize, Serialize};

use crate::order_store::NewOrder;

/// Longest order id accepted (seckill's are far shorter).
pub const MAX_ORDER_ID_LEN: usize = 128;

/// Checks an order id: 1–128 characters of `[A-Za-z0-9_-]`.
pub fn validate_order_id(order_id: &str) -> Result<(), String> {
    if order_id.is_empty() || order_id.len() > MAX_ORDER_ID_LEN {
        return Err(format!(
            "an order id has 1 to {MAX_ORDER_ID_LEN} characters"
        ));
    }
    if !order_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("an order id has only letters, digits, '-' and '_'".into());
    }
    Ok(())
}

/// Reads an order message body into the row to write, or says why it
/// never can be (a poison message).
pub fn decode_order(body: &[u8]) -> Result<NewOrder, String> {
    let order = OrderMessage::from_body(body).map_err(|e| format!("not an order: {e}"))?;
    validate_order_id(&order.order_id)?;
    validate_item_id(&order.item).map_err(|e| e.to_string())?;
    validate_user_id(&order.user).map_err(|e| e.to_string())?;
    let item_stock = i64::try_from(order.item_stock)
        .map_err(|_| format!("item stock {} is out of range", order.item_stock))?;
    Ok(NewOrder {
        order_id: order.order_id,
        item: order.item,
        user: order.user,
        created_at_ms: order.created_at_ms,
        item_stock,
    })
}

/// "This order's payment window has closed": the body of a delayed
/// message on the payment-timeout topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentTimeout {
    /// The order.
    pub order_id: String,
    /// Its item (to return the unit to).
    pub item: String,
    /// Its buyer (whose reservation is released).
    pub user: String,
}

impl PaymentTimeout {
    /// The timeout of `order`.
    pub fn of(order: &NewOrder) -> Self {
        PaymentTimeout {
            order_id: order.order_id.clone(),
            item: order.item.clone(),
            user: order.user.clone(),
        }
    }

    /// The delayed message, due at `due_at_ms`.
    pub fn to_message(&self, due_at_ms: i64) -> Message {
        let body = serde_json::to_vec(self).expect("a timeout serializes");
        Message::new(PAYMENT_TIMEOUTS_TOPIC, body)
            .with_key(self.order_id.clone())
            .with_tags(self.item.clone())
            .with_property(property::DELIVER_AT_MS, due_at_ms.max(0).to_string())
    }

    /// Reads a timeout back, or says why it cannot be one.
    pub fn decode(body: &[u8]) -> Result<Self, String> {
        let timeout: PaymentTimeout =
            serde_json::from_slice(body).map_err(|e| format!("not a payment timeout: {e}"))?;
        validate_order_id(&timeout.order_id)?;
        validate_item_id(&timeout.item).map_err(|e| e.to_string())?;
        validate_user_id(&timeout.user).map_err(|e| e.to_string())?;
        Ok(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_checked_before_they_reach_the_database() {
        let good =
            br#"{"order_id":"o-1","item":"sku","user":"u1","created_at_ms":5,"item_stock":10}"#;
        let order = decode_order(good).unwrap();
        assert_eq!((order.item_stock, order.created_at_ms), (10, 5));
        for bad in [
            &b"not json"[..],
            br#"{"order_id":"o-1","item":"sku","user":"u1","created_at_ms":5}"#,
            br#"{"order_id":"","item":"sku","user":"u1","created_at_ms":5,"item_stock":1}"#,
            br#"{"order_id":"o 1","item":"sku","user":"u1","created_at_ms":5,"item_stock":1}"#,
            br#"{"order_id":"o-1","item":"s/k","user":"u1","created_at_ms":5,"item_stock":1}"#,
            br#"{"order_id":"o-1","item":"sku","user":"","created_at_ms":5,"item_stock":1}"#,
            br#"{"order_id":"o-1","item":"sku","user":"u1","created_at_ms":5,"item_stock":18446744073709551615}"#,
        ] {
            assert!(decode_order(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_timeout_round_trips_and_is_due_when_asked() {
        let timeout = PaymentTimeout {
            order_id: "o-1".into(),
            item: "sku".into(),
            user: "u1".into(),
        };
        let message = timeout.to_message(1_234);
        assert_eq!(message.key, "o-1");
        assert_eq!(message.properties[property::DELIVER_AT_MS], "1234");
        assert_eq!(PaymentTimeout::decode(&message.body).unwrap(), timeout);
        assert!(PaymentTimeout::decode(b"{}").is_err());
    }
}
