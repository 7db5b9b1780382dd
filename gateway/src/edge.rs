//! The gateway's state: sold-out flags, the activities (for the sale
//! window), the limits, the upstreams and the optional Lua hook — and the
//! background work that keeps flags and activities fresh.
//!
//! Flags follow the store's publications (Redis pub/sub, or the embedded
//! store's channel) through seckill's followers, which resync after every
//! (re)subscription; on top of that a full resync runs every
//! `resync_interval` (default 1 s), so a message missed without the
//! subscription noticing heals within a second. A flag carries a version
//! and the newer one wins, so a late "sold out" cannot close an item that
//! has since reopened.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;
use service_kit::access::{AccessKey, BuyerTokens, Keys, PurchaseTokens};
use stock::{Activities, Activity, FlagFeed, FlagHolder, SoldOutFlags, StockStore, Window};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::lua_hook::LuaHook;
use crate::metrics::{FLAGGED_ITEMS, REQUESTS};
use crate::upstream::Upstreams;

/// How the gateway protects what is behind it.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Verifies buyer tokens: the buyer of a purchase or an order call.
    pub buyers: BuyerTokens,
    /// Verifies purchase tokens (seckill issues and spends them).
    pub purchases: PurchaseTokens,
    /// Opens `/metrics`.
    pub admin: AccessKey,
    /// Requests per second for the whole gateway (0 = no limit).
    pub global_rps: u32,
    /// Requests per second per verified user (0 = no limit); bursts up to
    /// the same.
    pub user_rps: u32,
    /// Requests per second per client address (0 = no limit).
    pub address_rps: u32,
    /// Requests per second per connection (0 = no limit).
    pub connection_rps: u32,
    /// Proxies whose `X-Forwarded-For` names the client address; from
    /// anyone else the header is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Open connections at most; past it, 503 and close.
    pub max_connections: usize,
    /// Requests handled at once; past it, 503 at once (load shedding).
    pub max_in_flight: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a request may take at the gateway, upstream included.
    pub request_timeout: Duration,
    /// Longest a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How often every flag is reread from the store.
    pub resync_interval: Duration,
    /// How often activities are reloaded from the upstreams.
    pub activity_refresh: Duration,
}

impl Default for EdgeSettings {
    /// Settings for a process that holds its own random keys (tests, the
    /// all-in-one): read them back from `buyers` and `admin`.
    fn default() -> Self {
        let keys = Keys::random();
        EdgeSettings {
            buyers: keys.buyer_tokens().expect("random keys are long enough"),
            purchases: keys.purchase_tokens().expect("random keys are long enough"),
            admin: keys.admin_key().expect("random keys are long enough"),
            global_rps: 0,
            user_rps: 5,
            address_rps: 0,
            connection_rps: 0,
            trusted_proxies: Vec::new(),
            max_connections: 16_384,
            max_in_flight: 4_096,
            max_body_bytes: 1_024,
            request_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            resync_interval: Duration::from_secs(1),
            activity_refresh: Duration::from_secs(1),
        }
    }
}

/// Where the gateway's activities come from.
#[derive(Debug)]
pub enum ActivitySource {
    /// The seckill service's own list, in this process.
    Shared(Arc<Activities>),
    /// Loaded from the seckill upstreams' public `/api/activities`, refreshed
    /// periodically (the union of all instances' lists).
    Upstreams(RwLock<HashMap<String, Activity>>),
}

impl ActivitySource {
    /// An empty list to be loaded from the upstreams.
    pub fn from_upstreams() -> Self {
        ActivitySource::Upstreams(RwLock::new(HashMap::new()))
    }

    /// The activity of `item`.
    pub fn get(&self, item: &str) -> Option<Activity> {
        match self {
            ActivitySource::Shared(all) => all.get(item),
            ActivitySource::Upstreams(loaded) => loaded.read().get(item).cloned(),
        }
    }

    /// Where `now_ms` falls in `item`'s window (`None`: unknown item),
    /// without copying the activity.
    pub fn window(&self, item: &str, now_ms: i64) -> Option<Window> {
        match self {
            ActivitySource::Shared(all) => all.window_of(item, now_ms),
            ActivitySource::Upstreams(loaded) => loaded.read().get(item).map(|a| a.window(now_ms)),
        }
    }

    /// Every item on sale.
    pub fn items(&self) -> Vec<String> {
        match self {
            ActivitySource::Shared(all) => all.list().into_iter().map(|a| a.item).collect(),
            ActivitySource::Upstreams(loaded) => loaded.read().keys().cloned().collect(),
        }
    }
}

/// The gateway's shared state.
#[derive(Debug)]
pub struct Edge {
    pub(crate) settings: EdgeSettings,
    pub(crate) flags: SoldOutFlags,
    pub(crate) activities: ActivitySource,
    pub(crate) store: Option<StockStore>,
    pub(crate) global: Option<DefaultDirectRateLimiter>,
    pub(crate) per_user: Option<DefaultKeyedRateLimiter<String>>,
    pub(crate) per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    pub(crate) shedder: Semaphore,
    pub(crate) seckill: Upstreams,
    pub(crate) orders: Upstreams,
    pub(crate) hook: Option<LuaHook>,
    /// `gateway_requests_total{outcome="sold_out_local"}`, resolved once:
    /// the hot path only increments it.
    pub(crate) sold_out_answers: metrics::Counter,
}

impl Edge {
    /// The edge in front of `seckill` (purchases) and `orders` (the order
    /// API), reading flags from `store` (for resyncs).
    pub fn new(
        settings: EdgeSettings,
        activities: ActivitySource,
        store: Option<StockStore>,
        seckill: Upstreams,
        orders: Upstreams,
        hook: Option<LuaHook>,
    ) -> Arc<Self> {
        let global = NonZeroU32::new(settings.global_rps)
            .map(|rps| RateLimiter::direct(Quota::per_second(rps)));
        let per_user = NonZeroU32::new(settings.user_rps)
            .map(|rps| RateLimiter::keyed(Quota::per_second(rps)));
        let per_address = NonZeroU32::new(settings.address_rps)
            .map(|rps| RateLimiter::keyed(Quota::per_second(rps)));
        let shedder = Semaphore::new(settings.max_in_flight.max(1));
        Arc::new(Edge {
            per_address,
            settings,
            flags: SoldOutFlags::default(),
            activities,
            store,
            global,
            per_user,
            shedder,
            seckill,
            orders,
            hook,
            sold_out_answers: metrics::counter!(REQUESTS, "outcome" => "sold_out_local"),
        })
    }

    /// The address a request comes from: its socket's peer, or — only
    /// when that peer is a trusted proxy — the last address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_address(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let trusted = &self.settings.trusted_proxies;
        if !trusted.contains(&peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted.contains(&ip) => continue,
                Ok(ip) => return ip,
                // Garbage past our own proxies: the proxy's own address
                // is all that can be known.
                Err(_) => return peer,
            }
        }
        peer
    }

    /// The settings.
    pub fn settings(&self) -> &EdgeSettings {
        &self.settings
    }

    /// The flags.
    pub fn flags(&self) -> &SoldOutFlags {
        &self.flags
    }

    /// The Lua hook, when one is loaded.
    pub fn hook(&self) -> Option<&LuaHook> {
        self.hook.as_ref()
    }

    /// The purchase upstreams.
    pub fn seckill_upstreams(&self) -> &Upstreams {
        &self.seckill
    }

    /// Starts the background work: following flag publications, the
    /// periodic resync, activity reloads, and trimming the per-user
    /// limiter's memory. The tasks hold weak references and end with the
    /// edge.
    pub fn start(self: &Arc<Self>, feed: FlagFeed<'_>) -> Vec<JoinHandle<()>> {
        // With no store there is nothing to resync from, and no feed.
        let channel = self
            .store
            .as_ref()
            .map_or_else(|| stock::flag_channel(""), |s| s.flag_channel().to_owned());
        let mut tasks = stock::follow_flags(self, feed, &channel, self.settings.resync_interval);
        if matches!(self.activities, ActivitySource::Upstreams(_)) {
            let interval = self.settings.activity_refresh;
            tasks.push(every(self, interval, |edge| async move {
                edge.reload_activities().await;
            }));
        }
        if self.per_user.is_some() || self.per_address.is_some() {
            tasks.push(every(self, Duration::from_secs(10), |edge| async move {
                // Users and addresses idle long enough to be back at a full
                // bucket are forgotten: memory follows active ones only.
                if let Some(limiter) = &edge.per_user {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
                if let Some(limiter) = &edge.per_address {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }));
        }
        tasks
    }

    /// Reloads activities from every seckill upstream (their union); an
    /// upstream that fails keeps its items from the last load.
    pub async fn reload_activities(&self) {
        let ActivitySource::Upstreams(loaded) = &self.activities else {
            return;
        };
        let mut fresh: HashMap<String, Activity> = HashMap::new();
        let mut failed = false;
        for upstream in self.seckill.all() {
            match upstream.get_json::<Vec<Activity>>("/api/activities").await {
                Ok(list) => fresh.extend(list.into_iter().map(|a| (a.item.clone(), a))),
                Err(e) => {
                    failed = true;
                    tracing::warn!(upstream = upstream.name(), error = %e, "cannot load activities");
                }
            }
        }
        let mut current = loaded.write();
        if failed {
            // Keep what is known; add what is new.
            current.extend(fresh);
        } else {
            *current = fresh;
        }
    }
}

/// Runs `work` every `interval` while the edge lives.
fn every<F, Fut>(edge: &Arc<Edge>, interval: Duration, work: F) -> JoinHandle<()>
where
    F: Fn(Arc<Edge>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(edge);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(edge) = weak.upgrade() else {
                return;
            };
            work(edge).await;
        }
    })
}

#[async_trait]
impl FlagHolder for Edge {
    fn flags(&self) -> &SoldOutFlags {
        &self.flags
    }

    async fn resync(&self) {
        let Some(store) = &self.store else {
            return;
        };
        for item in self.activities.items() {
            match store.status(&item).await {
                Ok(status) if status.warmed => {
                    self.flags
                        .apply(&item, status.sold_out, status.flag_version);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "flag resync failed");
                    return;
                }
            }
        }
        metrics::gauge!(FLAGGED_ITEMS).set(self.flags.flagged_count() as f64);
    }
}
