//! The worker's HTTP API.
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | `GET` | `/api/orders/{id}` | the buyer's order: `pending` while still in a broker, then `created`, `paid` or `cancelled` |
//! | `GET` | `/api/orders` | the buyer's written orders, oldest first |
//! | `POST` | `/api/orders/{id}/pay` | a stand-in payment: marks the buyer's order paid (idempotent) |
//! | `GET` | `/admin/reconcile/{item}` | reconciliation report (see [`crate::reconcile`]) |
//! | `POST` | `/admin/reconcile/{item}/repair` | the same, repairing what may be repaired |
//! | `GET` | `/admin/worker` | settings, brokers and counts |
//! | `GET` | `/healthz` | `ok` |
//! | `GET` | `/metrics` | Prometheus text (when a recorder is installed) |
//!
//! **Who may call what** ([`WorkerAccess`]): `/api/…` needs a buyer token
//! (`Authorization: Bearer <JWT>`, see `service_kit::access`) and serves
//! that buyer's orders only — someone else's order is answered exactly as
//! an order that does not exist (404), so ids cannot be probed; a `user`
//! query naming another buyer is 403. `/admin/…` and `/metrics` need the
//! admin key.
//!
//! Errors are JSON `{"error": message, "code": code}` with a 4xx for bad
//! input and 503 (details only in the log) when the database or a broker
//! fails.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use service_kit::access::{AccessKey, BuyerTokens, Denied, Keys, require_key};

use crate::messages::validate_order_id;
use crate::order_store::{OrderRow, OrderStoreError, PayOutcome};
use crate::reconcile::{ReconcileError, pending_order, reconcile};
use crate::worker::OrderWorker;

/// Who may call what on the worker's port (module doc).
#[derive(Debug, Clone)]
pub struct WorkerAccess {
    /// Buyer tokens, for `/api/…`.
    pub buyers: BuyerTokens,
    /// The admin key, for `/admin/…` and `/metrics`.
    pub admin: AccessKey,
}

impl WorkerAccess {
    /// Access from `keys`.
    pub fn from_keys(keys: &Keys) -> Result<WorkerAccess, String> {
        Ok(WorkerAccess {
            buyers: keys.buyer_tokens()?,
            admin: keys.admin_key()?,
        })
    }
}

/// One error type for every route.
#[derive(Debug)]
pub enum ApiError {
    /// 401 / 403: no credential, or one that may not do this.
    Denied(Denied),
    /// 400: bad input.
    BadRequest(String),
    /// 404: no such order (or route).
    NotFound(String),
    /// 405: wrong method.
    MethodNotAllowed,
    /// 409: the order cannot be paid (cancelled, or not written yet).
    Conflict(String),
    /// 503: the database or a broker failed (details logged).
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, code) = match self {
            ApiError::Denied(denied) => return denied.into_response(),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, "bad_request"),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m, "not_found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".into(),
                "method_not_allowed",
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m, "conflict"),
            ApiError::Unavailable(detail) => {
                tracing::error!(%detail, "request failed on the database or a broker");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service cannot take this request now; retry".into(),
                    "unavailable",
                )
            }
        };
        (status, Json(json!({"error": message, "code": code}))).into_response()
    }
}

impl From<OrderStoreError> for ApiError {
    fn from(error: OrderStoreError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<ReconcileError> for ApiError {
    fn from(error: ReconcileError) -> Self {
        match error {
            ReconcileError::InvalidItem(m) => ApiError::BadRequest(m),
            ReconcileError::NoBroker => ApiError::Conflict(error.to_string()),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::Denied(denied)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone)]
struct ApiState {
    worker: Arc<OrderWorker>,
    buyers: BuyerTokens,
    metrics: Option<PrometheusHandle>,
}

/// The worker's routes over `worker`, each behind its credential;
/// `/metrics` renders `metrics` when given.
pub fn router(
    worker: Arc<OrderWorker>,
    access: WorkerAccess,
    metrics: Option<PrometheusHandle>,
) -> Router {
    let admin = Router::new()
        .route("/admin/reconcile/{item}", get(report))
        .route("/admin/reconcile/{item}/repair", post(repair))
        .route("/admin/worker", get(worker_status))
        .route("/metrics", get(render_metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(access.admin),
            require_key,
        ));
    Router::new()
        .route("/api/orders", get(orders_of_user))
        .route("/api/orders/{id}", get(order))
        .route("/api/orders/{id}/pay", post(pay))
        .route("/healthz", get(|| async { "ok" }))
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(ApiState {
            worker,
            buyers: access.buyers,
            metrics,
        })
}

fn order_json(row: &OrderRow) -> Value {
    json!(row)
}

fn order_id_of(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(id) = path?;
    validate_order_id(&id).map_err(ApiError::BadRequest)?;
    Ok(id)
}

/// What the buyer may see of order `id`: their written order, or
/// `Pending` while it is still in a broker; anyone else's is `None`.
enum Owned {
    Written(OrderRow),
    Pending(seckill::OrderMessage),
}

async fn owned_order(state: &ApiState, id: &str, buyer: &str) -> ApiResult<Option<Owned>> {
    if let Some(row) = state.worker.orders().order(id).await? {
        return Ok((row.user == buyer).then_some(Owned::Written(row)));
    }
    Ok(pending_order(&state.worker, id)
        .await?
        .filter(|pending| pending.user == buyer)
        .map(Owned::Pending))
}

async fn order(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let buyer = state.buyers.buyer(&headers)?;
    let id = order_id_of(path)?;
    match owned_order(&state, &id, &buyer).await? {
        Some(Owned::Written(row)) => Ok(Json(order_json(&row))),
        Some(Owned::Pending(pending)) => Ok(Json(json!({
            "order_id": pending.order_id,
            "item": pending.item,
            "user": pending.user,
            "status": "pending",
            "created_at_ms": pending.created_at_ms,
        }))),
        None => Err(ApiError::NotFound(format!("no order {id:?}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    /// Optional, and then it must be the buyer's own id.
    user: Option<String>,
}

async fn orders_of_user(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let buyer = state.buyers.buyer(&headers)?;
    let Query(query) = query?;
    if query.user.as_ref().is_some_and(|user| *user != buyer) {
        return Err(
            Denied::forbidden("forbidden", "a buyer may list their own orders only").into(),
        );
    }
    seckill::validate_user_id(&buyer).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let rows = state.worker.orders().orders_of_user(&buyer).await?;
    let orders: Vec<Value> = rows.iter().map(order_json).collect();
    Ok(Json(json!({"user": buyer, "orders": orders})))
}

async fn pay(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let buyer = state.buyers.buyer(&headers)?;
    let id = order_id_of(path)?;
    // Only the buyer's own order: an order's user never changes, so the
    // check holds for the payment that follows.
    match owned_order(&state, &id, &buyer).await? {
        None => return Err(ApiError::NotFound(format!("no order {id:?}"))),
        Some(Owned::Pending(_)) => {
            return Err(ApiError::Conflict(format!(
                "order {id:?} is still pending; pay once it is created"
            )));
        }
        Some(Owned::Written(_)) => {}
    }
    match state.worker.orders().pay(&id).await? {
        PayOutcome::Paid | PayOutcome::AlreadyPaid => {
            let row = state.worker.orders().order(&id).await?;
            Ok(Json(row.as_ref().map_or_else(
                || json!({"order_id": id, "status": "paid"}),
                order_json,
            )))
        }
        PayOutcome::Cancelled => Err(ApiError::Conflict(format!(
            "order {id:?} was cancelled: its payment window closed"
        ))),
        PayOutcome::NotFound => match pending_order(&state.worker, &id).await? {
            Some(_) => Err(ApiError::Conflict(format!(
                "order {id:?} is still pending; pay once it is created"
            ))),
            None => Err(ApiError::NotFound(format!("no order {id:?}"))),
        },
    }
}

async fn report(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(item) = path?;
    Ok(Json(json!(reconcile(&state.worker, &item, false).await?)))
}

async fn repair(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(item) = path?;
    Ok(Json(json!(reconcile(&state.worker, &item, true).await?)))
}

async fn worker_status(State(state): State<ApiState>) -> Json<Value> {
    let worker = &state.worker;
    let settings = worker.settings();
    let brokers: Vec<String> = worker.brokers().into_iter().map(|(name, _)| name).collect();
    Json(json!({
        "group": settings.group,
        "member": settings.member,
        "rate_per_second": settings.rate_per_second,
        "max_batch": settings.max_batch,
        "payment_timeout_ms": settings.payment_timeout.as_millis() as u64,
        "brokers": brokers,
        "stats": worker.stats(),
    }))
}

async fn render_metrics(State(state): State<ApiState>) -> ApiResult<String> {
    state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .ok_or_else(|| ApiError::NotFound("metrics are not enabled in this process".into()))
}
