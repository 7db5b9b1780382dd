//! The order worker: turns the spike that landed in the broker into order
//! rows at a steady, configured rate, without ever writing an order twice
//! or losing one.
//!
//! - [`OrderStore`] — orders in PostgreSQL or SQLite, written in
//!   idempotent batches, with the database's own stock guard.
//! - [`OrderWorker`] — a consumer-group member on every broker (found in
//!   the registry or handed over), one task per owned queue, all sharing
//!   one token bucket ([`RateGate`]); offsets are committed after the
//!   database commit.
//! - Payment timeouts: each written order schedules a delayed message;
//!   an unpaid order is then cancelled and its stock returned
//!   (release.lua), idempotently.
//! - [`http::router`] — the order API (`/api/orders…`) and the
//!   reconciliation endpoint; [`reconcile`] compares the stock store, the
//!   broker and the database for an item and repairs what it may.

pub mod app;
pub mod config;
mod consumer;
mod handling;
pub mod http;
mod messages;
pub mod metrics;
mod order_store;
mod rate_gate;
pub mod reconcile;
mod retrying;
mod schema;
mod settings;
mod shared;
mod worker;

pub use messages::{MAX_ORDER_ID_LEN, PaymentTimeout, decode_order, validate_order_id};
pub use order_store::{
    BatchOutcome, CancelOutcome, ItemCounts, NewOrder, OrderRow, OrderStore, OrderStoreError,
    PayOutcome,
};
pub use rate_gate::RateGate;
pub use worker::{DEFAULT_GROUP, OrderWorker, WorkerSettings, WorkerStats, default_member_id};
