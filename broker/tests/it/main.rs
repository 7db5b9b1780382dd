//! Integration tests of the broker library, one module per feature.

mod combined_sends;
mod consumption;
mod delays;
mod group_fencing;
mod helpers;
mod http_api;
mod http_helpers;
mod http_router;
mod http_transactions;
mod lookup;
mod model;
mod power_loss;
mod recovery;
mod retention;
mod retry;
mod storage;
mod transaction_batches;
mod transactions;
