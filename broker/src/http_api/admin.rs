//! Handlers of the operator's view: queue statistics, consumer lag, what
//! recovery did, and a retention pass on demand.

use axum::Json;
use axum::extract::State;

use super::errors::{ApiError, ApiResult};
use super::extract::{ApiQuery, ApiState};
use super::json::StatsQuery;
use crate::types::{LagStats, QueueStats, RecoveryReport, RetentionReport};

pub(super) async fn queue_stats(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Json<Vec<QueueStats>> {
    let stats = state
        .broker
        .queue_stats()
        .into_iter()
        .filter(|q| query.topic.as_ref().is_none_or(|t| *t == q.topic))
        .collect();
    Json(stats)
}

pub(super) async fn lag(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Json<Vec<LagStats>> {
    let mut lag: Vec<LagStats> = state
        .broker
        .lag()
        .into_iter()
        .filter(|l| query.topic.as_ref().is_none_or(|t| *t == l.topic))
        .filter(|l| query.group.as_ref().is_none_or(|g| *g == l.group))
        .collect();
    lag.sort_by(|a, b| (&a.group, &a.topic, a.queue_id).cmp(&(&b.group, &b.topic, b.queue_id)));
    Json(lag)
}

pub(super) async fn recovery(State(state): State<ApiState>) -> Json<RecoveryReport> {
    Json(state.broker.recovery().clone())
}

pub(super) async fn apply_retention(
    State(state): State<ApiState>,
) -> ApiResult<Json<RetentionReport>> {
    // Deleting segments and rewriting the key index is blocking file work:
    // keep it off the async workers.
    let broker = state.broker.clone();
    let report = tokio::task::spawn_blocking(move || broker.apply_retention())
        .await
        .map_err(|e| ApiError::Internal(format!("retention task failed: {e}")))??;
    Ok(Json(report))
}
