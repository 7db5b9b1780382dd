//! The order store on SQLite and PostgreSQL alike: idempotent batches, the
//! database's own stock guard, one live order per user, payment and
//! cancellation transitions.

use order_worker::{CancelOutcome, NewOrder, OrderStore, OrderStoreError, PayOutcome};

use crate::helpers::{test_postgres, test_sqlite};

fn order(n: u32, item: &str, user: &str, item_stock: i64) -> NewOrder {
    NewOrder {
        order_id: format!("order-{n:04}"),
        item: item.into(),
        user: user.into(),
        created_at_ms: 1_000 + i64::from(n),
        item_stock,
    }
}

async fn behaves(store: OrderStore) {
    let sku_order = |n, user: &str| order(n, "sku", user, 3);
    let batch: Vec<NewOrder> = (0..2).map(|n| sku_order(n, &format!("u{n}"))).collect();

    // The same batch delivered three times writes each order once.
    let first = store.write_batch(&batch).await.unwrap();
    assert_eq!(first.inserted, ["order-0000", "order-0001"]);
    for _ in 0..2 {
        let again = store.write_batch(&batch).await.unwrap();
        assert!(again.inserted.is_empty());
        assert_eq!(again.already_written, ["order-0000", "order-0001"]);
    }
    // A second live order for the same user and item is refused.
    let conflict = store.write_batch(&[sku_order(9, "u0")]).await.unwrap();
    assert_eq!(conflict.conflicting, ["order-0009"]);
    // The database refuses to sell past the stock, whatever Redis said.
    let over = store
        .write_batch(&[sku_order(2, "u2"), sku_order(3, "u3")])
        .await
        .unwrap();
    assert_eq!(
        (over.inserted.len(), over.over_stock.as_slice()),
        (1, &["order-0003".to_string()][..])
    );
    let counts = store.item_counts("sku").await.unwrap();
    assert_eq!(
        (counts.initial_stock, counts.sold, counts.live_orders),
        (3, 3, 3)
    );
    assert!(store.order("order-0003").await.unwrap().is_none());

    // A bad order fails the whole batch: nothing is written.
    let mut bad = sku_order(6, "u6");
    bad.item_stock = -1;
    assert!(matches!(
        store.write_batch(&[sku_order(5, "u5"), bad]).await,
        Err(OrderStoreError::InvalidOrder(_))
    ));
    assert!(store.order("order-0005").await.unwrap().is_none());

    // Pay one; cancel another (its unit comes back once); the paid one stays.
    assert_eq!(store.pay("order-0000").await.unwrap(), PayOutcome::Paid);
    assert_eq!(
        store.pay("order-0000").await.unwrap(),
        PayOutcome::AlreadyPaid
    );
    assert_eq!(
        store.cancel_unpaid("order-0000").await.unwrap(),
        CancelOutcome::Paid
    );
    assert_eq!(
        store.cancel_unpaid("order-0001").await.unwrap(),
        CancelOutcome::Cancelled {
            item: "sku".into(),
            user: "u1".into()
        }
    );
    assert_eq!(
        store.cancel_unpaid("order-0001").await.unwrap(),
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(
        store.pay("order-0001").await.unwrap(),
        PayOutcome::Cancelled
    );
    assert_eq!(
        store.cancel_unpaid("missing").await.unwrap(),
        CancelOutcome::NotFound
    );
    let counts = store.item_counts("sku").await.unwrap();
    assert_eq!(
        (counts.sold, counts.live_orders, counts.cancelled_orders),
        (2, 2, 1)
    );

    // The cancelled buyer may buy again.
    let rebuy = store.write_batch(&[sku_order(7, "u1")]).await.unwrap();
    assert_eq!(rebuy.inserted, ["order-0007"]);
    let mine: Vec<String> = store
        .orders_of_user("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|o| format!("{}:{}", o.order_id, o.status))
        .collect();
    assert_eq!(mine, ["order-0001:cancelled", "order-0007:created"]);

    // A restock: an order naming more stock raises the item's record; an
    // older message naming less never lowers it.
    let restocked = store
        .write_batch(&[order(10, "sku", "u10", 5)])
        .await
        .unwrap();
    assert_eq!(restocked.inserted, ["order-0010"]);
    let late = store.write_batch(&[sku_order(11, "u11")]).await.unwrap();
    assert_eq!(late.inserted, ["order-0011"]);
    let counts = store.item_counts("sku").await.unwrap();
    assert_eq!((counts.initial_stock, counts.sold), (5, 5));
}

#[tokio::test]
async fn the_order_store_on_sqlite() {
    let db = test_sqlite();
    behaves(OrderStore::connect(&db.url, 4).await.unwrap()).await;
    // Reconnecting runs no migration twice and keeps the data.
    let again = OrderStore::connect(&db.url, 4).await.unwrap();
    assert_eq!(again.item_counts("sku").await.unwrap().live_orders, 5);
}

#[tokio::test]
async fn the_order_store_on_postgres() {
    let Some(db) = test_postgres().await else {
        return;
    };
    behaves(OrderStore::connect(&db.url, 8).await.unwrap()).await;
    let again = OrderStore::connect(&db.url, 8).await.unwrap();
    assert_eq!(again.item_counts("sku").await.unwrap().live_orders, 5);
}

#[tokio::test]
async fn a_url_of_another_database_is_refused() {
    assert!(OrderStore::connect("mysql://x/y", 1).await.is_err());
}

/// 8 writers race batches of 50 orders (400 buyers) for 100 units: the
/// database alone decides, and sells exactly 100.
async fn concurrent_batches_never_oversell(store: OrderStore) {
    let mut handles = Vec::new();
    for writer in 0..8u32 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let batch: Vec<NewOrder> = (0..50)
                .map(|n| order(writer * 50 + n, "hot", &format!("w{writer}-u{n}"), 100))
                .collect();
            store.write_batch(&batch).await.unwrap()
        }));
    }
    let (mut inserted, mut over) = (0, 0);
    for handle in handles {
        let outcome = handle.await.unwrap();
        inserted += outcome.inserted.len();
        over += outcome.over_stock.len();
    }
    assert_eq!((inserted, over), (100, 300));
    let counts = store.item_counts("hot").await.unwrap();
    assert_eq!((counts.sold, counts.live_orders), (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_never_oversell_on_sqlite() {
    let db = test_sqlite();
    concurrent_batches_never_oversell(OrderStore::connect(&db.url, 4).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_never_oversell_on_postgres() {
    let Some(db) = test_postgres().await else {
        return;
    };
    concurrent_batches_never_oversell(OrderStore::connect(&db.url, 8).await.unwrap()).await;
}

/// Workers starting together on one fresh database all get the schema,
/// migrated once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_starting_together_migrate_once_on_postgres() {
    let Some(db) = test_postgres().await else {
        return;
    };
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { OrderStore::connect(&url, 2).await })
        })
        .collect();
    for connect in connects {
        let store = connect.await.unwrap().expect("every worker starts");
        assert_eq!(store.item_counts("none").await.unwrap().live_orders, 0);
    }
}
