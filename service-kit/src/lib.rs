//! What every service binary shares, so each says it once and the same
//! way: typed settings from the environment ([`env_settings`]), logs and
//! the Prometheus recorder ([`telemetry`]), and the shutdown signal
//! ([`shutdown`]). It depends on no other crate of the project, so the
//! gateway, seckill, the order worker and the all-in-one binary can all
//! use it without pulling each other in.

pub mod env_settings;
pub mod shutdown;
pub mod telemetry;

pub use shutdown::shutdown_signal;
