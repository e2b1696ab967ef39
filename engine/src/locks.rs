//! The kernel primitives behind the engine's policy locks (issue 9 finding 3).
//!
//! The policy in force is an `Arc<CompiledPolicy>` read on every governed
//! pre-operation, including paging writes of the modified page writer at priority
//! 17 or more. A lock that only spins, without raising IRQL, lets such a reader
//! preempt a lower-priority SetPolicy holding it and spin forever on one CPU. So the
//! `Arc` clone and swap run inside [`PolicyLocks::read_shared`] /
//! [`PolicyLocks::write_exclusive`], which the driver implements with an
//! `EX_SPIN_LOCK` (`ExAcquireSpinLockShared` / `ExAcquireSpinLockExclusive`: the
//! holder runs at DISPATCH_LEVEL and cannot be preempted; DDI page
//! "ExAcquireSpinLockShared"). SetPolicy (validate, compile, store in the registry,
//! publish) is serialized by [`PolicyLocks::serialize`], a lock that waits at
//! PASSIVE_LEVEL and does not raise IRQL (the driver: a Filter Manager push lock in
//! a critical region, DDI page "FltAcquirePushLockExclusive"), because the registry
//! store (`ZwCreateKey` / `ZwSetValueKey`) must run at PASSIVE_LEVEL.
//!
//! The engine keeps its own `spin` locks inside these for memory safety in safe Rust;
//! under the kernel locks they are never contended across a preemption. The host
//! implementations ([`HostLocks`], the test fake) just run the closure (the fake also
//! checks and simulates the IRQL rules).

/// The locks a Filter Manager implementation supplies for the engine's policy state.
/// Object-safe: the engine holds a `&'static dyn PolicyLocks`.
pub trait PolicyLocks: Send + Sync {
    /// Runs `f` holding the policy lock shared (many readers). The driver raises to
    /// DISPATCH_LEVEL for the duration (`ExAcquireSpinLockShared`), so `f` must not
    /// wait, allocate paged memory or touch pageable code. Callable at IRQL <=
    /// DISPATCH_LEVEL.
    fn read_shared(&self, f: &mut dyn FnMut());
    /// Runs `f` holding the policy lock exclusively (`ExAcquireSpinLockExclusive`,
    /// DISPATCH_LEVEL), with the same rules as [`PolicyLocks::read_shared`].
    fn write_exclusive(&self, f: &mut dyn FnMut());
    /// Runs `f` holding the SetPolicy serialization lock (one SetPolicy or registry
    /// load at a time). Waits at PASSIVE_LEVEL and keeps `f` at PASSIVE_LEVEL (normal
    /// kernel APCs disabled), so `f` may do registry I/O. Call at PASSIVE_LEVEL only.
    fn serialize(&self, f: &mut dyn FnMut());
}

/// Runs `f` inside `lock` (one of the [`PolicyLocks`] methods, e.g.
/// `|g| locks.read_shared(g)`) and returns its result; `None` only if the
/// implementation broke its contract and never called its closure (the caller then
/// falls back to its inner lock, which alone is still memory-safe).
pub fn run_in<R>(lock: impl FnOnce(&mut dyn FnMut()), f: impl FnOnce() -> R) -> Option<R> {
    let mut f = Some(f);
    let mut out = None;
    lock(&mut || {
        if let Some(f) = f.take() {
            out = Some(f());
        }
    });
    out
}

/// Locks for hosts without kernel primitives (flushctl's offline engine and replay,
/// unit tests): each method just runs the closure; the engine's inner `spin` locks
/// provide the mutual exclusion.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostLocks;

/// The one [`HostLocks`] value, for `&'static dyn PolicyLocks`.
pub static HOST_LOCKS: HostLocks = HostLocks;

impl PolicyLocks for HostLocks {
    fn read_shared(&self, f: &mut dyn FnMut()) {
        f();
    }
    fn write_exclusive(&self, f: &mut dyn FnMut()) {
        f();
    }
    fn serialize(&self, f: &mut dyn FnMut()) {
        f();
    }
}
