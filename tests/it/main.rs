//! End-to-end tests of the all-in-one assembly: the whole stack in this
//! process, a spike on it and its audit, its live page, and its stop.

mod live;
mod shutdown;
mod stack;
