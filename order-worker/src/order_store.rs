//! The order store: orders in PostgreSQL (when `DATABASE_URL` says so) or
//! SQLite (the embedded default), through one sqlx `Any` pool and SQL that
//! both accept.
//!
//! A batch of orders is written in one transaction with one multi-row
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`: a redelivered message
//! inserts nothing, so at-least-once delivery gives exactly-once rows.
//! The new rows then take their units in `item_stock` with a conditional
//! update (`sold + n <= initial_stock`); past the stock, rows are removed
//! again and reported as over stock — the database's own no-oversell
//! guard, independent of Redis.

use std::collections::HashSet;
use std::sync::Once;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::schema::MIGRATOR;

/// Why the order store failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderStoreError {
    /// The database failed or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A URL that names neither PostgreSQL nor SQLite.
    #[error("unsupported database URL (use postgres:// or sqlite://)")]
    UnsupportedUrl,
    /// The schema could not be brought up to date.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An order that cannot be written whatever happens (bad fields).
    #[error("invalid order: {0}")]
    InvalidOrder(String),
}

type Result<T> = std::result::Result<T, OrderStoreError>;

/// An order to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Order id (primary key).
    pub order_id: String,
    /// Item.
    pub item: String,
    /// Buyer.
    pub user: String,
    /// When seckill created it.
    pub created_at_ms: i64,
    /// The item's total stock as the order's activity said; the item's
    /// stock record is raised to it (never lowered).
    pub item_stock: i64,
}

/// What a batch write did, order by order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Written now.
    pub inserted: Vec<String>,
    /// Already written (a redelivery): nothing changed.
    pub already_written: Vec<String>,
    /// Refused: the user already holds another live order for the item.
    pub conflicting: Vec<String>,
    /// Refused: the item's stock in the database is exhausted.
    pub over_stock: Vec<String>,
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    /// Order id.
    pub order_id: String,
    /// Item.
    pub item: String,
    /// Buyer.
    pub user: String,
    /// `created`, `paid` or `cancelled`.
    pub status: String,
    /// When seckill created it.
    pub created_at_ms: i64,
    /// When the worker wrote it.
    pub written_at_ms: i64,
    /// When it was paid.
    pub paid_at_ms: Option<i64>,
    /// When it was cancelled.
    pub cancelled_at_ms: Option<i64>,
}

/// The outcome of paying an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid now.
    Paid,
    /// Was paid already (paying is idempotent).
    AlreadyPaid,
    /// Too late: the order was cancelled.
    Cancelled,
    /// No such order.
    NotFound,
}

/// The outcome of cancelling an unpaid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled now; its unit went back to the item's stock.
    Cancelled {
        /// Item.
        item: String,
        /// Buyer.
        user: String,
    },
    /// Was cancelled already: nothing changed (a redelivered timeout).
    AlreadyCancelled,
    /// Paid: not cancelled.
    Paid,
    /// No such order.
    NotFound,
}

/// Counts of one item, for audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ItemCounts {
    /// Stock the item started with (plus restocks).
    pub initial_stock: i64,
    /// Units sold and not given back.
    pub sold: i64,
    /// Orders created or paid.
    pub live_orders: i64,
    /// Orders cancelled.
    pub cancelled_orders: i64,
}

/// Orders in a database.
#[derive(Debug, Clone)]
pub struct OrderStore {
    pool: AnyPool,
}

const ORDER_COLUMNS: &str =
    "order_id, item, user_id, status, created_at_ms, written_at_ms, paid_at_ms, cancelled_at_ms";

fn order_row(row: &sqlx::any::AnyRow) -> Result<OrderRow> {
    Ok(OrderRow {
        order_id: row.try_get("order_id")?,
        item: row.try_get("item")?,
        user: row.try_get("user_id")?,
        status: row.try_get("status")?,
        created_at_ms: row.try_get("created_at_ms")?,
        written_at_ms: row.try_get("written_at_ms")?,
        paid_at_ms: row.try_get("paid_at_ms")?,
        cancelled_at_ms: row.try_get("cancelled_at_ms")?,
    })
}

impl OrderStore {
    /// Connects to `url` (`postgres://…` or `sqlite://…?mode=rwc`) and
    /// applies the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(install_default_drivers);
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(OrderStoreError::UnsupportedUrl);
        }
        // SQLite allows one writer at a time; more connections only queue.
        let connections = if sqlite { 1 } else { max_connections.max(1) };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .connect(url)
            .await?;
        if sqlite {
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = OrderStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (see `schema`): sqlx's migrator takes an
    /// advisory lock on PostgreSQL, so several workers starting at once on
    /// one database take turns; SQLite's single connection and file lock do
    /// the same there.
    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Records an item's stock unless it is recorded already.
    pub async fn ensure_item(&self, item: &str, initial_stock: i64) -> Result<()> {
        sqlx::query("INSERT INTO item_stock (item, initial_stock, sold) VALUES ($1, $2, 0) ON CONFLICT (item) DO NOTHING")
            .bind(item)
            .bind(initial_stock)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes a batch of orders in one transaction (see the module doc).
    ///
    /// A batch costs a fixed number of statements, not a few per order:
    /// one upsert of the items' stock records, one multi-row insert, one
    /// lookup to classify what was not inserted, and one stock update per
    /// item — so a hot item's stock row is locked once per batch, not once
    /// per order.
    pub async fn write_batch(&self, batch: &[NewOrder]) -> Result<BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        if batch.is_empty() {
            return Ok(outcome);
        }
        // An order twice in one batch (a redelivery landing next to the
        // original) is written once; the copies count as already written.
        let mut seen = HashSet::new();
        let orders: Vec<&NewOrder> = batch
            .iter()
            .filter(|o| seen.insert(o.order_id.as_str()))
            .collect();
        if let Some(bad) = orders.iter().find(|o| o.item_stock < 0) {
            return Err(OrderStoreError::InvalidOrder(format!(
                "order {} has a negative item stock",
                bad.order_id
            )));
        }
        let written_at = now_ms();
        // Each item once, with the largest stock any of its orders names.
        let mut item_stock: Vec<(&str, i64)> = orders
            .iter()
            .map(|o| (o.item.as_str(), o.item_stock))
            .collect();
        item_stock.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        item_stock.dedup_by(|later, first| later.0 == first.0);
        let items: Vec<&str> = item_stock.iter().map(|(item, _)| *item).collect();
        let mut tx = self.pool.begin().await?;

        // 1. Every item gets a stock record, raised to what the orders say
        //    (a restock); an older message never lowers it.
        let values: Vec<String> = (0..item_stock.len())
            .map(|i| format!("(${}, ${}, 0)", 2 * i + 1, 2 * i + 2))
            .collect();
        let sql = format!(
            "INSERT INTO item_stock (item, initial_stock, sold) VALUES {}
             ON CONFLICT (item) DO UPDATE SET initial_stock = CASE
                WHEN excluded.initial_stock > item_stock.initial_stock THEN excluded.initial_stock
                ELSE item_stock.initial_stock END",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (item, stock) in &item_stock {
            query = query.bind(*item).bind(*stock);
        }
        query.execute(&mut *tx).await?;

        // 2. One insert for the batch; redeliveries and second live orders
        //    of a user insert nothing.
        let values: Vec<String> = (0..orders.len())
            .map(|i| {
                let p = i * 5 + 1;
                format!(
                    "(${p}, ${}, ${}, 'created', ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO orders (order_id, item, user_id, status, created_at_ms, written_at_ms)
             VALUES {} ON CONFLICT DO NOTHING RETURNING order_id",
            values.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for order in &orders {
            insert = insert
                .bind(order.order_id.as_str())
                .bind(order.item.as_str())
                .bind(order.user.as_str())
                .bind(order.created_at_ms)
                .bind(written_at);
        }
        let mut inserted = HashSet::new();
        for row in insert.fetch_all(&mut *tx).await? {
            inserted.insert(row.try_get::<String, _>("order_id")?);
        }

        // 3. What was not inserted: a redelivery (the id exists) or a
        //    user's second live order (it does not).
        let skipped: Vec<&str> = orders
            .iter()
            .map(|o| o.order_id.as_str())
            .filter(|id| !inserted.contains(*id))
            .collect();
        let mut existing = HashSet::new();
        if !skipped.is_empty() {
            let sql = format!(
                "SELECT order_id FROM orders WHERE order_id IN ({})",
                placeholders(1, skipped.len())
            );
            let mut query = sqlx::query(&sql);
            for id in &skipped {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                existing.insert(row.try_get::<String, _>("order_id")?);
            }
        }

        // 4. Stock, once per item: the new orders take their units if they
        //    are there; otherwise they take what is left, in batch order,
        //    and the rest are removed again.
        let mut over_stock = HashSet::new();
        for item in &items {
            let new: Vec<&NewOrder> = orders
                .iter()
                .copied()
                .filter(|o| o.item == *item && inserted.contains(&o.order_id))
                .collect();
            if new.is_empty() {
                continue;
            }
            let wanted = new.len() as i64;
            let took = sqlx::query(
                "UPDATE item_stock SET sold = sold + $1 WHERE item = $2 AND sold + $1 <= initial_stock",
            )
            .bind(wanted)
            .bind(*item)
            .execute(&mut *tx)
            .await?;
            if took.rows_affected() == 1 {
                continue;
            }
            // Not enough for all: take what is left. Another writer may take
            // units between the read and the update, so the update is
            // conditional too and the read is repeated until they agree
            // (the CHECK constraint would refuse an oversell regardless).
            let fits = loop {
                let row = sqlx::query(
                    "SELECT initial_stock - sold AS left_over FROM item_stock WHERE item = $1",
                )
                .bind(*item)
                .fetch_one(&mut *tx)
                .await?;
                let fits = row.try_get::<i64, _>("left_over")?.clamp(0, wanted);
                let took = sqlx::query(
                    "UPDATE item_stock SET sold = sold + $1 WHERE item = $2 AND sold + $1 <= initial_stock",
                )
                .bind(fits)
                .bind(*item)
                .execute(&mut *tx)
                .await?;
                if took.rows_affected() == 1 {
                    break fits as usize;
                }
            };
            for order in &new[fits..] {
                sqlx::query("DELETE FROM orders WHERE order_id = $1")
                    .bind(order.order_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                tracing::error!(order_id = %order.order_id, item, "the database refused an order over the item's stock");
                over_stock.insert(order.order_id.as_str());
            }
        }
        tx.commit().await?;

        let mut reported = HashSet::new();
        for order in batch {
            let id = order.order_id.clone();
            if !reported.insert(order.order_id.as_str()) {
                outcome.already_written.push(id);
            } else if over_stock.contains(order.order_id.as_str()) {
                outcome.over_stock.push(id);
            } else if inserted.contains(&order.order_id) {
                outcome.inserted.push(id);
            } else if existing.contains(&order.order_id) {
                outcome.already_written.push(id);
            } else {
                outcome.conflicting.push(id);
            }
        }
        Ok(outcome)
    }

    /// Marks an order paid (idempotent).
    pub async fn pay(&self, order_id: &str) -> Result<PayOutcome> {
        let done = sqlx::query("UPDATE orders SET status = 'paid', paid_at_ms = $1 WHERE order_id = $2 AND status = 'created'")
            .bind(now_ms())
            .bind(order_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(PayOutcome::Paid);
        }
        Ok(match self.order(order_id).await?.map(|o| o.status) {
            Some(status) if status == "paid" => PayOutcome::AlreadyPaid,
            Some(_) => PayOutcome::Cancelled,
            None => PayOutcome::NotFound,
        })
    }

    /// Cancels an order if it is still unpaid, returning its unit to the
    /// item's stock in the same transaction (idempotent).
    pub async fn cancel_unpaid(&self, order_id: &str) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE orders SET status = 'cancelled', cancelled_at_ms = $1
             WHERE order_id = $2 AND status = 'created' RETURNING item, user_id",
        )
        .bind(now_ms())
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match cancelled {
            Some(row) => {
                let item: String = row.try_get("item")?;
                let user: String = row.try_get("user_id")?;
                sqlx::query("UPDATE item_stock SET sold = sold - 1 WHERE item = $1 AND sold > 0")
                    .bind(&item)
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Cancelled { item, user }
            }
            None => {
                let status: Option<String> =
                    sqlx::query("SELECT status FROM orders WHERE order_id = $1")
                        .bind(order_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|row| row.try_get("status"))
                        .transpose()?;
                match status.as_deref() {
                    Some("paid") => CancelOutcome::Paid,
                    Some(_) => CancelOutcome::AlreadyCancelled,
                    None => CancelOutcome::NotFound,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// One order.
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(order_row).transpose()
    }

    /// A user's orders, oldest first.
    pub async fn orders_of_user(&self, user: &str) -> Result<Vec<OrderRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 ORDER BY created_at_ms, order_id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_row).collect()
    }

    /// Every order of an item, live and cancelled (for reconciliation).
    pub async fn orders_of_item(&self, item: &str) -> Result<Vec<OrderRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE item = $1 ORDER BY order_id"
        ))
        .bind(item)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_row).collect()
    }

    /// Stock and order counts of an item (zeros for an unknown item).
    pub async fn item_counts(&self, item: &str) -> Result<ItemCounts> {
        let stock = sqlx::query("SELECT initial_stock, sold FROM item_stock WHERE item = $1")
            .bind(item)
            .fetch_optional(&self.pool)
            .await?;
        let (initial_stock, sold) = match stock {
            Some(row) => (row.try_get("initial_stock")?, row.try_get("sold")?),
            None => (0, 0),
        };
        let counts = sqlx::query(
            "SELECT
                COALESCE(SUM(CASE WHEN status <> 'cancelled' THEN 1 ELSE 0 END), 0) AS live,
                COALESCE(SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END), 0) AS cancelled
             FROM orders WHERE item = $1",
        )
        .bind(item)
        .fetch_one(&self.pool)
        .await?;
        Ok(ItemCounts {
            initial_stock,
            sold,
            live_orders: counts.try_get("live")?,
            cancelled_orders: counts.try_get("cancelled")?,
        })
    }
}

/// `$first, $first+1, …` — `count` numbered placeholders. Written by hand
/// rather than with `QueryBuilder::push_values`: over the `Any` driver the
/// builder writes `?` placeholders, which PostgreSQL refuses (sqlx issue
/// 3000, open), while `$N` works on both databases.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
