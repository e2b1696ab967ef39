//! FlushGuard host integration tests: the fake Filter Manager harness.
//!
//! [`fake::Fake`] implements the engine's `FilterManager` trait with a reference
//! ledger, an IRQL model, flush-safety checks, failure injection and teardown
//! checks; [`harness::Harness`] plays the I/O manager and Filter Manager dispatch
//! around the real `flushguard_engine::callbacks::Filter`.
#![forbid(unsafe_code)]

pub mod alloc_gate;
pub mod fake;
pub mod harness;
pub mod scenario;

use flushguard_protocol::message::{encode_request, RequestFlags};
use flushguard_protocol::Command;

/// A GetVersion request as flushctl sends it.
pub fn port_request_get_version() -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let n =
        encode_request(Command::GetVersion, RequestFlags::empty(), &[], &mut out).expect("fits");
    out.truncate(n);
    out
}

/// A SetPolicy request carrying `blob`, with the persist flag if `persist`.
pub fn port_request_set_policy(blob: &[u8], persist: bool) -> Vec<u8> {
    let mut out = vec![0u8; blob.len() + 64];
    let flags = if persist {
        RequestFlags::PERSIST
    } else {
        RequestFlags::empty()
    };
    let n = encode_request(Command::SetPolicy, flags, blob, &mut out).expect("fits");
    out.truncate(n);
    out
}

/// A GetStats request for rules `first_rule..` (at most `max_rules`), asking for the
/// callback-layer counters if `callback_counters`.
pub fn port_request_get_stats(first_rule: u32, max_rules: u32, callback_counters: bool) -> Vec<u8> {
    let mut body = [0u8; flushguard_protocol::StatsRequest::SIZE];
    flushguard_protocol::StatsRequest {
        first_rule,
        max_rules,
    }
    .write(&mut flushguard_protocol::codec::Writer::new(&mut body))
    .expect("fits");
    let flags = if callback_counters {
        RequestFlags::CALLBACK_COUNTERS
    } else {
        RequestFlags::empty()
    };
    let mut out = vec![0u8; 64];
    let n = encode_request(Command::GetStats, flags, &body, &mut out).expect("fits");
    out.truncate(n);
    out
}

/// A ResetStats request.
pub fn port_request_reset_stats() -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let n =
        encode_request(Command::ResetStats, RequestFlags::empty(), &[], &mut out).expect("fits");
    out.truncate(n);
    out
}
