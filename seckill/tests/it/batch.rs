//! Coalesced reservations: the batched path decides exactly as the single
//! path does (random sequences through both, on both stores, compared per
//! purchase and in the end state), and a crash between a batch's script
//! and its commits is settled by check-back from the buyer records with
//! nothing lost or doubled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use broker::Broker;
use seckill::{BatchLimits, PurchaseOutcome, Reservation, ReservationPath, Seckill, StockStore};

use crate::helpers::{embedded_store, redis_store, test_redis};
use crate::service::{broker_config, committed_orders, put_on_sale, service, service_on, settled};

/// A small deterministic generator (xorshift64*), so a failing sequence
/// can be replayed from its seed.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

/// `count` purchases by users drawn from a pool small enough that many
/// click again, as `(user, order id)`.
fn purchases(seed: u64, count: usize) -> Vec<(String, String)> {
    let mut random = Sequence(seed | 1);
    let users = (count as u64 / 2).max(1);
    (0..count)
        .map(|i| (format!("u{}", random.next(users)), format!("o{seed}-{i}")))
        .collect()
}

/// The single path's answers: one `reserve` per purchase, in order.
async fn one_by_one(
    store: &StockStore,
    item: &str,
    sequence: &[(String, String)],
) -> Vec<Reservation> {
    let mut answers = Vec::new();
    for (user, order_id) in sequence {
        answers.push(store.reserve(item, user, order_id).await.unwrap());
    }
    answers
}

/// The batched answers: `reserve_batch` over random cuts of the sequence.
async fn in_batches(
    store: &StockStore,
    item: &str,
    sequence: &[(String, String)],
    seed: u64,
) -> Vec<Reservation> {
    let mut random = Sequence(seed.wrapping_mul(31) | 1);
    let mut answers = Vec::new();
    let mut rest = sequence;
    while !rest.is_empty() {
        let take = (1 + random.next(40) as usize).min(rest.len());
        let (batch, after) = rest.split_at(take);
        let pairs: Vec<(&str, &str)> = batch
            .iter()
            .map(|(u, o)| (u.as_str(), o.as_str()))
            .collect();
        answers.extend(store.reserve_batch(item, &pairs).await.unwrap());
        rest = after;
    }
    answers
}

async fn store_parity(store: StockStore) {
    for seed in 1..=12u64 {
        let stock = 1 + seed * 7 % 40;
        let sequence = purchases(seed, 120);
        let (single, batched) = (format!("single-{seed}"), format!("batched-{seed}"));
        for item in [&single, &batched] {
            store.prewarm(item, stock).await.unwrap();
        }
        let expected = one_by_one(&store, &single, &sequence).await;
        let got = in_batches(&store, &batched, &sequence, seed).await;
        assert_eq!(got, expected, "seed {seed}: per-purchase answers differ");
        let (a, b) = (
            store.status(&single).await.unwrap(),
            store.status(&batched).await.unwrap(),
        );
        assert_eq!(a, b, "seed {seed}: end states differ");
        assert_eq!(
            store.buyers(&single).await.unwrap().len(),
            store.buyers(&batched).await.unwrap().len()
        );
    }
    // Never warmed: every purchase of a batch says so, nothing is written.
    let answers = store
        .reserve_batch("cold", &[("a", "o1"), ("b", "o2")])
        .await
        .unwrap();
    assert_eq!(answers, [Reservation::NotWarmed, Reservation::NotWarmed]);
    assert!(!store.status("cold").await.unwrap().warmed);
    // Bad input is refused, not half done.
    assert!(store.reserve_batch("cold", &[]).await.is_err());
    assert!(store.reserve_batch("cold", &[("", "o1")]).await.is_err());
}

#[tokio::test]
async fn batched_and_single_reservations_agree_on_the_embedded_store() {
    store_parity(embedded_store().0).await;
}

#[tokio::test]
async fn batched_and_single_reservations_agree_on_redis() {
    let Some(redis) = test_redis() else { return };
    store_parity(redis_store(&redis, 4).await).await;
}

/// What a purchase came to, with the order id replaced by whose it is.
fn outcome_of(outcome: &PurchaseOutcome, owner_of: &HashMap<String, String>) -> String {
    match outcome {
        PurchaseOutcome::Queued { order_id } => format!("queued:{}", owner_of[order_id]),
        PurchaseOutcome::Duplicate { order_id } => format!("duplicate:{}", owner_of[order_id]),
        other => format!("{other:?}"),
    }
}

/// Each purchase's outcome with order ids named by their owners.
async fn named_outcomes(seckill: &Seckill, outcomes: &[PurchaseOutcome]) -> Vec<String> {
    let owners: HashMap<String, String> = seckill
        .store()
        .buyers("p")
        .await
        .unwrap()
        .into_iter()
        .map(|(user, order)| (order, user))
        .collect();
    outcomes.iter().map(|o| outcome_of(o, &owners)).collect()
}

/// Three runs of one random sequence of purchases:
/// - one after another through the single path and through the coalesced
///   one (every batch then holds one purchase): identical answers, the
///   sold-out flag answering the same late clickers on both;
/// - all in flight at once through the coalesced path (batches of up to
///   16, three in flight): the answers of the single script run on the
///   sequence one by one, in arrival order.
async fn service_parity(make_store: impl Fn() -> StockStore) {
    let limits = BatchLimits {
        max_batch: 16,
        max_in_flight: 3,
    };
    for seed in [3u64, 11, 29] {
        let stock = 25 + seed;
        let sequence: Vec<String> = purchases(seed, 300).into_iter().map(|(u, _)| u).collect();
        let mut runs = Vec::new();
        for (path, all_at_once) in [
            (ReservationPath::Single, false),
            (ReservationPath::Coalesced(limits), false),
            (ReservationPath::Coalesced(limits), true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let seckill = service_on(make_store(), dir.path(), "p", stock, path).await;
            let outcomes: Vec<PurchaseOutcome> = if all_at_once {
                // Each purchase joins its lane on its first poll, in order.
                futures_util::future::join_all(sequence.iter().map(|u| seckill.purchase("p", u)))
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect()
            } else {
                let mut outcomes = Vec::new();
                for user in &sequence {
                    outcomes.push(seckill.purchase("p", user).await.unwrap());
                }
                outcomes
            };
            assert!(seckill.flags().is_sold_out("p"));
            let status = seckill.store().status("p").await.unwrap();
            assert_eq!((status.stock, status.buyers as u64), (0, stock));
            settled(seckill.broker()).await;
            assert_eq!(committed_orders(seckill.broker()).await.len() as u64, stock);
            runs.push((named_outcomes(&seckill, &outcomes).await, status));
        }
        assert_eq!(
            runs[1], runs[0],
            "seed {seed}: one by one, the paths differ"
        );

        // The script's own answers to the sequence, in order.
        let store = make_store();
        store.prewarm("p", stock).await.unwrap();
        let pairs: Vec<(String, String)> = sequence
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), format!("o{i}")))
            .collect();
        let owners: HashMap<String, String> =
            pairs.iter().map(|(u, o)| (o.clone(), u.clone())).collect();
        let expected: Vec<String> = one_by_one(&store, "p", &pairs)
            .await
            .into_iter()
            .map(|r| match r {
                Reservation::Queued { order_id, .. } => format!("queued:{}", owners[&order_id]),
                Reservation::Duplicate { order_id } => format!("duplicate:{}", owners[&order_id]),
                Reservation::SoldOut { .. } => format!("{:?}", PurchaseOutcome::SoldOut),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            runs[2].0, expected,
            "seed {seed}: all at once, not in arrival order"
        );
        assert_eq!(runs[2].1, runs[0].1, "seed {seed}: end states differ");
    }
}

#[tokio::test]
async fn the_coalesced_service_answers_as_the_single_one_on_the_embedded_store() {
    service_parity(|| embedded_store().0).await;
}

#[tokio::test]
async fn the_coalesced_service_answers_as_the_single_one_on_redis() {
    let Some(redis) = test_redis() else { return };
    let store = redis_store(&redis, 8).await;
    // One store, a fresh key prefix per service.
    let counter = std::sync::atomic::AtomicU32::new(0);
    let runner = Arc::clone(store.runner());
    service_parity(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StockStore::new(Arc::clone(&runner), format!("{}svc{n}:", redis.prefix))
    })
    .await;
}

/// The process dies after a batch's script and before its commits: on
/// restart, the check-back commits exactly the reserved purchases (from
/// their buyer records) and rolls back the rest.
async fn crash_between_batch_script_and_commits(store: StockStore) {
    let dir = tempfile::tempdir().unwrap();
    // No check-back before the "crash": every half must still be open.
    let mut config = broker_config(dir.path());
    config.transaction_timeout = std::time::Duration::from_secs(600);
    let seckill = Seckill::new(Broker::open(config).unwrap(), store.clone(), 1).unwrap();
    put_on_sale(&seckill, "crash", 4).await;
    let PurchaseOutcome::Queued { order_id: held } = seckill.purchase("crash", "u0").await.unwrap()
    else {
        panic!("u0's purchase was not queued");
    };
    let users: Vec<String> = ["u0", "u1", "u2", "u1", "u3", "u4"]
        .map(String::from)
        .to_vec();
    let batch = seckill.send_batch_halves("crash", &users).await.unwrap();
    let order_of: Vec<String> = batch.orders().iter().map(|o| o.order_id.clone()).collect();
    let reserved = batch.reserve().await.unwrap();
    assert_eq!(
        reserved,
        [
            Reservation::Duplicate {
                order_id: held.clone()
            },
            Reservation::Queued {
                order_id: order_of[1].clone(),
                stock_left: 2,
                flag_version: 0
            },
            Reservation::Queued {
                order_id: order_of[2].clone(),
                stock_left: 1,
                flag_version: 0
            },
            Reservation::Duplicate {
                order_id: order_of[1].clone()
            },
            Reservation::Queued {
                order_id: order_of[4].clone(),
                stock_left: 0,
                flag_version: 1
            },
            Reservation::SoldOut { flag_version: 1 },
        ]
    );
    // The process dies here: no commit, no rollback.
    drop(batch);
    assert_eq!(seckill.broker().open_transactions(), 6);
    seckill.broker().shutdown().await.unwrap();
    drop(seckill);

    let seckill = service(store, dir.path(), "crash", 4).await;
    assert_eq!(
        seckill.broker().open_transactions(),
        6,
        "the halves survive the restart"
    );
    settled(seckill.broker()).await;
    let orders: Vec<String> = committed_orders(seckill.broker())
        .await
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    let unique: HashSet<&String> = orders.iter().collect();
    assert_eq!(
        unique.len(),
        orders.len(),
        "an order was committed twice: {orders:?}"
    );
    let expected: HashSet<&String> = [&held, &order_of[1], &order_of[2], &order_of[4]].into();
    assert_eq!(unique, expected);
    let status = seckill.store().status("crash").await.unwrap();
    assert_eq!((status.stock, status.buyers), (0, 4));
}

#[tokio::test]
async fn check_back_settles_a_batch_that_crashed_before_its_commits_on_the_embedded_store() {
    crash_between_batch_script_and_commits(embedded_store().0).await;
}

#[tokio::test]
async fn check_back_settles_a_batch_that_crashed_before_its_commits_on_redis() {
    let Some(redis) = test_redis() else { return };
    crash_between_batch_script_and_commits(redis_store(&redis, 4).await).await;
}
