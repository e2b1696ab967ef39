//! Port handler: every command, every bad-input class with unchanged state,
//! all-or-nothing SetPolicy, event ring, no panics.
#![allow(missing_docs)]

mod common;

use flushguard_engine::protocol::codec::{Reader, Writer};
use flushguard_engine::protocol::events::{
    EventKind, EventRecord, EventsReplyHeader, EVENT_FLAG_PERSISTED,
};
use flushguard_engine::protocol::message::encode_request;
use flushguard_engine::protocol::stats::{Counter, FAILURE_STATUSES, STATUS_SLOTS};
use flushguard_engine::protocol::{
    Capabilities, Command, EventsRequest, NtStatus, ReplyHeader, RequestFlags, SetPolicyResult,
    StatusFlags, StatusInfo, VersionInfo, MAX_MESSAGE_BYTES,
};
use flushguard_engine::{handle, handle_at, handle_vec, FlushMethod, Policy, State, StatsSnapshot};
use proptest::prelude::*;

fn clock() -> u64 {
    0x01DC_0000_0000_0000
}

fn state() -> State {
    State::with_event_capacity(clock, (1, 2, 3), 8)
}

fn req(cmd: Command, flags: RequestFlags, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 16 + body.len()];
    let n = encode_request(cmd, flags, body, &mut out).unwrap();
    out.truncate(n);
    out
}

fn body<const N: usize>(f: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut b = vec![0u8; N];
    f(&mut Writer::new(&mut b));
    b
}

fn ok(st: &State, r: &[u8]) -> Vec<u8> {
    let (reply, _) = handle_vec(st, r).unwrap();
    let (h, b) = ReplyHeader::decode(&reply).unwrap();
    assert_eq!(h.status, NtStatus::SUCCESS);
    b.to_vec()
}

fn sample_policy() -> Vec<u8> {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/sql-server.toml"
    ))
    .unwrap();
    Policy::from_toml_str(&src).unwrap().encode().unwrap()
}

/// Everything observable about the state.
#[derive(Debug, PartialEq)]
struct Observed {
    status: StatusInfo,
    blob: Vec<u8>,
    stats: StatsSnapshot,
}

fn observe(st: &State) -> Observed {
    let status = st.policy();
    let (next, dropped) = st.events().state();
    Observed {
        status: StatusInfo {
            generation: status.generation(),
            rule_count: status.rule_count() as u32,
            flags: StatusFlags::empty(),
            instances: 0,
            next_event_seq: next,
            events_dropped: dropped,
        },
        blob: status.blob().to_vec(),
        stats: st.snapshot(0, u32::MAX).expect("host allocation"),
    }
}

#[test]
fn get_version_and_status() {
    let st = state();
    st.set_capabilities(Capabilities::FLT_FLUSH_BUFFERS2);
    st.set_instances(2);
    let v = VersionInfo::decode(&ok(
        &st,
        &req(Command::GetVersion, RequestFlags::empty(), &[]),
    ))
    .unwrap();
    assert_eq!(
        (v.protocol_version, v.major, v.minor, v.patch),
        (1, 1, 2, 3)
    );
    assert_eq!(v.capabilities, Capabilities::FLT_FLUSH_BUFFERS2);
    let s = StatusInfo::decode(&ok(
        &st,
        &req(Command::GetStatus, RequestFlags::empty(), &[]),
    ))
    .unwrap();
    assert_eq!(s.generation, 0);
    assert_eq!(s.rule_count, 0);
    assert_eq!(s.instances, 2);
    assert!(!s.flags.contains(StatusFlags::POLICY_LOADED));
}

#[test]
fn set_policy_then_get_policy_returns_the_same_bytes() {
    let st = state();
    let blob = sample_policy();
    let r = req(Command::SetPolicy, RequestFlags::PERSIST, &blob);
    let mut reply = vec![0u8; 64];
    let out = handle(&st, &r, &mut reply).unwrap();
    assert_eq!(out.reply_len, 32);
    let persisted = out.persist.expect("persist requested");
    assert_eq!(persisted.blob(), &blob[..]);
    let res = SetPolicyResult::decode(&reply[16..32]).unwrap();
    assert_eq!(
        res,
        SetPolicyResult {
            generation: 1,
            rule_count: 3,
            persist: true
        }
    );
    assert_eq!(
        ok(&st, &req(Command::GetPolicy, RequestFlags::empty(), &[])),
        blob
    );
    let s = StatusInfo::decode(&ok(
        &st,
        &req(Command::GetStatus, RequestFlags::empty(), &[]),
    ))
    .unwrap();
    assert_eq!(s.generation, 1);
    assert!(s.flags.contains(StatusFlags::POLICY_LOADED));
    // Without PERSIST nothing is to be stored; the generation advances.
    let (_, persist) =
        handle_vec(&st, &req(Command::SetPolicy, RequestFlags::empty(), &blob)).unwrap();
    assert!(persist.is_none());
    assert_eq!(st.policy().generation(), 2);
    let (evs, _) = {
        let (h, e) = st.events().read(0, 10);
        (e, h)
    };
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].kind, EventKind::PolicyChanged);
    assert_eq!(evs[0].flags & EVENT_FLAG_PERSISTED, EVENT_FLAG_PERSISTED);
    assert_eq!((evs[1].generation, evs[1].value), (2, 3));
}

/// Every bad-input class of DESIGN §4 through `handle`: specific status and no
/// state change (policy, generation, counters, events).
#[test]
fn bad_inputs_change_nothing() {
    let st = state();
    let blob = sample_policy();
    handle_vec(&st, &req(Command::SetPolicy, RequestFlags::empty(), &blob)).unwrap();
    // Some traffic so counters are non-zero.
    let p = st.policy();
    st.stats().add(p.counters(Some(0)), Counter::WritesSeen, 5);
    st.record_flush(
        &p,
        Some(1),
        FlushMethod::Filter,
        NtStatus::FILE_CLOSED,
        300,
        "\\\\fs1\\sql\\x.ndf",
    );
    drop(p);
    let before = observe(&st);

    let good = req(Command::GetStatus, RequestFlags::empty(), &[]);
    let mut cases: Vec<(&str, Vec<u8>, NtStatus)> = Vec::new();
    cases.push((
        "short buffer",
        good[..10].to_vec(),
        NtStatus::INVALID_BUFFER_SIZE,
    ));
    cases.push((
        "oversized buffer",
        vec![0u8; MAX_MESSAGE_BYTES as usize + 1],
        NtStatus::INVALID_BUFFER_SIZE,
    ));
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    cases.push((
        "declared length != buffer length",
        b,
        NtStatus::INFO_LENGTH_MISMATCH,
    ));
    let mut b = good.clone();
    b[0] = 2;
    cases.push(("unknown version", b, NtStatus::REVISION_MISMATCH));
    let mut b = good.clone();
    b[4] = 0x40;
    cases.push(("unknown command", b, NtStatus::INVALID_DEVICE_REQUEST));
    let mut b = good.clone();
    b[12] = 1;
    cases.push(("non-zero reserved", b, NtStatus::INVALID_PARAMETER));
    cases.push((
        "undefined flag bits",
        req(Command::ResetStats, RequestFlags::PERSIST, &[]),
        NtStatus::NOT_SUPPORTED,
    ));
    let over = body::<8>(|w| {
        w.u32(u32::MAX).unwrap();
        w.u32(2).unwrap();
    });
    cases.push((
        "integer overflow",
        req(Command::GetStats, RequestFlags::empty(), &over),
        NtStatus::INTEGER_OVERFLOW,
    ));
    let ev0 = body::<16>(|w| {
        w.u64(0).unwrap();
        w.u32(0).unwrap();
    });
    cases.push((
        "zero max_events",
        req(Command::GetEvents, RequestFlags::empty(), &ev0),
        NtStatus::IMPLEMENTATION_LIMIT,
    ));
    // Policy blobs: odd UTF-16 length, embedded NUL, too long, contradictory, bad name.
    let odd = {
        let mut b = blob.clone();
        b[40 + 24] = b[40 + 24].wrapping_sub(1); // rule 0 name_bytes: even -> odd
        b
    };
    cases.push((
        "odd UTF-16 length",
        req(Command::SetPolicy, RequestFlags::empty(), &odd),
        NtStatus::OBJECT_NAME_INVALID,
    ));
    let with_name = |name: &str| {
        let mut p = Policy::decode(&blob).unwrap();
        p.rules[0].name = name.into();
        p
    };
    let nul = {
        // encode() refuses a NUL, so patch one into the blob.
        let mut b = with_name("ab").encode().unwrap();
        let at = 40 + 36 + 2; // second UTF-16 unit of rule 0's name
        b[at] = 0;
        b[at + 1] = 0;
        b
    };
    cases.push((
        "embedded NUL",
        req(Command::SetPolicy, RequestFlags::empty(), &nul),
        NtStatus::OBJECT_NAME_INVALID,
    ));
    let long = {
        // A 64-unit name (the limit) grown by one unit taken from the share, so
        // every length stays consistent and only the name limit is exceeded.
        let mut b = with_name(&"y".repeat(64)).encode().unwrap();
        let (name_at, share_at) = (40 + 24, 40 + 26);
        let name = u16::from_le_bytes([b[name_at], b[name_at + 1]]) + 2;
        let share = u16::from_le_bytes([b[share_at], b[share_at + 1]]) - 2;
        b[name_at..name_at + 2].copy_from_slice(&name.to_le_bytes());
        b[share_at..share_at + 2].copy_from_slice(&share.to_le_bytes());
        b
    };
    cases.push((
        "UTF-16 too long",
        req(Command::SetPolicy, RequestFlags::empty(), &long),
        NtStatus::NAME_TOO_LONG,
    ));
    let contradictory = {
        let mut b = blob.clone();
        // rule 0 action: method native (1) + flush-and-purge (0x0008).
        b[40 + 8 + 2] = 1;
        b[40 + 8 + 4] = 0x08;
        b
    };
    cases.push((
        "contradictory policy",
        req(Command::SetPolicy, RequestFlags::PERSIST, &contradictory),
        NtStatus::INVALID_PARAMETER_MIX,
    ));
    let dup = {
        let mut p = Policy::decode(&blob).unwrap();
        p.rules[0].name = "aaaa".into();
        p.rules[1].name = "aaab".into();
        let mut b = p.encode().unwrap();
        let needle: Vec<u8> = "aaab".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let at = b.windows(needle.len()).position(|w| w == needle).unwrap();
        b[at + 6] = b'a';
        b
    };
    cases.push((
        "duplicate rule name",
        req(Command::SetPolicy, RequestFlags::empty(), &dup),
        NtStatus::INVALID_PARAMETER_MIX,
    ));
    let bad_share = {
        let needle: Vec<u8> = "\\\\fs1\\sql"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut b = blob.clone();
        let at = b.windows(needle.len()).position(|w| w == needle).unwrap();
        b[at..at + 4].copy_from_slice(&[b'C', 0, b':', 0]);
        b
    };
    cases.push((
        "not a share",
        req(Command::SetPolicy, RequestFlags::empty(), &bad_share),
        NtStatus::OBJECT_NAME_INVALID,
    ));
    let mut trunc = blob.clone();
    trunc.truncate(blob.len() - 4);
    cases.push((
        "policy shorter than declared",
        req(Command::SetPolicy, RequestFlags::empty(), &trunc),
        NtStatus::INFO_LENGTH_MISMATCH,
    ));

    for (what, r, status) in cases {
        let mut reply = vec![0xEEu8; 4096];
        let e = handle(&st, &r, &mut reply).unwrap_err();
        assert_eq!(e, status, "{what}");
        assert_eq!(observe(&st), before, "{what}: state changed");
    }

    // Too-small and misaligned output buffers.
    let r = req(Command::GetPolicy, RequestFlags::empty(), &[]);
    let mut small = vec![0u8; 16 + blob.len() - 1];
    assert_eq!(
        handle(&st, &r, &mut small).unwrap_err(),
        NtStatus::BUFFER_TOO_SMALL
    );
    let mut tiny = vec![0u8; 8];
    assert_eq!(
        handle(
            &st,
            &req(Command::GetVersion, RequestFlags::empty(), &[]),
            &mut tiny
        )
        .unwrap_err(),
        NtStatus::BUFFER_TOO_SMALL
    );
    let r = req(Command::SetPolicy, RequestFlags::empty(), &blob);
    let mut small = vec![0u8; 20];
    assert_eq!(
        handle(&st, &r, &mut small).unwrap_err(),
        NtStatus::BUFFER_TOO_SMALL
    );
    let mut reply = vec![0u8; 4096];
    assert_eq!(
        handle_at(&st, &r, &mut reply, 0x1000_0004).unwrap_err(),
        NtStatus::DATATYPE_MISALIGNMENT
    );
    assert_eq!(observe(&st), before, "output-buffer errors changed state");
    // And a good request on an aligned buffer still works.
    handle_at(
        &st,
        &req(Command::GetStatus, RequestFlags::empty(), &[]),
        &mut reply,
        0x1000_0008,
    )
    .unwrap();
}

#[test]
fn stats_snapshot_and_reset() {
    let st = state();
    handle_vec(
        &st,
        &req(Command::SetPolicy, RequestFlags::empty(), &sample_policy()),
    )
    .unwrap();
    let p = st.policy();
    st.stats()
        .add(p.counters(Some(2)), Counter::WritesGoverned, 3);
    st.stats().add(p.counters(None), Counter::WritesSeen, 1);
    st.record_flush(&p, Some(2), FlushMethod::Native, NtStatus::SUCCESS, 0, "a");
    st.record_flush(
        &p,
        Some(2),
        FlushMethod::Filter,
        NtStatus::INSUFFICIENT_RESOURCES,
        1500,
        "b",
    );
    st.record_flush(
        &p,
        None,
        FlushMethod::Filter,
        NtStatus::IO_TIMEOUT,
        3_000_000,
        "c",
    );
    // A handle without write access: not flushed, permanently (issue 9 finding 7).
    st.record_flush(
        &p,
        None,
        FlushMethod::Native,
        NtStatus::ACCESS_DENIED,
        10,
        "d",
    );
    drop(p);
    let sr = body::<8>(|w| {
        w.u32(1).unwrap();
        w.u32(10).unwrap();
    });
    let snap = StatsSnapshot::decode(&ok(
        &st,
        &req(Command::GetStats, RequestFlags::empty(), &sr),
    ))
    .unwrap();
    assert_eq!(
        (
            snap.generation,
            snap.total_rules,
            snap.first_rule,
            snap.rules.len()
        ),
        (1, 3, 1, 2)
    );
    assert_eq!(snap.global(Counter::WritesGoverned), 3);
    assert_eq!(snap.global(Counter::FlushesNative), 2);
    assert_eq!(snap.global(Counter::FlushesFilter), 2);
    assert_eq!(snap.global(Counter::FlushFailures), 3);
    assert_eq!(snap.global(Counter::FlushFailuresRetryable), 2);
    assert_eq!(snap.global(Counter::FlushFailuresPermanent), 1);
    assert_eq!(
        snap.default_rule[Counter::FlushFailuresPermanent as usize],
        1
    );
    assert_eq!(
        snap.rules[1][Counter::WritesGoverned as usize],
        3,
        "rule 2 is rules[1] when first_rule = 1"
    );
    assert_eq!(snap.rules[1][Counter::FlushFailures as usize], 1);
    assert_eq!(snap.default_rule[Counter::WritesSeen as usize], 1);
    assert_eq!(snap.latency[0], 1);
    assert_eq!(snap.latency[11], 1, "1500 us is in [1024, 2048)");
    assert_eq!(snap.latency[22], 1, "3 s is in [2^21, 2^22) us");
    assert_eq!(snap.failures[0], (NtStatus::INSUFFICIENT_RESOURCES, 1));
    assert_eq!(
        snap.failures[STATUS_SLOTS - 1],
        (NtStatus::SUCCESS, 1),
        "IO_TIMEOUT counts as other"
    );
    assert_eq!(snap.failures.len(), FAILURE_STATUSES.len() + 1);
    // Flush failures produced events with names.
    let evb = body::<16>(|w| {
        w.u64(0).unwrap();
        w.u32(10).unwrap();
    });
    let evs = ok(&st, &req(Command::GetEvents, RequestFlags::empty(), &evb));
    let mut r = Reader::new(&evs);
    let h = EventsReplyHeader::read(&mut r).unwrap();
    assert_eq!(h.count, 4);
    let kinds: Vec<_> = (0..h.count)
        .map(|_| EventRecord::read(&mut r).unwrap())
        .collect();
    assert_eq!(kinds[1].kind, EventKind::FlushFailed);
    assert_eq!(kinds[1].status, NtStatus::INSUFFICIENT_RESOURCES);
    assert_eq!(kinds[1].rule, 2);
    assert_eq!(kinds[1].name_chars().collect::<String>(), "b");
    assert_eq!(kinds[3].status, NtStatus::ACCESS_DENIED);
    // Reset.
    ok(&st, &req(Command::ResetStats, RequestFlags::empty(), &[]));
    let snap = StatsSnapshot::decode(&ok(
        &st,
        &req(Command::GetStats, RequestFlags::empty(), &sr),
    ))
    .unwrap();
    assert!(snap.global.iter().all(|&v| v == 0) && snap.latency.iter().all(|&v| v == 0));
    assert!(snap.rules.iter().flatten().all(|&v| v == 0));
    // Stats window past the end is empty, not an error.
    let past = body::<8>(|w| {
        w.u32(100).unwrap();
        w.u32(10).unwrap();
    });
    let snap = StatsSnapshot::decode(&ok(
        &st,
        &req(Command::GetStats, RequestFlags::empty(), &past),
    ))
    .unwrap();
    assert!(snap.rules.is_empty());
}

#[test]
fn event_ring_is_bounded_and_counts_drops() {
    let st = state(); // capacity 8
    let p = st.policy();
    for i in 0..5 {
        st.record_flush(
            &p,
            None,
            FlushMethod::Filter,
            NtStatus::VOLUME_DISMOUNTED,
            i,
            "f",
        );
    }
    let (h, evs) = st.events().read(0, 100);
    assert_eq!((h.count, h.next_seq, h.dropped), (5, 6, 0));
    assert_eq!(
        evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // 5 read; 10 more: 15 total, ring keeps 8 (8..=15); 6 and 7 were never read.
    for i in 0..10 {
        st.record_flush(
            &p,
            None,
            FlushMethod::Filter,
            NtStatus::VOLUME_DISMOUNTED,
            i,
            "f",
        );
    }
    let (h, evs) = st.events().read(5, 100);
    assert_eq!(h.dropped, 2);
    assert_eq!(evs.first().map(|e| e.seq), Some(8));
    assert_eq!(evs.len(), 8);
    // A small reply buffer returns fewer events; the rest come next time.
    let rq = EventsRequest {
        after_seq: 0,
        max_events: 100,
    };
    let mut b = [0u8; 16];
    rq.write(&mut Writer::new(&mut b)).unwrap();
    let r = req(Command::GetEvents, RequestFlags::empty(), &b);
    let mut reply = vec![0u8; 16 + 24 + 2 * 176 + 100];
    let out = handle(&st, &r, &mut reply).unwrap();
    let (_, body) = ReplyHeader::decode(&reply[..out.reply_len]).unwrap();
    let h = EventsReplyHeader::read(&mut Reader::new(body)).unwrap();
    assert_eq!(h.count, 2);
}

#[test]
fn registry_policy_load() {
    let st = state();
    assert_eq!(st.load_registry_policy(&sample_policy()), Ok(1));
    let s = StatusInfo::decode(&ok(
        &st,
        &req(Command::GetStatus, RequestFlags::empty(), &[]),
    ))
    .unwrap();
    assert!(s
        .flags
        .contains(StatusFlags::FROM_REGISTRY | StatusFlags::POLICY_LOADED));
    let st = state();
    let e = st.load_registry_policy(&[1, 2, 3]).unwrap_err();
    assert_eq!(e.ntstatus(), NtStatus::INVALID_BUFFER_SIZE);
    assert_eq!(st.policy().generation(), 0);
    let (_, evs) = st.events().read(0, 10);
    assert_eq!(evs[0].kind, EventKind::RegistryPolicyRejected);
    assert_eq!(evs[0].status, NtStatus::INVALID_BUFFER_SIZE);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn handle_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), cap in 0usize..1024) {
        let st = state();
        let mut reply = vec![0u8; cap];
        let _ = handle(&st, &bytes, &mut reply);
    }

    /// A request with a valid header and random body never panics, and any
    /// failure leaves the state as it was.
    #[test]
    fn handle_structured_never_panics(code in 0u16..7, flags in 0u16..2, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let st = state();
        handle_vec(&st, &req(Command::SetPolicy, RequestFlags::empty(), &sample_policy())).unwrap();
        let before = observe(&st);
        let r = req(Command::from_code(code).unwrap(), RequestFlags::from_bits_retain(flags), &body);
        if handle_vec(&st, &r).is_err() {
            prop_assert_eq!(observe(&st), before);
        }
    }

    #[test]
    fn set_policy_round_trip(p in common::policy(10)) {
        let st = state();
        let blob = p.encode().unwrap();
        handle_vec(&st, &req(Command::SetPolicy, RequestFlags::empty(), &blob)).unwrap();
        let got = ok(&st, &req(Command::GetPolicy, RequestFlags::empty(), &[]));
        prop_assert_eq!(&got, &blob);
        prop_assert_eq!(Policy::decode(&got).unwrap(), p);
    }
}

#[test]
fn get_stats_callback_section_is_opt_in_and_sized() {
    use flushguard_engine::callbacks::Counter as Cb;
    use flushguard_engine::protocol::stats::{StatsReplyHeader, CALLBACK_COUNTER_COUNT};
    let st = state();
    st.callback_counters().bump(Cb::NameQueryFailed);
    st.callback_counters().bump(Cb::NameQueryFailed);
    st.callback_counters().bump(Cb::PolicyAboveApcLevel);
    let sr = body::<8>(|w| {
        w.u32(0).unwrap();
        w.u32(10).unwrap();
    });
    let with = req(Command::GetStats, RequestFlags::CALLBACK_COUNTERS, &sr);
    let b = ok(&st, &with);
    let snap = StatsSnapshot::decode(&b).unwrap();
    assert_eq!(snap.callback(Cb::NameQueryFailed), Some(2));
    assert_eq!(snap.callback(Cb::PolicyAboveApcLevel), Some(1));
    assert_eq!(snap.callback(Cb::FlushOk), Some(0));
    assert_eq!(
        b.len(),
        StatsReplyHeader::body_len_with(0, CALLBACK_COUNTER_COUNT as u32).unwrap()
    );
    // Re-encoding the decoded snapshot gives the same bytes.
    let mut again = vec![0u8; snap.encoded_len().unwrap()];
    snap.write(&mut Writer::new(&mut again)).unwrap();
    assert_eq!(again, b);
    // The section sits after the failure slots, index = Counter order.
    let at = b.len() - CALLBACK_COUNTER_COUNT * 8 + Cb::NameQueryFailed as usize * 8;
    assert_eq!(b[at..at + 8], 2u64.to_le_bytes());

    let without = ok(&st, &req(Command::GetStats, RequestFlags::empty(), &sr));
    assert_eq!(without.len(), StatsReplyHeader::body_len(0).unwrap());
    assert_eq!(
        StatsSnapshot::decode(&without)
            .unwrap()
            .callback(Cb::NameQueryFailed),
        None
    );

    // A reply buffer that holds the plain reply but not the section.
    let mut reply = vec![0u8; ReplyHeader::SIZE + without.len()];
    let before = observe(&st);
    assert_eq!(
        handle(&st, &with, &mut reply).unwrap_err(),
        NtStatus::BUFFER_TOO_SMALL
    );
    assert_eq!(observe(&st), before);
    // Truncated or extended sections are rejected.
    assert!(StatsSnapshot::decode(&b[..b.len() - 8]).is_err());
    let mut long = b.clone();
    long.extend_from_slice(&[0; 8]);
    assert!(StatsSnapshot::decode(&long).is_err());

    // ResetStats zeroes them.
    ok(&st, &req(Command::ResetStats, RequestFlags::empty(), &[]));
    assert_eq!(st.callback_counters().get(Cb::NameQueryFailed), 0);
    let snap = StatsSnapshot::decode(&ok(&st, &with)).unwrap();
    assert!(snap.callbacks.unwrap().iter().all(|&v| v == 0));
}

#[test]
fn persisted_set_policy_stores_before_it_publishes_and_a_failed_store_changes_nothing() {
    use flushguard_engine::callbacks::Counter as Cb;
    use flushguard_engine::handle_persisting;
    use flushguard_engine::protocol::events::REGISTRY_STORE;
    let st = state();
    let blob = sample_policy();
    let persist = req(Command::SetPolicy, RequestFlags::PERSIST, &blob);

    // Failing store: its status comes back, nothing else changes but the event
    // ring (one RegistryPolicyRejected) and the PolicyStoreFailed counter.
    let before = observe(&st);
    let mut calls = 0;
    let mut failing = |b: &[u8]| {
        calls += 1;
        assert_eq!(b, &blob[..], "the validated blob is stored");
        Err(NtStatus::ACCESS_DENIED)
    };
    let mut reply = vec![0u8; 64];
    assert_eq!(
        handle_persisting(&st, &persist, &mut reply, &mut failing).unwrap_err(),
        NtStatus::ACCESS_DENIED
    );
    assert_eq!(calls, 1);
    assert!(reply.iter().all(|&b| b == 0), "no reply written");
    let after = observe(&st);
    assert_eq!(after.blob, before.blob);
    assert_eq!(after.status.generation, before.status.generation);
    assert_eq!(after.status.rule_count, before.status.rule_count);
    assert_eq!(
        after.status.next_event_seq,
        before.status.next_event_seq + 1
    );
    assert_eq!(st.callback_counters().get(Cb::PolicyStoreFailed), 1);
    let (_, evs) = st.events().read(before.status.next_event_seq - 1, 8);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].kind, EventKind::RegistryPolicyRejected);
    assert_eq!(evs[0].status, NtStatus::ACCESS_DENIED);
    assert_eq!(evs[0].value, REGISTRY_STORE);
    assert_eq!(evs[0].generation, 0);

    // Invalid policy or no persist flag: the store is never called.
    let mut never = |_: &[u8]| -> Result<(), NtStatus> { panic!("store called") };
    let mut bad = blob.clone();
    bad.truncate(bad.len() - 4);
    assert!(handle_persisting(
        &st,
        &req(Command::SetPolicy, RequestFlags::PERSIST, &bad),
        &mut reply,
        &mut never
    )
    .is_err());
    let out = handle_persisting(
        &st,
        &req(Command::SetPolicy, RequestFlags::empty(), &blob),
        &mut reply,
        &mut never,
    )
    .unwrap();
    assert!(out.persist.is_none());
    assert_eq!(st.policy().generation(), 1);

    // Success: at store time the previous policy is still in force; afterwards
    // the stored one is, with the next generation and a persisted PolicyChanged.
    let st2 = state();
    let mut seen_generation = None;
    let mut ok_store = |b: &[u8]| {
        assert_eq!(b, &blob[..]);
        seen_generation = Some(st2.policy().generation());
        Ok(())
    };
    let out = handle_persisting(&st2, &persist, &mut reply, &mut ok_store).unwrap();
    assert_eq!(seen_generation, Some(0), "stored before it was published");
    assert_eq!(out.persist.unwrap().generation(), 1);
    assert_eq!(st2.policy().generation(), 1);
    let (_, evs) = st2.events().read(0, 8);
    assert_eq!(evs.last().unwrap().kind, EventKind::PolicyChanged);
    assert_ne!(evs.last().unwrap().flags & EVENT_FLAG_PERSISTED, 0);
    assert_eq!(st2.callback_counters().get(Cb::PolicyStoreFailed), 0);
}

#[test]
fn a_flush_decided_under_a_replaced_policy_counts_globally_not_per_rule() {
    let st = state();
    handle_vec(
        &st,
        &req(Command::SetPolicy, RequestFlags::empty(), &sample_policy()),
    )
    .unwrap();
    let decided = st.policy().generation() as u32;
    handle_vec(
        &st,
        &req(Command::SetPolicy, RequestFlags::empty(), &sample_policy()),
    )
    .unwrap();
    let p = st.policy();
    assert_ne!(p.generation() as u32, decided);
    st.record_flush_decided(
        &p,
        decided,
        Some(2),
        FlushMethod::Filter,
        NtStatus::IO_TIMEOUT,
        40,
        "x",
    );
    // Global: the flush and its failure; rule 2 of the active policy: nothing.
    let global = st.stats().global();
    assert_eq!(global.get(Counter::FlushesFilter), 1);
    assert_eq!(global.get(Counter::FlushFailures), 1);
    assert_eq!(p.counters(Some(2)).get(Counter::FlushesFilter), 0);
    assert_eq!(p.counters(Some(2)).get(Counter::FlushFailures), 0);
    // The event names the deciding generation and its rule.
    let (_, evs) = st.events().read(0, 100);
    let ev = evs
        .iter()
        .find(|e| e.kind == EventKind::FlushFailed)
        .expect("FlushFailed event");
    assert_eq!((ev.generation, ev.rule), (u64::from(decided), 2));
    // Under the active policy it is the rule's as always.
    st.record_flush_decided(
        &p,
        p.generation() as u32,
        Some(2),
        FlushMethod::Filter,
        NtStatus::SUCCESS,
        40,
        "x",
    );
    assert_eq!(p.counters(Some(2)).get(Counter::FlushesFilter), 1);
    assert_eq!(global.get(Counter::FlushesFilter), 2);
}
