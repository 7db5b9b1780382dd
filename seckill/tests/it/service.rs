//! The purchase flow end to end over both stock stores: a 10,000-user race
//! sells exactly the stock with buyer records, queued answers and committed
//! broker messages in agreement; release then re-buy; and a crash between
//! the script and the commit settled by check-back, both ways.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, FlushMode, PullRequest};
use seckill::{
    Activity, ORDERS_TOPIC, OrderMessage, PRODUCER_GROUP, PurchaseOutcome, Release,
    ReservationPath, Seckill, StockStore,
};

use crate::helpers::{embedded_store, redis_store, test_redis};

pub(crate) fn broker_config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.flush = FlushMode::async_default();
    config.segment_size = 8 << 20;
    config.transaction_timeout = Duration::from_millis(200);
    config.transaction_check_interval = Duration::from_millis(200);
    config.max_disk_usage_ratio = 1.0;
    config
}

pub(crate) async fn service(
    store: StockStore,
    dir: &std::path::Path,
    item: &str,
    stock: u64,
) -> Arc<Seckill> {
    service_on(store, dir, item, stock, ReservationPath::default()).await
}

/// A service on `path` selling `stock` of `item`.
pub(crate) async fn service_on(
    store: StockStore,
    dir: &std::path::Path,
    item: &str,
    stock: u64,
    path: ReservationPath,
) -> Arc<Seckill> {
    let broker = Broker::open(broker_config(dir)).unwrap();
    let seckill = Seckill::with_path(broker, store, 1, path).unwrap();
    put_on_sale(&seckill, item, stock).await;
    seckill
}

/// An open-ended sale of `stock` units of `item`, pre-warmed.
pub(crate) async fn put_on_sale(seckill: &Seckill, item: &str, stock: u64) {
    seckill
        .activities()
        .upsert(Activity {
            item: item.into(),
            stock,
            per_user_limit: 1,
            quiz: false,
            starts_at_ms: 0,
            ends_at_ms: i64::MAX,
        })
        .unwrap();
    seckill.store().prewarm(item, stock).await.unwrap();
}

/// Every order message in the orders topic.
pub(crate) async fn committed_orders(broker: &Broker) -> Vec<OrderMessage> {
    let mut orders = Vec::new();
    let queues = broker.topic(ORDERS_TOPIC).unwrap().queues;
    for queue_id in 0..queues {
        let mut offset = 0;
        loop {
            let result = broker
                .pull(&PullRequest {
                    group: "audit".into(),
                    topic: ORDERS_TOPIC.into(),
                    queue_id,
                    offset,
                    max_messages: 512,
                    max_bytes: 8 << 20,
                    hold_ms: 0,
                    tags: None,
                    fence: None,
                })
                .await
                .unwrap();
            if result.messages.is_empty() {
                break;
            }
            offset = result.next_offset;
            orders.extend(
                result
                    .messages
                    .iter()
                    .map(|m| OrderMessage::from_body(&m.message.body).unwrap()),
            );
        }
    }
    orders
}

async fn race(store: StockStore) {
    const STOCK: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let seckill = service(store, dir.path(), "hot", STOCK).await;
    let mut handles = Vec::new();
    for task in 0..200 {
        let seckill = Arc::clone(&seckill);
        handles.push(tokio::spawn(async move {
            let mut queued = Vec::new();
            for u in 0..50 {
                let user = format!("user-{task}-{u}");
                for _click in 0..2 {
                    match seckill.purchase("hot", &user).await.unwrap() {
                        PurchaseOutcome::Queued { order_id } => {
                            queued.push((user.clone(), order_id))
                        }
                        PurchaseOutcome::Duplicate { order_id } => {
                            assert!(queued.iter().any(|(u, o)| *u == user && *o == order_id));
                        }
                        PurchaseOutcome::SoldOut => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            queued
        }));
    }
    let mut queued = Vec::new();
    for handle in handles {
        queued.extend(handle.await.unwrap());
    }
    let users: HashSet<&String> = queued.iter().map(|(u, _)| u).collect();
    assert_eq!(queued.len() as u64, STOCK, "queued answers");
    assert_eq!(users.len() as u64, STOCK, "no user twice");
    let status = seckill.store().status("hot").await.unwrap();
    assert_eq!(status.buyers as u64, STOCK, "buyer records");
    assert_eq!((status.stock, status.sold_out), (0, true));
    let orders = committed_orders(seckill.broker()).await;
    assert_eq!(orders.len() as u64, STOCK, "committed broker messages");
    let answered: HashSet<(String, String)> = queued.into_iter().collect();
    let enqueued: HashSet<(String, String)> =
        orders.into_iter().map(|o| (o.user, o.order_id)).collect();
    assert_eq!(
        answered, enqueued,
        "every queued answer is exactly one committed order"
    );
    assert_eq!(seckill.broker().open_transactions(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_on_the_embedded_store_sells_exactly_the_stock() {
    race(embedded_store().0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_on_redis_sells_exactly_the_stock() {
    let Some(redis) = test_redis() else { return };
    race(redis_store(&redis, 32).await).await;
}

async fn release_and_rebuy(store: StockStore) {
    let dir = tempfile::tempdir().unwrap();
    let seckill = service(store, dir.path(), "two", 2).await;
    let PurchaseOutcome::Queued { order_id } = seckill.purchase("two", "alice").await.unwrap()
    else {
        panic!("alice should get one");
    };
    assert!(matches!(
        seckill.purchase("two", "bob").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
    assert!(seckill.flags().is_sold_out("two"));
    assert_eq!(
        seckill.purchase("two", "carol").await.unwrap(),
        PurchaseOutcome::SoldOut
    );

    // Alice's unpaid order is cancelled: the unit comes back, the flag goes.
    assert!(matches!(
        seckill.release("two", "alice", &order_id).await.unwrap(),
        Release::Released { .. }
    ));
    assert_eq!(
        seckill.release("two", "alice", &order_id).await.unwrap(),
        Release::NotHeld
    );
    assert!(!seckill.flags().is_sold_out("two"));
    assert!(!seckill.store().status("two").await.unwrap().sold_out);
    assert!(matches!(
        seckill.purchase("two", "carol").await.unwrap(),
        PurchaseOutcome::Queued { .. }
    ));
    assert!(seckill.flags().is_sold_out("two"));
}

#[tokio::test]
async fn release_then_rebuy_on_the_embedded_store() {
    release_and_rebuy(embedded_store().0).await;
}

#[tokio::test]
async fn release_then_rebuy_on_redis() {
    let Some(redis) = test_redis() else { return };
    release_and_rebuy(redis_store(&redis, 4).await).await;
}

/// Waits (bounded) until the broker has no open transaction.
pub(crate) async fn settled(broker: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while broker.open_transactions() > 0 {
        assert!(
            Instant::now() < deadline,
            "the check-back never settled the transaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crash_between_script_and_commit(store: StockStore) {
    let dir = tempfile::tempdir().unwrap();
    let seckill = service(store, dir.path(), "crash", 10).await;
    let broker = seckill.broker().clone();
    let queue = 0;

    // 1. The script reserved, then the process died before the commit:
    //    the check-back finds the buyer record and commits.
    let reserved = OrderMessage {
        order_id: "order-reserved".into(),
        item: "crash".into(),
        user: "dave".into(),
        created_at_ms: 1,
        item_stock: 10,
    };
    broker
        .send_half(PRODUCER_GROUP, queue, reserved.to_message())
        .await
        .unwrap();
    seckill
        .store()
        .reserve("crash", "dave", "order-reserved")
        .await
        .unwrap();

    // 2. The process died before the script ran: no buyer record, so the
    //    check-back rolls back.
    let never = OrderMessage {
        order_id: "order-never".into(),
        item: "crash".into(),
        user: "erin".into(),
        created_at_ms: 1,
        item_stock: 10,
    };
    broker
        .send_half(PRODUCER_GROUP, queue, never.to_message())
        .await
        .unwrap();

    assert_eq!(broker.open_transactions(), 2);
    settled(&broker).await;
    let orders: Vec<String> = committed_orders(&broker)
        .await
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(orders, ["order-reserved"]);
    assert_eq!(seckill.store().holder("crash", "erin").await.unwrap(), None);
    assert_eq!(seckill.store().status("crash").await.unwrap().stock, 9);
}

#[tokio::test]
async fn check_back_settles_a_crash_both_ways_on_the_embedded_store() {
    crash_between_script_and_commit(embedded_store().0).await;
}

#[tokio::test]
async fn check_back_settles_a_crash_both_ways_on_redis() {
    let Some(redis) = test_redis() else { return };
    crash_between_script_and_commit(redis_store(&redis, 4).await).await;
}

/// A store whose reserve.lua runs but whose answer never arrives — a
/// reply lost to a timeout or a dropped connection.
#[derive(Debug)]
struct LostReplies(Arc<seckill::EmbeddedScripts>);

#[async_trait::async_trait]
impl seckill::ScriptRunner for LostReplies {
    async fn run(
        &self,
        script: &seckill::LuaScript,
        keys: &[String],
        args: &[String],
    ) -> Result<seckill::Reply, seckill::SeckillError> {
        let reply = self.0.run(script, keys, args).await?;
        if script.name == seckill::RESERVE.name {
            return Err(seckill::SeckillError::Store(
                "reserve failed: timed out".into(),
            ));
        }
        Ok(reply)
    }
}

/// A purchase whose script ran but whose answer was lost was told "retry"
/// (503) while the check-back later committed its order — a row its buyer
/// never heard of. The buyer record settles it at once: `queued`, and the
/// order committed once; a second try is the same order, `duplicate`.
#[tokio::test]
async fn a_reply_lost_after_the_script_ran_still_answers_queued() {
    let (_, scripts) = embedded_store();
    let store = StockStore::new(Arc::new(LostReplies(scripts)), "");
    let dir = tempfile::tempdir().unwrap();
    let seckill = service(store, dir.path(), "lost", 5).await;
    let PurchaseOutcome::Queued { order_id } = seckill.purchase("lost", "alice").await.unwrap()
    else {
        panic!("the reservation stands: alice is queued");
    };
    assert_eq!(
        seckill.purchase("lost", "alice").await.unwrap(),
        PurchaseOutcome::Duplicate {
            order_id: order_id.clone()
        }
    );
    assert_eq!(seckill.broker().open_transactions(), 0, "nothing left open");
    let orders = committed_orders(seckill.broker()).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].order_id, order_id);
}
