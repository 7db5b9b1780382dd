//! The live page: what it serves (one page that loads nothing from the
//! network, under a policy that forbids it; a JSON window of the charts'
//! points that moves with purchases; JSON errors for bad requests), and
//! in headless Chromium that its script draws the charts and shows
//! numbers that change while a spike is replayed (the DOM read twice).
//! The browser test is skipped, saying so, only where Chromium is absent
//! — unless `FLASHSALE_REQUIRE_SERVICES=1`.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flashsale::stack::{Stack, StackConfig};
use loadtest::generate::{Population, Shape, generate};
use loadtest::replay::{Quiet, ReplayConfig, replay};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stack selling `stock` units of `sku-1`, its answers counted, with
/// its live page; the temporary directory lives as long as the test.
async fn stack_with_page(
    stock: u64,
    worker_rate: u32,
) -> (tempfile::TempDir, Arc<Stack>, SocketAddr) {
    flashsale::live::count_answers().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = StackConfig {
        worker_rate,
        ..StackConfig::embedded(dir.path(), vec![("sku-1".into(), stock)])
    };
    let stack = Arc::new(Stack::start(config).await.unwrap());
    let live = flashsale::live::serve(&stack, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (dir, stack, live)
}

/// One HTTP/1.1 exchange on a fresh connection: status, head, body.
async fn exchange(addr: SocketAddr, request_line: &str, headers: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{request_line} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: 0\r\n{headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// `GET path` on the live page, as JSON.
async fn get_json(live: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = exchange(live, &format!("GET {path}"), "").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// The answers counted so far (the process's), by outcome.
fn totals(series: &Value) -> Value {
    series["latest"]["answers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_nothing_from_the_network() {
    let (_dir, stack, live) = stack_with_page(10, 100).await;
    let (status, head, page) = exchange(live, "GET /", "").await;
    assert_eq!(status, 200);
    for remote in [
        "http://",
        "https://",
        "src=\"//",
        "href=\"//",
        "url(",
        "@import",
    ] {
        assert!(!page.contains(remote), "the page holds {remote:?}");
    }
    // Its policy forbids remote loads, and its script and style carry the
    // nonce it allows.
    let policy = head
        .lines()
        .find_map(|line| line.strip_prefix("content-security-policy: "))
        .expect("a content-security-policy header");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(nonce.len() >= 32, "{policy}");
    assert!(page.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(page.contains(&format!("<style nonce=\"{nonce}\">")));
    assert_eq!(page.matches("<script").count(), 1, "one inline script");
    let (_, second, _) = exchange(live, "GET /", "").await;
    assert!(!second.contains(nonce), "a fresh nonce per answer");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_carries_the_charts_points_and_moves_with_purchases() {
    let (_dir, stack, live) = stack_with_page(10, 100).await;
    // The first sample is taken as the page starts, the first point (a
    // rate needs two samples) one interval later; wait for it.
    let before = loop {
        let (status, series) = get_json(live, "/live/series").await;
        assert_eq!(status, 200, "{series}");
        if !series["points"].as_array().unwrap().is_empty() {
            break series;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(before["interval_ms"], 250);
    assert_eq!(before["window_ms"], 60_000);
    assert!(before["answers_missing"].is_null(), "{before}");
    assert_eq!(before["latest"]["orders_written"], 0);
    let before_totals = totals(&before);

    // A clicker who buys a unit and clicks on (duplicates, then the
    // per-user limit), then 30 buyers for the 9 units left.
    let gateway: SocketAddr = stack.url().trim_start_matches("http://").parse().unwrap();
    let tokens = stack.buyer_tokens().clone();
    let passes = stack.keys().purchase_tokens().unwrap();
    let buy = |user: String| {
        let token = tokens.mint(&user, Duration::from_secs(600));
        let pass = passes.mint(&user, "sku-1", Duration::from_secs(600));
        async move {
            exchange(
                gateway,
                "POST /api/seckill/sku-1",
                &format!("authorization: Bearer {token}\r\nx-purchase-token: {pass}\r\n"),
            )
            .await
            .0
        }
    };
    for _ in 0..30 {
        buy("clicker".into()).await;
    }
    for user in 0..30 {
        assert_eq!(buy(format!("buyer-{user}")).await, 200);
    }

    // The window catches up: a sample taken after the last answer, with
    // every order written, the stock gone, and each outcome counted.
    let answered_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let after = loop {
        let (_, series) = get_json(live, "/live/series").await;
        let latest = &series["latest"];
        if latest["at_ms"].as_i64().unwrap() > answered_ms
            && latest["orders_written"] == 10
            && latest["backlog"] == 0
        {
            break series;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after_totals = totals(&after);
    let grew = |outcome: &str| {
        after_totals[outcome].as_u64().unwrap() - before_totals[outcome].as_u64().unwrap()
    };
    assert!(grew("queued") >= 10, "{before_totals} → {after_totals}");
    assert!(grew("sold_out") >= 21, "{before_totals} → {after_totals}");
    assert!(grew("duplicate") >= 1, "{before_totals} → {after_totals}");
    assert!(grew("limited") >= 1, "{before_totals} → {after_totals}");

    let points = after["points"].as_array().unwrap();
    assert!(points.len() >= 2, "{after}");
    for field in ["at_ms", "orders_per_s", "backlog", "stock_left"] {
        assert!(
            points.iter().all(|p| p[field].is_number()),
            "{field}: {after}"
        );
    }
    for outcome in [
        "queued",
        "sold_out",
        "duplicate",
        "limited",
        "error",
        "other",
    ] {
        assert!(
            points
                .iter()
                .all(|p| p["answers_per_s"][outcome].is_number()),
            "{outcome}: {after}"
        );
    }
    let rate_seen = |rate: &dyn Fn(&Value) -> f64| points.iter().any(|p| rate(p) > 0.0);
    assert!(rate_seen(&|p| p["answers_per_s"]["queued"]
        .as_f64()
        .unwrap()));
    assert!(rate_seen(&|p| p["answers_per_s"]["sold_out"]
        .as_f64()
        .unwrap()));
    assert!(rate_seen(&|p| p["orders_per_s"].as_f64().unwrap()));
    assert_eq!(points.first().unwrap()["stock_left"], 10, "{after}");
    assert_eq!(points.last().unwrap()["stock_left"], 0, "{after}");

    // `since` answers only what came after it.
    let last_at = points.last().unwrap()["at_ms"].as_i64().unwrap();
    let (status, newer) = get_json(live, &format!("/live/series?since={last_at}")).await;
    assert_eq!(status, 200);
    let newer = newer["points"].as_array().unwrap();
    assert!(newer.iter().all(|p| p["at_ms"].as_i64().unwrap() > last_at));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_to_the_live_routes_get_json_errors() {
    let (_dir, stack, live) = stack_with_page(10, 100).await;
    for (request, status, code) in [
        ("GET /live/series?since=yesterday", 400, "bad_query"),
        ("GET /live/series?since=1&until=2", 400, "bad_query"),
        ("GET /live/nothing", 404, "not_found"),
        ("POST /live/series", 405, "method_not_allowed"),
        ("DELETE /", 405, "method_not_allowed"),
    ] {
        let (got, head, body) = exchange(live, request, "").await;
        assert_eq!(got, status, "{request}: {body}");
        assert!(head.contains("content-type: application/json"), "{request}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], code, "{request}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty(), "{request}");
    }
    stack.stop().await.unwrap();
}

/// The page's DOM after its script has run for a while.
fn rendered_dom(browser: &str, url: &str) -> String {
    let output = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the element with `id`.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let open = dom[start..].find('>').unwrap() + start + 1;
    let close = dom[open..].find('<').unwrap() + open;
    dom[open..close].trim().to_owned()
}

/// The `(x, y)` points of the polyline in the chart `chart-{id}`.
fn chart_points(dom: &str, id: &str) -> Vec<(f64, f64)> {
    let start = dom
        .find(&format!("id=\"chart-{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in {dom}"));
    let polyline = dom[start..].find("<polyline").unwrap() + start;
    let attribute = dom[polyline..].find("points=\"").unwrap() + polyline + "points=\"".len();
    let end = dom[attribute..].find('"').unwrap() + attribute;
    dom[attribute..end]
        .split_whitespace()
        .map(|pair| {
            let (x, y) = pair.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_spike_being_absorbed() {
    let Some(browser) = test_support::chromium() else {
        test_support::service_missing("Chromium", "not installed");
        return;
    };
    let (_dir, stack, live) = stack_with_page(200, 100).await;
    let url = format!("http://{live}/");

    let before = tokio::task::spawn_blocking({
        let url = url.clone();
        move || rendered_dom(browser, &url)
    })
    .await
    .unwrap();
    assert_eq!(text_of(&before, "written"), "0");
    assert!(before.contains("id=\"item-sku-1\""), "{before}");
    assert!(before.contains(">open<"), "{before}");
    // The script ran under the page's policy: the charts are drawn.
    assert!(!chart_points(&before, "stock").is_empty(), "{before}");

    // A spike sells everything; the worker writes at 100/s, so the page
    // is read again while the backlog drains.
    let shape = Shape::Poisson {
        rps: 1_000.0,
        duration: Duration::from_millis(800),
    };
    let population = Population {
        users: 5_000,
        ..Population::default()
    };
    let records = generate(&shape, &population, 9).unwrap();
    let config = ReplayConfig {
        target: stack.url(),
        token_key: Some(stack.keys().token.clone()),
        ..ReplayConfig::default()
    };
    replay(&records, &config, Arc::new(Quiet)).await.unwrap();
    let during = tokio::task::spawn_blocking(move || rendered_dom(browser, &url))
        .await
        .unwrap();
    let written: u64 = text_of(&during, "written").parse().unwrap();
    assert!(written > 0, "{during}");
    assert!(during.contains("SOLD OUT"), "{during}");
    assert_ne!(text_of(&before, "written"), text_of(&during, "written"));

    // The spike is in the charts: a line above the floor (the chart's
    // bottom is y = 58) for queued and sold-out answers and for the
    // orders written, and the stock line coming down.
    for chart in ["queued", "sold_out", "orders", "backlog"] {
        let points = chart_points(&during, chart);
        assert!(points.len() >= 2, "{chart}: {points:?}");
        assert!(points.iter().any(|&(_, y)| y < 58.0), "{chart}: {points:?}");
    }
    let stock = chart_points(&during, "stock");
    assert!(
        stock.first().unwrap().1 < stock.last().unwrap().1,
        "{stock:?}"
    );
    stack.drained(Duration::from_secs(60)).await.unwrap();
    stack.stop().await.unwrap();
}
