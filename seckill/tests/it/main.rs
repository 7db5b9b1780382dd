//! Integration tests of the seckill crate, one module per feature.

mod app;
mod batch;
mod flags;
mod helpers;
mod http;
mod parity;
mod race;
mod registry;
mod service;
