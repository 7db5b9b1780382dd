//! A log broker in the image of RocketMQ's store, small enough to read.
//!
//! Every order of the flash sale passes through it: the spike is written
//! here at disk speed and drained by the order workers at the database's
//! pace. The parts, each in its own module:
//!
//! | concept | module |
//! |---|---|
//! | record format (magic, CRC32C, every field) | [`record`] |
//! | commit log segments, roll, recovery scan | `commit_log` |
//! | consume queues (20-byte entries) | `consume_queue` |
//! | group commit / async flush | `group_commit` |
//! | checkpoint (torn tail vs corruption) | `checkpoint` |
//! | long polling | `long_poll` |
//! | tag filtering on pull | `tag_filter` |
//! | key index: messages by key | `key_index` |
//! | retention by age | `retention` |
//! | time lookup, offset reset (backtrack) | `time_lookup` |
//! | consumer groups, queue allocation | `consumer_groups` |
//! | committed offsets | `offsets` |
//! | topics | `topics` |
//! | on-disk names | `store_paths` |
//! | delayed messages: 18 levels and arbitrary delays | `delay_scheduler` |
//! | the broker's clock (driven by Tokio's, for tests) | `clock` |
//! | reserved topics and properties | [`system_topics`] |
//! | retry topic, dead letters, re-drive | `retry` |
//! | transactional half messages, check-back | `transactions` |
//! | the broker that ties them together | `broker` |
//! | requests and results shared by the library, the codec and the client | `types` |
//! | producer and queue selection | `producer` |
//! | the consumer trait (local or remote) | `consumer` |
//! | the local broker as a consumer | `local_consumer` |
//! | HTTP API (JSON admin, binary batches) | [`http_api`] |
//! | binary batch format of sends and pulls | [`wire`] |
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
    PullRequest, PullResult, PullStatus, QueueRef, QueueSelector, QueueStats, RecoveryReport,
    RetentionReport, RetryOutcome, SendResult, TopicConfig, TransactionChecker, TransactionState,
    queue_for_key,
};

pub use http_api::checker::HttpTransactionChecker;
pub use http_api::client::BrokerHttpClient;
pub use http_api::{ApiError, router};
