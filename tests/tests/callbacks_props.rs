//! Generated operation sequences against every kind of rule: after any sequence and
//! an unload, no Filter Manager rule was broken and nothing is held.

use flushguard_tests::scenario::{self, any_action, harness, step};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_every_filter_manager_rule(
        act in any_action(),
        has_flush2 in any::<bool>(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let h = harness(act, has_flush2);
        scenario::run(&h, &steps);
        h.unload();
        let violations = h.fake.violations();
        prop_assert!(violations.is_empty(), "violations: {:?}", violations);
        let held = h.fake.outstanding();
        prop_assert!(held.is_empty(), "held: {:?}", held);
        h.assert_clean();
    }

    #[test]
    fn unload_with_operations_in_flight_drains_cleanly(
        act in any_action(),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let h = harness(act, true);
        // No final completion and no closes: unload drains what is in flight.
        let mut runner = scenario::Runner::new();
        for s in steps.iter().filter(|s| !matches!(s, scenario::Step::Close { .. })) {
            runner.step(&h, s);
        }
        h.unload();
        prop_assert_eq!(h.fake.pending_len(), 0);
        let violations = h.fake.violations();
        prop_assert!(violations.is_empty(), "violations: {:?}", violations);
        prop_assert!(h.fake.outstanding().is_empty());
    }
}
