//! The replayer's pipelined connections against a hand-rolled server on
//! loopback that answers in its own way: in order with bodies naming the
//! request (so a mismatch would show), chunked, closing mid-pipeline,
//! stalling before it reads. Every check is on counts and structure,
//! never on how fast this machine is.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use loadtest::replay::{Outcome, Quiet, ReplayConfig, ReplayResult, replay};
use loadtest::trace::TraceRecord;

use crate::replay::trace;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake server answers the `n`th request of a connection (from
/// 0) by `user`: the bytes to write, or `None` to close the connection.
type Answer = Arc<dyn Fn(usize, &str) -> Option<Vec<u8>> + Send + Sync>;

fn queued(user: &str, chunked: bool) -> Vec<u8> {
    let body = format!(r#"{{"status":"queued","order_id":"order-of-{user}"}}"#);
    if chunked {
        let (a, b) = body.split_at(10);
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Serves every connection with `answer`, after waiting `stall` before
/// reading anything; counts the connections accepted.
async fn fake_server(answer: Answer, stall: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, Arc::clone(&answer), stall));
        }
    });
    (url, accepted)
}

/// The token key of these tests (a test key: no deployment uses it).
const TOKEN_KEY: &str = "loadtest tests only: 0123456789abcdef";

/// The user a `Bearer` token signed with [`TOKEN_KEY`] names, as a
/// service would read it.
fn user_of(authorization: &[u8]) -> String {
    let token = std::str::from_utf8(authorization)
        .unwrap()
        .trim_start_matches("Bearer ");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[loadtest::tokens::BUYER_AUDIENCE]);
    let key = jsonwebtoken::DecodingKey::from_secret(TOKEN_KEY.as_bytes()).unwrap();
    let claims: serde_json::Value = jsonwebtoken::decode(token.as_bytes(), &key, &validation)
        .unwrap()
        .claims;
    claims["sub"].as_str().unwrap().to_owned()
}

async fn serve(mut stream: TcpStream, answer: Answer, stall: Duration) {
    tokio::time::sleep(stall).await;
    let mut buffer = BytesMut::new();
    let mut served = 0;
    loop {
        let mut out = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut request = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(used)) = request.parse(&buffer) else {
                break;
            };
            let user = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                .map(|h| user_of(h.value))
                .unwrap_or_default();
            buffer.advance(used);
            match answer(served, &user) {
                Some(bytes) => out.extend(bytes),
                None => {
                    // Close gracefully (FIN, then drain), so what was
                    // written is read before the end, not reset away.
                    let _ = stream.write_all(&out).await;
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 4096];
                    let drain =
                        async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
                    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                    return;
                }
            }
            served += 1;
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn count(result: &ReplayResult, outcome: Outcome) -> usize {
    result
        .samples
        .iter()
        .filter(|s| s.outcome == outcome)
        .count()
}

/// Late sends as the samples show them: the result's count must agree.
fn late_in_samples(result: &ReplayResult, late_after: Duration) -> usize {
    result
        .samples
        .iter()
        .filter(|s| s.sent_us - s.planned_us > late_after.as_micros() as u64)
        .count()
}

/// A generous guard so a hang fails the test instead of the whole run.
async fn bounded(future: impl Future<Output = ReplayResult>) -> ReplayResult {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the replay ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_answers_are_matched_in_order_plain_and_chunked() {
    let answer: Answer = Arc::new(|n, user| Some(queued(user, n % 2 == 1)));
    let (target, accepted) = fake_server(answer, Duration::ZERO).await;
    let config = ReplayConfig {
        target,
        token_key: Some(TOKEN_KEY.into()),
        connections: 2,
        ..ReplayConfig::default()
    };
    // 400 requests at the same instant: many in flight on each connection.
    let records = trace(400, 0);
    let result = bounded(async { replay(&records, &config, Arc::new(Quiet)).await.unwrap() }).await;
    assert_eq!(result.samples.len(), 400);
    for (n, sample) in result.samples.iter().enumerate() {
        assert_eq!(sample.index, n);
        assert_eq!(sample.outcome, Outcome::Queued, "{sample:?}");
        assert_eq!(
            sample.order_id.as_deref(),
            Some(format!("order-of-u{n}").as_str()),
            "answers matched to their own requests"
        );
        assert!(sample.sent_us >= sample.planned_us);
        assert!(sample.done_us >= sample.sent_us);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "two connections, kept alive"
    );
    assert_eq!(result.reconnects, 0);
    assert_eq!(
        result.late_sends,
        late_in_samples(&result, config.late_after)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_mid_pipeline_costs_errors_and_a_reconnect_not_a_hang() {
    // Each connection answers 5 requests, then closes.
    let answer: Answer = Arc::new(|n, user| (n < 5).then(|| queued(user, false)));
    let (target, accepted) = fake_server(answer, Duration::ZERO).await;
    let config = ReplayConfig {
        target,
        token_key: Some(TOKEN_KEY.into()),
        connections: 1,
        ..ReplayConfig::default()
    };
    // Bursts of 20 at once, 20 ms apart: each burst loses 15 in flight.
    let records: Vec<TraceRecord> = trace(100, 0)
        .into_iter()
        .enumerate()
        .map(|(n, r)| TraceRecord {
            at_us: (n as u64 / 20) * 20_000,
            ..r
        })
        .collect();
    let result = bounded(async { replay(&records, &config, Arc::new(Quiet)).await.unwrap() }).await;
    assert_eq!(result.samples.len(), 100, "every request accounted for");
    let (ok, errors) = (
        count(&result, Outcome::Queued),
        count(&result, Outcome::Error),
    );
    assert_eq!(ok + errors, 100);
    assert!(ok >= 5 && errors >= 15, "{ok} answered, {errors} lost");
    assert!(result.reconnects >= 1);
    assert!(accepted.load(Ordering::SeqCst) >= 2, "it connected again");
    for sample in result
        .samples
        .iter()
        .filter(|s| s.outcome == Outcome::Queued)
    {
        assert_eq!(
            sample.order_id.as_deref(),
            Some(format!("order-of-u{}", sample.index).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_keep_their_schedule_and_late_ones_are_counted() {
    let answer: Answer = Arc::new(|_, user| Some(queued(user, false)));
    let (target, _) = fake_server(Arc::clone(&answer), Duration::ZERO).await;
    let config = ReplayConfig {
        target,
        token_key: Some(TOKEN_KEY.into()),
        connections: 4,
        ..ReplayConfig::default()
    };
    let records = trace(500, 200); // 5,000 requests/s for 0.1 s
    let result = bounded(async { replay(&records, &config, Arc::new(Quiet)).await.unwrap() }).await;
    assert_eq!(count(&result, Outcome::Queued), 500);
    for (n, sample) in result.samples.iter().enumerate() {
        assert_eq!(sample.planned_us, n as u64 * 200);
        assert!(sample.sent_us >= sample.planned_us, "never before its plan");
    }
    assert_eq!(result.planned_span_us, 499 * 200);
    assert_eq!(
        result.late_sends,
        late_in_samples(&result, config.late_after)
    );

    // A server that waits before reading, with room for two requests in
    // flight: the rest wait for room, so they go late, and are counted.
    let (target, _) = fake_server(answer, Duration::from_millis(300)).await;
    let config = ReplayConfig {
        target,
        token_key: Some(TOKEN_KEY.into()),
        connections: 1,
        max_in_flight: 2,
        ..ReplayConfig::default()
    };
    let records = trace(50, 1_000);
    let result = bounded(async { replay(&records, &config, Arc::new(Quiet)).await.unwrap() }).await;
    assert_eq!(count(&result, Outcome::Queued), 50);
    assert!(result.late_sends >= 48, "{} late", result.late_sends);
    assert_eq!(
        result.late_sends,
        late_in_samples(&result, config.late_after)
    );
    let last = result.samples.last().unwrap();
    assert!(last.corrected_us() > last.uncorrected_us());
}

#[tokio::test]
async fn bad_replay_settings_are_refused() {
    let records = trace(1, 0);
    for broken in [
        ReplayConfig {
            connections: 0,
            ..ReplayConfig::default()
        },
        ReplayConfig {
            max_in_flight: 0,
            ..ReplayConfig::default()
        },
        ReplayConfig {
            threads: 0,
            ..ReplayConfig::default()
        },
        ReplayConfig {
            target: "http://127.0.0.1:8080/some/path".into(),
            ..ReplayConfig::default()
        },
    ] {
        assert!(
            replay(&records, &broken, Arc::new(Quiet)).await.is_err(),
            "{broken:?}"
        );
    }
}
