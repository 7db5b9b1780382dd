//! One keep-alive connection of the replayer, driven on its schedule:
//! a writer that writes every request handed to it (all those due at the
//! same instant in one `write`), and a reader that matches answers to
//! requests in order (HTTP/1.1 pipelining) and records them — both in one
//! task, so a connection needs no lock anyone else takes and no task per
//! request.
//!
//! Bounds: at most `depth` requests in flight on the connection (past it,
//! due requests wait, and are counted late when they go); an answer
//! awaited longer than `request_timeout` ends the connection. When the
//! server closes the connection (or breaks the protocol, or a write
//! fails), every request in flight on it is recorded as an error — never
//! re-sent — and the connection is opened again for the rest of the
//! schedule; a connection that cannot be opened turns what is due into
//! errors, so a replay always ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::http1::{encode_purchase, take_response};
use crate::replay::{Outcome, Progress, Sample, classify};
use crate::trace::TraceRecord;

/// Longest wait to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before reopening a connection that broke without an answer.
const REOPEN_PAUSE: Duration = Duration::from_millis(20);

/// A request handed to a connection by the pacer when it is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    /// Index in the trace.
    pub(crate) index: usize,
    /// Planned send, µs from the start.
    pub(crate) planned_us: u64,
}

/// What every connection of one replay shares (read only).
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) records: Arc<[TraceRecord]>,
    /// Each record's buyer token and purchase token (empty: none are
    /// sent).
    pub(crate) tokens: Vec<(Arc<str>, String)>,
    /// `host:port`, to connect to and for the `Host` header.
    pub(crate) authority: String,
    pub(crate) start: Instant,
    pub(crate) late_after: Duration,
    pub(crate) request_timeout: Duration,
    /// Most requests in flight on one connection.
    pub(crate) depth: usize,
}

impl Plan {
    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }
}

/// What one connection measured.
#[derive(Debug, Default)]
pub(crate) struct ConnectionReport {
    pub(crate) samples: Vec<Sample>,
    pub(crate) late_sends: usize,
    pub(crate) reconnects: usize,
    pub(crate) first_sent_us: Option<u64>,
    pub(crate) last_sent_us: u64,
}

/// A request written and not yet answered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    index: usize,
    planned_us: u64,
    sent_us: u64,
}

/// How one connection's life ended.
enum End {
    /// The schedule is done and every request answered.
    Finished,
    /// Closed, broken or stuck: open another.
    Broken,
}

/// Runs one connection until its schedule (`due`, closed by the pacer
/// when done) is exhausted and answered.
pub(crate) async fn drive(
    plan: Arc<Plan>,
    mut due: UnboundedReceiver<Due>,
    progress: Arc<dyn Progress>,
) -> ConnectionReport {
    let mut report = ConnectionReport::default();
    let mut waiting: VecDeque<Due> = VecDeque::new();
    loop {
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&plan.authority))
            .await
            .ok()
            .and_then(Result::ok);
        let Some(stream) = opened else {
            // Nowhere to send what is due: each is an error, then try again.
            while let Ok(next) = due.try_recv() {
                waiting.push_back(next);
            }
            let now = plan.micros(Instant::now());
            for lost in waiting.drain(..) {
                let sample = unsent(lost, now);
                progress.answered(&sample);
                report.samples.push(sample);
            }
            match due.recv().await {
                Some(next) => waiting.push_back(next),
                None => return report,
            }
            tokio::time::sleep(REOPEN_PAUSE).await;
            report.reconnects += 1;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answered_before = report.samples.len();
        match session(
            stream,
            &plan,
            &mut due,
            &mut waiting,
            &mut report,
            &*progress,
        )
        .await
        {
            End::Finished => return report,
            End::Broken => {
                report.reconnects += 1;
                if report.samples.len() == answered_before {
                    tokio::time::sleep(REOPEN_PAUSE).await;
                }
            }
        }
    }
}

/// A request that never went out: an error at `now_us`.
fn unsent(lost: Due, now_us: u64) -> Sample {
    let at = now_us.max(lost.planned_us);
    Sample {
        index: lost.index,
        planned_us: lost.planned_us,
        sent_us: at,
        done_us: at,
        outcome: Outcome::Error,
        order_id: None,
    }
}

/// One open connection: write and read side by side until the schedule
/// is answered or the connection breaks; whatever is in flight when it
/// breaks becomes an error.
async fn session(
    mut stream: TcpStream,
    plan: &Plan,
    due: &mut UnboundedReceiver<Due>,
    waiting: &mut VecDeque<Due>,
    report: &mut ConnectionReport,
    progress: &dyn Progress,
) -> End {
    // Borrowed halves: the write side must stay open after the last
    // request (an owned half would shut it down when dropped, and the
    // server could stop before answering).
    let (read, write) = stream.split();
    let in_flight = Mutex::new(VecDeque::with_capacity(plan.depth.min(4_096)));
    let room = Notify::new();
    let all_written = AtomicBool::new(false);
    let wrote_last = Notify::new();
    let ConnectionReport {
        samples,
        late_sends,
        first_sent_us,
        last_sent_us,
        ..
    } = report;
    let sides = Sides {
        plan,
        in_flight: &in_flight,
        room: &room,
        all_written: &all_written,
        wrote_last: &wrote_last,
    };
    let writer = async {
        let mut sent = SendCounts {
            late_sends,
            first_sent_us,
            last_sent_us,
        };
        if sides.write(write, due, waiting, &mut sent).await {
            all_written.store(true, Ordering::Release);
            wrote_last.notify_one();
            std::future::pending::<()>().await;
        }
        End::Broken
    };
    let reader = sides.read(read, samples, progress);
    let end = tokio::select! {
        end = reader => end,
        end = writer => end,
    };
    let now = plan.micros(Instant::now());
    for lost in in_flight.lock().drain(..) {
        let sample = Sample {
            index: lost.index,
            planned_us: lost.planned_us,
            sent_us: lost.sent_us,
            done_us: now.max(lost.sent_us),
            outcome: Outcome::Error,
            order_id: None,
        };
        progress.answered(&sample);
        samples.push(sample);
    }
    end
}

/// The writer's tallies, borrowed from the connection's report.
struct SendCounts<'a> {
    late_sends: &'a mut usize,
    first_sent_us: &'a mut Option<u64>,
    last_sent_us: &'a mut u64,
}

/// What the two sides of one open connection share.
struct Sides<'a> {
    plan: &'a Plan,
    /// Written, unanswered, in order. Only this connection's two sides
    /// touch it, in one task, so the lock is never contended.
    in_flight: &'a Mutex<VecDeque<InFlight>>,
    /// The reader took an answer: there may be room to write.
    room: &'a Notify,
    all_written: &'a AtomicBool,
    wrote_last: &'a Notify,
}

impl Sides<'_> {
    /// Writes requests as they come due; `true` once the schedule is
    /// done, `false` when a write failed.
    async fn write(
        &self,
        mut write: WriteHalf<'_>,
        due: &mut UnboundedReceiver<Due>,
        waiting: &mut VecDeque<Due>,
        sent: &mut SendCounts<'_>,
    ) -> bool {
        let mut bytes = Vec::with_capacity(16 * 1024);
        loop {
            if waiting.is_empty() {
                match due.recv().await {
                    Some(next) => waiting.push_back(next),
                    None => return true,
                }
            }
            while let Ok(next) = due.try_recv() {
                waiting.push_back(next);
            }
            let room = self.plan.depth.saturating_sub(self.in_flight.lock().len());
            if room == 0 {
                self.room.notified().await;
                continue;
            }
            let now = Instant::now();
            let now_us = self.plan.micros(now);
            bytes.clear();
            {
                let mut in_flight = self.in_flight.lock();
                for request in waiting.drain(..room.min(waiting.len())) {
                    let record = &self.plan.records[request.index];
                    let tokens = self
                        .plan
                        .tokens
                        .get(request.index)
                        .map(|(buyer, purchase)| (&**buyer, purchase.as_str()));
                    encode_purchase(&mut bytes, &self.plan.authority, &record.item, tokens);
                    let sent_us = now_us.max(request.planned_us);
                    if Duration::from_micros(sent_us - request.planned_us) > self.plan.late_after {
                        *sent.late_sends += 1;
                    }
                    sent.first_sent_us.get_or_insert(sent_us);
                    *sent.last_sent_us = sent_us;
                    in_flight.push_back(InFlight {
                        index: request.index,
                        planned_us: request.planned_us,
                        sent_us,
                    });
                }
            }
            if write.write_all(&bytes).await.is_err() {
                return false;
            }
        }
    }

    /// Reads answers and matches them in order until every request is
    /// answered ([`End::Finished`]) or the connection breaks.
    async fn read(
        &self,
        mut read: ReadHalf<'_>,
        samples: &mut Vec<Sample>,
        progress: &dyn Progress,
    ) -> End {
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        let timeout = self.plan.request_timeout;
        let stuck = tokio::time::sleep(timeout);
        tokio::pin!(stuck);
        let mut read_at = Instant::now();
        loop {
            loop {
                let response = match take_response(&mut buffer) {
                    Ok(Some(response)) => response,
                    Ok(None) => break,
                    Err(_) => return End::Broken,
                };
                let Some(request) = self.in_flight.lock().pop_front() else {
                    // An answer to nothing: the connection is out of step.
                    return End::Broken;
                };
                self.room.notify_one();
                let (outcome, order_id) = classify(response.status, &response.body);
                let sample = Sample {
                    index: request.index,
                    planned_us: request.planned_us,
                    sent_us: request.sent_us,
                    done_us: self.plan.micros(read_at).max(request.sent_us),
                    outcome,
                    order_id,
                };
                progress.answered(&sample);
                samples.push(sample);
                if response.closes {
                    return End::Broken;
                }
            }
            let oldest = self.in_flight.lock().front().map(|r| r.sent_us);
            if oldest.is_none() && self.all_written.load(Ordering::Acquire) {
                return End::Finished;
            }
            let deadline = match oldest {
                Some(sent_us) => self.plan.start + Duration::from_micros(sent_us) + timeout,
                None => Instant::now() + timeout,
            };
            if stuck.deadline().into_std() != deadline {
                stuck.as_mut().reset(deadline.into());
            }
            tokio::select! {
                read_bytes = read.read_buf(&mut buffer) => match read_bytes {
                    Ok(0) | Err(_) => return End::Broken,
                    Ok(_) => read_at = Instant::now(),
                },
                () = self.wrote_last.notified() => {}
                () = &mut stuck => {
                    if oldest.is_some() {
                        return End::Broken;
                    }
                }
            }
        }
    }
}
