//! The order API and reconciliation, through the router as a tower
//! service, over a real broker, the embedded stock store and SQLite or
//! PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use broker::{ConsumeMode, JoinRequest, queue_for_key};
use order_worker::{DEFAULT_GROUP, NewOrder, OrderWorker, http, reconcile::reconcile};
use seckill::{ORDER_QUEUES, ORDERS_TOPIC, OrderMessage, PAYMENT_TIMEOUTS_TOPIC};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::rig::{Db, Rig, order};

const MINUTE: Duration = Duration::from_secs(60);

/// The order API's routes over `worker`, and the access they check.
fn routes(worker: &Arc<OrderWorker>) -> (Router, http::WorkerAccess) {
    let access = http::WorkerAccess::from_keys(&service_kit::access::Keys::random()).unwrap();
    (
        http::router(Arc::clone(worker), access.clone(), None),
        access,
    )
}

/// `method uri` presenting `credential` (a token or a key; empty: none).
async fn call(app: &Router, credential: &str, method: &str, uri: &str) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if !credential.is_empty() {
        request = request.header("authorization", format!("Bearer {credential}"));
    }
    let request = request.body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn new_order(o: &OrderMessage) -> NewOrder {
    NewOrder {
        order_id: o.order_id.clone(),
        item: o.item.clone(),
        user: o.user.clone(),
        created_at_ms: o.created_at_ms,
        item_stock: o.item_stock as i64,
    }
}

/// An order of `item` whose queue satisfies `wanted`.
fn order_on(item: &str, from: usize, wanted: impl Fn(u32) -> bool) -> OrderMessage {
    (from..)
        .map(|n| order(n, item, 5))
        .find(|o| wanted(queue_for_key(&o.order_id, ORDER_QUEUES)))
        .unwrap()
}

async fn the_order_api(db: Db) {
    let Some(rig) = Rig::new(db, 16).await else {
        return;
    };
    rig.stock.prewarm("api", 5).await.unwrap();
    // A slow member of the group holds some queues and never pulls: the
    // orders there stay pending.
    let slow = JoinRequest {
        group: DEFAULT_GROUP.into(),
        member: "slow".into(),
        mode: ConsumeMode::Clustering,
        topics: vec![ORDERS_TOPIC.into(), PAYMENT_TIMEOUTS_TOPIC.into()],
    };
    rig.broker.join_group(&slow).unwrap();
    let heartbeats = {
        let broker = rig.broker.clone();
        tokio::spawn(async move {
            loop {
                let _ = broker.heartbeat(DEFAULT_GROUP, "slow");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let worker = rig.start_worker("w1", 0);
    let slow_queues = || -> Vec<u32> {
        rig.broker
            .heartbeat(DEFAULT_GROUP, "slow")
            .unwrap()
            .queues
            .iter()
            .filter(|q| q.topic == ORDERS_TOPIC)
            .map(|q| q.queue_id)
            .collect()
    };
    rig.until("the group settles", MINUTE, || async {
        let mine: Vec<u32> = worker
            .consuming()
            .iter()
            .filter(|(_, q)| q.topic == ORDERS_TOPIC)
            .map(|(_, q)| q.queue_id)
            .collect();
        !mine.is_empty() && mine.len() + slow_queues().len() == ORDER_QUEUES as usize
    })
    .await;
    let held = slow_queues();
    let written = order_on("api", 1, |q| !held.contains(&q));
    let pending = order_on("api", 1, |q| held.contains(&q));
    for o in [&written, &pending] {
        rig.stock
            .reserve("api", &o.user, &o.order_id)
            .await
            .unwrap();
    }
    rig.enqueue(&[written.clone(), pending.clone()]).await;
    rig.until("the order written", MINUTE, || async {
        worker.stats().inserted == 1
    })
    .await;

    let (app, access) = routes(&worker);
    let owner = access.buyers.mint(&written.user, MINUTE);
    let pending_owner = access.buyers.mint(&pending.user, MINUTE);
    let stranger = access.buyers.mint("someone-else", MINUTE);
    let admin = access.admin.secret().to_owned();

    // Someone else's order is answered as no order at all, and nothing
    // is paid; without a token, 401.
    for (credential, path, method, status) in [
        (
            &stranger,
            format!("/api/orders/{}", written.order_id),
            "GET",
            StatusCode::NOT_FOUND,
        ),
        (
            &stranger,
            format!("/api/orders/{}/pay", written.order_id),
            "POST",
            StatusCode::NOT_FOUND,
        ),
        (
            &stranger,
            format!("/api/orders/{}", pending.order_id),
            "GET",
            StatusCode::NOT_FOUND,
        ),
        (
            &stranger,
            format!("/api/orders?user={}", written.user),
            "GET",
            StatusCode::FORBIDDEN,
        ),
        (
            &String::new(),
            format!("/api/orders/{}", written.order_id),
            "GET",
            StatusCode::UNAUTHORIZED,
        ),
        (
            &String::new(),
            "/api/orders".to_owned(),
            "GET",
            StatusCode::UNAUTHORIZED,
        ),
        (
            &admin,
            format!("/api/orders/{}", written.order_id),
            "GET",
            StatusCode::UNAUTHORIZED,
        ),
        (
            &owner,
            "/admin/worker".to_owned(),
            "GET",
            StatusCode::FORBIDDEN,
        ),
        (
            &String::new(),
            "/admin/reconcile/api/repair".to_owned(),
            "POST",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        let (got, body) = call(&app, credential, method, &path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["code"].is_string(), "{body}");
    }
    let (_, body) = call(
        &app,
        &owner,
        "GET",
        &format!("/api/orders/{}", written.order_id),
    )
    .await;
    assert_eq!(body["status"], "created", "the stranger paid nothing");

    let (status, body) = call(
        &app,
        &owner,
        "GET",
        &format!("/api/orders/{}", written.order_id),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "created");
    assert_eq!(body["user"], written.user.as_str());
    let (status, body) = call(
        &app,
        &pending_owner,
        "GET",
        &format!("/api/orders/{}", pending.order_id),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    let (status, body) = call(
        &app,
        &pending_owner,
        "POST",
        &format!("/api/orders/{}/pay", pending.order_id),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );

    // Paying is idempotent.
    for _ in 0..2 {
        let (status, body) = call(
            &app,
            &owner,
            "POST",
            &format!("/api/orders/{}/pay", written.order_id),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "paid");
    }
    for listing in [
        format!("/api/orders?user={}", written.user),
        "/api/orders".into(),
    ] {
        let (status, body) = call(&app, &owner, "GET", &listing).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["orders"].as_array().unwrap().len(), 1);
        assert_eq!(body["orders"][0]["status"], "paid");
    }

    // A cancelled order cannot be paid.
    let late = order(90, "api", 5);
    rig.orders.write_batch(&[new_order(&late)]).await.unwrap();
    rig.orders.cancel_unpaid(&late.order_id).await.unwrap();
    let late_owner = access.buyers.mint(&late.user, MINUTE);
    let (status, _) = call(
        &app,
        &late_owner,
        "POST",
        &format!("/api/orders/{}/pay", late.order_id),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Bad input.
    for (method, uri, expected) in [
        ("GET", "/api/orders/no-such-order", StatusCode::NOT_FOUND),
        (
            "POST",
            "/api/orders/no-such-order/pay",
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/api/orders/bad%20id", StatusCode::BAD_REQUEST),
        (
            "GET",
            &format!("/api/orders/{}", "x".repeat(200)),
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/api/orders?user=", StatusCode::FORBIDDEN),
        ("GET", "/api/orders?users=x", StatusCode::BAD_REQUEST),
        ("DELETE", "/api/orders/x", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/nope", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = call(&app, &owner, method, uri).await;
        assert_eq!(status, expected, "{method} {uri}: {body}");
        assert!(body["error"].is_string(), "{method} {uri}: {body}");
    }
    for (method, uri, expected) in [
        ("GET", "/metrics", StatusCode::NOT_FOUND),
        (
            "GET",
            "/admin/reconcile/bad%20item",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, body) = call(&app, &admin, method, uri).await;
        assert_eq!(status, expected, "{method} {uri}: {body}");
        assert!(body["error"].is_string(), "{method} {uri}: {body}");
    }
    let (status, body) = call(&app, &admin, "GET", "/admin/worker").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stats"]["inserted"], 1);
    assert_eq!(body["brokers"], json!(["local"]));

    heartbeats.abort();
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_api_on_sqlite() {
    the_order_api(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_api_on_postgres() {
    the_order_api(Db::Postgres).await;
}

async fn reconciliation_reports_and_repairs(db: Db) {
    let Some(rig) = Rig::new(db, 16).await else {
        return;
    };
    rig.stock.prewarm("rec", 10).await.unwrap();
    let worker: Arc<OrderWorker> = rig.start_worker("w1", 0);
    // 1. Reserved, but the order never reached a broker.
    rig.stock.reserve("rec", "u1", "rec-missing").await.unwrap();
    // 2. The normal path.
    let normal = order(2, "rec", 10);
    rig.stock
        .reserve("rec", &normal.user, &normal.order_id)
        .await
        .unwrap();
    rig.enqueue(std::slice::from_ref(&normal)).await;
    // 3. Cancelled in the database, but the unit never went back.
    let cancelled = order(3, "rec", 10);
    rig.stock
        .reserve("rec", &cancelled.user, &cancelled.order_id)
        .await
        .unwrap();
    rig.orders
        .write_batch(&[new_order(&cancelled)])
        .await
        .unwrap();
    rig.orders.cancel_unpaid(&cancelled.order_id).await.unwrap();
    // 4. A live order the store knows nothing of (it lost state).
    let orphan = order(4, "rec", 10);
    rig.orders.write_batch(&[new_order(&orphan)]).await.unwrap();
    rig.until("the normal order written", MINUTE, || async {
        worker.stats().inserted == 1
    })
    .await;

    let report = reconcile(&worker, "rec", false).await.unwrap();
    let kinds = |report: &order_worker::reconcile::ReconcileReport| -> Vec<Value> {
        let mut kinds: Vec<Value> = report
            .differences
            .iter()
            .map(|d| {
                let d = serde_json::to_value(d).unwrap();
                json!([d["kind"], d["order_id"]])
            })
            .collect();
        kinds.sort_by_key(|v| v.to_string());
        kinds
    };
    assert_eq!(
        kinds(&report),
        [
            json!(["cancelled_still_reserved", cancelled.order_id]),
            json!(["missing_order", "rec-missing"]),
            json!(["order_without_reservation", orphan.order_id]),
        ]
    );
    assert_eq!((report.matched, report.store.reservations), (1, 3));
    assert!(report.repairs.is_empty());
    assert_eq!(rig.stock.status("rec").await.unwrap().stock, 7);

    // Over HTTP, the same report.
    let (app, access) = routes(&worker);
    let admin = access.admin.secret().to_owned();
    let (status, body) = call(&app, "", "GET", "/admin/reconcile/rec").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(&app, &admin, "GET", "/admin/reconcile/rec").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["differences"].as_array().unwrap().len(), 3);

    // Repair: the missing order is enqueued again and written; the
    // cancelled one's unit comes back; the orphan is only reported.
    let (status, body) = call(&app, &admin, "POST", "/admin/reconcile/rec/repair").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["repairs"].as_array().unwrap().len(), 2);
    rig.until("the missing order written", MINUTE, || async {
        rig.orders.order("rec-missing").await.unwrap().is_some()
    })
    .await;
    let after = reconcile(&worker, "rec", false).await.unwrap();
    assert_eq!(
        kinds(&after),
        [json!(["order_without_reservation", orphan.order_id])]
    );
    assert_eq!(after.matched, 2);
    assert_eq!(rig.stock.status("rec").await.unwrap().stock, 8);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_and_repairs_on_sqlite() {
    reconciliation_reports_and_repairs(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_and_repairs_on_postgres() {
    reconciliation_reports_and_repairs(Db::Postgres).await;
}
