//! A property test: the broker behaves like a simple in-memory model over
//! random sequences of send, pull, commit, clean restart and crash.
//!
//! The model is a list of bodies per queue and a committed offset per
//! queue. Sends are acknowledged in sync-flush mode, so after any restart
//! every acknowledged message must still be there, in order, at the same
//! offset. Committed offsets survive a clean restart exactly; after a crash
//! they may fall back to an earlier committed value (offsets are persisted
//! on an interval) but never move ahead of what was committed.

use std::collections::{BTreeSet, HashMap};

use broker::{Broker, BrokerError, Message, PullRequest, PullStatus};
use proptest::prelude::*;

use crate::helpers::small_config;

const QUEUES: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Send {
        queue: u32,
        sizes: Vec<usize>,
    },
    Pull {
        queue: u32,
        at_percent: u64,
        max: u32,
    },
    Commit {
        queue: u32,
        at_percent: u64,
    },
    Restart {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..QUEUES, prop::collection::vec(0usize..400, 1..4)).prop_map(|(queue, sizes)| Op::Send { queue, sizes }),
        3 => (0..QUEUES, 0u64..=100, 1u32..10).prop_map(|(queue, at_percent, max)| Op::Pull { queue, at_percent, max }),
        2 => (0..QUEUES, 0u64..=100).prop_map(|(queue, at_percent)| Op::Commit { queue, at_percent }),
        1 => any::<bool>().prop_map(|clean| Op::Restart { clean }),
    ]
}

#[derive(Default)]
struct Model {
    queues: HashMap<u32, Vec<Vec<u8>>>,
    committed: HashMap<u32, u64>,
    ever_committed: HashMap<u32, BTreeSet<u64>>,
}

fn body_for(step: usize, index: usize, size: usize) -> Vec<u8> {
    let mut body = format!("{step}:{index}:").into_bytes();
    body.resize(body.len() + size, (step % 251) as u8);
    body
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let mut broker = Broker::open(config.clone()).unwrap();
    broker.create_topic("t", QUEUES).unwrap();
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Send { queue, sizes } => {
                let bodies: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| body_for(step, i, s))
                    .collect();
                let messages = bodies
                    .iter()
                    .map(|b| Message::new("t", b.clone()))
                    .collect();
                let results = broker.put(queue, messages).await.unwrap();
                let stored = model.queues.entry(queue).or_default();
                for (result, body) in results.iter().zip(bodies) {
                    prop_assert_eq!(result.queue_offset, stored.len() as u64);
                    stored.push(body);
                }
            }
            Op::Pull {
                queue,
                at_percent,
                max,
            } => {
                let expected = model.queues.get(&queue).cloned().unwrap_or_default();
                let offset = expected.len() as u64 * at_percent / 100;
                let result = broker
                    .pull(&PullRequest {
                        group: "g".into(),
                        topic: "t".into(),
                        queue_id: queue,
                        offset,
                        max_messages: max,
                        max_bytes: 1 << 20,
                        hold_ms: 0,
                        tags: None,
                        fence: None,
                    })
                    .await
                    .unwrap();
                let want: Vec<Vec<u8>> = expected
                    .iter()
                    .skip(offset as usize)
                    .take(max as usize)
                    .cloned()
                    .collect();
                let got: Vec<Vec<u8>> = result
                    .messages
                    .iter()
                    .map(|m| m.message.body.to_vec())
                    .collect();
                prop_assert_eq!(&got, &want);
                let status = if want.is_empty() {
                    PullStatus::NoNewMessages
                } else {
                    PullStatus::Found
                };
                prop_assert_eq!(result.status, status);
                prop_assert_eq!(result.next_offset, offset + want.len() as u64);
                prop_assert_eq!(result.max_offset, expected.len() as u64);
            }
            Op::Commit { queue, at_percent } => {
                let len = model.queues.get(&queue).map_or(0, Vec::len) as u64;
                let offset = len * at_percent / 100;
                let committed = model.committed.get(&queue).copied();
                let result = broker.commit_offset("g", "t", queue, offset);
                if let Some(committed) = committed.filter(|c| offset < *c) {
                    // A commit never moves an offset back (only a reset does).
                    prop_assert!(
                        matches!(
                            result,
                            Err(BrokerError::OffsetBackwards { committed: c, requested })
                                if c == committed && requested == offset
                        ),
                        "{result:?}"
                    );
                } else {
                    result.unwrap();
                    model.committed.insert(queue, offset);
                    model
                        .ever_committed
                        .entry(queue)
                        .or_default()
                        .insert(offset);
                }
            }
            Op::Restart { clean } => {
                if clean {
                    broker.shutdown().await.unwrap();
                }
                drop(broker);
                broker = Broker::open(config.clone()).unwrap();
                prop_assert_eq!(broker.recovery().crashed, !clean);
                for queue in 0..QUEUES {
                    let got = broker.committed_offset("g", "t", queue);
                    if clean {
                        prop_assert_eq!(got, model.committed.get(&queue).copied());
                    } else if let Some(got) = got {
                        let ever = model
                            .ever_committed
                            .get(&queue)
                            .cloned()
                            .unwrap_or_default();
                        prop_assert!(ever.contains(&got), "offset {got} was never committed");
                        model.committed.insert(queue, got);
                    } else {
                        model.committed.remove(&queue);
                    }
                }
            }
        }
    }
    // Everything acknowledged is there, in order.
    for queue in 0..QUEUES {
        let want = model.queues.get(&queue).cloned().unwrap_or_default();
        let got: Vec<Vec<u8>> = crate::helpers::pull_all(&broker, "t", queue, 0)
            .await
            .into_iter()
            .map(|m| m.message.body.to_vec())
            .collect();
        prop_assert_eq!(got, want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_broker_matches_an_in_memory_model(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops))?;
    }
}
