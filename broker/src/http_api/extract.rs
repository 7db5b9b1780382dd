//! What handlers take from a request: the shared state, and extractors
//! whose rejections are [`ApiError`]s, so a bad request gets the same JSON
//! error body as a broker error instead of axum's plain text.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::errors::{ApiError, ApiResult};
use crate::broker::Broker;

/// What every handler shares: the broker, and the round-robin cursor of
/// sends that name no queue.
#[derive(Debug, Clone)]
pub(super) struct ApiState {
    pub(super) broker: Broker,
    /// Next queue for sends without `queue` or `key_hash`.
    pub(super) round_robin: Arc<AtomicU32>,
    /// The key and the checker allow-list.
    pub(super) access: Arc<super::access::ApiAccess>,
}

#[derive(Debug)]
pub(super) struct ApiJson<T>(pub(super) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[derive(Debug)]
pub(super) struct ApiQuery<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

#[derive(Debug)]
pub(super) struct ApiPath<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// Refuses a body whose content type is not `expected` (parameters and
/// case aside).
pub(super) fn require_content_type(headers: &HeaderMap, expected: &str) -> ApiResult<()> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Ignore parameters (`; charset=…`) and case, as media types allow.
    let essence = found.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected content type {expected}, got {:?}",
            found
        )))
    }
}
