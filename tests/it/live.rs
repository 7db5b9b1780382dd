//! The live page in headless Chromium: it loads, runs its script against
//! the stack, and shows numbers that change while a spike is replayed (the
//! DOM read twice). Skipped, saying so, only where Chromium is absent —
//! unless `FLASHSALE_REQUIRE_SERVICES=1`.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flashsale::stack::{Stack, StackConfig};
use loadtest::generate::{Population, Shape, generate};
use loadtest::replay::{Quiet, ReplayConfig, replay};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_spike_being_absorbed() {
    let Some(browser) = test_support::chromium() else {
        test_support::service_missing("Chromium", "not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = StackConfig {
        worker_rate: 100,
        ..StackConfig::embedded(dir.path(), vec![("sku-1".into(), 200)])
    };
    let stack = Arc::new(Stack::start(config).await.unwrap());
    let live = flashsale::live::serve(&stack, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
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
    stack.drained(Duration::from_secs(60)).await.unwrap();
    stack.stop().await.unwrap();
}
