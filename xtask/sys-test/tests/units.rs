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

type InitFn = unsafe extern "win64" fn(usize, i32, u8);
type SetFn = unsafe extern "win64" fn(usize, i32, u8) -> i32;
type ClearFn = unsafe extern "win64" fn(usize);
type WaitFn = unsafe extern "win64" fn(usize, i32, i8, u8, *const i64) -> i32;
type DelayFn = unsafe extern "win64" fn(i8, u8, *const i64) -> i32;
type AllocFn = unsafe extern "win64" fn(u64, usize, u32) -> usize;

/// The harness's event, delay and pool routines, called the way the driver calls them
/// (`kernel::resolve`, then the `extern "win64"` signature each is declared with in
/// kernel/event.rs and kernel/ntoskrnl.rs).
struct EventRoutines {
    init: InitFn,
    set: SetFn,
    clear: ClearFn,
    wait: WaitFn,
    delay: DelayFn,
    alloc: AllocFn,
}

impl EventRoutines {
    fn bind() -> Self {
        use flushguard_sys_test::kernel::resolve;
        let at = |name| resolve("ntoskrnl.exe", name).expect(name);
        EventRoutines {
            // SAFETY: the harness's KeInitializeEvent, declared with this signature.
            init: unsafe { std::mem::transmute::<usize, InitFn>(at("KeInitializeEvent")) },
            // SAFETY: the harness's KeSetEvent, declared with this signature.
            set: unsafe { std::mem::transmute::<usize, SetFn>(at("KeSetEvent")) },
            // SAFETY: the harness's KeClearEvent, declared with this signature.
            clear: unsafe { std::mem::transmute::<usize, ClearFn>(at("KeClearEvent")) },
            // SAFETY: the harness's KeWaitForSingleObject, declared with this signature.
            wait: unsafe { std::mem::transmute::<usize, WaitFn>(at("KeWaitForSingleObject")) },
            // SAFETY: the harness's KeDelayExecutionThread, declared with this signature.
            delay: unsafe { std::mem::transmute::<usize, DelayFn>(at("KeDelayExecutionThread")) },
            // SAFETY: the harness's ExAllocatePool2, declared with this signature.
            alloc: unsafe { std::mem::transmute::<usize, AllocFn>(at("ExAllocatePool2")) },
        }
    }
    // In the methods below, `event` is a live harness pool address the test owns or
    // an address the routine only looks up (never initialised, or freed): the harness
    // touches an event's memory only while it tracks the event as live.
    fn init(&self, event: usize) {
        // SAFETY: see above; KeInitializeEvent writes 24 bytes inside a live block.
        unsafe { (self.init)(event, 0, 0) }
    }
    fn set(&self, event: usize, wait: bool) -> i32 {
        // SAFETY: see above.
        unsafe { (self.set)(event, 0, u8::from(wait)) }
    }
    fn clear(&self, event: usize) {
        // SAFETY: see above.
        unsafe { (self.clear)(event) }
    }
    fn wait(&self, event: usize, timeout: Option<i64>) -> i32 {
        let timeout = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const i64);
        // SAFETY: see above; `timeout` is NULL or a live local.
        unsafe { (self.wait)(event, 0, 0, 0, timeout) }
    }
    fn delay(&self, interval: i64) -> i32 {
        // SAFETY: `interval` is a live local.
        unsafe { (self.delay)(0, 0, &interval) }
    }
    fn alloc(&self, size: usize) -> usize {
        // SAFETY: no pointer arguments.
        unsafe { (self.alloc)(0x40, size, u32::from_le_bytes(*b"FGrd")) }
    }
}

#[test]
fn dispatcher_events_and_delays_are_checked() {
    use flushguard_sys_test::world::{
        world, World, COORDINATOR_BLOCK_SITE, COORDINATOR_BLOCK_SIZE, DISPATCH_LEVEL,
    };
    let k = EventRoutines::bind();
    let violations = || std::mem::take(&mut world().violations);
    *world() = World::default();

    // DriverEntry: coordinator-size blocks are counted (and fail when injected).
    world().in_driver_entry = true;
    world().inject = Some((COORDINATOR_BLOCK_SITE, 1, -1));
    let block = k.alloc(COORDINATOR_BLOCK_SIZE);
    let failed = k.alloc(COORDINATOR_BLOCK_SIZE);
    let other = k.alloc(64);
    assert!(block != 0 && failed == 0 && other != 0);
    assert_eq!(world().site_counts.get(COORDINATOR_BLOCK_SITE), Some(&2));
    let events = [block + 8, block + 32];
    k.init(events[0]);
    k.init(events[1]);
    assert_eq!(world().coordinator_blocks, vec![(block, 2)]);
    // An event outside a coordinator block during DriverEntry: the identification is off.
    k.init(other);
    assert!(violations()[0].contains("outside a 56-byte group-commit coordinator block"));
    world().in_driver_entry = false;

    let e = events[0];
    assert_eq!(k.set(e, false), 0);
    assert_eq!(k.set(e, false), 1);
    assert_eq!(k.wait(e, None), 0);
    k.clear(e);
    assert_eq!(k.wait(e, Some(0)), 0x102); // STATUS_TIMEOUT
    assert!(violations().is_empty());
    assert_eq!(k.wait(e, None), 0);
    let v = violations();
    assert!(v[0].contains("would block forever"), "{v:?}");
    // IRQL: no NULL-timeout wait at DISPATCH_LEVEL (a spin lock held); set and clear are
    // allowed there.
    world().irql = DISPATCH_LEVEL;
    k.set(e, false);
    k.clear(e);
    k.set(e, false);
    k.wait(e, None);
    world().irql = 0;
    let v = violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].contains("KeWaitForSingleObject called at IRQL 2"),
        "{v:?}"
    );
    // KeSetEvent(Wait = TRUE) must be followed by a wait.
    k.set(e, true);
    k.clear(e);
    assert!(violations()[0].contains("not followed at once by a KeWaitXxx"));
    // A scribbled DISPATCHER_HEADER (its Size byte), a never-initialised event.
    let size_byte = (events[1] + 2) as *mut u8;
    // SAFETY: inside the live 56-byte block.
    unsafe { size_byte.write(0) };
    k.set(events[1], false);
    k.set(block + 16, false);
    let v = violations();
    assert!(v[0].contains("DISPATCHER_HEADER was overwritten"), "{v:?}");
    assert!(v[1].contains("not a KEVENT initialised"), "{v:?}");
    // The blocks freed (unload): their events are gone, using one is a use after free,
    // and nothing is reported as leaked.
    let tag = Some(u32::from_le_bytes(*b"FGrd"));
    world().free(block, tag, "ExFreePoolWithTag");
    world().free(other, tag, "ExFreePoolWithTag");
    k.set(e, false);
    k.wait(e, None);
    let v = violations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|m| m.contains("use after free")), "{v:?}");
    assert!(world().events.is_empty());
    assert!(world().leaks().is_empty(), "{:?}", world().leaks());
    // Delays: relative (negative) intervals only, at IRQL <= APC_LEVEL.
    assert_eq!(k.delay(-5_000), 0);
    assert!(violations().is_empty());
    k.delay(5_000);
    world().irql = DISPATCH_LEVEL;
    k.delay(-5_000);
    world().irql = 0;
    let v = violations();
    assert!(v[0].contains("not negative"), "{v:?}");
    assert!(
        v[1].contains("KeDelayExecutionThread called at IRQL 2"),
        "{v:?}"
    );
    assert_eq!(world().delays, vec![-5_000, 5_000, -5_000]);
    *world() = World::default();
}
