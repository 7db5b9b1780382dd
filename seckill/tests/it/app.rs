//! The assembled service on a real socket: build on port 0, sell, stop
//! through the shutdown future, and find the broker stopped cleanly with
//! the order in it.

use std::time::Duration;

use broker::{Broker, BrokerConfig};
use seckill::{App, ORDERS_TOPIC, SeckillConfig};
use serde_json::{Value, json};

#[tokio::test]
async fn the_service_sells_over_http_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SeckillConfig::embedded(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.broker.max_disk_usage_ratio = 1.0;
    let keys = config.keys.clone();
    let admin = format!("Bearer {}", keys.admin);
    let alice = format!(
        "Bearer {}",
        keys.buyer_tokens()
            .unwrap()
            .mint("alice", Duration::from_secs(60))
    );
    let app = App::build(config, None).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let registry = app.registry().clone();
    assert_eq!(
        registry.live().await.unwrap(),
        vec![base.clone()],
        "announced itself"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let activity = json!({"item": "sku", "stock": 5, "per_user_limit": 1, "starts_at_ms": 0, "ends_at_ms": i64::MAX});
    let anonymous = http
        .post(format!("{base}/admin/activities"))
        .json(&activity)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "an admin route without the key");
    let created = http
        .post(format!("{base}/admin/activities"))
        .header("authorization", &admin)
        .json(&activity)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    http.post(format!("{base}/admin/activities/sku/prewarm"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    let claimed = http
        .post(format!("{base}/api/seckill/sku"))
        .header("x-user-id", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 401, "a header is not an identity");
    let pass: Value = http
        .post(format!("{base}/api/seckill/sku/token"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pass = pass["purchase_token"]
        .as_str()
        .expect("a purchase token")
        .to_owned();
    let bought: Value = http
        .post(format!("{base}/api/seckill/sku"))
        .header("authorization", &alice)
        .header("x-purchase-token", &pass)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bought["status"], "queued");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the service stops")
        .unwrap()
        .unwrap();
    assert!(
        registry.live().await.unwrap().is_empty(),
        "withdrew from the registry"
    );

    let mut reopened = BrokerConfig::new(dir.path());
    reopened.max_disk_usage_ratio = 1.0;
    let broker = Broker::open(reopened).unwrap();
    assert!(
        !broker.recovery().crashed,
        "the broker was shut down cleanly"
    );
    let stored: u64 = broker
        .queue_stats()
        .iter()
        .filter(|q| q.topic == ORDERS_TOPIC)
        .map(|q| q.max_offset)
        .sum();
    assert_eq!(stored, 1);
}
