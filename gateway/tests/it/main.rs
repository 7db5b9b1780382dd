//! Integration tests of the gateway, one module per feature.

mod flags;
mod helpers;
mod router;
mod sockets;
