//! The spike load tester: make a flash-sale spike reproducible, replay it
//! open-loop, and prove afterwards that the sale was correct.
//!
//! - [`trace`] — the NDJSON trace format, read with line-numbered errors;
//! - [`generate`] — traces from named shapes (spike, poisson, stages) and
//!   a population of buyers, repeat clickers and bots, reproducible by
//!   seed;
//! - [`replay`] — open-loop sends at planned times, latency corrected for
//!   coordinated omission, every answer classified;
//! - [`audit`] — the design's invariants as pure checks;
//! - [`stack`] and [`deployment`] — where the audit's facts come from: the
//!   whole stack in this process, or a deployment's Redis, database and
//!   seckill instances;
//! - [`report`], [`html`], [`progress`] — JSON and HTML reports, and the
//!   line a second while it runs;
//! - [`runner`] — a replay with its progress, sampling, drain and audit;
//! - [`live`] — the live page a demo is watched on.

pub mod audit;
pub mod deployment;
pub mod generate;
pub mod html;
pub mod live;
pub mod progress;
pub mod replay;
pub mod report;
pub mod runner;
pub mod stack;
pub mod trace;
