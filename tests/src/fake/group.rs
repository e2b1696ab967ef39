//! The fake's group-commit primitives ([`FilterManager::CommitSync`]): the rules of
//! the driver's `EX_SPIN_LOCK` and `KEVENT`s, checked: the lock may be taken at IRQL
//! <= DISPATCH_LEVEL and runs its holder at DISPATCH_LEVEL; a wait
//! (`KeWaitForSingleObject`, no timeout) and the leader's sleep
//! (`KeDelayExecutionThread`) only at PASSIVE_LEVEL; `KeSetEvent` / `KeClearEvent` at
//! IRQL <= DISPATCH_LEVEL. The event calls are logged like every Filter Manager call.

use std::sync::{Condvar, MutexGuard};

use flushguard_engine::group_commit::{BatchEvent, CommitSync};

use super::*;

/// One notification event.
pub struct FakeEvent {
    fake: Fake,
    set: Mutex<bool>,
    cv: Condvar,
}

impl FakeEvent {
    fn new(fake: Fake) -> Self {
        FakeEvent {
            fake,
            set: Mutex::new(false),
            cv: Condvar::new(),
        }
    }
}

impl BatchEvent for FakeEvent {
    fn wait(&self) {
        let _gate = crate::alloc_gate::fm_scope();
        self.fake.log("KeWaitForSingleObject", None, None);
        self.fake
            .check_irql(Irql::PASSIVE_LEVEL, "KeWaitForSingleObject (group commit)");
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        while !*set {
            set = self.cv.wait(set).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn set(&self) {
        let _gate = crate::alloc_gate::fm_scope();
        self.fake.log("KeSetEvent", None, None);
        self.fake.check_irql(Irql::DISPATCH_LEVEL, "KeSetEvent");
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }
    fn reset(&self) {
        let _gate = crate::alloc_gate::fm_scope();
        self.fake.log("KeClearEvent", None, None);
        self.fake.check_irql(Irql::DISPATCH_LEVEL, "KeClearEvent");
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// One coordinator's lock and events.
pub struct FakeCommitSync {
    fake: Fake,
    lock: Mutex<()>,
    events: [FakeEvent; 2],
}

impl FakeCommitSync {
    pub(super) fn new(fake: Fake) -> Self {
        FakeCommitSync {
            lock: Mutex::new(()),
            events: [FakeEvent::new(fake.clone()), FakeEvent::new(fake.clone())],
            fake,
        }
    }
}

/// The held lock: the thread runs at DISPATCH_LEVEL until it is dropped.
pub struct FakeCommitGuard<'a> {
    _held: MutexGuard<'a, ()>,
    before: Irql,
}

impl Drop for FakeCommitGuard<'_> {
    fn drop(&mut self) {
        set_irql(self.before);
    }
}

impl CommitSync for FakeCommitSync {
    type Event = FakeEvent;
    fn event(&self, index: usize) -> &FakeEvent {
        &self.events[index % 2]
    }
    type Guard<'a> = FakeCommitGuard<'a>;
    fn lock(&self) -> FakeCommitGuard<'_> {
        let _gate = crate::alloc_gate::fm_scope();
        let before = irql();
        self.fake.check_irql(
            Irql::DISPATCH_LEVEL,
            "ExAcquireSpinLockExclusive (group commit)",
        );
        let held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        set_irql(Irql::DISPATCH_LEVEL);
        FakeCommitGuard {
            _held: held,
            before,
        }
    }
    fn sleep_us(&self, us: u64) {
        let _gate = crate::alloc_gate::fm_scope();
        self.fake.log("KeDelayExecutionThread", None, None);
        self.fake
            .check_irql(Irql::PASSIVE_LEVEL, "KeDelayExecutionThread (group commit)");
        std::thread::sleep(std::time::Duration::from_micros(us));
    }
}
