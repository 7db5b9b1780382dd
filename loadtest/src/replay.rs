//! Open-loop replay: every request goes out at its planned time, whether
//! or not earlier ones have been answered — the way real users arrive.
//!
//! Latency is measured twice: from the *planned* send time (corrected for
//! coordinated omission: if the tool itself could not send on time, that
//! wait counts, as a user would have felt it) and from the actual send
//! (uncorrected, what most tools report). Requests written later than
//! `late_after` past their plan are counted, and the run's achieved rate
//! is compared with the offered one: a tool that cannot keep up must say
//! so instead of quietly measuring a gentler load.
//!
//! How it keeps to the plan at 100,000+ requests/s: a pacer thread (plain
//! OS sleeps, finer than Tokio's 1 ms timer) hands each request, when due,
//! to one of a fixed set of keep-alive connections (round robin); each
//! connection writes everything handed to it in one `write` and reads the
//! answers in order — HTTP/1.1 pipelining (see [`crate::http1`] and
//! [`crate::connection`]), so a slow answer never holds a send back. The
//! connections run on a runtime of their own, so the generator does not
//! queue behind the work of a server in the same process. Each
//! connection keeps its own samples and tallies; they are merged once, at
//! the end.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Uri;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::connection::{ConnectionReport, Due, Plan, drive};
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
    /// 409 `token_reused`: the purchase token was spent already (a
    /// repeat click whose newer token was spent first).
    Reused,
    /// Anything else: other statuses, bad bodies, timeouts, connection errors.
    Error,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Queued,
        Outcome::SoldOut,
        Outcome::Duplicate,
        Outcome::RateLimited,
        Outcome::Shed,
        Outcome::NotStarted,
        Outcome::Ended,
        Outcome::Reused,
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
            Outcome::Reused => "reused",
            Outcome::Error => "error",
        }
    }
}

/// The fields of an answer's JSON body that classify it.
#[derive(Deserialize)]
struct AnswerBody<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    order_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
}

/// Classifies an answer by status and JSON body; returns the order id of
/// `queued` and `duplicate` answers.
pub fn classify(status: u16, body: &[u8]) -> (Outcome, Option<String>) {
    let json: AnswerBody<'_> = serde_json::from_slice(body).unwrap_or(AnswerBody {
        status: None,
        order_id: None,
        code: None,
    });
    let order_id = json.order_id.as_deref().map(str::to_owned);
    match status {
        200 => match json.status.as_deref() {
            Some("queued") => match order_id {
                Some(id) => (Outcome::Queued, Some(id)),
                None => (Outcome::Error, None),
            },
            Some("duplicate") => (Outcome::Duplicate, order_id),
            Some("sold_out") => (Outcome::SoldOut, None),
            _ => (Outcome::Error, None),
        },
        429 => (Outcome::RateLimited, None),
        409 if json.code.as_deref() == Some("token_reused") => (Outcome::Reused, None),
        503 => (Outcome::Shed, None),
        403 => match json.code.as_deref() {
            Some("not_started") => (Outcome::NotStarted, None),
            Some("ended") => (Outcome::Ended, None),
            _ => (Outcome::Error, None),
        },
        _ => (Outcome::Error, None),
    }
}

/// How long a replay's buyer tokens are valid: longer than any replay.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How to replay.
#[derive(Clone)]
pub struct ReplayConfig {
    /// Base URL (`http://host:port`).
    pub target: String,
    /// Time scale: 2.0 plays the trace twice as fast.
    pub speed: f64,
    /// Keep-alive connections the requests are spread over (round robin).
    pub connections: usize,
    /// Most requests in flight in all (each connection takes its share,
    /// at least one); a due request past it waits, and counts as late.
    /// Fewer than `connections` also means fewer connections.
    pub max_in_flight: usize,
    /// A send written later than this past its plan counts as late.
    pub late_after: Duration,
    /// Longest wait for one answer; a connection whose oldest request
    /// waits longer is closed and its requests counted as errors.
    pub request_timeout: Duration,
    /// Threads of the generator's own runtime.
    pub threads: usize,
    /// The deployment's buyer-token signing key: every purchase carries
    /// a token for its record's user. `None`: no token is sent.
    pub token_key: Option<String>,
}

impl std::fmt::Debug for ReplayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayConfig")
            .field("target", &self.target)
            .field("speed", &self.speed)
            .field("connections", &self.connections)
            .field("max_in_flight", &self.max_in_flight)
            .field("late_after", &self.late_after)
            .field("request_timeout", &self.request_timeout)
            .field("threads", &self.threads)
            .field("token_key", &self.token_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            target: "http://127.0.0.1:8080".into(),
            speed: 1.0,
            connections: 64,
            max_in_flight: 65_536,
            late_after: Duration::from_millis(1),
            request_timeout: Duration::from_secs(10),
            threads: 1,
            token_key: None,
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
    /// No connection, in-flight room or thread to send with.
    #[error("connections, max in flight and threads must each be at least 1")]
    NothingToSendWith,
    /// The generator's runtime could not start, or died.
    #[error("the generator's runtime failed: {0}")]
    Runtime(String),
}

/// Observes a replay while it runs (live progress). Called from the
/// generator's threads for every answer: keep it cheap and lock-free.
pub trait Progress: Send + Sync {
    /// A request was answered (or lost: an error).
    fn answered(&self, sample: &Sample);
}

/// No progress output.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn answered(&self, _: &Sample) {}
}

/// Everything a replay measured.
#[derive(Debug, Clone, Default)]
pub struct ReplayResult {
    /// Every request, in trace order.
    pub samples: Vec<Sample>,
    /// Sends written later than `late_after` past their plan.
    pub late_sends: usize,
    /// Planned span of the sends (first to last), µs.
    pub planned_span_us: u64,
    /// Actual span of the sends, µs.
    pub actual_span_us: u64,
    /// Connections opened again after the server closed one (or one
    /// broke, or could not be opened).
    pub reconnects: usize,
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

    /// Share of sends that were late (0 to 1).
    pub fn late_share(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.late_sends as f64 / self.samples.len() as f64
    }
}

/// `host:port` of an `http://` target.
fn authority_of(target: &str) -> Result<String, ReplayError> {
    let bad = || ReplayError::BadTarget(target.to_owned());
    let base: Uri = target.trim_end_matches('/').parse().map_err(|_| bad())?;
    let (Some("http"), Some(authority)) = (base.scheme_str(), base.authority()) else {
        return Err(bad());
    };
    if base.path().len() > 1 {
        return Err(bad());
    }
    Ok(match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:80", authority.host()),
    })
}

/// Replays `records` against `config.target`.
pub async fn replay(
    records: &[TraceRecord],
    config: &ReplayConfig,
    progress: Arc<dyn Progress>,
) -> Result<ReplayResult, ReplayError> {
    let authority = authority_of(&config.target)?;
    if !(config.speed.is_finite() && config.speed > 0.0) {
        return Err(ReplayError::BadSpeed);
    }
    if config.connections == 0 || config.max_in_flight == 0 || config.threads == 0 {
        return Err(ReplayError::NothingToSendWith);
    }
    let connections = config.connections.min(config.max_in_flight);
    let depth = config.max_in_flight.div_ceil(connections);
    let planned: Vec<u64> = records
        .iter()
        .map(|r| (r.at_us as f64 / config.speed) as u64)
        .collect();
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| planned[i]);
    // Made before the clock starts: minting is not part of the load.
    let tokens = match &config.token_key {
        Some(key) => mint_tokens(key, records, &order)?,
        None => Vec::new(),
    };
    let records: Arc<[TraceRecord]> = records.into();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let config = config.clone();
    let spans = (
        order.first().map_or(0, |&i| planned[i]),
        order.last().map_or(0, |&i| planned[i]),
    );
    std::thread::Builder::new()
        .name("loadgen".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.threads)
                .thread_name("loadgen-io")
                .on_thread_start(run_ahead_of_the_target)
                .enable_all()
                .build();
            let result = match runtime {
                Ok(runtime) => Ok(runtime.block_on(run_connections(
                    records,
                    tokens,
                    authority,
                    &config,
                    connections,
                    depth,
                    order,
                    planned,
                    progress,
                ))),
                Err(e) => Err(ReplayError::Runtime(e.to_string())),
            };
            let _ = answer.send(result);
        })
        .map_err(|e| ReplayError::Runtime(e.to_string()))?;
    let reports = answered
        .await
        .map_err(|_| ReplayError::Runtime("it stopped without an answer".into()))??;
    Ok(merge(reports, spans))
}

/// Each record's buyer token and a purchase token of its own, issued at
/// increasing times in the order the records are sent.
fn mint_tokens(
    key: &str,
    records: &[TraceRecord],
    order: &[usize],
) -> Result<Vec<(Arc<str>, String)>, ReplayError> {
    let failed = |e: crate::tokens::TokenError| ReplayError::Runtime(e.to_string());
    let minter = crate::tokens::TokenMinter::new(key, TOKEN_LIFETIME).map_err(failed)?;
    let buyers = minter
        .for_each(records.iter().map(|r| r.user.as_str()))
        .map_err(failed)?;
    let start_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut purchases = vec![String::new(); records.len()];
    for (sent, &index) in order.iter().enumerate() {
        let record = &records[index];
        purchases[index] = minter
            .purchase(&record.user, &record.item, start_us + sent as u64)
            .map_err(failed)?;
    }
    Ok(buyers.into_iter().zip(purchases).collect())
}

/// Opens the connections, paces the plan onto them, and gathers what
/// each measured.
#[allow(clippy::too_many_arguments)]
async fn run_connections(
    records: Arc<[TraceRecord]>,
    tokens: Vec<(Arc<str>, String)>,
    authority: String,
    config: &ReplayConfig,
    connections: usize,
    depth: usize,
    order: Vec<usize>,
    planned: Vec<u64>,
    progress: Arc<dyn Progress>,
) -> Vec<ConnectionReport> {
    // A short lead so the connections are open before the first send.
    let start = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        records,
        tokens,
        authority,
        start,
        late_after: config.late_after,
        request_timeout: config.request_timeout,
        depth,
    });
    let mut senders = Vec::with_capacity(connections);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (send, receive) = mpsc::unbounded_channel();
        senders.push(send);
        tasks.push(tokio::spawn(drive(
            Arc::clone(&plan),
            receive,
            Arc::clone(&progress),
        )));
    }
    let pacer = std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || {
            run_ahead_of_the_target();
            pace(start, &order, &planned, &senders)
        });
    let mut reports = Vec::with_capacity(connections);
    for task in tasks {
        // A connection's task only ends by returning its report.
        if let Ok(report) = task.await {
            reports.push(report);
        }
    }
    if let Ok(pacer) = pacer {
        let _ = pacer.join();
    }
    reports
}

/// Asks the OS to run the calling generator thread ahead of ordinary
/// threads (the highest niceness). Where the target shares the machine —
/// the demo runs it in this very process — its threads would otherwise
/// take turns with the pacer and the connections, and a send delayed by
/// the scheduler would be blamed on the plan. Without the privilege to
/// raise a priority, threads keep the one they have.
pub(crate) fn run_ahead_of_the_target() {
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Max)
    {
        tracing::debug!(error = ?e, "the generator's thread keeps its priority");
    }
}

/// How long the pacer sleeps at least between hand-overs. Waking for
/// every request (tens of thousands of sleeps a second, each a system call
/// and a context switch) would cost the machine more than the requests it
/// paces; waking every 200 µs and handing over everything due since costs
/// a few thousand wake-ups a second and keeps every send well inside the
/// 1 ms at which it counts as late. A connection writes all it was handed
/// in one write.
const PACER_TICK: Duration = Duration::from_micros(200);

/// Hands each request to its connection when it is due (round robin by
/// position in the plan), sleeping the OS's way in between, at most one
/// wake-up per [`PACER_TICK`]; dropping the senders at the end tells the
/// connections the plan is done. Requests are only ever handed over at or
/// after their planned time.
fn pace(start: Instant, order: &[usize], planned: &[u64], senders: &[mpsc::UnboundedSender<Due>]) {
    let mut position = 0;
    while position < order.len() {
        let now = Instant::now();
        if now < start {
            std::thread::sleep(start - now);
            continue;
        }
        let now_us = (now - start).as_micros() as u64;
        while position < order.len() && planned[order[position]] <= now_us {
            let index = order[position];
            let _ = senders[position % senders.len()].send(Due {
                index,
                planned_us: planned[index],
            });
            position += 1;
        }
        if let Some(&next) = order.get(position) {
            let wait = Duration::from_micros(planned[next].saturating_sub(now_us));
            std::thread::sleep(wait.max(PACER_TICK));
        }
    }
}

/// One result from every connection's.
fn merge(
    reports: Vec<ConnectionReport>,
    (planned_first, planned_last): (u64, u64),
) -> ReplayResult {
    let mut result = ReplayResult {
        planned_span_us: planned_last - planned_first,
        ..ReplayResult::default()
    };
    let (mut first_sent, mut last_sent) = (None::<u64>, 0);
    for report in reports {
        result.late_sends += report.late_sends;
        result.reconnects += report.reconnects;
        if let Some(first) = report.first_sent_us {
            first_sent = Some(first_sent.map_or(first, |f| f.min(first)));
        }
        last_sent = last_sent.max(report.last_sent_us);
        result.samples.extend(report.samples);
    }
    result.samples.sort_unstable_by_key(|s| s.index);
    result.actual_span_us = last_sent.saturating_sub(first_sent.unwrap_or(0));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let cases: [(u16, &str, Outcome); 12] = [
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
            (409, r#"{"code":"token_reused"}"#, Outcome::Reused),
            (409, r#"{"code":"conflict"}"#, Outcome::Error),
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
