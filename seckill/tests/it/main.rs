//! Integration tests of the seckill crate, one module per feature.

mod helpers;
mod parity;
mod race;
mod service;
