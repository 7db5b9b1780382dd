//! One way to retry what may pass on its own: exponential backoff with
//! jitter between the worker's `retry_backoff_min` and `retry_backoff_max`
//! (so workers that failed together do not come back together), given up
//! only when the worker stops, and an explicit list of what is transient.
//!
//! What counts as transient depends on what a give-up would cost:
//!
//! - **Database errors** are classified ([`database_error_may_pass`]):
//!   connection, pool and I/O failures, and the server codes that name a
//!   passing state (PostgreSQL `08…` connection exceptions, `57P…`
//!   shutting down, 40001 serialization failure, 40P01 deadlock, 55P03
//!   lock not available, 53300 too many connections; SQLite busy 5 and
//!   locked 6). Anything else — a constraint, a value the database cannot
//!   decode or encode, a missing column, a bad configuration — is the
//!   data's or the code's, would repeat forever, and goes back to the
//!   caller, which splits the batch or gives the message back.
//! - **Broker and stock-store calls** made while handling a message
//!   (giving it back, sending its payment timeout, releasing its stock)
//!   are retried whatever the error: moving past the message without them
//!   would lose it, and each is idempotent. They log every failure.

use std::fmt::Display;
use std::future::Future;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::metrics::DB_RETRIES;
use crate::order_store::OrderStoreError;
use crate::shared::Shared;

/// The worker is stopping: what was under way was not finished and must
/// not be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

/// Whether a database error may pass on its own (module doc).
pub(crate) fn database_error_may_pass(error: &OrderStoreError) -> bool {
    let OrderStoreError::Database(error) = error else {
        // A bad URL or an invalid order: the same every time.
        return false;
    };
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08")
                || code.starts_with("57P")
                || matches!(&*code, "40001" | "40P01" | "55P03" | "53300" | "5" | "6")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        // Configuration, decoding, encoding, missing rows or columns,
        // migrations, driver quirks: the data's or the code's.
        _ => false,
    }
}

/// The wait before retry number `attempt` (from 1): doubling from
/// `retry_backoff_min` up to `retry_backoff_max`, each with a random part.
pub(crate) fn backoff_delay(shared: &Shared, attempt: u32) -> std::time::Duration {
    let settings = &shared.settings;
    ExponentialBuilder::default()
        .with_min_delay(settings.retry_backoff_min)
        .with_max_delay(settings.retry_backoff_max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.clamp(1, 16) as usize - 1)
        .unwrap_or(settings.retry_backoff_max)
}

/// Waits [`backoff_delay`] unless `stop` fires first.
pub(crate) async fn backoff(
    shared: &Shared,
    attempt: u32,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    tokio::select! {
        () = tokio::time::sleep(backoff_delay(shared, attempt)) => Ok(()),
        () = stop.cancelled() => Err(Stopped),
    }
}

/// Runs `operation` until it succeeds, retrying with backoff and jitter
/// while `may_pass` says its error may pass (counted as a database retry
/// when `database` is set). `Ok(Err(_))` is an error that would repeat;
/// `Err(Stopped)` means the worker stopped while waiting.
pub(crate) async fn retry<T, E, F, Fut>(
    shared: &Shared,
    stop: &CancellationToken,
    what: &str,
    may_pass: impl Fn(&E) -> bool,
    database: bool,
    mut operation: F,
) -> Result<Result<T, E>, Stopped>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0u32;
    loop {
        match operation().await {
            Ok(value) => return Ok(Ok(value)),
            Err(e) if may_pass(&e) => {
                attempt += 1;
                if database {
                    shared.count(|c| &c.db_retries, 1);
                    metrics::counter!(DB_RETRIES).increment(1);
                }
                tracing::warn!(error = %e, attempt, "{what} failed; retrying");
                backoff(shared, attempt, stop).await?;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// [`retry`] for a call that must succeed whatever its error (a broker or
/// stock-store call while handling a message: module doc).
pub(crate) async fn retry_until_done<T, E, F, Fut>(
    shared: &Shared,
    stop: &CancellationToken,
    what: &str,
    operation: F,
) -> Result<T, Stopped>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match retry(shared, stop, what, |_: &E| true, false, operation).await? {
        Ok(value) => Ok(value),
        Err(_) => unreachable!("every error is retried"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(error: sqlx::Error) -> OrderStoreError {
        OrderStoreError::Database(error)
    }

    /// Defect 5: every sqlx error that was not a database error counted as
    /// transient, so a value the database could not decode was retried
    /// forever and its queue stalled behind it.
    #[test]
    fn a_decode_error_is_not_retried_forever() {
        let decode = database(sqlx::Error::Decode("not a number".into()));
        assert!(!database_error_may_pass(&decode));
        let column = database(sqlx::Error::ColumnDecode {
            index: "sold".into(),
            source: "out of range".into(),
        });
        assert!(!database_error_may_pass(&column));
        assert!(!database_error_may_pass(&database(
            sqlx::Error::ColumnNotFound("sold".into())
        )));
        assert!(!database_error_may_pass(&database(
            sqlx::Error::RowNotFound
        )));
        assert!(!database_error_may_pass(&OrderStoreError::InvalidOrder(
            "no user".into()
        )));
    }

    #[test]
    fn connection_and_pool_failures_may_pass() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(database_error_may_pass(&database(sqlx::Error::Io(io))));
        assert!(database_error_may_pass(&database(
            sqlx::Error::PoolTimedOut
        )));
        assert!(database_error_may_pass(&database(
            sqlx::Error::WorkerCrashed
        )));
    }
}
