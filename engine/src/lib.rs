//! FlushGuard policy, decisions, stats and callback logic.
#![forbid(unsafe_code)]
