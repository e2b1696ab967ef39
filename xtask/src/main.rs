//! FlushGuard build and packaging tasks.
#![forbid(unsafe_code)]

fn main() {}
