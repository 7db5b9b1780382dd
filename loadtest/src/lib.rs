//! The spike load tester: make a flash-sale spike reproducible, replay it
//! open-loop, and prove afterwards that the sale was correct.
//!
//! Built so far:
//! - [`trace`] — the NDJSON trace format, read with line-numbered errors;
//! - [`generate`] — traces from named shapes (spike, poisson, stages) and
//!   a population of buyers, repeat clickers and bots, reproducible by
//!   seed.
//!
//! Still to come (see `docs/ARCHITECTURE.md`): the open-loop replayer with
//! coordinated-omission correction, the invariant audit, and the JSON and
//! HTML reports.

pub mod audit;
pub mod generate;
pub mod replay;
pub mod report;
pub mod stack;
pub mod trace;
