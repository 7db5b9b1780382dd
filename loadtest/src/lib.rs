//! The spike load tester.
//!
//! Planned (see `docs/ARCHITECTURE.md`): generates and replays spike traces
//! open-loop, audits the system's invariants afterwards and writes a report.
//! This crate holds no code yet.
