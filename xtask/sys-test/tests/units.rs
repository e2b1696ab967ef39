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

/// The tests that use the harness's global world take turns.
static WORLD_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn dispatcher_events_and_delays_are_checked() {
    use flushguard_sys_test::world::{
        world, World, COORDINATOR_BLOCK_SITE, COORDINATOR_BLOCK_SIZE, DISPATCH_LEVEL,
    };
    let _turn = WORLD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
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

type InitSemFn = unsafe extern "win64" fn(usize, i32, i32);
type ReleaseSemFn = unsafe extern "win64" fn(usize, i32, i32, u8) -> i32;
type CreateThreadFn =
    unsafe extern "win64" fn(*mut usize, u32, usize, usize, usize, usize, usize) -> i32;
type TerminateFn = unsafe extern "win64" fn(i32) -> i32;
type ZwWaitFn = unsafe extern "win64" fn(usize, u8, *const i64) -> i32;
type ZwCloseFn = unsafe extern "win64" fn(usize) -> i32;
type QueryFn = unsafe extern "win64" fn() -> usize;
type CompleteFn = unsafe extern "win64" fn(usize);

/// The harness's semaphore and thread routines, called the way the driver calls them
/// (`kernel::resolve`, then the `extern "win64"` signature each is declared with in
/// kernel/thread.rs, kernel/event.rs, kernel/ntoskrnl.rs and kernel/sync.rs).
struct ThreadRoutines {
    init: InitSemFn,
    release: ReleaseSemFn,
    wait: WaitFn,
    create: CreateThreadFn,
    terminate: TerminateFn,
    zw_wait: ZwWaitFn,
    zw_close: ZwCloseFn,
    thread_id: QueryFn,
    irql: QueryFn,
    complete: CompleteFn,
}

/// The harness's routine `dll!name` as `F`.
///
/// # Safety
/// `F` is the `extern "win64"` function type the harness declares the routine with.
unsafe fn routine<F: Copy>(dll: &str, name: &str) -> F {
    let address = flushguard_sys_test::kernel::resolve(dll, name).expect(name);
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: the caller's contract: a function pointer type for this routine.
    unsafe { std::mem::transmute_copy::<usize, F>(&address) }
}

impl ThreadRoutines {
    fn bind() -> Self {
        const NT: &str = "ntoskrnl.exe";
        // SAFETY (each `routine` below): the type is the routine's declared signature.
        ThreadRoutines {
            // SAFETY: see above.
            init: unsafe { routine(NT, "KeInitializeSemaphore") },
            // SAFETY: see above.
            release: unsafe { routine(NT, "KeReleaseSemaphore") },
            // SAFETY: see above.
            wait: unsafe { routine(NT, "KeWaitForSingleObject") },
            // SAFETY: see above.
            create: unsafe { routine(NT, "PsCreateSystemThread") },
            // SAFETY: see above.
            terminate: unsafe { routine(NT, "PsTerminateSystemThread") },
            // SAFETY: see above.
            zw_wait: unsafe { routine(NT, "ZwWaitForSingleObject") },
            // SAFETY: see above.
            zw_close: unsafe { routine(NT, "ZwClose") },
            // SAFETY: see above.
            thread_id: unsafe { routine(NT, "PsGetCurrentThreadId") },
            // SAFETY: see above.
            irql: unsafe { routine(NT, "KeGetCurrentIrql") },
            // SAFETY: see above.
            complete: unsafe { routine("fltmgr.sys", "FltCompletePendedPostOperation") },
        }
    }
    // The semaphores are live test allocations (or addresses only looked up); handles
    // are plain values the routines look up.
    fn init(&self, semaphore: usize, count: i32, limit: i32) {
        // SAFETY: see above; KeInitializeSemaphore writes 32 bytes of a live block.
        unsafe { (self.init)(semaphore, count, limit) }
    }
    fn release(&self, semaphore: usize, adjustment: i32, wait: bool) -> i32 {
        // SAFETY: see above.
        unsafe { (self.release)(semaphore, 0, adjustment, u8::from(wait)) }
    }
    fn wait(&self, semaphore: usize) -> i32 {
        // SAFETY: see above; no timeout.
        unsafe { (self.wait)(semaphore, 0, 0, 0, std::ptr::null()) }
    }
    fn create(&self, start: unsafe extern "win64" fn(usize)) -> (i32, usize) {
        let mut handle = 0usize;
        // SAFETY: `handle` is a live local; NULL attributes, process and client id.
        let status = unsafe { (self.create)(&mut handle, 0x1F_FFFF, 0, 0, 0, start as usize, 0) };
        (status, handle)
    }
    fn terminate(&self) -> i32 {
        // SAFETY: no pointers.
        unsafe { (self.terminate)(0) }
    }
    fn zw_wait(&self, handle: usize) -> i32 {
        // SAFETY: no timeout; `handle` is looked up.
        unsafe { (self.zw_wait)(handle, 0, std::ptr::null()) }
    }
    fn zw_close(&self, handle: usize) -> i32 {
        // SAFETY: `handle` is looked up.
        unsafe { (self.zw_close)(handle) }
    }
    fn thread_id(&self) -> usize {
        // SAFETY: no arguments.
        unsafe { (self.thread_id)() }
    }
    fn irql(&self) -> usize {
        // SAFETY: no arguments.
        unsafe { (self.irql)() & 0xFF }
    }
    fn complete(&self, data: usize) {
        // SAFETY: the routine only looks the address up.
        unsafe { (self.complete)(data) }
    }
}

/// The semaphore the test's system threads wait on.
static SEMAPHORE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The test's system threads leave their loop once set.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// What the test's system threads saw at each wake: (thread id, IRQL).
static WAKES: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

/// A start routine like the driver's worker_main: wait, note, until stopped; then
/// PsTerminateSystemThread.
unsafe extern "win64" fn test_worker(_context: usize) {
    use std::sync::atomic::Ordering;
    let k = ThreadRoutines::bind();
    loop {
        k.wait(SEMAPHORE.load(Ordering::SeqCst));
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        WAKES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((k.thread_id(), k.irql()));
    }
    k.terminate();
}

/// A start routine that returns instead of calling PsTerminateSystemThread.
unsafe extern "win64" fn returning_worker(_context: usize) {}

#[test]
fn semaphores_and_system_threads_are_checked() {
    use flushguard_sys_test::kernel::{drain_pended, run_until_idle, MAIN_THREAD_ID};
    use flushguard_sys_test::world::{world, ThreadRun, World, APC_LEVEL, DISPATCH_LEVEL};
    use std::sync::atomic::Ordering;
    let _turn = WORLD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
    let k = ThreadRoutines::bind();
    let violations = || std::mem::take(&mut world().violations);
    *world() = World::default();
    world().image = (0, usize::MAX);

    // KeInitializeSemaphore: aligned storage, 0 <= Count <= Limit, Limit > 0.
    // Storage for two KSEMAPHOREs (and room around them), alive for the whole process:
    // the harness writes them through their addresses.
    let sem = Box::into_raw(Box::new([0u64; 16])) as usize;
    let other = sem + 64;
    k.init(0, 0, 1);
    k.init(sem + 4, 0, 1);
    k.init(sem, 2, 1);
    k.init(sem, 0, 0);
    let v = violations();
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v[0].contains("NULL semaphore"), "{v:?}");
    assert!(v[1].contains("8-byte aligned"), "{v:?}");
    assert!(v[2].contains("between 0 and the limit"), "{v:?}");
    k.init(sem, 0, i32::MAX);
    k.init(other, 0, 1);
    assert!(violations().is_empty());
    // SAFETY: the KSEMAPHORE the harness wrote, 32 bytes inside the leaked block.
    let bytes = unsafe { (sem as *const [u8; 32]).read() };
    let (kind, size) = (bytes[0], bytes[2]);
    let limit = i32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    assert_eq!((kind, size, limit), (5, 8, i32::MAX));

    // KeReleaseSemaphore: previous count back; a release inside a post-operation on the
    // scenario's thread is the pending of a write (compared), any other a wake-up.
    assert_eq!(k.release(other, 1, false), 0);
    assert_eq!(world().pend_releases, 0);
    assert_eq!(
        world().sequence.last().map(|c| c.routine),
        Some("KeReleaseSemaphore(wake)")
    );
    world().in_post.push(0x5000);
    assert_eq!(k.release(other, 0, false), 1); // Adjustment must be positive
    world().in_post.clear();
    assert_eq!(world().pend_releases, 1);
    assert_eq!(
        world().sequence.last().map(|c| c.routine),
        Some("KeReleaseSemaphore")
    );
    k.release(other, 1, false); // above the limit 1
    k.release(sem + 128, 1, false); // never initialised
    world().irql = DISPATCH_LEVEL;
    k.release(sem, 1, true); // Wait = TRUE above APC_LEVEL, then no wait
    world().irql = 0;
    k.thread_id();
    assert_eq!(k.wait(sem), 0); // back to 0
    let v = violations();
    assert_eq!(v.len(), 5, "{v:?}");
    assert!(v[0].contains("Adjustment 0"), "{v:?}");
    assert!(v[1].contains("above its limit 1"), "{v:?}");
    assert!(v[2].contains("not a KSEMAPHORE initialised"), "{v:?}");
    assert!(
        v[3].contains("KeReleaseSemaphore called at IRQL 2"),
        "{v:?}"
    );
    assert!(
        v[4].contains("not followed at once by a KeWaitXxx"),
        "{v:?}"
    );
    // KeWaitForSingleObject on the scenario's thread: takes a count; at 0 it would
    // block for good; without a timeout never above APC_LEVEL.
    assert_eq!(k.wait(other), 0);
    assert_eq!(world().semaphores[&other].count, 0);
    k.wait(other);
    world().irql = DISPATCH_LEVEL;
    k.release(other, 1, false);
    k.wait(other);
    world().irql = 0;
    k.wait(sem + 128); // never initialised
    let v = violations();
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(
        v[0].contains("whose count is 0 on the scenario's thread"),
        "{v:?}"
    );
    assert!(
        v[1].contains("KeWaitForSingleObject called at IRQL 2"),
        "{v:?}"
    );
    assert!(
        v[2].contains("not a dispatcher object initialised"),
        "{v:?}"
    );
    // The KSEMAPHORE overwritten since KeInitializeSemaphore.
    // SAFETY: `other`'s Type byte, inside the leaked block.
    unsafe { (other as *mut u8).write(1) };
    k.release(other, 1, false);
    assert!(violations()[0].contains("was overwritten"));

    // Two system threads: created parked; they run only at a scheduling point, each
    // with its own thread id and PASSIVE_LEVEL while the scenario's thread keeps its
    // IRQL.
    SEMAPHORE.store(sem, Ordering::SeqCst);
    STOP.store(false, Ordering::SeqCst);
    WAKES.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let (s1, h1) = k.create(test_worker);
    let (s2, h2) = k.create(test_worker);
    assert_eq!((s1, s2), (0, 0));
    assert_ne!(h1, h2);
    assert_eq!(world().threads.len(), 2);
    assert_eq!(k.release(sem, 1, false), 0);
    assert!(world().threads.iter().all(|t| t.run == ThreadRun::Created));
    world().irql = APC_LEVEL;
    run_until_idle();
    assert_eq!(world().irql, APC_LEVEL);
    world().irql = 0;
    assert_eq!(k.thread_id(), MAIN_THREAD_ID);
    assert_eq!(
        *WAKES.lock().unwrap_or_else(|p| p.into_inner()),
        vec![(MAIN_THREAD_ID + 4, 0)]
    );
    let runs: Vec<ThreadRun> = world().threads.iter().map(|t| t.run).collect();
    assert_eq!(runs, vec![ThreadRun::Waiting(sem), ThreadRun::Waiting(sem)]);
    assert!(violations().is_empty());
    // The scenario's thread cannot end itself; a wait on a handle that is no thread's.
    assert_eq!(k.terminate(), 0xC000_000D_u32 as i32);
    assert_eq!(k.zw_wait(0x1234), 0xC000_0008_u32 as i32);
    let v = violations();
    assert!(v[0].contains("did not create"), "{v:?}");
    assert!(v[1].contains("not a thread handle"), "{v:?}");
    // The leak report names a thread not ended and a handle not closed.
    let leaks = world().leaks().join("\n");
    assert!(leaks.contains("system thread 1 not terminated"), "{leaks}");
    assert!(leaks.contains("Thread(2)"), "{leaks}");
    // Waiting for a thread that can never end: no count, nobody to release one.
    assert_eq!(k.zw_wait(h1), 0);
    assert!(violations()[0].contains("would wait forever"));
    // FltUnregisterFilter waiting for a pended post-operation no thread completes.
    world().pended.push(0x6000);
    drain_pended();
    assert!(violations()[0].contains("FltUnregisterFilter would wait forever"));
    // Completing an operation whose post-operation is still running.
    world().in_post.push(0x6000);
    k.complete(0x6000);
    world().in_post.clear();
    assert!(violations()[0].contains("has not returned yet"));
    world().pended.clear();

    // Stop as the driver does: wake each thread, wait for its end, close its handle.
    STOP.store(true, Ordering::SeqCst);
    k.release(sem, 2, false);
    assert_eq!(k.zw_wait(h1), 0);
    assert_eq!(k.zw_close(h1), 0);
    assert_eq!(k.zw_wait(h2), 0);
    assert_eq!(k.zw_close(h2), 0);
    assert!(world()
        .threads
        .iter()
        .all(|t| t.run == ThreadRun::Terminated(0)));
    assert!(violations().is_empty());
    assert!(world().leaks().is_empty(), "{:?}", world().leaks());
    // A start routine that returns instead of PsTerminateSystemThread.
    let (_, h3) = k.create(returning_worker);
    assert_eq!(k.zw_wait(h3), 0);
    k.zw_close(h3);
    let v = violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("start routine returned"), "{v:?}");
    assert!(world().system_thread_stack > 0);
    *world() = World::default();
}
