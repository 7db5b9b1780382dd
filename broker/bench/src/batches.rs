//! Rows for the broker's batch APIs: async appends handed over in batches
//! (`put_nowait` with [`APPEND_BATCH`] messages, as a bulk loader or a
//! gateway forwarding many orders would), and the batch transaction API
//! (`send_half_batch` of [`TRANSACTION_BATCH`] halves, then
//! `end_transactions` committing them all), each batch durable before the
//! next step. Throughput counts messages, latency is per call.

use std::path::Path;
use std::sync::Arc;

use broker::{FlushMode, Message, TransactionState};
use bytes::Bytes;

use crate::references::{Budget, Measurement, human_size, measurement};
use crate::{closed_loop, open_store};

/// Messages per `put_nowait` in the batched append row.
pub(crate) const APPEND_BATCH: usize = 128;
/// Halves per `send_half_batch` (and endings per `end_transactions`).
pub(crate) const TRANSACTION_BATCH: usize = 32;

pub(crate) fn batched_append_row_name(size: usize, producers: usize) -> String {
    format!(
        "broker append {}, async, batches of {APPEND_BATCH}, {producers} producers",
        human_size(size)
    )
}

pub(crate) fn transaction_batch_row_name(size: usize, producers: usize) -> String {
    format!(
        "broker transaction batches {} (x{TRANSACTION_BATCH} halves + end_transactions), sync, {producers} producers",
        human_size(size)
    )
}

/// Closed-loop producers each appending whole batches without waiting for
/// a flush (async mode's promise).
pub(crate) async fn batched_append(
    dir: &Path,
    size: usize,
    producers: usize,
    budget: &Budget,
) -> anyhow::Result<Measurement> {
    let (broker, _store) = open_store(dir, FlushMode::async_default()).await?;
    let body = Bytes::from(vec![b'x'; size]);
    let sender = broker.clone();
    let (latencies, elapsed) = closed_loop(producers, budget, move |queue| {
        let broker = sender.clone();
        let batch = (0..APPEND_BATCH)
            .map(|_| Message::new("bench", body.clone()))
            .collect();
        async move {
            broker.put_nowait(queue, batch)?;
            Ok(())
        }
    })
    .await?;
    broker.shutdown().await?;
    let count = latencies.len() * APPEND_BATCH as u64;
    Ok(measurement(
        batched_append_row_name(size, producers),
        count,
        count * size as u64,
        elapsed,
        Some(&latencies),
    ))
}

/// Closed-loop producers each sending a batch of halves and committing
/// every one of them with one `end_transactions`.
pub(crate) async fn transaction_batches(
    dir: &Path,
    size: usize,
    producers: usize,
    budget: &Budget,
) -> anyhow::Result<Measurement> {
    let (broker, _store) = open_store(dir, FlushMode::sync()).await?;
    let body = Bytes::from(vec![b'x'; size]);
    let sender = Arc::new(broker.clone());
    let (latencies, elapsed) = closed_loop(producers, budget, move |queue| {
        let broker = Arc::clone(&sender);
        let halves = (0..TRANSACTION_BATCH)
            .map(|_| (queue, Message::new("bench", body.clone())))
            .collect();
        async move {
            let halves = broker.send_half_batch("bench", halves).await?;
            let ends = halves
                .iter()
                .map(|h| (h.half_offset, TransactionState::Commit))
                .collect();
            for ended in broker.end_transactions(ends).await? {
                ended?;
            }
            Ok(())
        }
    })
    .await?;
    broker.shutdown().await?;
    let count = latencies.len() * TRANSACTION_BATCH as u64;
    Ok(measurement(
        transaction_batch_row_name(size, producers),
        count,
        count * size as u64,
        elapsed,
        Some(&latencies),
    ))
}
