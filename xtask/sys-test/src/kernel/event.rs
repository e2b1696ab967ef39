//! Dispatcher events and the delay of the group-commit coordinators
//! (driver/src/group.rs): `KeInitializeEvent`, `KeSetEvent`, `KeClearEvent`,
//! `KeWaitForSingleObject` (on an event; on a semaphore it goes on in `thread.rs`) and
//! `KeDelayExecutionThread`.
//!
//! Each event the driver initialises is tracked by address (type, state, the pool
//! block holding it); its `DISPATCHER_HEADER` is written as the kernel writes it and
//! checked intact at every later use. An event used after its pool block was freed, or
//! never initialised, is a violation. No other thread runs while one waits on an event
//! (the driver's system threads get the processor only at the scheduling points of
//! `thread.rs`): a wait on an event that is not set (no timeout) could never end, so it
//! is a violation and returns at once; a delay sleeps at most [`MAX_SLEEP`].

use std::time::Duration;

use super::*;
use crate::world::{Event, World};

/// `STATUS_TIMEOUT`.
const STATUS_TIMEOUT: i32 = 0x102;
/// `sizeof(KEVENT)` on x64 (a `DISPATCHER_HEADER`).
const KEVENT_SIZE: usize = 24;
/// `NotificationEvent` (`EVENT_TYPE`; also the header's `EventNotificationObject`).
const NOTIFICATION_EVENT: i32 = 0;
/// `SynchronizationEvent`.
const SYNCHRONIZATION_EVENT: i32 = 1;
/// `KWAIT_REASON` `Executive`.
const EXECUTIVE: i32 = 0;
/// `KWAIT_REASON` `UserRequest`.
const USER_REQUEST: i32 = 6;
/// `KPROCESSOR_MODE` `UserMode` (`KernelMode` is 0).
const USER_MODE: i8 = 1;
/// The longest a `KeDelayExecutionThread` really sleeps here.
const MAX_SLEEP: Duration = Duration::from_millis(1);
/// Waits that could never end after which the scenario process stops: the driver
/// would hang here, and a retry loop around the wait would spin forever.
const MAX_UNSATISFIABLE_WAITS: u32 = 16;

/// `DISPATCHER_HEADER` (wdm.h, x64): the fields `KeInitializeEvent` and
/// `KeInitializeSemaphore` set; a whole `KEVENT`, the start of a `KSEMAPHORE`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct DispatcherHeader {
    /// `Type`: `EventNotificationObject` (0) or `EventSynchronizationObject` (1).
    kind: u8,
    /// `Signalling`.
    signalling: u8,
    /// `Size`: the object's size in LONGs.
    size: u8,
    /// `Reserved1`.
    reserved: u8,
    /// `SignalState`.
    signal_state: i32,
    /// `WaitListHead` (`Flink`, `Blink`): pointing at itself while nobody waits.
    wait_list_head: [usize; 2],
}
static_assertions::const_assert_eq!(std::mem::size_of::<DispatcherHeader>(), KEVENT_SIZE);

impl DispatcherHeader {
    /// The header of a dispatcher object of type `kind` and `size` bytes at `address`
    /// with `signal_state` and no waiter.
    pub(super) fn new(address: usize, kind: u8, size: usize, signal_state: i32) -> Self {
        DispatcherHeader {
            kind,
            signalling: 0,
            size: (size / 4) as u8,
            reserved: 0,
            signal_state,
            wait_list_head: [address + 8, address + 8],
        }
    }

    /// The header of a `KEVENT` at `event` with no waiter.
    fn of(event: usize, kind: i32, signalled: bool) -> Self {
        Self::new(event, kind as u8, KEVENT_SIZE, i32::from(signalled))
    }

    /// Writes `value` into the `SignalState` of the dispatcher object at `address`.
    ///
    /// # Safety
    /// `address` is a live dispatcher object the harness initialised (its header is
    /// writable).
    pub(super) unsafe fn write_signal_state(address: usize, value: i32) {
        let signal_state = (address as *mut DispatcherHeader)
            .wrapping_byte_add(std::mem::offset_of!(DispatcherHeader, signal_state))
            .cast::<i32>();
        // SAFETY: the caller's contract: a live object's SignalState.
        unsafe { signal_state.write(value) };
    }
}

/// The live event at `event` for `routine`, its header checked; `None` (with the
/// violation) if it is NULL, freed, never initialised or overwritten.
fn live_event(w: &mut World, routine: &str, event: usize) -> Option<Event> {
    let looked_up = (event != 0).then(|| {
        (
            w.events.get(&event).copied(),
            w.freed_events.contains(&event),
        )
    });
    let state = tracked(w, routine, "KEVENT", "KeInitializeEvent", event, looked_up)?;
    // SAFETY: a live event: its pool block (or the driver's stack or image memory it
    // was initialised in) holds KEVENT_SIZE readable bytes, 8-aligned (checked at
    // KeInitializeEvent).
    let header = unsafe { (event as *const DispatcherHeader).read() };
    let kind = if state.notification {
        NOTIFICATION_EVENT
    } else {
        SYNCHRONIZATION_EVENT
    };
    if header != DispatcherHeader::of(event, kind, state.signalled) {
        w.violation(format!(
            "{routine}(0x{event:X}): the KEVENT's DISPATCHER_HEADER was overwritten since \
             KeInitializeEvent"
        ));
        return None;
    }
    Some(state)
}

/// The tracked state of a kernel object at `address` for `routine`: `looked_up` is
/// `None` for a NULL address, else (its state if live, whether its pool block was
/// freed). `None` (with the violation) unless it is live. Shared by the KEVENT and
/// KSEMAPHORE checks.
pub(super) fn tracked<S>(
    w: &mut World,
    routine: &str,
    kind: &str,
    initialiser: &str,
    address: usize,
    looked_up: Option<(Option<S>, bool)>,
) -> Option<S> {
    match looked_up {
        None => {
            w.violation(format!("{routine} with a NULL {kind}"));
            None
        }
        Some((Some(state), _)) => Some(state),
        Some((None, true)) => {
            w.violation(format!(
                "{routine}(0x{address:X}): the {kind}'s pool block was freed (use after free)"
            ));
            None
        }
        Some((None, false)) => {
            w.violation(format!(
                "{routine}(0x{address:X}): not a {kind} initialised by {initialiser}"
            ));
            None
        }
    }
}

/// Sets the state of the live event at `event`, in the harness and in its header.
fn set_state(w: &mut World, event: usize, signalled: bool) {
    if let Some(state) = w.events.get_mut(&event) {
        state.signalled = signalled;
        // SAFETY: a live event (checked by `live_event` just before).
        unsafe { DispatcherHeader::write_signal_state(event, i32::from(signalled)) };
    }
}

pub(super) extern "win64" fn ke_initialize_event(event: *mut c_void, kind: i32, state: u8) {
    guarded("KeInitializeEvent", (), || {
        let mut w = world();
        w.call("KeInitializeEvent", u8::MAX);
        let address = event as usize;
        if address == 0 {
            w.violation("KeInitializeEvent with a NULL event");
            return;
        }
        if address % 8 != 0 {
            w.violation(format!(
                "KeInitializeEvent(0x{address:X}): a KEVENT must be 8-byte aligned"
            ));
            return;
        }
        if kind != NOTIFICATION_EVENT && kind != SYNCHRONIZATION_EVENT {
            w.violation(format!("KeInitializeEvent with event type {kind}"));
            return;
        }
        let block = w.pool_block_of(address, KEVENT_SIZE);
        let overruns = block.is_none() && w.pool_block_of(address, 1).is_some();
        if overruns {
            w.violation(format!(
                "KeInitializeEvent(0x{address:X}): the KEVENT overruns its pool block"
            ));
            return;
        }
        if w.in_driver_entry {
            let size = crate::world::COORDINATOR_BLOCK_SIZE;
            match w
                .coordinator_blocks
                .iter_mut()
                .rev()
                .find(|(b, _)| Some(*b) == block)
            {
                Some(entry) => entry.1 += 1,
                None => w.violation(format!(
                    "KeInitializeEvent(0x{address:X}) in DriverEntry outside a {size}-byte \
                     group-commit coordinator block: the harness identifies those blocks by \
                     size (driver/src/group.rs Block; COORDINATOR_BLOCK_SIZE in world.rs)"
                )),
            }
        }
        let header = DispatcherHeader::of(address, kind, state != 0);
        // SAFETY: 8-aligned; inside a live pool block (checked), or the driver's own
        // stack or image storage for a KEVENT, which KeInitializeEvent writes as well.
        unsafe { (address as *mut DispatcherHeader).write(header) };
        w.freed_events.remove(&address);
        w.events.insert(
            address,
            Event {
                notification: kind == NOTIFICATION_EVENT,
                signalled: state != 0,
                block: block.unwrap_or(0),
            },
        );
    })
}

pub(super) extern "win64" fn ke_set_event(event: *mut c_void, _increment: i32, wait: u8) -> i32 {
    guarded("KeSetEvent", 0, || {
        let mut w = world();
        // DDI page: IRQL <= DISPATCH_LEVEL with Wait = FALSE, <= APC_LEVEL with TRUE.
        let max_irql = if wait != 0 { APC_LEVEL } else { DISPATCH_LEVEL };
        w.call("KeSetEvent", max_irql);
        let Some(state) = live_event(&mut w, "KeSetEvent", event as usize) else {
            return 0;
        };
        set_state(&mut w, event as usize, true);
        // Wait = TRUE: the very next call must be a KeWaitXxx (checked by World::call).
        w.wait_next = (wait != 0).then_some("KeSetEvent");
        i32::from(state.signalled)
    })
}

pub(super) extern "win64" fn ke_clear_event(event: *mut c_void) {
    guarded("KeClearEvent", (), || {
        let mut w = world();
        w.call("KeClearEvent", DISPATCH_LEVEL);
        if live_event(&mut w, "KeClearEvent", event as usize).is_some() {
            set_state(&mut w, event as usize, false);
        }
    })
}

pub(super) extern "win64" fn ke_wait_for_single_object(
    object: *mut c_void,
    reason: i32,
    mode: i8,
    _alertable: u8,
    timeout: *const i64,
) -> i32 {
    guarded("KeWaitForSingleObject", STATUS_SUCCESS, || {
        let timeout = if timeout.is_null() {
            None
        } else {
            // SAFETY: the driver's LARGE_INTEGER (non-NULL), live for the call.
            Some(unsafe { timeout.read_unaligned() })
        };
        let mut w = world();
        // DDI page: IRQL <= DISPATCH_LEVEL with a zero timeout, else <= APC_LEVEL.
        let max_irql = if timeout == Some(0) {
            DISPATCH_LEVEL
        } else {
            APC_LEVEL
        };
        w.call("KeWaitForSingleObject", max_irql);
        if reason != EXECUTIVE && reason != USER_REQUEST {
            w.violation(format!(
                "KeWaitForSingleObject with WaitReason {reason} (drivers pass Executive or \
                 UserRequest)"
            ));
        }
        let address = object as usize;
        if super::thread::is_semaphore(&w, address) {
            if mode != 0 && mode != USER_MODE {
                w.violation(format!("KeWaitForSingleObject with WaitMode {mode}"));
            }
            return super::thread::wait_semaphore(w, address, timeout);
        }
        if address != 0 && !w.events.contains_key(&address) && !w.freed_events.contains(&address) {
            w.violation(format!(
                "KeWaitForSingleObject(0x{address:X}): not a dispatcher object initialised by \
                 KeInitializeEvent or KeInitializeSemaphore"
            ));
            return STATUS_SUCCESS;
        }
        let Some(state) = live_event(&mut w, "KeWaitForSingleObject", address) else {
            return STATUS_SUCCESS;
        };
        if mode == USER_MODE && state.block == 0 {
            let (start, end) = w.image;
            if !(start..end).contains(&address) {
                w.violation(
                    "KeWaitForSingleObject in UserMode on a KEVENT on the stack (its stack \
                     may be paged out during the wait)",
                );
            }
        } else if mode != 0 && mode != USER_MODE {
            w.violation(format!("KeWaitForSingleObject with WaitMode {mode}"));
        }
        if state.signalled {
            if !state.notification {
                set_state(&mut w, address, false);
            }
            return STATUS_SUCCESS;
        }
        if timeout.is_some() {
            return STATUS_TIMEOUT;
        }
        w.violation(
            "KeWaitForSingleObject on an unset event without a timeout: no other thread \
             runs here to set it, so the wait would block forever",
        );
        w.unsatisfiable_waits += 1;
        if w.unsatisfiable_waits >= MAX_UNSATISFIABLE_WAITS {
            let violations = w.violations.clone();
            eprintln!(
                "KeWaitForSingleObject: {MAX_UNSATISFIABLE_WAITS} waits on events nobody \
                 sets: the driver would hang here"
            );
            for v in violations {
                eprintln!("  violation: {v}");
            }
            std::process::exit(3);
        }
        STATUS_SUCCESS
    })
}

pub(super) extern "win64" fn ke_delay_execution_thread(
    mode: i8,
    _alertable: u8,
    interval: *const i64,
) -> i32 {
    guarded("KeDelayExecutionThread", STATUS_INVALID_PARAMETER, || {
        let mut w = world();
        w.call("KeDelayExecutionThread", APC_LEVEL);
        if mode != 0 && mode != USER_MODE {
            w.violation(format!("KeDelayExecutionThread with WaitMode {mode}"));
        }
        if interval.is_null() {
            w.violation("KeDelayExecutionThread with a NULL Interval");
            return STATUS_INVALID_PARAMETER;
        }
        // SAFETY: the driver's LARGE_INTEGER (non-NULL), live for the call.
        let interval = unsafe { interval.read_unaligned() };
        w.delays.push(interval);
        if interval >= 0 {
            w.violation(format!(
                "KeDelayExecutionThread with Interval {interval}: not negative (a relative \
                 interval in 100 ns units; zero or positive is an absolute system time)"
            ));
            return STATUS_SUCCESS;
        }
        drop(w);
        let wanted = Duration::from_nanos(interval.unsigned_abs().saturating_mul(100));
        std::thread::sleep(wanted.min(MAX_SLEEP));
        STATUS_SUCCESS
    })
}
