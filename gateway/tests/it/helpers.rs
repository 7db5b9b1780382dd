//! A counting stand-in for seckill (so tests can tell whether a request
//! reached the upstream), an edge over it, and Redis for the flag tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use gateway::http::Gateway;
use gateway::{ActivitySource, Edge, EdgeSettings, LuaHook, Upstream, Upstreams};
use serde_json::{Value, json};
use stock::{Activities, Activity};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What the stand-in upstream saw, and a gate holding its answers.
#[derive(Debug)]
pub(crate) struct StandIn {
    pub(crate) calls: AtomicUsize,
    /// Answers wait for a permit when `hold` is set.
    pub(crate) gate: Semaphore,
    pub(crate) hold: bool,
}

pub(crate) type Counter = Arc<StandIn>;

/// A seckill stand-in: counts purchases and answers `queued`; with `hold`
/// each answer waits for a permit on its gate.
pub(crate) fn counting_upstream(hold: bool) -> (Router, Counter) {
    let counter = Arc::new(StandIn {
        calls: AtomicUsize::new(0),
        gate: Semaphore::new(0),
        hold,
    });
    let router = Router::new()
        .route(
            "/api/seckill/{item}",
            // Extracts its own path parameter, as seckill does: the
            // gateway's routing state must not leak into it.
            post(
                |State(c): State<Counter>, Path(item): Path<String>| async move {
                    assert!(!item.is_empty());
                    c.calls.fetch_add(1, Ordering::SeqCst);
                    if c.hold {
                        c.gate.acquire().await.unwrap().forget();
                    }
                    axum::Json(json!({"status": "queued", "order_id": "o-1"}))
                },
            ),
        )
        .route(
            "/admin/activities",
            get(|| async {
                axum::Json(json!([{
                    "item": "remote", "stock": 5, "per_user_limit": 1,
                    "starts_at_ms": 0, "ends_at_ms": i64::MAX
                }]))
            }),
        )
        .with_state(Arc::clone(&counter));
    (router, counter)
}

pub(crate) fn activity(item: &str, starts_at_ms: i64, ends_at_ms: i64) -> Activity {
    Activity {
        item: item.into(),
        stock: 10,
        per_user_limit: 1,
        quiz: false,
        starts_at_ms,
        ends_at_ms,
    }
}

/// Activities open now: `sku`, `hot`; `later` not started, `over` ended.
pub(crate) fn activities() -> Arc<Activities> {
    let all = Arc::new(Activities::default());
    let now = 1_700_000_000_000i64;
    all.upsert(activity("sku", 0, i64::MAX)).unwrap();
    all.upsert(activity("hot", 0, i64::MAX)).unwrap();
    all.upsert(activity("later", now * 10, now * 11)).unwrap();
    all.upsert(activity("over", 1, 2)).unwrap();
    all
}

/// The tests' token signing key (a test key: no deployment uses it).
const TEST_TOKEN_KEY: &[u8] = b"gateway tests only: 0123456789abcdef0123";

/// Buyer tokens under [`TEST_TOKEN_KEY`].
pub(crate) fn tokens() -> service_kit::access::BuyerTokens {
    service_kit::access::BuyerTokens::new(TEST_TOKEN_KEY).unwrap()
}

/// `Bearer <token>` for `user`.
pub(crate) fn bearer(user: &str) -> String {
    format!("Bearer {}", tokens().mint(user, Duration::from_secs(600)))
}

/// A purchase token of `user` for `item`.
pub(crate) fn pass(user: &str, item: &str) -> String {
    service_kit::access::PurchaseTokens::new(TEST_TOKEN_KEY)
        .unwrap()
        .mint(user, item, Duration::from_secs(600))
}

pub(crate) fn settings() -> EdgeSettings {
    EdgeSettings {
        user_rps: 0,
        buyers: tokens(),
        purchases: service_kit::access::PurchaseTokens::new(TEST_TOKEN_KEY).unwrap(),
        ..EdgeSettings::default()
    }
}

/// An edge over `upstream` (in-process) with `settings` and `hook`.
pub(crate) fn edge_over(
    upstream: Router,
    settings: EdgeSettings,
    hook: Option<LuaHook>,
) -> Arc<Edge> {
    Edge::new(
        settings,
        ActivitySource::Shared(activities()),
        None,
        Upstreams::new(
            vec![Upstream::in_process("seckill", upstream)],
            Duration::from_secs(2),
        ),
        Upstreams::new(Vec::new(), Duration::from_secs(2)),
        hook,
    )
}

/// A purchase through `app` by `user`.
pub(crate) async fn buy(app: &Gateway, item: &str, user: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::post(format!("/api/seckill/{item}"));
    if let Some(user) = user {
        request = request
            .header("authorization", bearer(user))
            .header("x-purchase-token", pass(user, item));
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

pub(crate) async fn send(app: &Gateway, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Polls `check` every 20 ms until it holds (bounded).
pub(crate) async fn eventually(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) use test_support::test_redis;
