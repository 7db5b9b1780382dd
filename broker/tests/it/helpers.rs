//! Shared test helpers: small stores, pulling everything, copying a store
//! to simulate what a crash leaves on disk.

use std::path::Path;

use broker::{Broker, BrokerConfig, FlushMode, PullRequest, PullStatus, StoredMessage};

/// A sync-flush store with tiny segments and consume-queue files, so rolls
/// and multi-file queues happen within a handful of messages.
pub(crate) fn small_config(dir: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir);
    config.segment_size = 4096;
    config.max_message_size = 1024;
    config.consume_queue_entries_per_file = 16;
    config.flush = FlushMode::sync();
    // Tests must not depend on how full the machine's disk is; the disk
    // guard's own test sets a limit.
    config.max_disk_usage_ratio = 1.0;
    config
}

/// Every message of a queue from `from` to its current end, without waiting.
pub(crate) async fn pull_all(
    broker: &Broker,
    topic: &str,
    queue_id: u32,
    from: u64,
) -> Vec<StoredMessage> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = broker
            .pull(&PullRequest {
                group: "test".into(),
                topic: topic.into(),
                queue_id,
                offset,
                max_messages: 7,
                max_bytes: 1 << 20,
                hold_ms: 0,
                tags: None,
                fence: None,
            })
            .await
            .expect("pull");
        match result.status {
            PullStatus::Found => {
                offset = result.next_offset;
                out.extend(result.messages);
            }
            PullStatus::NoNewMessages => return out,
            other => panic!("unexpected pull status {other:?}"),
        }
    }
}

/// Copies a store directory, as a crash would leave it on disk.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The body of message `n` of a test: distinct and of varying length.
pub(crate) fn body(n: usize) -> Vec<u8> {
    format!("message {n} {}", "x".repeat(n % 13)).into_bytes()
}
