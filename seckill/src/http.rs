//! The seckill HTTP API, with the embedded broker's routes mounted beside
//! it (one port serves purchases, admin and the broker).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `POST` | `/api/seckill/{item}` | – (header `x-user-id`) | 200 `{"status":"queued","order_id"}` / `{"status":"duplicate","order_id"}` / `{"status":"sold_out"}`; 403 outside the sale window |
//! | `GET` | `/admin/activities` | – | JSON list of activities |
//! | `POST` | `/admin/activities` | JSON [`Activity`] | 201 JSON activity |
//! | `GET` | `/admin/activities/{item}` | – | JSON `{activity, store, flagged_here}` |
//! | `POST` | `/admin/activities/{item}/prewarm` | – | JSON `{"outcome":"warmed"\|"exists","stock"}` |
//! | `POST` | `/admin/activities/{item}/restock` | JSON `{"units"}` | JSON `{"stock","flag_version"}` |
//! | `POST` | `/admin/activities/{item}/release` | JSON `{"user","order_id"}` | JSON `{"released": bool}` |
//! | … | `/broker/…` | | the broker's API (see `broker::http_api`) |
//!
//! Once an item is flagged sold out, every request for it — a winner's
//! repeat click included — is answered `sold_out` without a store call, as
//! the design's edge does; the winner's order stands and the order API
//! shows it.
//!
//! The user comes from the `x-user-id` header for now (signed tokens come
//! later). Every error is JSON `{"error","code"}`; store and broker faults
//! are logged in full and answered without internals.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::purchase::{PurchaseError, PurchaseOutcome, Seckill};
use stock::Activity;
use stock::{Prewarm, Release, Restock};

/// The header carrying the buyer's id.
pub const USER_HEADER: &str = "x-user-id";
/// A purchase carries no body worth more than this.
const PURCHASE_BODY_LIMIT: usize = 1024;
/// Admin bodies are small JSON.
const ADMIN_BODY_LIMIT: usize = 16 * 1024;

/// One error type for every route.
#[derive(Debug)]
pub enum ApiError {
    /// 400: bad input.
    BadRequest(String),
    /// 401: no user.
    MissingUser,
    /// 403: outside the sale window.
    Window(serde_json::Value),
    /// 404: no such activity.
    UnknownItem(String),
    /// 405: wrong method.
    MethodNotAllowed,
    /// 413: a body over the route's limit.
    PayloadTooLarge,
    /// 409: the item is not pre-warmed (or already is).
    Conflict(String),
    /// 503: the stock store or broker failed (details logged).
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                json!({"error": m, "code": "bad_request"}),
            ),
            ApiError::MissingUser => (
                StatusCode::UNAUTHORIZED,
                json!({"error": format!("the {USER_HEADER} header is required"), "code": "missing_user"}),
            ),
            ApiError::Window(body) => (StatusCode::FORBIDDEN, body),
            ApiError::UnknownItem(item) => (
                StatusCode::NOT_FOUND,
                json!({"error": format!("no activity for item {item:?}"), "code": "unknown_item"}),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed", "code": "method_not_allowed"}),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "request body too large", "code": "payload_too_large"}),
            ),
            ApiError::Conflict(m) => (
                StatusCode::CONFLICT,
                json!({"error": m, "code": "conflict"}),
            ),
            ApiError::Unavailable(detail) => {
                tracing::error!(%detail, "request failed on the store or broker");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "the service cannot take this request now; retry", "code": "unavailable"}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<PurchaseError> for ApiError {
    fn from(error: PurchaseError) -> Self {
        match error {
            PurchaseError::UnknownItem(item) => ApiError::UnknownItem(item),
            PurchaseError::NotWarmed(item) => {
                ApiError::Conflict(format!("item {item:?} is not pre-warmed"))
            }
            PurchaseError::Invalid(m) => ApiError::BadRequest(m),
            PurchaseError::Store(crate::SeckillError::Invalid(m)) => ApiError::BadRequest(m),
            PurchaseError::Store(e) => ApiError::Unavailable(e.to_string()),
            PurchaseError::Broker(e) => ApiError::Unavailable(e.to_string()),
            PurchaseError::Batch(why) => ApiError::Unavailable(why),
        }
    }
}

impl From<crate::SeckillError> for ApiError {
    fn from(error: crate::SeckillError) -> Self {
        PurchaseError::Store(error).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The seckill routes plus the broker's.
pub fn router(seckill: Arc<Seckill>) -> Router {
    let broker = broker::router(seckill.broker().clone());
    let own = Router::new()
        .route(
            "/api/seckill/{item}",
            post(purchase).layer(DefaultBodyLimit::max(PURCHASE_BODY_LIMIT)),
        )
        .route(
            "/admin/activities",
            get(list_activities).post(create_activity),
        )
        .route("/admin/activities/{item}", get(activity_status))
        .route("/admin/activities/{item}/prewarm", post(prewarm))
        .route("/admin/activities/{item}/restock", post(restock))
        .route("/admin/activities/{item}/release", post(release))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .with_state(seckill);
    own.merge(broker)
}

async fn purchase(
    State(seckill): State<Arc<Seckill>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(item) = path?;
    // Read (and so bound) the body even though a purchase needs none: an
    // endless or oversized body is refused with 413, not buffered.
    body?;
    let user = headers
        .get(USER_HEADER)
        .ok_or(ApiError::MissingUser)?
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("{USER_HEADER} must be text")))?;
    Ok(Json(match seckill.purchase(&item, user).await? {
        PurchaseOutcome::Queued { order_id } => json!({"status": "queued", "order_id": order_id}),
        PurchaseOutcome::Duplicate { order_id } => {
            json!({"status": "duplicate", "order_id": order_id})
        }
        PurchaseOutcome::SoldOut => json!({"status": "sold_out"}),
        PurchaseOutcome::NotStarted { starts_at_ms } => {
            return Err(ApiError::Window(json!({
                "error": "the sale has not started", "code": "not_started", "starts_at_ms": starts_at_ms
            })));
        }
        PurchaseOutcome::Ended { ended_at_ms } => {
            return Err(ApiError::Window(json!({
                "error": "the sale is over", "code": "ended", "ended_at_ms": ended_at_ms
            })));
        }
    }))
}

async fn list_activities(State(seckill): State<Arc<Seckill>>) -> Json<Vec<Activity>> {
    Json(seckill.activities().list())
}

async fn create_activity(
    State(seckill): State<Arc<Seckill>>,
    body: Result<Json<Activity>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Activity>)> {
    let Json(activity) = body?;
    seckill
        .activities()
        .upsert(activity.clone())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((StatusCode::CREATED, Json(activity)))
}

fn known(seckill: &Seckill, item: &str) -> ApiResult<Activity> {
    seckill
        .activities()
        .get(item)
        .ok_or_else(|| ApiError::UnknownItem(item.to_owned()))
}

#[derive(Debug, Serialize)]
struct StoreStatus {
    warmed: bool,
    stock_left: i64,
    sold: i64,
    sold_out: bool,
    flag_version: i64,
}

async fn activity_status(
    State(seckill): State<Arc<Seckill>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(item) = path?;
    let activity = known(&seckill, &item)?;
    let status = seckill.store().status(&item).await?;
    let store = StoreStatus {
        warmed: status.warmed,
        stock_left: status.stock,
        sold: status.buyers,
        sold_out: status.sold_out,
        flag_version: status.flag_version,
    };
    Ok(Json(json!({
        "activity": activity,
        "store": store,
        "flagged_here": seckill.flags().is_sold_out(&item),
    })))
}

async fn prewarm(
    State(seckill): State<Arc<Seckill>>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(item) = path?;
    let activity = known(&seckill, &item)?;
    Ok(Json(
        match seckill.store().prewarm(&item, activity.stock).await? {
            Prewarm::Warmed { stock } => json!({"outcome": "warmed", "stock": stock}),
            Prewarm::Exists { stock } => json!({"outcome": "exists", "stock": stock}),
        },
    ))
}

#[derive(Debug, Deserialize)]
struct RestockBody {
    units: u64,
}

async fn restock(
    State(seckill): State<Arc<Seckill>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<RestockBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(item) = path?;
    let Json(body) = body?;
    known(&seckill, &item)?;
    match seckill.store().restock(&item, body.units).await? {
        Restock::Restocked {
            stock,
            flag_version,
        } => {
            seckill.flags().apply(&item, false, flag_version);
            seckill.activities().add_stock(&item, body.units);
            Ok(Json(json!({"stock": stock, "flag_version": flag_version})))
        }
        Restock::NotWarmed => Err(ApiError::Conflict(format!(
            "item {item:?} is not pre-warmed"
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct ReleaseBody {
    user: String,
    order_id: String,
}

async fn release(
    State(seckill): State<Arc<Seckill>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ReleaseBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(item) = path?;
    let Json(body) = body?;
    known(&seckill, &item)?;
    Ok(Json(
        match seckill.release(&item, &body.user, &body.order_id).await? {
            Release::Released {
                stock_left,
                flag_version,
            } => {
                json!({"released": true, "stock_left": stock_left, "flag_version": flag_version})
            }
            Release::NotHeld => json!({"released": false}),
        },
    ))
}
