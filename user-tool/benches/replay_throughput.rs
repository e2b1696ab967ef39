//! Replay throughput bench (filled in below).
fn main() {}
