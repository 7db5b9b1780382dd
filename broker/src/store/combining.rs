//! Combined appends: sends that find another send appending wait in a
//! queue, and the one appending writes theirs after its own, all of them in
//! one take of the append lock and one `pwrite`.
//!
//! Without it every producer's send takes the append lock and makes its
//! own `pwrite`, so on two cores 64 producers contend for the lock and go
//! slower than one. With it the first send appends at once (a lone
//! producer pays nothing more), and while it does, the others queue their
//! messages and yield instead of parking a thread on the lock. When it is
//! done it appends everything that queued meanwhile, as one batch, and
//! answers each waiter with its own results ("flat combining").
//!
//! Each request is validated on its own before it queues, so one bad send
//! cannot fail the others; what can still fail a combined write (the disk,
//! a shutdown) fails every send of it. A waiter that finds nobody appending
//! after it queued appends the queue itself, so none is left behind.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::Store;
use super::append::one_topic;
use crate::error::{BrokerError, Result};
use crate::record::Message;
use crate::types::SendResult;

/// What one send gets: its results and the log offset its write ended at.
type Appended = Result<(Vec<SendResult>, u64)>;

/// Sends waiting for the one appending, and the right to append them.
#[derive(Debug, Default)]
pub(crate) struct Combiner {
    /// Held by the send that is appending (its own batch, then the queue).
    appending: Mutex<()>,
    waiting: Mutex<Vec<Waiting>>,
    /// Sends appended by another send's write so far.
    combined: AtomicU64,
}

#[derive(Debug)]
struct Waiting {
    queue_id: u32,
    messages: Vec<Message>,
    answer: oneshot::Sender<Appended>,
}

impl Store {
    /// Appends `messages` (all of one topic) to queue `queue_id`, as
    /// [`Store::append`] does, combined with the sends that arrive while
    /// another is appending.
    pub(crate) async fn append_combined(&self, queue_id: u32, messages: Vec<Message>) -> Appended {
        self.check_appendable(queue_id, &messages)?;
        if let Some(appending) = self.combiner.appending.try_lock() {
            let mine = self.append(queue_id, messages);
            self.append_waiting();
            drop(appending);
            self.append_left_behind();
            return mine;
        }
        let (answer, answered) = oneshot::channel();
        self.combiner.waiting.lock().push(Waiting {
            queue_id,
            messages,
            answer,
        });
        self.append_left_behind();
        answered.await.unwrap_or(Err(BrokerError::ShuttingDown))
    }

    /// Sends appended by another send's write so far.
    pub(crate) fn combined_sends(&self) -> u64 {
        self.combiner.combined.load(Ordering::Relaxed)
    }

    /// What [`Store::append_many`] would refuse of this send alone.
    fn check_appendable(&self, queue_id: u32, messages: &[Message]) -> Result<()> {
        let Some(first) = messages.first() else {
            return Err(BrokerError::InvalidArgument(
                "a send needs at least one message".into(),
            ));
        };
        one_topic(messages)?;
        self.ensure_topic(&first.topic)?;
        self.queue(&first.topic, queue_id)?;
        for message in messages {
            self.record_len(message)?;
        }
        Ok(())
    }

    /// Appends what waits, batch after batch, until nothing does. Called by
    /// the holder of `appending`.
    fn append_waiting(&self) {
        loop {
            let waiting = std::mem::take(&mut *self.combiner.waiting.lock());
            if waiting.is_empty() {
                return;
            }
            self.combiner
                .combined
                .fetch_add(waiting.len() as u64, Ordering::Relaxed);
            let counts: Vec<usize> = waiting.iter().map(|w| w.messages.len()).collect();
            let mut answers = Vec::with_capacity(waiting.len());
            let mut batch = Vec::with_capacity(counts.iter().sum());
            for w in waiting {
                batch.extend(w.messages.into_iter().map(|m| (w.queue_id, m)));
                answers.push(w.answer);
            }
            match self.append_many(batch) {
                Ok((results, end)) => {
                    let mut results = results.into_iter();
                    for (answer, count) in answers.into_iter().zip(counts) {
                        let _ = answer.send(Ok((results.by_ref().take(count).collect(), end)));
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    for answer in answers {
                        let _ = answer.send(Err(self.combined_failure(&reason)));
                    }
                }
            }
        }
    }

    /// A waiter queued after the holder's last look: if nobody appends
    /// now, append the queue here.
    fn append_left_behind(&self) {
        while !self.combiner.waiting.lock().is_empty() {
            // Someone else appending will look at the queue again.
            let Some(appending) = self.combiner.appending.try_lock() else {
                return;
            };
            self.append_waiting();
            drop(appending);
        }
    }

    /// The error each send of a failed combined write gets: the store's
    /// own state when that explains it, else the write's error as text.
    fn combined_failure(&self, reason: &str) -> BrokerError {
        if let Err(e) = self.failure.check() {
            return e;
        }
        if let Err(e) = self.disk.check() {
            return e;
        }
        if self.closing.load(Ordering::Acquire) {
            return BrokerError::ShuttingDown;
        }
        BrokerError::io(
            "a combined append",
            std::io::Error::other(reason.to_owned()),
        )
    }
}
