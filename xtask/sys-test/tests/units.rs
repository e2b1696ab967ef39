//! Host checks of the harness's own pieces that need no driver image: the loader's
//! refusals, the scenario descriptions and the call-site names shared with the fake.

use flushguard_sys_test::{compare, scenario};
use flushguard_tests::fake::CallSite;

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
