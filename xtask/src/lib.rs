//! FlushGuard build and packaging tasks (`cargo xtask ...`), as a library so that the
//! integration tests can exercise the same checks (PE gate, INF reader, unwind check).
#![forbid(unsafe_code)]

pub mod build;
pub mod inf;
pub mod package;
pub mod pe;
pub mod seh;
pub mod sign;
pub mod tools;
pub mod unwind;
