//! The HTTP API through the router (tower `oneshot`, no sockets): every
//! answer a client can get, with JSON bodies.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use broker::{Broker, BrokerConfig, FlushMode};
use seckill::{Seckill, StockStore};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::embedded_store;

async fn app() -> (axum::Router, Arc<Seckill>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.flush = FlushMode::async_default();
    config.max_disk_usage_ratio = 1.0;
    let broker = Broker::open(config).unwrap();
    let store: StockStore = embedded_store().0;
    let seckill = Seckill::new(broker, store, 7).unwrap();
    let access = seckill::http::Access::from_keys(keys(), &[]).unwrap();
    (
        seckill::http::router(Arc::clone(&seckill), access, None),
        seckill,
        dir,
    )
}

/// These tests' keys: random, made once.
fn keys() -> &'static service_kit::access::Keys {
    static KEYS: std::sync::OnceLock<service_kit::access::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(service_kit::access::Keys::random)
}

/// `Bearer <token>` of `user`.
fn bearer(user: &str) -> String {
    let tokens = keys().buyer_tokens().unwrap();
    format!(
        "Bearer {}",
        tokens.mint(user, std::time::Duration::from_secs(600))
    )
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    // A user's call carries their token; an admin route the admin key.
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(user) = user {
        request = request.header("authorization", bearer(user));
    } else if uri.starts_with("/admin") {
        request = request.header("authorization", format!("Bearer {}", keys().admin));
    } else if uri.starts_with("/broker") {
        let broker = keys().broker.as_deref().unwrap();
        request = request.header("authorization", format!("Bearer {broker}"));
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, json)
}

fn activity(item: &str, stock: u64, starts: i64, ends: i64) -> Value {
    json!({"item": item, "stock": stock, "per_user_limit": 1, "starts_at_ms": starts, "ends_at_ms": ends})
}

#[tokio::test]
async fn a_sale_through_the_api() {
    let (app, _seckill, _dir) = app().await;
    let (status, _) = call(
        &app,
        "POST",
        "/admin/activities",
        None,
        Some(activity("sku", 2, 0, i64::MAX)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = call(&app, "POST", "/api/seckill/sku", Some("alice"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "not pre-warmed"
    );
    let (status, body) = call(&app, "POST", "/admin/activities/sku/prewarm", None, None).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("warmed"))
    );
    let (_, body) = call(&app, "POST", "/admin/activities/sku/prewarm", None, None).await;
    assert_eq!(body["outcome"], "exists");

    let (status, body) = call(&app, "POST", "/api/seckill/sku", Some("alice"), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("queued"))
    );
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    let (_, body) = call(&app, "POST", "/api/seckill/sku", Some("alice"), None).await;
    assert_eq!(body, json!({"status": "duplicate", "order_id": order_id}));
    let (_, body) = call(&app, "POST", "/api/seckill/sku", Some("bob"), None).await;
    assert_eq!(body["status"], "queued");
    let (_, body) = call(&app, "POST", "/api/seckill/sku", Some("carol"), None).await;
    assert_eq!(body, json!({"status": "sold_out"}));

    let (_, body) = call(&app, "GET", "/admin/activities/sku", None, None).await;
    assert_eq!(body["store"]["sold"], 2);
    assert_eq!(body["store"]["sold_out"], true);
    assert_eq!(body["flagged_here"], true);

    let release = json!({"user": "alice", "order_id": order_id});
    let (_, body) = call(
        &app,
        "POST",
        "/admin/activities/sku/release",
        None,
        Some(release.clone()),
    )
    .await;
    assert_eq!(body["released"], true);
    let (_, body) = call(
        &app,
        "POST",
        "/admin/activities/sku/release",
        None,
        Some(release),
    )
    .await;
    assert_eq!(body["released"], false);
    let (_, body) = call(&app, "POST", "/api/seckill/sku", Some("carol"), None).await;
    assert_eq!(body["status"], "queued");
    let (_, body) = call(
        &app,
        "POST",
        "/admin/activities/sku/restock",
        None,
        Some(json!({"units": 2})),
    )
    .await;
    assert_eq!(body["stock"], 2);
    // The activity's stock follows, so later orders carry the new total.
    let (_, body) = call(&app, "GET", "/admin/activities/sku", None, None).await;
    assert_eq!(body["activity"]["stock"], 4);

    // The broker's API is served from the same router.
    let (status, body) = call(&app, "GET", "/broker/topics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.to_string().contains("\"orders\""));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let (app, _seckill, _dir) = app().await;
    let now = 1_800_000_000_000i64;
    call(
        &app,
        "POST",
        "/admin/activities",
        None,
        Some(activity("later", 5, now * 10, now * 11)),
    )
    .await;
    call(
        &app,
        "POST",
        "/admin/activities",
        None,
        Some(activity("over", 5, 0, 1)),
    )
    .await;

    // (method, uri, user, body, expected status, expected code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<Value>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/seckill/sku",
            None,
            None,
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
        ),
        (
            "POST",
            "/api/seckill/nope",
            Some("alice"),
            None,
            StatusCode::NOT_FOUND,
            "unknown_item",
        ),
        (
            "POST",
            "/api/seckill/later",
            Some("bad user!"),
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/api/seckill/later",
            Some("alice"),
            None,
            StatusCode::FORBIDDEN,
            "not_started",
        ),
        (
            "POST",
            "/api/seckill/over",
            Some("alice"),
            None,
            StatusCode::FORBIDDEN,
            "ended",
        ),
        (
            "GET",
            "/api/seckill/later",
            Some("alice"),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/admin/activities",
            None,
            Some(json!({"item": "x"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/admin/activities",
            None,
            Some(activity("bad}id", 1, 0, 9)),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/admin/activities",
            None,
            Some(activity("x", 1, 9, 0)),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/admin/activities/nope/prewarm",
            None,
            None,
            StatusCode::NOT_FOUND,
            "unknown_item",
        ),
        (
            "POST",
            "/admin/activities/later/restock",
            None,
            Some(json!({"units": 0})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/admin/activities/later/restock",
            None,
            Some(json!({"units": 1})),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "POST",
            "/admin/activities/later/restock",
            None,
            Some(json!({"units": -1})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/admin/activities/later/restock",
            None,
            Some(json!({"units": 1u64 << 63})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/admin/activities/later/restock",
            None,
            Some(json!({"units": 1, "ignored": "x"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (method, uri, user, body, status, code) in cases {
        let (got, json) = call(&app, method, uri, user, body).await;
        assert_eq!(
            (got, json["code"].as_str()),
            (status, Some(code)),
            "{method} {uri}: {json}"
        );
    }
    let mut activity = activity("two", 1, 0, 9);
    activity["per_user_limit"] = json!(2);
    let (status, body) = call(&app, "POST", "/admin/activities", None, Some(activity)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("per_user_limit"));
    let (status, _) = call(
        &app,
        "POST",
        "/api/seckill/later",
        Some("alice"),
        Some(json!({"pad": "x".repeat(5000)})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "a purchase body is tiny"
    );
}
