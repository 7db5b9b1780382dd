//! The order worker.
//!
//! Built so far: the order store ([`OrderStore`]) — the database half of
//! the worker. Orders are written in batches, idempotently, with the
//! database itself refusing to sell more than an item's stock. Still to
//! come: the steady-rate consumer over the broker, the order API, payment
//! timeouts and reconciliation (see `docs/ARCHITECTURE.md`).

mod order_store;
mod schema;

pub use order_store::{
    BatchOutcome, CancelOutcome, ItemCounts, NewOrder, OrderRow, OrderStore, OrderStoreError,
    PayOutcome,
};
