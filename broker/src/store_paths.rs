//! Every on-disk name of the store, in one place.
//!
//! ```text
//! <root>/
//!   lock                         held (flock) while a broker has the store open
//!   abort                        exists while running; found at open = the last stop was a crash
//!   checkpoint                   log offsets known durable (see checkpoint.rs)
//!   commitlog/00000000000000000000         segment files, named by base offset, 20 digits
//!   commitlog/00000000001073741824
//!   consumequeue/<topic>/<queue>/00000000000000000000   20-byte entries, named by byte offset
//!   index/keys                   key index: (key hash, log offset) entries
//!   config/topics.json           topic → queue count
//!   config/consumer_offsets.json committed offsets per group/topic/queue
//!   config/delay_delivered       delay-topic offsets delivered (watermark + list)
//!   config/transaction_watermark every half message below it is resolved
//! ```
//!
//! Segment names carry their base offset so a reader finds the file for any
//! log offset with one lookup, and `ls` shows the log in order.

use std::path::{Path, PathBuf};

/// Width of a segment file name: enough digits for any `u64`.
const NAME_DIGITS: usize = 20;

/// The paths of one store directory.
#[derive(Debug, Clone)]
pub(crate) struct StorePaths {
    root: PathBuf,
}

impl StorePaths {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        StorePaths { root: root.into() }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub(crate) fn abort_marker(&self) -> PathBuf {
        self.root.join("abort")
    }

    pub(crate) fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }

    pub(crate) fn commit_log_dir(&self) -> PathBuf {
        self.root.join("commitlog")
    }

    pub(crate) fn consume_queue_root(&self) -> PathBuf {
        self.root.join("consumequeue")
    }

    pub(crate) fn consume_queue_dir(&self, topic: &str, queue_id: u32) -> PathBuf {
        self.consume_queue_root()
            .join(topic)
            .join(queue_id.to_string())
    }

    pub(crate) fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    pub(crate) fn topics_file(&self) -> PathBuf {
        self.config_dir().join("topics.json")
    }

    pub(crate) fn consumer_offsets_file(&self) -> PathBuf {
        self.config_dir().join("consumer_offsets.json")
    }

    pub(crate) fn key_index_file(&self) -> PathBuf {
        self.root.join("index").join("keys")
    }

    pub(crate) fn transaction_watermark_file(&self) -> PathBuf {
        self.config_dir().join("transaction_watermark")
    }

    pub(crate) fn delay_progress_file(&self) -> PathBuf {
        self.config_dir().join("delay_delivered")
    }
}

/// The file name of a segment that starts at `base_offset`.
pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:0NAME_DIGITS$}")
}

/// Parses a segment file name back to its base offset; `None` for any other
/// file (temporary files, editor droppings) so callers can skip or reject it.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    if name.len() != NAME_DIGITS || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_twenty_digits_and_round_trip() {
        assert_eq!(segment_file_name(1_073_741_824), "00000000001073741824");
        assert_eq!(
            parse_segment_file_name("00000000001073741824"),
            Some(1_073_741_824)
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("0000000000107374182"), None);
        assert_eq!(parse_segment_file_name("0000000000107374182x"), None);
        assert_eq!(parse_segment_file_name("00000000001073741824.tmp"), None);
    }
}
