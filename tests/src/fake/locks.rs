//! The fake's policy locks: the IRQL rules of the driver's `EX_SPIN_LOCK` and push
//! lock, checked per thread.

use super::*;

/// The fake's policy locks ([`flushguard_engine::locks::PolicyLocks`]), with the
/// rules of the driver's primitives: the policy lock (`ExAcquireSpinLockShared` /
/// `Exclusive`) may be taken at IRQL <= DISPATCH_LEVEL and runs its holder at
/// DISPATCH_LEVEL (so a registry call or a wait inside is an IRQL violation the fake
/// reports); the SetPolicy lock (push lock in a critical region) only at
/// PASSIVE_LEVEL, never recursively, and its holder stays at PASSIVE_LEVEL.
/// Violations are kept per thread and reported by [`Fake::violations`].
pub struct FakeLocks;

/// The one [`FakeLocks`].
pub static FAKE_LOCKS: FakeLocks = FakeLocks;

/// How often this thread used [`FakeLocks`] (see [`lock_calls`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockCalls {
    /// `read_shared` (policy `Arc` clones).
    pub read_shared: u64,
    /// `write_exclusive` (policy swaps).
    pub write_exclusive: u64,
    /// `serialize` (SetPolicy, registry load).
    pub serialize: u64,
    /// `ZwSetValueKey` calls made while serializing.
    pub registry_writes_serialized: u64,
}

/// The [`FakeLocks`] calls made on this thread so far.
pub fn lock_calls() -> LockCalls {
    LOCK_CALLS.with(|c| c.get())
}

pub(super) fn count_lock(f: impl FnOnce(&mut LockCalls)) {
    LOCK_CALLS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

pub(super) fn lock_violation(msg: String) {
    LOCK_VIOLATIONS.with(|v| v.borrow_mut().push(msg));
}

impl FakeLocks {
    fn at_dispatch(routine: &str, f: &mut dyn FnMut()) {
        let before = irql();
        if before > Irql::DISPATCH_LEVEL {
            lock_violation(format!("{routine} at IRQL {} (max 2)", before.0));
        }
        set_irql(Irql::DISPATCH_LEVEL);
        f();
        set_irql(before);
    }
}

impl flushguard_engine::locks::PolicyLocks for FakeLocks {
    fn read_shared(&self, f: &mut dyn FnMut()) {
        count_lock(|c| c.read_shared += 1);
        Self::at_dispatch("ExAcquireSpinLockShared", f);
    }
    fn write_exclusive(&self, f: &mut dyn FnMut()) {
        count_lock(|c| c.write_exclusive += 1);
        Self::at_dispatch("ExAcquireSpinLockExclusive", f);
    }
    fn serialize(&self, f: &mut dyn FnMut()) {
        count_lock(|c| c.serialize += 1);
        if irql() != Irql::PASSIVE_LEVEL {
            lock_violation(format!(
                "FltAcquirePushLockExclusive at IRQL {} (PASSIVE_LEVEL only)",
                irql().0
            ));
        }
        if SERIALIZING.with(|c| c.replace(true)) {
            lock_violation("FltAcquirePushLockExclusive: recursive acquire (deadlock)".into());
        }
        f();
        SERIALIZING.with(|c| c.set(false));
    }
}
