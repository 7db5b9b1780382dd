//! The order worker.
//!
//! Planned (see `docs/ARCHITECTURE.md`): pulls orders from the broker at a
//! steady configured rate, writes them idempotently, serves the order API and
//! cancels unpaid orders, returning their stock. This crate holds no code yet.
