//! The kernel primitives of a group-commit coordinator
//! (`flushguard_engine::group_commit::CommitSync`, issue 11 item 4): one non-paged block
//! per coordinator holding
//!
//! - an `EX_SPIN_LOCK` taken exclusively (`ExAcquireSpinLockExclusive`: IRQL <=
//!   DISPATCH_LEVEL on entry, the holder runs at DISPATCH_LEVEL, so it is never
//!   preempted while a waiter spins; held for a few field updates and a
//!   `KeSetEvent` / `KeClearEvent`, both legal at DISPATCH_LEVEL);
//! - two notification `KEVENT`s (`KeInitializeEvent(NotificationEvent, FALSE)`), set
//!   with `KeSetEvent(IO_NO_INCREMENT, Wait = FALSE)`, cleared with `KeClearEvent`,
//!   waited on with `KeWaitForSingleObject(Executive, KernelMode, Alertable = FALSE,
//!   Timeout = NULL)` at PASSIVE_LEVEL (DDI page "KeWaitForSingleObject": a NULL timeout
//!   needs IRQL <= APC_LEVEL).
//!
//! The leader's optional wait for more writers (`max-batch-wait-us`) is
//! `KeDelayExecutionThread(KernelMode, FALSE, -interval)` (relative, 100 ns units;
//! PASSIVE_LEVEL... APC_LEVEL per its DDI page).
//!
//! The block is allocated once per coordinator at DriverEntry (through the pool
//! allocator, fallible) and freed when the engine's `Filter` is dropped at unload, after
//! `FltUnregisterFilter` returned: no writer waits on its events any more.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::AtomicI32;

use flushguard_engine::group_commit::{BatchEvent, CommitSync};
use windows_sys::Wdk::Foundation::KEVENT;
use windows_sys::Wdk::System::SystemServices::{
    ExAcquireSpinLockExclusive, ExReleaseSpinLockExclusive, Executive, KeClearEvent,
    KeDelayExecutionThread, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject, KernelMode,
};
use windows_sys::Win32::System::Kernel::NotificationEvent;

/// `IO_NO_INCREMENT` (wdm.h): no priority boost for the woken waiters.
const IO_NO_INCREMENT: i32 = 0;

// KEVENT is a DISPATCHER_HEADER: 24 bytes, 8-aligned on AMD64 (wdm.h).
static_assertions::const_assert_eq!(core::mem::size_of::<KEVENT>(), 24);
static_assertions::const_assert_eq!(core::mem::align_of::<KEVENT>(), 8);

/// One notification `KEVENT`, used only in place inside a [`Block`].
#[repr(transparent)]
pub struct KernelEvent(UnsafeCell<KEVENT>);

// SAFETY: a KEVENT is a kernel dispatcher object meant to be signalled and waited on
// from any thread; every access goes through the Ke* routines, which synchronise
// internally (dispatcher lock).
unsafe impl Sync for KernelEvent {}
// SAFETY: as above; the event never moves (it lives in a pool block).
unsafe impl Send for KernelEvent {}

impl BatchEvent for KernelEvent {
    fn wait(&self) {
        // SAFETY: an initialised KEVENT in a live block (the coordinator outlives its
        // writers); PASSIVE_LEVEL (the engine waits only where it may flush), NULL
        // timeout: waits until set. KernelMode, non-alertable: returns STATUS_SUCCESS.
        let _ = unsafe {
            KeWaitForSingleObject(
                self.0.get().cast_const().cast(),
                Executive,
                KernelMode as i8,
                false,
                core::ptr::null(),
            )
        };
    }
    fn set(&self) {
        // SAFETY: an initialised KEVENT; IRQL <= DISPATCH_LEVEL; Wait = FALSE.
        let _ = unsafe { KeSetEvent(self.0.get(), IO_NO_INCREMENT, false) };
    }
    fn reset(&self) {
        // SAFETY: an initialised KEVENT; IRQL <= DISPATCH_LEVEL.
        unsafe { KeClearEvent(self.0.get()) };
    }
}

/// The pool block of one coordinator.
#[repr(C)]
struct Block {
    /// `EX_SPIN_LOCK` (a LONG; zero = free).
    lock: AtomicI32,
    events: [KernelEvent; 2],
}

/// A coordinator's lock and events: owns its [`Block`].
pub struct KernelCommitSync {
    block: NonNull<Block>,
}

// SAFETY: the block is owned by this value and only shared through `&self` methods,
// whose members (an atomic lock word, KEVENTs) are built for concurrent use.
unsafe impl Send for KernelCommitSync {}
// SAFETY: as above.
unsafe impl Sync for KernelCommitSync {}

impl KernelCommitSync {
    /// Allocates and initialises a block; `None` when the pool allocation fails.
    /// PASSIVE_LEVEL (DriverEntry).
    pub fn new() -> Option<Self> {
        let layout = Layout::new::<Block>();
        // SAFETY: `layout` has a non-zero size; the pool allocator returns null or a
        // block of that size and alignment.
        let raw = unsafe { alloc::alloc::alloc(layout) }.cast::<Block>();
        let block = NonNull::new(raw)?;
        let lock = raw
            .wrapping_byte_add(offset_of!(Block, lock))
            .cast::<AtomicI32>();
        // SAFETY: `lock` is the lock word inside the fresh, suitably aligned block;
        // writing it initialises it (EX_SPIN_LOCK: zero = free).
        unsafe { lock.write(AtomicI32::new(0)) };
        for index in 0..2 {
            let event = raw
                .wrapping_byte_add(offset_of!(Block, events) + index * size_of::<KernelEvent>())
                .cast::<KEVENT>();
            // SAFETY: `event` is event `index` inside the fresh block, at its final
            // address (never moved afterwards); KeInitializeEvent initialises it in
            // place; any IRQL <= DISPATCH_LEVEL.
            unsafe { KeInitializeEvent(event, NotificationEvent, false) };
        }
        Some(KernelCommitSync { block })
    }

    fn block(&self) -> &Block {
        // SAFETY: the block was initialised by `new` and lives until `drop`.
        unsafe { self.block.as_ref() }
    }
}

impl Drop for KernelCommitSync {
    fn drop(&mut self) {
        // SAFETY: the block came from the same allocator with the same layout; no
        // thread waits on its events (the filter was unregistered before the engine's
        // Filter, which owns this value, is dropped).
        unsafe { alloc::alloc::dealloc(self.block.as_ptr().cast(), Layout::new::<Block>()) };
    }
}

/// The held `EX_SPIN_LOCK`: released, with the IRQL restored, when dropped.
pub struct KernelCommitGuard<'a> {
    lock: &'a AtomicI32,
    old_irql: u8,
}

impl Drop for KernelCommitGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the exclusive hold taken in `lock` with the IRQL it returned.
        unsafe { ExReleaseSpinLockExclusive(self.lock.as_ptr(), self.old_irql) };
    }
}

impl CommitSync for KernelCommitSync {
    type Event = KernelEvent;
    fn event(&self, index: usize) -> &KernelEvent {
        &self.block().events[index % 2]
    }
    type Guard<'a> = KernelCommitGuard<'a>;
    fn lock(&self) -> KernelCommitGuard<'_> {
        let lock = &self.block().lock;
        // SAFETY: a valid EX_SPIN_LOCK (zero-initialised in `new`); IRQL <=
        // DISPATCH_LEVEL (the CommitSync contract); raises to DISPATCH_LEVEL.
        let old_irql = unsafe { ExAcquireSpinLockExclusive(lock.as_ptr()) };
        KernelCommitGuard { lock, old_irql }
    }
    fn sleep_us(&self, us: u64) {
        // Relative interval in 100 ns units (negative = relative).
        let interval = -(i64::try_from(us.saturating_mul(10)).unwrap_or(i64::MAX));
        // SAFETY: PASSIVE_LEVEL (the leader, before its flush); `interval` lives for
        // the call; KernelMode, non-alertable.
        let _ = unsafe { KeDelayExecutionThread(KernelMode as i8, false, &interval) };
    }
}
