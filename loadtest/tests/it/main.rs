//! Integration tests of the load tester, one module per feature.

mod replay;
mod stack;
