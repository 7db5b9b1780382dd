//! The order database's schema: the versioned migrations in
//! `order-worker/migrations/`, embedded at build time by `sqlx::migrate!`
//! and applied by sqlx's migrator (recorded in `_sqlx_migrations`, each
//! checked against its checksum; on PostgreSQL under an advisory lock, so
//! workers starting together on one database take turns).
//!
//! The same SQL runs on PostgreSQL and SQLite:
//!
//! - `item_stock` holds each item's stock and how much is sold, with
//!   CHECK constraints: the database itself refuses to oversell, whatever
//!   happened to Redis.
//! - `orders` has the order id as primary key (redelivered messages are
//!   no-ops) and a unique index on (item, user) over orders that are not
//!   cancelled: one live order per user per item, and a user whose unpaid
//!   order was cancelled may buy again.

use sqlx::migrate::Migrator;

/// Every migration, in version order.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
