//! Open-loop replay: every request goes out at its planned time, whether
//! or not earlier ones have been answered — the way real users arrive.
//!
//! Latency is measured twice: from the *planned* send time (corrected for
//! coordinated omission: if the tool itself could not send on time, that
//! wait counts, as a user would have felt it) and from the actual send
//! (uncorrected, what most tools report). Requests that went out later
//! than `late_after` past their plan are counted, and the run's achieved
//! rate is compared with the offered one: a tool that cannot keep up must
//! say so instead of quietly measuring a gentler load.
//!
//! Requests run on a pool of keep-alive connections that grows with the
//! concurrency the load needs, capped at `max_in_flight`; past the cap a
//! send waits (and so shows up as late).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::trace::TraceRecord;

/// How a response is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A unit was reserved: `{"status":"queued","order_id"}`.
    Queued,
    /// `{"status":"sold_out"}`.
    SoldOut,
    /// The user already holds an order: `{"status":"duplicate"}`.
    Duplicate,
    /// 429.
    RateLimited,
    /// 503 (load shedding, or the service unable to take it).
    Shed,
    /// 403 before the sale.
    NotStarted,
    /// 403 after the sale.
    Ended,
    /// Anything else: other statuses, bad bodies, timeouts, connection errors.
    Error,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Queued,
        Outcome::SoldOut,
        Outcome::Duplicate,
        Outcome::RateLimited,
        Outcome::Shed,
        Outcome::NotStarted,
        Outcome::Ended,
        Outcome::Error,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::SoldOut => "sold_out",
            Outcome::Duplicate => "duplicate",
            Outcome::RateLimited => "rate_limited",
            Outcome::Shed => "shed",
            Outcome::NotStarted => "not_started",
            Outcome::Ended => "ended",
            Outcome::Error => "error",
        }
    }
}

/// Classifies an answer by status and JSON body; returns the order id of
/// `queued` and `duplicate` answers.
pub fn classify(status: u16, body: &[u8]) -> (Outcome, Option<String>) {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match status {
        200 => match field("status").as_deref() {
            Some("queued") => match field("order_id") {
                Some(id) => (Outcome::Queued, Some(id)),
                None => (Outcome::Error, None),
            },
            Some("duplicate") => (Outcome::Duplicate, field("order_id")),
            Some("sold_out") => (Outcome::SoldOut, None),
            _ => (Outcome::Error, None),
        },
        429 => (Outcome::RateLimited, None),
        503 => (Outcome::Shed, None),
        403 => match field("code").as_deref() {
            Some("not_started") => (Outcome::NotStarted, None),
            Some("ended") => (Outcome::Ended, None),
            _ => (Outcome::Error, None),
        },
        _ => (Outcome::Error, None),
    }
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Base URL (`http://host:port`).
    pub target: String,
    /// Time scale: 2.0 plays the trace twice as fast.
    pub speed: f64,
    /// Most requests in flight (and so connections).
    pub max_in_flight: usize,
    /// A send later than this past its plan counts as late.
    pub late_after: Duration,
    /// Longest wait for one answer.
    pub request_timeout: Duration,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            target: "http://127.0.0.1:8080".into(),
            speed: 1.0,
            max_in_flight: 2_048,
            late_after: Duration::from_millis(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// One request as it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Index in the trace.
    pub index: usize,
    /// Planned send, µs from the start (after `speed`).
    pub planned_us: u64,
    /// Actual send, µs from the start.
    pub sent_us: u64,
    /// Answer received, µs from the start.
    pub done_us: u64,
    /// Classification.
    pub outcome: Outcome,
    /// Order id of a queued or duplicate answer.
    pub order_id: Option<String>,
}

impl Sample {
    /// Latency from the planned send (coordinated omission corrected).
    pub fn corrected_us(&self) -> u64 {
        self.done_us.saturating_sub(self.planned_us)
    }

    /// Latency from the actual send.
    pub fn uncorrected_us(&self) -> u64 {
        self.done_us.saturating_sub(self.sent_us)
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A bad target URL.
    #[error("bad target {0:?}: expected http://host:port")]
    BadTarget(String),
    /// A bad speed.
    #[error("speed must be a positive number")]
    BadSpeed,
}

/// Observes a replay while it runs (live progress).
pub trait Progress: Send + Sync {
    /// A request was answered.
    fn answered(&self, sample: &Sample);
}

/// No progress output.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn answered(&self, _: &Sample) {}
}

/// Everything a replay measured.
#[derive(Debug, Clone)]
pub struct ReplayResult {
    /// Every request, in trace order.
    pub samples: Vec<Sample>,
    /// Sends later than `late_after`.
    pub late_sends: usize,
    /// Planned span of the sends (first to last), µs.
    pub planned_span_us: u64,
    /// Actual span of the sends, µs.
    pub actual_span_us: u64,
}

impl ReplayResult {
    /// Achieved over offered rate: 1.0 when every request went out on
    /// time; below when the sender fell behind.
    pub fn achieved_ratio(&self) -> f64 {
        if self.actual_span_us == 0 {
            return 1.0;
        }
        (self.planned_span_us as f64 / self.actual_span_us as f64).min(1.0)
    }
}

/// Replays `records` against `config.target`.
pub async fn replay(
    records: &[TraceRecord],
    config: &ReplayConfig,
    progress: Arc<dyn Progress>,
) -> Result<ReplayResult, ReplayError> {
    let base: Uri = config
        .target
        .trim_end_matches('/')
        .parse()
        .map_err(|_| ReplayError::BadTarget(config.target.clone()))?;
    let (Some(scheme), Some(authority)) = (base.scheme_str(), base.authority()) else {
        return Err(ReplayError::BadTarget(config.target.clone()));
    };
    if scheme != "http" {
        return Err(ReplayError::BadTarget(config.target.clone()));
    }
    if !(config.speed.is_finite() && config.speed > 0.0) {
        return Err(ReplayError::BadSpeed);
    }
    let base = format!("http://{authority}");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(config.max_in_flight)
        .build(connector);
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(records.len())));
    // A short lead so the first sends are not already late.
    let start = Instant::now() + Duration::from_millis(20);
    let micros = move |at: Instant| at.saturating_duration_since(start).as_micros() as u64;
    let mut late = 0;
    let mut tasks = Vec::with_capacity(records.len());
    let (mut first_sent, mut last_sent) = (None, 0);
    for (index, record) in records.iter().enumerate() {
        let planned_us = (record.at_us as f64 / config.speed) as u64;
        let planned = start + Duration::from_micros(planned_us);
        tokio::time::sleep_until(planned.into()).await;
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let sent = Instant::now();
        if sent.saturating_duration_since(planned) > config.late_after {
            late += 1;
        }
        let sent_us = micros(sent).max(planned_us);
        first_sent.get_or_insert(sent_us);
        last_sent = sent_us;
        let request = Request::post(format!("{base}/api/seckill/{}", record.item))
            .header("x-user-id", record.user.as_str())
            .body(Body::empty())
            .expect("a valid request");
        let client = client.clone();
        let samples = Arc::clone(&samples);
        let progress = Arc::clone(&progress);
        let timeout = config.request_timeout;
        tasks.push(tokio::spawn(async move {
            let answer = tokio::time::timeout(timeout, async {
                let response = client.request(request).await.ok()?;
                let status = response.status().as_u16();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .ok()?
                    .to_bytes();
                Some((status, body))
            })
            .await
            .ok()
            .flatten();
            drop(permit);
            let done_us = micros(Instant::now()).max(sent_us);
            let (outcome, order_id) = match answer {
                Some((status, body)) => classify(status, &body),
                None => (Outcome::Error, None),
            };
            let sample = Sample {
                index,
                planned_us,
                sent_us,
                done_us,
                outcome,
                order_id,
            };
            progress.answered(&sample);
            samples.lock().push(sample);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut samples = std::mem::take(&mut *samples.lock());
    samples.sort_by_key(|s| s.index);
    let planned_first = records
        .first()
        .map_or(0, |r| (r.at_us as f64 / config.speed) as u64);
    let planned_last = records
        .last()
        .map_or(0, |r| (r.at_us as f64 / config.speed) as u64);
    Ok(ReplayResult {
        samples,
        late_sends: late,
        planned_span_us: planned_last - planned_first,
        actual_span_us: last_sent - first_sent.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let cases: [(u16, &str, Outcome); 10] = [
            (
                200,
                r#"{"status":"queued","order_id":"o1"}"#,
                Outcome::Queued,
            ),
            (200, r#"{"status":"queued"}"#, Outcome::Error),
            (
                200,
                r#"{"status":"duplicate","order_id":"o1"}"#,
                Outcome::Duplicate,
            ),
            (200, r#"{"status":"sold_out"}"#, Outcome::SoldOut),
            (200, "hello", Outcome::Error),
            (429, "", Outcome::RateLimited),
            (503, "", Outcome::Shed),
            (403, r#"{"code":"not_started"}"#, Outcome::NotStarted),
            (403, r#"{"code":"ended"}"#, Outcome::Ended),
            (500, "{}", Outcome::Error),
        ];
        for (status, body, outcome) in cases {
            assert_eq!(
                classify(status, body.as_bytes()).0,
                outcome,
                "{status} {body}"
            );
        }
        assert_eq!(
            classify(200, br#"{"status":"queued","order_id":"o1"}"#)
                .1
                .as_deref(),
            Some("o1")
        );
    }
}
