//! The failure latch: once a write or an fsync of the store fails, every
//! later write is refused until a restart.
//!
//! After a failed fsync the kernel may already have dropped the dirty
//! pages, and after a failed append the log and its consume queues may
//! disagree; only recovery from what is on disk can tell what survived.
//! So the first failure is kept (later ones add nothing) and reported to
//! every writer that comes after it.

use parking_lot::Mutex;

use crate::error::{BrokerError, Result};

/// The first storage failure, if any.
#[derive(Debug, Default)]
pub(crate) struct FailureLatch {
    failure: Mutex<Option<String>>,
}

impl FailureLatch {
    /// Errs with the latched failure, if there is one.
    pub(crate) fn check(&self) -> Result<()> {
        match &*self.failure.lock() {
            Some(failure) => Err(BrokerError::StorageFailed(failure.clone())),
            None => Ok(()),
        }
    }

    /// Latches `failure` unless an earlier one is latched already.
    pub(crate) fn fail(&self, failure: &str) {
        self.failure
            .lock()
            .get_or_insert_with(|| failure.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_refuses_every_later_check() {
        let latch = FailureLatch::default();
        assert!(latch.check().is_ok());
        latch.fail("fdatasync: EIO");
        latch.fail("a later failure");
        match latch.check() {
            Err(BrokerError::StorageFailed(failure)) => assert_eq!(failure, "fdatasync: EIO"),
            other => panic!("expected the first failure, got {other:?}"),
        }
    }
}
