//! The replayer against fake servers on loopback: sends never leave
//! before their plan, and when the tool itself cannot keep up, the
//! corrected latency says so while the uncorrected one hides it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use loadtest::replay::{Outcome, Quiet, ReplayConfig, replay};
use loadtest::trace::{ClientKind, TraceRecord};
use serde_json::json;
use tokio::net::TcpListener;

/// A server answering `queued` after `service` per request, one request
/// at a time (a lock held while it "works").
async fn slow_server(service: Duration) -> String {
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let router = Router::new().route(
        "/api/seckill/{item}",
        post(move || {
            let lock = Arc::clone(&lock);
            async move {
                let _one_at_a_time = lock.lock().await;
                tokio::time::sleep(service).await;
                axum::Json(json!({"status": "queued", "order_id": "o"}))
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// `count` purchases by new users, `gap_us` apart.
pub(crate) fn trace(count: u64, gap_us: u64) -> Vec<TraceRecord> {
    (0..count)
        .map(|n| TraceRecord {
            at_us: n * gap_us,
            user: format!("u{n}"),
            item: "sku".into(),
            kind: ClientKind::Buyer,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_follow_the_plan_and_latency_counts_from_it() {
    let target = slow_server(Duration::from_millis(1)).await;
    let config = ReplayConfig {
        target,
        speed: 2.0,
        ..ReplayConfig::default()
    };
    let records = trace(40, 10_000); // every 10 ms, played at 2x: every 5 ms
    let result = replay(&records, &config, Arc::new(Quiet)).await.unwrap();
    assert_eq!(result.samples.len(), 40);
    for (n, sample) in result.samples.iter().enumerate() {
        assert_eq!(
            sample.planned_us,
            n as u64 * 5_000,
            "the speed scales the plan"
        );
        assert!(sample.sent_us >= sample.planned_us, "sent before its time");
        assert!(sample.corrected_us() >= sample.uncorrected_us());
        assert!(
            sample.uncorrected_us() >= 1_000,
            "faster than the server works: {sample:?}"
        );
        assert_eq!(sample.outcome, Outcome::Queued);
        assert_eq!(sample.order_id.as_deref(), Some("o"));
    }
    assert_eq!(result.planned_span_us, 39 * 5_000);
    assert_eq!(result.reconnects, 0, "keep-alive connections stay open");
}

/// One connection and a server that takes 10 ms per request: the tool
/// cannot send on plan (every 1 ms). Uncorrected latency stays near the
/// service time; corrected latency grows with the queue the tool built,
/// the sends are counted late and the achieved rate falls short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_falls_behind_is_corrected_and_flagged() {
    const N: u64 = 30;
    let service = Duration::from_millis(10);
    let config = ReplayConfig {
        target: slow_server(service).await,
        max_in_flight: 1,
        ..ReplayConfig::default()
    };
    let result = replay(&trace(N, 1_000), &config, Arc::new(Quiet))
        .await
        .unwrap();
    let last = result.samples.last().unwrap();
    // Serialized: the last answer cannot come before N service times.
    assert!(last.done_us >= N * 10_000);
    // So its corrected latency is at least N service times minus its plan.
    assert!(last.corrected_us() >= N * 10_000 - last.planned_us);
    // Its uncorrected latency does not see the queue the tool built.
    assert!(last.uncorrected_us() < last.corrected_us() / 4);
    assert!(
        result.late_sends >= (N - 2) as usize,
        "{}",
        result.late_sends
    );
    assert!(result.achieved_ratio() < 0.5, "{}", result.achieved_ratio());
}

#[tokio::test]
async fn bad_targets_and_speeds_are_refused() {
    let records = trace(1, 0);
    for (target, speed) in [
        ("ftp://x", 1.0),
        ("not a url", 1.0),
        ("http://127.0.0.1:1", 0.0),
    ] {
        let config = ReplayConfig {
            target: target.into(),
            speed,
            ..ReplayConfig::default()
        };
        assert!(
            replay(&records, &config, Arc::new(Quiet)).await.is_err(),
            "{target}"
        );
    }
    // Nothing listening: every request is an error, not a crash.
    let config = ReplayConfig {
        target: "http://127.0.0.1:1".into(),
        ..ReplayConfig::default()
    };
    let result = replay(&records, &config, Arc::new(Quiet)).await.unwrap();
    assert_eq!(result.samples[0].outcome, Outcome::Error);
}
