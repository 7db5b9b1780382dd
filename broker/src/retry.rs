//! Retry and dead letters: what happens to a message its consumer could
//! not process.
//!
//! A consumer gives the message back with [`crate::Broker::reconsume_later`]. The
//! broker copies it to the group's retry topic `%RETRY%<group>` with delay
//! level `3 + reconsume_times` (10 s, 30 s, 1 min … 2 h), which members of
//! the group consume automatically in clustering mode. After
//! `max_reconsume_times` retries (default 16, RocketMQ's) the next failure
//! sends it to `%DLQ%<group>` instead, with its history in properties:
//! origin topic, queue and message id, failure count, first failure time
//! and the last reason given. Nothing is dropped: dead letters can be
//! listed and re-driven to their original topic.
//!
//! The broker reads the failed message itself from (topic, queue, offset),
//! so a remote consumer sends back a position, not the body.
//!
//! Retry keeps no state of its own: its functions take the store, and the
//! delay scheduler whose append routes a retry's delay level (a retry *is*
//! a delayed message), and the façade exposes them as `Broker` methods.

use crate::delay_scheduler::DelayScheduler;
use crate::error::{BrokerError, Result};
use crate::metrics::{DEAD_LETTERS, RETRIES};
use crate::record::Message;
use crate::store::Store;
use crate::system_topics::{dlq_topic, property, retry_topic};
use crate::types::{PullRequest, PullResult, RetryOutcome, SendResult};

/// Longest failure reason kept with a message.
const MAX_REASON_LEN: usize = 1024;
/// The first retry's delay level (10 s); each retry adds one.
const FIRST_RETRY_LEVEL: u32 = 3;

/// Gives back the message at `topic`/`queue_id`/`queue_offset` that
/// `group` failed to process, with a reason kept in its history: to the
/// retry topic through the delay index, or to the DLQ.
pub(crate) async fn reconsume_later(
    store: &Store,
    delays: &DelayScheduler,
    group: &str,
    topic: &str,
    queue_id: u32,
    queue_offset: u64,
    reason: &str,
) -> Result<RetryOutcome> {
    if group.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "group must not be empty".into(),
        ));
    }
    let stored = store.read(topic, queue_id, queue_offset)?;
    let mut message = stored.message;
    let times: u32 = message
        .properties
        .get(property::RECONSUME_TIMES)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let props = &mut message.properties;
    if !props.contains_key(property::ORIGIN_TOPIC) {
        props.insert(property::ORIGIN_TOPIC.into(), topic.to_owned());
        props.insert(property::ORIGIN_QUEUE.into(), queue_id.to_string());
        props.insert(
            property::ORIGIN_MSG_ID.into(),
            format!("{:016X}", stored.commit_log_offset),
        );
        props.insert(
            property::FIRST_FAILURE_AT_MS.into(),
            store.clock().now_ms().to_string(),
        );
    }
    let mut reason = reason.to_owned();
    if reason.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    props.insert(property::LAST_FAILURE.into(), reason);
    props.insert(property::RECONSUME_TIMES.into(), (times + 1).to_string());
    props.remove(property::DELIVER_AT_MS);
    let outcome = if times >= store.config().max_reconsume_times {
        message.topic = dlq_topic(group);
        message.properties.remove(property::DELAY_LEVEL);
        RetryOutcome::DeadLetter {
            failures: times + 1,
        }
    } else {
        let delay_level = (FIRST_RETRY_LEVEL + times).min(18);
        message.topic = retry_topic(group);
        message
            .properties
            .insert(property::DELAY_LEVEL.into(), delay_level.to_string());
        RetryOutcome::Retry {
            attempt: times + 1,
            delay_level,
        }
    };
    let (_, end) = delays.append(store, 0, vec![message])?;
    store.wait_durable(end).await?;
    match outcome {
        RetryOutcome::Retry { .. } => metrics::counter!(RETRIES).increment(1),
        RetryOutcome::DeadLetter { .. } => {
            metrics::counter!(DEAD_LETTERS, "group" => group.to_owned()).increment(1);
        }
    }
    Ok(outcome)
}

/// Lists dead letters of `group` from `offset` (at most `max`).
pub(crate) async fn dead_letters(
    store: &Store,
    group: &str,
    offset: u64,
    max: u32,
) -> Result<PullResult> {
    let topic = dlq_topic(group);
    store.ensure_topic(&topic)?;
    crate::pull::pull(
        store,
        &PullRequest {
            group: group.to_owned(),
            topic,
            queue_id: 0,
            offset,
            max_messages: max.max(1),
            max_bytes: 16 << 20,
            hold_ms: 0,
            tags: None,
            fence: None,
        },
    )
    .await
}

/// Sends the dead letter at `offset` of `group`'s DLQ back to its
/// original topic and queue, with a fresh retry budget (its history of
/// origin and failures stays in its properties).
pub(crate) async fn redrive_dead_letter(
    store: &Store,
    delays: &DelayScheduler,
    group: &str,
    offset: u64,
) -> Result<SendResult> {
    let topic = dlq_topic(group);
    let mut message = store.read(&topic, 0, offset)?.message;
    let (origin, queue) = origin_of(&message)?;
    message.topic = origin;
    message.properties.remove(property::RECONSUME_TIMES);
    let (mut results, end) = delays.append(store, queue, vec![message])?;
    store.wait_durable(end).await?;
    Ok(results.pop().expect("one result"))
}

fn origin_of(message: &Message) -> Result<(String, u32)> {
    let topic = message.properties.get(property::ORIGIN_TOPIC);
    let queue = message
        .properties
        .get(property::ORIGIN_QUEUE)
        .and_then(|q| q.parse().ok());
    match (topic, queue) {
        (Some(topic), Some(queue)) => Ok((topic.clone(), queue)),
        _ => Err(BrokerError::InvalidMessage(
            "the dead letter has no origin topic or queue".into(),
        )),
    }
}
