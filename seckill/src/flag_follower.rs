//! Keeping this process's sold-out flags in step with the store's
//! publications: the embedded store's in-process channel, or Redis
//! pub/sub on `sk:flags`.
//!
//! A publication can be missed — a lagging channel, a dropped Redis
//! connection — and a missed "open" would leave the item closed here for
//! good, since a flagged item runs no script that could correct it. So
//! every (re)subscription, and every detected gap, is followed by a resync
//! of all activities from the store. Followers hold only a weak reference
//! to the flags' holder (the seckill service, or the gateway's edge) and
//! end when it goes.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::embedded_store::EmbeddedScripts;
use crate::metrics::FLAG_UPDATES;
use crate::purchase::Seckill;
use crate::sold_out_flags::SoldOutFlags;
use crate::store_keys::FLAG_CHANNEL;

/// Longest pause between Redis reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whoever keeps a set of sold-out flags and can reread them all from the
/// store.
#[async_trait]
pub trait FlagHolder: Send + Sync + 'static {
    /// The flags publications are applied to.
    fn flags(&self) -> &SoldOutFlags;
    /// Rereads every flag from the store (errors are the holder's to log).
    async fn resync(&self);
}

#[async_trait]
impl FlagHolder for Seckill {
    fn flags(&self) -> &SoldOutFlags {
        Seckill::flags(self)
    }

    async fn resync(&self) {
        if let Err(e) = self.resync_flags().await {
            tracing::warn!(error = %e, "flag resync failed");
        }
    }
}

fn apply<H: FlagHolder + ?Sized>(holder: &H, payload: &str) {
    if holder.flags().apply_message(payload) {
        metrics::counter!(FLAG_UPDATES).increment(1);
    }
}

impl Seckill {
    /// Follows the flag messages an embedded store publishes.
    pub fn follow_embedded_flags(self: &Arc<Self>, scripts: &EmbeddedScripts) -> JoinHandle<()> {
        follow_embedded_flags(self, scripts)
    }

    /// Follows Redis pub/sub on the flag channel at `url` (see
    /// [`follow_redis_flags`]).
    pub fn follow_redis_flags(self: &Arc<Self>, url: &str) -> JoinHandle<()> {
        follow_redis_flags(self, url)
    }
}

/// Follows the flag messages an embedded store publishes, for `holder`.
pub fn follow_embedded_flags<H: FlagHolder>(
    holder: &Arc<H>,
    scripts: &EmbeddedScripts,
) -> JoinHandle<()> {
    let mut messages = scripts.subscribe();
    let weak: Weak<H> = Arc::downgrade(holder);
    tokio::spawn(async move {
        loop {
            let received = messages.recv().await;
            let Some(seckill) = weak.upgrade() else {
                return;
            };
            match received {
                Ok((channel, payload)) if channel == FLAG_CHANNEL => {
                    apply(seckill.as_ref(), &payload)
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "flag messages were missed; resyncing from the store"
                    );
                    seckill.resync().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Follows Redis pub/sub on the flag channel at `url` for `holder`,
/// reconnecting with backoff and resyncing after every (re)subscription.
pub fn follow_redis_flags<H: FlagHolder>(holder: &Arc<H>, url: &str) -> JoinHandle<()> {
    let weak: Weak<H> = Arc::downgrade(holder);
    let url = url.to_owned();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(FLAG_CHANNEL).await?;
                redis::RedisResult::Ok(pubsub)
            }
            .await;
            match subscribed {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    let Some(seckill) = weak.upgrade() else {
                        return;
                    };
                    // Whatever changed while we were not listening.
                    seckill.resync().await;
                    drop(seckill);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(seckill) = weak.upgrade() else {
                            return;
                        };
                        match message.get_payload::<String>() {
                            Ok(payload) => apply(seckill.as_ref(), &payload),
                            Err(e) => tracing::warn!(error = %e, "unreadable flag message"),
                        }
                    }
                    tracing::warn!("the flag subscription ended; reconnecting");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to flag messages; retrying")
                }
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}
