//! The edge of the flash-sale stack: once an item is sold out, the spike
//! for it dies here — answered from a local flag in microseconds, without
//! touching seckill or Redis — and what does pass is rate-limited, bounded
//! and shed before it can pile up behind.
//!
//! - [`Edge`] — the state: versioned sold-out flags kept in step with the
//!   store (publications plus a periodic resync), activities for the sale
//!   window, the limits, the upstreams, the optional Lua hook.
//! - [`http::router`] — the routes and the order of the checks.
//! - [`upstream`] — pooled keep-alive forwarding with least-in-flight
//!   balancing, or an in-process router as the upstream.
//! - [`lua_hook`] — the OpenResty-style access script.

pub mod app;
pub mod config;
pub mod edge;
pub mod http;
pub mod lua_hook;
pub mod metrics;
pub mod upstream;

pub use edge::{ActivitySource, Edge, EdgeSettings};
pub use lua_hook::{HookRequest, LuaHook, Verdict};
pub use stock::FlagFeed;
pub use upstream::{Upstream, UpstreamError, Upstreams};
