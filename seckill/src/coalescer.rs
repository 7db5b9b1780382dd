//! The coalescer: concurrent purchases of one item gathered into batches
//! and decided together ([`crate::batch`]).
//!
//! Under a spike thousands of buyers of one item arrive in the same
//! millisecond, and on the single path each pays for its own half append,
//! durable wait, script round trip and commit. Here each item has a *lane*:
//! purchases wait in it, and a batch closes
//!
//! - when **no batch of the item is in flight** (light traffic: a lone
//!   purchase leaves at once, with no timer delay), or
//! - when **`max_batch` purchases are waiting** while others are in flight
//!   (heavy traffic: up to `max_in_flight` batches overlap, one storing its
//!   halves while another runs its script or writes its commits),
//!
//! and otherwise when the batch before it returns. So batches grow with the
//! load and shrink to one purchase when it is light.
//!
//! Scripts run in the order their batches closed (a batch waits for its
//! turn after storing its halves), and a batch's script decides its
//! purchases in arrival order: purchases are decided in exactly the order
//! they reached the lane, as on a single path that served them one by one.
//!
//! A batch runs in a task of its own, so a buyer who disconnects does not
//! abandon the others of the batch; each buyer waits for its own answer.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::batch::{BatchAnswer, HalfSentBatch};
use crate::purchase::{PurchaseError, PurchaseOutcome, ReservationCore};

/// The bounds of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// The most purchases in one batch (1..=1024, `stock::MAX_BATCH`).
    /// Default 512: in `seckill-bench` it decided 10–20 % more purchases
    /// per second than 256 (fewer durable waits and script calls per
    /// purchase), and one call of 512 decisions holds Redis for under two
    /// milliseconds even with millions of buyers recorded.
    pub max_batch: usize,
    /// The most batches of one item in flight at once (1..=64). Default 4:
    /// enough to overlap the durable waits with the scripts.
    pub max_in_flight: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_batch: 512,
            max_in_flight: 4,
        }
    }
}

impl BatchLimits {
    /// Checks both bounds.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=stock::MAX_BATCH).contains(&self.max_batch) {
            return Err(format!(
                "the batch size must be 1 to {}, not {}",
                stock::MAX_BATCH,
                self.max_batch
            ));
        }
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(format!(
                "batches in flight must be 1 to 64, not {}",
                self.max_in_flight
            ));
        }
        Ok(())
    }
}

/// Gathers purchases per item and runs their batches.
#[derive(Debug)]
pub(crate) struct Coalescer {
    core: Arc<ReservationCore>,
    limits: BatchLimits,
    /// One lane per item ever bought here (items are activities: few).
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

/// One item's waiting purchases and batches in flight.
#[derive(Debug)]
struct Lane {
    item: String,
    state: Mutex<LaneState>,
    /// Which batch runs its script next.
    turns: Mutex<TurnOrder>,
    turn_changed: Notify,
}

#[derive(Debug, Default)]
struct LaneState {
    waiting: VecDeque<Waiting>,
    in_flight: usize,
    next_sequence: u64,
}

#[derive(Debug)]
struct Waiting {
    user: String,
    /// The purchase token's issue time, spent by the batch's script.
    spend: Option<u64>,
    item_stock: u64,
    answer: oneshot::Sender<BatchAnswer>,
}

/// A closed batch, ready to run.
struct Closed {
    sequence: u64,
    purchases: Vec<Waiting>,
}

impl Coalescer {
    pub(crate) fn new(core: Arc<ReservationCore>, limits: BatchLimits) -> Self {
        Coalescer {
            core,
            limits,
            lanes: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Queues `user`'s purchase of `item` (spending the purchase token
    /// issued at `spend`) and waits for its batch's answer.
    pub(crate) async fn purchase(
        &self,
        item: &str,
        user: &str,
        spend: Option<u64>,
        item_stock: u64,
    ) -> Result<PurchaseOutcome, PurchaseError> {
        let lane = self.lane(item);
        let (answer, answered) = oneshot::channel();
        let closed = {
            let mut state = lane.state.lock();
            state.waiting.push_back(Waiting {
                user: user.to_owned(),
                spend,
                item_stock,
                answer,
            });
            close_ready(self.limits, &mut state)
        };
        for batch in closed {
            spawn_batch(
                Arc::clone(&self.core),
                Arc::clone(&lane),
                self.limits,
                batch,
            );
        }
        answered.await.unwrap_or_else(|_| {
            Err(PurchaseError::Batch(
                "the batch of this purchase stopped before answering".into(),
            ))
        })
    }

    fn lane(&self, item: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock();
        if let Some(lane) = lanes.get(item) {
            return Arc::clone(lane);
        }
        let lane = Arc::new(Lane {
            item: item.to_owned(),
            state: Mutex::new(LaneState::default()),
            turns: Mutex::new(TurnOrder::default()),
            turn_changed: Notify::new(),
        });
        lanes.insert(item.to_owned(), Arc::clone(&lane));
        lane
    }
}

/// Closes every batch the rules allow now (see the module doc).
fn close_ready(limits: BatchLimits, state: &mut LaneState) -> Vec<Closed> {
    let mut closed = Vec::new();
    while !state.waiting.is_empty()
        && state.in_flight < limits.max_in_flight
        && (state.in_flight == 0 || state.waiting.len() >= limits.max_batch)
    {
        let take = state.waiting.len().min(limits.max_batch);
        let purchases: Vec<Waiting> = state.waiting.drain(..take).collect();
        state.in_flight += 1;
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        closed.push(Closed {
            sequence,
            purchases,
        });
    }
    closed
}

/// Runs `batch` in a task of its own; when it returns (or fails in any
/// way), closes what the rules allow next.
fn spawn_batch(core: Arc<ReservationCore>, lane: Arc<Lane>, limits: BatchLimits, batch: Closed) {
    tokio::spawn(async move {
        let in_flight = InFlight {
            core: Arc::clone(&core),
            lane: Arc::clone(&lane),
            limits,
        };
        run_batch(&core, &lane, batch).await;
        drop(in_flight);
    });
}

/// One batch in flight. Dropping it — when the batch returns, and also if
/// its task panicked — frees its place and closes what may go next, so a
/// failed batch can never leave its item's lane stuck.
struct InFlight {
    core: Arc<ReservationCore>,
    lane: Arc<Lane>,
    limits: BatchLimits,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let closed = {
            let mut state = self.lane.state.lock();
            state.in_flight -= 1;
            close_ready(self.limits, &mut state)
        };
        for next in closed {
            spawn_batch(
                Arc::clone(&self.core),
                Arc::clone(&self.lane),
                self.limits,
                next,
            );
        }
    }
}

/// The three steps of one batch, its script in its turn, and every
/// purchase answered.
async fn run_batch(core: &Arc<ReservationCore>, lane: &Lane, batch: Closed) {
    // Held from here: however this batch ends, its turn is passed on.
    let mut turn = ScriptTurn {
        lane,
        sequence: batch.sequence,
        taken: false,
    };
    let item_stock = batch.purchases.first().map_or(0, |p| p.item_stock);
    let mut purchases = Vec::with_capacity(batch.purchases.len());
    let mut answers_to: Vec<oneshot::Sender<BatchAnswer>> =
        Vec::with_capacity(batch.purchases.len());
    for waiting in batch.purchases {
        purchases.push((waiting.user, waiting.spend));
        answers_to.push(waiting.answer);
    }
    let sent = HalfSentBatch::send_spending(core, &lane.item, item_stock, purchases).await;
    let answers = match sent {
        Ok(sent) => {
            turn.wait().await;
            let reserved = sent.reserve().await;
            drop(turn);
            sent.end(reserved).await
        }
        Err(e) => {
            // No script to run: the turn is given up without waiting.
            drop(turn);
            let why = e.to_string();
            answers_to
                .iter()
                .map(|_| Err(PurchaseError::Batch(why.clone())))
                .collect()
        }
    };
    for (answer_to, answer) in answers_to.into_iter().zip(answers) {
        // A buyer who went away no longer waits; its outcome stands.
        let _ = answer_to.send(answer);
    }
}

/// Whose script runs next in a lane, and the batches that gave up their
/// turn before it came (their halves could not be stored, or their task
/// failed): the turn skips them.
#[derive(Debug, Default)]
struct TurnOrder {
    next: u64,
    given_up: BTreeSet<u64>,
}

impl TurnOrder {
    fn pass(&mut self) {
        self.next += 1;
        while self.given_up.remove(&self.next) {
            self.next += 1;
        }
    }
}

/// One batch's place in its lane's script order. Dropping it passes the
/// turn on: at once if it is this batch's, or when it comes.
struct ScriptTurn<'a> {
    lane: &'a Lane,
    sequence: u64,
    taken: bool,
}

impl ScriptTurn<'_> {
    /// Waits until this batch may run its script.
    async fn wait(&mut self) {
        loop {
            let changed = self.lane.turn_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.lane.turns.lock().next == self.sequence {
                self.taken = true;
                return;
            }
            changed.await;
        }
    }
}

impl Drop for ScriptTurn<'_> {
    fn drop(&mut self) {
        {
            let mut turns = self.lane.turns.lock();
            if self.taken || turns.next == self.sequence {
                turns.pass();
            } else {
                turns.given_up.insert(self.sequence);
            }
        }
        self.lane.turn_changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane() -> Lane {
        Lane {
            item: "sku".into(),
            state: Mutex::new(LaneState::default()),
            turns: Mutex::new(TurnOrder::default()),
            turn_changed: Notify::new(),
        }
    }

    fn turn(lane: &Lane, sequence: u64) -> ScriptTurn<'_> {
        ScriptTurn {
            lane,
            sequence,
            taken: false,
        }
    }

    #[tokio::test]
    async fn a_batch_that_gives_up_its_turn_is_skipped_when_the_turn_comes() {
        let lane = lane();
        // Batch 1 fails before its turn; batch 2 waits behind batch 0.
        drop(turn(&lane, 1));
        assert_eq!(lane.turns.lock().next, 0, "batch 0 still goes first");
        let mut first = turn(&lane, 0);
        first.wait().await;
        drop(first);
        assert_eq!(lane.turns.lock().next, 2, "the turn skipped batch 1");
        let mut third = turn(&lane, 2);
        third.wait().await;
        assert!(third.taken);
        drop(third);
        // A batch whose turn it is and that fails passes it on at once.
        drop(turn(&lane, 3));
        assert_eq!(lane.turns.lock().next, 4);
        assert!(lane.turns.lock().given_up.is_empty());
    }

    #[test]
    fn a_batch_closes_when_none_is_in_flight_or_when_a_full_one_waits() {
        let limits = BatchLimits {
            max_batch: 3,
            max_in_flight: 2,
        };
        let mut state = LaneState::default();
        let waiting = |n: usize| {
            (0..n)
                .map(|i| Waiting {
                    user: format!("u{i}"),
                    spend: None,
                    item_stock: 1,
                    answer: oneshot::channel().0,
                })
                .collect::<VecDeque<_>>()
        };
        // Light traffic: one purchase leaves at once.
        state.waiting = waiting(1);
        let closed = close_ready(limits, &mut state);
        assert_eq!(
            closed.iter().map(|c| c.purchases.len()).collect::<Vec<_>>(),
            [1]
        );
        // While it is in flight, two more wait: not a full batch, so they stay.
        state.waiting = waiting(2);
        assert!(close_ready(limits, &mut state).is_empty());
        // Seven wait: two full batches could leave, but only one more may fly.
        state.waiting = waiting(7);
        let closed = close_ready(limits, &mut state);
        assert_eq!(
            closed.iter().map(|c| c.purchases.len()).collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(closed[0].sequence, 1);
        assert_eq!((state.in_flight, state.waiting.len()), (2, 4));
    }
}
