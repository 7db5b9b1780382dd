//! What every service binary shares, so each says it once and the same
//! way: who is asking ([`access`]: buyer tokens, admin and broker keys),
//! typed settings from the environment ([`env_settings`]), logs and
//! the Prometheus recorder ([`telemetry`]), the shutdown signal
//! ([`shutdown`]) and serving a port with every port's protections
//! ([`http_server`]). It depends on no other crate of the project, so the
//! gateway, seckill, the order worker and the all-in-one binary can all
//! use it without pulling each other in.

pub mod access;
pub mod env_settings;
pub mod http_server;
pub mod shutdown;
pub mod telemetry;

pub use shutdown::shutdown_signal;
