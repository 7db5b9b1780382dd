//! Tests of the HTTP API and its client.
//!
//! Most tests run a real server on 127.0.0.1:0 over a broker in a fresh
//! temporary directory and drive it through `BrokerHttpClient`, the way a
//! consumer in another process would; bad input goes through a raw
//! `reqwest::Client` so the exact status and JSON body are checked. The
//! router's own tests, without sockets, are in `http_router.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use broker::http_api::send_body_limit;
use broker::{
    BrokerError, BrokerHttpClient, ConsumeMode, ConsumerApi, JoinRequest, Message, PullRequest,
    PullStatus, QueueSelector, wire,
};

use crate::http_helpers::{expect_error, spawn_app};

/// A message with every field set, the body including every byte value.
pub(crate) fn order(i: u32) -> Message {
    let mut body = format!("{{\"order\":{i}}}").into_bytes();
    body.extend(0..=255u8);
    let mut message = Message::new("orders", body)
        .with_key(format!("o-{i}"))
        .with_tags("vip")
        .with_property("item", "sku-1")
        .with_property("attempt", i.to_string())
        .with_property("empty", "");
    message.flags = 0xC0DE_0000 | i;
    message.born_timestamp_ms = 1_700_000_000_000 + i64::from(i);
    message
}

fn pull_request(queue_id: u32, offset: u64, hold_ms: u64) -> PullRequest {
    PullRequest {
        group: "workers".into(),
        topic: "orders".into(),
        queue_id,
        offset,
        max_messages: 32,
        max_bytes: 1 << 20,
        hold_ms,
        tags: None,
        fence: None,
    }
}

#[tokio::test]
async fn send_then_pull_round_trips_every_field() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 4).await.unwrap();
    let sent: Vec<Message> = (0..5).map(order).collect();

    let results = app
        .client
        .send(&sent, QueueSelector::Queue(2))
        .await
        .unwrap();
    assert_eq!(results.len(), sent.len());
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.topic, "orders");
        assert_eq!(result.queue_id, 2);
        assert_eq!(result.queue_offset, i as u64);
    }

    let request = pull_request(2, 0, 0);
    let pulled = app.client.pull(&request).await.unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.next_offset, 5);
    assert_eq!((pulled.min_offset, pulled.max_offset), (0, 5));
    assert_eq!(pulled.messages.len(), sent.len());
    for ((stored, message), result) in pulled.messages.iter().zip(&sent).zip(&results) {
        assert_eq!(&stored.message, message);
        assert_eq!(stored.queue_id, result.queue_id);
        assert_eq!(stored.queue_offset, result.queue_offset);
        assert_eq!(stored.commit_log_offset, result.commit_log_offset);
        assert!(stored.store_timestamp_ms > 0);
        assert!(stored.stored_size as usize > message.body.len());
    }
    // The same pull against the broker in this process answers the same.
    let local = app.broker.pull(&request).await.unwrap();
    assert_eq!(pulled, local);
}

#[tokio::test]
async fn key_hash_keeps_a_key_on_one_queue_and_round_robin_spreads() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 4).await.unwrap();
    let keys = ["a", "b", "c", "d", "e", "f"];
    let batch: Vec<Message> = (0..24)
        .map(|i| Message::new("orders", format!("m{i}")).with_key(keys[i % keys.len()]))
        .collect();
    let results = app
        .client
        .send(&batch, QueueSelector::KeyHash)
        .await
        .unwrap();
    assert_eq!(results.len(), batch.len());
    for (message, result) in batch.iter().zip(&results) {
        assert_eq!(
            result.queue_id,
            crc32c::crc32c(message.key.as_bytes()) % 4,
            "key {} left its queue",
            message.key
        );
    }
    // Within a queue, messages keep the order they were sent in.
    for queue in 0..4 {
        let offsets: Vec<u64> = results
            .iter()
            .filter(|r| r.queue_id == queue)
            .map(|r| r.queue_offset)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }

    let first = app
        .client
        .send(&[order(1)], QueueSelector::RoundRobin)
        .await
        .unwrap();
    let second = app
        .client
        .send(&[order(2)], QueueSelector::RoundRobin)
        .await
        .unwrap();
    assert_eq!((first[0].queue_id + 1) % 4, second[0].queue_id);
}

#[tokio::test]
async fn a_one_way_send_is_accepted_and_becomes_visible() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 1).await.unwrap();
    let results = app
        .client
        .send_oneway(&[order(7)], QueueSelector::Queue(0))
        .await
        .unwrap();
    assert_eq!(results[0].queue_offset, 0);
    // In sync mode it is visible once the next flush covers it.
    let pulled = app.client.pull(&pull_request(0, 0, 5_000)).await.unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages[0].message, order(7));
}

#[tokio::test]
async fn a_held_pull_returns_when_a_message_arrives() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 2).await.unwrap();
    let client = app.client.clone();
    let held = tokio::spawn(async move {
        let started = Instant::now();
        let result = client.pull(&pull_request(1, 0, 10_000)).await;
        (result, started.elapsed())
    });
    // The send goes only once the pull is parked on the queue, so the
    // answer below can only come from the wake-up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.broker.held_pulls("orders", 1) == 0 {
        assert!(Instant::now() < deadline, "the pull was never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!held.is_finished(), "the pull should still be held");

    app.client
        .send(&[order(1)], QueueSelector::Queue(1))
        .await
        .unwrap();
    let (result, elapsed) = held.await.unwrap();
    let pulled = result.unwrap();
    assert_eq!(pulled.status, PullStatus::Found);
    assert_eq!(pulled.messages.len(), 1);
    assert_eq!(pulled.messages[0].message, order(1));
    assert!(
        elapsed < Duration::from_secs(10),
        "woken by the arrival, not the hold ({elapsed:?})"
    );
}

#[tokio::test]
async fn a_held_pull_returns_empty_after_its_hold() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 1).await.unwrap();
    let started = Instant::now();
    let pulled = app.client.pull(&pull_request(0, 0, 200)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(pulled.status, PullStatus::NoNewMessages);
    assert!(pulled.messages.is_empty());
    assert_eq!(pulled.next_offset, 0);
    // Roughly the hold: not answered at once (timers may round a little).
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
}

#[tokio::test]
async fn offsets_commit_and_read_back() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 2).await.unwrap();
    let api: Arc<dyn ConsumerApi> = Arc::new(app.client.clone());
    assert_eq!(api.committed_offset("g", "orders", 0).await.unwrap(), None);

    let sent: Vec<Message> = (0..3).map(order).collect();
    app.client
        .send(&sent, QueueSelector::Queue(0))
        .await
        .unwrap();
    api.commit_offset("g", "orders", 0, 2).await.unwrap();
    assert_eq!(
        api.committed_offset("g", "orders", 0).await.unwrap(),
        Some(2)
    );
    assert_eq!(app.broker.committed_offset("g", "orders", 0), Some(2));

    let lag = app.client.lag().await.unwrap();
    let mine = lag
        .iter()
        .find(|l| l.group == "g" && l.topic == "orders" && l.queue_id == 0)
        .expect("lag of g on orders/0");
    assert_eq!((mine.committed, mine.max_offset, mine.lag), (2, 3, 1));

    // Past the end: refused, as by the local broker.
    let past_end = api.commit_offset("g", "orders", 0, 10).await.unwrap_err();
    assert!(
        matches!(&past_end, BrokerError::Remote(m) if m.contains("invalid_argument")),
        "{past_end:?}"
    );
    let unknown = api.commit_offset("g", "nope", 0, 0).await.unwrap_err();
    assert!(
        matches!(&unknown, BrokerError::TopicNotFound(t) if t == "nope"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn groups_join_heartbeat_leave_and_unknown_members_come_back_typed() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 4).await.unwrap();
    let api: Arc<dyn ConsumerApi> = Arc::new(app.client.clone());
    let join = |member: &str, mode| JoinRequest {
        group: "workers".into(),
        member: member.into(),
        mode,
        topics: vec!["orders".into()],
    };

    let a = api
        .join_group(&join("a", ConsumeMode::Clustering))
        .await
        .unwrap();
    // The four queues of the topic plus the group's retry queue.
    assert_eq!(a.queues.len(), 5);
    assert!(a.queues.iter().any(|q| q.topic == "%RETRY%workers"));
    assert_eq!(a.offset_owner, "workers");
    api.join_group(&join("b", ConsumeMode::Clustering))
        .await
        .unwrap();
    let a = api.heartbeat("workers", "a").await.unwrap();
    let b = api.heartbeat("workers", "b").await.unwrap();
    assert_eq!((a.queues.len(), b.queues.len()), (3, 2));
    assert!(a.queues.iter().all(|q| !b.queues.contains(q)));
    assert_eq!(a.members, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(a.generation, b.generation);

    api.leave_group("workers", "b").await.unwrap();
    let gone = api.heartbeat("workers", "b").await.unwrap_err();
    assert!(
        matches!(&gone, BrokerError::UnknownMember { group, member } if group == "workers" && member == "b"),
        "{gone:?}"
    );
    let again = api.leave_group("workers", "b").await.unwrap_err();
    assert!(
        matches!(again, BrokerError::UnknownMember { .. }),
        "{again:?}"
    );
    assert_eq!(api.heartbeat("workers", "a").await.unwrap().queues.len(), 5);

    // Joining in the other mode is a conflict; an unknown topic is named.
    let conflict = api
        .join_group(&join("c", ConsumeMode::Broadcasting))
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, BrokerError::Remote(m) if m.contains("group_mode_conflict")),
        "{conflict:?}"
    );
    let mut unknown_topic = join("d", ConsumeMode::Clustering);
    unknown_topic.topics = vec!["nope".into()];
    let unknown = api.join_group(&unknown_topic).await.unwrap_err();
    assert!(
        matches!(&unknown, BrokerError::TopicNotFound(t) if t == "nope"),
        "{unknown:?}"
    );

    // Names with characters that need escaping survive the URL.
    let odd = JoinRequest {
        group: "g/1 %x".into(),
        member: "host:42 ü".into(),
        mode: ConsumeMode::Broadcasting,
        topics: vec!["orders".into()],
    };
    let assignment = api.join_group(&odd).await.unwrap();
    assert_eq!(assignment.offset_owner, "g/1 %x%host:42 ü");
    assert_eq!(assignment.members, vec!["host:42 ü".to_string()]);
}

#[tokio::test]
async fn topics_list_their_queue_offsets() {
    let app = spawn_app().await;
    let created = app.client.create_topic("orders", 3).await.unwrap();
    assert_eq!((created.name.as_str(), created.queues), ("orders", 3));
    // Same count again: fine (idempotent).
    app.client.create_topic("orders", 3).await.unwrap();
    app.client
        .send(&[order(1), order(2)], QueueSelector::Queue(1))
        .await
        .unwrap();

    let topics = app.client.topics().await.unwrap();
    let orders = topics.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!(orders.queues, 3);
    let offsets: Vec<(u32, u64, u64)> = orders
        .offsets
        .iter()
        .map(|q| (q.queue_id, q.min_offset, q.max_offset))
        .collect();
    assert_eq!(offsets, vec![(0, 0, 0), (1, 0, 2), (2, 0, 0)]);

    let stats = app.client.queue_stats().await.unwrap();
    assert_eq!(stats, app.broker.queue_stats());
}

#[tokio::test]
async fn a_broker_shutting_down_answers_503_and_the_client_says_so() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 1).await.unwrap();
    app.broker.shutdown().await.unwrap();
    let refused = app
        .client
        .send(&[order(1)], QueueSelector::Queue(0))
        .await
        .unwrap_err();
    assert!(matches!(refused, BrokerError::ShuttingDown), "{refused:?}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_remote_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = BrokerHttpClient::new(
        &format!("http://{addr}"),
        crate::http_helpers::TEST_BROKER_KEY,
    )
    .unwrap();
    let error = client.pull(&pull_request(0, 0, 0)).await.unwrap_err();
    assert!(matches!(error, BrokerError::Remote(_)), "{error:?}");
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 2).await.unwrap();
    let send_path = "/broker/topics/orders/messages";

    // Unknown topic and queue.
    let response = app.get("/broker/pull?topic=nope&queue=0&offset=0").await;
    expect_error(response, StatusCode::NOT_FOUND, "topic_not_found").await;
    let response = app.get("/broker/pull?topic=orders&queue=9&offset=0").await;
    expect_error(response, StatusCode::NOT_FOUND, "queue_not_found").await;
    let batch = wire::encode_send_batch(&[Message::new("nope", "x")]).unwrap();
    let response = app
        .post_raw("/broker/topics/nope/messages", wire::CONTENT_TYPE, batch)
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "topic_not_found").await;

    // Bad query values and bad JSON.
    let response = app
        .get("/broker/pull?topic=orders&queue=abc&offset=0")
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .post_raw("/broker/pull", "application/json", "{not json")
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .post_json("/broker/pull", &serde_json::json!({ "topic": "orders" }))
        .await;
    expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable").await;
    let response = app
        .post_json(
            "/broker/pull",
            &serde_json::json!({
                "topic": "orders", "queue": 0, "offset": 0, "max_messages": 0
            }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;

    // Topic creation: bad name, bad count, conflicting count.
    let response = app
        .post_json(
            "/broker/topics",
            &serde_json::json!({ "name": "bad name!", "queues": 1 }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_topic").await;
    let response = app
        .post_json(
            "/broker/topics",
            &serde_json::json!({ "name": "zero", "queues": 0 }),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let response = app
        .post_json(
            "/broker/topics",
            &serde_json::json!({ "name": "orders", "queues": 5 }),
        )
        .await;
    expect_error(response, StatusCode::CONFLICT, "topic_conflict").await;

    // Sends: garbage, wrong content type, wrong topic, both selectors.
    let response = app
        .post_raw(
            send_path,
            wire::CONTENT_TYPE,
            &b"\x00\x01 this is not a batch \xff"[..],
        )
        .await;
    let body = expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(body.error.contains("malformed message batch"), "{body:?}");
    let response = app.post_raw(send_path, "application/json", "[]").await;
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let other_topic = wire::encode_send_batch(&[Message::new("other", "x")]).unwrap();
    let response = app
        .post_raw(send_path, wire::CONTENT_TYPE, other_topic)
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let response = app
        .post_raw(
            &format!("{send_path}?queue=0&key_hash=true"),
            wire::CONTENT_TYPE,
            wire::encode_send_batch(&[order(1)]).unwrap(),
        )
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    let empty = wire::encode_send_batch(&[]).unwrap();
    let response = app.post_raw(send_path, wire::CONTENT_TYPE, empty).await;
    expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;

    // A message over max_message_size, in a body under the limit.
    let big = Message::new("orders", vec![7u8; 20 * 1024]);
    let response = app
        .post_raw(
            send_path,
            wire::CONTENT_TYPE,
            wire::encode_send_batch(&[big]).unwrap(),
        )
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "message_too_large").await;

    // A body over the send limit is refused before it is decoded.
    let limit = send_body_limit(app.broker.config());
    let response = app
        .post_raw(send_path, wire::CONTENT_TYPE, vec![0u8; limit + 1])
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // The broker is unharmed: nothing was appended by any of that.
    let stats = app.client.queue_stats().await.unwrap();
    assert!(stats.iter().all(|q| q.max_offset == 0), "{stats:?}");
}

#[tokio::test]
async fn key_lookup_time_lookup_reset_and_retention_over_http() {
    let app = crate::http_helpers::spawn_app().await;
    app.broker.create_topic("orders", 1).unwrap();
    for n in 0..5u32 {
        let message = Message::new("orders", format!("order {n}")).with_key(format!("k{}", n % 2));
        app.broker.put(0, vec![message]).await.unwrap();
    }
    let response = app.get("/broker/messages?key=k1&topic=orders").await;
    assert_eq!(response.status(), StatusCode::OK);
    let found = wire::decode_pull_result(response.bytes().await.unwrap()).unwrap();
    let bodies: Vec<&[u8]> = found.messages.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, [&b"order 1"[..], &b"order 3"[..]]);
    let response = app.get("/broker/messages?key=").await;
    crate::http_helpers::expect_error(response, StatusCode::BAD_REQUEST, "invalid_argument").await;

    let third = app
        .broker
        .pull(&pull_request(0, 2, 0))
        .await
        .unwrap()
        .messages
        .remove(0);
    let path = format!(
        "/broker/topics/orders/queues/0/offset-at?timestamp_ms={}",
        third.store_timestamp_ms
    );
    let offset: serde_json::Value = app.get(&path).await.json().await.unwrap();
    let expected = app
        .broker
        .offset_for_timestamp("orders", 0, third.store_timestamp_ms)
        .unwrap();
    assert_eq!(offset["offset"], expected);
    let response = app
        .get("/broker/topics/orders/queues/0/offset-at?timestamp_ms=soon")
        .await;
    crate::http_helpers::expect_error(response, StatusCode::BAD_REQUEST, "bad_request").await;

    let body = serde_json::json!({ "topic": "orders", "to": "latest" });
    let moved: serde_json::Value = app
        .post_json("/broker/groups/g/offsets/reset", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(moved, serde_json::json!([{ "queue": 0, "offset": 5 }]));
    assert_eq!(app.broker.committed_offset("g", "orders", 0), Some(5));
    let body =
        serde_json::json!({ "topic": "orders", "to": "timestamp", "timestamp_ms": i64::MIN });
    let response = app.post_json("/broker/groups/g/offsets/reset", &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.broker.committed_offset("g", "orders", 0), Some(0));

    let report: broker::RetentionReport = app
        .post_json("/broker/retention", &serde_json::json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report.segments_deleted, 0);
}

#[tokio::test]
async fn delays_and_tag_filters_work_over_http() {
    let app = crate::http_helpers::spawn_app().await;
    app.broker.create_topic("orders", 1).unwrap();
    let due = app.broker.now_ms() + 300;
    let delayed = Message::new("orders", "later")
        .with_tags("vip")
        .with_property(
            broker::system_topics::property::DELIVER_AT_MS,
            due.to_string(),
        );
    let plain = Message::new("orders", "now").with_tags("plain");
    app.client
        .send(&[delayed], QueueSelector::Queue(0))
        .await
        .unwrap();
    app.client
        .send(&[plain], QueueSelector::Queue(0))
        .await
        .unwrap();
    assert_eq!(app.broker.delayed_pending(), 1);

    // Only "vip" wanted: the plain message is skipped and the pull holds
    // until the delayed one is delivered.
    let mut request = pull_request(0, 0, 10_000);
    request.tags = Some("vip".into());
    let result = app.client.pull(&request).await.unwrap();
    assert_eq!(result.messages.len(), 1);
    let message = &result.messages[0];
    assert_eq!(&message.message.body[..], b"later");
    assert!(message.store_timestamp_ms >= due, "delivered early");
    assert_eq!(result.next_offset, 2);
}

/// `send_by_key` and `messages_by_key` place and find messages the same
/// way whether the broker is in this process or behind its HTTP API.
#[tokio::test]
async fn send_by_key_and_key_lookup_agree_locally_and_remotely() {
    let app = spawn_app().await;
    app.client.create_topic("orders", 4).await.unwrap();
    let local: Arc<dyn ConsumerApi> = Arc::new(app.broker.clone());
    let remote: Arc<dyn ConsumerApi> = Arc::new(app.client.clone());
    for (api, prefix) in [(&local, "local"), (&remote, "remote")] {
        let messages: Vec<Message> = (0..6)
            .map(|i| Message::new("orders", format!("{i}")).with_key(format!("{prefix}-{i}")))
            .collect();
        let results = api.send_by_key(messages).await.unwrap();
        assert_eq!(results.len(), 6);
        for (i, result) in results.iter().enumerate() {
            let key = format!("{prefix}-{i}");
            assert_eq!(result.queue_id, broker::queue_for_key(&key, 4), "{key}");
            // Found through either client, on the queue it hashed to.
            for finder in [&local, &remote] {
                let found = finder
                    .messages_by_key(&key, Some("orders"), 10)
                    .await
                    .unwrap();
                assert_eq!(found.len(), 1, "{key}");
                assert_eq!(found[0].queue_id, result.queue_id);
                assert_eq!(found[0].queue_offset, result.queue_offset);
                assert_eq!(found[0].message.body, format!("{i}").as_bytes());
            }
        }
    }
    assert!(
        remote
            .messages_by_key("nobody", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(remote.send_by_key(Vec::new()).await.unwrap().is_empty());
}
