//! Activities: what is on sale, how much, and when.
//!
//! An activity names an item, its stock, the per-user limit and the sale
//! window. It lives in this process; pre-warming copies its stock into the
//! stock store, which then decides every sale.

use std::collections::HashMap;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::StockError;
use crate::store_keys::validate_item_id;

/// Largest stock an activity may have.
pub const MAX_STOCK: u64 = 1_000_000_000;

/// One item on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// Item id (`[A-Za-z0-9_-]`, 1–64 characters).
    pub item: String,
    /// Units for sale.
    pub stock: u64,
    /// Orders one user may hold for this item. The buyer record keeps one
    /// order per user, so only 1 is supported.
    pub per_user_limit: u32,
    /// Whether a buyer answers a question before getting a purchase token
    /// (答题: keeps early bots out and spreads arrivals over seconds).
    #[serde(default)]
    pub quiz: bool,
    /// Sale opens (ms since the epoch).
    pub starts_at_ms: i64,
    /// Sale closes (ms since the epoch).
    pub ends_at_ms: i64,
}

impl Activity {
    /// Checks the fields fit together.
    pub fn validate(&self) -> Result<(), StockError> {
        validate_item_id(&self.item)?;
        if self.stock > MAX_STOCK {
            return Err(StockError::Invalid(format!(
                "stock must be at most {MAX_STOCK}"
            )));
        }
        if self.per_user_limit != 1 {
            return Err(StockError::Invalid(
                "per_user_limit must be 1: a user holds at most one order per item".into(),
            ));
        }
        if self.starts_at_ms >= self.ends_at_ms {
            return Err(StockError::Invalid(
                "starts_at_ms must be before ends_at_ms".into(),
            ));
        }
        Ok(())
    }
}

/// Where `now` falls relative to an activity's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Not open yet.
    NotStarted,
    /// Open.
    Open,
    /// Closed.
    Ended,
}

impl Activity {
    /// The window state at `now_ms`.
    pub fn window(&self, now_ms: i64) -> Window {
        if now_ms < self.starts_at_ms {
            Window::NotStarted
        } else if now_ms >= self.ends_at_ms {
            Window::Ended
        } else {
            Window::Open
        }
    }
}

/// The activities this process knows.
#[derive(Debug, Default)]
pub struct Activities {
    by_item: RwLock<HashMap<String, Activity>>,
}

impl Activities {
    /// Adds or replaces an activity.
    pub fn upsert(&self, activity: Activity) -> Result<(), StockError> {
        activity.validate()?;
        self.by_item.write().insert(activity.item.clone(), activity);
        Ok(())
    }

    /// Adds `units` to the stock of `item`'s activity (a restock), so
    /// later orders carry the new total. Returns the new stock, or `None`
    /// for an unknown item.
    pub fn add_stock(&self, item: &str, units: u64) -> Option<u64> {
        let mut by_item = self.by_item.write();
        let activity = by_item.get_mut(item)?;
        activity.stock = activity.stock.saturating_add(units);
        Some(activity.stock)
    }

    /// Where `now_ms` falls in `item`'s sale window, or `None` for an
    /// unknown item — without copying the activity (the edge's hot path).
    pub fn window_of(&self, item: &str, now_ms: i64) -> Option<Window> {
        self.by_item.read().get(item).map(|a| a.window(now_ms))
    }

    /// The activity of `item`.
    pub fn get(&self, item: &str) -> Option<Activity> {
        self.by_item.read().get(item).cloned()
    }

    /// Every activity.
    pub fn list(&self) -> Vec<Activity> {
        let mut all: Vec<Activity> = self.by_item.read().values().cloned().collect();
        all.sort_by(|a, b| a.item.cmp(&b.item));
        all
    }
}
