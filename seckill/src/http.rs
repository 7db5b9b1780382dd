//! The seckill HTTP API, with the embedded broker's routes mounted beside
//! it (one port serves purchases, admin and the broker).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | `GET` | `/api/seckill/{item}/quiz` | – (a buyer token) | 200 `{"question","challenge","answer_after_ms"}`; 404 when the activity has no quiz |
//! | `POST` | `/api/seckill/{item}/token` | – or, with a quiz, JSON `{"challenge","answer"}` (a buyer token) | 200 `{"status":"ok","purchase_token","expires_in_s"}` / `{"status":"sold_out"}`; 403 outside the sale window or for a wrong answer |
//! | `POST` | `/api/seckill/{item}` | – (a buyer token and `x-purchase-token`) | 200 `{"status":"queued","order_id"}` / `{"status":"duplicate","order_id"}` / `{"status":"sold_out"}`; 403 outside the sale window; 409 `token_reused` |
//! | `GET` | `/api/activities` | – | JSON list of activities (public: items, stock, sale windows) |
//! | `GET` | `/admin/activities` | – | JSON list of activities |
//! | `POST` | `/admin/activities` | JSON [`Activity`] | 201 JSON activity |
//! | `GET` | `/admin/activities/{item}` | – | JSON `{activity, store, flagged_here}` |
//! | `POST` | `/admin/activities/{item}/prewarm` | – | JSON `{"outcome":"warmed"\|"exists","stock"}` |
//! | `POST` | `/admin/activities/{item}/restock` | JSON `{"units"}` | JSON `{"stock","flag_version"}` |
//! | `POST` | `/admin/activities/{item}/release` | JSON `{"user","order_id"}` | JSON `{"released": bool}` |
//! | `GET` | `/metrics` | – | Prometheus text (when a recorder is installed) |
//! | … | `/broker/…` | | the broker's API (see `broker::http_api`) |
//! | `GET` | `/healthz` | – | `ok` |
//!
//! **Who may call what** ([`Access`]): a purchase needs a buyer token
//! (`Authorization: Bearer <JWT>`, see `service_kit::access`), verified
//! here — the buyer is the token's subject, never a header a client sets —
//! and a purchase token for that buyer and item (the hidden, single-use
//! path: missing 401; forged, expired or someone else's 403; spent 409 —
//! spent by the reservation's own script call, so no second purchase can
//! slip between "token used" and "unit reserved");
//! `/admin/…` and `/metrics` need the admin key; `/broker/…` the broker
//! key. Without a credential 401, with another one 403.
//!
//! Once an item is flagged sold out, every request for it — a winner's
//! repeat click included — is answered `sold_out` without a store call, as
//! the design's edge does; the winner's order stands and the order API
//! shows it.
//!
//! Every error is JSON `{"error","code"}`; a JSON body of another content
//! type is 415, one over the limit 413, unknown fields and out-of-range
//! numbers 400; store and broker faults are logged in full and answered
//! without internals.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker::http_api::ApiAccess;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use service_kit::access::{AccessKey, BuyerTokens, Denied, Keys, PurchaseTokens, require_key};

use crate::purchase::{PurchaseError, PurchaseOutcome, Seckill};
use crate::quiz::Quiz;
use stock::Activity;
use stock::{Prewarm, Release, Restock};

/// A purchase carries no body worth more than this.
const PURCHASE_BODY_LIMIT: usize = 1024;
/// Admin bodies are small JSON.
pub const ADMIN_BODY_LIMIT: usize = 16 * 1024;
/// Most units one restock adds: more is a typo, not a sale.
pub const MAX_RESTOCK_UNITS: u64 = 1_000_000_000;
/// How long a purchase token may be used after it is issued.
pub const PURCHASE_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Who may call what on seckill's port (module doc).
#[derive(Debug, Clone)]
pub struct Access {
    /// Buyer tokens, for purchases.
    pub buyers: BuyerTokens,
    /// Purchase tokens: issued here, spent by purchases.
    pub purchases: PurchaseTokens,
    /// The quiz of activities that have one.
    pub quiz: Quiz,
    /// The admin key, for `/admin/…` and `/metrics`.
    pub admin: AccessKey,
    /// The broker key and check-back allow-list, for `/broker/…`.
    pub broker: ApiAccess,
}

impl Access {
    /// Access from `keys` (the broker key required), check-backs allowed
    /// on `checker_hosts`.
    pub fn from_keys(keys: &Keys, checker_hosts: &[String]) -> Result<Access, crate::SeckillError> {
        let invalid = crate::SeckillError::Invalid;
        let mut broker = ApiAccess::new(keys.broker_key().map_err(invalid)?).map_err(invalid)?;
        for host in checker_hosts {
            broker = broker.allow_checker_host(host).map_err(invalid)?;
        }
        Ok(Access {
            buyers: keys.buyer_tokens().map_err(invalid)?,
            purchases: keys.purchase_tokens().map_err(invalid)?,
            quiz: Quiz::new(keys.token.as_bytes()).map_err(invalid)?,
            admin: keys.admin_key().map_err(invalid)?,
            broker,
        })
    }
}

/// What the purchase route reads: the service and the token verifier.
#[derive(Debug, Clone)]
struct PublicState {
    seckill: Arc<Seckill>,
    buyers: BuyerTokens,
    purchases: PurchaseTokens,
    quiz: Quiz,
}

impl FromRef<PublicState> for Arc<Seckill> {
    fn from_ref(state: &PublicState) -> Self {
        Arc::clone(&state.seckill)
    }
}

/// One error type for every route.
#[derive(Debug)]
pub enum ApiError {
    /// 400: bad input.
    BadRequest(String),
    /// 401 / 403: no credential, or one that may not do this.
    Denied(Denied),
    /// 415: a JSON route given another content type.
    UnsupportedMediaType(String),
    /// 403: outside the sale window.
    Window(serde_json::Value),
    /// 404: no such activity.
    UnknownItem(String),
    /// 404: the activity has no quiz.
    NoQuiz(String),
    /// 404: no metrics recorder in this process.
    MetricsOff,
    /// 405: wrong method.
    MethodNotAllowed,
    /// 413: a body over the route's limit.
    PayloadTooLarge,
    /// 409: the item is not pre-warmed, or a purchase token was spent.
    Conflict {
        /// The error's code.
        code: &'static str,
        /// What happened.
        message: String,
    },
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
            ApiError::Denied(denied) => return denied.into_response(),
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"error": m, "code": "unsupported_media_type"}),
            ),
            ApiError::Window(body) => (StatusCode::FORBIDDEN, body),
            ApiError::MetricsOff => (
                StatusCode::NOT_FOUND,
                json!({"error": "metrics are not enabled in this process", "code": "not_found"}),
            ),
            ApiError::NoQuiz(item) => (
                StatusCode::NOT_FOUND,
                json!({"error": format!("item {item:?} has no quiz: ask for a purchase token directly"), "code": "no_quiz"}),
            ),
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
            ApiError::Conflict { code, message } => (
                StatusCode::CONFLICT,
                json!({"error": message, "code": code}),
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
            PurchaseError::NotWarmed(item) => ApiError::Conflict {
                code: "conflict",
                message: format!("item {item:?} is not pre-warmed"),
            },
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
        match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType(rejection.body_text())
            }
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::BadRequest(rejection.body_text()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::Denied(denied)
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

/// The seckill routes plus the broker's, each behind its credential;
/// `/metrics` renders `metrics` when given.
pub fn router(seckill: Arc<Seckill>, access: Access, metrics: Option<PrometheusHandle>) -> Router {
    let broker = broker::router(seckill.broker().clone(), access.broker);
    let public = Router::new()
        .route(
            "/api/seckill/{item}",
            post(purchase).layer(DefaultBodyLimit::max(PURCHASE_BODY_LIMIT)),
        )
        .route(
            "/api/seckill/{item}/token",
            post(purchase_token).layer(DefaultBodyLimit::max(PURCHASE_BODY_LIMIT)),
        )
        .route("/api/seckill/{item}/quiz", get(quiz_question))
        .route("/api/activities", get(list_activities))
        .route("/healthz", get(|| async { "ok" }))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(PublicState {
            seckill: Arc::clone(&seckill),
            buyers: access.buyers,
            purchases: access.purchases,
            quiz: access.quiz,
        });
    let admin = Router::new()
        .route(
            "/admin/activities",
            get(list_activities).post(create_activity),
        )
        .route("/admin/activities/{item}", get(activity_status))
        .route("/admin/activities/{item}/prewarm", post(prewarm))
        .route("/admin/activities/{item}/restock", post(restock))
        .route("/admin/activities/{item}/release", post(release));
    // Always routed, so it is behind the key whether or not a recorder
    // is installed (without one: 404 to the operator only).
    let admin = admin.route(
        "/metrics",
        get(move || {
            std::future::ready(match &metrics {
                Some(handle) => handle.render().into_response(),
                None => ApiError::MetricsOff.into_response(),
            })
        }),
    );
    let admin = admin
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        // Outermost: nothing is read before the key is checked.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(access.admin),
            require_key,
        ))
        .with_state(seckill);
    public.merge(admin).merge(broker)
}

async fn purchase(
    State(state): State<PublicState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    // Who is asking first: nothing is read or reserved for a stranger.
    let user = state.buyers.buyer(&headers)?;
    let Path(item) = path?;
    // The hidden path: a purchase token for this buyer and item, checked
    // by its signature alone; the script spends it.
    let pass = state.purchases.pass(&headers, &user, &item)?;
    // Read (and so bound) the body even though a purchase needs none: an
    // endless or oversized body is refused with 413, not buffered.
    body?;
    let outcome = state
        .seckill
        .purchase_spending(&item, &user, Some(pass.issued_us))
        .await?;
    Ok(Json(match outcome {
        PurchaseOutcome::Reused => {
            return Err(ApiError::Conflict {
                code: "token_reused",
                message: "this purchase token was used already; ask for a new one".into(),
            });
        }
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

/// A quiz answer, with the challenge it answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuizAnswer {
    challenge: String,
    answer: i64,
}

/// The sale window of `activity` now, as the purchase answers it.
fn refuse_outside_window(activity: &Activity) -> ApiResult<()> {
    match activity.window(crate::purchase::now_ms()) {
        stock::Window::Open => Ok(()),
        stock::Window::NotStarted => Err(ApiError::Window(json!({
            "error": "the sale has not started", "code": "not_started", "starts_at_ms": activity.starts_at_ms
        }))),
        stock::Window::Ended => Err(ApiError::Window(json!({
            "error": "the sale is over", "code": "ended", "ended_at_ms": activity.ends_at_ms
        }))),
    }
}

async fn quiz_question(
    State(state): State<PublicState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<Json<crate::quiz::Question>> {
    let user = state.buyers.buyer(&headers)?;
    let Path(item) = path?;
    let activity = known(&state.seckill, &item)?;
    if !activity.quiz {
        return Err(ApiError::NoQuiz(item));
    }
    refuse_outside_window(&activity)?;
    Ok(Json(state.quiz.ask(&user, &item)))
}

async fn purchase_token(
    State(state): State<PublicState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let user = state.buyers.buyer(&headers)?;
    let Path(item) = path?;
    let body = body?;
    stock::validate_user_id(&user).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let activity = known(&state.seckill, &item)?;
    refuse_outside_window(&activity)?;
    if activity.quiz {
        let is_json = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "this item has a quiz: send {\"challenge\",\"answer\"} as application/json".into(),
            ));
        }
        let answer: QuizAnswer = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the quiz answer: {e}")))?;
        state
            .quiz
            .check(&user, &item, &answer.challenge, answer.answer)?;
    }
    // A sold-out item needs no token: the answer is the same without one.
    if state.seckill.flags().is_sold_out(&item) {
        return Ok(Json(json!({"status": "sold_out"})));
    }
    let token = state.purchases.mint(&user, &item, PURCHASE_TOKEN_TTL);
    Ok(Json(json!({
        "status": "ok",
        "purchase_token": token,
        "expires_in_s": PURCHASE_TOKEN_TTL.as_secs(),
    })))
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
#[serde(deny_unknown_fields)]
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
    if !(1..=MAX_RESTOCK_UNITS).contains(&body.units) {
        return Err(ApiError::BadRequest(format!(
            "units must be 1..={MAX_RESTOCK_UNITS}, not {}",
            body.units
        )));
    }
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
        Restock::NotWarmed => Err(ApiError::Conflict {
            code: "conflict",
            message: format!("item {item:?} is not pre-warmed"),
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
