//! Handlers of consumers: committed offsets, consumer groups, offset
//! lookup by time and reset, retry and dead letters.

use super::messages::batch_response;
use crate::system_topics::dlq_topic;
use crate::topics::validate_topic_name;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::errors::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ApiState};
use super::json::{
    CommitOffset, CommittedOffset, DeadLetterQuery, GroupInfo, JoinGroup, OffsetQuery, QueueOffset,
    Reconsume, ResetOffsets,
};
use super::limits::{DEFAULT_PULL_MESSAGES, MAX_PULL_MESSAGES};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::types::{Assignment, JoinRequest, PullResult, PullStatus, RetryOutcome, SendResult};

pub(super) async fn commit_offset(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<CommitOffset>,
) -> ApiResult<Json<CommitOffset>> {
    match (&body.member, body.generation) {
        (Some(member), Some(generation)) => state.broker.commit_offset_fenced(
            &body.group,
            member,
            generation,
            &body.topic,
            body.queue,
            body.offset,
        )?,
        (None, None) => {
            state
                .broker
                .commit_offset(&body.group, &body.topic, body.queue, body.offset)?;
        }
        _ => {
            return Err(BrokerError::InvalidArgument(
                "a fenced commit names both member and generation".into(),
            )
            .into());
        }
    }
    Ok(Json(body))
}

pub(super) async fn committed_offset(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<OffsetQuery>,
) -> Json<CommittedOffset> {
    let offset = state
        .broker
        .committed_offset(&query.group, &query.topic, query.queue);
    Json(CommittedOffset {
        group: query.group,
        topic: query.topic,
        queue: query.queue,
        offset,
    })
}

// ---------------------------------------------------------------------------
// Consumer groups.

pub(super) async fn join_group(
    State(state): State<ApiState>,
    ApiPath((group, member)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<JoinGroup>,
) -> ApiResult<Json<Assignment>> {
    let request = JoinRequest {
        group,
        member,
        mode: body.mode,
        topics: body.topics,
    };
    Ok(Json(state.broker.join_group(&request)?))
}

pub(super) async fn heartbeat(
    State(state): State<ApiState>,
    ApiPath((group, member)): ApiPath<(String, String)>,
) -> ApiResult<Json<Assignment>> {
    Ok(Json(state.broker.heartbeat(&group, &member)?))
}

pub(super) async fn leave_group(
    State(state): State<ApiState>,
    ApiPath((group, member)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.broker.leave_group(&group, &member)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn list_groups(State(state): State<ApiState>) -> Json<Vec<GroupInfo>> {
    let groups = state
        .broker
        .groups()
        .into_iter()
        .map(|(group, mode, members)| GroupInfo {
            group,
            mode,
            members,
        })
        .collect();
    Json(groups)
}

pub(super) async fn reconsume_later(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<Reconsume>,
) -> ApiResult<Json<RetryOutcome>> {
    require_stored(&state.broker, &body.topic, body.queue, body.offset)?;
    let outcome = state
        .broker
        .reconsume_later(&group, &body.topic, body.queue, body.offset, &body.reason)
        .await?;
    Ok(Json(outcome))
}

pub(super) async fn dead_letters(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> ApiResult<Response> {
    let max = query
        .max
        .unwrap_or(DEFAULT_PULL_MESSAGES)
        .min(MAX_PULL_MESSAGES);
    let result = if state.broker.topic(&dlq_topic(&group)).is_none() {
        // Nothing was ever dead-lettered: answer as an empty queue would,
        // without creating the topic (a GET must not make state).
        validate_topic_name(&dlq_topic(&group))?;
        PullResult {
            status: if query.offset == 0 {
                PullStatus::NoNewMessages
            } else {
                PullStatus::OffsetTooBig
            },
            messages: Vec::new(),
            next_offset: 0,
            min_offset: 0,
            max_offset: 0,
        }
    } else {
        state.broker.dead_letters(&group, query.offset, max).await?
    };
    batch_response(&result)
}

pub(super) async fn redrive(
    State(state): State<ApiState>,
    ApiPath((group, offset)): ApiPath<(String, u64)>,
) -> ApiResult<Json<SendResult>> {
    require_stored(&state.broker, &dlq_topic(&group), 0, offset)?;
    Ok(Json(
        state.broker.redrive_dead_letter(&group, offset).await?,
    ))
}

/// Refuses an offset outside what `topic`/`queue` holds with a clear 400
/// before the broker reads it (the store's own error names its files). An
/// unknown topic or queue is left to the broker, which names it.
fn require_stored(broker: &Broker, topic: &str, queue: u32, offset: u64) -> ApiResult<()> {
    let stats = broker
        .queue_stats()
        .into_iter()
        .find(|q| q.topic == topic && q.queue_id == queue);
    match stats {
        Some(q) if offset < q.min_offset || offset >= q.max_offset => {
            Err(BrokerError::InvalidArgument(format!(
                "no message at offset {offset} of {topic}/{queue} (it holds offsets {}..{})",
                q.min_offset, q.max_offset
            ))
            .into())
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct TimeQuery {
    timestamp_ms: i64,
}

pub(super) async fn offset_for_timestamp(
    State(state): State<ApiState>,
    ApiPath((topic, queue)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<TimeQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let offset = state
        .broker
        .offset_for_timestamp(&topic, queue, query.timestamp_ms)?;
    Ok(Json(serde_json::json!({ "offset": offset })))
}

pub(super) async fn reset_offsets(
    State(state): State<ApiState>,
    ApiPath(group): ApiPath<String>,
    ApiJson(body): ApiJson<ResetOffsets>,
) -> ApiResult<Json<Vec<QueueOffset>>> {
    let moved = state.broker.reset_offsets(&group, &body.topic, body.to)?;
    Ok(Json(
        moved
            .into_iter()
            .map(|(queue, offset)| QueueOffset { queue, offset })
            .collect(),
    ))
}
