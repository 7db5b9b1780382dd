//! The stock side of the sale: everything that decides and remembers how
//! many units are left, and nothing that queues an order.
//!
//! Every purchase is decided by one atomic Lua script (`lua/reserve.lua`)
//! in a stock store: real Redis ([`RedisScripts`]), or — with no services
//! installed — the same script file in an embedded Lua 5.1 over an
//! in-process keyspace ([`EmbeddedScripts`]). Both run the same scripts
//! through [`ScriptRunner`], so they cannot drift apart; a parity test runs
//! one sequence against both. [`StockStore`] is the typed API over either.
//!
//! Beside the stores: the item keys and their hash tag ([`ItemKeys`]), the
//! activities and their sale window ([`Activities`]), the versioned
//! sold-out flags ([`SoldOutFlags`]) and the followers that keep them in
//! step with the store's publications ([`follow_flags`]).
//!
//! It is its own crate so the edge (the gateway) can answer sold-out and
//! read the sale without compiling the purchase side and its broker.

mod activities;
mod embedded_store;
mod error;
mod flag_follower;
pub mod metrics;
mod redis_store;
mod reply;
mod scripts;
mod sold_out_flags;
mod stock_store;
mod store_keys;

pub use activities::{Activities, Activity, MAX_STOCK, Window};
pub use embedded_store::EmbeddedScripts;
pub use error::StockError;
pub use flag_follower::{
    FlagFeed, FlagHolder, follow_embedded_flags, follow_flags, follow_redis_flags, resync_every,
};
pub use redis_store::RedisScripts;
pub use reply::Reply;
pub use scripts::{
    BUYERS, HOLDER, LuaScript, PREWARM, RELEASE, RESERVE, RESERVE_BATCH, RESTOCK, STATUS,
};
pub use sold_out_flags::SoldOutFlags;
pub use stock_store::{
    ItemStatus, MAX_BATCH, Prewarm, Release, Reservation, Restock, ScriptRunner, StockStore,
};
pub use store_keys::{ItemKeys, flag_channel, validate_item_id, validate_user_id};
