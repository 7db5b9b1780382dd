//! Integration tests of the order worker, one module per feature.

mod api;
mod fencing;
mod helpers;
mod order_store;
mod remote;
mod rig;
mod worker;
