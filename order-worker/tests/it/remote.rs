//! The worker as deployed: brokers found in the registry and consumed over
//! their HTTP API; and a database that drops its connections mid-run.

use std::sync::Arc;
use std::time::Duration;

use order_worker::{DEFAULT_GROUP, OrderWorker};
use seckill::{BrokerRegistry, LocalRegistry, ORDERS_TOPIC};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::rig::{Db, Rig, order};

const MINUTE: Duration = Duration::from_secs(60);
/// The broker key of these tests (a test key: no deployment uses it).
const BROKER_KEY: &str = "test-only broker key 0123456789abcdef";

/// Serves `rig`'s broker over HTTP on a free port; returns its URL.
async fn serve_broker(rig: &Rig) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = broker::router(
        rig.broker.clone(),
        broker::http_api::ApiAccess::new(BROKER_KEY).unwrap(),
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_come_from_the_registry_and_are_consumed_over_http() {
    let rig = Rig::new(Db::Sqlite, 16).await.unwrap();
    let (url, server) = serve_broker(&rig).await;
    let registry = Arc::new(LocalRegistry::default());
    registry.announce(&url, i64::MAX).await.unwrap();

    let mut settings = rig.settings("remote", 0);
    settings.registry_refresh = Duration::from_millis(100);
    let worker = OrderWorker::new(settings, rig.orders.clone(), rig.stock.clone());
    worker.watch_registry(registry.clone(), BROKER_KEY.to_owned());
    let orders: Vec<_> = (0..1_000).map(|n| order(n, "far", 1_000)).collect();
    rig.enqueue(&orders).await;
    rig.drained(DEFAULT_GROUP, ORDERS_TOPIC, MINUTE).await;
    assert_eq!(worker.stats().inserted, 1_000);
    assert_eq!(worker.brokers().len(), 1);
    assert_eq!(worker.brokers()[0].0, url);

    // The broker drops out of the registry: the worker lets it go and
    // leaves its group.
    registry.withdraw(&url).await.unwrap();
    rig.until("the broker is dropped", MINUTE, || async {
        worker.brokers().is_empty()
    })
    .await;
    // The broker leaves the worker's list before its consumer has left
    // the group (the leave is that consumer's last call): wait for it.
    rig.until("the group is left", MINUTE, || async {
        rig.broker
            .groups()
            .iter()
            .all(|(_, _, members)| members.is_empty())
    })
    .await;
    worker.stop().await;
    server.abort();
}

/// The database kills the worker's connections while a batch is in
/// flight (held up on a row lock so the kill lands mid-transaction): the
/// worker retries, and the result is still every order exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_connections_are_retried_without_loss_or_duplicates() {
    const ORDERS: usize = 4_000;
    let Some(rig) = Rig::new(Db::Postgres, 16).await else {
        return;
    };
    let orders: Vec<_> = (0..ORDERS)
        .map(|n| order(n, "flaky", ORDERS as u64))
        .collect();
    rig.enqueue(&orders).await;
    let worker = rig.start_worker("w1", 2_000);
    rig.until("writing started", MINUTE, || async {
        worker.stats().inserted > 0
    })
    .await;

    // Hold the item's stock row: the next batch blocks inside its
    // transaction.
    let mut admin = PgConnection::connect(&rig.db_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut admin).await.unwrap();
    sqlx::query("SELECT sold FROM item_stock WHERE item = 'flaky' FOR UPDATE")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let mut killed = 0;
    let deadline = std::time::Instant::now() + MINUTE;
    while killed == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no batch ever blocked"
        );
        let rows = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND wait_event_type = 'Lock'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        killed += rows.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("COMMIT").execute(&mut admin).await.unwrap();

    rig.drained(DEFAULT_GROUP, ORDERS_TOPIC, MINUTE).await;
    worker.stop().await;
    let stats = worker.stats();
    eprintln!("killed {killed} connections mid-transaction; {stats:?}");
    assert!(stats.db_retries >= 1, "{stats:?}");
    assert_eq!(
        stats.retried + stats.dead_lettered,
        0,
        "nothing given up on"
    );
    let counts = rig.orders.item_counts("flaky").await.unwrap();
    assert_eq!(
        (counts.sold, counts.live_orders),
        (ORDERS as i64, ORDERS as i64)
    );
}
