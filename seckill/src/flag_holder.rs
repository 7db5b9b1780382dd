//! The seckill service as a holder of sold-out flags: how its flags are
//! reread from the store, and the followers (publications plus a periodic
//! resync, see `stock::follow_flags`) that keep them in step.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stock::{FlagFeed, FlagHolder, SoldOutFlags};
use tokio::task::JoinHandle;

use crate::purchase::Seckill;

/// How often a seckill instance rereads every flag from the store, whatever
/// the publications say: the longest a missed "open" (a half-open pub/sub
/// connection that never reports its death) can keep an item shut here.
pub const FLAG_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

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

impl Seckill {
    /// Follows `feed` on this store's flag channel and resyncs every
    /// `resync_interval` (see [`FLAG_RESYNC_INTERVAL`]); the tasks end with
    /// the service.
    pub fn follow_flags(
        self: &Arc<Self>,
        feed: FlagFeed<'_>,
        resync_interval: Duration,
    ) -> Vec<JoinHandle<()>> {
        let channel = self.store().flag_channel().to_owned();
        stock::follow_flags(self, feed, &channel, resync_interval)
    }
}
