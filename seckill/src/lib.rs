//! The reservation service.
//!
//! Every purchase is decided by one atomic Lua script (`lua/reserve.lua`)
//! in a stock store: real Redis, or — with no services installed — the same
//! script file in an embedded Lua 5.1 over an in-process keyspace. Both
//! stores run the same scripts through [`ScriptRunner`], so they cannot
//! drift apart; a parity test runs one sequence against both.
//!
//! Built so far: the scripts, both stores and the typed [`StockStore`]
//! over them. The purchase endpoint, the transactional enqueue into the
//! broker, sold-out flags and activities come next (see
//! `docs/ARCHITECTURE.md`).

mod embedded_store;
mod error;
mod redis_store;
mod reply;
mod scripts;
mod stock_store;
mod store_keys;

pub use embedded_store::EmbeddedScripts;
pub use error::SeckillError;
pub use redis_store::RedisScripts;
pub use reply::Reply;
pub use scripts::{LuaScript, PREWARM, RELEASE, RESERVE, RESTOCK, STATUS};
pub use stock_store::{
    ItemStatus, Prewarm, Release, Reservation, Restock, ScriptRunner, StockStore,
};
pub use store_keys::{FLAG_CHANNEL, ItemKeys, validate_item_id};
