//! FlushGuard's own system threads (driver/src/worker.rs) and the semaphore that
//! feeds them: `KeInitializeSemaphore`, `KeReleaseSemaphore`, `KeWaitForSingleObject`
//! on a semaphore, `PsCreateSystemThread`, `PsTerminateSystemThread` and
//! `ZwWaitForSingleObject` on a thread handle; and the scheduler that runs them.
//!
//! Each system thread is a real host thread running the driver's start routine on a
//! stack of its own, but the harness hands one *baton* around: only the thread that
//! holds it (the scenario's thread or one system thread, [`World::running`]) runs
//! driver code, so the run is as deterministic as the single-threaded one was. The
//! per-thread state the imports keep in the world (IRQL, top-level IRP, critical
//! region, flush depth, a pending `Wait = TRUE`, the stack segments of the calls into
//! the driver: [`ThreadRegs`]) is saved and restored at every hand-over, and
//! `PsGetCurrentThreadId` answers per thread. A new thread starts parked; it gets the
//! baton only at a scheduling point:
//!
//! 1. after each operation's post-operation callback returned (where the deferred work
//!    ran before, `binary.rs`): every system thread that can run runs until it blocks
//!    in `KeWaitForSingleObject` on a semaphore whose count is 0, or ends
//!    ([`run_until_idle`]);
//! 2. inside `FltUnregisterFilter`, which waits for every pended post-operation to be
//!    completed: the threads run until none is left ([`drain_pended`]);
//! 3. inside `ZwWaitForSingleObject` on a thread handle: that thread (and whichever
//!    other can run, if it blocks) runs until it calls `PsTerminateSystemThread`.
//!
//! `KeReleaseSemaphore` never hands the baton over: a pended write cannot be completed
//! before the post-operation that pended it returned (checked by
//! `FltCompletePendedPostOperation` anyway). A thread that waits on a semaphore whose
//! count is 0 gives the baton back to the thread that handed it over; it is runnable
//! again once the count is positive, and takes one from it when it resumes.
//! `PsTerminateSystemThread` marks the thread ended, hands the baton back and parks the
//! host thread for good: nothing unwinds through the driver's (Windows-ABI) frames
//! below it; the process exits with it parked.

use std::sync::{Condvar, MutexGuard};

use super::*;
use crate::world::{Semaphore, SystemThread, ThreadRegs, ThreadRun, World};

/// `STATUS_TIMEOUT`.
const STATUS_TIMEOUT: i32 = 0x102;
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const STATUS_INSUFFICIENT_RESOURCES: i32 = 0xC000_009A_u32 as i32;
/// `sizeof(KSEMAPHORE)` on x64: a `DISPATCHER_HEADER` and the `LONG Limit`, padded.
const KSEMAPHORE_SIZE: usize = 32;
/// `DISPATCHER_HEADER.Type` of a semaphore (`SemaphoreObject`).
const SEMAPHORE_OBJECT: u8 = 5;
/// `OBJ_PERMANENT | OBJ_EXCLUSIVE | OBJ_OPENIF`: not valid for a thread object
/// (PsCreateSystemThread page).
const INVALID_THREAD_ATTRIBUTES: u32 = 0x10 | 0x20 | 0x80;
/// `PsGetCurrentThreadId` of the scenario's thread; system thread `n` answers this
/// plus `4 * n`.
pub const MAIN_THREAD_ID: usize = 0x1234;
/// The most system threads a run may create.
const MAX_THREADS: usize = 16;
/// Hand-overs in one scheduling point after which the harness gives up (a thread
/// that keeps releasing the semaphore it waits on would spin forever).
const MAX_HANDOVERS: u32 = 10_000;
/// Stack of a system thread's host thread, bytes (the debug-built harness's frames
/// run on it too; the x64 kernel stack is 24 KiB).
const SYSTEM_THREAD_STACK: usize = 16 << 20;

/// `PKSTART_ROUTINE`.
type StartFn = unsafe extern "win64" fn(*mut c_void);

/// Signalled at every hand-over of the baton ([`World::running`]).
static TURN: Condvar = Condvar::new();

/// `KSEMAPHORE` (wdm.h, x64): the `DISPATCHER_HEADER` `KeInitializeSemaphore` sets
/// (`Type` `SemaphoreObject`, `SignalState` the count, no waiter: the harness keeps no
/// wait blocks), and the limit.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct KSemaphore {
    /// `Header`.
    header: super::event::DispatcherHeader,
    /// `Limit`.
    limit: i32,
    /// Padding to the 8-byte alignment.
    _pad: u32,
}
static_assertions::const_assert_eq!(std::mem::size_of::<KSemaphore>(), KSEMAPHORE_SIZE);

impl KSemaphore {
    /// The semaphore at `address` with `count` and `limit`.
    fn of(address: usize, count: i32, limit: i32) -> Self {
        KSemaphore {
            header: super::event::DispatcherHeader::new(
                address,
                SEMAPHORE_OBJECT,
                KSEMAPHORE_SIZE,
                count,
            ),
            limit,
            _pad: 0,
        }
    }
}

/// The running thread's `PsGetCurrentThreadId`.
pub fn current_thread_id(w: &World) -> usize {
    MAIN_THREAD_ID + 4 * w.running
}

/// Whether `address` is (or was, in a freed block) a semaphore: `KeWaitForSingleObject`
/// takes the semaphore path for it.
pub fn is_semaphore(w: &World, address: usize) -> bool {
    w.semaphores.contains_key(&address) || w.freed_semaphores.contains(&address)
}

/// The live semaphore at `address` for `routine`, its `KSEMAPHORE` checked intact;
/// `None` (with the violation) if it is NULL, freed, never initialised or overwritten.
fn live_semaphore(w: &mut World, routine: &str, address: usize) -> Option<Semaphore> {
    let looked_up = (address != 0).then(|| {
        (
            w.semaphores.get(&address).copied(),
            w.freed_semaphores.contains(&address),
        )
    });
    let state = tracked(
        w,
        routine,
        "KSEMAPHORE",
        "KeInitializeSemaphore",
        address,
        looked_up,
    )?;
    // SAFETY: a live semaphore: KSEMAPHORE_SIZE bytes, 8-aligned, in the image's data,
    // a live pool block or the driver's stack (checked at KeInitializeSemaphore).
    let object = unsafe { (address as *const KSemaphore).read() };
    if object != KSemaphore::of(address, state.count, state.limit) {
        w.violation(format!(
            "{routine}(0x{address:X}): the KSEMAPHORE was overwritten since \
             KeInitializeSemaphore (DISPATCHER_HEADER or Limit)"
        ));
        return None;
    }
    Some(state)
}

/// Sets the count of the live semaphore at `address`, in the harness and in its header.
fn set_count(w: &mut World, address: usize, count: i32) {
    if let Some(state) = w.semaphores.get_mut(&address) {
        state.count = count;
        // SAFETY: a live semaphore (checked by `live_semaphore` just before).
        unsafe { super::event::DispatcherHeader::write_signal_state(address, count) };
    }
}

pub(super) extern "win64" fn ke_initialize_semaphore(
    semaphore: *mut c_void,
    count: i32,
    limit: i32,
) {
    guarded("KeInitializeSemaphore", (), || {
        let mut w = world();
        w.call("KeInitializeSemaphore", PASSIVE_LEVEL);
        let address = semaphore as usize;
        if address == 0 {
            w.violation("KeInitializeSemaphore with a NULL semaphore");
            return;
        }
        if address % 8 != 0 {
            w.violation(format!(
                "KeInitializeSemaphore(0x{address:X}): a KSEMAPHORE must be 8-byte aligned"
            ));
            return;
        }
        if limit <= 0 || count < 0 || count > limit {
            w.violation(format!(
                "KeInitializeSemaphore(Count {count}, Limit {limit}): the limit must be \
                 positive and the count between 0 and the limit"
            ));
            return;
        }
        let block = w.pool_block_of(address, KSEMAPHORE_SIZE);
        if block.is_none() && w.pool_block_of(address, 1).is_some() {
            w.violation(format!(
                "KeInitializeSemaphore(0x{address:X}): the KSEMAPHORE overruns its pool block"
            ));
            return;
        }
        let waiting = w
            .threads
            .iter()
            .any(|t| t.run == ThreadRun::Waiting(address));
        if waiting {
            w.violation(format!(
                "KeInitializeSemaphore(0x{address:X}) while system threads wait on it"
            ));
        }
        // SAFETY: 8-aligned; inside a live pool block (checked), or the driver's image
        // data or stack, which the driver hands over as a KSEMAPHORE's storage.
        unsafe { (address as *mut KSemaphore).write(KSemaphore::of(address, count, limit)) };
        w.freed_semaphores.remove(&address);
        w.semaphores.insert(
            address,
            Semaphore {
                count,
                limit,
                block: block.unwrap_or(0),
            },
        );
    })
}

pub(super) extern "win64" fn ke_release_semaphore(
    semaphore: *mut c_void,
    _increment: i32,
    adjustment: i32,
    wait: u8,
) -> i32 {
    guarded("KeReleaseSemaphore", None, || {
        let mut w = world();
        // DDI page: IRQL <= DISPATCH_LEVEL (Wait = TRUE: the caller waits at once, so
        // <= APC_LEVEL as KeWaitForSingleObject without a zero timeout).
        let max_irql = if wait != 0 { APC_LEVEL } else { DISPATCH_LEVEL };
        w.call("KeReleaseSemaphore", max_irql);
        // The pending of a write (a post-operation on the scenario's thread) is
        // compared with the host fake's queue_deferred_flush; any other release (the
        // wake-up that stops the threads, at unload or on a DriverEntry failure) exists
        // on the binary's side only.
        if w.running == 0 && !w.in_post.is_empty() {
            w.pend_releases += 1;
        } else if let Some(last) = w.sequence.last_mut() {
            last.routine = "KeReleaseSemaphore(wake)";
        }
        let address = semaphore as usize;
        let state = live_semaphore(&mut w, "KeReleaseSemaphore", address)?;
        w.wait_next = (wait != 0).then_some("KeReleaseSemaphore");
        if adjustment <= 0 {
            w.violation(format!(
                "KeReleaseSemaphore with Adjustment {adjustment} (must be positive)"
            ));
            return Some(state.count);
        }
        match state.count.checked_add(adjustment) {
            Some(count) if count <= state.limit => {
                set_count(&mut w, address, count);
            }
            _ => w.violation(format!(
                "KeReleaseSemaphore(0x{address:X}) by {adjustment} above its limit {} (count \
                 {}): raises STATUS_SEMAPHORE_LIMIT_EXCEEDED",
                state.limit, state.count
            )),
        }
        Some(state.count)
    })
    .unwrap_or(0)
}

/// Hands the baton from `me` to `to` (saving `me`'s per-thread state, loading `to`'s)
/// and blocks until a thread hands it back to `me`; returns the world, locked, with
/// `me`'s state loaded.
fn hand_over(
    mut w: MutexGuard<'static, World>,
    me: usize,
    to: usize,
) -> MutexGuard<'static, World> {
    switch_to(&mut w, me, to);
    TURN.wait_while(w, |w| w.running != me)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Saves the running thread `me`'s per-thread state, loads `to`'s and gives `to` the
/// baton.
fn switch_to(w: &mut World, me: usize, to: usize) {
    let mut mine = ThreadRegs::default();
    w.swap_regs(&mut mine);
    *regs_of(w, me) = mine;
    let mut theirs = std::mem::take(regs_of(w, to));
    w.swap_regs(&mut theirs);
    w.running = to;
    TURN.notify_all();
}

/// The saved per-thread state of thread `n` (0: the scenario's thread).
fn regs_of(w: &mut World, n: usize) -> &mut ThreadRegs {
    match n.checked_sub(1).and_then(|i| w.threads.get_mut(i)) {
        Some(thread) => &mut thread.regs,
        None => &mut w.main_regs,
    }
}

/// Whether system thread `n` can run: not started yet, or waiting on a semaphore whose
/// count is positive.
fn runnable(w: &World, n: usize) -> bool {
    match w.threads.get(n - 1).map(|t| t.run) {
        Some(ThreadRun::Created) => true,
        Some(ThreadRun::Waiting(semaphore)) => {
            w.semaphores.get(&semaphore).is_some_and(|s| s.count > 0)
        }
        _ => false,
    }
}

/// Gives system thread `n` the baton until it blocks or ends; checks it gave back no
/// more references than it took.
fn run_thread(n: usize) {
    let mut w = world();
    let me = w.running;
    let held = w.driver_references();
    if let Some(thread) = w.threads.get_mut(n - 1) {
        thread.resume = me;
    }
    let mut w = hand_over(w, me, n);
    let more = w.driver_references() - held;
    if more != 0 {
        let run = w.threads.get(n - 1).map(|t| t.run);
        w.violation(format!(
            "system thread {n} gave the processor back ({run:?}) holding {more} more \
             reference(s)"
        ));
    }
}

/// Runs system threads, `first` if it can run, else the lowest-numbered that can,
/// until `done` holds or none can run. Returns whether `done` held.
fn run_while(first: Option<usize>, done: impl Fn(&World) -> bool) -> bool {
    for _ in 0..MAX_HANDOVERS {
        let next = {
            let w = world();
            if done(&w) {
                return true;
            }
            let me = w.running;
            first
                .filter(|&n| runnable(&w, n))
                .or_else(|| (1..=w.threads.len()).find(|&n| n != me && runnable(&w, n)))
        };
        match next {
            Some(n) => run_thread(n),
            None => return done(&world()),
        }
    }
    world().violation(format!(
        "the system threads were handed the processor {MAX_HANDOVERS} times in one \
         scheduling point without settling (a thread releasing the semaphore it waits on?)"
    ));
    false
}

/// Scheduling point 1: every system thread that can run runs until it blocks on a
/// semaphore whose count is 0, or ends.
pub fn run_until_idle() {
    run_while(None, |_| false);
}

/// Scheduling point 2 (`FltUnregisterFilter`): the system threads run until no
/// post-operation is pended; a violation if they settle with some left (Filter
/// Manager would wait forever).
pub fn drain_pended() {
    if !run_while(None, |w| w.pended.is_empty()) {
        let mut w = world();
        let left = w.pended.len();
        if left > 0 {
            w.violation(format!(
                "FltUnregisterFilter would wait forever: {left} pended post-operation(s) \
                 never completed (FltCompletePendedPostOperation) and no system thread can \
                 run"
            ));
        }
    }
}

/// `KeWaitForSingleObject` on the semaphore at `address` (the call recorded and its
/// IRQL checked by the caller, `event.rs`).
pub(super) fn wait_semaphore(
    mut w: MutexGuard<'static, World>,
    address: usize,
    timeout: Option<i64>,
) -> i32 {
    // The driver's system threads wait for work; the host fake has no threads of its
    // own and does not wait (compare.rs SEQUENCE_EXCLUDED).
    if let Some(last) = w.sequence.last_mut() {
        last.routine = "KeWaitForSingleObject(semaphore)";
    }
    let Some(state) = live_semaphore(&mut w, "KeWaitForSingleObject", address) else {
        return STATUS_SUCCESS;
    };
    if state.count > 0 {
        set_count(&mut w, address, state.count - 1);
        return STATUS_SUCCESS;
    }
    if timeout == Some(0) {
        return STATUS_TIMEOUT;
    }
    let me = w.running;
    if me == 0 {
        if timeout.is_some() {
            return STATUS_TIMEOUT;
        }
        w.violation(
            "KeWaitForSingleObject on a semaphore whose count is 0 on the scenario's thread \
             (an operation callback or DriverEntry/FilterUnload): it would block until a \
             system thread released it",
        );
        return STATUS_SUCCESS;
    }
    // Block: the thread that handed the baton over gets it back. A wait with a
    // timeout blocks alike (the harness lets no time pass), and ends with a count.
    let to = {
        let Some(thread) = w.threads.get_mut(me - 1) else {
            return STATUS_SUCCESS;
        };
        thread.run = ThreadRun::Waiting(address);
        thread.resume
    };
    let mut w = hand_over(w, me, to);
    if let Some(thread) = w.threads.get_mut(me - 1) {
        thread.run = ThreadRun::Running;
    }
    // Resumed only while the count is positive (`runnable`).
    match live_semaphore(&mut w, "KeWaitForSingleObject", address) {
        Some(state) if state.count > 0 => set_count(&mut w, address, state.count - 1),
        Some(_) => w.violation("harness bug: a system thread resumed on a semaphore at 0"),
        None => {}
    }
    STATUS_SUCCESS
}

/// The body of system thread `n`'s host thread: parked until it first gets the
/// baton, then the driver's start routine at PASSIVE_LEVEL on this thread's stack.
fn system_thread(n: usize) {
    let (start, context) = {
        let w = TURN
            .wait_while(world(), |w| w.running != n)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match w.threads.get(n - 1) {
            Some(thread) => (thread.start, thread.context),
            None => (0, 0),
        }
    };
    if let Some(thread) = world().threads.get_mut(n - 1) {
        thread.run = ThreadRun::Running;
    }
    let marker = 0u8;
    let top = std::hint::black_box(&marker) as *const u8 as usize & !0xF;
    crate::paint_stack(top);
    world().stack_tops.push((n, top));
    // SAFETY: the start routine was checked to lie inside the image at
    // PsCreateSystemThread, a PKSTART_ROUTINE.
    let routine = unsafe { std::mem::transmute::<usize, StartFn>(start) };
    // SAFETY: the context the driver passed; PASSIVE_LEVEL, a thread of its own.
    dispatch::into_driver(|| unsafe { routine(context as *mut c_void) });
    world().violation(format!(
        "system thread {n}'s start routine returned: a driver's system thread ends \
         itself with PsTerminateSystemThread"
    ));
    end_thread(n, STATUS_SUCCESS)
}

/// Ends system thread `n` (the running one): marks it terminated, records its stack,
/// gives the baton back and parks this host thread for good.
fn end_thread(n: usize, status: i32) -> ! {
    {
        let mut w = world();
        if let Some(&(_, top)) = w.stack_tops.iter().find(|(t, _)| *t == n) {
            let high = crate::stack_high_water(top);
            w.system_thread_stack = w.system_thread_stack.max(high);
        }
        let critical = w.critical_region;
        if critical != 0 {
            w.violation(format!(
                "system thread {n} ended inside {critical} critical region(s) \
                 (KERNEL_APC_PENDING_DURING_EXIT)"
            ));
        }
        let to = match w.threads.get_mut(n - 1) {
            Some(thread) => {
                thread.run = ThreadRun::Terminated(status);
                thread.resume
            }
            None => 0,
        };
        switch_to(&mut w, n, to);
    }
    loop {
        std::thread::park();
    }
}

#[allow(clippy::too_many_arguments)] // the DDI's signature
pub(super) extern "win64" fn ps_create_system_thread(
    handle: *mut usize,
    _access: u32,
    attributes: *const ObjectAttributes,
    process: usize,
    client_id: *mut [usize; 2],
    start: usize,
    context: *mut c_void,
) -> i32 {
    guarded("PsCreateSystemThread", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("PsCreateSystemThread", PASSIVE_LEVEL);
        if handle.is_null() {
            w.violation("PsCreateSystemThread with a NULL ThreadHandle");
            return STATUS_INVALID_PARAMETER;
        }
        if process != 0 {
            w.violation(format!(
                "PsCreateSystemThread with ProcessHandle 0x{process:X}: a driver's thread \
                 passes NULL (the system process)"
            ));
        }
        // SAFETY: the driver's OBJECT_ATTRIBUTES or NULL.
        if let Some(attributes) = unsafe { attributes.as_ref() } {
            if attributes.Attributes & INVALID_THREAD_ATTRIBUTES != 0 {
                w.violation(format!(
                    "PsCreateSystemThread with attributes 0x{:X}: OBJ_PERMANENT, \
                     OBJ_EXCLUSIVE and OBJ_OPENIF are not valid for a thread",
                    attributes.Attributes
                ));
            }
        }
        let (image_start, image_end) = w.image;
        if !(image_start..image_end).contains(&start) {
            w.violation(format!(
                "PsCreateSystemThread: StartRoutine 0x{start:X} is not inside the image"
            ));
            return STATUS_INVALID_PARAMETER;
        }
        if let Some(status) = w.fail_now("PsCreateSystemThread") {
            return status;
        }
        if w.threads.len() >= MAX_THREADS {
            w.violation(format!(
                "PsCreateSystemThread: more than {MAX_THREADS} system threads"
            ));
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        let n = w.threads.len() + 1;
        w.threads.push(SystemThread {
            start,
            context: context as usize,
            run: ThreadRun::Created,
            regs: ThreadRegs::default(),
            resume: 0,
        });
        let spawned = std::thread::Builder::new()
            .name(format!("system thread {n}"))
            .stack_size(SYSTEM_THREAD_STACK)
            .spawn(move || system_thread(n));
        if let Err(e) = spawned {
            w.threads.pop();
            w.violation(format!("harness: cannot start system thread {n}: {e}"));
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        let h = w.open_handle(Handle::Thread(n));
        let id = MAIN_THREAD_ID + 4 * n;
        drop(w);
        // SAFETY: the driver passes a pointer to its HANDLE (non-NULL, checked).
        unsafe { put(handle, h) };
        // SAFETY: the driver's CLIENT_ID (UniqueProcess, UniqueThread) or NULL.
        unsafe { put(client_id, [4, id]) };
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn ps_terminate_system_thread(status: i32) -> i32 {
    guarded("PsTerminateSystemThread", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("PsTerminateSystemThread", PASSIVE_LEVEL);
        let n = w.running;
        if n == 0 {
            w.violation(
                "PsTerminateSystemThread on a thread the driver did not create \
                 (PsCreateSystemThread)",
            );
            return STATUS_INVALID_PARAMETER;
        }
        if w.spin_locks.values().any(|&(e, s)| e || s > 0) {
            w.violation(format!("system thread {n} ended holding a spin lock"));
        }
        drop(w);
        end_thread(n, status)
    })
}

pub(super) extern "win64" fn zw_wait_for_single_object(
    handle: usize,
    alertable: u8,
    timeout: *const i64,
) -> i32 {
    guarded("ZwWaitForSingleObject", STATUS_INVALID_HANDLE, || {
        let mut w = world();
        w.call("ZwWaitForSingleObject", PASSIVE_LEVEL);
        let n = match w.handles.get(&handle) {
            Some(&Handle::Thread(n)) => n,
            other => {
                let other = other.cloned();
                w.violation(format!(
                    "ZwWaitForSingleObject(0x{handle:X}): not a thread handle from \
                     PsCreateSystemThread ({other:?})"
                ));
                return STATUS_INVALID_HANDLE;
            }
        };
        if alertable != 0 {
            w.violation(
                "ZwWaitForSingleObject(Alertable = TRUE) for a thread's end: the wait can \
                 end early with STATUS_ALERTED or STATUS_USER_APC",
            );
        }
        if n == w.running {
            w.violation(format!(
                "system thread {n} waits for its own end (ZwWaitForSingleObject on its own \
                 handle): a deadlock"
            ));
            return STATUS_SUCCESS;
        }
        drop(w);
        let ended = |w: &World| {
            matches!(
                w.threads.get(n - 1).map(|t| t.run),
                Some(ThreadRun::Terminated(_))
            )
        };
        if run_while(Some(n), ended) {
            return STATUS_SUCCESS;
        }
        if !timeout.is_null() {
            return STATUS_TIMEOUT;
        }
        let mut w = world();
        let run = w.threads.get(n - 1).map(|t| t.run);
        w.violation(format!(
            "ZwWaitForSingleObject on system thread {n} would wait forever: it does not end \
             ({run:?}) and no thread can run to change that"
        ));
        STATUS_SUCCESS
    })
}
