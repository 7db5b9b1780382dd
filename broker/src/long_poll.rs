//! Long polling: a pull that finds nothing waits, up to its hold time, for
//! the queue to grow, instead of the consumer asking again and again.
//!
//! Each queue publishes its *visible* length on a `tokio::sync::watch`
//! channel (RocketMQ's `notifyMessageArriving`). A held pull subscribes,
//! re-checks, and sleeps until the value changes or the hold expires —
//! no polling loop, no timer per message, and a wake-up goes only to pulls
//! on the queue that grew.

use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::HELD_LONG_POLLS;

/// Waits until the visible length of a queue exceeds `offset` or `hold`
/// passes; returns the visible length at that point.
pub(crate) async fn wait_for_arrival(
    visible: &watch::Sender<u64>,
    offset: u64,
    hold: Duration,
) -> u64 {
    let mut rx = visible.subscribe();
    let current = *rx.borrow_and_update();
    if current > offset || hold.is_zero() {
        return current;
    }
    let held = HeldGauge::new();
    let waited = tokio::time::timeout(hold, rx.wait_for(|&len| len > offset)).await;
    drop(held);
    match waited {
        Ok(Ok(len)) => *len,
        // Timed out, or the queue went away: report what is visible now.
        Ok(Err(_)) | Err(_) => *visible.borrow(),
    }
}

/// Counts a held pull in the gauge for as long as it lives, so a pull
/// cancelled mid-wait (client gone) is still subtracted.
struct HeldGauge;

impl HeldGauge {
    fn new() -> Self {
        metrics::gauge!(HELD_LONG_POLLS).increment(1.0);
        HeldGauge
    }
}

impl Drop for HeldGauge {
    fn drop(&mut self) {
        metrics::gauge!(HELD_LONG_POLLS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_at_once_when_data_is_there_and_on_arrival_or_timeout_otherwise() {
        let (tx, _) = watch::channel(5u64);
        assert_eq!(wait_for_arrival(&tx, 3, Duration::from_secs(15)).await, 5);

        let start = tokio::time::Instant::now();
        assert_eq!(wait_for_arrival(&tx, 5, Duration::from_secs(15)).await, 5);
        assert_eq!(start.elapsed(), Duration::from_secs(15));

        let start = tokio::time::Instant::now();
        let waiter = {
            let tx = tx.clone();
            tokio::spawn(async move { wait_for_arrival(&tx, 5, Duration::from_secs(15)).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send_replace(6);
        assert_eq!(waiter.await.unwrap(), 6);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
