//! Reconciliation: for one item, compare the three places an order lives
//! — the stock store's buyer records (what was reserved), the brokers
//! (what is still on its way: pending messages, open half messages, dead
//! letters) and the database (what was written) — and report every
//! difference.
//!
//! With `repair`, two kinds are fixed, and only these:
//! - a reservation whose order is nowhere (not in the database, not in any
//!   broker) is re-enqueued, with its original order id, so the worker
//!   writes it like any other order (idempotently);
//! - a reservation with no order behind it — the database cancelled it,
//!   or holds another live order of that user for the item — is given back
//!   with release.lua (which only acts while the buyer record still names
//!   that order).
//!
//! Everything else is reported, never "fixed" by copying one side over the
//! other: a database order without a reservation means the store lost
//! state, and overwriting the store from the database (or the reverse)
//! would hide that and could sell units twice.

use std::collections::HashMap;

use broker::system_topics::{HALF_TOPIC, dlq_topic, retry_topic};
use broker::{ConsumerApi, StoredMessage};
use seckill::{ORDERS_TOPIC, OrderMessage, validate_item_id};
use serde::Serialize;

use crate::order_store::{OrderStoreError, now_ms};
use crate::worker::OrderWorker;

/// Most copies of one order id looked at per broker.
const MAX_COPIES: usize = 16;

/// Why reconciliation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The item id is not valid.
    #[error("{0}")]
    InvalidItem(String),
    /// The stock store failed.
    #[error("stock store: {0}")]
    Store(#[from] seckill::SeckillError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] OrderStoreError),
    /// A broker failed.
    #[error("broker: {0}")]
    Broker(#[from] broker::BrokerError),
    /// A repair needs a broker and there is none.
    #[error("no broker to re-enqueue orders to")]
    NoBroker,
}

/// One difference between the store, the brokers and the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// Reserved in the store, but the order is in neither the database nor
    /// any broker. Repair: re-enqueue it.
    MissingOrder {
        /// Buyer.
        user: String,
        /// The reserved order.
        order_id: String,
    },
    /// The database cancelled the order but the store still holds its
    /// unit. Repair: release it.
    CancelledStillReserved {
        /// Buyer.
        user: String,
        /// The cancelled order.
        order_id: String,
    },
    /// The store holds a unit for an order the database will not have: the
    /// user's live order there is another one. Repair: release it.
    ReservedWithoutOrder {
        /// Buyer.
        user: String,
        /// The order the store names.
        order_id: String,
        /// The user's live order in the database.
        database_order_id: String,
    },
    /// The order was consumed from the broker but the database does not
    /// have it (its stock guard refused it). Reported only.
    RefusedByDatabase {
        /// Buyer.
        user: String,
        /// The order.
        order_id: String,
    },
    /// The order is in a dead-letter topic. Reported only (re-drive it
    /// through the broker's API).
    DeadLettered {
        /// Buyer.
        user: String,
        /// The order.
        order_id: String,
    },
    /// Only a half message exists: the purchase's transaction is still
    /// open, and the broker's check-back settles it. Reported only.
    InTransaction {
        /// Buyer.
        user: String,
        /// The order.
        order_id: String,
    },
    /// A live order in the database that no reservation in the store
    /// names: the store lost state. Reported only.
    OrderWithoutReservation {
        /// Buyer.
        user: String,
        /// The order.
        order_id: String,
    },
}

/// A repair that was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Repair {
    /// The order was sent to the broker again.
    Reenqueued {
        /// The order.
        order_id: String,
        /// The broker it went to.
        broker: String,
    },
    /// The reservation was given back (`released` false: the store no
    /// longer held it).
    Released {
        /// The order.
        order_id: String,
        /// Whether a unit came back.
        released: bool,
    },
}

/// The store's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreSide {
    /// Whether the item is in the store at all.
    pub warmed: bool,
    /// Units left.
    pub stock_left: i64,
    /// Reservations held.
    pub reservations: usize,
}

/// What reconciliation found (and did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// The item.
    pub item: String,
    /// The stock store.
    pub store: StoreSide,
    /// The database.
    pub database: crate::ItemCounts,
    /// Reservations whose order is still in a broker, not yet written.
    pub pending_in_broker: usize,
    /// Reservations whose order is in the database.
    pub matched: usize,
    /// Every difference.
    pub differences: Vec<Difference>,
    /// Repairs made (empty unless asked to repair).
    pub repairs: Vec<Repair>,
}

/// Where an order id was found in the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Whereabouts {
    Nowhere,
    Consumed,
    InTransaction,
    DeadLettered,
    Pending,
}

/// Compares store, brokers and database for `item`; with `repair`, fixes
/// what may be fixed (see the module doc).
pub async fn reconcile(
    worker: &OrderWorker,
    item: &str,
    repair: bool,
) -> Result<ReconcileReport, ReconcileError> {
    validate_item_id(item).map_err(|e| ReconcileError::InvalidItem(e.to_string()))?;
    let status = worker.stock().status(item).await?;
    let reservations = worker.stock().buyers(item).await?;
    let counts = worker.orders().item_counts(item).await?;
    let rows = worker.orders().orders_of_item(item).await?;
    let brokers = worker.brokers();
    let group = &worker.settings().group;

    let by_id: HashMap<&str, &crate::OrderRow> =
        rows.iter().map(|r| (r.order_id.as_str(), r)).collect();
    let live_by_user: HashMap<&str, &str> = rows
        .iter()
        .filter(|r| r.status != "cancelled")
        .map(|r| (r.user.as_str(), r.order_id.as_str()))
        .collect();
    let reserved_by_user: HashMap<&str, &str> = reservations
        .iter()
        .map(|(u, o)| (u.as_str(), o.as_str()))
        .collect();

    let mut report = ReconcileReport {
        item: item.to_owned(),
        store: StoreSide {
            warmed: status.warmed,
            stock_left: status.stock,
            reservations: reservations.len(),
        },
        database: counts,
        pending_in_broker: 0,
        matched: 0,
        differences: Vec::new(),
        repairs: Vec::new(),
    };
    let mut to_release: Vec<(String, String)> = Vec::new();
    let mut to_enqueue: Vec<(String, String)> = Vec::new();

    for (user, order_id) in &reservations {
        let (user_s, order_s) = (user.clone(), order_id.clone());
        match by_id.get(order_id.as_str()) {
            Some(row) if row.status != "cancelled" => report.matched += 1,
            Some(_) => {
                report.differences.push(Difference::CancelledStillReserved {
                    user: user_s,
                    order_id: order_s,
                });
                to_release.push((user.clone(), order_id.clone()));
            }
            None => match live_by_user.get(user.as_str()) {
                Some(other) => {
                    report.differences.push(Difference::ReservedWithoutOrder {
                        user: user_s,
                        order_id: order_s,
                        database_order_id: (*other).to_owned(),
                    });
                    to_release.push((user.clone(), order_id.clone()));
                }
                None => match locate(&brokers, group, order_id).await?.0 {
                    Whereabouts::Pending => report.pending_in_broker += 1,
                    Whereabouts::DeadLettered => {
                        report.differences.push(Difference::DeadLettered {
                            user: user_s,
                            order_id: order_s,
                        });
                    }
                    Whereabouts::InTransaction => {
                        report.differences.push(Difference::InTransaction {
                            user: user_s,
                            order_id: order_s,
                        });
                    }
                    Whereabouts::Consumed => {
                        report.differences.push(Difference::RefusedByDatabase {
                            user: user_s,
                            order_id: order_s,
                        });
                    }
                    Whereabouts::Nowhere => {
                        report.differences.push(Difference::MissingOrder {
                            user: user_s,
                            order_id: order_s,
                        });
                        to_enqueue.push((user.clone(), order_id.clone()));
                    }
                },
            },
        }
    }
    for row in rows.iter().filter(|r| r.status != "cancelled") {
        if reserved_by_user.get(row.user.as_str()) != Some(&row.order_id.as_str()) {
            report
                .differences
                .push(Difference::OrderWithoutReservation {
                    user: row.user.clone(),
                    order_id: row.order_id.clone(),
                });
        }
    }

    if repair {
        for (user, order_id) in to_release {
            let release = worker.stock().release(item, &user, &order_id).await?;
            report.repairs.push(Repair::Released {
                order_id,
                released: matches!(release, seckill::Release::Released { .. }),
            });
        }
        if !to_enqueue.is_empty() {
            let (name, api) = brokers.first().ok_or(ReconcileError::NoBroker)?;
            // The database's stock record wins; without one, the store's
            // total (units left plus units held).
            let item_stock = if counts.initial_stock > 0 {
                counts.initial_stock as u64
            } else {
                (status.stock.max(0) as u64) + reservations.len() as u64
            };
            for (user, order_id) in to_enqueue {
                let order = OrderMessage {
                    order_id: order_id.clone(),
                    item: item.to_owned(),
                    user,
                    created_at_ms: now_ms(),
                    item_stock,
                };
                api.send_by_key(vec![order.to_message()]).await?;
                report.repairs.push(Repair::Reenqueued {
                    order_id,
                    broker: name.clone(),
                });
            }
        }
    }
    Ok(report)
}

/// The order `order_id` if it is still waiting in a broker (not yet
/// consumed by the worker group), read from its message.
pub(crate) async fn pending_order(
    worker: &OrderWorker,
    order_id: &str,
) -> Result<Option<OrderMessage>, ReconcileError> {
    let brokers = worker.brokers();
    let (whereabouts, copy) = locate(&brokers, &worker.settings().group, order_id).await?;
    Ok(match (whereabouts, copy) {
        (Whereabouts::Pending, Some(copy)) => OrderMessage::from_body(&copy.message.body).ok(),
        _ => None,
    })
}

/// Where `order_id` is in the brokers, with the copy found there; the
/// most hopeful place wins (a pending copy beats a consumed one).
async fn locate(
    brokers: &[(String, std::sync::Arc<dyn ConsumerApi>)],
    group: &str,
    order_id: &str,
) -> Result<(Whereabouts, Option<StoredMessage>), ReconcileError> {
    let retry = retry_topic(group);
    let dlq = dlq_topic(group);
    let mut best = (Whereabouts::Nowhere, None);
    for (_, api) in brokers {
        let copies: Vec<StoredMessage> = api.messages_by_key(order_id, None, MAX_COPIES).await?;
        for copy in copies {
            let topic = copy.message.topic.as_str();
            let found = if topic == ORDERS_TOPIC || topic == retry {
                let committed = api
                    .committed_offset(group, topic, copy.queue_id)
                    .await?
                    .unwrap_or(0);
                if copy.queue_offset >= committed {
                    Whereabouts::Pending
                } else {
                    Whereabouts::Consumed
                }
            } else if topic == dlq {
                Whereabouts::DeadLettered
            } else if topic == HALF_TOPIC {
                Whereabouts::InTransaction
            } else {
                continue;
            };
            if found > best.0 {
                best = (found, Some(copy));
            }
        }
    }
    Ok(best)
}
