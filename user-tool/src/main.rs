//! FlushGuard administrator CLI.
#![forbid(unsafe_code)]

fn main() {}
