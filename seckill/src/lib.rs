//! The reservation service.
//!
//! Every purchase is decided by one atomic Lua script (`lua/reserve.lua`)
//! in a stock store: real Redis, or — with no services installed — the same
//! script file in an embedded Lua 5.1 over an in-process keyspace. Both
//! stores run the same scripts through [`ScriptRunner`], so they cannot
//! drift apart; a parity test runs one sequence against both.
//!
//! A purchase ([`Seckill::purchase`]) sends the order to the broker as a
//! transactional half message, runs the script, then commits or rolls
//! back; a crash in between is settled by the broker's check-back from the
//! buyer record ([`BuyerRecordChecker`]). Requests after a sell-out are
//! answered from this process's own [`SoldOutFlags`].

mod activities;
pub mod app;
mod checker;
mod config;
mod embedded_store;
pub mod env_settings;
mod error;
mod flag_follower;
pub mod http;
pub mod metrics;
mod order_ids;
mod order_message;
mod purchase;
mod redis_store;
mod registry;
mod reply;
mod scripts;
mod sold_out_flags;
mod stock_store;
mod store_keys;
pub mod telemetry;
mod throwaway_redis;

pub use activities::{Activities, Activity, MAX_STOCK, Window};
pub use app::App;
pub use checker::BuyerRecordChecker;
pub use config::SeckillConfig;
pub use embedded_store::EmbeddedScripts;
pub use error::SeckillError;
pub use flag_follower::{FlagHolder, follow_embedded_flags, follow_redis_flags};
pub use order_ids::OrderIdGenerator;
pub use order_message::{
    ORDERS_TOPIC, OrderMessage, PAYMENT_TIMEOUT_QUEUES, PAYMENT_TIMEOUTS_TOPIC, PRODUCER_GROUP,
};
pub use purchase::{ORDER_QUEUES, PurchaseError, PurchaseOutcome, Seckill, validate_user_id};
pub use redis_store::RedisScripts;
pub use registry::{
    BrokerRegistry, ENTRY_TTL, HEARTBEAT_INTERVAL, LocalRegistry, RedisRegistry, start_heartbeat,
};
pub use reply::Reply;
pub use scripts::{BUYERS, HOLDER, LuaScript, PREWARM, RELEASE, RESERVE, RESTOCK, STATUS};
pub use sold_out_flags::SoldOutFlags;
pub use stock_store::{
    ItemStatus, Prewarm, Release, Reservation, Restock, ScriptRunner, StockStore,
};
pub use store_keys::{FLAG_CHANNEL, ItemKeys, validate_item_id};
pub use throwaway_redis::ThrowawayRedis;
