//! Every decoder on arbitrary bytes: must not panic, and a policy blob that
//! decodes must re-encode to exactly the same bytes.
#![no_main]

use flushguard_engine::path::{FileName, PathGlob};
use flushguard_engine::{Policy, StatsSnapshot};
use flushguard_protocol::codec::Reader;
use flushguard_protocol::events::{EventRecord, EventsReplyHeader};
use flushguard_protocol::policy::PolicyBlob;
use flushguard_protocol::{
    ConnectContext, EventsRequest, FlushFlags, ReplyHeader, RequestHeader, StatsRequest,
    StatusInfo, VersionInfo,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = RequestHeader::decode(data);
    let _ = ReplyHeader::decode(data);
    let _ = ConnectContext::decode(data);
    let _ = StatsRequest::decode(data);
    let _ = EventsRequest::decode(data);
    let _ = VersionInfo::decode(data);
    let _ = StatusInfo::decode(data);
    let _ = StatsSnapshot::decode(data);
    let mut r = Reader::new(data);
    if EventsReplyHeader::read(&mut r).is_ok() {
        while EventRecord::read(&mut r).is_ok() {}
    }
    if let Ok(b) = PolicyBlob::parse(data) {
        for rule in b.rules() {
            assert!(
                rule.is_ok(),
                "parse accepted a blob whose rules do not iterate"
            );
        }
    }
    if let Ok(p) = Policy::decode(data) {
        let again = p.encode().expect("a decoded policy encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }
    if data.len() >= 4 {
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if let Ok(f) = FlushFlags::from_flt_flush_type(v) {
            assert_eq!(f.to_flt_flush_type(), v);
        }
        if let Ok(f) = FlushFlags::from_flush_flags_ex(v) {
            assert_eq!(f.to_flush_flags_ex(), Ok(v));
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(n) = FileName::parse(&text) {
        let _ = n.extension();
    }
    if let Ok(g) = PathGlob::new(&text) {
        let _ = g.matches("a\\b\\c.db");
    }
    let _ = Policy::from_toml_str(&text);
});
