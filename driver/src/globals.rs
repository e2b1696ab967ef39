//! The driver's global state in one place, as Microsoft's minifilter samples keep it
//! (minispy's `MINISPY_DATA`, scanner's `SCANNER_DATA`): the registered filter handle
//! and the engine's [`Filter`]. `entry.rs` orders setup and teardown; everything else
//! only reads these.

use alloc::alloc::{alloc, dealloc, Layout};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

use flushguard_engine::callbacks::{Filter, PolicySource};
use flushguard_engine::events::{EventRing, DEFAULT_EVENT_CAPACITY};
use flushguard_engine::handler::State;
use flushguard_protocol::NtStatus;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_FILTER;

use crate::fltmgr::{Hooks, KernelFltMgr};

/// The registered filter (`PFLT_FILTER`), 0 before registration and after unload.
static FILTER_HANDLE: AtomicIsize = AtomicIsize::new(0);

/// The registered filter handle. Valid from `FltRegisterFilter` until `FilterUnload`
/// finishes, i.e. whenever a Filter Manager callback of ours runs. Any IRQL.
pub fn filter_handle() -> PFLT_FILTER {
    FILTER_HANDLE.load(Ordering::Acquire)
}

/// Records the handle `FltRegisterFilter` returned (0 once unregistered).
pub fn set_filter_handle(filter: PFLT_FILTER) {
    FILTER_HANDLE.store(filter, Ordering::Release);
}

/// The driver's one [`Filter`]: set in DriverEntry before `FltStartFiltering`,
/// freed in FilterUnload after `FltUnregisterFilter` returned (no callback and no
/// port message can run then). NULL otherwise.
static ENGINE: AtomicPtr<Filter<KernelFltMgr>> = AtomicPtr::new(null_mut());

/// Builds the driver's [`Filter`] in pool memory and publishes it: the engine state
/// (pass-through), the FFI Filter Manager for the registered `filter` and the service
/// key `registry_path` (UTF-16),
/// and the persisted policy from `Parameters\Policy` ([`Filter::load`]). Returns where
/// the policy came from. PASSIVE_LEVEL (DriverEntry, after `FltRegisterFilter`).
///
/// Kept out of line so DriverEntry's frame stays small (no `__chkstk` in unoptimised
/// builds).
///
/// # Errors
/// `STATUS_INSUFFICIENT_RESOURCES` if a pool allocation (the filter, the
/// `Parameters` key name, the event ring) fails.
#[inline(never)]
pub fn install_engine(
    filter: PFLT_FILTER,
    registry_path: &[u16],
    hooks: Hooks,
) -> Result<PolicySource, NtStatus> {
    crate::locks::initialize();
    let fm = KernelFltMgr::new(filter, registry_path, hooks)?;
    let events =
        EventRing::try_new(DEFAULT_EVENT_CAPACITY).map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
    let layout = Layout::new::<Filter<KernelFltMgr>>();
    // SAFETY: `layout` has a non-zero size; the global allocator is the pool allocator
    // (pool.rs); PASSIVE_LEVEL.
    let p = unsafe { alloc(layout) }.cast::<Filter<KernelFltMgr>>();
    if p.is_null() {
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    // SAFETY: `p` is the fresh, aligned allocation for one Filter made just above,
    // owned here and not shared yet; PASSIVE_LEVEL.
    unsafe { write_filter(p, fm, events) };
    // SAFETY: `p` was initialised by `write_filter` and is not shared yet.
    let filter = unsafe { &*p };
    let source = filter.load_persisted_policy();
    ENGINE.store(p, Ordering::Release);
    Ok(source)
}

/// Builds the engine state around `events` and writes the filter into `p`. Out of
/// line so that `install`'s unoptimised frame stays far below 4 KiB (the `State`
/// temporaries live here). PASSIVE_LEVEL.
///
/// # Safety
/// `p` is fresh, suitably aligned pool memory for one `Filter`, owned by the caller
/// and not shared; nothing reads it before this write.
#[inline(never)]
unsafe fn write_filter(p: *mut Filter<KernelFltMgr>, fm: KernelFltMgr, events: EventRing) {
    let state = State::with_events(
        crate::fltmgr::system_time,
        crate::fltmgr::DRIVER_VERSION,
        events,
    );
    // SAFETY: as this function's contract.
    unsafe { write_filter_with(p, fm, state) };
}

/// The second half of [`write_filter`], in a frame of its own: the `State` temporary
/// and the `Filter` temporary together exceed 4 KiB in an unoptimised build.
///
/// # Safety
/// As [`write_filter`].
#[inline(never)]
unsafe fn write_filter_with(p: *mut Filter<KernelFltMgr>, fm: KernelFltMgr, state: State) {
    // SAFETY: `p` is fresh, suitably aligned pool memory for one Filter, owned by
    // `install` until it publishes it (see above); nothing reads it before this write.
    unsafe { p.write(Filter::new(fm, state)) };
}

/// The installed filter, if any.
pub fn engine() -> Option<&'static Filter<KernelFltMgr>> {
    let p = ENGINE.load(Ordering::Acquire);
    // SAFETY: a non-NULL FILTER points to the Filter `install` wrote; it is freed only
    // by `free`, after FltUnregisterFilter, when no callback or message can run.
    unsafe { p.as_ref() }
}

/// Drops and frees the installed filter. Call only after `FltUnregisterFilter`
/// returned (or when it was never registered); then deletes the SetPolicy push lock.
/// PASSIVE_LEVEL.
pub fn free_engine() {
    let p = ENGINE.swap(null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: `p` came from `install` and the swap makes this its only release; no
        // callback can hold a reference (see `get`).
        unsafe { p.drop_in_place() };
        // SAFETY: `p` was allocated by `install` with this layout.
        unsafe { dealloc(p.cast(), Layout::new::<Filter<KernelFltMgr>>()) };
    }
    // No SetPolicy can run any more: the port and the filter are gone (or never were).
    crate::locks::delete();
}
