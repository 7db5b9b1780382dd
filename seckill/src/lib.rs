//! The reservation service.
//!
//! Planned (see `docs/ARCHITECTURE.md`): one atomic Lua script per purchase
//! (real Redis or the same script in embedded Lua), the order enqueued as a
//! transactional half message in the bundled broker, sold-out flags
//! published the moment stock reaches zero. This crate holds no code yet.
