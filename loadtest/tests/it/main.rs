//! Integration tests of the load tester, one module per feature.

mod html;
mod pipelining;
mod replay;
mod traces;
