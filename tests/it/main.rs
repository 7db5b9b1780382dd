//! End-to-end tests of the all-in-one assembly: the whole stack in this
//! process, a spike on it and its audit, its live page, its stop, and the
//! attacks it must refuse on its real sockets.

mod attacks;
mod live;
mod shutdown;
mod stack;
