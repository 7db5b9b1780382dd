//! Unit tests of transactions against a bare store: a commit that fails
//! after its real message is appended, and the order halves come due in.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use super::*;
use crate::config::{BrokerConfig, FlushMode};
use crate::record::tag_hash;

fn open(dir: &std::path::Path) -> (Arc<Store>, Arc<Transactions>) {
    let mut config = BrokerConfig::new(dir);
    config.flush = FlushMode::async_default();
    config.max_disk_usage_ratio = 1.0;
    let store = Store::open(config, |m| tag_hash(&m.tags)).expect("open the store");
    let transactions = Transactions::new(store.paths().transaction_watermark_file());
    transactions.restore_from(&store).expect("restore");
    (Arc::new(store), Arc::new(transactions))
}

/// Always gives the same answer and counts the questions.
#[derive(Debug)]
struct Answer(TransactionState, AtomicU32);

#[async_trait]
impl TransactionChecker for Answer {
    async fn check(&self, _half: &HalfMessage) -> TransactionState {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0
    }
}

fn order() -> Message {
    Message::new("orders", "order 1").with_key("o-1")
}

/// Real messages in the `orders` topic, however they are visible.
fn real_messages(store: &Store) -> u64 {
    store.queue("orders", 0).unwrap().consume_queue_len()
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_fails_after_its_real_message_is_appended_is_never_appended_again() {
    let injected = [
        (
            FailPoint::OpRecord,
            BrokerError::DiskFull {
                used_percent: 97.0,
                limit_percent: 95.0,
            },
        ),
        (
            FailPoint::DurableWait,
            BrokerError::FlushTimeout(Duration::from_secs(5)),
        ),
    ];
    for (fail_at, error) in injected {
        let dir = tempfile::tempdir().unwrap();
        let (store, transactions) = open(dir.path());
        store.create_topic("orders", 1).unwrap();
        let half = transactions
            .send_half(&store, "seckill", 0, order())
            .await
            .unwrap();
        *transactions.fail_after_append.lock() = Some((fail_at, error));
        assert!(
            transactions
                .resolve(&store, half.half_offset, TransactionState::Commit)
                .await
                .is_err(),
            "{fail_at:?}: the injected failure is reported"
        );
        assert_eq!(
            real_messages(&store),
            1,
            "{fail_at:?}: the real message is in"
        );
        assert_eq!(
            transactions.oldest_open(),
            Some(half.half_offset),
            "{fail_at:?}: kept until its op record is written"
        );

        // The check-back asks the producer, which says commit…
        let checker = Arc::new(Answer(TransactionState::Commit, AtomicU32::new(0)));
        transactions.register_checker("seckill", checker.clone());
        let (stop, stopped) = watch::channel(false);
        let check_back =
            tokio::spawn(Arc::clone(&transactions).run_check_back(Arc::clone(&store), stopped));
        if fail_at == FailPoint::DurableWait {
            // …or the producer retries its commit first, and is told
            // where the real message went.
            let retried = transactions
                .resolve(&store, half.half_offset, TransactionState::Commit)
                .await;
            assert!(
                matches!(&retried, Ok(Some(r)) if r.queue_offset == 0),
                "{fail_at:?}: the retry answers {retried:?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(
            real_messages(&store),
            1,
            "{fail_at:?}: the transaction was committed twice"
        );
        assert_eq!(transactions.pending_count(), 0, "{fail_at:?}: still open");
        assert_eq!(
            transactions.oldest_open(),
            None,
            "{fail_at:?}: the op record was never written"
        );
        assert_eq!(
            checker.1.load(Ordering::SeqCst),
            0,
            "{fail_at:?}: a decided commit needs no question"
        );
        stop.send(true).unwrap();
        check_back.await.unwrap();
        drop(transactions);
        drop(store);

        // After a crash the commit is not applied again either.
        let (store, transactions) = open(dir.path());
        assert_eq!(transactions.pending_count(), 0, "{fail_at:?}: reopened");
        assert_eq!(real_messages(&store), 1, "{fail_at:?}: after recovery");
    }
}

fn pending(next_check_ms: i64) -> Pending {
    Pending {
        producer_group: "seckill".into(),
        checks: 0,
        next_check_ms,
        step: Step::Open,
        resolving: false,
        checking: false,
        real: None,
    }
}

#[test]
fn open_halves_come_due_in_order_of_their_next_check() {
    let mut open = OpenSet::default();
    assert!(open.insert(5, pending(300)), "the only one is first");
    assert!(open.insert(7, pending(100)), "due before the first");
    assert!(!open.insert(9, pending(200)));
    assert_eq!(open.next_due(), Some(100));
    assert_eq!(open.pop_due(50), None, "none due yet");
    assert_eq!(open.pop_due(250).map(|(h, _)| h), Some(7));
    assert_eq!(open.pop_due(250).map(|(h, _)| h), Some(9));
    assert_eq!(open.pop_due(250), None);
    // Being checked, a half is not due again until it is put back.
    assert_eq!(open.next_due(), Some(300));
    let seven = open.by_half.get_mut(&7).unwrap();
    seven.checking = false;
    seven.next_check_ms = 400;
    open.requeue(7);
    open.remove(9);
    assert_eq!(open.by_half.len(), 2);
    assert_eq!(open.pop_due(1000).map(|(h, _)| h), Some(5));
    assert_eq!(open.pop_due(1000).map(|(h, _)| h), Some(7));
    assert!(open.due.is_empty());
}
