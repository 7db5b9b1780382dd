//! A log broker in the image of RocketMQ's store, small enough to read.
//!
//! Every order of the flash sale passes through it: the spike is written
//! here at disk speed and drained by the order workers at the database's
//! pace. The parts, each in its own module, in layers: each layer uses
//! only the ones below it.
//!
//! **Vocabulary** — no engine behind it; the codec and the client use only this.
//!
//! | concept | module |
//! |---|---|
//! | requests and results, queue selection, the checker contract | `types` |
//! | record format (magic, CRC32C, every field) | [`record`] |
//! | reserved topics and properties | [`system_topics`] |
//! | binary batch format of sends and pulls | [`wire`] |
//! | the consumer trait (local or remote) | `consumer` |
//!
//! **Storage core** — `store` is one type with `open` (recovery), `append`
//! and `read`, tested on its own; the rest are its parts.
//!
//! | concept | module |
//! |---|---|
//! | the storage core | `store` |
//! | the append path: records of many queues in one write | `store::append` |
//! | commit log segments, roll, recovery scan | `commit_log` |
//! | consume queues (20-byte entries) | `consume_queue` |
//! | a queue's visible length (what consumers may see) | `queues` |
//! | group commit / async flush | `group_commit` |
//! | checkpoint (torn tail vs corruption) | `checkpoint` |
//! | failure latch (a failed write is final) | `failure_latch` |
//! | disk-usage guard | `disk_guard` |
//! | key index: messages by key | `key_index` |
//! | topics | `topics` |
//! | on-disk names | `store_paths` |
//! | the broker's clock (driven by Tokio's, for tests) | `clock` |
//!
//! **Features** — each holds its own state and uses the core, never
//! another feature's fields.
//!
//! | concept | module |
//! |---|---|
//! | pulls: long polling, tag filtering | `pull`, `long_poll`, `tag_filter` |
//! | delayed messages: 18 levels and arbitrary delays | `delay_scheduler` |
//! | transactional half messages, check-back | `transactions` |
//! | ending transactions, one or a batch per write | `transactions::ending` |
//! | retry topic, dead letters, re-drive | `retry` |
//! | retention by age (features say what they still need) | `retention` |
//! | time lookup, offset reset (backtrack) | `time_lookup` |
//! | consumer groups, queue allocation | `consumer_groups` |
//! | committed offsets | `offsets` |
//!
//! **Façade and edges**
//!
//! | concept | module |
//! |---|---|
//! | the broker: every public method, wiring core and features | `broker` |
//! | producer | `producer` |
//! | the local broker as a consumer | `local_consumer` |
//! | HTTP API: router, JSON shapes, errors, handlers by area | [`http_api`] |
//! | HTTP client implementing the consumer trait | `http_api::client` |
//! | HTTP callback as a transaction checker | `http_api::checker` |
//! | metric names | [`metrics`] |
//!
//! ```no_run
//! # async fn demo() -> broker::Result<()> {
//! use broker::{Broker, BrokerConfig, Message, Producer, PullRequest, QueueSelector};
//!
//! let broker = Broker::open(BrokerConfig::new("/tmp/flashsale-broker"))?;
//! broker.create_topic("orders", 4)?;
//! let producer = Producer::new(broker.clone());
//! let sent = producer
//!     .send(Message::new("orders", "order 1").with_key("o-1"), QueueSelector::KeyHash)
//!     .await?;
//! let pulled = broker
//!     .pull(&PullRequest {
//!         group: "workers".into(),
//!         topic: "orders".into(),
//!         queue_id: sent.queue_id,
//!         offset: sent.queue_offset,
//!         max_messages: 32,
//!         max_bytes: 1 << 20,
//!         hold_ms: 15_000,
//!         tags: None,
//!         fence: None,
//!     })
//!     .await?;
//! broker.commit_offset("workers", "orders", sent.queue_id, pulled.next_offset)?;
//! broker.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod broker;
mod checkpoint;
mod clock;
mod commit_log;
mod config;
mod consume_queue;
mod consumer;
mod consumer_groups;
mod delay_scheduler;
mod disk_guard;
mod error;
mod failure_latch;
mod fs_util;
mod group_commit;
pub mod http_api;
mod key_index;
mod local_consumer;
mod long_poll;
pub mod metrics;
mod offsets;
mod producer;
mod pull;
mod queues;
pub mod record;
mod retention;
mod retry;
mod store;
mod store_paths;
pub mod system_topics;
mod tag_filter;
mod time_lookup;
mod topics;
mod transactions;
mod types;
pub mod wire;

pub use broker::Broker;
pub use config::{BrokerConfig, FlushMode};
pub use consume_queue::ENTRY_LEN as CONSUME_QUEUE_ENTRY_LEN;
pub use consumer::ConsumerApi;
pub use consumer_groups::allocate_averagely;
pub use delay_scheduler::{DELAY_LEVELS_MS, delay_level_ms};
pub use error::{BrokerError, Result};
pub use producer::Producer;
pub use record::{Message, StoredMessage};
pub use topics::{MAX_QUEUES, validate_topic_name};
pub use types::{
    Assignment, ConsumeMode, HalfMessage, HalfSendResult, JoinRequest, LagStats, OffsetReset,
    PullFence, PullRequest, PullResult, PullStatus, QueueRef, QueueSelector, QueueStats,
    RecoveryReport, RetentionReport, RetryOutcome, SendResult, TopicConfig, TransactionChecker,
    TransactionState, queue_for_key,
};

pub use http_api::checker::HttpTransactionChecker;
pub use http_api::client::BrokerHttpClient;
pub use http_api::{ApiError, router};
