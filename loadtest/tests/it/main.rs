//! Integration tests of the load tester, one module per feature.

mod html;
mod live;
mod replay;
mod stack;
mod traces;
