//! The steady rate: one token bucket per worker, shared by all of its
//! consumer tasks, that caps how many orders per second reach the
//! database — the "peak shaving" that turns a spike in the broker into a
//! flat line of writes.
//!
//! A task takes tokens *before* it pulls and pulls exactly that many
//! messages, so no message waits in memory for its slot: what is not yet
//! allowed stays in the broker. The bucket is governor's (GCRA). A grant
//! is at most 5 ms of orders ([`BURST_SECONDS`]), so writes arrive in many
//! small steps rather than a few large ones: at 2,000 orders/s a step is
//! 10 orders, twenty steps per 100 ms, and the line of writes stays flat
//! at that resolution (a 100 ms grant would write a tenth of a second's
//! orders at once, and a 100 ms window would see 0, 1 or 2 of them). The
//! bucket holds 20 ms ([`BUCKET_SECONDS`]), so a consumer that stalls for
//! a moment catches up instead of losing tokens. A
//! pull that finds fewer messages than it was granted gives
//! the rest back, into a small credit the next task takes first — tokens
//! are delayed, never lost, so a queue running dry does not slow the
//! others down. The credit is capped at one burst, like a full bucket.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// How much of a second of the rate one grant may be.
pub(crate) const BURST_SECONDS: f64 = 0.005;

/// How much of a second of the rate the bucket holds: four grants. A
/// consumer that stalls for a moment (a checkpoint, a descheduled thread)
/// catches up on the next grants instead of losing the tokens the bucket
/// could not hold, so the written rate does not sag below the cap, while
/// no 100 ms ever sees more than the cap plus these 20 ms.
pub(crate) const BUCKET_SECONDS: f64 = 0.02;

/// The shared bucket; `rate == 0` means unlimited.
#[derive(Debug)]
pub struct RateGate {
    rate: u32,
    limiter: Option<DefaultDirectRateLimiter>,
    burst: u32,
    credit: Mutex<u32>,
}

impl RateGate {
    /// A gate letting `per_second` orders through per second (0 = no cap).
    pub fn new(per_second: u32) -> Self {
        let burst = ((f64::from(per_second) * BURST_SECONDS) as u32).max(1);
        let bucket = ((f64::from(per_second) * BUCKET_SECONDS) as u32).max(burst);
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let bucket = NonZeroU32::new(bucket).expect("the bucket holds at least 1");
            RateLimiter::direct(Quota::per_second(rate).allow_burst(bucket))
        });
        RateGate {
            rate: per_second,
            limiter,
            burst,
            credit: Mutex::new(0),
        }
    }

    /// The configured rate (orders per second; 0 = unlimited).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Waits until up to `want` orders may go through and returns how
    /// many (at least 1, at most one burst; `want` itself when unlimited).
    pub async fn acquire(&self, want: u32) -> u32 {
        let want = want.max(1);
        let Some(limiter) = &self.limiter else {
            return want;
        };
        let want = want.min(self.burst);
        {
            let mut credit = self.credit.lock();
            if *credit > 0 {
                let granted = want.min(*credit);
                *credit -= granted;
                return granted;
            }
        }
        let n = NonZeroU32::new(want).expect("want is at least 1");
        limiter
            .until_n_ready(n)
            .await
            .expect("a request of at most one burst always fits");
        want
    }

    /// Returns tokens a pull did not use.
    pub fn give_back(&self, unused: u32) {
        if self.limiter.is_none() || unused == 0 {
            return;
        }
        let mut credit = self.credit.lock();
        *credit = (*credit + unused).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unlimited_grants_what_is_asked() {
        let gate = RateGate::new(0);
        assert_eq!(gate.acquire(500).await, 500);
        assert_eq!(gate.acquire(0).await, 1);
    }

    #[tokio::test]
    async fn grants_are_capped_at_one_burst_and_unused_tokens_come_back_once() {
        let gate = RateGate::new(20_000); // burst 100 (5 ms)
        assert_eq!(gate.acquire(500).await, 100);
        gate.give_back(60);
        assert_eq!(gate.acquire(500).await, 60); // the credit first
        gate.give_back(1_000);
        assert_eq!(gate.acquire(30).await, 30);
        assert_eq!(gate.acquire(500).await, 70); // capped at one burst
        assert_eq!(RateGate::new(100).acquire(50).await, 1); // at least one
    }
}
