//! A purchase race at the store: 200 concurrent tasks, each with 50 users
//! clicking twice, against 1,000 units. Exactly 1,000 are sold, nobody
//! twice, and the store's buyer records agree.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use seckill::{Reservation, StockStore};

use crate::helpers::{embedded_store, redis_store, test_redis};

const STOCK: u64 = 1_000;
const TASKS: usize = 200;
const USERS_PER_TASK: usize = 50;

async fn race(store: StockStore) {
    store.prewarm("hot", STOCK).await.unwrap();
    let store = Arc::new(store);
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for u in 0..USERS_PER_TASK {
                let user = format!("user-{task}-{u}");
                // Every user clicks twice, with a different order id each time.
                for click in 0..2 {
                    let order = format!("order-{task}-{u}-{click}");
                    let outcome = store.reserve("hot", &user, &order).await.unwrap();
                    outcomes.push((user.clone(), outcome));
                }
            }
            outcomes
        }));
    }
    let mut winners: HashMap<String, String> = HashMap::new();
    let mut sold_out = 0;
    let mut duplicates = 0;
    for handle in handles {
        for (user, outcome) in handle.await.unwrap() {
            match outcome {
                Reservation::Queued { order_id, .. } => {
                    assert!(
                        winners.insert(user, order_id).is_none(),
                        "a user bought twice"
                    );
                }
                Reservation::Duplicate { order_id } => {
                    duplicates += 1;
                    assert_eq!(
                        winners.get(&user),
                        Some(&order_id),
                        "a duplicate got another order id"
                    );
                }
                Reservation::SoldOut { .. } => sold_out += 1,
                Reservation::NotWarmed => panic!("the item was warmed"),
                Reservation::Reused => panic!("no purchase token was spent"),
            }
        }
    }
    assert_eq!(winners.len() as u64, STOCK, "sold exactly the stock");
    assert_eq!(
        duplicates, STOCK as usize,
        "every winner's second click is a duplicate"
    );
    assert_eq!(sold_out, TASKS * USERS_PER_TASK * 2 - 2 * STOCK as usize);
    let orders: HashSet<&String> = winners.values().collect();
    assert_eq!(orders.len() as u64, STOCK);
    let status = store.status("hot").await.unwrap();
    assert_eq!(
        (status.stock, status.buyers, status.sold_out),
        (0, STOCK as i64, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_sells_exactly_its_stock() {
    race(embedded_store().0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sells_exactly_its_stock() {
    let Some(redis) = test_redis() else { return };
    race(redis_store(&redis, 32).await).await;
}
