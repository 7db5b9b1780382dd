//! Names the broker reserves for itself: system topics and the message
//! properties its features use, in one place (the RocketMQ names are given
//! where ours differ).
//!
//! Topics starting with `%` are the broker's own. Ordinary producers may not
//! send to them; the delay, retry and transaction machinery does. The two
//! rules every such feature shares live here too: what a producer may not
//! write (`check_user_message`), and how a message parked in a system
//! topic names its real destination (`restore_real`).

use crate::error::{BrokerError, Result};
use crate::record::Message;

/// Delayed messages wait here until due (RocketMQ: `SCHEDULE_TOPIC_XXXX`).
/// One queue, whatever the delays: the due time lives in the consume-queue
/// entry's tag-hash field, as in RocketMQ's schedule topic.
pub const DELAY_TOPIC: &str = "%DELAY%";
/// Transactional half messages (RocketMQ: `RMQ_SYS_TRANS_HALF_TOPIC`).
pub const HALF_TOPIC: &str = "%HALF%";
/// Commit/rollback records of half messages (RocketMQ: `RMQ_SYS_TRANS_OP_HALF_TOPIC`).
pub const HALF_OP_TOPIC: &str = "%HALF_OP%";

/// The retry topic of a consumer group.
pub fn retry_topic(group: &str) -> String {
    format!("%RETRY%{group}")
}

/// The dead-letter topic of a consumer group.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// True for topics only the broker itself writes.
pub fn is_system_topic(topic: &str) -> bool {
    topic.starts_with('%')
}

/// Refuses what only the broker may write: system topics, and the
/// properties that route or resolve system messages.
pub(crate) fn check_user_message(message: &Message) -> Result<()> {
    if is_system_topic(&message.topic) {
        return Err(BrokerError::InvalidTopic {
            name: message.topic.clone(),
            reason: "topics starting with '%' are reserved for the broker",
        });
    }
    for reserved in [
        property::REAL_TOPIC,
        property::REAL_QUEUE,
        property::HALF_OFFSET,
        property::PRODUCER_GROUP,
    ] {
        if message.properties.contains_key(reserved) {
            return Err(BrokerError::InvalidMessage(format!(
                "property {reserved} is reserved for the broker"
            )));
        }
    }
    Ok(())
}

/// The real message and queue of a message taken from a system topic (a
/// due delayed message, a committed half message).
pub(crate) fn restore_real(mut message: Message) -> Result<(Message, u32)> {
    let props = &mut message.properties;
    let topic = props.remove(property::REAL_TOPIC);
    let queue = props
        .remove(property::REAL_QUEUE)
        .and_then(|q| q.parse().ok());
    props.remove(property::DELIVER_AT_MS);
    match (topic, queue) {
        (Some(topic), Some(queue)) => {
            message.topic = topic;
            Ok((message, queue))
        }
        _ => Err(BrokerError::InvalidMessage(
            "a system-topic message lacks its real topic or queue".into(),
        )),
    }
}

/// Message properties with a meaning to the broker.
pub mod property {
    /// Delay level 1..=18, set by a producer.
    pub const DELAY_LEVEL: &str = "DELAY";
    /// Absolute delivery time (ms since the epoch), set by a producer or
    /// derived from `DELAY_LEVEL`.
    pub const DELIVER_AT_MS: &str = "DELIVER_AT_MS";
    /// Where a delayed, half or retried message really goes.
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    /// Queue of the real topic.
    pub const REAL_QUEUE: &str = "REAL_QID";
    /// How many times consumption failed so far.
    pub const RECONSUME_TIMES: &str = "RECONSUME_TIME";
    /// The topic a retried message was first sent to.
    pub const ORIGIN_TOPIC: &str = "ORIGIN_TOPIC";
    /// The queue it was first sent to.
    pub const ORIGIN_QUEUE: &str = "ORIGIN_QID";
    /// The message id it had there.
    pub const ORIGIN_MSG_ID: &str = "ORIGIN_MESSAGE_ID";
    /// When consumption first failed (ms since the epoch).
    pub const FIRST_FAILURE_AT_MS: &str = "FIRST_FAILURE_AT_MS";
    /// The consumer's reason for the latest failure.
    pub const LAST_FAILURE: &str = "LAST_FAILURE";
    /// Producer group of a transactional message (whose checker to ask).
    pub const PRODUCER_GROUP: &str = "PGROUP";
    /// On a committed message: the queue offset of its half message, so a
    /// commit is never applied twice.
    pub const HALF_OFFSET: &str = "TRAN_HALF_OFFSET";
}
