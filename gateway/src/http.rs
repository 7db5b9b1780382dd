//! The gateway's routes.
//!
//! | Method | Path | What happens |
//! |---|---|---|
//! | `POST` | `/api/seckill/{item}` | the checks below, then forwarded to a seckill upstream |
//! | `GET` | `/api/seckill/{item}/quiz`, `POST` `/api/seckill/{item}/token` | the buyer token, the address and user limits, then forwarded to seckill (which asks the quiz and issues purchase tokens) |
//! | `GET` | `/api/orders`, `/api/orders/{id}` | forwarded to the order API |
//! | `POST` | `/api/orders/{id}/pay` | forwarded to the order API |
//! | `GET` | `/healthz` | `ok` |
//! | `GET` | `/metrics` | Prometheus text (when a recorder is installed; the admin key) |
//!
//! A purchase passes, in order — cheapest first, and every refusal
//! answered here without an upstream call:
//! 1. load shedding: past `max_in_flight` requests, 503 with `Retry-After`
//!    at once (never queued);
//! 2. the global rate limit (429);
//! 3. the per-address rate limit (429), on the socket's peer address —
//!    `X-Forwarded-For` counts only when that peer is a trusted proxy, so
//!    a client rotating the header is still one address;
//! 4. the item id (400) and the buyer token (`Authorization: Bearer`,
//!    401): the buyer is the token's verified subject, never a header a
//!    client sets; the token travels on, and upstreams verify it too;
//!    then the purchase token (`x-purchase-token`: missing 401; forged,
//!    expired, another buyer's or item's 403), by its signature — seckill
//!    checks it again and spends it;
//! 5. the body: over `max_body_bytes`, 413;
//! 6. the Lua hook, when one is loaded;
//! 7. the sale window (403 with the start or end time);
//! 8. the sold-out flag: `200 {"status":"sold_out"}`;
//! 9. the per-user rate limit (429);
//! 10. the forward, bounded by the upstream timeout, never retried.
//!
//! The order routes need a buyer token too (401 here, before any
//! forward); the order API then serves that buyer's own orders only.
//!
//! Every request is bounded by `request_timeout` (504). Errors are JSON
//! `{"error","code"}`.
//!
//! The sold-out answer has a fast path in front of the router
//! ([`Gateway`]): a bodiless purchase of a flagged item is answered
//! without routing, extractors, a timer or an allocation, after shedding,
//! the global and address limits, the item, the hook and the window — but
//! without checking the buyer's tokens (two signatures per request) unless
//! a hook needs the buyer: "sold out" is the same public answer for
//! everyone, and verifying tokens for it would cost the edge most of its
//! rate exactly when the spike is all sold out. Everything past the flag
//! still needs both tokens. Whatever it cannot answer outright — a body, an item not
//! flagged, any check that fails — goes through the router, which answers
//! exactly as it would have anyway.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::routing::{get, post};
use futures_util::future::Either;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use service_kit::http_server::PeerAddr;
use stock::Window;
use tower::Service;

use crate::edge::Edge;
use crate::lua_hook::{HookRequest, Verdict};
use crate::metrics::{IN_FLIGHT, REQUEST_SECONDS, REQUESTS, UPSTREAM_SECONDS};
use crate::upstream::{UpstreamError, Upstreams};

/// The answer for a flagged item, prebuilt.
const SOLD_OUT_BODY: &str = r#"{"status":"sold_out"}"#;

#[derive(Clone)]
struct GatewayState {
    edge: Arc<Edge>,
    metrics: Option<PrometheusHandle>,
}

/// The gateway as a tower service: the sold-out fast path, then the
/// router.
#[derive(Debug, Clone)]
pub struct Gateway {
    edge: Arc<Edge>,
    router: Router,
}

impl<B> Service<axum::http::Request<B>> for Gateway
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        match sold_out_fast_path(&self.edge, &request) {
            Some(response) => Either::Left(ready(Ok(response))),
            None => Either::Right(self.router.call(request)),
        }
    }
}

/// Answers a bodiless purchase of a flagged item, or `None` to leave the
/// request to the router (see the module doc).
fn sold_out_fast_path<B: http_body::Body>(
    edge: &Edge,
    request: &axum::http::Request<B>,
) -> Option<Response> {
    if request.method() != Method::POST {
        return None;
    }
    let item = request.uri().path().strip_prefix("/api/seckill/")?;
    // The cheapest question first: nothing to answer here unless flagged.
    if !edge.flags.is_sold_out(item) {
        return None;
    }
    // A body, however small, is the router's to read and bound.
    if !request.body().is_end_stream() || stock::validate_item_id(item).is_err() {
        return None;
    }
    // The same checks, in the same order, as the full path.
    let _permit = edge.shedder.try_acquire().ok()?;
    if edge.global.as_ref().is_some_and(|l| l.check().is_err()) {
        return None;
    }
    if address_limited(edge, request) {
        return None;
    }
    // No signature is checked for a sold-out answer: it is public and the
    // same for everyone, and checking two tokens per request would cost
    // the edge most of its rate exactly when the spike is all sold out.
    // Only a Lua hook, which may judge the buyer, needs them verified.
    if let Some(hook) = &edge.hook {
        let user = edge.settings.buyers.buyer(request.headers()).ok()?;
        stock::validate_user_id(&user).ok()?;
        edge.settings
            .purchases
            .pass(request.headers(), &user, item)
            .ok()?;
        let verdict = hook.check(&HookRequest {
            method: "POST",
            path: request.uri().path(),
            item: Some(item),
            user: Some(&user),
        });
        if verdict != Verdict::Allow {
            return None;
        }
    }
    if edge
        .activities
        .window(item, now_ms())
        .is_some_and(|w| w != Window::Open)
    {
        return None;
    }
    edge.sold_out_answers.increment(1);
    tracing::debug!(
        method = "POST",
        path = request.uri().path(),
        status = 200,
        "request answered sold out at the edge"
    );
    Some(json_response(StatusCode::OK, SOLD_OUT_BODY))
}

/// The routes over `edge`, behind the sold-out fast path; `/metrics`
/// renders `metrics` when given.
pub fn router(edge: Arc<Edge>, metrics: Option<PrometheusHandle>) -> Gateway {
    let state = GatewayState {
        edge: Arc::clone(&edge),
        metrics,
    };
    let router = Router::new()
        .route("/api/seckill/{item}", post(purchase))
        .route("/api/seckill/{item}/token", post(to_seckill))
        .route("/api/seckill/{item}/quiz", get(to_seckill))
        .route("/api/orders", get(to_orders))
        .route("/api/orders/{id}", get(to_orders))
        .route("/api/orders/{id}/pay", post(to_orders))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(render_metrics).route_layer(axum::middleware::from_fn_with_state(
                Arc::new(edge.settings.admin.clone()),
                service_kit::access::require_key,
            )),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&edge),
            bounded,
        ))
        .with_state(state);
    Gateway { edge, router }
}

/// Whether the request's client address is over its rate (module doc).
fn address_limited<B>(edge: &Edge, request: &axum::http::Request<B>) -> bool {
    let (Some(limiter), Some(PeerAddr(peer))) =
        (&edge.per_address, request.extensions().get::<PeerAddr>())
    else {
        return false;
    };
    let address = edge.client_address(peer.ip(), request.headers());
    limiter.check_key(&address).is_err()
}

/// 429 for a request over the rate of its `who` (address, user), counted
/// as `outcome`.
fn rate_limited(outcome: &'static str, who: &str) -> Response {
    count(outcome);
    with_retry_after(
        error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!("too many requests from this {who}; retry shortly"),
        ),
        1,
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": message, "code": code}).to_string();
    json_response(status, body)
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn count(outcome: &'static str) {
    metrics::counter!(REQUESTS, "outcome" => outcome).increment(1);
}

/// A request between its shedding permit and its answer, counted in the
/// in-flight gauge until dropped — also when the client goes away and the
/// request's future is dropped mid-flight, which a decrement at the end of
/// the handler would miss.
struct InFlight<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl<'a> InFlight<'a> {
    fn enter(permit: tokio::sync::SemaphorePermit<'a>) -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight { _permit: permit }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// Every request: load shedding, the global limit, the request timeout,
/// and the access log.
async fn bounded(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The access log's fields, copied only when the log is on.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().path().to_owned()));
    let Ok(permit) = edge.shedder.try_acquire() else {
        count("shed");
        return with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the gateway is at capacity; retry shortly",
            ),
            1,
        );
    };
    let _in_flight = InFlight::enter(permit);
    let response = if edge.global.as_ref().is_some_and(|l| l.check().is_err()) {
        count("rate_limited_global");
        with_retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry shortly",
            ),
            1,
        )
    } else {
        match tokio::time::timeout(edge.settings.request_timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                count("timeout");
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the request took too long",
                )
            }
        }
    };
    let elapsed = started.elapsed();
    metrics::histogram!(REQUEST_SECONDS).record(elapsed.as_secs_f64());
    if let Some((method, path)) = logged {
        tracing::debug!(%method, path, status = response.status().as_u16(), micros = elapsed.as_micros() as u64, "request");
    }
    response
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn purchase(
    State(state): State<GatewayState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let edge = &state.edge;
    let Ok(Path(item)) = path else {
        count("bad_request");
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad item in the path",
        );
    };
    if address_limited(edge, &request) {
        return rate_limited("rate_limited_address", "address");
    }
    if let Err(e) = stock::validate_item_id(&item) {
        count("bad_request");
        return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string());
    }
    let user = match edge.settings.buyers.buyer(request.headers()) {
        Ok(user) => user,
        Err(denied) => {
            count("unauthenticated");
            return denied.into_response();
        }
    };
    if let Err(e) = stock::validate_user_id(&user) {
        count("bad_request");
        return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string());
    }
    if let Err(denied) = edge
        .settings
        .purchases
        .pass(request.headers(), &user, &item)
    {
        count("purchase_token_refused");
        return denied.into_response();
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(edge, &parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Some(hook) = &edge.hook {
        let verdict = hook.check(&HookRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            item: Some(&item),
            user: Some(&user),
        });
        if let Verdict::Reject { status, reason } = verdict {
            count("hook_rejected");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            return error(status, "rejected", &reason);
        }
    }
    if let Some(activity) = edge.activities.get(&item) {
        match activity.window(now_ms()) {
            Window::NotStarted => {
                count("not_started");
                let body = json!({"error": "the sale has not started", "code": "not_started", "starts_at_ms": activity.starts_at_ms});
                return json_response(StatusCode::FORBIDDEN, body.to_string());
            }
            Window::Ended => {
                count("ended");
                let body = json!({"error": "the sale is over", "code": "ended", "ended_at_ms": activity.ends_at_ms});
                return json_response(StatusCode::FORBIDDEN, body.to_string());
            }
            Window::Open => {}
        }
    }
    if edge.flags.is_sold_out(&item) {
        edge.sold_out_answers.increment(1);
        return json_response(StatusCode::OK, SOLD_OUT_BODY);
    }
    if let Some(limiter) = &edge.per_user
        && limiter.check_key(&user).is_err()
    {
        return rate_limited("rate_limited_user", "user");
    }
    let request = Request::from_parts(parts, Body::from(body));
    forward(&edge.seckill, request).await
}

/// Reads a body up to the limit: a declared length over it is refused
/// before reading, an undeclared one as soon as it passes it.
async fn read_body(
    edge: &Edge,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, Response> {
    let limit = edge.settings.max_body_bytes;
    let too_large = || {
        count("bad_request");
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body too large",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// A quiz question or a purchase token: the buyer, the address and the
/// user's limits, then seckill.
async fn to_seckill(State(state): State<GatewayState>, request: Request) -> Response {
    let edge = &state.edge;
    if address_limited(edge, &request) {
        return rate_limited("rate_limited_address", "address");
    }
    let user = match edge.settings.buyers.buyer(request.headers()) {
        Ok(user) => user,
        Err(denied) => {
            count("unauthenticated");
            return denied.into_response();
        }
    };
    if let Some(limiter) = &edge.per_user
        && limiter.check_key(&user).is_err()
    {
        return rate_limited("rate_limited_user", "user");
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(edge, &parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    forward(&edge.seckill, Request::from_parts(parts, Body::from(body))).await
}

async fn to_orders(State(state): State<GatewayState>, request: Request) -> Response {
    if address_limited(&state.edge, &request) {
        return rate_limited("rate_limited_address", "address");
    }
    if let Err(denied) = state.edge.settings.buyers.buyer(request.headers()) {
        count("unauthenticated");
        return denied.into_response();
    }
    let (parts, body) = request.into_parts();
    let body = match read_body(&state.edge, &parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if parts.method == Method::GET || parts.method == Method::POST {
        forward(
            &state.edge.orders,
            Request::from_parts(parts, Body::from(body)),
        )
        .await
    } else {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        )
    }
}

/// Hop-by-hop headers, which belong to one connection and are not
/// forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::PROXY_AUTHORIZATION,
];

async fn forward(upstreams: &Upstreams, mut request: Request) -> Response {
    for name in &HOP_BY_HOP {
        request.headers_mut().remove(name);
    }
    let started = Instant::now();
    let answer = upstreams.forward(request).await;
    metrics::histogram!(UPSTREAM_SECONDS).record(started.elapsed().as_secs_f64());
    match answer {
        Ok(mut response) => {
            count("forwarded");
            for name in &HOP_BY_HOP {
                response.headers_mut().remove(name);
            }
            response.into_response()
        }
        Err(UpstreamError::Timeout(_)) => {
            count("upstream_timeout");
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the service did not answer in time",
            )
        }
        Err(e) => {
            count("upstream_error");
            tracing::warn!(error = %e, "forward failed");
            error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the service cannot be reached; retry shortly",
            )
        }
    }
}

async fn render_metrics(State(state): State<GatewayState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not enabled in this process",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::routing::post;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt as _;

    use super::*;
    use crate::edge::{ActivitySource, EdgeSettings};
    use crate::upstream::{Upstream, Upstreams};

    /// The in-flight gauge's value in a Prometheus rendering.
    fn in_flight(rendered: &str) -> f64 {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix("gateway_in_flight_requests "))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Defect 10: the gauge went up when a request entered and down only
    /// when the handler returned, so every client that disconnected
    /// mid-request (its future dropped) left it one higher for good.
    #[test]
    fn the_in_flight_gauge_comes_down_when_a_client_disconnects() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // A current-thread runtime inside the local recorder's scope: every
        // poll, of every task, records into `recorder`.
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let never_answers = axum::Router::new().route(
                    "/api/seckill/{item}",
                    post(std::future::pending::<&'static str>),
                );
                let settings = EdgeSettings::default();
                let token = settings.buyers.mint("buyer", Duration::from_secs(60));
                let pass = settings
                    .purchases
                    .mint("buyer", "sku", Duration::from_secs(60));
                let edge = Edge::new(
                    settings,
                    ActivitySource::Shared(Default::default()),
                    None,
                    Upstreams::new(
                        vec![Upstream::in_process("seckill", never_answers)],
                        Duration::from_secs(60),
                    ),
                    Upstreams::new(Vec::new(), Duration::from_secs(60)),
                    None,
                );
                let gateway = router(Arc::clone(&edge), None);
                for _ in 0..3 {
                    let request = axum::http::Request::post("/api/seckill/sku")
                        .header(header::AUTHORIZATION, format!("Bearer {token}"))
                        .header("x-purchase-token", &pass)
                        .body(Body::empty())
                        .unwrap();
                    let answer = gateway.clone().oneshot(request);
                    // The client gives up while the request is upstream.
                    let gave_up = tokio::time::timeout(Duration::from_millis(50), answer).await;
                    assert!(gave_up.is_err(), "the upstream never answers");
                }
                assert_eq!(in_flight(&handle.render()), 0.0, "{}", handle.render());
                assert_eq!(
                    edge.shedder.available_permits(),
                    EdgeSettings::default().max_in_flight
                );
            });
        });
    }
}
