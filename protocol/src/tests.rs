//! Wire tests: golden bytes, round trips, every bad-input class, no panics.

extern crate std;
use std::vec;
use std::vec::Vec;

use crate::codec::{Reader, Utf16Str, Writer};
use crate::events::{EventKind, EventRecord, EventsReplyHeader};
use crate::message::{check_output_buffer, encode_request};
use crate::policy::{
    ActionFlags, ActionWire, PolicyBlob, PolicyFlags, PolicyHeader, RuleWire, MAX_RULES,
};
use crate::stats::StatsReplyHeader;
use crate::*;
use proptest::prelude::*;

fn req(cmd: Command, flags: RequestFlags, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; RequestHeader::SIZE + body.len()];
    let n = encode_request(cmd, flags, body, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn golden_request_header() {
    let r = req(Command::SetPolicy, RequestFlags::PERSIST, &[0xAA, 0xBB]);
    assert_eq!(
        r,
        [1, 0, 0, 0, 3, 0, 1, 0, 18, 0, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB],
        "version@0 command@4 flags@6 length@8 reserved@12"
    );
    let (h, body) = RequestHeader::decode(&r).unwrap();
    assert_eq!(h.command, Command::SetPolicy);
    assert_eq!(h.flags, RequestFlags::PERSIST);
    assert_eq!(body, [0xAA, 0xBB]);
}

#[test]
fn golden_connect_context() {
    let c = ConnectContext::current().encode();
    assert_eq!(&c[..4], b"FGcn");
    assert_eq!(c[4..8], [1, 0, 0, 0]);
    assert_eq!(c[8..], [0; 8]);
    assert_eq!(ConnectContext::decode(&c), Ok(ConnectContext::current()));
}

#[test]
fn connect_context_errors() {
    let good = ConnectContext::current().encode();
    let mut b = good;
    b[0] ^= 1;
    assert!(matches!(
        ConnectContext::decode(&b),
        Err(DecodeError::BadMagic { .. })
    ));
    let mut b = good;
    b[4] = 2;
    assert_eq!(
        ConnectContext::decode(&b),
        Err(DecodeError::UnknownVersion {
            expected: 1,
            got: 2
        })
    );
    let mut b = good;
    b[8] = 1;
    assert!(matches!(
        ConnectContext::decode(&b),
        Err(DecodeError::UndefinedFlags { .. })
    ));
    let mut b = good;
    b[15] = 1;
    assert_eq!(
        ConnectContext::decode(&b),
        Err(DecodeError::NonZeroReserved {
            field: "ConnectContext.reserved"
        })
    );
    assert!(matches!(
        ConnectContext::decode(&good[..15]),
        Err(DecodeError::TooShort { .. })
    ));
    let mut long = good.to_vec();
    long.push(0);
    assert!(matches!(
        ConnectContext::decode(&long),
        Err(DecodeError::TooLong { .. })
    ));
    assert_eq!(
        ConnectContext::decode(&b).unwrap_err().ntstatus(),
        NtStatus::INVALID_PARAMETER
    );
}

/// One test per bad-input class of DESIGN §4, asserting the variant and status.
#[test]
fn request_bad_input_classes() {
    let good = req(Command::GetStatus, RequestFlags::empty(), &[]);
    let st = |b: &[u8]| RequestHeader::decode(b).unwrap_err();

    // short buffer
    let e = st(&good[..15]);
    assert_eq!(
        e,
        DecodeError::TooShort {
            needed: 16,
            got: 15
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::INVALID_BUFFER_SIZE);
    // oversized buffer
    let big = vec![0u8; MAX_MESSAGE_BYTES as usize + 1];
    let e = st(&big);
    assert!(matches!(e, DecodeError::TooLong { .. }));
    assert_eq!(e.ntstatus(), NtStatus::INVALID_BUFFER_SIZE);
    // declared length != buffer length
    let mut b = good.clone();
    b.push(0);
    let e = st(&b);
    assert_eq!(
        e,
        DecodeError::LengthMismatch {
            declared: 16,
            actual: 17
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::INFO_LENGTH_MISMATCH);
    // unknown version
    let mut b = good.clone();
    b[0] = 9;
    let e = st(&b);
    assert_eq!(
        e,
        DecodeError::UnknownVersion {
            expected: 1,
            got: 9
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::REVISION_MISMATCH);
    // unknown command
    let mut b = good.clone();
    b[4] = 7;
    let e = st(&b);
    assert_eq!(e, DecodeError::UnknownCommand(7));
    assert_eq!(e.ntstatus(), NtStatus::INVALID_DEVICE_REQUEST);
    // non-zero reserved
    let mut b = good.clone();
    b[13] = 1;
    let e = st(&b);
    assert_eq!(
        e,
        DecodeError::NonZeroReserved {
            field: "RequestHeader.reserved"
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::INVALID_PARAMETER);
    // undefined flag bits (PERSIST is not defined for GetStatus; bit 1 for anything)
    let mut b = good.clone();
    b[6] = 1;
    let e = st(&b);
    assert_eq!(
        e,
        DecodeError::UndefinedFlags {
            field: "RequestHeader.flags",
            bits: 1
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::NOT_SUPPORTED);
    let b = req(Command::SetPolicy, RequestFlags::from_bits_retain(2), &[]);
    assert_eq!(
        st(&b),
        DecodeError::UndefinedFlags {
            field: "RequestHeader.flags",
            bits: 2
        }
    );
    // a fixed body of the wrong size
    let b = req(Command::GetStats, RequestFlags::empty(), &[0; 7]);
    assert!(matches!(
        st(&b),
        DecodeError::TooShort { needed: 8, got: 7 }
    ));
    let b = req(Command::GetVersion, RequestFlags::empty(), &[0; 1]);
    assert!(matches!(st(&b), DecodeError::TooLong { max: 0, got: 1 }));
}

#[test]
fn output_buffer_checks() {
    let e = check_output_buffer(0x1004, 64, 16).unwrap_err();
    assert_eq!(e, DecodeError::Misaligned { alignment: 8 });
    assert_eq!(e.ntstatus(), NtStatus::DATATYPE_MISALIGNMENT);
    let e = check_output_buffer(0x1000, 15, 16).unwrap_err();
    assert_eq!(
        e,
        DecodeError::OutputTooSmall {
            needed: 16,
            got: 15
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::BUFFER_TOO_SMALL);
    assert_eq!(check_output_buffer(0x1008, 16, 16), Ok(()));
}

#[test]
fn counts_overflow() {
    let mut b = [0u8; 8];
    Writer::new(&mut b).u32(u32::MAX).unwrap();
    b[4] = 1;
    let e = StatsRequest::decode(&b).unwrap_err();
    assert!(matches!(e, DecodeError::Overflow { .. }));
    assert_eq!(e.ntstatus(), NtStatus::INTEGER_OVERFLOW);
}

#[test]
fn utf16_classes() {
    let e = Utf16Str::new("f", &[0x41, 0x00, 0x42], 10).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Utf16 {
            field: "f",
            problem: Utf16Problem::OddLength
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::OBJECT_NAME_INVALID);
    let e = Utf16Str::new("f", &[0x41, 0, 0, 0, 0x42, 0], 10).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Utf16 {
            field: "f",
            problem: Utf16Problem::EmbeddedNul
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::OBJECT_NAME_INVALID);
    let e = Utf16Str::new("f", &[0x41, 0, 0x42, 0, 0x43, 0], 2).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Utf16 {
            field: "f",
            problem: Utf16Problem::TooLong { max: 2, got: 3 }
        }
    );
    assert_eq!(e.ntstatus(), NtStatus::NAME_TOO_LONG);
    let e = Utf16Str::new("f", &[0x00, 0xD8], 10).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Utf16 {
            field: "f",
            problem: Utf16Problem::UnpairedSurrogate
        }
    );
    let s = Utf16Str::new("f", &[0x3D, 0xD8, 0x00, 0xDE, 0x41, 0], 10).unwrap();
    assert_eq!(s.chars().collect::<std::string::String>(), "😀A");
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn blob(rules: &[(u16, ActionWire, [&str; 5])], default: ActionWire) -> Vec<u8> {
    let enc: Vec<[Vec<u8>; 5]> = rules.iter().map(|(_, _, s)| s.map(utf16)).collect();
    let mut total = PolicyHeader::SIZE;
    for e in &enc {
        total +=
            RuleWire::encoded_len([e[0].len(), e[1].len(), e[2].len(), e[3].len(), e[4].len()])
                .unwrap();
    }
    let mut out = vec![0u8; total];
    let mut w = Writer::new(&mut out);
    PolicyHeader {
        total_length: total as u32,
        rule_count: rules.len() as u32,
        flags: PolicyFlags::empty(),
        default_action: default,
    }
    .write(&mut w)
    .unwrap();
    for ((p, a, _), e) in rules.iter().zip(&enc) {
        RuleWire::write_raw(&mut w, *p, a, [&e[0], &e[1], &e[2], &e[3], &e[4]]).unwrap();
    }
    out
}

const PASS: ActionWire = ActionWire {
    mode: 0,
    method: 0,
    flush_flags: FlushFlags::empty(),
    upgrade_flags: FlushFlags::empty(),
    action_flags: ActionFlags::empty(),
    audit_mode: 0,
    max_batch: 0,
    max_batch_wait_us: 0,
};
const WT: ActionWire = ActionWire { mode: 2, ..PASS };

fn sample_blob() -> Vec<u8> {
    blob(
        &[
            (1, WT, ["db", "\\\\fs1\\data", "**/*.db", "", "db|mdf"]),
            (0, PASS, ["rest", "", "", "", ""]),
        ],
        PASS,
    )
}

#[test]
fn policy_blob_parses() {
    let b = sample_blob();
    let p = PolicyBlob::parse(&b).unwrap();
    assert_eq!(p.header.rule_count, 2);
    let rules: Vec<_> = p.rules().map(Result::unwrap).collect();
    assert_eq!(rules[0].provider, 1);
    assert_eq!(rules[0].name.chars().collect::<std::string::String>(), "db");
    assert_eq!(
        rules[0].extensions.chars().collect::<std::string::String>(),
        "db|mdf"
    );
    assert_eq!(rules[1].action, PASS);
    // golden header prefix
    assert_eq!(&b[..4], b"FGPL");
    assert_eq!(b[4..6], [1, 0]);
    assert_eq!(b[8..12], (b.len() as u32).to_le_bytes());
    assert_eq!(b.len() % 4, 0);
}

#[test]
fn policy_blob_bad_input_classes() {
    let good = sample_blob();
    let e = |b: &[u8]| PolicyBlob::parse(b).unwrap_err();
    assert!(matches!(e(&good[..39]), DecodeError::TooShort { .. }));
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(e(&b).ntstatus(), NtStatus::REVISION_MISMATCH);
    let mut b = good.clone();
    b[4] = 2;
    assert!(matches!(e(&b), DecodeError::UnknownVersion { .. }));
    let mut b = good.clone();
    b[6] = 1;
    assert_eq!(
        e(&b),
        DecodeError::NonZeroReserved {
            field: "PolicyHeader.reserved0"
        }
    );
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    assert!(matches!(e(&b), DecodeError::LengthMismatch { .. }));
    // declared length fixed up but trailing bytes after the rules
    let n = b.len() as u32;
    b[8..12].copy_from_slice(&n.to_le_bytes());
    assert_eq!(e(&b).ntstatus(), NtStatus::INFO_LENGTH_MISMATCH);
    // rule count above the limit
    let mut b = good.clone();
    b[12..16].copy_from_slice(&(MAX_RULES + 1).to_le_bytes());
    assert_eq!(e(&b).ntstatus(), NtStatus::IMPLEMENTATION_LIMIT);
    // rule count larger than the rules present
    let mut b = good.clone();
    b[12..16].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(e(&b), DecodeError::TooShort { .. }));
    // undefined policy flags
    let mut b = good.clone();
    b[16] = 0x80;
    assert_eq!(e(&b).ntstatus(), NtStatus::NOT_SUPPORTED);
    // undefined mode value
    let mut b = good.clone();
    b[24] = 9;
    assert_eq!(
        e(&b),
        DecodeError::BadValue {
            field: "Action.mode",
            value: 9
        }
    );
    // contradictory: two flush types
    let multi = ActionWire {
        mode: 3,
        flush_flags: FlushFlags::from_bits_retain(3),
        ..PASS
    };
    let mut w = [0u8; 16];
    multi.write(&mut Writer::new(&mut w)).unwrap();
    let mut b = good.clone();
    b[24..40].copy_from_slice(&w);
    assert_eq!(
        e(&b),
        DecodeError::Contradictory(Contradiction::MultipleFlushTypes)
    );
    assert_eq!(e(&b).ntstatus(), NtStatus::INVALID_PARAMETER_MIX);
    // contradictory: purge with native
    let purge = ActionWire {
        mode: 3,
        method: 1,
        flush_flags: FlushFlags::FLUSH_AND_PURGE,
        ..PASS
    };
    purge.write(&mut Writer::new(&mut w)).unwrap();
    let mut b = good.clone();
    b[24..40].copy_from_slice(&w);
    assert_eq!(
        e(&b),
        DecodeError::Contradictory(Contradiction::PurgeWithNativeMethod)
    );
    // group-commit: options travel in the former reserved u32 @12 of the action
    let with_action = |a: ActionWire| {
        let mut w = [0u8; 16];
        a.write(&mut Writer::new(&mut w)).unwrap();
        let mut b = good.clone();
        b[24..40].copy_from_slice(&w);
        b
    };
    let group = ActionWire {
        mode: 5,
        max_batch: 64,
        max_batch_wait_us: 250,
        ..PASS
    };
    let b = with_action(group);
    assert_eq!(&b[36..40], &[64, 0, 250, 0]);
    assert_eq!(PolicyBlob::parse(&b).unwrap().header.default_action, group);
    for (a, want) in [
        (
            ActionWire {
                max_batch: 0,
                ..group
            },
            DecodeError::BadValue {
                field: "Action.max_batch",
                value: 0,
            },
        ),
        (
            ActionWire {
                max_batch: 4097,
                ..group
            },
            DecodeError::BadValue {
                field: "Action.max_batch",
                value: 4097,
            },
        ),
        (
            ActionWire {
                max_batch_wait_us: 50_001,
                ..group
            },
            DecodeError::BadValue {
                field: "Action.max_batch_wait_us",
                value: 50_001,
            },
        ),
        (
            ActionWire { mode: 3, ..group },
            DecodeError::Contradictory(Contradiction::GroupOptionsOutsideGroupCommit),
        ),
        (
            ActionWire { mode: 6, ..PASS },
            DecodeError::BadValue {
                field: "Action.mode",
                value: 6,
            },
        ),
    ] {
        assert_eq!(e(&with_action(a)), want, "{a:?}");
    }
    // an audit of group-commit carries the options
    let audited = ActionWire {
        mode: 1,
        audit_mode: 5,
        ..group
    };
    assert_eq!(
        PolicyBlob::parse(&with_action(audited))
            .unwrap()
            .header
            .default_action,
        audited
    );
    // rule_length overflow / inconsistency: first rule's length field
    let mut b = good.clone();
    b[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        e(&b),
        DecodeError::BadValue { .. } | DecodeError::TooShort { .. }
    ));
    // string length inconsistent with rule_length
    let mut b = good.clone();
    b[64] += 4; // name_bytes of rule 0 (beyond what padding absorbs)
    assert!(matches!(e(&b), DecodeError::LengthMismatch { .. }));
    // odd UTF-16 length
    let odd = blob(&[(0, PASS, ["ab", "", "", "", ""])], PASS);
    let mut b = odd.clone();
    b[64] = 3; // name_bytes 4 -> 3, so padding absorbs it
    assert_eq!(
        e(&b),
        DecodeError::Utf16 {
            field: "rule.name",
            problem: Utf16Problem::OddLength
        }
    );
    // embedded NUL
    let nul = blob(&[(0, PASS, ["a\0", "", "", "", ""])], PASS);
    assert_eq!(
        PolicyBlob::parse(&nul).unwrap_err().ntstatus(),
        NtStatus::OBJECT_NAME_INVALID
    );
    // too long
    let long_name: std::string::String = "n".repeat(65);
    let long = blob(&[(0, PASS, [&long_name, "", "", "", ""])], PASS);
    assert_eq!(
        PolicyBlob::parse(&long).unwrap_err().ntstatus(),
        NtStatus::NAME_TOO_LONG
    );
    // non-zero padding
    let pad = blob(&[(0, PASS, ["a", "", "", "", ""])], PASS);
    let mut b = pad.clone();
    let last = b.len() - 1;
    b[last] = 1;
    assert_eq!(
        e(&b),
        DecodeError::NonZeroReserved {
            field: "Rule.padding"
        }
    );
}

#[test]
fn events_and_stats_layouts_round_trip() {
    let mut ev = EventRecord::new(EventKind::FlushFailed, NtStatus::FILE_CLOSED, 7, 1234);
    ev.seq = 5;
    ev.time = 0x01DB_0000_0000_0000;
    ev.set_name("\\\\fs1\\data\\a-very-long-directory-name\\another-long-directory\\file-name-that-is-long.db");
    assert_eq!(ev.name_units as usize, events::EVENT_NAME_UNITS);
    assert!(ev.flags & events::EVENT_FLAG_NAME_TRUNCATED != 0);
    let mut buf = [0u8; EventRecord::SIZE];
    ev.write(&mut Writer::new(&mut buf)).unwrap();
    assert_eq!(EventRecord::read(&mut Reader::new(&buf)), Ok(ev));
    assert!(ev
        .name_chars()
        .collect::<std::string::String>()
        .ends_with("long.db"));
    let h = EventsReplyHeader {
        next_seq: 9,
        dropped: 2,
        count: 1,
    };
    let mut hb = [0u8; EventsReplyHeader::SIZE];
    h.write(&mut Writer::new(&mut hb)).unwrap();
    assert_eq!(EventsReplyHeader::read(&mut Reader::new(&hb)), Ok(h));
    let s = StatsReplyHeader {
        generation: 3,
        total_rules: 10,
        first_rule: 2,
        returned_rules: 4,
        callback_counters: 0,
    };
    let mut sb = [0u8; StatsReplyHeader::SIZE];
    s.write(&mut Writer::new(&mut sb)).unwrap();
    assert_eq!(StatsReplyHeader::read(&mut Reader::new(&sb)), Ok(s));
    let v = VersionInfo {
        protocol_version: 1,
        major: 0,
        minor: 1,
        patch: 2,
        capabilities: Capabilities::FLT_FLUSH_BUFFERS2,
    };
    let mut b = [0u8; VersionInfo::SIZE];
    v.write(&mut Writer::new(&mut b)).unwrap();
    assert_eq!(VersionInfo::decode(&b), Ok(v));
    let si = StatusInfo {
        generation: 4,
        rule_count: 2,
        flags: StatusFlags::POLICY_LOADED,
        instances: 1,
        next_event_seq: 3,
        events_dropped: 0,
    };
    let mut b = [0u8; StatusInfo::SIZE];
    si.write(&mut Writer::new(&mut b)).unwrap();
    assert_eq!(StatusInfo::decode(&b), Ok(si));
    let sp = SetPolicyResult {
        generation: 2,
        rule_count: 1,
        persist: true,
    };
    let mut b = [0u8; SetPolicyResult::SIZE];
    sp.write(&mut Writer::new(&mut b)).unwrap();
    assert_eq!(SetPolicyResult::decode(&b), Ok(sp));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = RequestHeader::decode(&bytes);
        let _ = ReplyHeader::decode(&bytes);
        let _ = ConnectContext::decode(&bytes);
        let _ = StatsRequest::decode(&bytes);
        let _ = EventsRequest::decode(&bytes);
        let _ = VersionInfo::decode(&bytes);
        let _ = StatusInfo::decode(&bytes);
        if let Ok(p) = PolicyBlob::parse(&bytes) {
            for r in p.rules() { let _ = r; }
        }
        let _ = EventRecord::read(&mut Reader::new(&bytes));
        let _ = StatsReplyHeader::read(&mut Reader::new(&bytes));
    }

    #[test]
    fn mutated_policy_blob_never_panics(idx in 0usize..200, val in any::<u8>()) {
        let mut b = sample_blob();
        let i = idx % b.len();
        b[i] = val;
        if let Ok(p) = PolicyBlob::parse(&b) {
            prop_assert_eq!(p.rules().filter(Result::is_ok).count() as u32, p.header.rule_count);
        }
    }

    #[test]
    fn request_round_trip(code in 0u16..7, persist in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let cmd = Command::from_code(code).unwrap();
        let flags = if persist { cmd.allowed_flags() } else { RequestFlags::empty() };
        let body = match cmd.fixed_body_len() { Some(n) => vec![0u8; n], None => body };
        let r = req(cmd, flags, &body);
        let (h, b) = RequestHeader::decode(&r).unwrap();
        prop_assert_eq!(h.command, cmd);
        prop_assert_eq!(h.flags, flags);
        prop_assert_eq!(b, &body[..]);
    }
}

/// GetStats reply header, golden bytes: without the callback section bytes 32..40
/// are zero (the version-1 layout, where they were one reserved u64); with it the
/// count sits at 32 and 36..40 stay reserved.
#[test]
fn golden_stats_reply_header() {
    use crate::stats::CALLBACK_COUNTER_COUNT;
    let mut h = StatsReplyHeader {
        generation: 0x0102_0304_0506_0708,
        total_rules: 5,
        first_rule: 1,
        returned_rules: 2,
        callback_counters: 0,
    };
    let mut b = [0u8; StatsReplyHeader::SIZE];
    h.write(&mut Writer::new(&mut b)).unwrap();
    #[rustfmt::skip]
    let v1: [u8; 40] = [
        8, 7, 6, 5, 4, 3, 2, 1,   // generation
        5, 0, 0, 0, 1, 0, 0, 0,   // total_rules, first_rule
        2, 0, 0, 0, 21, 0, 0, 0,  // returned_rules, counter_count (18 before group-commit)
        32, 0, 0, 0, 10, 0, 0, 0, // histogram_buckets, status_slots
        0, 0, 0, 0, 0, 0, 0, 0,   // callback_counter_count = 0, reserved
    ];
    assert_eq!(b, v1);
    h.callback_counters = CALLBACK_COUNTER_COUNT as u32;
    h.write(&mut Writer::new(&mut b)).unwrap();
    assert_eq!(b[..32], v1[..32]);
    assert_eq!(b[32..], [44, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(StatsReplyHeader::read(&mut Reader::new(&b)), Ok(h));
    assert_eq!(
        h.announced_body_len(),
        Some(40 + 2 * 21 * 8 + 3 * 32 * 8 + 10 * 16 + 44 * 8 + 2 * 21 * 8)
    );
    // A count other than 0 or CALLBACK_COUNTER_COUNT, or a non-zero reserved field.
    let mut bad = b;
    bad[32] = 32;
    assert_eq!(
        StatsReplyHeader::read(&mut Reader::new(&bad)),
        Err(DecodeError::BadValue {
            field: "StatsReplyHeader.callback_counter_count",
            value: 32
        })
    );
    let mut bad = b;
    bad[39] = 1;
    assert_eq!(
        StatsReplyHeader::read(&mut Reader::new(&bad)),
        Err(DecodeError::NonZeroReserved {
            field: "StatsReplyHeader.reserved"
        })
    );
}

/// `CALLBACK_COUNTERS` is a GetStats flag only.
#[test]
fn callback_counters_flag_only_for_get_stats() {
    let body = [0u8; StatsRequest::SIZE];
    let mut out = [0u8; 64];
    let n = encode_request(
        Command::GetStats,
        RequestFlags::CALLBACK_COUNTERS,
        &body,
        &mut out,
    )
    .unwrap();
    let (h, _) = RequestHeader::decode(&out[..n]).unwrap();
    assert_eq!(h.flags, RequestFlags::CALLBACK_COUNTERS);
    let n = encode_request(
        Command::GetStatus,
        RequestFlags::CALLBACK_COUNTERS,
        &[],
        &mut out,
    )
    .unwrap();
    assert!(matches!(
        RequestHeader::decode(&out[..n]),
        Err(DecodeError::UndefinedFlags {
            field: "RequestHeader.flags",
            ..
        })
    ));
}
