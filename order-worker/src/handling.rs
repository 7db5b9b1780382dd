//! What the worker does with a pulled batch, before its offset may be
//! committed.
//!
//! Orders: each body is checked ([`decode_order`]); one that can never be
//! an order goes back to the broker (retry topic, then the dead-letter
//! topic — never dropped). The rest are written in one transaction. A
//! database error that may pass (connection lost, pool timeout, lock or
//! serialization conflict) is retried with backoff for as long as it
//! takes — the offset is not committed meanwhile, so nothing is lost. An
//! error the database will repeat (it refuses the data) splits the batch
//! into single orders, so only the order at fault goes back to the broker.
//!
//! After the write, every order of the batch that is in the database gets
//! its payment timeout — also those already written, since a worker that
//! died between its commit and sending them would otherwise leave them
//! without one (a second timeout is harmless). Orders the database refused
//! because the user already holds a live order give their reservation back
//! to the stock store. Orders refused by the database's stock guard keep
//! theirs: the store sold more than the database allows, and putting the
//! unit back on sale would only sell it again; reconciliation reports
//! them.
//!
//! Payment timeouts: cancel the order if unpaid, then run release.lua. Both
//! steps are idempotent and the release also runs when the order was
//! already cancelled — a worker that died between the two must not leak
//! the unit — while release.lua gives it back only if the buyer record
//! still names this very order.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use broker::system_topics::property;
use broker::{ConsumerApi, RetryOutcome, StoredMessage};
use seckill::{PAYMENT_TIMEOUTS_TOPIC, Release};
use tokio_util::sync::CancellationToken;

use crate::messages::{PaymentTimeout, decode_order};
use crate::metrics::{BATCH_SIZE, GIVEN_BACK, ORDERS_WRITTEN, RELEASES, TIMEOUTS, WRITE_SECONDS};
use crate::order_store::{BatchOutcome, CancelOutcome, NewOrder, OrderStoreError};
use crate::retrying::{Stopped, database_error_may_pass, retry, retry_until_done};
use crate::shared::{Counters, Shared};

type Step<T = ()> = Result<T, Stopped>;

/// Where a message came from, for the retry-topic copy of it.
struct Origin<'a> {
    api: &'a dyn ConsumerApi,
    topic: &'a str,
    queue_id: u32,
}

/// Handles one pulled batch of `topic`/`queue_id`. `Ok` means every
/// message is settled (written, refused, or given back) and the offset
/// may be committed.
pub(crate) async fn handle_batch(
    shared: &Shared,
    api: &dyn ConsumerApi,
    topic: &str,
    queue_id: u32,
    messages: &[StoredMessage],
    stop: &CancellationToken,
) -> Step {
    let origin = Origin {
        api,
        topic,
        queue_id,
    };
    let (timeouts, orders): (Vec<&StoredMessage>, Vec<&StoredMessage>) =
        messages.iter().partition(|m| is_timeout(topic, m));
    if !orders.is_empty() {
        write_orders(shared, &origin, &orders, stop).await?;
    }
    for message in timeouts {
        handle_timeout(shared, &origin, message, stop).await?;
    }
    Ok(())
}

/// A payment timeout, read from its own topic or from the retry topic.
fn is_timeout(topic: &str, message: &StoredMessage) -> bool {
    topic == PAYMENT_TIMEOUTS_TOPIC
        || message
            .message
            .properties
            .get(property::ORIGIN_TOPIC)
            .is_some_and(|t| t == PAYMENT_TIMEOUTS_TOPIC)
}

async fn write_orders(
    shared: &Shared,
    origin: &Origin<'_>,
    messages: &[&StoredMessage],
    stop: &CancellationToken,
) -> Step {
    let mut decoded: Vec<(NewOrder, u64)> = Vec::with_capacity(messages.len());
    for message in messages {
        match decode_order(&message.message.body) {
            Ok(order) => decoded.push((order, message.queue_offset)),
            Err(reason) => give_back(shared, origin, message.queue_offset, &reason, stop).await?,
        }
    }
    if decoded.is_empty() {
        return Ok(());
    }
    let batch: Vec<NewOrder> = decoded.iter().map(|(order, _)| order.clone()).collect();
    match write_with_retry(shared, &batch, stop).await? {
        Ok(outcome) => after_write(shared, origin, &batch, &outcome, stop).await,
        Err(e) if batch.len() == 1 => {
            let reason = format!("the database refused the order: {e}");
            give_back(shared, origin, decoded[0].1, &reason, stop).await
        }
        Err(e) => {
            tracing::warn!(error = %e, orders = batch.len(), "the database refused a batch; writing its orders one by one");
            for (order, offset) in decoded {
                let single = std::slice::from_ref(&order);
                match write_with_retry(shared, single, stop).await? {
                    Ok(outcome) => after_write(shared, origin, single, &outcome, stop).await?,
                    Err(e) => {
                        let reason = format!("the database refused the order: {e}");
                        give_back(shared, origin, offset, &reason, stop).await?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Writes a batch, retrying errors that may pass. The inner `Err` is an
/// error the database would repeat.
async fn write_with_retry(
    shared: &Shared,
    batch: &[NewOrder],
    stop: &CancellationToken,
) -> Step<Result<BatchOutcome, OrderStoreError>> {
    let write = || async {
        let started = Instant::now();
        let outcome = shared.orders.write_batch(batch).await?;
        metrics::histogram!(WRITE_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(BATCH_SIZE).record(batch.len() as f64);
        Ok(outcome)
    };
    retry(
        shared,
        stop,
        "a database write",
        database_error_may_pass,
        true,
        write,
    )
    .await
}

async fn after_write(
    shared: &Shared,
    origin: &Origin<'_>,
    batch: &[NewOrder],
    outcome: &BatchOutcome,
    stop: &CancellationToken,
) -> Step {
    type Counter = fn(&Counters) -> &AtomicU64;
    let tallies: [(&str, &Vec<String>, Counter); 4] = [
        ("inserted", &outcome.inserted, |c| &c.inserted),
        ("already_written", &outcome.already_written, |c| {
            &c.already_written
        }),
        ("conflicting", &outcome.conflicting, |c| &c.conflicting),
        ("over_stock", &outcome.over_stock, |c| &c.over_stock),
    ];
    for (label, ids, counter) in tallies {
        if !ids.is_empty() {
            metrics::counter!(ORDERS_WRITTEN, "outcome" => label).increment(ids.len() as u64);
            shared.count(counter, ids.len() as u64);
        }
    }

    // Payment timeouts of everything the database holds from this batch.
    let timeout_ms = i64::try_from(shared.settings.payment_timeout.as_millis()).unwrap_or(i64::MAX);
    let in_database: HashSet<&str> = outcome
        .inserted
        .iter()
        .chain(&outcome.already_written)
        .map(String::as_str)
        .collect();
    let timeouts: Vec<broker::Message> = batch
        .iter()
        .filter(|order| in_database.contains(order.order_id.as_str()))
        .map(|order| {
            PaymentTimeout::of(order).to_message(order.created_at_ms.saturating_add(timeout_ms))
        })
        .collect();
    if !timeouts.is_empty() {
        let count = timeouts.len() as u64;
        retry_until_done(shared, stop, "sending payment timeouts", || {
            origin.api.send_by_key(timeouts.clone())
        })
        .await?;
        shared.count(|c| &c.timeouts_sent, count);
    }

    for order in batch
        .iter()
        .filter(|o| outcome.conflicting.contains(&o.order_id))
    {
        tracing::warn!(order_id = %order.order_id, item = %order.item, "the user already holds a live order; giving the reservation back");
        release(
            shared,
            &order.item,
            &order.user,
            &order.order_id,
            "refused",
            stop,
        )
        .await?;
    }
    Ok(())
}

async fn handle_timeout(
    shared: &Shared,
    origin: &Origin<'_>,
    message: &StoredMessage,
    stop: &CancellationToken,
) -> Step {
    let timeout = match PaymentTimeout::decode(&message.message.body) {
        Ok(timeout) => timeout,
        Err(reason) => return give_back(shared, origin, message.queue_offset, &reason, stop).await,
    };
    let cancel = || shared.orders.cancel_unpaid(&timeout.order_id);
    let outcome = match retry(
        shared,
        stop,
        "cancelling",
        database_error_may_pass,
        true,
        cancel,
    )
    .await?
    {
        Ok(outcome) => outcome,
        Err(e) => {
            let reason = format!("the database refused the cancellation: {e}");
            return give_back(shared, origin, message.queue_offset, &reason, stop).await;
        }
    };
    let label = match &outcome {
        CancelOutcome::Cancelled { item, user } => {
            shared.count(|c| &c.cancelled, 1);
            release(shared, item, user, &timeout.order_id, "cancelled", stop).await?;
            "cancelled"
        }
        CancelOutcome::AlreadyCancelled => {
            // A redelivery — or a worker that died before the release.
            release(
                shared,
                &timeout.item,
                &timeout.user,
                &timeout.order_id,
                "cancelled",
                stop,
            )
            .await?;
            "already_cancelled"
        }
        CancelOutcome::Paid => "paid",
        CancelOutcome::NotFound => {
            tracing::warn!(order_id = %timeout.order_id, "a payment timeout for an order the database does not have");
            "not_found"
        }
    };
    metrics::counter!(TIMEOUTS, "outcome" => label).increment(1);
    Ok(())
}

/// Runs release.lua until the store answers (idempotent: it gives the unit
/// back only while the buyer record names this order).
async fn release(
    shared: &Shared,
    item: &str,
    user: &str,
    order_id: &str,
    reason: &'static str,
    stop: &CancellationToken,
) -> Step {
    let released = retry_until_done(shared, stop, "releasing stock", || {
        shared.stock.release(item, user, order_id)
    })
    .await?;
    if let Release::Released { .. } = released {
        metrics::counter!(RELEASES, "reason" => reason).increment(1);
    }
    Ok(())
}

/// Gives a message back to the broker: its group's retry topic, or the
/// dead-letter topic once its retries are spent. Retried until the broker
/// takes it — only then may the offset move past it.
async fn give_back(
    shared: &Shared,
    origin: &Origin<'_>,
    queue_offset: u64,
    reason: &str,
    stop: &CancellationToken,
) -> Step {
    tracing::warn!(
        topic = origin.topic,
        queue_id = origin.queue_id,
        queue_offset,
        reason,
        "giving a message back"
    );
    let outcome = retry_until_done(shared, stop, "giving a message back", || {
        origin.api.reconsume_later(
            &shared.settings.group,
            origin.topic,
            origin.queue_id,
            queue_offset,
            reason,
        )
    })
    .await?;
    match outcome {
        RetryOutcome::Retry { .. } => {
            shared.count(|c| &c.retried, 1);
            metrics::counter!(GIVEN_BACK, "outcome" => "retry").increment(1);
        }
        RetryOutcome::DeadLetter { .. } => {
            shared.count(|c| &c.dead_lettered, 1);
            metrics::counter!(GIVEN_BACK, "outcome" => "dead_letter").increment(1);
            tracing::error!(
                topic = origin.topic,
                queue_offset,
                reason,
                "a message went to the dead-letter topic"
            );
        }
    }
    Ok(())
}
