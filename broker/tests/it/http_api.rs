//! Tests of the HTTP API and client (being written).
