//! The port message path through `Filter::handle_message`: the engine handler, then
//! the registry write of a persisted SetPolicy, only after it validated.

use flushguard_engine::callbacks::PolicySource;
use flushguard_engine::policy::{FlushMethod, Mode};
use flushguard_protocol::{FlushFlags, NtStatus};
use flushguard_tests::fake::{CallSite, FakeOptions};
use flushguard_tests::harness::Harness;
use flushguard_tests::scenario::{action, policy_blob};
use flushguard_tests::{
    port_request_get_stats, port_request_get_version, port_request_reset_stats,
    port_request_set_policy,
};

fn reply() -> Vec<u8> {
    vec![0u8; 4096]
}

#[test]
fn get_version_answers() {
    let h = Harness::new(FakeOptions::default());
    let mut out = reply();
    let n = h
        .message(&port_request_get_version(), &mut out)
        .expect("port open")
        .expect("GetVersion succeeds");
    assert!(n > 0);
    h.unload();
    h.assert_clean();
}

#[test]
fn persisted_set_policy_reaches_the_registry_and_survives_a_reload() {
    let h = Harness::new(FakeOptions::default());
    assert_eq!(h.source, PolicySource::Absent);
    let blob = policy_blob(action(
        Mode::FlushAfterWrite,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    ));
    let mut out = reply();
    h.message(&port_request_set_policy(&blob, true), &mut out)
        .expect("port open")
        .expect("SetPolicy accepted");
    assert_eq!(
        h.fake.registry().as_deref(),
        Some(blob.as_slice()),
        "validated policy written back"
    );
    let reloaded = Harness::new(FakeOptions {
        has_flush2: true,
        registry: h.fake.registry(),
    });
    assert_eq!(reloaded.source, PolicySource::Registry);
    for h in [h, reloaded] {
        h.unload();
        h.assert_clean();
    }
}

#[test]
fn set_policy_without_persist_or_invalid_leaves_the_registry_alone() {
    let original = policy_blob(action(
        Mode::WriteThrough,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    ));
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(original.clone()),
    });
    let blob = policy_blob(action(
        Mode::FlushOnClose,
        FlushMethod::Native,
        FlushFlags::empty(),
        None,
    ));
    let mut out = reply();
    h.message(&port_request_set_policy(&blob, false), &mut out)
        .expect("port open")
        .expect("accepted");
    assert_eq!(
        h.fake.registry().as_deref(),
        Some(original.as_slice()),
        "not persisted without the flag"
    );
    let mut bad = blob.clone();
    bad.truncate(bad.len() / 2);
    let err = h
        .message(&port_request_set_policy(&bad, true), &mut out)
        .expect("port open");
    assert!(err.is_err(), "a truncated policy is rejected");
    assert_eq!(
        h.fake.registry().as_deref(),
        Some(original.as_slice()),
        "nothing written for a rejected policy"
    );
    assert_eq!(h.fake.calls(CallSite::WritePolicy), 0);
    h.unload();
    h.assert_clean();
}

/// A persisted SetPolicy whose registry write fails changes nothing: the status goes
/// back to the client, the policy and generation in force stay, an event and a
/// counter record it; the same request succeeds once the registry accepts it.
#[test]
fn registry_write_failure_changes_nothing() {
    use flushguard_engine::callbacks::Counter;
    use flushguard_protocol::events::{EventKind, REGISTRY_STORE};

    let original = policy_blob(action(
        Mode::FlushOnClose,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    ));
    let h = Harness::new(FakeOptions {
        has_flush2: true,
        registry: Some(original.clone()),
    });
    assert_eq!(h.source, PolicySource::Registry);
    let state = h.filter.state();
    let before = state.policy();
    let (next_seq_before, _) = state.events().state();

    h.fake.inject(CallSite::WritePolicy, 0);
    let blob = policy_blob(action(
        Mode::WriteThrough,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    ));
    assert_ne!(blob, original);
    let mut out = reply();
    let r = h
        .message(&port_request_set_policy(&blob, true), &mut out)
        .expect("port open");
    assert_eq!(r, Err(CallSite::WritePolicy.failure()));
    assert_ne!(CallSite::WritePolicy.failure(), NtStatus::SUCCESS);
    assert_eq!(
        h.fake.calls(CallSite::WritePolicy),
        1,
        "the write was tried"
    );
    assert_eq!(
        h.fake.registry().as_deref(),
        Some(original.as_slice()),
        "registry unchanged"
    );
    let after = state.policy();
    assert_eq!(
        after.generation(),
        before.generation(),
        "no generation bump"
    );
    assert_eq!(
        after.blob(),
        before.blob(),
        "the previous policy stays in force"
    );
    assert_eq!(h.filter.counters().get(Counter::PolicyStoreFailed), 1);
    // Events with seq >= next_seq_before (read takes "after").
    let (_, new) = state.events().read(next_seq_before.saturating_sub(1), 16);
    assert_eq!(new.len(), 1, "exactly one event: {new:?}");
    assert_eq!(new[0].kind, EventKind::RegistryPolicyRejected);
    assert_eq!(new[0].status, CallSite::WritePolicy.failure());
    assert_eq!(new[0].value, REGISTRY_STORE);
    assert_eq!(new[0].generation, before.generation());

    // Retry: the registry accepts it now; the policy takes effect with the next
    // generation (no generation was used up by the failed attempt).
    h.message(&port_request_set_policy(&blob, true), &mut out)
        .expect("port open")
        .expect("SetPolicy accepted");
    assert_eq!(h.fake.registry().as_deref(), Some(blob.as_slice()));
    let now = state.policy();
    assert_eq!(now.generation(), before.generation() + 1);
    assert_eq!(now.blob(), blob.as_slice());
    h.unload();
    h.assert_clean();
}

/// GetStats with `CALLBACK_COUNTERS` carries every callback-layer counter, equal to
/// the driver's own; without the flag the reply keeps the original layout; ResetStats
/// zeroes them.
#[test]
fn get_stats_reports_callback_counters_by_cause() {
    use flushguard_engine::callbacks::Counter;
    use flushguard_engine::StatsSnapshot;
    use flushguard_protocol::stats::{StatsReplyHeader, CALLBACK_COUNTER_COUNT};
    use flushguard_protocol::ReplyHeader;
    use flushguard_tests::scenario::{self, full_script, harness};

    let h = harness(
        action(
            Mode::FlushAfterWrite,
            FlushMethod::Native,
            FlushFlags::empty(),
            Some(FlushFlags::empty()),
        ),
        true,
    );
    // Fail-open causes: a failed name query, a failed kernel-handle open.
    h.fake.inject(CallSite::GetFileNameInformation, 0);
    scenario::run(&h, &full_script());
    h.fake.inject(CallSite::OpenKernelHandle, 0);
    scenario::run(&h, &full_script());
    let counters = h.filter.counters();
    assert!(counters.get(Counter::NameQueryFailed) >= 1);
    assert!(counters.get(Counter::HandleOpenFailed) >= 1);

    let get = |with: bool| {
        let mut out = reply();
        let n = h
            .message(&port_request_get_stats(0, 16, with), &mut out)
            .expect("port open")
            .expect("GetStats succeeds");
        out.truncate(n);
        out.split_off(ReplyHeader::SIZE)
    };
    let body = get(true);
    let snap = StatsSnapshot::decode(&body).expect("decodes");
    let wire = snap.callbacks.as_deref().expect("callback section present");
    assert_eq!(wire.len(), CALLBACK_COUNTER_COUNT);
    for c in Counter::ALL {
        assert_eq!(
            snap.callback(c),
            Some(counters.get(c)),
            "{} on the wire",
            c.label()
        );
    }
    assert!(wire.iter().filter(|&&v| v > 0).count() >= 5, "{wire:?}");

    let plain = get(false);
    assert_eq!(
        plain.len(),
        StatsReplyHeader::body_len(snap.rules.len() as u32).unwrap(),
        "without the flag: the original layout"
    );
    assert_eq!(plain[32..40], [0; 8], "bytes 32..40 stay zero");
    assert_eq!(body.len() - plain.len(), CALLBACK_COUNTER_COUNT * 8);
    assert_eq!(StatsSnapshot::decode(&plain).unwrap().callbacks, None);

    let mut out = reply();
    h.message(&port_request_reset_stats(), &mut out)
        .expect("port open")
        .expect("ResetStats succeeds");
    let snap = StatsSnapshot::decode(&get(true)).unwrap();
    assert!(snap.callbacks.unwrap().iter().all(|&v| v == 0));
    assert_eq!(counters.get(Counter::NameQueryFailed), 0);
    h.unload();
    h.assert_clean();
}

/// Issue 9 finding 3: SetPolicy is serialized by a lock taken at PASSIVE_LEVEL (the
/// registry store runs inside it, at PASSIVE_LEVEL), the policy is swapped and read
/// under the spin lock (its holder at DISPATCH_LEVEL, where the fake would report a
/// registry call), and a reader at DISPATCH_LEVEL is allowed.
#[test]
fn set_policy_is_serialized_at_passive_and_swapped_under_the_spin_lock() {
    use flushguard_engine::callbacks::Irql;
    use flushguard_tests::fake;
    let h = Harness::new(FakeOptions::default());
    let before = fake::lock_calls();
    let blob = policy_blob(action(
        Mode::FlushOnClose,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    ));
    let mut out = reply();
    h.message(&port_request_set_policy(&blob, true), &mut out)
        .expect("port open")
        .expect("SetPolicy accepted");
    let after = fake::lock_calls();
    assert_eq!(after.serialize - before.serialize, 1, "{after:?}");
    assert_eq!(
        after.registry_writes_serialized - before.registry_writes_serialized,
        1,
        "the registry store runs inside the SetPolicy lock"
    );
    assert_eq!(
        after.write_exclusive - before.write_exclusive,
        1,
        "one swap"
    );
    // A reader at DISPATCH_LEVEL (a post-operation) takes the spin lock shared.
    fake::set_irql(Irql::DISPATCH_LEVEL);
    let generation = h.filter.state().policy().generation();
    fake::set_irql(Irql::PASSIVE_LEVEL);
    assert_eq!(generation, 1);
    assert!(fake::lock_calls().read_shared > after.read_shared);
    h.unload();
    h.assert_clean();
}
