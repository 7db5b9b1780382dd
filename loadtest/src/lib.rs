//! The spike load tester: make a flash-sale spike reproducible, replay it
//! open-loop, and prove afterwards that the sale was correct.
//!
//! - [`trace`] — the NDJSON trace format, read with line-numbered errors;
//! - [`generate`] — traces from named shapes (spike, poisson, stages) and
//!   a population of buyers, repeat clickers and bots, reproducible by
//!   seed;
//! - [`replay`] — open-loop sends at planned times, latency corrected for
//!   coordinated omission, every answer classified; `connection` — one
//!   pipelined keep-alive connection driven on its schedule; [`http1`] —
//!   the HTTP/1.1 it speaks; [`tokens`] — the buyers' signed tokens;
//! - [`audit`] — the design's invariants as pure checks;
//! - [`deployment`] — where the audit's facts come from: a deployment's
//!   Redis, order database and seckill instances, read only;
//! - [`report`], [`html`], [`progress`] — JSON and HTML reports, and the
//!   line a second while it runs;
//! - [`runner`] — a replay with its progress and sampling;
//! - [`options`] — a run's options and how its report is printed,
//!   checked and written.
//!
//! It depends on no service crate: it knows the services by their HTTP
//! API, their key names in Redis and their tables, as any external load
//! tester would. The whole stack in one process (and its live page) is
//! the root package's library, which uses this one.

pub mod audit;
mod connection;
pub mod deployment;
pub mod generate;
pub mod html;
pub mod http1;
pub mod options;
pub mod progress;
pub mod replay;
pub mod report;
pub mod runner;
pub mod tokens;
pub mod trace;
