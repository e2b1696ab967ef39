//! The kernel primitives behind the engine's policy locks
//! (`flushguard_engine::locks::PolicyLocks`, issue 9 finding 3).
//!
//! - Policy `Arc` clone / swap: an `EX_SPIN_LOCK` taken shared or exclusive
//!   (`ExAcquireSpinLockShared` / `ExAcquireSpinLockExclusive`, DDI pages of the same
//!   names): IRQL <= DISPATCH_LEVEL on entry, the holder runs at DISPATCH_LEVEL and so
//!   cannot be preempted by a higher-priority reader (the modified page writer's
//!   paging writes) while it holds the lock. An `EX_SPIN_LOCK` is initialised by
//!   being zero.
//! - SetPolicy serialization: a Filter Manager push lock taken exclusive inside a
//!   critical region (`KeEnterCriticalRegion`, `FltAcquirePushLockExclusive`,
//!   `FltReleasePushLock`, `KeLeaveCriticalRegion`; DDI page
//!   "FltAcquirePushLockExclusive": IRQL <= APC_LEVEL, normal kernel APCs disabled).
//!   IRQL stays PASSIVE_LEVEL, so the registry store (`ZwCreateKey` /
//!   `ZwSetValueKey`, PASSIVE_LEVEL) may run while it is held.

use core::sync::atomic::{AtomicI32, AtomicUsize};

use flushguard_engine::locks::PolicyLocks;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAcquirePushLockExclusive, FltDeletePushLock, FltInitializePushLock, FltReleasePushLock,
};
use windows_sys::Wdk::System::SystemServices::{
    ExAcquireSpinLockExclusive, ExAcquireSpinLockShared, ExReleaseSpinLockExclusive,
    ExReleaseSpinLockShared, KeEnterCriticalRegion, KeLeaveCriticalRegion,
};

/// The `EX_SPIN_LOCK` (a LONG) around the policy `Arc`; zero = initialised, free.
static POLICY_SPIN_LOCK: AtomicI32 = AtomicI32::new(0);
/// The `EX_PUSH_LOCK` (pointer-sized) serializing SetPolicy.
static SET_POLICY_PUSH_LOCK: AtomicUsize = AtomicUsize::new(0);

/// The driver's [`PolicyLocks`] over the two statics above.
pub struct KernelPolicyLocks;

/// The one [`KernelPolicyLocks`] (`FilterManager::policy_locks`).
pub static KERNEL_POLICY_LOCKS: KernelPolicyLocks = KernelPolicyLocks;

/// `FltInitializePushLock` on the SetPolicy lock. PASSIVE_LEVEL, DriverEntry, before
/// the engine state exists.
pub fn initialize() {
    // SAFETY: the push lock is a static owned by this module, not in use yet
    // (DriverEntry, before any SetPolicy can run); any IRQL <= DISPATCH_LEVEL.
    unsafe { FltInitializePushLock(SET_POLICY_PUSH_LOCK.as_ptr()) };
}

/// `FltDeletePushLock` on the SetPolicy lock. PASSIVE_LEVEL, after the filter was
/// unregistered and freed (no SetPolicy can run).
pub fn delete() {
    // SAFETY: the push lock was initialised by `initialize` and nothing holds it: the
    // port and the filter are gone.
    unsafe { FltDeletePushLock(SET_POLICY_PUSH_LOCK.as_ptr()) };
}

impl PolicyLocks for KernelPolicyLocks {
    fn read_shared(&self, f: &mut dyn FnMut()) {
        // SAFETY: a valid EX_SPIN_LOCK (static, zero-initialised); IRQL <=
        // DISPATCH_LEVEL (the PolicyLocks contract); raises to DISPATCH_LEVEL.
        let old = unsafe { ExAcquireSpinLockShared(POLICY_SPIN_LOCK.as_ptr()) };
        f();
        // SAFETY: releases the shared hold taken above with the IRQL it returned.
        unsafe { ExReleaseSpinLockShared(POLICY_SPIN_LOCK.as_ptr(), old) };
    }

    fn write_exclusive(&self, f: &mut dyn FnMut()) {
        // SAFETY: as in `read_shared`, exclusive.
        let old = unsafe { ExAcquireSpinLockExclusive(POLICY_SPIN_LOCK.as_ptr()) };
        f();
        // SAFETY: releases the exclusive hold taken above with the IRQL it returned.
        unsafe { ExReleaseSpinLockExclusive(POLICY_SPIN_LOCK.as_ptr(), old) };
    }

    fn serialize(&self, f: &mut dyn FnMut()) {
        // SAFETY: PASSIVE_LEVEL (the PolicyLocks contract); paired with the
        // KeLeaveCriticalRegion below on the same thread.
        unsafe { KeEnterCriticalRegion() };
        // SAFETY: the push lock was initialised at DriverEntry; inside a critical
        // region at IRQL <= APC_LEVEL (DDI page "FltAcquirePushLockExclusive").
        unsafe { FltAcquirePushLockExclusive(SET_POLICY_PUSH_LOCK.as_ptr()) };
        f();
        // SAFETY: releases the exclusive hold taken above, same thread.
        unsafe { FltReleasePushLock(SET_POLICY_PUSH_LOCK.as_ptr()) };
        // SAFETY: leaves the critical region entered above.
        unsafe { KeLeaveCriticalRegion() };
    }
}
