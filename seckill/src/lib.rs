//! The reservation service: the purchase side of the sale, built on the
//! `stock` crate (scripts, stores, keys, activities, flags).
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
//!
//! Under load, concurrent purchases of one item are coalesced
//! ([`coalescer`]): a batch's halves are one append, one
//! `lua/reserve_batch.lua` call decides all of them in arrival order, and
//! its commits and rollbacks are one write ([`HalfSentBatch`]). The single
//! path ([`ReservationPath::Single`]) stays, for study and comparison.
//!
//! A purchase over HTTP needs a purchase token, asked for once the sale is
//! open (after a [`quiz`] where the activity has one) and spent by the same
//! script call that reserves, so each token buys at most once.

pub mod app;
mod batch;
mod checker;
pub mod coalescer;
mod config;
mod flag_holder;
pub mod http;
pub mod metrics;
mod order_ids;
mod order_message;
mod purchase;
pub mod quiz;
mod registry;

pub use app::App;
pub use batch::{BatchAnswer, HalfSentBatch};
pub use checker::BuyerRecordChecker;
pub use coalescer::BatchLimits;
pub use config::SeckillConfig;
pub use flag_holder::FLAG_RESYNC_INTERVAL;
pub use order_ids::OrderIdGenerator;
pub use order_message::{
    ORDERS_TOPIC, OrderMessage, PAYMENT_TIMEOUT_QUEUES, PAYMENT_TIMEOUTS_TOPIC, PRODUCER_GROUP,
};
pub use purchase::{
    ORDER_QUEUES, PurchaseError, PurchaseOutcome, ReservationPath, Seckill, validate_user_id,
};
pub use registry::{
    BrokerRegistry, ENTRY_TTL, HEARTBEAT_INTERVAL, LocalRegistry, RedisRegistry, start_heartbeat,
};
// The stock side, which the purchase is built on, under the names the
// purchase side's users (the order worker, the all-in-one binary) know.
pub use stock::{
    Activities, Activity, BUYERS, EmbeddedScripts, FlagFeed, FlagHolder, HOLDER, ItemKeys,
    ItemStatus, LuaScript, MAX_BATCH, MAX_STOCK, PREWARM, Prewarm, RELEASE, RESERVE, RESERVE_BATCH,
    RESTOCK, RedisScripts, Release, Reply, Reservation, Restock, STATUS, ScriptRunner,
    SoldOutFlags, StockError as SeckillError, StockStore, Window, follow_embedded_flags,
    follow_redis_flags, validate_item_id,
};
