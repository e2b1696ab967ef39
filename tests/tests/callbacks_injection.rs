//! Failure injection at every fake Filter Manager call site, in turn: every
//! reference is still released, no rule is broken, and the user's I/O proceeds.

use flushguard_engine::policy::{FlushMethod, Mode};
use flushguard_protocol::events::EventKind;
use flushguard_protocol::FlushFlags;
use flushguard_tests::fake::CallSite;
use flushguard_tests::scenario::{self, action, full_script, harness, MODES};

#[test]
fn every_call_site_failing_at_every_call_leaves_nothing_behind() {
    let mut injected = 0usize;
    for site in CallSite::ALL.iter().copied() {
        if site == CallSite::AllocateCommitSync {
            // Called only at load, before a failure can be injected here:
            // callbacks_group_commit.rs fails it at load.
            continue;
        }
        for mode in MODES {
            for method in [FlushMethod::Filter, FlushMethod::Native] {
                let act = action(mode, method, FlushFlags::empty(), Some(FlushFlags::empty()));
                // How often does the script call this site without failures?
                let probe = harness(act, method == FlushMethod::Filter);
                scenario::run(&probe, &full_script());
                probe.unload();
                probe.assert_clean();
                let calls = probe.fake.calls(site);
                for nth in 0..calls {
                    let h = harness(act, method == FlushMethod::Filter);
                    h.fake.inject(site, nth);
                    scenario::run(&h, &full_script());
                    h.unload();
                    let violations = h.fake.violations();
                    assert!(
                        violations.is_empty() && h.fake.outstanding().is_empty(),
                        "{site:?} failing at call {nth} ({mode:?}, {method:?}): violations {violations:?}, held {:?}",
                        h.fake.outstanding()
                    );
                    injected += 1;
                }
            }
        }
    }
    eprintln!("{injected} runs, each with one injected failure");
    assert!(
        injected > 100,
        "only {injected} injected failures exercised"
    );
}

#[test]
fn every_call_site_is_reached_by_the_script() {
    // Registry write is reached through SetPolicy (port tests); all others here.
    let mut seen = std::collections::HashSet::new();
    for mode in MODES {
        for method in [FlushMethod::Filter, FlushMethod::Native] {
            for has_flush2 in [true, false] {
                let h = harness(
                    action(mode, method, FlushFlags::empty(), Some(FlushFlags::empty())),
                    has_flush2,
                );
                scenario::run(&h, &full_script());
                h.unload();
                for site in CallSite::ALL {
                    if h.fake.calls(*site) > 0 {
                        seen.insert(*site);
                    }
                }
            }
        }
    }
    let missing: Vec<_> = CallSite::ALL
        .iter()
        .filter(|s| **s != CallSite::WritePolicy && !seen.contains(*s))
        .collect();
    assert!(
        missing.is_empty(),
        "call sites never exercised: {missing:?}"
    );
}

#[test]
fn registry_read_failure_starts_pass_through() {
    let h = harness(
        action(
            Mode::WriteThrough,
            FlushMethod::Filter,
            FlushFlags::empty(),
            None,
        ),
        true,
    );
    assert_eq!(h.fake.calls(CallSite::ReadPolicy), 1);
    let fake = flushguard_tests::fake::Fake::new(flushguard_tests::fake::FakeOptions {
        has_flush2: true,
        registry: h.fake.registry(),
    });
    fake.inject(CallSite::ReadPolicy, 0);
    let state =
        flushguard_engine::handler::State::new(flushguard_tests::harness::fake_clock, (0, 1, 0));
    let (filter, source) = flushguard_engine::callbacks::Filter::load(fake.clone(), state);
    assert!(
        matches!(source, flushguard_engine::callbacks::PolicySource::Invalid(s) if s == CallSite::ReadPolicy.failure()),
        "{source:?}"
    );
    let (_, events) = filter.state().events().read(0, 16);
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::RegistryPolicyRejected
                && e.status == CallSite::ReadPolicy.failure()
                && e.time != 0),
        "event recorded: {events:?}"
    );
    assert_eq!(filter.state().policy().rule_count(), 0, "pass-through");
    drop(filter);
    h.unload();
    h.assert_clean();
}
