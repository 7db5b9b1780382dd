//! The stock side's error type (the seckill service uses it too, under
//! the name `SeckillError`). "Sold out" and "duplicate" are not errors:
//! they are [`crate::Reservation`] outcomes.

/// What can go wrong talking to a stock store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StockError {
    /// The store could not run the script (connection, pool, Lua error).
    #[error("stock store: {0}")]
    Store(String),
    /// The caller passed something the store cannot take.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A script answered in a shape its caller does not know: the scripts
    /// and the code reading them disagree.
    #[error("script {script} answered {reply:?}, which is not a known reply")]
    UnexpectedReply {
        /// Which script.
        script: &'static str,
        /// What it said.
        reply: String,
    },
}
