//! The check-back: the task that asks producers' checkers about halves
//! past their time, in order of their next check and up to
//! [`MAX_CONCURRENT_CHECKS`] at once, and settles each by their answer (or
//! rolls it back after the last unknown one).

use super::*;

impl Transactions {
    /// The check-back task: asks checkers about transactions past their
    /// time, up to [`MAX_CONCURRENT_CHECKS`] at once, each as soon as it is
    /// due and a slot is free.
    pub(crate) async fn run_check_back(
        self: Arc<Self>,
        store: Arc<Store>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut persisted_watermark = None;
        let mut persisted_at = tokio::time::Instant::now();
        // Dropped on return, which aborts the checks under way; each puts
        // its transaction back as it was.
        let mut checks = JoinSet::new();
        loop {
            let now = store.clock().now_ms();
            while checks.len() < MAX_CONCURRENT_CHECKS {
                let Some((half_offset, group)) = self.open.lock().pop_due(now) else {
                    break;
                };
                let transactions = Arc::clone(&self);
                let store = Arc::clone(&store);
                checks.spawn(async move {
                    let result = transactions.check_one(&store, half_offset, &group).await;
                    (half_offset, result)
                });
            }
            // With every slot busy, the next due check waits for a slot.
            let next = if checks.len() < MAX_CONCURRENT_CHECKS {
                self.open.lock().next_due()
            } else {
                None
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(store.clock().instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => return,
                Some(joined) = checks.join_next(), if !checks.is_empty() => {
                    match joined {
                        Ok((_, Ok(()))) => {}
                        Ok((half_offset, Err(e))) => {
                            tracing::warn!(half_offset, error = %e, "transaction check-back failed");
                            if matches!(e, BrokerError::ShuttingDown | BrokerError::StorageFailed(_)) {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "a transaction check-back task failed"),
                    }
                    // The watermark moves once the checks under way are
                    // done, or now and then while they keep coming.
                    if !checks.is_empty() && persisted_at.elapsed() < WATERMARK_EVERY {
                        continue;
                    }
                }
                () = sleep => {}
                () = self.wake.notified() => continue,
            }
            if *stop.borrow() {
                return;
            }
            let watermark = self.oldest_open().unwrap_or_else(|| {
                store
                    .queue(HALF_TOPIC, 0)
                    .map_or(0, |q| q.consume_queue_len())
            });
            persisted_at = tokio::time::Instant::now();
            if persisted_watermark != Some(watermark) {
                // An atomic file write (fsyncs and a rename): on the
                // blocking pool, not on a runtime worker.
                let transactions = Arc::clone(&self);
                let written =
                    tokio::task::spawn_blocking(move || transactions.write_watermark(watermark))
                        .await;
                match written {
                    Ok(Ok(())) => persisted_watermark = Some(watermark),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not persist the transaction watermark")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the transaction watermark task failed")
                    }
                }
            }
        }
    }

    /// Asks about one half taken out of line by [`OpenSet::pop_due`], and
    /// puts it back in line however the check ends.
    async fn check_one(&self, store: &Store, half_offset: u64, group: &str) -> Result<()> {
        let _checking = Checking {
            transactions: self,
            half_offset,
        };
        let step = self
            .open
            .lock()
            .by_half
            .get(&half_offset)
            .map(|p| p.step.clone());
        match step {
            // Resolved meanwhile: nothing left to do.
            None => return Ok(()),
            // Committed, but its op record is missing: nothing to ask.
            Some(Step::RealAppended(_)) => {
                self.end(store, half_offset, TransactionState::Commit)
                    .await?;
                return Ok(());
            }
            Some(Step::Open) => {}
        }
        let checker = self.checkers.read().get(group).cloned();
        let state = match checker {
            Some(checker) => {
                let half = half_message(store, half_offset)?;
                tokio::time::timeout(CHECK_TIMEOUT, checker.check(&half))
                    .await
                    .unwrap_or(TransactionState::Unknown)
            }
            // No checker registered (the producer is gone): an unknown answer.
            None => TransactionState::Unknown,
        };
        metrics::counter!(TRANSACTION_CHECKS, "answer" => format!("{state:?}").to_lowercase())
            .increment(1);
        match state {
            TransactionState::Commit | TransactionState::Rollback => {
                // Whatever the outcome (resolved now, meanwhile by the
                // producer, or being resolved by it), the check-back is done;
                // an error leaves the transaction open for the next check.
                self.end(store, half_offset, state).await?;
                Ok(())
            }
            TransactionState::Unknown => {
                let give_up = {
                    let mut open = self.open.lock();
                    let Some(entry) = open.by_half.get_mut(&half_offset) else {
                        return Ok(());
                    };
                    entry.checks += 1;
                    entry.next_check_ms = store.clock().now_ms()
                        + store.config().transaction_check_interval.as_millis() as i64;
                    entry.checks >= store.config().transaction_max_checks
                };
                if give_up {
                    tracing::warn!(
                        half_offset,
                        group,
                        "no answer after the maximum checks; rolling back"
                    );
                    self.end(store, half_offset, TransactionState::Rollback)
                        .await?;
                }
                Ok(())
            }
        }
    }
}

/// A half being checked; dropped, it waits in line for its next check.
struct Checking<'a> {
    transactions: &'a Transactions,
    half_offset: u64,
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        let mut open = self.transactions.open.lock();
        if let Some(pending) = open.by_half.get_mut(&self.half_offset) {
            pending.checking = false;
        }
        open.requeue(self.half_offset);
    }
}
