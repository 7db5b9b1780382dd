//! Integration tests of the broker library, one module per feature.

mod helpers;
mod http_api;
