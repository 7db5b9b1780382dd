//! Ending transactions: commit or rollback, one or many at a time.
//!
//! Every ending of a call — the real messages of its commits and the op
//! records of all — is one [`Store::append_many`]: one write, then one
//! durable wait. A commit's real message and its op record land in the
//! same write, so a crash keeps both, or the real message alone (which
//! resolves the half by its `HALF_OFFSET` at the next start), or neither.
//!
//! The real message comes from memory (kept since `send_half`); only a
//! half recovered at startup is read back from the log.

use super::{RealMessage, Step, Transactions};
use crate::error::{BrokerError, Result};
use crate::record::Message;
use crate::store::Store;
use crate::system_topics::{HALF_OP_TOPIC, HALF_TOPIC, property, restore_real};
use crate::types::{SendResult, TransactionState};

#[cfg(test)]
use super::FailPoint;

/// What an attempt to end a transaction found. "Resolved already" is an
/// outcome, not an error: an error means the attempt failed and the
/// transaction stays open.
#[derive(Debug)]
pub(super) enum Resolution {
    /// Committed now: where the real message is.
    Committed(SendResult),
    /// Rolled back now.
    RolledBack,
    /// A rollback was asked, but the real message was appended by an
    /// earlier commit that failed later: the commit stands (its op record
    /// is written now).
    CommittedEarlier,
    /// No open transaction has that half offset: it is resolved already,
    /// or was never sent.
    NotOpen,
    /// Another resolution of the same half is under way.
    InProgress,
}

/// An open transaction claimed by one resolution. Dropped unfinished (an
/// error, or the caller's future dropped), it puts the transaction back,
/// keeping the step it reached.
struct Claim<'a> {
    transactions: &'a Transactions,
    store: &'a Store,
    half_offset: u64,
    finished: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let now = self.store.clock().now_ms();
        let mut open = self.transactions.open.lock();
        if let Some(pending) = open.by_half.get_mut(&self.half_offset) {
            pending.resolving = false;
            // Not resolved after all: the check-back tries again, no sooner
            // than one interval from now if it was due already.
            if pending.next_check_ms <= now {
                pending.next_check_ms =
                    now + self.store.config().transaction_check_interval.as_millis() as i64;
            }
        }
        open.requeue(self.half_offset);
        drop(open);
        self.transactions.wake.notify_one();
    }
}

/// One claimed ending of a batch, as planned before the append.
struct Planned<'a> {
    claim: Claim<'a>,
    state: TransactionState,
    /// Where the real message is, when an earlier commit appended it.
    earlier: Option<SendResult>,
    /// The index in the appended batch of the real message this ending
    /// appends (a commit of an open half).
    real_at: Option<usize>,
    /// The real message kept from the send, taken from the open set by
    /// the claim (so it moves into the commit instead of being copied).
    /// Should this ending not finish, a later one reads the half instead.
    kept: Option<RealMessage>,
}

/// One entry of a batch: planned, or answered without writing.
enum Entry<'a> {
    Planned(Planned<'a>),
    Answered(Result<Resolution>),
}

impl Transactions {
    /// Commits or rolls back the transaction of the half message at
    /// `half_offset`; a commit returns where the real message landed.
    /// Ending a transaction that is not open is refused.
    pub(crate) async fn resolve(
        &self,
        store: &Store,
        half_offset: u64,
        state: TransactionState,
    ) -> Result<Option<SendResult>> {
        let mut outcomes = self.resolve_many(store, vec![(half_offset, state)]).await?;
        outcomes.pop().expect("one entry")
    }

    /// Ends many transactions with one write and one durable wait; a
    /// result per entry, in input order (see [`crate::Broker::end_transactions`]).
    pub(crate) async fn resolve_many(
        &self,
        store: &Store,
        ends: Vec<(u64, TransactionState)>,
    ) -> Result<Vec<Result<Option<SendResult>>>> {
        let outcomes = self.end_many(store, &ends).await?;
        Ok(outcomes
            .into_iter()
            .zip(ends)
            .map(|(outcome, (half_offset, _))| answer(half_offset, outcome?))
            .collect())
    }

    /// Ends the transaction at `half_offset` as `state` says (the
    /// check-back's way: "resolved already" is an outcome).
    pub(super) async fn end(
        &self,
        store: &Store,
        half_offset: u64,
        state: TransactionState,
    ) -> Result<Resolution> {
        let mut outcomes = self.end_many(store, &[(half_offset, state)]).await?;
        outcomes.pop().expect("one entry")
    }

    /// Ends each transaction as its state says, from the step its
    /// resolution reached: a commit appends the real message (once, ever)
    /// and every ending its op record, all in one append, then one wait for
    /// durability. On an outer error no transaction of the batch is
    /// finished; each stays open with the step it reached.
    async fn end_many(
        &self,
        store: &Store,
        ends: &[(u64, TransactionState)],
    ) -> Result<Vec<Result<Resolution>>> {
        if ends.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "ending transactions needs at least one".into(),
            ));
        }
        let mut entries = self.claim_all(store, ends);
        let mut records = Vec::with_capacity(entries.len() * 2);
        for entry in &mut entries {
            let Entry::Planned(planned) = entry else {
                continue;
            };
            let half_offset = planned.claim.half_offset;
            let commit = planned.earlier.is_some() || planned.state == TransactionState::Commit;
            if commit && planned.earlier.is_none() {
                match real_message(store, half_offset, planned.kept.take()) {
                    Ok(real) => {
                        planned.real_at = Some(records.len());
                        records.push(real);
                    }
                    Err(e) => {
                        *entry = Entry::Answered(Err(e));
                        continue;
                    }
                }
            }
            let op = Message::new(HALF_OP_TOPIC, half_offset.to_string()).with_tags(if commit {
                "commit"
            } else {
                "rollback"
            });
            records.push((0, op));
        }
        if records.is_empty() {
            return Ok(entries.into_iter().map(Entry::into_answer).collect());
        }
        #[cfg(test)]
        let injected = self.inject_failure(&mut records, &entries);
        let (results, end) = store.append_many(records)?;
        {
            // Recorded before anything else can fail: from here on these
            // commits are decided.
            let mut open = self.open.lock();
            for entry in &entries {
                if let Entry::Planned(Planned {
                    claim,
                    real_at: Some(at),
                    ..
                }) = entry
                {
                    open.mark_committed(claim.half_offset, results[*at].clone());
                }
            }
        }
        #[cfg(test)]
        if let Some(e) = injected {
            return Err(e);
        }
        store.wait_durable(end).await?;
        let mut open = self.open.lock();
        let answers = entries
            .into_iter()
            .map(|entry| match entry {
                Entry::Answered(answer) => answer,
                Entry::Planned(mut planned) => {
                    planned.claim.finished = true;
                    open.remove(planned.claim.half_offset);
                    let committed = planned
                        .earlier
                        .or_else(|| planned.real_at.map(|at| results[at].clone()));
                    Ok(match (committed, planned.state) {
                        (Some(result), TransactionState::Commit) => Resolution::Committed(result),
                        (Some(_), _) => Resolution::CommittedEarlier,
                        (None, _) => Resolution::RolledBack,
                    })
                }
            })
            .collect();
        Ok(answers)
    }

    /// Claims every open transaction of `ends` under one take of the open
    /// set's lock; the others are answered at once (not open, being
    /// resolved — a half named twice in one batch is that — or no ending).
    fn claim_all<'a>(
        &'a self,
        store: &'a Store,
        ends: &[(u64, TransactionState)],
    ) -> Vec<Entry<'a>> {
        let mut open = self.open.lock();
        let open = &mut *open;
        ends.iter()
            .map(|&(half_offset, state)| {
                if state == TransactionState::Unknown {
                    return Entry::Answered(Err(BrokerError::InvalidArgument(
                        "a transaction ends with commit or rollback, not unknown".into(),
                    )));
                }
                let pending = match open.by_half.get_mut(&half_offset) {
                    None => return Entry::Answered(Ok(Resolution::NotOpen)),
                    Some(pending) if pending.resolving => {
                        return Entry::Answered(Ok(Resolution::InProgress));
                    }
                    Some(pending) => pending,
                };
                pending.resolving = true;
                open.due.remove(&(pending.next_check_ms, half_offset));
                let earlier = match &pending.step {
                    Step::RealAppended(result) => Some(result.clone()),
                    Step::Open => None,
                };
                let kept = pending.real.take();
                Entry::Planned(Planned {
                    claim: Claim {
                        transactions: self,
                        store,
                        half_offset,
                        finished: false,
                    },
                    state,
                    earlier,
                    real_at: None,
                    kept,
                })
            })
            .collect()
    }

    /// Takes the failure a test asked for. At [`FailPoint::OpRecord`] the
    /// batch keeps only its real messages (the op records "fail"); either
    /// way the error is returned once the append is done.
    #[cfg(test)]
    fn inject_failure(
        &self,
        records: &mut Vec<(u32, Message)>,
        entries: &[Entry<'_>],
    ) -> Option<BrokerError> {
        let commits = entries
            .iter()
            .any(|e| matches!(e, Entry::Planned(p) if p.real_at.is_some()));
        if !commits {
            return None;
        }
        let (at, error) = self.fail_after_append.lock().take()?;
        if at == FailPoint::OpRecord {
            records.retain(|(_, m)| m.topic != HALF_OP_TOPIC);
        }
        Some(error)
    }
}

impl Entry<'_> {
    fn into_answer(self) -> Result<Resolution> {
        match self {
            Entry::Answered(answer) => answer,
            Entry::Planned(_) => unreachable!("only called when nothing was planned"),
        }
    }
}

/// The producer's answer for an outcome: "resolved already" is an error
/// to it.
fn answer(half_offset: u64, resolution: Resolution) -> Result<Option<SendResult>> {
    match resolution {
        Resolution::Committed(result) => Ok(Some(result)),
        Resolution::RolledBack => Ok(None),
        Resolution::CommittedEarlier => Err(BrokerError::InvalidArgument(format!(
            "the transaction with half offset {half_offset} is committed already; it cannot be rolled back"
        ))),
        Resolution::NotOpen => Err(BrokerError::InvalidArgument(format!(
            "no open transaction with half offset {half_offset} (resolved already, or never sent)"
        ))),
        Resolution::InProgress => Err(BrokerError::InvalidArgument(format!(
            "the transaction with half offset {half_offset} is being resolved; ask again"
        ))),
    }
}

/// The real message of the half at `half_offset`, tagged with it, and its
/// queue: the copy kept from the send, or from the log for a half found at
/// startup (or whose earlier ending did not finish).
fn real_message(
    store: &Store,
    half_offset: u64,
    kept: Option<RealMessage>,
) -> Result<(u32, Message)> {
    let (queue_id, mut message) = match kept {
        Some(real) => std::sync::Arc::try_unwrap(real).unwrap_or_else(|shared| (*shared).clone()),
        None => {
            let half = store.read(HALF_TOPIC, 0, half_offset)?;
            let (mut message, queue_id) = restore_real(half.message)?;
            message.properties.remove(property::PRODUCER_GROUP);
            (queue_id, message)
        }
    };
    message
        .properties
        .insert(property::HALF_OFFSET.into(), half_offset.to_string());
    Ok((queue_id, message))
}
