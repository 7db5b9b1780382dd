//! The live page: what a person watching a demo looks at — each item's
//! stock, sold units and sold-out flag, the broker backlog and the orders
//! written per second, refreshed twice a second, so the spike can be seen
//! being absorbed. One HTML page with a few lines of inline script (no
//! build step, nothing from the network) over a JSON endpoint.
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | `GET` | `/` | the page |
//! | `GET` | `/live/state` | JSON `{at_ms, backlog, orders_written, items: [{item, stock, stock_left, sold, sold_out}]}` |

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::stack::Stack;

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

/// Serves the live page of `stack` on `listen`, stopped with the stack;
/// returns its address.
pub async fn serve(stack: &Arc<Stack>, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    // The page holds the stack only weakly, so serving it never keeps the
    // stack alive past its stop.
    stack
        .serve_beside(listen, router(Arc::downgrade(stack)))
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

/// The page's routes over `stack` (held weakly: a page left open in a
/// browser must not keep a stopped stack alive).
pub fn router(stack: Weak<Stack>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/live/state", get(state))
        .with_state(stack)
}

async fn state(State(stack): State<Weak<Stack>>) -> Response {
    let Some(stack) = stack.upgrade() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "the stack has stopped", "code": "stopped"})),
        )
            .into_response();
    };
    match state_of(&stack).await {
        Ok(state) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(state)).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": e.to_string(), "code": "unavailable"})),
        )
            .into_response(),
    }
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>flashsale — live</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:900px}
.big{display:flex;gap:2em;margin:1em 0}
.big div{border:1px solid #ccc;border-radius:6px;padding:.8em 1.2em;min-width:9em}
.big b{display:block;font-size:2em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
.out{color:#cf222e;font-weight:bold}.open{color:#1a7f37}
</style></head><body>
<h1>flashsale — live</h1>
<div class="big">
<div>broker backlog<b id="backlog">–</b></div>
<div>orders written<b id="written">–</b></div>
<div>orders/s<b id="rate">–</b></div>
</div>
<table><thead><tr><th>item</th><th>stock</th><th>left</th><th>sold</th><th>flag</th></tr></thead>
<tbody id="items"></tbody></table>
<p id="status">connecting…</p>
<script>
let last = null;
async function refresh() {
  try {
    const state = await (await fetch('/live/state', {cache: 'no-store'})).json();
    document.getElementById('backlog').textContent = state.backlog;
    document.getElementById('written').textContent = state.orders_written;
    if (last && state.at_ms > last.at_ms) {
      const rate = (state.orders_written - last.orders_written) * 1000 / (state.at_ms - last.at_ms);
      document.getElementById('rate').textContent = Math.round(rate);
    }
    last = state;
    const rows = state.items.map(i =>
      `<tr id="item-${i.item}"><td>${i.item}</td><td>${i.stock}</td><td class="left">${i.stock_left}</td>` +
      `<td class="sold">${i.sold}</td><td class="${i.sold_out ? 'out' : 'open'}">${i.sold_out ? 'SOLD OUT' : 'open'}</td></tr>`);
    document.getElementById('items').innerHTML = rows.join('');
    document.getElementById('status').textContent = 'updated ' + new Date(state.at_ms).toLocaleTimeString();
  } catch (e) {
    document.getElementById('status').textContent = 'cannot reach the stack: ' + e;
  }
}
refresh();
setInterval(refresh, 500);
</script>
</body></html>
"#;
