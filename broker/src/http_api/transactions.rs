//! Handlers of transactional messages: half sends, their end, open
//! transactions, and checker URLs for remote producers.

use std::sync::Arc;

use super::checker::HttpTransactionChecker;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use bytes::Bytes;

use super::errors::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, ApiState, require_content_type};
use super::json::{
    CheckerRegistration, EndTransaction, EndTransactionResponse, HalfParams, OpenTransactions,
    RegisterChecker,
};
use crate::error::BrokerError;
use crate::types::{HalfSendResult, TransactionState};
use crate::wire;

pub(super) async fn send_half(
    State(state): State<ApiState>,
    ApiPath(producer_group): ApiPath<String>,
    ApiQuery(params): ApiQuery<HalfParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<HalfSendResult>> {
    require_content_type(&headers, wire::CONTENT_TYPE)?;
    let mut messages = wire::decode_send_batch(body?)
        .map_err(|e| ApiError::BadRequest(format!("malformed message batch: {e}")))?;
    if messages.len() != 1 {
        return Err(ApiError::BadRequest(format!(
            "a half send carries exactly one message, this batch has {}",
            messages.len()
        )));
    }
    let message = messages.pop().expect("one message");
    let result = state
        .broker
        .send_half(&producer_group, params.queue, message)
        .await?;
    Ok(Json(result))
}

pub(super) async fn end_transaction(
    State(state): State<ApiState>,
    ApiPath(half_offset): ApiPath<u64>,
    ApiJson(body): ApiJson<EndTransaction>,
) -> ApiResult<Json<EndTransactionResponse>> {
    if body.state == TransactionState::Unknown {
        // Refused before the broker sees it, so the transaction stays
        // exactly as it was.
        return Err(BrokerError::InvalidArgument(
            "a transaction ends with \"commit\" or \"rollback\", not \"unknown\"".into(),
        )
        .into());
    }
    let committed = state
        .broker
        .end_transaction(half_offset, body.state)
        .await?;
    Ok(Json(EndTransactionResponse { committed }))
}

pub(super) async fn register_checker(
    State(state): State<ApiState>,
    ApiPath(producer_group): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterChecker>,
) -> ApiResult<Json<CheckerRegistration>> {
    // The group travels back to the checker in a header, so it must be
    // one: printable ASCII.
    if producer_group.is_empty()
        || !producer_group
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(BrokerError::InvalidArgument(format!(
            "producer group {producer_group:?} must be non-empty printable ASCII \
             (it is sent in the {} header)",
            HttpTransactionChecker::PRODUCER_GROUP_HEADER
        ))
        .into());
    }
    let checker = HttpTransactionChecker::new(&body.url)?;
    if !state.access.checker_allowed(checker.url()) {
        return Err(ApiError::Forbidden(format!(
            "checker URL {:?} is not on a host of the broker's allow-list",
            body.url
        )));
    }
    let url = checker.url().to_string();
    state
        .broker
        .register_checker(&producer_group, Arc::new(checker));
    tracing::info!(producer_group, "transaction checker registered over HTTP");
    Ok(Json(CheckerRegistration {
        producer_group,
        url,
    }))
}

pub(super) async fn open_transactions(State(state): State<ApiState>) -> Json<OpenTransactions> {
    Json(OpenTransactions {
        open: state.broker.open_transactions(),
    })
}
