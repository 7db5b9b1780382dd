//! The gateway's checks through its router as a tower service (no
//! sockets), with a counting stand-in for seckill behind it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gateway::{EdgeSettings, LuaHook, http};
use serde_json::json;

use crate::helpers::{buy, counting_upstream, edge_over, eventually, send, settings};

#[tokio::test]
async fn a_flagged_item_never_reaches_the_upstream() {
    let (upstream, counter) = counting_upstream(false);
    let edge = edge_over(upstream, settings(), None);
    let app = http::router(Arc::clone(&edge), None);

    let (status, body) = buy(&app, "sku", Some("alice")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("queued"))
    );
    assert_eq!(counter.calls.load(Ordering::SeqCst), 1);

    edge.flags().apply("sku", true, 1);
    for n in 0..1_000 {
        let (status, body) = buy(&app, "sku", Some(&format!("u{n}"))).await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, json!({"status": "sold_out"}))
        );
    }
    assert_eq!(
        counter.calls.load(Ordering::SeqCst),
        1,
        "a flagged request went upstream"
    );

    // Stock came back: a newer "open" reopens it; a stale "sold out" does not close it.
    edge.flags().apply("sku", false, 2);
    edge.flags().apply("sku", true, 1);
    let (_, body) = buy(&app, "sku", Some("bob")).await;
    assert_eq!(body["status"], "queued");
    assert_eq!(counter.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_sale_window_is_answered_at_the_edge() {
    let (upstream, counter) = counting_upstream(false);
    let app = http::router(edge_over(upstream, settings(), None), None);
    let (status, body) = buy(&app, "later", Some("alice")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "not_started");
    assert_eq!(body["starts_at_ms"], 17_000_000_000_000i64);
    let (status, body) = buy(&app, "over", Some("alice")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("ended"))
    );
    assert_eq!(counter.calls.load(Ordering::SeqCst), 0);
    // An item the gateway does not know goes on: seckill is the judge.
    let (status, _) = buy(&app, "unknown", Some("alice")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counter.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn users_are_rate_limited_one_by_one() {
    let (upstream, counter) = counting_upstream(false);
    let limited = EdgeSettings {
        user_rps: 2,
        ..settings()
    };
    let app = http::router(edge_over(upstream, limited, None), None);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(buy(&app, "sku", Some("greedy")).await.0);
    }
    // A burst of 2, then refused (the window is far shorter than the
    // half second a token takes to come back).
    assert_eq!(&statuses[..2], [StatusCode::OK, StatusCode::OK]);
    assert_eq!(&statuses[2..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // Another user is unaffected; the user comes from the request, not a
    // forwarded-for header.
    let request = Request::post("/api/seckill/sku")
        .header("authorization", crate::helpers::bearer("greedy"))
        .header("x-purchase-token", crate::helpers::pass("greedy", "sku"))
        .header("x-forwarded-for", "10.9.8.7")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(buy(&app, "sku", Some("modest")).await.0, StatusCode::OK);
    assert_eq!(counter.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_global_rate_limit_caps_everything() {
    let (upstream, _) = counting_upstream(false);
    let limited = EdgeSettings {
        global_rps: 3,
        ..settings()
    };
    let app = http::router(edge_over(upstream, limited, None), None);
    let mut refused = 0;
    for n in 0..10 {
        let (status, body) = buy(&app, "sku", Some(&format!("u{n}"))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["code"], "rate_limited");
            refused += 1;
        }
    }
    assert_eq!(refused, 7);
}

#[tokio::test]
async fn bad_requests_are_answered_at_the_edge_with_json() {
    let (upstream, counter) = counting_upstream(false);
    let app = http::router(edge_over(upstream, settings(), None), None);
    let (status, body) = buy(&app, "sku", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_credentials"))
    );
    let (status, _) = buy(&app, "bad%20item", Some("alice")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = buy(&app, "sku", Some(&"u".repeat(500))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Bodies over the limit: declared, and streamed without a length.
    let big = Request::post("/api/seckill/sku")
        .header("authorization", crate::helpers::bearer("alice"))
        .header("x-purchase-token", crate::helpers::pass("alice", "sku"))
        .header("content-length", "5000")
        .body(Body::from(vec![b'x'; 5000]))
        .unwrap();
    let (status, body) = send(&app, big).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let chunks = futures_chunks(5, 1_000);
    let streamed = Request::post("/api/seckill/sku")
        .header("authorization", crate::helpers::bearer("alice"))
        .header("x-purchase-token", crate::helpers::pass("alice", "sku"))
        .body(Body::from_stream(chunks))
        .unwrap();
    assert_eq!(send(&app, streamed).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, body) = send(&app, Request::get("/nowhere").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = send(
        &app,
        Request::get("/api/seckill/sku")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(counter.calls.load(Ordering::SeqCst), 0);
}

fn futures_chunks(
    count: usize,
    size: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::iter((0..count).map(move |_| Ok(bytes::Bytes::from(vec![b'x'; size]))))
}

#[tokio::test]
async fn load_shedding_answers_503_at_once_at_the_limit() {
    let (upstream, counter) = counting_upstream(true);
    let small = EdgeSettings {
        max_in_flight: 2,
        ..settings()
    };
    let app = http::router(edge_over(upstream, small, None), None);
    // Two purchases held upstream fill the gateway.
    let held: Vec<_> = (0..2)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move { buy(&app, "sku", Some(&format!("held{n}"))).await })
        })
        .collect();
    eventually("two in flight", Duration::from_secs(10), || {
        counter.calls.load(Ordering::SeqCst) == 2
    })
    .await;
    // The third is refused while those two are still waiting — not queued.
    let response = tower::ServiceExt::oneshot(
        app.clone(),
        Request::post("/api/seckill/sku")
            .header("authorization", crate::helpers::bearer("third"))
            .header("x-purchase-token", crate::helpers::pass("third", "sku"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(held.iter().all(|h| !h.is_finished()));
    counter.gate.add_permits(2);
    for handle in held {
        assert_eq!(handle.await.unwrap().0, StatusCode::OK);
    }
    // Capacity is back.
    counter.gate.add_permits(1);
    assert_eq!(buy(&app, "sku", Some("fourth")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_lua_hook_rejects_before_anything_else_is_decided() {
    let (upstream, counter) = counting_upstream(false);
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lua/gateway_access.lua"
    ))
    .unwrap();
    let hook = LuaHook::new("gateway_access.lua", &script).unwrap();
    let edge = edge_over(upstream, settings(), Some(hook));
    let app = http::router(Arc::clone(&edge), None);
    let (status, body) = buy(&app, "sku", Some("banned-user")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "rejected");
    assert_eq!(body["error"], "this account may not take part in the sale");
    assert_eq!(buy(&app, "sku", Some("alice")).await.0, StatusCode::OK);

    // Reloaded in place: a new rule takes effect on the next request.
    edge.hook()
        .unwrap()
        .reload("function access(r) if r.item == 'sku' then return 503, 'paused' end end")
        .unwrap();
    let (status, body) = buy(&app, "sku", Some("alice")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("paused"))
    );
    assert_eq!(counter.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_upstreams_time_out_and_are_not_retried() {
    let (upstream, counter) = counting_upstream(true);
    let quick = EdgeSettings {
        request_timeout: Duration::from_millis(200),
        ..settings()
    };
    let app = http::router(edge_over(upstream, quick, None), None);
    let (status, body) = buy(&app, "sku", Some("alice")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("timeout"))
    );
    assert_eq!(counter.calls.load(Ordering::SeqCst), 1, "retried");
}

/// The sold-out fast path answers only after the checks that come before
/// the flag; when one of them says no, the answer is that check's.
#[tokio::test]
async fn a_flagged_item_still_goes_through_the_earlier_checks() {
    let (upstream, counter) = counting_upstream(false);
    let hook = LuaHook::new(
        "test",
        "function access(r) if r.user == 'blocked' then return 403, 'no' end end",
    )
    .unwrap();
    let limited = EdgeSettings {
        global_rps: 1_000,
        ..settings()
    };
    let edge = edge_over(upstream, limited, Some(hook));
    let app = http::router(Arc::clone(&edge), None);
    for item in ["sku", "later", "over"] {
        edge.flags().apply(item, true, 1);
    }
    assert_eq!(
        buy(&app, "sku", Some("alice")).await.1["status"],
        "sold_out"
    );
    assert_eq!(buy(&app, "sku", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        buy(&app, "sku", Some("blocked")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        buy(&app, "later", Some("alice")).await.1["code"],
        "not_started"
    );
    assert_eq!(buy(&app, "over", Some("alice")).await.1["code"], "ended");
    let with_body = Request::post("/api/seckill/sku")
        .header("authorization", crate::helpers::bearer("alice"))
        .header("x-purchase-token", crate::helpers::pass("alice", "sku"))
        .body(Body::from(vec![b'x'; 5000]))
        .unwrap();
    assert_eq!(send(&app, with_body).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let small_body = Request::post("/api/seckill/sku")
        .header("authorization", crate::helpers::bearer("alice"))
        .header("x-purchase-token", crate::helpers::pass("alice", "sku"))
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(send(&app, small_body).await.1["status"], "sold_out"); // via the router
    assert_eq!(counter.calls.load(Ordering::SeqCst), 0);
}

/// The address limit keys on the socket's peer: a client rotating
/// `X-Forwarded-For` is still one address, and the header counts only
/// from a trusted proxy — its rightmost hop that is not a proxy itself.
#[tokio::test]
async fn a_rotating_spoofed_forwarded_for_is_still_rate_limited() {
    use service_kit::http_server::PeerAddr;
    let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let (upstream, counter) = counting_upstream(false);
    let edge = edge_over(
        upstream,
        EdgeSettings {
            address_rps: 2,
            trusted_proxies: vec![proxy],
            ..settings()
        },
        None,
    );
    let app = http::router(Arc::clone(&edge), None);
    let from = |peer: &str, forwarded: &str, n: usize| {
        let user = format!("spoofer-{n}");
        let mut request = Request::post("/api/seckill/sku")
            .header("authorization", crate::helpers::bearer(&user))
            .header("x-purchase-token", crate::helpers::pass(&user, "sku"))
            .header("x-forwarded-for", forwarded)
            .body(Body::empty())
            .unwrap();
        let peer: std::net::SocketAddr = format!("{peer}:5000").parse().unwrap();
        request.extensions_mut().insert(PeerAddr(peer));
        request
    };
    let mut statuses = Vec::new();
    for n in 0..5 {
        let spoofed = format!("198.51.100.{n}");
        statuses.push(send(&app, from("203.0.113.9", &spoofed, n)).await.0);
    }
    assert_eq!(&statuses[..2], [StatusCode::OK, StatusCode::OK]);
    assert_eq!(
        &statuses[2..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
    assert_eq!(counter.calls.load(Ordering::SeqCst), 2);

    // Through the trusted proxy the client is the hop it names; a value
    // the client prepended itself does not move it.
    let headers = |value: &str| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    };
    let client =
        |peer: &str, value: &str| edge.client_address(peer.parse().unwrap(), &headers(value));
    assert_eq!(client("203.0.113.9", "1.2.3.4").to_string(), "203.0.113.9");
    assert_eq!(client("10.0.0.1", "1.2.3.4").to_string(), "1.2.3.4");
    assert_eq!(
        client("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.1").to_string(),
        "1.2.3.4"
    );
    assert_eq!(client("10.0.0.1", "not an address").to_string(), "10.0.0.1");
    // Two clients behind the proxy are two addresses.
    assert_eq!(
        send(&app, from("10.0.0.1", "192.0.2.7", 20)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, from("10.0.0.1", "192.0.2.8", 21)).await.0,
        StatusCode::OK
    );
}
