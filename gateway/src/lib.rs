//! The edge of the flash-sale stack.
//!
//! Planned (see `docs/ARCHITECTURE.md`): sold-out flags answered locally so a
//! sold-out item never costs an upstream call, the sale time window, rate
//! limits, body and header limits, load shedding, and the proxy to seckill
//! instances. This crate holds no code yet; it exists so the workspace has
//! its final shape from the first commit.
