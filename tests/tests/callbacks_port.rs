//! The port message path through `Filter::handle_message`: the engine handler, then
//! the registry write of a persisted SetPolicy, only after it validated.

use flushguard_engine::callbacks::PolicySource;
use flushguard_engine::policy::{FlushMethod, Mode};
use flushguard_protocol::{FlushFlags, NtStatus};
use flushguard_tests::fake::{CallSite, FakeOptions};
use flushguard_tests::scenario::{action, policy_blob};
use flushguard_tests::sim::Harness;
use flushguard_tests::{port_request_get_version, port_request_set_policy};

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

#[test]
fn registry_write_failure_is_reported() {
    let h = Harness::new(FakeOptions::default());
    h.fake.inject(CallSite::WritePolicy, 0);
    let blob = policy_blob(action(
        Mode::WriteThrough,
        FlushMethod::Filter,
        FlushFlags::empty(),
        None,
    ));
    let mut out = reply();
    let r = h
        .message(&port_request_set_policy(&blob, true), &mut out)
        .expect("port open");
    assert_eq!(r, Err(CallSite::WritePolicy.failure()));
    assert_eq!(h.fake.registry(), None);
    assert_ne!(CallSite::WritePolicy.failure(), NtStatus::SUCCESS);
    h.unload();
    h.assert_clean();
}
