//! FlushGuard host integration tests.
#![forbid(unsafe_code)]
