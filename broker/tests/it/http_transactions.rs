//! Retry, dead letters and transactions over the HTTP API.
//!
//! Everything goes through a real server on 127.0.0.1:0 and
//! `BrokerHttpClient`, as a producer or consumer in another process would
//! use it. Check-backs are answered by a small axum server on another free
//! port standing in for the remote producer. Waiting on the broker's
//! background check-back is done by polling with a generous bound, never by
//! asserting how long it took.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Json, Router, routing::post};
use broker::http_api::{CheckAnswer, OpenTransactions};
use broker::system_topics::property;
use broker::{
    ConsumerApi, HttpTransactionChecker, Message, PullRequest, PullStatus, QueueSelector,
    RetryOutcome, StoredMessage, TransactionState, wire,
};
use bytes::Bytes;

use crate::http_helpers::{TestApp, expect_error, spawn_app, spawn_app_with};

/// Longest wait for the broker's background check-back to act.
const PATIENCE: Duration = Duration::from_secs(10);
/// Time between looks while waiting.
const POLL: Duration = Duration::from_millis(50);

fn order(n: u32) -> Message {
    Message::new("orders", format!("{{\"order\":{n}}}"))
        .with_key(format!("o-{n}"))
        .with_tags("vip")
        .with_property("item", "sku-1")
}

/// Every visible message of `orders`/`queue_id`, through the client.
async fn pull_orders(app: &TestApp, queue_id: u32) -> Vec<StoredMessage> {
    let pulled = app
        .client
        .pull(&PullRequest {
            group: "workers".into(),
            topic: "orders".into(),
            queue_id,
            offset: 0,
            max_messages: 32,
            max_bytes: 1 << 20,
            hold_ms: 0,
            tags: None,
            fence: None,
        })
        .await
        .expect("pull");
    pulled.messages
}

/// Polls `done` every [`POLL`] until it holds, failing after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The same fields a delivered message must keep from the one sent.
fn assert_same_message(got: &Message, sent: &Message) {
    assert_eq!(got.topic, sent.topic);
    assert_eq!(got.key, sent.key);
    assert_eq!(got.tags, sent.tags);
    assert_eq!(got.body, sent.body);
    for (k, v) in &sent.properties {
        assert_eq!(got.properties.get(k), Some(v), "property {k}");
    }
}

// ---------------------------------------------------------------------------
// Transactions.

#[tokio::test]
async fn a_half_message_is_invisible_until_committed_over_http_and_gone_on_rollback() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 2).await.unwrap();

    let half = app.client.send_half("seckill", 1, &order(1)).await.unwrap();
    assert!(
        pull_orders(&app, 1).await.is_empty(),
        "visible before commit"
    );
    assert_eq!(app.client.open_transactions().await.unwrap(), 1);
    let open: OpenTransactions = app.get("/broker/transactions").await.json().await.unwrap();
    assert_eq!(open.open, 1);

    let committed = app
        .client
        .end_transaction(half.half_offset, TransactionState::Commit)
        .await
        .unwrap()
        .expect("a commit says where the message went");
    assert_eq!(
        (
            committed.topic.as_str(),
            committed.queue_id,
            committed.queue_offset
        ),
        ("orders", 1, 0)
    );
    let visible = pull_orders(&app, 1).await;
    assert_eq!(visible.len(), 1);
    assert_same_message(&visible[0].message, &order(1));
    assert_eq!(app.client.open_transactions().await.unwrap(), 0);

    // Rollback: nothing is delivered, the transaction is closed.
    let half = app.client.send_half("seckill", 1, &order(2)).await.unwrap();
    assert_eq!(app.client.open_transactions().await.unwrap(), 1);
    let rolled_back = app
        .client
        .end_transaction(half.half_offset, TransactionState::Rollback)
        .await
        .unwrap();
    assert_eq!(rolled_back, None);
    assert_eq!(app.client.open_transactions().await.unwrap(), 0);
    assert_eq!(
        pull_orders(&app, 1).await.len(),
        1,
        "the rollback delivered"
    );

    // A transaction ends once: the second ending is refused.
    let response = app
        .post_json(
            &format!("/broker/transactions/{}/end", half.half_offset),
            &serde_json::json!({ "state": "commit" }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    assert_eq!(pull_orders(&app, 1).await.len(), 1);
}

#[tokio::test]
async fn the_end_answer_is_json_with_the_committed_result_or_null() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 1).await.unwrap();
    let commit = app.client.send_half("seckill", 0, &order(1)).await.unwrap();
    let rollback = app.client.send_half("seckill", 0, &order(2)).await.unwrap();

    let response = app
        .post_json(
            &format!("/broker/transactions/{}/end", commit.half_offset),
            &serde_json::json!({ "state": "commit" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["committed"]["topic"], "orders");
    assert_eq!(body["committed"]["queue_offset"], 0);

    let response = app
        .post_json(
            &format!("/broker/transactions/{}/end", rollback.half_offset),
            &serde_json::json!({ "state": "rollback" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "committed": null }));
}

/// Stands in for a remote producer's check-back endpoint: answers with a
/// fixed state, counts the calls and keeps what the last one carried.
#[derive(Debug)]
struct Callback {
    answer: TransactionState,
    calls: AtomicU32,
    last: parking_lot::Mutex<Option<(HeaderMap, Vec<Message>)>>,
}

impl Callback {
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn answer_check(
    State(callback): State<Arc<Callback>>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<CheckAnswer> {
    let messages = wire::decode_send_batch(body).unwrap_or_default();
    *callback.last.lock() = Some((headers, messages));
    callback.calls.fetch_add(1, Ordering::SeqCst);
    Json(CheckAnswer {
        state: callback.answer,
    })
}

/// A check-back endpoint on a free port; returns its URL.
async fn spawn_callback(
    answer: TransactionState,
) -> (Arc<Callback>, String, tokio::task::JoinHandle<()>) {
    let callback = Arc::new(Callback {
        answer,
        calls: AtomicU32::new(0),
        last: parking_lot::Mutex::new(None),
    });
    let app = Router::new()
        .route("/check", post(answer_check))
        .with_state(callback.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (callback, format!("http://{addr}/check"), server)
}

/// Check-backs come quickly, so a test waits well under a second for them.
fn fast_checks(config: &mut broker::BrokerConfig) {
    config.transaction_timeout = Duration::from_millis(200);
    config.transaction_check_interval = Duration::from_millis(200);
}

#[tokio::test]
async fn an_http_checker_answering_commit_delivers_an_abandoned_half() {
    let app = spawn_app_with(fast_checks).await;
    app.client.create_topic("orders", 2).await.unwrap();
    let (callback, url, server) = spawn_callback(TransactionState::Commit).await;
    app.client
        .register_checker_url("seckill", &url)
        .await
        .unwrap();

    // The producer sends its half and then never says how it ended.
    let sent = order(7);
    let half = app.client.send_half("seckill", 1, &sent).await.unwrap();

    eventually("the check-back commits the half", || async {
        callback.calls() >= 1 && !pull_orders(&app, 1).await.is_empty()
    })
    .await;
    let delivered = pull_orders(&app, 1).await;
    assert_eq!(delivered.len(), 1, "committed once");
    assert_same_message(&delivered[0].message, &sent);
    assert_eq!(
        delivered[0].message.properties.get(property::HALF_OFFSET),
        Some(&half.half_offset.to_string())
    );
    assert_eq!(app.client.open_transactions().await.unwrap(), 0);

    // The callback got the real message and the transaction's identity.
    let (headers, messages) = callback.last.lock().clone().expect("a recorded call");
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(HttpTransactionChecker::HALF_OFFSET_HEADER),
        Some(half.half_offset.to_string())
    );
    assert_eq!(
        header(HttpTransactionChecker::PRODUCER_GROUP_HEADER).as_deref(),
        Some("seckill")
    );
    assert_eq!(
        header(HttpTransactionChecker::QUEUE_ID_HEADER).as_deref(),
        Some("1")
    );
    assert_eq!(
        header(header::CONTENT_TYPE.as_str()).as_deref(),
        Some(wire::CONTENT_TYPE)
    );
    assert_eq!(messages.len(), 1, "one message per check");
    assert_same_message(&messages[0], &sent);
    for internal in [
        property::REAL_TOPIC,
        property::REAL_QUEUE,
        property::PRODUCER_GROUP,
    ] {
        assert!(
            !messages[0].properties.contains_key(internal),
            "the checker saw the broker's own property {internal}"
        );
    }
    server.abort();
}

#[tokio::test]
async fn an_unreachable_http_checker_counts_as_unknown_until_the_rollback() {
    let app = spawn_app_with(|config| {
        fast_checks(config);
        config.transaction_max_checks = 2;
    })
    .await;
    app.client.create_topic("orders", 1).await.unwrap();
    // A port that was free a moment ago: connections are refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    app.client
        .register_checker_url("seckill", &format!("http://{addr}/check"))
        .await
        .unwrap();

    app.client.send_half("seckill", 0, &order(1)).await.unwrap();
    assert_eq!(app.client.open_transactions().await.unwrap(), 1);
    eventually("two unknown answers roll the half back", || async {
        app.client.open_transactions().await.unwrap() == 0
    })
    .await;
    assert!(
        pull_orders(&app, 0).await.is_empty(),
        "an unanswered transaction was delivered"
    );
}

#[tokio::test]
async fn an_http_checker_answering_rollback_discards_the_half() {
    let app = spawn_app_with(fast_checks).await;
    app.client.create_topic("orders", 1).await.unwrap();
    let (callback, url, server) = spawn_callback(TransactionState::Rollback).await;
    app.client
        .register_checker_url("seckill", &url)
        .await
        .unwrap();
    app.client.send_half("seckill", 0, &order(1)).await.unwrap();
    eventually("the check-back rolls the half back", || async {
        app.client.open_transactions().await.unwrap() == 0
    })
    .await;
    assert!(callback.calls() >= 1);
    assert!(pull_orders(&app, 0).await.is_empty());
    server.abort();
}

#[tokio::test]
async fn bad_transaction_input_gets_a_json_400() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 1).await.unwrap();
    let half = app.client.send_half("seckill", 0, &order(1)).await.unwrap();
    let end = format!("/broker/transactions/{}/end", half.half_offset);

    // "unknown" is a checker's answer, not an ending: refused, and the
    // transaction is still open.
    let response = app
        .post_json(&end, &serde_json::json!({ "state": "unknown" }))
        .await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    assert!(body.error.contains("unknown"), "{body:?}");
    assert_eq!(app.client.open_transactions().await.unwrap(), 1);
    let local = app
        .client
        .end_transaction(half.half_offset, TransactionState::Unknown)
        .await
        .unwrap_err();
    assert!(
        matches!(local, broker::BrokerError::InvalidArgument(_)),
        "{local:?}"
    );
    // Other bad endings: a state that does not exist, a bad offset, no
    // such transaction.
    let response = app
        .post_json(&end, &serde_json::json!({ "state": "maybe" }))
        .await;
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let response = app
        .post_json(
            "/broker/transactions/abc/end",
            &serde_json::json!({ "state": "commit" }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .post_json(
            "/broker/transactions/999/end",
            &serde_json::json!({ "state": "commit" }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;

    // A half send carries exactly one message.
    let post_half = |body: Bytes, query: &str| {
        app.http
            .post(app.url(&format!("/broker/transactions/seckill/half{query}")))
            .header(header::CONTENT_TYPE, wire::CONTENT_TYPE)
            .body(body)
            .send()
    };
    let two = wire::encode_send_batch(&[order(2), order(3)]).unwrap();
    let body = expect_error(
        post_half(two, "?queue=0").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert!(body.error.contains("exactly one message"), "{body:?}");
    let none = wire::encode_send_batch(&[]).unwrap();
    expect_error(
        post_half(none, "?queue=0").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let garbage = Bytes::from_static(b"not a batch");
    expect_error(
        post_half(garbage, "?queue=0").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    let one = wire::encode_send_batch(&[order(4)]).unwrap();
    expect_error(
        post_half(one.clone(), "").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        post_half(one, "?queue=5").await.unwrap(),
        StatusCode::NOT_FOUND,
        "queue_not_found",
    )
    .await;
    let response = app
        .post_raw(
            "/broker/transactions/seckill/half?queue=0",
            "application/json",
            "{}",
        )
        .await;
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // Through the client, an unknown topic comes back typed.
    let unknown = app
        .client
        .send_half("seckill", 0, &Message::new("nope", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, broker::BrokerError::TopicNotFound(t) if t == "nope"),
        "{unknown:?}"
    );

    // Checker URLs: http(s) and parseable only; the group must fit a header.
    let checkers = "/broker/transactions/checkers/seckill";
    for url in ["ftp://x", "not a url", "http://", "/relative"] {
        let response = app
            .put_json(checkers, &serde_json::json!({ "url": url }))
            .await;
        let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
        assert!(body.error.contains("checker URL"), "{url}: {body:?}");
    }
    let local = app
        .client
        .register_checker_url("seckill", "ftp://x")
        .await
        .unwrap_err();
    assert!(
        matches!(local, broker::BrokerError::InvalidArgument(_)),
        "{local:?}"
    );
    let response = app.put_json(checkers, &serde_json::json!({})).await;
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let response = app
        .put_json(
            "/broker/transactions/checkers/s%C3%BC",
            &serde_json::json!({ "url": "http://127.0.0.1:1/check" }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let response = app
        .put_json(
            checkers,
            &serde_json::json!({ "url": "http://127.0.0.1:1/check" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let registered: serde_json::Value = response.json().await.unwrap();
    assert_eq!(registered["producer_group"], "seckill");
    // Only hosts on the allow-list, compared parsed: a user part, another
    // scheme or another host is refused before anything is registered.
    for outside in [
        "http://10.0.0.9:8081/check",
        "http://127.0.0.1:1@169.254.169.254/latest/meta-data",
        "https://127.0.0.1:1/check",
        "http://localhost:1/check",
    ] {
        let response = app
            .put_json(checkers, &serde_json::json!({ "url": outside }))
            .await;
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }

    // Nothing of that reached the topic, and only the first half is open.
    assert!(pull_orders(&app, 0).await.is_empty());
    assert_eq!(app.client.open_transactions().await.unwrap(), 1);
}

// ---------------------------------------------------------------------------
// Retry and dead letters.

#[tokio::test]
async fn a_failed_message_goes_to_the_retry_topic_over_http() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 1).await.unwrap();
    let sent = app
        .client
        .send(&[order(1), order(2)], QueueSelector::Queue(0))
        .await
        .unwrap();

    let outcome = app
        .client
        .reconsume_later("workers", "orders", 0, sent[0].queue_offset, "db down")
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RetryOutcome::Retry {
            attempt: 1,
            delay_level: 3
        }
    );
    // The JSON shape of the same answer.
    let response = app
        .post_json(
            "/broker/groups/workers/retry",
            &serde_json::json!({
                "topic": "orders", "queue": 0, "offset": sent[1].queue_offset, "reason": "x"
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "outcome": "retry", "attempt": 1, "delay_level": 3 })
    );

    // A position that holds no message is a clear 400 (no store paths in
    // it); an unknown topic is a 404 naming it.
    let response = app
        .post_json(
            "/broker/groups/workers/retry",
            &serde_json::json!({ "topic": "orders", "queue": 0, "offset": 99, "reason": "x" }),
        )
        .await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let data_dir = app.broker.config().data_dir.to_string_lossy().into_owned();
    assert!(!body.error.contains(&data_dir), "{body:?}");
    let unknown = app
        .client
        .reconsume_later("workers", "nope", 0, 0, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, broker::BrokerError::TopicNotFound(t) if t == "nope"),
        "{unknown:?}"
    );
    let response = app
        .post_json(
            "/broker/groups/workers/retry",
            &serde_json::json!({ "topic": "orders" }),
        )
        .await;
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_over_http() {
    // No retries: the first failure dead-letters at once.
    let app = spawn_app_with(|config| config.max_reconsume_times = 0).await;
    app.client.create_topic("orders", 2).await.unwrap();
    let sent = order(5);
    let stored = app
        .client
        .send(std::slice::from_ref(&sent), QueueSelector::Queue(1))
        .await
        .unwrap();

    // Before any failure the list is empty, and listing creates nothing.
    let empty = app.client.dead_letters("workers", 0, 10).await.unwrap();
    assert_eq!(empty.status, PullStatus::NoNewMessages);
    assert!(empty.messages.is_empty());
    let topics = app.client.topics().await.unwrap();
    assert!(
        topics.iter().all(|t| t.name != "%DLQ%workers"),
        "listing created the DLQ: {topics:?}"
    );

    let outcome = app
        .client
        .reconsume_later("workers", "orders", 1, stored[0].queue_offset, "bad data")
        .await
        .unwrap();
    assert_eq!(outcome, RetryOutcome::DeadLetter { failures: 1 });

    let dead = app.client.dead_letters("workers", 0, 10).await.unwrap();
    assert_eq!(dead.status, PullStatus::Found);
    assert_eq!(dead.messages.len(), 1);
    assert_eq!(dead.next_offset, 1);
    let letter = &dead.messages[0].message;
    assert_eq!(letter.topic, "%DLQ%workers");
    assert_eq!(letter.body, sent.body);
    assert_eq!(letter.key, sent.key);
    let props = &letter.properties;
    assert_eq!(props.get(property::ORIGIN_TOPIC).unwrap(), "orders");
    assert_eq!(props.get(property::ORIGIN_QUEUE).unwrap(), "1");
    assert_eq!(props.get(property::LAST_FAILURE).unwrap(), "bad data");
    // The raw answer is a pull batch.
    let response = app.get("/broker/groups/workers/dlq?offset=0&max=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], wire::CONTENT_TYPE);
    let raw = wire::decode_pull_result(response.bytes().await.unwrap()).unwrap();
    assert_eq!(raw, dead);

    let redriven = app
        .client
        .redrive_dead_letter("workers", dead.messages[0].queue_offset)
        .await
        .unwrap();
    assert_eq!(
        (
            redriven.topic.as_str(),
            redriven.queue_id,
            redriven.queue_offset
        ),
        ("orders", 1, 1)
    );
    let back = pull_orders(&app, 1).await;
    assert_eq!(back.len(), 2);
    assert_eq!(back[1].message.body, sent.body);
    assert_eq!(back[1].message.key, sent.key);
    assert!(
        !back[1]
            .message
            .properties
            .contains_key(property::RECONSUME_TIMES),
        "a redriven message starts a fresh retry budget"
    );

    // Redriving an offset the DLQ does not hold, or a DLQ that does not
    // exist, is refused with JSON.
    let response = app
        .http
        .post(app.url("/broker/groups/workers/dlq/9/redrive"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let response = app
        .http
        .post(app.url("/broker/groups/nobody/dlq/0/redrive"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND, "topic_not_found").await;
    let response = app
        .http
        .post(app.url("/broker/groups/workers/dlq/x/redrive"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app.get("/broker/groups/workers/dlq?max=abc").await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
}
