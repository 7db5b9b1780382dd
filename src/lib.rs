//! The all-in-one assembly: every part of the flash sale in one process,
//! from each crate's library, for the `flashsale` binary (`serve`, `demo`,
//! `run`) and the end-to-end tests.
//!
//! - [`stack`] — broker, stock store, seckill, order worker and gateway
//!   started together, and stopped together by one shutdown token;
//! - [`stack_run`] — a spike replayed on it, drained and audited;
//! - [`live`] — the live page a demo is watched on, built on the stack
//!   (the stack knows nothing of it).
//!
//! It sits at the top of the crate graph: it may use every service crate
//! and the load tester's library, and nothing uses it. The load tester
//! itself stays an external tool that knows the services only by their
//! wire formats and their stores.

pub mod live;
pub mod stack;
pub mod stack_run;
