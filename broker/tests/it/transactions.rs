//! Transactional messages under a paused clock: invisible until commit,
//! gone on rollback, resolved by check-back after a crash, rolled back
//! after 15 unknown answers, never committed twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use broker::system_topics::property;
use broker::{
    Broker, BrokerConfig, FlushMode, HalfMessage, Message, TransactionChecker, TransactionState,
};

use crate::helpers::pull_all;

fn config(dir: &std::path::Path) -> BrokerConfig {
    let mut config = crate::helpers::small_config(dir);
    config.flush = FlushMode::async_default();
    config
}

/// Always gives the same answer and counts the questions.
#[derive(Debug)]
struct Checker {
    answer: TransactionState,
    calls: AtomicU32,
    seen: parking_lot::Mutex<Vec<HalfMessage>>,
}

impl Checker {
    fn new(answer: TransactionState) -> Arc<Self> {
        Arc::new(Checker {
            answer,
            calls: AtomicU32::new(0),
            seen: parking_lot::Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TransactionChecker for Checker {
    async fn check(&self, half: &HalfMessage) -> TransactionState {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().push(half.clone());
        self.answer
    }
}

fn order(n: u32) -> Message {
    Message::new("orders", format!("order {n}")).with_key(format!("o-{n}"))
}

#[tokio::test(start_paused = true)]
async fn a_half_message_is_invisible_until_commit_and_gone_on_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let checker = Checker::new(TransactionState::Commit);
    broker.register_checker("seckill", checker.clone());

    let half = broker.send_half("seckill", 0, order(1)).await.unwrap();
    assert!(
        pull_all(&broker, "orders", 0, 0).await.is_empty(),
        "visible before commit"
    );
    assert_eq!(broker.open_transactions(), 1);
    let committed = broker
        .end_transaction(half.half_offset, TransactionState::Commit)
        .await
        .unwrap()
        .expect("a commit says where the message went");
    assert_eq!(
        (committed.topic.as_str(), committed.queue_offset),
        ("orders", 0)
    );
    let visible = pull_all(&broker, "orders", 0, 0).await;
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].message.key, "o-1");
    assert_eq!(
        visible[0].message.properties[property::HALF_OFFSET],
        half.half_offset.to_string()
    );
    assert!(
        !visible[0]
            .message
            .properties
            .contains_key(property::REAL_TOPIC)
    );

    let rolled = broker.send_half("seckill", 0, order(2)).await.unwrap();
    assert_eq!(
        broker
            .end_transaction(rolled.half_offset, TransactionState::Rollback)
            .await
            .unwrap(),
        None
    );
    // Ending a transaction twice is refused; nothing changes.
    assert!(
        broker
            .end_transaction(half.half_offset, TransactionState::Commit)
            .await
            .is_err()
    );
    assert!(
        broker
            .end_transaction(rolled.half_offset, TransactionState::Commit)
            .await
            .is_err()
    );

    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(pull_all(&broker, "orders", 0, 0).await.len(), 1);
    assert_eq!(
        checker.calls(),
        0,
        "resolved transactions are never checked"
    );
    assert_eq!(broker.open_transactions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_send_half_and_commit_is_resolved_by_check_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let half = broker.send_half("seckill", 0, order(7)).await.unwrap();
    drop(broker); // the producer and broker crash before the commit

    let broker = Broker::open(config(dir.path())).unwrap();
    assert!(broker.recovery().crashed);
    assert_eq!(broker.open_transactions(), 1, "the half message survived");
    let checker = Checker::new(TransactionState::Commit);
    broker.register_checker("seckill", checker.clone());
    // Not checked before the 6 s transaction timeout…
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(checker.calls() <= 1);
    // …and resolved soon after it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(checker.calls(), 1);
    assert_eq!(broker.open_transactions(), 0);
    let seen = checker.seen.lock()[0].clone();
    assert_eq!(
        (
            seen.half_offset,
            seen.producer_group.as_str(),
            seen.queue_id
        ),
        (half.half_offset, "seckill", 0)
    );
    assert_eq!(seen.message.key, "o-7");
    assert_eq!(seen.message.topic, "orders");
    assert_eq!(pull_all(&broker, "orders", 0, 0).await.len(), 1);
    drop(broker); // crash again after the commit

    let broker = Broker::open(config(dir.path())).unwrap();
    assert_eq!(
        broker.open_transactions(),
        0,
        "a committed transaction stays committed"
    );
    let checker = Checker::new(TransactionState::Commit);
    broker.register_checker("seckill", checker.clone());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(checker.calls(), 0);
    assert_eq!(
        pull_all(&broker, "orders", 0, 0).await.len(),
        1,
        "delivered twice"
    );
}

#[tokio::test(start_paused = true)]
async fn fifteen_unknown_answers_roll_the_transaction_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let checker = Checker::new(TransactionState::Unknown);
    broker.register_checker("seckill", checker.clone());
    broker.send_half("seckill", 0, order(3)).await.unwrap();
    // 6 s timeout, then one check every 30 s.
    for _ in 0..100 {
        if broker.open_transactions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    assert_eq!(broker.open_transactions(), 0);
    assert_eq!(checker.calls(), 15);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(checker.calls(), 15, "checked after the rollback");
    assert!(pull_all(&broker, "orders", 0, 0).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn producers_cannot_forge_broker_properties_or_delay_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let forged = order(1).with_property(property::HALF_OFFSET, "0");
    assert!(broker.put(0, vec![forged]).await.is_err());
    let delayed = order(1).with_property(property::DELAY_LEVEL, "3");
    assert!(broker.send_half("seckill", 0, delayed).await.is_err());
    assert!(
        broker.send_half("seckill", 5, order(1)).await.is_err(),
        "no queue 5"
    );
    assert!(broker.send_half("", 0, order(1)).await.is_err());
    assert_eq!(broker.open_transactions(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_commit_whose_op_record_was_lost_is_not_committed_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let half = broker.send_half("seckill", 0, order(9)).await.unwrap();
    let checkpoint_before = std::fs::read(dir.path().join("checkpoint")).unwrap();
    broker
        .end_transaction(half.half_offset, TransactionState::Commit)
        .await
        .unwrap();
    let real = pull_all(&broker, "orders", 0, 0).await.remove(0);
    let op_starts_at = real.commit_log_offset + u64::from(real.stored_size);
    assert!(
        broker.written_offset() > op_starts_at,
        "the op record follows the message"
    );
    drop(broker);
    // The crash took the op record: the log ends right after the message.
    let segment = dir.path().join("commitlog/00000000000000000000");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(op_starts_at)
        .unwrap();
    std::fs::write(dir.path().join("checkpoint"), checkpoint_before).unwrap();

    let broker = Broker::open(config(dir.path())).unwrap();
    assert_eq!(
        broker.open_transactions(),
        0,
        "the applied commit resolves the half"
    );
    let checker = Checker::new(TransactionState::Commit);
    broker.register_checker("seckill", checker.clone());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(checker.calls(), 0);
    assert_eq!(pull_all(&broker, "orders", 0, 0).await.len(), 1);
}

/// Takes longer than the check timeout to answer, and counts how many
/// questions are open at once.
#[derive(Debug, Default)]
struct SlowChecker {
    calls: AtomicU32,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
}

/// Counts a question as answered however it ends (the broker's timeout
/// drops the future).
struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl TransactionChecker for SlowChecker {
    async fn check(&self, _half: &HalfMessage) -> TransactionState {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _in_flight = InFlight(&self.in_flight);
        tokio::time::sleep(Duration::from_secs(60)).await;
        TransactionState::Commit
    }
}

#[tokio::test(start_paused = true)]
async fn due_halves_are_checked_concurrently_so_a_slow_checker_does_not_serialize_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let checker = Arc::new(SlowChecker::default());
    broker.register_checker("seckill", checker.clone());
    // A Redis outage: every purchase leaves its half open.
    const HALVES: u32 = 40;
    for n in 0..HALVES {
        broker.send_half("seckill", 0, order(n)).await.unwrap();
    }
    let started = tokio::time::Instant::now();
    // All are due at the 6 s transaction timeout; each question times out
    // after 5 s. Checked one after another, the last would be asked after
    // 6 + 39 × 5 s; at most 16 at a time, all are asked within three
    // timeouts.
    tokio::time::sleep(Duration::from_secs(6 + 3 * 5 + 1)).await;
    assert_eq!(
        checker.calls.load(Ordering::SeqCst),
        HALVES,
        "halves asked about after {:?} of paused time",
        started.elapsed()
    );
    let max = checker.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=16).contains(&max),
        "{max} questions at once: concurrent, with a bound"
    );
    // Every answer was unknown (timed out): nothing committed, all still
    // open for the next check.
    assert_eq!(broker.open_transactions(), HALVES as usize);
    assert!(pull_all(&broker, "orders", 0, 0).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_producer_may_commit_while_its_half_is_being_checked() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path())).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let checker = Arc::new(SlowChecker::default());
    broker.register_checker("seckill", checker.clone());
    let half = broker.send_half("seckill", 0, order(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(checker.calls.load(Ordering::SeqCst), 1, "being checked");
    broker
        .end_transaction(half.half_offset, TransactionState::Commit)
        .await
        .expect("the producer's commit is not refused");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(checker.calls.load(Ordering::SeqCst), 1);
    assert_eq!(broker.open_transactions(), 0);
    assert_eq!(pull_all(&broker, "orders", 0, 0).await.len(), 1);
}
