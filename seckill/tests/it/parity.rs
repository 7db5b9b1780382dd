//! Parity: one scripted sequence against real Redis and the embedded
//! store, requiring identical replies at every step — the embedded store
//! may stand in for Redis only if nobody can tell them apart.

use seckill::{ItemKeys, PREWARM, Reply, StockStore};

use crate::helpers::{embedded_store, redis_store, test_redis};

/// The sequence: not warmed, pre-warm, purchases, a duplicate, sold out, a
/// wrong and a right release, re-buy, restock, bad input, zero stock.
async fn run_sequence(store: &StockStore, prefix: &str) -> Vec<String> {
    let mut log = Vec::new();
    let mut record = |what: &str, value: String| log.push(format!("{what}: {value}"));
    record("status", format!("{:?}", store.status("sku-1").await));
    record(
        "reserve unwarmed",
        format!("{:?}", store.reserve("sku-1", "u1", "o1").await),
    );
    record("prewarm", format!("{:?}", store.prewarm("sku-1", 3).await));
    record(
        "prewarm again",
        format!("{:?}", store.prewarm("sku-1", 5).await),
    );
    record(
        "u1",
        format!("{:?}", store.reserve("sku-1", "u1", "o1").await),
    );
    record(
        "u1 again",
        format!("{:?}", store.reserve("sku-1", "u1", "o9").await),
    );
    record(
        "u2",
        format!("{:?}", store.reserve("sku-1", "u2", "o2").await),
    );
    record(
        "u3 (last)",
        format!("{:?}", store.reserve("sku-1", "u3", "o3").await),
    );
    record(
        "u4 sold out",
        format!("{:?}", store.reserve("sku-1", "u4", "o4").await),
    );
    record(
        "status sold out",
        format!("{:?}", store.status("sku-1").await),
    );
    record(
        "release wrong order",
        format!("{:?}", store.release("sku-1", "u1", "o9").await),
    );
    record(
        "release",
        format!("{:?}", store.release("sku-1", "u1", "o1").await),
    );
    record(
        "release again",
        format!("{:?}", store.release("sku-1", "u1", "o1").await),
    );
    record(
        "u4 re-buys",
        format!("{:?}", store.reserve("sku-1", "u4", "o4").await),
    );
    record(
        "u1 buys again",
        format!("{:?}", store.reserve("sku-1", "u1", "o5").await),
    );
    record("restock", format!("{:?}", store.restock("sku-1", 2).await));
    record(
        "holder u4",
        format!("{:?}", store.holder("sku-1", "u4").await),
    );
    record(
        "holder u1",
        format!("{:?}", store.holder("sku-1", "u1").await),
    );
    record("buyers", format!("{:?}", store.buyers("sku-1").await));
    record(
        "buyers of none",
        format!("{:?}", store.buyers("nope").await),
    );
    record(
        "restock unwarmed",
        format!("{:?}", store.restock("nope", 2).await),
    );
    record("status", format!("{:?}", store.status("sku-1").await));
    record(
        "prewarm zero",
        format!("{:?}", store.prewarm("zero", 0).await),
    );
    record(
        "reserve zero",
        format!("{:?}", store.reserve("zero", "u1", "o6").await),
    );
    // Raw replies, bad arguments included, compared as the stores give them.
    let keys = ItemKeys::new(prefix, "raw").to_vec();
    for stock in ["-1", "1.5", "ten", "7"] {
        let args = [
            stock.to_owned(),
            "raw".to_owned(),
            stock::flag_channel(prefix),
        ];
        let reply: Result<Reply, _> = store.runner().run(&PREWARM, &keys, &args).await;
        record(&format!("raw prewarm {stock}"), format!("{reply:?}"));
    }
    log
}

#[tokio::test]
async fn redis_and_the_embedded_store_answer_identically() {
    let (embedded, scripts) = embedded_store();
    let mut flags = scripts.subscribe();
    let embedded_log = run_sequence(&embedded, "").await;

    // The sequence itself is right (checked on the embedded store).
    let expected_lines = [
        "u1: Ok(Queued { order_id: \"o1\", stock_left: 2, flag_version: 0 })",
        "u1 again: Ok(Duplicate { order_id: \"o1\" })",
        "u3 (last): Ok(Queued { order_id: \"o3\", stock_left: 0, flag_version: 1 })",
        "u4 sold out: Ok(SoldOut { flag_version: 1 })",
        "release wrong order: Ok(NotHeld)",
        "release: Ok(Released { stock_left: 1, flag_version: 2 })",
        "release again: Ok(NotHeld)",
        "u4 re-buys: Ok(Queued { order_id: \"o4\", stock_left: 0, flag_version: 3 })",
        "u1 buys again: Ok(SoldOut { flag_version: 3 })",
        "restock: Ok(Restocked { stock: 2, flag_version: 4 })",
        "holder u4: Ok(Some(\"o4\"))",
        "holder u1: Ok(None)",
        "buyers: Ok([(\"u2\", \"o2\"), (\"u3\", \"o3\"), (\"u4\", \"o4\")])",
        "buyers of none: Ok([])",
        "reserve zero: Ok(SoldOut { flag_version: 1 })",
    ];
    for line in expected_lines {
        assert!(
            embedded_log.iter().any(|l| l == line),
            "missing {line:?} in {embedded_log:#?}"
        );
    }
    let mut messages = Vec::new();
    while let Ok((channel, payload)) = flags.try_recv() {
        assert_eq!(channel, stock::flag_channel(""));
        messages.push(payload);
    }
    assert_eq!(
        messages,
        [
            "sku-1 soldout 1",
            "sku-1 open 2",
            "sku-1 soldout 3",
            "sku-1 open 4",
            "zero soldout 1"
        ]
    );

    let Some(redis) = test_redis() else { return };
    let store = redis_store(&redis, 4).await;
    let redis_log = run_sequence(&store, &redis.prefix).await;
    for (step, (a, b)) in embedded_log.iter().zip(&redis_log).enumerate() {
        assert_eq!(
            a, b,
            "step {step} differs between the embedded store and Redis"
        );
    }
    assert_eq!(embedded_log.len(), redis_log.len());
}

/// Purchase tokens spent by the script: a token is spent by every decided
/// answer and refused once spent, a later one goes through, an earlier
/// one does not; the same whether one purchase at a time or in one batch.
async fn spending_sequence(store: &StockStore, batched: bool) -> Vec<String> {
    store.prewarm("pay-1", 1).await.unwrap();
    let attempts: [(&str, &str, Option<u64>); 7] = [
        ("u1", "o1", Some(10)), // queued, the last unit
        ("u1", "o2", Some(10)), // the same token again: reused
        ("u1", "o3", Some(20)), // a newer token: the order held
        ("u1", "o4", Some(15)), // older than the last spent: reused
        ("u2", "o5", Some(10)), // another user's first: sold out, spent
        ("u2", "o6", Some(10)), // ...and so refused after
        ("u3", "o7", None),     // no token: decided as before
    ];
    let answers = if batched {
        store
            .reserve_batch_spending("pay-1", &attempts)
            .await
            .unwrap()
    } else {
        let mut answers = Vec::new();
        for (user, order, spend) in attempts {
            answers.push(
                store
                    .reserve_spending("pay-1", user, order, spend)
                    .await
                    .unwrap(),
            );
        }
        answers
    };
    answers.iter().map(|a| format!("{a:?}")).collect()
}

#[tokio::test]
async fn purchase_tokens_are_spent_alike_one_at_a_time_and_in_a_batch_on_both_stores() {
    let expected = [
        "Queued { order_id: \"o1\", stock_left: 0, flag_version: 1 }",
        "Reused",
        "Duplicate { order_id: \"o1\" }",
        "Reused",
        "SoldOut { flag_version: 1 }",
        "Reused",
        "SoldOut { flag_version: 1 }",
    ];
    for batched in [false, true] {
        let (embedded, _) = embedded_store();
        assert_eq!(
            spending_sequence(&embedded, batched).await,
            expected,
            "embedded, batched {batched}"
        );
    }
    let Some(redis) = test_redis() else { return };
    for batched in [false, true] {
        let store = redis_store(&redis, 2).await;
        // Each run under its own keys: the same item, a fresh prefix.
        let store = StockStore::new(
            store.runner().clone(),
            format!("{}spend{batched}:", redis.prefix),
        );
        assert_eq!(
            spending_sequence(&store, batched).await,
            expected,
            "redis, batched {batched}"
        );
    }
}
