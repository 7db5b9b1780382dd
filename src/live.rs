//! The live page: what a person watching a demo looks at — the spike
//! happening. Small charts of the last minute: answers per second by
//! outcome (queued, sold out, duplicate, limited, errors), orders written
//! per second, the backlog (orders in the broker not yet written) and the
//! stock left; each item's stock, sold units and sold-out flag beside
//! them.
//!
//! The server samples the stack every 250 ms into a rolling window of one
//! minute ([`series`]: bounded, whoever watches); the page polls it every
//! 250 ms for the points it has not drawn yet, and draws inline SVG with
//! its own inline script. Nothing is loaded from the network: the page's
//! Content-Security-Policy allows only its own nonce'd script and style
//! and requests to its own origin. The answer counts come from the
//! gateway's and seckill's metrics ([`answers`]).
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | `GET` | `/` | the page |
//! | `GET` | `/live/series[?since=MS]` | JSON `{interval_ms, window_ms, points: [{at_ms, answers_per_s: {queued, sold_out, duplicate, limited, error, other} \| null, orders_per_s, backlog, stock_left}], latest: {at_ms, backlog, orders_written, items, answers} \| null, sample_error, answers_missing}` — the points sampled after `since` (ms since the epoch), all without it |
//! | `GET` | `/live/state` | JSON `{at_ms, backlog, orders_written, items: [{item, stock, stock_left, sold, sold_out}]}`, read now |
//!
//! Anything else is a JSON error: 400 for a bad query, 404 for an unknown
//! path, 405 for a wrong method, 503 once the stack has stopped.

pub mod answers;
pub mod series;

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub use answers::{AnswerTotals, answer_totals, count_answers};
pub use series::Series;

use crate::stack::Stack;

/// The page; `__NONCE__` is replaced by each answer's nonce.
const PAGE: &str = include_str!("live/page.html");

/// One item on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemState {
    /// Item.
    pub item: String,
    /// Its stock.
    pub stock: u64,
    /// Units left in the store.
    pub stock_left: i64,
    /// Units held by buyers.
    pub sold: i64,
    /// Whether the store flags it sold out.
    pub sold_out: bool,
}

/// What the page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveState {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Orders waiting in the broker (and open transactions).
    pub backlog: u64,
    /// Orders the worker has written so far.
    pub orders_written: u64,
    /// Every item on sale.
    pub items: Vec<ItemState>,
}

/// Serves the live page of `stack` on `listen`, stopped with the stack,
/// and starts sampling it; returns its address. Answers are counted from
/// here on if [`count_answers`] was not called before the stack started
/// (then the gateway's sold-out answers are missed).
pub async fn serve(stack: &Arc<Stack>, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if let Err(why) = count_answers() {
        tracing::warn!(%why, "the live page will not chart answers");
    }
    let series = Arc::new(Mutex::new(Series::default()));
    // The page and its sampler hold the stack only weakly, so serving it
    // never keeps the stack alive past its stop.
    series::spawn_sampler(Arc::downgrade(stack), Arc::clone(&series));
    stack
        .serve_beside(listen, router(Arc::downgrade(stack), series))
        .await
}

/// What the page shows of `stack`, now.
pub async fn state_of(stack: &Stack) -> anyhow::Result<LiveState> {
    let mut items = Vec::new();
    for activity in stack.activities() {
        let status = stack.store().status(&activity.item).await?;
        items.push(ItemState {
            item: activity.item.clone(),
            stock: activity.stock,
            stock_left: status.stock,
            sold: status.buyers,
            sold_out: status.sold_out,
        });
    }
    Ok(LiveState {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        backlog: stack.backlog(),
        orders_written: stack.worker().stats().inserted,
        items,
    })
}

/// The routes' shared state.
#[derive(Debug, Clone)]
struct LiveRoutes {
    /// Held weakly: a page left open in a browser must not keep a stopped
    /// stack alive.
    stack: Weak<Stack>,
    series: Arc<Mutex<Series>>,
}

/// The page's routes over `stack`, answering from `series` (which
/// [`serve`] keeps sampling).
pub fn router(stack: Weak<Stack>, series: Arc<Mutex<Series>>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/live/series", get(series_since))
        .route("/live/state", get(state))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is served here",
            )
        })
        .with_state(LiveRoutes { stack, series })
}

/// A JSON error: `{"error": message, "code": code}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({"error": message, "code": code})),
    )
        .into_response()
}

/// The page, with a fresh nonce for its script and style: the policy
/// allows those two and requests to its own origin, nothing else.
async fn page() -> Response {
    let nonce = fresh_nonce();
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let mut response = Html(PAGE.replace("__NONCE__", &nonce)).into_response();
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// 128 unpredictable bits in hex: two hashes under the standard library's
/// randomly keyed SipHash (no random-number crate needed for a nonce).
fn fresh_nonce() -> String {
    let mut nonce = String::with_capacity(32);
    for part in 0..2u8 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(part);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        nonce.push_str(&format!("{:016x}", hasher.finish()));
    }
    nonce
}

/// `/live/series`'s query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    /// Only points sampled after this (ms since the epoch).
    since: Option<i64>,
}

async fn series_since(
    State(routes): State<LiveRoutes>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                &format!(
                    "{}; the only parameter is since=MS (ms since the epoch)",
                    rejection.body_text()
                ),
            );
        }
    };
    if routes.stack.strong_count() == 0 {
        return stopped();
    }
    let view = routes.series.lock().view(query.since);
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(view)).into_response()
}

fn stopped() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "stopped",
        "the stack has stopped",
    )
}

async fn state(State(routes): State<LiveRoutes>) -> Response {
    let Some(stack) = routes.stack.upgrade() else {
        return stopped();
    };
    match state_of(&stack).await {
        Ok(state) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(state)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}
