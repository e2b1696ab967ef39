//! Host checks of the harness's own pieces that need no driver image: the loader's
//! refusals, the scenario descriptions and the call-site names shared with the fake.

use flushguard_sys_test::{compare, scenario};
use flushguard_tests::fake::{CallSite, FmCall};

#[test]
fn loader_refuses_what_is_not_a_pe32_plus_image() {
    let error = flushguard_sys_test::load(b"MZ not a driver").err();
    assert!(error.is_some(), "garbage loaded");
    let error = flushguard_sys_test::load(&[]).err();
    assert!(error.is_some(), "an empty file loaded");
}

#[test]
fn every_call_site_has_a_routine_and_a_name() {
    for &site in CallSite::ALL {
        let name = format!("{site:?}");
        assert_eq!(compare::site_by_name(&name), Some(site));
        assert!(!compare::routine_of(site).is_empty());
    }
    assert_eq!(compare::site_by_name("NoSuchSite"), None);
}

#[test]
fn scenario_names_are_unique_and_port_steps_follow_a_connection() {
    let mut names: Vec<&str> = scenario::SCENARIOS.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        scenario::SCENARIOS.len(),
        "duplicate scenario name"
    );
    for spec in scenario::SCENARIOS {
        assert!(!spec.steps.is_empty(), "{} has no steps", spec.name);
        // A port step needs a connection first.
        let connect = spec
            .steps
            .iter()
            .position(|s| *s == scenario::Step::Connect);
        for (i, step) in spec.steps.iter().enumerate() {
            if matches!(
                step,
                scenario::Step::GetVersion
                    | scenario::Step::BadRequests
                    | scenario::Step::PortAbuse
                    | scenario::Step::SetPolicy(_)
                    | scenario::Step::Disconnect
            ) {
                assert!(
                    connect.is_some_and(|c| c < i),
                    "{}: {step:?} before Connect",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn bad_requests_are_distinct_and_differ_from_the_valid_request() {
    let valid = flushguard_tests::port_request_get_version();
    let bad = scenario::bad_requests();
    assert!(bad.len() >= 6);
    for (what, request) in &bad {
        assert_ne!(request, &valid, "{what} is the valid request");
    }
    for (i, (a, ra)) in bad.iter().enumerate() {
        for (b, rb) in bad.iter().skip(i + 1) {
            assert_ne!(ra, rb, "{a} and {b} are the same bytes");
        }
    }
}

fn call(routine: &'static str, arg: Option<u32>, file: Option<u64>) -> FmCall {
    FmCall {
        routine,
        arg,
        file,
        irql: 0,
    }
}

#[test]
fn call_sequences_are_normalised_and_their_first_divergence_is_shown() {
    // Files by first appearance; routines outside the compared list dropped.
    let binary = compare::normalise(&[
        call("ExAllocatePool2", None, None),
        call("FltGetStreamHandleContext", None, None),
        call("FltFlushBuffers2", Some(0), Some(0x7F00_1000)),
        call("FltReleaseContext", None, None),
    ]);
    let fake = compare::normalise(&[
        call("FltGetStreamHandleContext", None, None),
        call("KeGetCurrentIrql", None, None),
        call("FltFlushBuffers2", Some(0), Some(42)),
        call("FltReleaseContext", None, None),
    ]);
    assert_eq!(binary, fake);
    assert_eq!(binary[1].file, Some(0));
    assert!(compare::sequence_difference(&binary, &fake).is_empty());
    // A missing FltReleaseContext: the divergence at call 2, with the calls before it.
    let lines = compare::sequence_difference(&binary[..2], &fake);
    assert!(lines[0].contains("at call 2"), "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.contains("both:   FltFlushBuffers2(f0, 0x0)")));
    assert!(lines
        .iter()
        .any(|l| l.contains("binary: (end of sequence)")));
    assert!(lines
        .iter()
        .any(|l| l.contains("host fake: FltReleaseContext at IRQL 0")));
}

#[test]
fn every_routine_on_either_side_is_compared_or_excluded_with_a_reason() {
    // A routine the fake logs that is neither compared nor in the documented
    // exclusion list would escape the sequence check unseen (the binary's side is
    // checked on every sys-test run: compare::unknown_routines).
    let known = |routine: &str| {
        compare::SEQUENCE_ROUTINES.contains(&routine)
            || compare::SEQUENCE_EXCLUDED
                .iter()
                .any(|(r, _)| *r == routine)
    };
    for spec in scenario::SCENARIOS {
        let log = compare::run_fake(spec, None).sequence;
        assert!(!log.is_empty(), "{}", spec.name);
        for c in log {
            assert!(known(c.routine), "{}: fake logs {}", spec.name, c.routine);
        }
    }
    for (routine, reason) in compare::SEQUENCE_EXCLUDED {
        assert!(!compare::SEQUENCE_ROUTINES.contains(routine), "{routine}");
        assert!(!reason.is_empty());
    }
}

#[test]
fn the_fake_logs_calls_only_when_asked() {
    use flushguard_tests::fake::FakeOptions;
    use flushguard_tests::harness::Harness;
    let quiet = Harness::new(FakeOptions::default());
    quiet.unload();
    assert!(quiet.fake.call_log().is_empty());
    let logged = Harness::logging_calls(FakeOptions::default());
    logged.unload();
    let log = logged.fake.call_log();
    assert!(
        log.iter()
            .any(|c| c.routine == "FsRtlMupGetProviderIdFromName"),
        "{log:?}"
    );
    assert_eq!(
        log.last().map(|c| c.routine),
        Some("FltUnregisterFilter"),
        "{log:?}"
    );
}
