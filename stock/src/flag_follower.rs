//! Keeping this process's sold-out flags in step with the store's
//! publications: the embedded store's in-process channel, or Redis
//! pub/sub on the deployment's flag channel (`<prefix>sk:flags`).
//!
//! A publication can be missed — a lagging channel, a dropped Redis
//! connection, or a half-open one that never reports its death — and a
//! missed "open" would leave the item closed here for good, since a
//! flagged item runs no script that could correct it. So every
//! (re)subscription and every detected gap is followed by a resync of all
//! activities from the store, and [`follow_flags`] also resyncs on a
//! fixed period, which bounds how long any missed publication can last. Followers hold only a weak reference
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
use crate::sold_out_flags::SoldOutFlags;

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

fn apply<H: FlagHolder + ?Sized>(holder: &H, payload: &str) {
    if holder.flags().apply_message(payload) {
        metrics::counter!(FLAG_UPDATES).increment(1);
    }
}

/// Where flag publications come from.
#[derive(Debug, Clone, Copy)]
pub enum FlagFeed<'a> {
    /// Redis pub/sub at this URL.
    Redis(&'a str),
    /// The embedded store in this process.
    Embedded(&'a EmbeddedScripts),
    /// None: periodic resyncs only.
    None,
}

/// Keeps `holder`'s flags in step with the store: follows `feed` on
/// `channel` and resyncs every `resync_interval` whatever the feed says
/// (the bound on a missed publication). The tasks end with the holder.
pub fn follow_flags<H: FlagHolder>(
    holder: &Arc<H>,
    feed: FlagFeed<'_>,
    channel: &str,
    resync_interval: Duration,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    match feed {
        FlagFeed::Redis(url) => tasks.push(follow_redis_flags(holder, url, channel)),
        FlagFeed::Embedded(scripts) => tasks.push(follow_embedded_flags(holder, scripts, channel)),
        FlagFeed::None => {}
    }
    tasks.push(resync_every(holder, resync_interval));
    tasks
}

/// Resyncs `holder`'s flags from the store every `interval` (at least
/// 10 ms), until the holder goes.
pub fn resync_every<H: FlagHolder>(holder: &Arc<H>, interval: Duration) -> JoinHandle<()> {
    let weak: Weak<H> = Arc::downgrade(holder);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the holder resyncs once at start.
        loop {
            ticker.tick().await;
            let Some(holder) = weak.upgrade() else {
                return;
            };
            holder.resync().await;
        }
    })
}

/// Follows the flag messages an embedded store publishes, for `holder`.
pub fn follow_embedded_flags<H: FlagHolder>(
    holder: &Arc<H>,
    scripts: &EmbeddedScripts,
    channel: &str,
) -> JoinHandle<()> {
    let channel = channel.to_owned();
    let mut messages = scripts.subscribe();
    let weak: Weak<H> = Arc::downgrade(holder);
    tokio::spawn(async move {
        loop {
            let received = messages.recv().await;
            let Some(holder) = weak.upgrade() else {
                return;
            };
            match received {
                Ok((published_on, payload)) if published_on == channel => {
                    apply(holder.as_ref(), &payload)
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "flag messages were missed; resyncing from the store"
                    );
                    holder.resync().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Follows Redis pub/sub on `channel` at `url` for `holder`,
/// reconnecting with backoff and resyncing after every (re)subscription.
pub fn follow_redis_flags<H: FlagHolder>(
    holder: &Arc<H>,
    url: &str,
    channel: &str,
) -> JoinHandle<()> {
    let weak: Weak<H> = Arc::downgrade(holder);
    let url = url.to_owned();
    let channel = channel.to_owned();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let subscribed = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub)
            }
            .await;
            match subscribed {
                Ok(pubsub) => {
                    backoff = Duration::from_millis(100);
                    let Some(holder) = weak.upgrade() else {
                        return;
                    };
                    // Whatever changed while we were not listening.
                    holder.resync().await;
                    drop(holder);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(holder) = weak.upgrade() else {
                            return;
                        };
                        match message.get_payload::<String>() {
                            Ok(payload) => apply(holder.as_ref(), &payload),
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
