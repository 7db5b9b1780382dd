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
        // A purchase carries a fresh purchase token of its buyer's.
        if let Some(item) = uri
            .strip_prefix("/api/seckill/")
            .filter(|i| !i.contains('/'))
        {
            let pass = keys().purchase_tokens().unwrap().mint(
                user,
                item,
                std::time::Duration::from_secs(60),
            );
            request = request.header("x-purchase-token", pass);
        }
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

/// A raw request: `headers` as given, an optional JSON body.
async fn raw(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, value);
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
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_purchase_needs_its_own_purchase_token_and_spends_it_once() {
    let (app, seckill, _dir) = app().await;
    let (status, _) = call(
        &app,
        "POST",
        "/admin/activities",
        None,
        Some(activity("pass", 5, 0, i64::MAX)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    call(&app, "POST", "/admin/activities/pass/prewarm", None, None).await;
    let auth = |user: &str| ("authorization", bearer(user));

    // Asked for once the sale is open, with a buyer token.
    let (status, body) = raw(&app, "POST", "/api/seckill/pass/token", &[], None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_credentials"))
    );
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/pass/token",
        &[auth("ann")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ann_pass = body["purchase_token"].as_str().unwrap().to_owned();
    let (_, body) = raw(
        &app,
        "POST",
        "/api/seckill/pass/token",
        &[auth("bob")],
        None,
    )
    .await;
    let bob_pass = body["purchase_token"].as_str().unwrap().to_owned();

    // Missing 401; someone else's or forged 403: nothing is reserved.
    let (status, body) = raw(&app, "POST", "/api/seckill/pass", &[auth("ann")], None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_purchase_token"))
    );
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/pass",
        &[auth("ann"), ("x-purchase-token", bob_pass.clone())],
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_your_purchase_token"))
    );
    let forged = service_kit::access::Keys::random()
        .purchase_tokens()
        .unwrap()
        .mint("ann", "pass", std::time::Duration::from_secs(60));
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/pass",
        &[auth("ann"), ("x-purchase-token", forged)],
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_purchase_token"))
    );
    assert_eq!(
        seckill.store().status("pass").await.unwrap().stock,
        5,
        "nothing reserved"
    );

    // Spent once: the purchase, then 409 for the same token.
    let with_pass = [auth("ann"), ("x-purchase-token", ann_pass)];
    let (status, body) = raw(&app, "POST", "/api/seckill/pass", &with_pass, None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("queued")),
        "{body}"
    );
    let (status, body) = raw(&app, "POST", "/api/seckill/pass", &with_pass, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("token_reused")),
        "{body}"
    );
    // A new token for the same buyer: the order they hold.
    let (_, body) = raw(
        &app,
        "POST",
        "/api/seckill/pass/token",
        &[auth("ann")],
        None,
    )
    .await;
    let again = [
        auth("ann"),
        (
            "x-purchase-token",
            body["purchase_token"].as_str().unwrap().to_owned(),
        ),
    ];
    let (_, body) = raw(&app, "POST", "/api/seckill/pass", &again, None).await;
    assert_eq!(body["status"], "duplicate");
    assert_eq!(seckill.store().status("pass").await.unwrap().stock, 4);

    // No token before the sale opens; no quiz where the activity has none.
    call(
        &app,
        "POST",
        "/admin/activities",
        None,
        Some(activity("soon", 5, i64::MAX - 1, i64::MAX)),
    )
    .await;
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/soon/token",
        &[auth("ann")],
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_started"))
    );
    let (status, body) = raw(&app, "GET", "/api/seckill/pass/quiz", &[auth("ann")], None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_quiz"))
    );
}

#[tokio::test]
async fn with_a_quiz_only_a_right_answer_after_a_moment_gets_a_purchase_token() {
    let (app, _seckill, _dir) = app().await;
    let mut quizzed = activity("quizzed", 5, 0, i64::MAX);
    quizzed["quiz"] = json!(true);
    call(&app, "POST", "/admin/activities", None, Some(quizzed)).await;
    call(
        &app,
        "POST",
        "/admin/activities/quizzed/prewarm",
        None,
        None,
    )
    .await;
    let auth = ("authorization", bearer("cat"));

    let (status, _) = raw(
        &app,
        "POST",
        "/api/seckill/quizzed/token",
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a quiz answer is JSON"
    );
    let (status, question) = raw(
        &app,
        "GET",
        "/api/seckill/quizzed/quiz",
        std::slice::from_ref(&auth),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{question}");
    let sum = question["question"].as_str().unwrap();
    let (a, b) = sum
        .trim_start_matches("What is ")
        .trim_end_matches('?')
        .split_once(" + ")
        .unwrap();
    let right = a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap();
    let answer = |n: i64| json!({"challenge": question["challenge"], "answer": n});
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/quizzed/token",
        std::slice::from_ref(&auth),
        Some(answer(right)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("answered_too_soon"))
    );
    tokio::time::sleep(seckill::quiz::MIN_THINK + std::time::Duration::from_millis(50)).await;
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/quizzed/token",
        std::slice::from_ref(&auth),
        Some(answer(right + 1)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("wrong_answer"))
    );
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/quizzed/token",
        std::slice::from_ref(&auth),
        Some(answer(right)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["purchase_token"].is_string());
    // Another buyer cannot use this buyer's challenge.
    let (status, body) = raw(
        &app,
        "POST",
        "/api/seckill/quizzed/token",
        &[("authorization", bearer("dan"))],
        Some(answer(right)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_challenge"))
    );
}
