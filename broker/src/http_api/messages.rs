//! Handlers of topics and messages: create and list topics, send
//! batches, pull them (long-polled), and find messages by key.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::record::Message;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::errors::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, ApiState, require_content_type};
use super::json::{CreateTopic, PullParams, QueueOffsets, SendParams, SendResponse, TopicInfo};
use super::limits::{DEFAULT_PULL_MESSAGES, MAX_PULL_MESSAGES};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::types::{PullResult, PullStatus, SendResult, TopicConfig, queue_for_key};
use crate::wire;

pub(super) async fn create_topic(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CreateTopic>,
) -> ApiResult<(StatusCode, Json<TopicConfig>)> {
    let broker = state.broker.clone();
    let existed = broker.topic(&body.name).is_some();
    // Creating a topic writes and fsyncs its config file: keep that off
    // the async workers.
    let config = tokio::task::spawn_blocking(move || broker.create_topic(&body.name, body.queues))
        .await
        .map_err(|e| ApiError::Internal(format!("topic creation task failed: {e}")))??;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(config)))
}

pub(super) async fn list_topics(State(state): State<ApiState>) -> Json<Vec<TopicInfo>> {
    let mut offsets = offsets_by_topic(&state.broker);
    let topics = state
        .broker
        .topics()
        .into_iter()
        .map(|topic| TopicInfo {
            offsets: offsets.remove(&topic.name).unwrap_or_default(),
            name: topic.name,
            queues: topic.queues,
        })
        .collect();
    Json(topics)
}

pub(super) async fn get_topic(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TopicInfo>> {
    let topic = state
        .broker
        .topic(&name)
        .ok_or(BrokerError::TopicNotFound(name))?;
    let offsets = offsets_by_topic(&state.broker)
        .remove(&topic.name)
        .unwrap_or_default();
    Ok(Json(TopicInfo {
        name: topic.name,
        queues: topic.queues,
        offsets,
    }))
}

fn offsets_by_topic(broker: &Broker) -> BTreeMap<String, Vec<QueueOffsets>> {
    let mut by_topic: BTreeMap<String, Vec<QueueOffsets>> = BTreeMap::new();
    for q in broker.queue_stats() {
        by_topic.entry(q.topic).or_default().push(QueueOffsets {
            queue_id: q.queue_id,
            min_offset: q.min_offset,
            max_offset: q.max_offset,
        });
    }
    by_topic
}

/// Messages bound for one queue, with their positions in the request.
type QueueBatch = (u32, Vec<usize>, Vec<Message>);

pub(super) async fn send(
    State(state): State<ApiState>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(params): ApiQuery<SendParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<SendResponse>)> {
    require_content_type(&headers, wire::CONTENT_TYPE)?;
    let messages = wire::decode_send_batch(body?)
        .map_err(|e| ApiError::BadRequest(format!("malformed message batch: {e}")))?;
    if messages.is_empty() {
        return Err(ApiError::BadRequest(
            "a send needs at least one message".into(),
        ));
    }
    if let Some(other) = messages.iter().find(|m| m.topic != topic) {
        return Err(ApiError::BadRequest(format!(
            "a message for topic {:?} was sent to topic {topic:?}; a batch carries one topic",
            other.topic
        )));
    }
    let broker = &state.broker;
    let queues = match broker.topic(&topic) {
        Some(config) => config.queues,
        // The broker creates the topic on the first append, as a local
        // producer's send would.
        None if broker.config().auto_create_topics => broker.config().default_queues,
        None => return Err(BrokerError::TopicNotFound(topic).into()),
    };
    let count = messages.len();
    let batches: Vec<QueueBatch> = match (params.queue, params.key_hash) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest(
                "`queue` and `key_hash=true` exclude each other".into(),
            ));
        }
        (Some(queue), false) => vec![(queue, (0..count).collect(), messages)],
        (None, false) => {
            let queue = state.round_robin.fetch_add(1, Ordering::Relaxed) % queues;
            vec![(queue, (0..count).collect(), messages)]
        }
        (None, true) => split_by_key_hash(messages, queues),
    };

    let mut placed: Vec<(usize, SendResult)> = Vec::with_capacity(count);
    let mut place = |positions: Vec<usize>, results: Vec<SendResult>| -> ApiResult<()> {
        if positions.len() != results.len() {
            return Err(ApiError::Internal(format!(
                "the broker returned {} results for {} messages",
                results.len(),
                positions.len()
            )));
        }
        placed.extend(positions.into_iter().zip(results));
        Ok(())
    };
    let status = if !params.wait {
        for (queue, positions, batch) in batches {
            place(positions, broker.put_nowait(queue, batch)?)?;
        }
        StatusCode::ACCEPTED
    } else if batches.len() == 1 {
        let (queue, positions, batch) = batches.into_iter().next().expect("one batch");
        place(positions, broker.put(queue, batch).await?)?;
        StatusCode::OK
    } else {
        // One task per queue so every append is written before any waits
        // for its flush; group commit then covers them with one fdatasync.
        // A dropped request leaves the tasks running: each append is
        // all-or-nothing on its own.
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|(queue, positions, batch)| {
                let broker = broker.clone();
                (
                    positions,
                    tokio::spawn(async move { broker.put(queue, batch).await }),
                )
            })
            .collect();
        for (positions, task) in tasks {
            let results = task
                .await
                .map_err(|e| ApiError::Internal(format!("send task failed: {e}")))??;
            place(positions, results)?;
        }
        StatusCode::OK
    };
    placed.sort_unstable_by_key(|(position, _)| *position);
    let results = placed.into_iter().map(|(_, result)| result).collect();
    Ok((status, Json(SendResponse { results })))
}

/// Groups messages by the queue their key hashes to (the hash of
/// [`crate::QueueSelector::KeyHash`]), keeping their order within a queue.
fn split_by_key_hash(messages: Vec<Message>, queues: u32) -> Vec<QueueBatch> {
    let mut by_queue: BTreeMap<u32, (Vec<usize>, Vec<Message>)> = BTreeMap::new();
    for (position, message) in messages.into_iter().enumerate() {
        let queue = queue_for_key(&message.key, queues);
        let entry = by_queue.entry(queue).or_default();
        entry.0.push(position);
        entry.1.push(message);
    }
    by_queue
        .into_iter()
        .map(|(queue, (positions, batch))| (queue, positions, batch))
        .collect()
}

pub(super) async fn pull_query(
    State(state): State<ApiState>,
    ApiQuery(params): ApiQuery<PullParams>,
) -> ApiResult<Response> {
    pull(&state.broker, &params).await
}

pub(super) async fn pull_json(
    State(state): State<ApiState>,
    ApiJson(params): ApiJson<PullParams>,
) -> ApiResult<Response> {
    pull(&state.broker, &params).await
}

pub(super) async fn pull(broker: &Broker, params: &PullParams) -> ApiResult<Response> {
    if params.half_fenced() {
        return Err(BrokerError::InvalidArgument(
            "a fenced pull names both member and generation".into(),
        )
        .into());
    }
    // If the client goes away during the hold, axum drops this future and
    // the wait ends with it: nothing is left parked.
    let result = broker.pull(&params.to_request()).await?;
    batch_response(&result)
}

/// A pull answer as a [`wire`] batch.
pub(super) fn batch_response(result: &PullResult) -> ApiResult<Response> {
    let body = wire::encode_pull_result(result)
        .map_err(|e| ApiError::Internal(format!("encoding a pull answer: {e}")))?;
    let content_type = HeaderValue::from_static(wire::CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct KeyQuery {
    key: String,
    topic: Option<String>,
    max: Option<u32>,
}

pub(super) async fn messages_by_key(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<KeyQuery>,
) -> ApiResult<Response> {
    let max = query
        .max
        .unwrap_or(DEFAULT_PULL_MESSAGES)
        .min(MAX_PULL_MESSAGES) as usize;
    let messages = state
        .broker
        .messages_by_key(&query.key, query.topic.as_deref(), max)?;
    let status = if messages.is_empty() {
        PullStatus::NoNewMessages
    } else {
        PullStatus::Found
    };
    batch_response(&PullResult {
        status,
        messages,
        next_offset: 0,
        min_offset: 0,
        max_offset: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_split_keeps_order_within_each_queue() {
        let messages: Vec<Message> = (0..20)
            .map(|i| Message::new("t", "x").with_key(format!("k{}", i % 5)))
            .collect();
        let batches = split_by_key_hash(messages.clone(), 4);
        let mut seen = Vec::new();
        for (queue, positions, batch) in batches {
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
            for (position, message) in positions.iter().zip(&batch) {
                assert_eq!(&messages[*position], message);
                assert_eq!(crc32c::crc32c(message.key.as_bytes()) % 4, queue);
            }
            seen.extend(positions);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }
}
