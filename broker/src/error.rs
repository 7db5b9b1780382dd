//! The broker's error type.
//!
//! One enum for the whole crate so callers can match on what went wrong.
//! Corruption is its own variant and names the file and offset, because an
//! operator has to act on it; a decoder on the read path has its own small
//! error type ([`crate::record::DecodeError`]) so a bad frame allocates
//! nothing until it is turned into a [`BrokerError`].

use std::path::PathBuf;

use crate::record::DecodeError;

/// Everything the broker library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An I/O call on the store failed.
    #[error("{context}: {source}")]
    Io {
        /// What the broker was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A record before the recoverable tail of the log is damaged: data that
    /// was acknowledged cannot be read back. The broker refuses to open
    /// rather than drop it silently.
    #[error(
        "commit log corrupted in {file} at byte {file_offset} (log offset {log_offset}): {reason}"
    )]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte position inside that file.
        file_offset: u64,
        /// Position in the log's global offset space.
        log_offset: u64,
        /// What the check found.
        reason: DecodeError,
    },
    /// The store on disk does not match what the broker expects (bad file
    /// names, changed segment size, unreadable metadata).
    #[error("store layout error: {0}")]
    Layout(String),
    /// Another process holds the store's lock file.
    #[error("store directory {0} is in use by another broker")]
    StoreLocked(PathBuf),
    /// A message is larger than `max_message_size`.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Encoded size of the record.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A field of a message does not fit its encoding or is otherwise invalid.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A topic name breaks the naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The topic does not exist (and auto-creation is off).
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    /// The topic exists with a different queue count.
    #[error("topic {topic:?} already exists with {existing} queues (asked for {requested})")]
    TopicConflict {
        /// The topic.
        topic: String,
        /// Queues it has.
        existing: u32,
        /// Queues the caller asked for.
        requested: u32,
    },
    /// A queue id outside the topic's queues.
    #[error("topic {topic:?} has {queues} queues; queue {queue_id} does not exist")]
    QueueNotFound {
        /// The topic.
        topic: String,
        /// The rejected queue id.
        queue_id: u32,
        /// How many queues the topic has.
        queues: u32,
    },
    /// A bad argument to an API call (zero batch size, empty group name …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A consumer-group call from a member the group no longer knows
    /// (it left or its heartbeats expired); the member should join again.
    #[error("member {member:?} is not in group {group:?}; join again")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// A member joined with a different consumption mode than the group has.
    #[error("group {group:?} consumes in {existing} mode; cannot join it in {requested} mode")]
    GroupModeConflict {
        /// The group.
        group: String,
        /// The group's mode.
        existing: &'static str,
        /// The mode asked for.
        requested: &'static str,
    },
    /// An offset commit from a member that does not own the queue now (it
    /// was rebalanced away, or the commit is from an older assignment than
    /// the member's current ownership). The member must stop consuming the
    /// queue; the message says why.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A commit would move a committed offset backwards. Only an explicit
    /// reset ([`crate::Broker::reset_offsets`]) may do that.
    #[error(
        "offset {requested} is below the committed offset {committed}; reset offsets to move back"
    )]
    OffsetBackwards {
        /// The offset committed now.
        committed: u64,
        /// The offset the commit asked for.
        requested: u64,
    },
    /// A commit under a new offset owner when the broker already keeps
    /// offsets for `max` owners. Owners already known still commit.
    #[error(
        "offsets are kept for at most {max} owners (groups or group%member); refusing a new one"
    )]
    OffsetOwnerLimit {
        /// The bound.
        max: usize,
    },
    /// The flush that would make a write durable did not finish in time.
    /// The message may or may not be in the log.
    #[error("flush did not complete within {0:?}; the message may or may not be stored")]
    FlushTimeout(std::time::Duration),
    /// An fsync failed earlier. The kernel may have dropped the dirty pages,
    /// so retrying is unsafe: the broker refuses writes until it is restarted
    /// and recovers from what is actually on disk.
    #[error("storage failed ({0}); restart the broker to recover from disk")]
    StorageFailed(String),
    /// The store's disk is fuller than `max_disk_usage_ratio`: writes are
    /// refused until retention (or an operator) frees space. Reads work.
    #[error(
        "disk usage {used_percent:.1}% is above the limit of {limit_percent:.1}%; writes are refused until space is freed"
    )]
    DiskFull {
        /// Measured usage of the store's file system, in percent.
        used_percent: f64,
        /// The configured limit, in percent.
        limit_percent: f64,
    },
    /// The broker is shutting down and takes no more work.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// A remote broker answered with an error or could not be reached.
    #[error("remote broker: {0}")]
    Remote(String),
}

impl BrokerError {
    /// Wraps an I/O error with what the broker was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BrokerError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
