//! Consuming one broker: group membership and one task per owned queue.
//!
//! The member task joins the group (clustering mode, topics `orders` and
//! `order-timeouts`; the broker adds the group's retry topic), heartbeats
//! it, and starts or stops queue tasks as the assignment changes. A queue
//! task loops: take tokens from the rate gate (order queues only —
//! timeouts are not orders to write), pull exactly that many messages,
//! hand them to [`crate::handling`], and commit the queue's offset only
//! once that returned, i.e. after the database commit. A crash anywhere
//! before the offset commit means redelivery, which the idempotent writes
//! absorb.
//!
//! Pulls and commits are fenced: each names this member and the
//! generation of the assignment the queue task started under. When the
//! broker refuses one (the queue went to another member, or someone else
//! committed further),
//! the task stops at once and wakes the member task to heartbeat now,
//! rather than consuming a queue that is no longer its own until the next
//! heartbeat; if the queue is still ours, a fresh task starts from the
//! committed offset.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use broker::system_topics::{dlq_topic, retry_topic};
use broker::{
    BrokerError, ConsumeMode, ConsumerApi, JoinRequest, PullFence, PullRequest, PullStatus,
    QueueRef,
};
use seckill::{ORDERS_TOPIC, PAYMENT_TIMEOUTS_TOPIC};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handling::handle_batch;
use crate::metrics::{DLQ_DEPTH, LAG};
use crate::retrying::backoff;
use crate::shared::Shared;

/// Largest pull answer in bytes (orders are ~150 bytes each).
const MAX_PULL_BYTES: u32 = 4 << 20;

/// Aborts its task when dropped, so a crashed member takes its queue
/// tasks down with it.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    /// Waits for the task to end.
    async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running queue task.
#[derive(Debug)]
struct QueueTask {
    stop: CancellationToken,
    guard: TaskGuard,
}

/// One broker's group membership, until `stop`.
pub(crate) async fn run_member(
    shared: Arc<Shared>,
    broker_name: String,
    api: Arc<dyn ConsumerApi>,
    stop: CancellationToken,
) {
    let settings = &shared.settings;
    let join = JoinRequest {
        group: settings.group.clone(),
        member: settings.member.clone(),
        mode: ConsumeMode::Clustering,
        topics: vec![ORDERS_TOPIC.to_owned(), PAYMENT_TIMEOUTS_TOPIC.to_owned()],
    };
    let mut tasks: HashMap<QueueRef, QueueTask> = HashMap::new();
    // A queue task that learns it lost its queue wakes the member task.
    let lost_queue = Arc::new(Notify::new());
    let mut joined = false;
    let mut failures = 0u32;
    loop {
        let answer = if joined {
            api.heartbeat(&settings.group, &settings.member).await
        } else {
            api.join_group(&join).await
        };
        match answer {
            Ok(assignment) => {
                joined = true;
                failures = 0;
                let owned: Vec<QueueRef> = assignment.queues;
                // Queues no longer ours: finish the batch in hand, then stop.
                // Tasks that stopped themselves (fenced) go too; a queue
                // still ours gets a fresh task below.
                let lost: Vec<QueueRef> = tasks
                    .iter()
                    .filter(|(q, task)| !owned.contains(q) || task.guard.0.is_finished())
                    .map(|(q, _)| q.clone())
                    .collect();
                for queue in lost {
                    if let Some(task) = tasks.remove(&queue) {
                        task.stop.cancel();
                        task.guard.join().await;
                    }
                }
                for queue in owned {
                    if tasks.contains_key(&queue) {
                        continue;
                    }
                    let queue_stop = stop.child_token();
                    let fence = Fence {
                        group: assignment.offset_owner.clone(),
                        member: settings.member.clone(),
                        generation: assignment.generation,
                        lost: Arc::clone(&lost_queue),
                    };
                    let handle = tokio::spawn(run_queue(
                        Arc::clone(&shared),
                        Arc::clone(&api),
                        fence,
                        queue.clone(),
                        queue_stop.clone(),
                    ));
                    tasks.insert(
                        queue,
                        QueueTask {
                            stop: queue_stop,
                            guard: TaskGuard(handle),
                        },
                    );
                }
                publish(&shared, &broker_name, &tasks);
                report_dead_letters(&shared, &broker_name, api.as_ref()).await;
            }
            Err(BrokerError::UnknownMember { .. }) => {
                publish(&shared, &broker_name, &tasks);
                // Expired (a long pause) or the broker restarted: join again.
                tracing::warn!(broker = %broker_name, "the group forgot this member; joining again");
                joined = false;
                continue;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(broker = %broker_name, error = %e, "group call failed");
                if backoff(&shared, failures, &stop).await.is_err() {
                    break;
                }
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.heartbeat_interval) => {}
            () = lost_queue.notified() => {}
            () = stop.cancelled() => break,
        }
    }
    // Graceful stop: every queue task commits what it wrote, then the
    // member leaves so its queues move to the others at once.
    for task in tasks.values() {
        task.stop.cancel();
    }
    for (_, task) in tasks.drain() {
        task.guard.join().await;
    }
    shared.consuming.lock().remove(&broker_name);
    if joined && let Err(e) = api.leave_group(&settings.group, &settings.member).await {
        tracing::warn!(broker = %broker_name, error = %e, "leaving the group failed");
    }
}

/// Sets the dead-letter gauge: messages in this group's DLQ on the broker.
async fn report_dead_letters(shared: &Shared, broker_name: &str, api: &dyn ConsumerApi) {
    let dlq = dlq_topic(&shared.settings.group);
    if let Ok(stats) = api.queue_stats().await {
        let depth: u64 = stats
            .iter()
            .filter(|q| q.topic == dlq)
            .map(|q| q.max_offset.saturating_sub(q.min_offset))
            .sum();
        metrics::gauge!(DLQ_DEPTH, "broker" => broker_name.to_owned()).set(depth as f64);
    }
}

/// Records which queues of `broker_name` have a running task.
fn publish(shared: &Shared, broker_name: &str, tasks: &HashMap<QueueRef, QueueTask>) {
    let mut queues: Vec<QueueRef> = tasks.keys().cloned().collect();
    queues.sort();
    shared
        .consuming
        .lock()
        .insert(broker_name.to_owned(), queues);
}

/// Whether a queue's messages are orders to write at the steady rate (the
/// orders topic, and retries, which are mostly orders) or timeouts.
fn is_rated(shared: &Shared, topic: &str) -> bool {
    topic == ORDERS_TOPIC || topic == retry_topic(&shared.settings.group)
}

/// Who a queue task commits as: the group (clustering mode, so the group
/// is the offset owner), this member and the generation of the assignment
/// that gave it the queue.
#[derive(Debug)]
struct Fence {
    group: String,
    member: String,
    generation: u64,
    /// Woken when the broker says the queue is no longer ours.
    lost: Arc<Notify>,
}

/// One owned queue, until `stop` or until the broker says it is no longer
/// this member's.
async fn run_queue(
    shared: Arc<Shared>,
    api: Arc<dyn ConsumerApi>,
    fence: Fence,
    queue: QueueRef,
    stop: CancellationToken,
) {
    let owner = &fence.group;
    let QueueRef { topic, queue_id } = &queue;
    let mut failures = 0u32;
    let mut offset = loop {
        match api.committed_offset(owner, topic, *queue_id).await {
            Ok(offset) => break offset.unwrap_or(0),
            Err(e) => {
                failures += 1;
                tracing::warn!(topic, queue_id, error = %e, "cannot read the committed offset");
                if backoff(&shared, failures, &stop).await.is_err() {
                    return;
                }
            }
        }
    };
    let rated = is_rated(&shared, topic);
    let max_batch = shared.settings.max_batch.max(1);
    let hold_ms = u64::try_from(shared.settings.pull_hold.as_millis()).unwrap_or(u64::MAX);
    // A busy queue takes its tokens first and pulls exactly that many,
    // without waiting. A queue found empty turns idle: it long-polls for
    // one message without holding tokens (which the busy queues need) and
    // pays for that message once it comes.
    let mut idle = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let (max_messages, hold, prepaid) = if !rated {
            (max_batch, hold_ms, 0)
        } else if idle {
            (1, hold_ms, 0)
        } else {
            let granted = tokio::select! {
                granted = shared.gate.acquire(max_batch) => granted,
                () = stop.cancelled() => return,
            };
            (granted, 0, granted)
        };
        let request = PullRequest {
            group: owner.clone(),
            topic: topic.clone(),
            queue_id: *queue_id,
            offset,
            max_messages,
            max_bytes: MAX_PULL_BYTES,
            hold_ms: hold,
            tags: None,
            // Fenced like the commits: a pull after the queue went to
            // another member is refused, so nothing more is written here.
            fence: Some(PullFence {
                member: fence.member.clone(),
                generation: fence.generation,
            }),
        };
        let pulled = tokio::select! {
            pulled = api.pull(&request) => pulled,
            () = stop.cancelled() => {
                shared.gate.give_back(prepaid);
                return;
            }
        };
        let result = match pulled {
            Ok(result) => {
                failures = 0;
                result
            }
            Err(e @ (BrokerError::Fenced(_) | BrokerError::UnknownMember { .. })) => {
                shared.gate.give_back(prepaid);
                tracing::info!(topic, queue_id, error = %e, "the queue is no longer ours; stopping its task");
                fence.lost.notify_one();
                return;
            }
            Err(e) => {
                shared.gate.give_back(prepaid);
                failures += 1;
                tracing::warn!(topic, queue_id, error = %e, "pull failed");
                if backoff(&shared, failures, &stop).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let got = u32::try_from(result.messages.len()).unwrap_or(u32::MAX);
        if rated {
            if prepaid > 0 {
                shared.gate.give_back(prepaid.saturating_sub(got));
            } else if got > 0 {
                tokio::select! {
                    _ = shared.gate.acquire(got) => {}
                    () = stop.cancelled() => return,
                }
            }
            idle = got == 0;
        }
        match result.status {
            PullStatus::Found if !result.messages.is_empty() => {
                if handle_batch(
                    &shared,
                    api.as_ref(),
                    topic,
                    *queue_id,
                    &result.messages,
                    &stop,
                )
                .await
                .is_err()
                {
                    // Stopped before the batch was safe: not committed, so
                    // it is delivered again to whoever owns the queue next.
                    return;
                }
                offset = result.next_offset;
                if commit(&api, &fence, &queue, offset).await.is_err() {
                    return;
                }
                metrics::gauge!(LAG, "topic" => topic_kind(&shared, topic))
                    .set(result.max_offset.saturating_sub(offset) as f64);
            }
            PullStatus::OffsetTooSmall | PullStatus::OffsetTooBig => {
                tracing::warn!(
                    topic,
                    queue_id,
                    from = offset,
                    to = result.next_offset,
                    "offset out of range; moving"
                );
                offset = result.next_offset;
                if commit(&api, &fence, &queue, offset).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// A bounded label for a topic.
fn topic_kind(shared: &Shared, topic: &str) -> &'static str {
    if topic == ORDERS_TOPIC {
        "orders"
    } else if topic == PAYMENT_TIMEOUTS_TOPIC {
        "timeouts"
    } else if topic == retry_topic(&shared.settings.group) {
        "retry"
    } else {
        "other"
    }
}

/// The queue is no longer this task's: stop consuming it.
#[derive(Debug)]
struct QueueLost;

/// Commits an offset, fenced. A transient failure is logged and the next
/// commit carries it (until then a restart redelivers, which is harmless).
/// A refusal that says the queue is no longer ours — another member owns
/// it, our assignment is older than our ownership, someone committed
/// further, or the group forgot us — wakes the member task and answers
/// [`QueueLost`]: the task must stop now.
async fn commit(
    api: &Arc<dyn ConsumerApi>,
    fence: &Fence,
    queue: &QueueRef,
    offset: u64,
) -> Result<(), QueueLost> {
    let result = api
        .commit_offset_fenced(
            &fence.group,
            &fence.member,
            fence.generation,
            &queue.topic,
            queue.queue_id,
            offset,
        )
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(
            e @ (BrokerError::Fenced(_)
            | BrokerError::OffsetBackwards { .. }
            | BrokerError::UnknownMember { .. }),
        ) => {
            tracing::info!(topic = %queue.topic, queue_id = queue.queue_id, offset, error = %e, "the queue is no longer ours; stopping its task");
            fence.lost.notify_one();
            Err(QueueLost)
        }
        Err(e) => {
            tracing::warn!(topic = %queue.topic, queue_id = queue.queue_id, offset, error = %e, "offset commit failed");
            Ok(())
        }
    }
}
