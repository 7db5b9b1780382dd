//! Tests of the HTTP router on its own: the `Router` called as a tower
//! service (`oneshot`), without sockets — topics, pulls, recovery,
//! unknown members, transactions and dead letters, and merging into a
//! host's router.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use broker::http_api::{ErrorBody, TopicInfo};
use broker::{Broker, PullStatus, wire};
use bytes::Bytes;
use tower::ServiceExt;

use crate::http_api::order;
use crate::http_helpers::{TEST_BROKER_KEY, test_access, test_config};

/// The broker's router, with every request carrying the test key.
fn router(broker: Broker) -> axum::Router {
    broker::router(broker, test_access()).layer(axum::middleware::map_request(
        |mut request: Request<Body>| async move {
            let value = format!("Bearer {TEST_BROKER_KEY}").parse().unwrap();
            request.headers_mut().insert(header::AUTHORIZATION, value);
            request
        },
    ))
}

#[tokio::test]
async fn every_route_needs_the_broker_key() {
    let (broker, _dir) = open_broker();
    broker.create_topic("orders", 1).unwrap();
    let bare = broker::router(broker, test_access());
    let routes = [
        ("POST", "/broker/topics/orders/messages"),
        ("POST", "/broker/topics"),
        ("GET", "/broker/pull?group=g&topic=orders&queue=0&offset=0"),
        ("POST", "/broker/offsets"),
        ("POST", "/broker/groups/g/offsets/reset"),
        ("PUT", "/broker/groups/g/members/m"),
        ("PUT", "/broker/transactions/checkers/seckill"),
        ("POST", "/broker/transactions/1/end"),
        ("GET", "/broker/stats/queues"),
    ];
    for (method, path) in routes {
        for (authorization, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (
                Some("Bearer wrong key wrong key wrong key wrong"),
                StatusCode::FORBIDDEN,
            ),
            (Some("Basic dXNlcjpwYXNz"), StatusCode::UNAUTHORIZED),
        ] {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let response = bare
                .clone()
                .oneshot(request.body(Body::from("{}")).unwrap())
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                status,
                "{method} {path} {authorization:?}"
            );
            let error: ErrorBody = serde_json::from_slice(&body_bytes(response).await).unwrap();
            assert!(["unauthorized", "forbidden"].contains(&error.code.as_str()));
        }
    }
    assert!(broker::http_api::ApiAccess::new("short").is_err());
}

fn open_broker() -> (Broker, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::open(test_config(dir.path())).expect("open broker");
    (broker, dir)
}

async fn body_bytes(response: axum::response::Response) -> Bytes {
    axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("read body")
}

#[tokio::test]
async fn router_creates_and_lists_topics() {
    let (broker, _dir) = open_broker();
    let app = router(broker.clone());
    let create = || {
        Request::post("/broker/topics")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"name":"orders","queues":2}"#))
            .unwrap()
    };
    let response = app.clone().oneshot(create()).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app.clone().oneshot(create()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = app
        .clone()
        .oneshot(Request::get("/broker/topics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let topics: Vec<TopicInfo> = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].offsets.len(), 2);

    let response = app
        .oneshot(
            Request::get("/broker/topics/missing")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn router_serves_a_pull_by_query_string_as_a_batch() {
    let (broker, _dir) = open_broker();
    broker.create_topic("orders", 1).unwrap();
    broker.put(0, vec![order(1), order(2)]).await.unwrap();
    let response = router(broker)
        .oneshot(
            Request::get("/broker/pull?group=g&topic=orders&queue=0&offset=1&max_messages=5")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], wire::CONTENT_TYPE);
    let pulled = wire::decode_pull_result(body_bytes(response).await).unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.next_offset, 2);
    assert_eq!(pulled.messages.len(), 1);
    assert_eq!(pulled.messages[0].message, order(2));
}

#[tokio::test]
async fn router_reports_recovery_and_unknown_members_as_json() {
    let (broker, _dir) = open_broker();
    let app = router(broker);
    let response = app
        .clone()
        .oneshot(
            Request::get("/broker/recovery")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: broker::RecoveryReport =
        serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert!(!report.crashed, "a fresh store did not crash");

    let response = app
        .oneshot(
            Request::post("/broker/groups/g/members/m/heartbeat")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error: ErrorBody = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(error.code, "unknown_member");
}

#[tokio::test]
async fn router_merges_into_a_host_router() {
    let (broker, _dir) = open_broker();
    let host = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .merge(router(broker));
    for path in ["/health", "/broker/stats/queues", "/broker/stats/lag"] {
        let response = host
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn router_serves_transaction_and_dead_letter_routes() {
    let (broker, _dir) = open_broker();
    let app = router(broker);
    let response = app
        .clone()
        .oneshot(
            Request::get("/broker/transactions")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let open: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(open, serde_json::json!({ "open": 0 }));

    let response = app
        .clone()
        .oneshot(
            Request::get("/broker/groups/g/dlq")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let listed = wire::decode_pull_result(body_bytes(response).await).unwrap();
    assert_eq!(listed.status, PullStatus::NoNewMessages);
    assert!(listed.messages.is_empty());

    let response = app
        .oneshot(
            Request::post("/broker/transactions/checkers/half")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    // The static `checkers` segment wins; the wrong method is a JSON 405.
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "PUT");
    let error: ErrorBody = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(error.code, "method_not_allowed");
}
