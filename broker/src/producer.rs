//! The producer: picks a queue for each message and sends it.
//!
//! Queue selection is the producer's job, as in RocketMQ:
//! - `RoundRobin` spreads load evenly;
//! - `KeyHash` sends every message with the same key to the same queue, so
//!   messages of one key (one order, one user) are consumed in order;
//! - `Queue(n)` pins a queue explicitly.
//!
//! Four ways to send: `send` waits for the broker's durability setting,
//! `send_async` returns at once with a handle to await later (the send runs
//! on the runtime meanwhile), `send_oneway` does not wait for durability at
//! all, and `send_batch` appends many messages with one write and one flush.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::record::Message;
use crate::types::{QueueSelector, SendResult, queue_for_key};

/// Sends messages to a broker in this process.
#[derive(Debug)]
pub struct Producer {
    broker: Broker,
    next_queue: AtomicU32,
}

impl Producer {
    /// A producer for `broker`.
    pub fn new(broker: Broker) -> Self {
        Producer {
            broker,
            next_queue: AtomicU32::new(0),
        }
    }

    /// Sends one message and waits until it is as durable as the broker's
    /// flush mode promises.
    pub async fn send(&self, message: Message, selector: QueueSelector) -> Result<SendResult> {
        let queue_id = self.select(&message, selector)?;
        let mut results = self.broker.put(queue_id, vec![message]).await?;
        Ok(results.pop().expect("one result per message"))
    }

    /// Starts a send and returns at once; await the handle for the result.
    /// Must be called inside a Tokio runtime.
    pub fn send_async(
        &self,
        message: Message,
        selector: QueueSelector,
    ) -> JoinHandle<Result<SendResult>> {
        let queue = self.select(&message, selector);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let mut results = broker.put(queue?, vec![message]).await?;
            Ok(results.pop().expect("one result per message"))
        })
    }

    /// Fire and forget: appends without waiting for the flush. An error is
    /// still returned when the message could not be appended at all.
    pub fn send_oneway(&self, message: Message, selector: QueueSelector) -> Result<()> {
        let queue_id = self.select(&message, selector)?;
        self.broker.put_nowait(queue_id, vec![message]).map(|_| ())
    }

    /// Sends a batch of messages of one topic to one queue (chosen from the
    /// first message) with one write and one durability wait.
    pub async fn send_batch(
        &self,
        messages: Vec<Message>,
        selector: QueueSelector,
    ) -> Result<Vec<SendResult>> {
        let first = messages.first().ok_or_else(|| {
            BrokerError::InvalidArgument("a batch needs at least one message".into())
        })?;
        let queue_id = self.select(first, selector)?;
        self.broker.put(queue_id, messages).await
    }

    fn select(&self, message: &Message, selector: QueueSelector) -> Result<u32> {
        let queues = match self.broker.topic(&message.topic) {
            Some(topic) => topic.queues,
            None if self.broker.config().auto_create_topics => self.broker.config().default_queues,
            None => return Err(BrokerError::TopicNotFound(message.topic.clone())),
        };
        Ok(match selector {
            QueueSelector::RoundRobin => self.next_queue.fetch_add(1, Ordering::Relaxed) % queues,
            QueueSelector::KeyHash => queue_for_key(&message.key, queues),
            QueueSelector::Queue(id) => id,
        })
    }
}
