//! The storage core on its own: open, append, read, reopen after a clean
//! stop and after a crash, and group-commit durability — no broker, no
//! features, no Tokio tasks (the flusher thread is started by hand where a
//! test needs it).

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;
use crate::record::tag_hash;

/// A sync-flush store with tiny segments and consume-queue files, so rolls
/// and multi-file queues happen within a handful of messages.
fn small_config(dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.segment_size = 4096;
    config.max_message_size = 1024;
    config.consume_queue_entries_per_file = 16;
    config.flush = FlushMode::sync();
    // Tests must not depend on how full the machine's disk is.
    config.max_disk_usage_ratio = 1.0;
    config
}

fn plain_tags(message: &Message) -> u64 {
    tag_hash(&message.tags)
}

fn open(config: &BrokerConfig) -> Store {
    Store::open(config.clone(), plain_tags).expect("open the store")
}

/// Runs the flusher on a thread of its own, as the broker does.
fn start_flusher(store: &Arc<Store>) -> JoinHandle<()> {
    let store = Arc::clone(store);
    std::thread::spawn(move || store.run_flusher())
}

fn stop_flusher(store: &Store, flusher: JoinHandle<()>) {
    store.stop_flusher();
    flusher.join().expect("the flusher thread");
}

fn message(i: usize) -> Message {
    Message::new("t", format!("body {i}"))
        .with_key(format!("k{}", i % 3))
        .with_tags("tag")
}

fn bodies(store: &Store, topic: &str, queue_id: u32) -> Vec<String> {
    let queue = store.queue(topic, queue_id).unwrap();
    (queue.consume_queue_min()..queue.consume_queue_len())
        .map(|offset| {
            let stored = store.read(topic, queue_id, offset).unwrap();
            assert_eq!(stored.queue_offset, offset);
            String::from_utf8(stored.message.body.to_vec()).unwrap()
        })
        .collect()
}

fn expected_bodies(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("body {i}")).collect()
}

#[test]
fn appends_are_read_back_in_queue_order_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&small_config(dir.path()));
    let mut ends = Vec::new();
    let mut log_offsets = Vec::new();
    for i in 0..100 {
        let (results, end) = store.append(1, vec![message(i)]).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].queue_id, 1);
        assert_eq!(results[0].queue_offset, i as u64);
        assert_eq!(
            results[0].msg_id,
            format!("{:016X}", results[0].commit_log_offset)
        );
        log_offsets.push(results[0].commit_log_offset);
        ends.push(end);
    }
    assert!(log_offsets.windows(2).all(|w| w[0] < w[1]));
    assert!(ends.windows(2).all(|w| w[0] < w[1]));
    // 100 records of about 100 bytes do not fit one 4 KiB segment.
    assert!(store.log().segment_bases().len() > 1);
    assert_eq!(bodies(&store, "t", 1), expected_bodies(0..100));
    // Auto-created with the default queue count; the other queues are empty.
    assert_eq!(store.topic("t").unwrap().queues, 4);
    assert!(bodies(&store, "t", 0).is_empty());
}

#[test]
fn a_batch_is_one_topic_and_every_record_is_checked_before_any_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&small_config(dir.path()));
    let mixed = vec![Message::new("t", "a"), Message::new("u", "b")];
    assert!(matches!(
        store.append(0, mixed),
        Err(BrokerError::InvalidArgument(_))
    ));
    let too_large = vec![Message::new("t", "a"), Message::new("t", vec![0u8; 2048])];
    assert!(matches!(
        store.append(0, too_large),
        Err(BrokerError::MessageTooLarge { .. })
    ));
    assert!(matches!(
        store.append(0, Vec::new()),
        Err(BrokerError::InvalidArgument(_))
    ));
    assert_eq!(store.log().written(), store.log().min_offset());
    assert!(bodies(&store, "t", 0).is_empty());
}

#[test]
fn a_clean_stop_reopens_without_recovery_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = open(&config);
    for i in 0..20 {
        store.append(0, vec![message(i)]).unwrap();
    }
    assert!(!store.begin_close());
    let end = store.finish_clean_stop(|| Ok(())).unwrap();
    assert_eq!(end, store.log().written());
    assert!(matches!(
        store.append(0, vec![message(20)]),
        Err(BrokerError::ShuttingDown)
    ));
    drop(store);

    let store = open(&config);
    let recovery = store.recovery();
    assert!(!recovery.crashed);
    assert_eq!(recovery.redispatched, 0);
    assert_eq!(recovery.log_end, end);
    assert_eq!(bodies(&store, "t", 0), expected_bodies(0..20));
    let (results, _) = store.append(0, vec![message(20)]).unwrap();
    assert_eq!(results[0].queue_offset, 20);
}

#[test]
fn a_crash_reopen_redispatches_the_queues_and_the_key_index_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = open(&config);
    for i in 0..12 {
        store.append(2, vec![message(i)]).unwrap();
    }
    let written = store.log().written();
    // A crash: no clean stop, so the abort marker stays; the consume
    // queues were never flushed past the open.
    store.refuse_writes();
    drop(store);

    let store = open(&config);
    let recovery = store.recovery().clone();
    assert!(recovery.crashed);
    assert_eq!(recovery.log_end, written);
    assert_eq!(recovery.redispatched, 12);
    assert_eq!(bodies(&store, "t", 2), expected_bodies(0..12));
    let keyed: Vec<u64> = store
        .messages_by_key("k1", Some("t"), 10)
        .unwrap()
        .iter()
        .map(|m| m.queue_offset)
        .collect();
    assert_eq!(keyed, [1, 4, 7, 10]);
    // Everything recovery kept is durable before anyone reads it.
    assert_eq!(store.log().flushed(), written);
    let (results, _) = store.append(2, vec![message(12)]).unwrap();
    assert_eq!(results[0].queue_offset, 12);
    assert_eq!(results[0].commit_log_offset, written);
}

#[test]
fn deleted_consume_queues_are_rebuilt_with_the_tag_code_given_at_open() {
    fn shouting_tags(message: &Message) -> u64 {
        tag_hash(&message.tags.to_uppercase())
    }
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = Store::open(config.clone(), shouting_tags).unwrap();
    for i in 0..5 {
        store.append(0, vec![message(i)]).unwrap();
    }
    let queue = store.queue("t", 0).unwrap();
    assert_eq!(queue.entry(3).unwrap().tag_hash, tag_hash("TAG"));
    assert!(!store.begin_close());
    store.finish_clean_stop(|| Ok(())).unwrap();
    drop((queue, store));
    std::fs::remove_dir_all(StorePaths::new(dir.path()).consume_queue_root()).unwrap();

    let store = Store::open(config, shouting_tags).unwrap();
    assert_eq!(store.recovery().redispatched, 5);
    let queue = store.queue("t", 0).unwrap();
    assert_eq!(queue.consume_queue_len(), 5);
    assert_eq!(queue.entry(3).unwrap().tag_hash, tag_hash("TAG"));
    assert_eq!(bodies(&store, "t", 0), expected_bodies(0..5));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let store = open(&config);
    assert!(matches!(
        Store::open(config.clone(), plain_tags),
        Err(BrokerError::StoreLocked(_))
    ));
    store.release_lock().unwrap();
    drop(store);
    assert!(Store::open(config, plain_tags).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_mode_an_append_is_visible_only_once_an_fdatasync_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&small_config(dir.path())));
    let (_, end) = store.append(0, vec![message(0)]).unwrap();
    let queue = store.queue("t", 0).unwrap();
    // Written to the page cache and the consume queue, but no flusher runs
    // yet: not durable, so not visible.
    assert_eq!(queue.consume_queue_len(), 1);
    assert_eq!(queue.visible_len(), 0);
    assert!(store.log().flushed() < end);

    let flusher = start_flusher(&store);
    store.wait_durable(end).await.unwrap();
    assert!(store.log().flushed() >= end);
    assert_eq!(queue.visible_len(), 1);
    assert!(store.log_syncs() >= 1);
    stop_flusher(&store, flusher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_appends_are_all_durable_when_acknowledged() {
    const WRITERS: usize = 16;
    const PER_WRITER: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.segment_size = 1 << 20;
    let store = Arc::new(open(&config));
    let flusher = start_flusher(&store);
    let syncs_before = store.log_syncs();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let (_, end) = store
                        .append(w as u32 % 4, vec![message(w * PER_WRITER + i)])
                        .unwrap();
                    store.wait_durable(end).await.unwrap();
                    // Acknowledged means on disk: the flushed offset covers it.
                    assert!(store.log().flushed() >= end);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let appends = (WRITERS * PER_WRITER) as u64;
    let syncs = store.log_syncs() - syncs_before;
    assert!(syncs >= 1 && syncs <= appends, "{syncs} fdatasyncs");
    let visible: u64 = (0..4)
        .map(|q| store.queue("t", q).unwrap().visible_len())
        .sum();
    assert_eq!(visible, appends);
    stop_flusher(&store, flusher);
}

#[tokio::test]
async fn in_async_mode_appends_are_visible_at_once_and_flushed_by_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config(dir.path());
    config.flush = FlushMode::Async {
        interval: Duration::from_millis(10),
        bytes: 1 << 20,
    };
    let store = Arc::new(open(&config));
    let (_, end) = store.append(0, vec![message(0)]).unwrap();
    assert_eq!(store.queue("t", 0).unwrap().visible_len(), 1);
    // Nothing to wait for in async mode.
    store.wait_durable(end).await.unwrap();
    let flusher = start_flusher(&store);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.log().flushed() < end {
        assert!(
            std::time::Instant::now() < deadline,
            "the interval flush never came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop_flusher(&store, flusher);
}

#[test]
fn one_append_of_many_queues_numbers_each_queue_in_order_and_is_visible_after_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&small_config(dir.path()));
    store.create_topic("a", 2).unwrap();
    store.create_topic("b", 1).unwrap();
    store.append(1, vec![Message::new("a", "a1-0")]).unwrap();
    let batch = vec![
        (0, Message::new("a", "a0-0")),
        (0, Message::new("b", "b0-0")),
        (1, Message::new("a", "a1-1")),
        (0, Message::new("a", "a0-1")),
        (0, Message::new("b", "b0-1").with_key("k")),
    ];
    let (results, end) = store.append_many(batch).unwrap();
    let placed: Vec<(&str, u32, u64)> = results
        .iter()
        .map(|r| (r.topic.as_str(), r.queue_id, r.queue_offset))
        .collect();
    assert_eq!(
        placed,
        [
            ("a", 0, 0),
            ("b", 0, 0),
            ("a", 1, 1),
            ("a", 0, 1),
            ("b", 0, 1)
        ],
        "results in input order, offsets per queue"
    );
    assert!(
        results
            .windows(2)
            .all(|w| w[0].commit_log_offset < w[1].commit_log_offset)
    );
    assert_eq!(
        end,
        store.log().written(),
        "one write, ending at the log's end"
    );
    assert_eq!(bodies(&store, "a", 0), ["a0-0", "a0-1"]);
    assert_eq!(bodies(&store, "a", 1), ["a1-0", "a1-1"]);
    assert_eq!(bodies(&store, "b", 0), ["b0-0", "b0-1"]);
    assert_eq!(store.messages_by_key("k", None, 4).unwrap().len(), 1);
    // Sync mode: nothing of the batch is visible before a flush covers
    // it, and one flush makes every queue it touched visible.
    let visible = |topic, queue| store.queue(topic, queue).unwrap().visible_len();
    assert_eq!((visible("a", 0), visible("b", 0)), (0, 0));
    store.group_commit.flush_once(&store).unwrap();
    assert_eq!(
        (visible("a", 0), visible("a", 1), visible("b", 0)),
        (2, 2, 2)
    );
    assert!(store.append_many(Vec::new()).is_err(), "an empty batch");
}
